"""Clocks: where ticks come from when no upstream drives an actor.

An actor with connected inputs ticks when its upstream delivers (see ``Actor``); an
actor with nothing upstream -- the *bathtub* -- runs its own :class:`SoftwareClock`.
:class:`Clock` is the seam for other time sources (PTP, genlock, a test's manual clock):
anything that can produce the next :class:`~streamlib.messages.TimedTick`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from .messages import TimedTick
from .threadsafe import call_soon, settle

if TYPE_CHECKING:
    from .actor import Actor

__all__ = ["Clock", "SoftwareClock", "sleep_until"]

_ids = itertools.count(1)


class Clock(ABC):
    """A source of ticks.

    ``next_tick`` waits until the next tick is due and returns it. Implementations
    count ticks they had to skip in :attr:`skipped`. A clock is owned by one actor and
    is only ever awaited from that actor's event loop.
    """

    clock_id: str
    fps: float
    skipped: int = 0

    @abstractmethod
    async def next_tick(self) -> TimedTick:
        """Wait for and return the next tick."""

    def bind(self, actor: Actor) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called when ``actor`` is given this clock (and again for each restarted instance)."""


class _PreciseTimer:
    """One daemon thread that resolves futures at exact ``time.monotonic()`` deadlines.

    Event loops arm their timers in whole milliseconds (epoll's timeout, libuv's clock),
    so a 60 fps clock sleeping on the loop wakes up to 1 ms late, a different amount
    each tick: that is jitter. A thread blocked on a condition variable wakes within
    tens of microseconds of its deadline and hands the wake-up to the loop with
    ``call_soon_threadsafe``; every clock of the process shares the one thread.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, deadline: float, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), loop, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlib-clock", daemon=True)
                self._thread.start()
            if self._heap[0][3] is fut:
                self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        with self._cond:
            while True:
                if not heap:
                    self._cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, loop, fut = heapq.heappop(heap)
                call_soon(loop, settle, fut)


_timer = _PreciseTimer()


def _new_timer_after_fork() -> None:
    """A forked child (a process dispatcher's worker) has a copy of the timer but not its
    thread: start afresh, or a ``sleep_until`` there would never wake."""
    global _timer
    _timer = _PreciseTimer()


os.register_at_fork(after_in_child=_new_timer_after_fork)


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``, to within tens of microseconds."""
    fut = asyncio.get_running_loop().create_future()
    _timer.call_at(deadline, asyncio.get_running_loop(), fut)
    await fut


class SoftwareClock(Clock):
    """A free-running, drift-free clock on ``time.monotonic()``.

    Tick *n* is due at ``t0 + n / fps``: deadlines are absolute, so sleep overshoot never
    accumulates. A tick that comes late is delivered at once; when the clock falls more
    than a whole period behind (a slow ``process``), it jumps to the current period and
    counts the ticks it skipped instead of bursting to catch up. ``fps=math.inf`` ticks
    as fast as the actor can go.
    """

    def __init__(self, fps: float = 60.0, clock_id: str | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        self.period = 0.0 if math.isinf(fps) else 1.0 / fps
        self.clock_id = clock_id or f"software-clock-{next(_ids)}"
        self.skipped = 0
        self._t0: float | None = None
        self._n = -1

    async def next_tick(self) -> TimedTick:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        n = self._n + 1
        period = self.period
        if period:
            deadline = self._t0 + n * period
            if now - deadline >= period:  # a whole period late or more: skip, don't burst
                caught_up = int((now - self._t0) / period)
                self.skipped += caught_up - n
                n = caught_up
                deadline = self._t0 + n * period
            elif deadline > now:
                await sleep_until(deadline)
        else:
            deadline = now
            await asyncio.sleep(0)
        self._n = n
        return TimedTick(deadline, n, self.clock_id, self.fps)

    def __repr__(self) -> str:
        return f"<SoftwareClock {self.clock_id} {self.fps:g} fps tick={self._n} skipped={self.skipped}>"
