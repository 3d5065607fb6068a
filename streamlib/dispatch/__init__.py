"""Pluggable dispatchers: where an actor's code runs (see :mod:`.base` for the seam)."""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
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
}

ENTRY_POINT_GROUP = "streamlib.dispatchers"
"""Installed packages name more dispatchers here (``gpu`` from :mod:`streamlib.gpu`, ``ray``
from :mod:`streamlib.cluster`): loaded on first use, so the core imports none of them."""


def _plugin_factory(name: str) -> Any:
    for found in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return found.load()
    return None


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
                plugin = _plugin_factory(spec)
                if plugin is not None:
                    _factories[spec] = plugin
            if spec not in _factories:
                names = set(_factories) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}
                known = ", ".join(repr(k) for k in sorted(names))
                raise ValueError(f"unknown dispatcher {spec!r}; known: {known}, or a Dispatcher instance")
            if spec not in _shared:
                _shared[spec] = _factories[spec]()
            return _shared[spec]
    raise TypeError(f"dispatcher must be a Dispatcher instance or a name such as 'thread', got {spec!r}")
