"""The message path in C, when the optional extension ``streamlib._speedups`` is built.

A message that crosses a chain of pass-through actors costs mostly the runtime's own
bookkeeping: the mailbox's counters, the checks that decide whether the receiver's tick may
run at once (hand-off, see :mod:`.handoff`), entering the receiver's task and context. The
extension runs that bookkeeping in C and calls Python only for ``process`` and the rare
paths, which makes a hop between two actors about twice as fast (``benchmarks/bench_chain.py``).

It changes no behaviour. The Python methods stay the specification and the fallback: the
extension replaces four of them -- ``Mailbox.put_nowait``, ``Mailbox.get_nowait``,
``ActorRuntime.woken`` and ``ports.deliver`` (``StreamOutput.send`` up to its first wait) --
with C versions that handle the common case (a mailbox with room; an actor that may take its
tick now) and call the original Python method for the rest. They
work on the same objects, through the classes' own ``__slots__``.

* Installed when streamlib is imported, if the extension was built (``pip install``
  compiles it where a C compiler is found, and installs without it otherwise).
* ``STREAMLIB_PURE_PYTHON=1`` in the environment keeps the pure-Python path (CI runs the
  core tests both ways; a profiler that follows Python frames sees every step).
* :data:`ACTIVE` says which path runs (:data:`REASON` why not); every benchmark prints it.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable
from typing import Any, Final

__all__ = ["ACTIVE", "PYTHON_METHODS", "REASON"]

ACTIVE = False
"""Whether the C message path is installed in this process."""

REASON = "not installed yet"
"""Why the pure-Python path runs, when it does (for reports)."""

PYTHON_METHODS: dict[str, Callable[..., Any]] = {}
"""The Python methods the C ones replace, by ``"Class.method"``, kept once installed: the
specification the tests hold the C versions to."""

_DISABLE: Final = "STREAMLIB_PURE_PYTHON"


def install() -> bool:
    """Put the C message path in place, once per process; ``True`` if it runs. Called by
    ``import streamlib`` after the core classes exist."""
    global ACTIVE, REASON
    if ACTIVE:
        return True
    if os.environ.get(_DISABLE, "").strip() not in ("", "0"):
        REASON = f"{_DISABLE} is set"
        return False
    try:
        from ._speedups import Waker, deliver
        from ._speedups import install as install_c_path
    except ImportError:
        REASON = "the C extension streamlib._speedups was not built (no C compiler at install time)"
        return False
    current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if not isinstance(current_tasks, dict):  # a Python whose asyncio keeps the running task elsewhere
        REASON = "this Python's asyncio has no current-task table"
        return False

    from .handoff import MAX_DEPTH, LoopSlice
    from .mailbox import EMPTY, Mailbox
    from .messages import Message, TimedTick
    from .ports import StreamInput, StreamOutput
    from .runtime import ActorRuntime

    # The modules whose hooks change, by name relative to this package (a frozen copy of the
    # package, as the benchmarks make, installs into itself).
    ports = importlib.import_module(f"{__package__}.ports")
    runtime = importlib.import_module(f"{__package__}.runtime")

    originals: dict[str, Callable[..., Any]] = {
        "Mailbox.put_nowait": Mailbox.put_nowait,
        "Mailbox.get_nowait": Mailbox.get_nowait,
        "ActorRuntime.woken": ActorRuntime.woken,
        "ports.deliver": ports.deliver,
    }
    install_c_path(
        Mailbox=Mailbox,
        StreamInput=StreamInput,
        StreamOutput=StreamOutput,
        ActorRuntime=ActorRuntime,
        LoopSlice=LoopSlice,
        TimedTick=TimedTick,
        Message=Message,
        EMPTY=EMPTY,
        current_tasks=current_tasks,
        max_depth=MAX_DEPTH,
    )
    setattr(runtime, "make_waker", Waker)  # noqa: B010 - a module found by name
    setattr(ports, "_deliver", deliver)  # noqa: B010
    PYTHON_METHODS.update(originals)
    ACTIVE, REASON = True, ""
    return True
