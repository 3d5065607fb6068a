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
from collections.abc import Callable
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

    def next_tick_future(self) -> asyncio.Future[TimedTick]:
        """The next tick as a future on the running loop: what an actor's run loop waits on.

        By default :meth:`next_tick` in a task; a clock that can resolve a future directly
        overrides it to spare the task per tick (:class:`SoftwareClock` does, from its timer
        thread). Cancelling the future abandons the wait, as cancelling ``next_tick`` would."""
        return asyncio.ensure_future(self.next_tick())


class _PreciseTimer:
    """One daemon thread that calls functions on event loops at exact ``time.monotonic()`` deadlines.

    Event loops arm their timers in whole milliseconds (epoll's timeout, libuv's clock),
    so a 60 fps clock sleeping on the loop wakes up to 1 ms late, a different amount
    each tick: that is jitter. A thread blocked on a condition variable wakes within
    tens of microseconds of its deadline and hands the wake-up to the loop with
    ``call_soon_threadsafe``; every clock of the process shares the one thread.

    Deadlines are served earliest first. Everything due at one wake-up goes to each loop
    as one batch, in deadline order: one ``call_soon_threadsafe`` (one write to the loop's
    self-pipe, one take of the GIL) however many clocks were due together.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, Callable[..., object], tuple[object, ...]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(
        self, deadline: float, loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object
    ) -> None:
        """Call ``fn(*args)`` on ``loop``'s thread once ``time.monotonic()`` reaches ``deadline``."""
        entry = (deadline, next(self._seq), loop, fn, args)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamlib-clock", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        heap = self._heap
        cond = self._cond
        while True:
            with cond:
                while True:
                    if not heap:
                        cond.wait()
                        continue
                    now = time.monotonic()
                    wait = heap[0][0] - now
                    if wait > 0:
                        cond.wait(wait)
                        continue
                    batches: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., object], tuple[object, ...]]]]
                    batches = {}
                    while heap and heap[0][0] <= now:
                        _, _, loop, fn, args = heapq.heappop(heap)
                        batches.setdefault(loop, []).append((fn, args))
                    break
            # Outside the lock: a loop thread arming its next deadline never waits on a hand-off.
            for loop, due in batches.items():
                if len(due) == 1:
                    fn, args = due[0]
                    call_soon(loop, fn, *args)
                else:
                    call_soon(loop, _call_all, due)


def _call_all(due: list[tuple[Callable[..., object], tuple[object, ...]]]) -> None:
    for fn, args in due:
        fn(*args)


_timer = _PreciseTimer()


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``, to within tens of microseconds."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    _timer.call_at(deadline, loop, settle, fut)
    await fut


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_SLOTS = 64  # at most this many distinct phases per period ...
_SLOT = 0.001  # ... each at least this long (seconds)
_SILVER = math.sqrt(2.0) - 1.0


