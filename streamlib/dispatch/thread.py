"""Run ``process`` on a thread pool, off the event loop.

For CPU-bound work in C extensions that release the GIL (numpy, OpenCV, PyAV), and for
blocking calls. ``process`` may be ``async def`` -- it then runs on an event loop private
to the worker thread, and its ``await input.read()`` / ``await output.send()`` work as
usual (mailboxes are thread-safe) -- or a plain ``def`` using ``read_nowait()`` and
``send_nowait()``. ``on_start`` and ``on_stop`` run on the pool too, so thread-affine
resources can be created and released where they are used: ``ThreadPoolDispatcher(workers=1)``
is exactly one thread, so every call of the actors on it happens on that thread (GUI
toolkits, some device APIs need that); a waiting hook then holds that thread.

**A waiting actor holds no worker** (with ``workers`` > 1). ``workers`` bounds how many hooks *run* at once, not
how many may be in progress: a hook that awaits something that is not there yet (``await
input.read()`` on an idle input, ``await output.send()`` to a full blocking input,
``asyncio.sleep``) gives its worker back while it waits and takes one again to go on. So
actors waiting for input can never starve the pool: an unrelated actor on the same
dispatcher keeps ticking, and every actor can be stopped. Synchronous blocking calls
(``time.sleep``, a blocking ``send_nowait``, a device read) do hold their worker, as any
pool's thread would: use ``await`` where a wait can be long.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import selectors
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..eventloop import register_worker_loop
from .base import Dispatcher

if TYPE_CHECKING:
    from ..actor import Actor
    from ..messages import TimedTick

__all__ = ["ThreadPoolDispatcher"]

_local = threading.local()

MAX_THREADS = 1024
"""Threads a pool may hold in all, running or waiting (created only when needed)."""


class _Permit:
    """The right of one running hook to use one of the pool's ``workers``, handed back while
    the hook's private loop has nothing to do (see the module docstring)."""

    __slots__ = ("held", "slots")

    def __init__(self, slots: threading.Semaphore) -> None:
        self.slots = slots
        self.held = False

    def take(self) -> None:
        if not self.held:
            self.slots.acquire()
            self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()


class _PermitSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The worker loop's selector: a select that would block first gives the worker back."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        permit: _Permit | None = getattr(_local, "permit", None)
        if permit is None or (timeout is not None and timeout <= 0):
            return super().select(timeout)  # type: ignore[no-any-return]
        permit.give_back()
        try:
            return super().select(timeout)  # type: ignore[no-any-return]
        finally:
            permit.take()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """This worker thread's private loop: asyncio's, whose selector we can wrap (uvloop's
    cannot be), registered as a worker loop so that no actor makes it its home."""
    loop = getattr(_local, "loop", None)
    if loop is None:
        loop = _local.loop = register_worker_loop(asyncio.SelectorEventLoop(_PermitSelector()))
    return loop


def _run_in_worker(slots: threading.Semaphore | None, fn: Callable[..., Any], *args: Any) -> None:
    permit = _Permit(slots) if slots is not None else None
    if permit is not None:
        permit.take()
    _local.permit = permit
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            _worker_loop().run_until_complete(result)
    finally:
        _local.permit = None
        if permit is not None:
            permit.give_back()


class ThreadPoolDispatcher(Dispatcher):
    """Run an actor's hooks on a pool where at most ``workers`` of them run at once."""

    def __init__(self, workers: int = 4) -> None:
        super().__init__()
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.workers = workers
        self._slots = threading.Semaphore(workers)
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            # workers=1 is one thread (thread-affine resources: GUI toolkits, some devices); a
            # larger pool grows threads for hooks that wait, so waiting never starves it.
            threads = 1 if self.workers == 1 else MAX_THREADS
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="streamlib-worker")
        return self._executor

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        return self._submit(actor.process, tick)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        return self._submit(hook)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Awaitable[None] | None:
        # The copied context carries current_actor() into the worker thread.
        ctx = contextvars.copy_context()
        try:
            return asyncio.get_running_loop().run_in_executor(
                self._pool(), ctx.run, _run_in_worker, self._slots, fn, *args
            )
        except RuntimeError:  # the interpreter is exiting and pools take no more work: run it here
            ctx.run(_run_in_worker, None, fn, *args)  # on the loop's thread: never wait for a worker
            return None

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting here would block the loop; the pool's threads finish on their own.
            executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<ThreadPoolDispatcher workers={self.workers} actors={self._attached}>"
