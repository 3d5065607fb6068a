"""Run ``process`` on a thread pool, off the event loop.

For CPU-bound work in C extensions that release the GIL (numpy, OpenCV, PyAV), and for
blocking calls. ``process`` may be ``async def`` -- it then runs on an event loop private
to the worker thread, and its ``await input.read()`` / ``await output.send()`` work as
usual (mailboxes are thread-safe) -- or a plain ``def`` using ``read_nowait()`` and
``send_nowait()``. ``on_start`` and ``on_stop`` run on the pool too, so thread-affine
resources can be created and released where they are used (use ``workers=1`` to keep
every call of an actor on one thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..eventloop import new_worker_loop
from .base import Dispatcher

if TYPE_CHECKING:
    from ..actor import Actor
    from ..messages import TimedTick

__all__ = ["ThreadPoolDispatcher"]

_local = threading.local()


def _run_in_worker(fn: Callable[..., Any], *args: Any) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        loop = getattr(_local, "loop", None)
        if loop is None:
            loop = _local.loop = new_worker_loop()
        loop.run_until_complete(result)


class ThreadPoolDispatcher(Dispatcher):
    """Run an actor's hooks on a pool of ``workers`` threads."""

    def __init__(self, workers: int = 4) -> None:
        super().__init__()
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="streamlib-worker")
        return self._executor

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        return self._submit(actor.process, tick)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        return self._submit(hook)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Awaitable[None] | None:
        # The copied context carries current_actor() into the worker thread.
        ctx = contextvars.copy_context()
        try:
            return asyncio.get_running_loop().run_in_executor(self._pool(), ctx.run, _run_in_worker, fn, *args)
        except RuntimeError:  # the interpreter is exiting and pools take no more work: run it here
            ctx.run(_run_in_worker, fn, *args)
            return None

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting here would block the loop; the pool's threads finish on their own.
            executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"<ThreadPoolDispatcher workers={self.workers} actors={self._attached}>"
