"""The process's GPU thread: where all GPU work is encoded and submitted.

One thread (``streamlib-gpu``) running its own event loop, shared by the GPU dispatcher's
actors and by the transfers in :mod:`.context`: the CPU side of the one GPU queue, so all
use of the queue is serialised without locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from streamlib.eventloop import new_worker_loop
from streamlib.worker import start_loop_thread

__all__ = ["GPUThread", "awaited", "gpu_thread"]


class GPUThread:
    """The thread all GPU work of the process is encoded and submitted on."""

    def __init__(self) -> None:
        self.loop = new_worker_loop()
        self.thread = start_loop_thread(self.loop, "streamlib-gpu")

    def is_current(self) -> bool:
        return threading.current_thread() is self.thread

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the GPU thread (awaited there if it returns an
        awaitable); the result or exception arrives in the returned future."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        ctx = contextvars.copy_context()

        def start() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                result = ctx.run(fn, *args, **kwargs)
            except BaseException as exc:
                fut.set_exception(exc)
                return
            if not inspect.isawaitable(result):
                fut.set_result(result)
                return
            task = self.loop.create_task(awaited(result), context=ctx)

            def done(t: asyncio.Task[Any]) -> None:
                if t.cancelled():
                    fut.cancel()
                elif t.exception() is not None:
                    fut.set_exception(t.exception())  # type: ignore[arg-type]
                else:
                    fut.set_result(t.result())

            task.add_done_callback(done)

        self.loop.call_soon_threadsafe(start)
        return fut


async def awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_thread: GPUThread | None = None
_thread_lock = threading.Lock()


def gpu_thread() -> GPUThread:
    """The process's GPU thread, started on first use."""
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = GPUThread()
        return _thread
