"""Pluggable dispatchers: where an actor's code runs (see :mod:`.base` for the seam)."""

from __future__ import annotations

import threading
from typing import Any

from .asyncio import AsyncioDispatcher, BlockingWarning
from .base import Dispatcher
from .process import ProcessPoolDispatcher
from .thread import ThreadPoolDispatcher

__all__ = [
    "AsyncioDispatcher",
    "BlockingWarning",
    "Dispatcher",
    "ProcessPoolDispatcher",
    "ThreadPoolDispatcher",
    "register_dispatcher",
    "resolve_dispatcher",
]

_lock = threading.Lock()
_shared: dict[str, Dispatcher] = {}
_factories: dict[str, Any] = {
    "asyncio": AsyncioDispatcher,
    "thread": ThreadPoolDispatcher,
    "process": ProcessPoolDispatcher,
    "gpu": lambda: _gpu_dispatcher(),
}


def _gpu_dispatcher() -> Dispatcher:
    """``dispatcher="gpu"``: imported on first use, so ``import streamlib`` never loads wgpu."""
    from .gpu import GPUDispatcher

    return GPUDispatcher()


def register_dispatcher(name: str, factory: Any) -> None:
    """Make ``dispatcher=name`` available, e.g. ``register_dispatcher("gpu", GPUDispatcher)``.

    ``factory()`` is called once; the instance is shared by every actor that names it.
    """
    with _lock:
        _factories[name] = factory
        _shared.pop(name, None)


def resolve_dispatcher(spec: Dispatcher | str | None) -> Dispatcher:
    """Turn ``dispatcher=`` into an instance: an instance as is, a name into the shared
    instance of that kind (``None`` means ``"asyncio"``)."""
    if spec is None:
        spec = "asyncio"
    if isinstance(spec, Dispatcher):
        return spec
    if isinstance(spec, str):
        with _lock:
            if spec not in _factories:
                known = ", ".join(repr(k) for k in sorted(_factories))
                raise ValueError(f"unknown dispatcher {spec!r}; known: {known}, or a Dispatcher instance")
            if spec not in _shared:
                _shared[spec] = _factories[spec]()
            return _shared[spec]
    raise TypeError(f"dispatcher must be a Dispatcher instance or a name such as 'thread', got {spec!r}")
