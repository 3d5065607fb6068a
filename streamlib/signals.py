"""SIGTERM takes the graceful path, as Ctrl-C does.

``docker stop``, ``systemctl stop``, Kubernetes and a plain ``kill`` send SIGTERM, whose
default action ends the process on the spot: no sink writes its trailer, no ``on_stop``
runs. Ctrl-C (SIGINT) instead raises ``KeyboardInterrupt``, which unwinds the program:
under ``asyncio.run`` every task is cancelled (actors stop, children first, and sinks
finalize); in a plain script the interpreter exits and streamlib's exit hook stops the
actors on its background loop.

So when streamlib starts its first top-level actor in a process, and only if SIGTERM
still has its default disposition (nobody -- not the user, not a framework, not
:func:`streamlib.service.run` -- installed a handler, and it is not ignored), it installs
:func:`on_sigterm`, which takes that same path and makes the process exit with status
143 (128 + 15, what a shell reports for a SIGTERM death):

* with an event loop running in the main thread (``asyncio.run``, a Jupyter kernel), it
  raises ``SystemExit(143)`` from a callback on that loop, not inside whichever actor's
  code happened to be running: the loop stops, ``asyncio.run`` cancels every task, and
  each actor tears down as it does on Ctrl-C;
* otherwise (a plain script: actors live on the background loop, the main thread sleeps,
  waits or computes), it raises ``SystemExit(143)`` in the main thread, and the
  interpreter's exit stops the actors.

A second SIGTERM while that is under way restores the default action and re-sends the
signal: the process dies at once, as ``kill`` intended. A handler installed later by the
user replaces ours, as usual; ours never replaces one. Only the main thread can install
signal handlers: an actor first built on another thread installs nothing (the next
top-level actor built on the main thread does). A forked child starts undecided again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

__all__ = ["EXIT_SIGTERM", "install_sigterm_handler", "on_sigterm"]

log = logging.getLogger("streamlib")

EXIT_SIGTERM = 128 + 15
"""The exit status after a graceful SIGTERM stop (what a shell reports for a SIGTERM death)."""

_decided = False  # looked at SIGTERM's disposition in this process (installed ours, or left it)
_received = 0
_installed = False  # ours is the handler (until someone replaces it, which we then leave alone)
_drain: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]] | None = None


def set_drain(drain: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]]) -> None:
    """How to stop a loop's actors gracefully before exiting (the runtime's sources-first
    stop, which lets sinks write every frame already sent); set once by the runtime."""
    global _drain
    _drain = drain


def install_sigterm_handler() -> bool:
    """Install :func:`on_sigterm` if SIGTERM still has its default disposition; return
    whether ours was installed. Called by streamlib for every new top-level actor (cheap
    after the first call); safe to call from any thread (only the main thread installs)."""
    global _decided, _installed
    if _decided:
        return _installed  # cheap: this runs for every new top-level actor
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return False
    _decided = True
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False  # someone else's (or ignored): never replaced
    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True
    return True


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Stop gracefully, as on Ctrl-C, and exit with status 143 (see the module docstring)."""
    global _received
    _received += 1
    if _received > 1:
        log.warning("SIGTERM received again: exiting at once")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log.info("SIGTERM received: stopping actors (a second SIGTERM exits at once)")
    loop = asyncio._get_running_loop()  # the main thread's: a signal handler runs there
    if loop is not None and not loop.is_closed():
        if _drain is not None:  # drain first (sources stop, sinks finish), then exit as Ctrl-C would
            loop.call_soon_threadsafe(_drain_then_exit, loop)
        else:
            loop.call_soon_threadsafe(_exit)
        return
    _exit()


def _drain_then_exit(loop: asyncio.AbstractEventLoop) -> None:
    assert _drain is not None
    task = loop.create_task(_drain(loop))
    task.add_done_callback(lambda _: _exit())


def _exit() -> None:
    raise SystemExit(EXIT_SIGTERM)


def _forget_in_child() -> None:
    global _decided, _received, _installed
    _decided = False
    _received = 0
    _installed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
