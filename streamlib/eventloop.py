"""Which event loop an actor lives on.

An actor constructed while an event loop is running in the current thread (a script
under ``asyncio.run``, a Jupyter kernel, another actor) runs on that loop. Constructed
anywhere else (a plain script, the REPL, a worker thread) it runs on one shared
*background loop*: a daemon thread that streamlib starts on first use, on uvloop where
uvloop is installed. Children always live on their parent's loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import weakref

from .signals import install_sigterm_handler
from .worker import start_loop_thread

__all__ = ["background_loop", "current_loop", "new_event_loop"]

_lock = threading.Lock()
_background: asyncio.AbstractEventLoop | None = None
_worker_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def new_worker_loop() -> asyncio.AbstractEventLoop:
    """A private loop for a dispatcher's worker thread; actors never make it their home."""
    return register_worker_loop(new_event_loop())


def register_worker_loop(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """Mark ``loop`` as a dispatcher's private worker loop (no actor makes it its home; it is
    closed at interpreter exit if idle, rather than left to the garbage collector during
    interpreter teardown, which cannot close it cleanly)."""
    _worker_loops.add(loop)
    return loop


def _close_idle_worker_loops() -> None:
    for loop in list(_worker_loops):
        if not loop.is_running() and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.close()


def is_worker_loop(loop: asyncio.AbstractEventLoop) -> bool:
    return loop in _worker_loops


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when available (faster timers and callbacks), else asyncio's."""
    if sys.platform != "win32":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first call (thread-safe)."""
    global _background
    install_sigterm_handler()  # the actors it will run stop gracefully on SIGTERM (see .signals)
    with _lock:
        if _background is None or _background.is_closed():
            loop = new_event_loop()
            start_loop_thread(loop, "streamlib-loop")
            _background = loop
        return _background


def current_loop() -> asyncio.AbstractEventLoop:
    """The loop a new top-level actor should live on (see the module docstring)."""
    loop = asyncio._get_running_loop()
    return loop if loop is not None else background_loop()


def existing_background_loop() -> asyncio.AbstractEventLoop | None:
    """The shared background loop if one was started (never starts one: for exit hooks)."""
    return _background


def is_background(loop: asyncio.AbstractEventLoop) -> bool:
    return loop is _background


def _forget_in_child() -> None:
    """A forked child (a process dispatcher's worker, a trial run) has no thread running the
    parent's background loop: it starts its own if it needs one. Without this, its exit would
    wait for actors that live on a loop nobody runs (and its copy of the lock may be held)."""
    global _background, _lock
    _background = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_close_idle_worker_loops)
