"""Resolving an event loop's futures from any thread: the one way streamlib does it.

Mailboxes wake blocked readers and writers, the clock thread wakes actors waiting for a
tick, the process and GPU dispatchers report finished work -- all from threads that do not
own the future's loop. Each goes through :func:`settle_threadsafe` (or :func:`call_soon`),
which knows the two edge cases: the waiter may have been cancelled (the future is already
done: nothing to do) and the loop may be closed (nobody is left to wake: nothing to do).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_soon", "settle", "settle_threadsafe"]

_T = TypeVar("_T")


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``loop.call_soon_threadsafe(fn, *args)``, doing nothing if the loop is closed."""
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to call
        loop.call_soon_threadsafe(fn, *args)


def settle(future: asyncio.Future[_T], result: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` on its own loop's thread, unless its waiter was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def settle_threadsafe(future: asyncio.Future[_T], result: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` from any thread: directly on its loop, else through that loop."""
    loop = future.get_loop()
    if asyncio._get_running_loop() is loop:
        settle(future, result, error)
    else:
        call_soon(loop, settle, future, result, error)
