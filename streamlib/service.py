"""Running a supervision tree as a service: until SIGINT or SIGTERM, then a clean stop.

::

    import streamlib

    def main():
        app = streamlib.Supervisor(name="app")
        source = app.spawn(Camera)
        source >> app.spawn(FileSink, "out.mp4")
        return app

    if __name__ == "__main__":
        raise SystemExit(streamlib.run(main))

or, without a ``__main__`` block, ``streamlib serve mymodule:main``.

:func:`run` builds the tree by calling ``main`` (a function or coroutine function that
returns the root actor, several actors, or ``None`` for "every actor it created") on a
fresh event loop, then waits. On SIGINT or SIGTERM it stops the roots -- top-down: each
root stops its children before its own ``on_stop`` runs, so sinks finalize their files --
and waits at most ``stop_timeout`` seconds for everything to end. A second signal exits
at once (status 128 + the signal's number, no traceback): the operator meant it. The
service also ends by itself when every root has ended (a finite stream).

An *unsupervised failure* -- an actor of the tree that fails with no
:class:`~streamlib.Supervisor` above it to restart it (a root, a plain actor's child, or a
supervisor that gave up and has no supervisor itself) -- stops the rest the same way and
the service exits with status 1 once it has stopped (within ``stop_timeout``), so that a
process manager's restart-on-failure (systemd ``Restart=on-failure``, Docker
``--restart on-failure``, Kubernetes) brings the whole service back.

Exit statuses: 0 after a clean stop or a finite end, 1 after a failure, 2 if the stop
deadline passed, 128 + signal number after a second signal.

Memory: a media pipeline allocates and frees frame-sized buffers on many threads, and when a
stall piles frames up, glibc's allocator keeps the freed memory in its per-thread arenas
instead of returning it: the process's RSS keeps the high-water mark of the worst stall so far
(a 20-frame 720p pile-up left +55 MB resident here). So :func:`serve` gives free memory back
every ``trim_every`` seconds (:func:`release_free_memory`, glibc's ``malloc_trim``; off with
``None``; a no-op elsewhere).

Logs go through :mod:`logging`; :func:`configure_logging` (called by :func:`run` unless
told otherwise, and only when the root logger has no handler yet) prints each record with
the path of the actor it came from, e.g. ``INFO /app/sink: wrote 300 frames``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from streamlib import Actor, LifecycleState, Supervisor, current_actor, running_actors
from streamlib.eventloop import new_event_loop

__all__ = ["ActorPathFilter", "configure_logging", "release_free_memory", "run", "trim_periodically"]

log = logging.getLogger("streamlib.service")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DEADLINE = 2
EXIT_INTERRUPTED = 130


class ActorPathFilter(logging.Filter):
    """Adds ``record.actor``: the path of the actor whose code logged the record, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "actor"):
            actor = current_actor()
            record.actor = actor.path if actor is not None else "-"
        return True


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(actor)s %(name)s: %(message)s"


def configure_logging(level: int | str = logging.INFO, stream: Any = None) -> logging.Handler | None:
    """Log to stderr with the actor's path on every line, unless logging is already set up
    (the root logger has a handler): then only the path filter is added to those handlers."""
    root = logging.getLogger()
    if root.handlers:
        for handler in root.handlers:
            if not any(isinstance(f, ActorPathFilter) for f in handler.filters):
                handler.addFilter(ActorPathFilter())
        return None
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ActorPathFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _as_roots(result: Any, before: set[Actor], loop: asyncio.AbstractEventLoop) -> list[Actor]:
    if isinstance(result, Actor):
        return [result]
    if result is None:
        return [a for a in running_actors() if a not in before and a.event_loop is loop]
    if isinstance(result, Iterable) and not isinstance(result, str | bytes):
        found = list(result)
        if all(isinstance(a, Actor) for a in found):
            return found
    raise TypeError(f"main() must return an Actor, a list of actors or None, got {result!r}")


def _running(actor: Actor) -> list[str]:
    """Paths of the actors under ``actor`` (itself included) that have not ended."""
    found = []
    stack = [actor]
    while stack:
        a = stack.pop()
        if not a.join().done():
            found.append(a.path)
        stack.extend(a.children)
    return sorted(found)


def unsupervised_failures(roots: Iterable[Actor]) -> list[Actor]:
    """The actors under ``roots`` (themselves included) that failed with no supervisor to
    restart them: a failed root, a failed child of a plain actor, a supervisor that gave up
    and has no supervisor of its own. (A supervised child a supervisor chose not to restart,
    a ``temporary`` one, was handled by it: not listed.)"""
    found = []
    stack = list(roots)
    while stack:
        actor = stack.pop()
        if actor.state is LifecycleState.FAILED and not isinstance(actor.parent, Supervisor):
            found.append(actor)
        stack.extend(actor.children)
    return sorted(found, key=lambda a: a.path)


