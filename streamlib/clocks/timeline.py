"""Ticking on a shared timeline: the part every network or hardware clock has in common."""

from __future__ import annotations

import math
import time
from abc import abstractmethod

from streamlib import Clock, TimedTick
from streamlib.clock import sleep_until

__all__ = ["TimelineClock"]


class TimelineClock(Clock):
    """A :class:`~streamlib.Clock` whose tick *n* is due when a reference time reaches
    ``n / fps`` seconds since that time's epoch.

    Two machines reading the same reference (a PTP grandmaster, a PHC disciplined by one)
    therefore tick on the same instants and give a frame the same number. Subclasses
    supply :meth:`now_ns`; the tick's ``timestamp`` is the local ``time.monotonic()``
    instant at which the tick was due, as every streamlib timestamp is. A tick more than
    a period late is skipped and counted (never bursts), like the software clock's.
    """

    fps: float

    def __init__(self, fps: float) -> None:
        if not fps > 0 or math.isinf(fps):
            raise ValueError(f"{type(self).__name__}: fps must be a finite rate > 0, got {fps!r}")
        self.fps = float(fps)
        self.period_ns = 1e9 / self.fps
        self.skipped = 0
        self._last_n: int | None = None

    @abstractmethod
    def now_ns(self) -> int:
        """The reference time, in nanoseconds since its epoch."""

    async def ready(self) -> None:
        """Wait until :meth:`now_ns` can be trusted (a network clock waits for its lock)."""

    def still_ready(self) -> bool:
        """Whether the reference is still trustworthy when a tick falls due."""
        return True

    async def next_tick(self) -> TimedTick:
        while True:
            await self.ready()
            ref = self.now_ns()
            mono = time.monotonic()
            n = math.floor(ref / self.period_ns) + 1
            last = self._last_n
            if last is not None and n <= last:
                n = last + 1  # never the same frame twice (the estimate moved back a little)
            due = mono + (n * self.period_ns - ref) / 1e9
            await sleep_until(due)
            if self.still_ready():
                if last is not None and n > last + 1:
                    self.skipped += n - last - 1  # late: skipped, not burst (counted once delivered)
                self._last_n = n
                return TimedTick(due, n, self.clock_id, self.fps)