class _Phases:
    """Where on its period's grid each new clock ticks: clocks of equal rate spread out.

    Clocks built together (a hundred actors spawned in one burst) would otherwise have
    the same deadlines and hand their ticks to the loop in bursts that delay every other
    clock's tick. The *k*-th clock of a rate gets the phase ``frac(k * golden ratio)`` of
    its period (a low-discrepancy sequence: any number of consecutive clocks stay evenly
    spread, and each new one lands in the largest gap); each rate starts its sequence at
    its own offset, so the first clocks of different rates do not share a phase either.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[float, float] = {}

    def take(self, period: float) -> float:
        """The phase, a fraction of ``period``, for the next clock of that period."""
        with self._lock:
            phase = self._next.get(period)
            if phase is None:
                phase = (len(self._next) * _SILVER) % 1.0
            self._next[period] = (phase + _GOLDEN) % 1.0
        # Quantized to slots of at least _SLOT: clocks sharing a slot share their deadlines, so
        # the timer hands them over in one batch. Spreading every clock to an instant of its own
        # would cost one wake-up of the loop per tick; slots bound the wake-ups per period.
        slots = max(1, min(_SLOTS, int(period / _SLOT)))
        return (round(phase * slots) % slots) / slots


_phases = _Phases()


def _new_timer_after_fork() -> None:
    """A forked child (a process dispatcher's worker) has a copy of the timer but not its
    thread: start afresh, or a ``sleep_until`` there would never wake (and the phases'
    lock may have been copied held)."""
    global _timer, _phases
    _timer = _PreciseTimer()
    _phases = _Phases()


os.register_at_fork(after_in_child=_new_timer_after_fork)


class SoftwareClock(Clock):
    """A free-running, drift-free clock on ``time.monotonic()``.

    Tick *n* is due at ``t0 + n / fps``: deadlines are absolute, so sleep overshoot never
    accumulates. A tick that comes late is delivered at once; when the clock falls more
    than a whole period behind (a slow ``process``), it jumps to the current period and
    counts the ticks it skipped instead of bursting to catch up. ``fps=math.inf`` ticks
    as fast as the actor can go.

    ``t0`` lies on a grid of ``time.monotonic()``: ``t0 = phase * period`` modulo the period,
    within half a period of the first ``next_tick`` call (tick 0 may so be due up to half a
    period before or after it). ``phase=None`` (the default) gives each new clock of a rate
    its own phase, spreading clocks of equal rate evenly over the period, so that actors
    built together do not all tick at the same instant; pass a fraction in ``[0, 1)`` to put
    clocks on one chosen phase (equal phases and rates tick together).
    """

    def __init__(self, fps: float = 60.0, clock_id: str | None = None, *, phase: float | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        if phase is not None and not 0.0 <= phase < 1.0:
            raise ValueError(f"phase must be a fraction of a period in [0, 1) or None, got {phase!r}")
        self.fps = float(fps)
        self.period = 0.0 if math.isinf(fps) else 1.0 / fps
        self.clock_id = clock_id or f"software-clock-{next(_ids)}"
        self.phase = phase
        self.skipped = 0
        self._t0: float | None = None
        self._n = -1

    def _origin(self, now: float) -> float:
        """``t0``: the grid point of this clock's phase nearest to ``now``."""
        period = self.period
        phase = self.phase if self.phase is not None else _phases.take(period)
        self.phase = phase
        offset = (now - phase * period) % period
        return now - offset if offset <= period / 2 else now + (period - offset)

    def next_tick_future(self) -> asyncio.Future[TimedTick]:
        """The next tick as a future, resolved straight from the timer thread (no task per tick).

        Cancelling the future abandons that tick: the next call plans the same tick again
        (or skips it if it is a whole period late by then)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TimedTick] = loop.create_future()
        now = time.monotonic()
        period = self.period
        n = self._n + 1
        if not period:
            loop.call_soon(self._deliver, fut, n, TimedTick(now, n, self.clock_id, self.fps))
            return fut
        if self._t0 is None:
            self._t0 = self._origin(now)
        deadline = self._t0 + n * period
        if now - deadline >= period:  # a whole period late or more: skip, don't burst
            caught_up = int((now - self._t0) / period)
            self.skipped += caught_up - n
            self._n = caught_up - 1  # the skipped ticks are gone, whatever becomes of this wait
            n = caught_up
            deadline = self._t0 + n * period
        tick = TimedTick(deadline, n, self.clock_id, self.fps)
        if deadline > now:
            _timer.call_at(deadline, loop, self._deliver, fut, n, tick)
        else:
            self._n = n
            fut.set_result(tick)
        return fut

    def _deliver(self, fut: asyncio.Future[TimedTick], n: int, tick: TimedTick) -> None:
        if not fut.done():  # a cancelled wait leaves the tick to the next call
            self._n = n
            fut.set_result(tick)

    async def next_tick(self) -> TimedTick:
        return await self.next_tick_future()

    def __repr__(self) -> str:
        return f"<SoftwareClock {self.clock_id} {self.fps:g} fps tick={self._n} skipped={self.skipped}>"
