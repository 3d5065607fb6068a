"""Daemon threads that serve the event loops: the one way streamlib starts a helper thread.

Two shapes recur. A *job worker* runs blocking calls in order on one daemon thread (the
process dispatcher's courier, the GPU readback thread, a file sink's writer): results come
back as an ``asyncio`` future on the calling loop or a ``concurrent.futures`` future for
threads. A *loop thread* runs an event loop forever (the background loop, the GPU thread).

Daemon threads rather than ``ThreadPoolExecutor``: executors refuse work once the
interpreter starts exiting -- exactly when actors still need their ``on_stop`` -- and a fork
from an executor thread would carry the executor's state into the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .threadsafe import call_soon, settle

__all__ = ["JobWorker", "LazySingleton", "start_loop_thread"]

log = logging.getLogger("streamlib")

_T = TypeVar("_T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | concurrent.futures.Future[Any] | None"]


class JobWorker:
    """One daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` on the worker; the result arrives on the calling loop."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, args, future))
        return future

    def submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        """Run ``fn(*args)`` on the worker; for callers on other threads (or ``wrap_future``)."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((fn, args, future))
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after the jobs already queued; nobody waits (errors are logged)."""
        self._jobs.put((fn, args, None))

    def close(self) -> None:
        """End the thread once the queued jobs are done."""
        self._jobs.put(None)

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, future = job
            if isinstance(future, concurrent.futures.Future) and not future.set_running_or_notify_cancel():
                continue
            try:
                result, error = fn(*args), None
            except BaseException as exc:
                result, error = None, exc
                if future is None:
                    log.error("%s: %r failed", self.name, fn, exc_info=exc)
            if isinstance(future, asyncio.Future):
                call_soon(future.get_loop(), settle, future, result, error)
            elif future is not None:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            del job, fn, args, future, result, error  # drop references before waiting again


def start_loop_thread(loop: asyncio.AbstractEventLoop, name: str) -> threading.Thread:
    """Run ``loop`` forever on a new daemon thread; return once it is running."""
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    started.wait()
    return thread


class LazySingleton(Generic[_T]):
    """A process-wide instance made on first use, thread-safely (``make()`` runs once)."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: _T | None = None

    def __call__(self) -> _T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def peek(self) -> _T | None:
        """The instance if one was made (never makes one)."""
        return self._value

    def forget(self) -> None:
        """Drop the instance (a forked child, which has none of the parent's threads)."""
        self._value = None
