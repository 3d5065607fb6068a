"""Waiting for a pipeline to finish: one line in a plain script, a notebook or a coroutine.

Actors start themselves, so a script that wires ``TestPattern(frames=60) >> FileSink("q.mp4")``
and does nothing else reaches its end -- and the interpreter exits -- long before the
sixtieth frame. :func:`wait` is the line that keeps it alive::

    sink = FileSink("q.mp4")
    TestPattern(frames=60) >> sink
    streamlib.wait(sink)              # a plain script: blocks until the sink has finished

    await streamlib.wait(sink)        # a coroutine, or a Jupyter cell (top-level await)

Where no event loop runs in the calling thread (a plain script, the REPL, a worker
thread), ``wait`` blocks and returns the actors' final states. Where one runs (inside
``async def``, a notebook cell), blocking would freeze the very loop the actors may run
on, so ``wait`` returns an awaitable instead: ``await`` it. Either way a ``timeout``
raises :class:`TimeoutError` naming the actors still running; the actors keep running.

Wait for the *last* actors of the pipeline (the sinks): a pipeline ends from its sources
down (end of stream), and a sink has written its file once it has ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from .actor import Actor, LifecycleState

__all__ = ["wait"]


def wait(*actors: Actor | Iterable[Actor], timeout: float | None = None) -> Any:
    """Wait until every given actor (and its children) has ended; see the module docstring.

    Returns the final :class:`~streamlib.LifecycleState` of each actor, in order (a
    list), directly in a plain script, through ``await`` where an event loop runs."""
    found = _actors(actors)
    if asyncio._get_running_loop() is not None:
        return _wait_async(found, timeout)
    return _wait_blocking(found, timeout)


def _actors(given: tuple[Actor | Iterable[Actor], ...]) -> list[Actor]:
    found: list[Actor] = []
    for item in given:
        if isinstance(item, Actor):
            found.append(item)
        elif isinstance(item, Iterable) and not isinstance(item, str | bytes):
            found.extend(_actors(tuple(item)))
        else:
            raise TypeError(f"streamlib.wait() takes actors (or lists of actors), got {item!r}")
    if not found:
        raise TypeError("streamlib.wait() needs at least one actor: the last ones of the pipeline (its sinks)")
    return found


def _timeout_error(actors: list[Actor], timeout: float | None) -> TimeoutError:
    running = ", ".join(a.path for a in actors if not a.join().done())
    return TimeoutError(f"still running after {timeout} s: {running}")


def _wait_blocking(actors: list[Actor], timeout: float | None) -> list[LifecycleState]:
    deadline = None if timeout is None else time.monotonic() + timeout
    states = []
    for actor in actors:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            states.append(actor.join().wait(left))
        except TimeoutError:
            raise _timeout_error(actors, timeout) from None
    return states


async def _wait_async(actors: list[Actor], timeout: float | None) -> list[LifecycleState]:
    async def join(actor: Actor) -> LifecycleState:
        return await actor.join()

    try:
        return await asyncio.wait_for(asyncio.gather(*(join(a) for a in actors)), timeout)
    except TimeoutError:
        raise _timeout_error(actors, timeout) from None
