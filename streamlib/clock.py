"""Clocks: where ticks come from when no upstream drives an actor.

An actor with connected inputs ticks when its upstream delivers (see ``Actor``); an
actor with nothing upstream -- the *bathtub* -- runs its own :class:`SoftwareClock`.
:class:`Clock` is the seam for other time sources (PTP, genlock, a test's manual clock):
anything that can produce the next :class:`~streamlib.messages.TimedTick`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from .messages import TimedTick

if TYPE_CHECKING:
    from .actor import Actor

__all__ = ["Clock", "SoftwareClock"]

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
                await asyncio.sleep(deadline - now)
        else:
            deadline = now
            await asyncio.sleep(0)
        self._n = n
        return TimedTick(deadline, n, self.clock_id, self.fps)

    def __repr__(self) -> str:
        return f"<SoftwareClock {self.clock_id} {self.fps:g} fps tick={self._n} skipped={self.skipped}>"
