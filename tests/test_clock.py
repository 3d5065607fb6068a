"""Clocks: drift-free deadlines, skipping instead of bursting, the manual test clock."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from streamlib import Actor, SoftwareClock, TimedTick
from streamlib.clock import sleep_until
from streamlib.testing import ManualClock


async def test_software_clock_ticks_on_an_absolute_grid() -> None:
    clock = SoftwareClock(fps=100, clock_id="grid")
    ticks = [await clock.next_tick() for _ in range(10)]
    t0 = ticks[0].timestamp
    for tick in ticks:
        assert tick.clock_source_id == "grid" and tick.fps == 100
        n = tick.frame_number  # n == index unless the loaded machine made the clock skip (counted)
        assert tick.timestamp == pytest.approx(t0 + n / 100, abs=1e-9)  # no accumulated drift
    assert [t.frame_number for t in ticks] == sorted({t.frame_number for t in ticks})
    assert ticks[-1].frame_number == 9 + clock.skipped
    assert time.monotonic() >= ticks[-1].timestamp


async def test_a_late_clock_skips_and_counts_instead_of_bursting() -> None:
    clock = SoftwareClock(fps=100)
    first = await clock.next_tick()
    time.sleep(0.055)  # a slow process: five and a half periods
    late = await clock.next_tick()
    assert late.frame_number >= 5 and clock.skipped == late.frame_number - 1
    after = await clock.next_tick()
    assert after.frame_number == late.frame_number + 1  # back on the grid, one at a time
    assert after.timestamp == pytest.approx(first.timestamp + after.frame_number / 100, abs=1e-9)


async def test_an_infinite_rate_ticks_as_fast_as_possible() -> None:
    clock = SoftwareClock(fps=math.inf)
    ticks = [await clock.next_tick() for _ in range(100)]
    assert [t.frame_number for t in ticks] == list(range(100)) and clock.skipped == 0


def test_fps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fps"):
        SoftwareClock(fps=0)


async def test_sleep_until_does_not_return_early() -> None:
    deadline = time.monotonic() + 0.02
    await sleep_until(deadline)
    assert time.monotonic() >= deadline


async def test_cancelled_sleeps_are_harmless() -> None:
    task = asyncio.ensure_future(sleep_until(time.monotonic() + 0.01))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0.02)  # the timer thread fires into a cancelled future: nothing happens
    assert task.cancelled()


async def test_clocks_of_equal_rate_built_together_tick_at_spread_out_instants() -> None:
    """Actors spawned in one burst must not hand the loop their ticks in one burst."""
    period = 0.1
    clocks = [SoftwareClock(fps=10) for _ in range(64)]
    firsts = await asyncio.gather(*(clock.next_tick() for clock in clocks))
    phases = sorted(tick.timestamp % period for tick in firsts)
    ring = phases + [p + period for p in phases]
    largest = max(sum(1 for q in ring[i:] if q - p <= 0.0005) for i, p in enumerate(phases))
    assert largest <= 3, f"{largest} of 64 clocks tick within 0.5 ms of each other"
    seconds = await asyncio.gather(*(clock.next_tick() for clock in clocks))
    for first, second in zip(firsts, seconds, strict=True):  # each keeps to its own grid
        periods = (second.timestamp - first.timestamp) / period
        assert second.frame_number == round(periods) >= 1 and periods == pytest.approx(round(periods), abs=1e-6)


async def test_a_clock_given_a_phase_ticks_on_that_phase_of_its_period() -> None:
    clock = SoftwareClock(fps=100, phase=0.25)
    for _ in range(3):
        tick = await clock.next_tick()
        offset = (tick.timestamp - 0.0025) % 0.01
        assert min(offset, 0.01 - offset) < 1e-6


async def test_the_first_tick_is_due_within_half_a_period_of_the_first_call() -> None:
    clock = SoftwareClock(fps=10)
    before = time.monotonic()
    first = await clock.next_tick()
    assert abs(first.timestamp - before) <= 0.05 + 1e-6
    assert time.monotonic() - before < 0.05 + 0.5  # never a whole period's wait (generous under load)


def test_a_phase_outside_one_period_is_refused() -> None:
    with pytest.raises(ValueError, match="phase"):
        SoftwareClock(fps=10, phase=1.0)


async def test_timers_due_together_all_fire() -> None:
    deadline = time.monotonic() + 0.02
    await asyncio.wait_for(asyncio.gather(*(sleep_until(deadline) for _ in range(50))), timeout=5)
    assert time.monotonic() >= deadline


async def test_manual_clock_ticks_an_actor_only_when_stepped() -> None:
    class Log(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.seen: list[TimedTick] = []

        async def process(self, tick: TimedTick) -> None:
            self.seen.append(tick)

    clock = ManualClock(fps=25, start=10.0, clock_id="m")
    log = Log(clock=clock)
    await asyncio.sleep(0.02)
    assert log.seen == []
    await clock.step(3)
    assert [(t.timestamp, t.frame_number, t.clock_source_id) for t in log.seen] == [
        (10.0 + n / 25, n, "m") for n in range(3)
    ]
    await log.stop()
    with pytest.raises(TimeoutError, match="did not take tick"):
        await ManualClock().step(timeout=0.05)  # no actor uses this clock


async def test_each_step_returns_after_exactly_that_tick_was_processed() -> None:
    class Count(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.n = 0

        async def process(self, tick: TimedTick) -> None:
            self.n += 1

    clock = ManualClock()
    counter = Count(clock=clock)
    await clock.step()  # right after construction, before the actor has even started
    assert counter.n == 1
    await clock.step(3)
    assert counter.n == 4
    await counter.stop()