async def _first_unsupervised_failure(roots: list[Actor], period: float = 0.1) -> list[Actor]:
    while not (failed := unsupervised_failures(roots)):
        await asyncio.sleep(period)
    return failed


_malloc_trim: Any = None


def release_free_memory() -> bool:
    """Return the memory the C allocator holds free to the operating system (glibc's
    ``malloc_trim(0)``, which also releases free pages inside its heaps); ``False`` where
    there is no glibc. Takes milliseconds on a large heap: run it off the event loop."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True


async def trim_periodically(every: float) -> None:
    """Call :func:`release_free_memory` every ``every`` seconds, on a worker thread, until cancelled."""
    while True:
        await asyncio.sleep(every)
        if not await asyncio.to_thread(release_free_memory):
            return  # no glibc: nothing to do, ever


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen, so a cancelled gather logs nothing at loop close."""
    if not future.cancelled():
        future.exception()


async def serve(
    main: Callable[[], Any],
    stop_timeout: float = 10.0,
    handle_signals: bool = True,
    *,
    exit_at_once: bool = False,
    trim_every: float | None = 60.0,
) -> int:
    """What :func:`run` runs on its loop (use it directly inside an existing loop).

    ``exit_at_once``: a second signal ends the process on the spot (``os._exit``, what
    :func:`run` asks for); otherwise it stops the waiting and returns 128 + its number.
    ``trim_every``: seconds between two :func:`release_free_memory` calls (``None``: never)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[str] = []
    second: list[int] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        signals.append(name)
        if len(signals) == 1:
            log.info("%s received: stopping (deadline %.1f s)", name, stop_timeout)
        else:
            second.append(signum)
            log.warning("%s received again: exiting at once", name)
            if exit_at_once:
                logging.shutdown()  # flush the handlers: os._exit skips every exit hook
                os._exit(128 + signum)
        stop.set()

    installed: list[int] = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - e.g. Windows
                pass
    trimming = asyncio.ensure_future(trim_periodically(trim_every)) if trim_every else None
    try:
        before = set(running_actors())
        result = main()
        if inspect.isawaitable(result):
            result = await result
        roots = _as_roots(result, before, loop)
        log.info("serving %s", ", ".join(a.path for a in roots) or "nothing")
        ended: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(_join(a) for a in roots)))
        ended.add_done_callback(_retrieve)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        failing: asyncio.Future[list[Actor]] = asyncio.ensure_future(_first_unsupervised_failure(roots))
        try:
            await asyncio.wait([ended, stopping, failing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failing.cancel()
        code = EXIT_OK
        failed_first = failing.result() if failing.done() and not failing.cancelled() else []
        if failed_first and not ended.done():
            log.error(
                "unsupervised failure of %s: stopping the service (deadline %.1f s)",
                ", ".join(a.path for a in failed_first),
                stop_timeout,
            )
        if not ended.done():
            started = time.monotonic()
            for root in roots:
                root.stop()  # top-down: each stops its children, then runs its own on_stop
            stop.clear()
            stopping = asyncio.ensure_future(stop.wait())  # a second signal: give up waiting
            done, _ = await asyncio.wait([ended, stopping], timeout=stop_timeout, return_when=asyncio.FIRST_COMPLETED)
            if ended not in done:
                ended.cancel()
                late = [p for root in roots for p in _running(root)]
                why = "a second signal" if stopping in done else f"the {stop_timeout:g} s deadline"
                log.error("still running after %s: %s", why, ", ".join(late))
                code = 128 + second[0] if second else EXIT_DEADLINE
            else:
                log.info("stopped in %.2f s", time.monotonic() - started)
        stopping.cancel()
        failed = [a.path for a in unsupervised_failures(roots)]
        if failed and code == EXIT_OK:
            log.error("failed: %s", ", ".join(failed))
            code = EXIT_FAILED
        return code
    finally:
        if trimming is not None:
            trimming.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _join(actor: Actor) -> LifecycleState:
    return await actor.join()


def run(
    main: Callable[[], Any],
    *,
    stop_timeout: float = 10.0,
    log_level: int | str | None = logging.INFO,
    handle_signals: bool = True,
    trim_every: float | None = 60.0,
) -> int:
    """Run the tree ``main()`` builds until SIGINT/SIGTERM (or until it ends, or an actor
    fails unsupervised), then stop it top-down within ``stop_timeout`` seconds. Returns an
    exit status: 0 after a clean stop, 1 after an unsupervised failure, 2 if the deadline
    passed; a second signal exits the process at once with 128 + its number.

    ``log_level=None`` leaves logging alone; otherwise :func:`configure_logging` sets it up
    (when nothing else has). ``trim_every``: see the module docstring (memory)."""
    if log_level is not None:
        configure_logging(log_level)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(main, stop_timeout, handle_signals, exit_at_once=True, trim_every=trim_every))
