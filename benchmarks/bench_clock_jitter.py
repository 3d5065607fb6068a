"""Tick jitter of a 60 fps actor on its own SoftwareClock, beside idle and beside ticking actors.

What is measured
    An actor with no inputs and ``default_fps = 60`` ticks on its own clock; each
    ``process`` call records ``time.perf_counter()``. Other actors live on the same loop,
    in three cases:

    * ``idle100``: 100 idle actors (one connected, silent input each, as in ``bench_spawn``);
    * ``tick100``: 100 actors ticking at 10 fps on their own clocks, built together in one
      burst (so, unless the clocks stagger them, their deadlines coincide and their ticks
      arrive in bursts);
    * ``tick1000``: the same with 1,000 ticking actors (10,000 ticks a second).

    After about ``--seconds`` the intervals between consecutive ticks give p50, p99 and the
    jitter ``p99 - p50`` (target < 0.5 ms), and ``actor.clock.skipped`` counts the ticks the
    clock had to skip because it fell a whole period behind. For the ticking cases, the
    *largest burst* is the most of the other actors' deadlines that fall within 0.5 ms of
    each other: how many ticks the loop may be handed at one instant. It depends only on
    the clocks' phases, so unlike the jitter it does not move with the machine's load.

Why
    A realtime pipeline is only as smooth as the clock at its source: a 60 fps display
    shows a stutter when frames arrive a millisecond early or late, however fast the
    average is.

Baseline, in the same run and on the same loop: the plain ``asyncio.sleep`` loop a user
would write, at 60 Hz with absolute deadlines (``sleep(t0 + n / 60 - now)``). A third
ticker, a loop on ``streamlib.clock.sleep_until`` (the timer the SoftwareClock waits on,
without the actor around it), separates what the timer gives from what the actor adds.
The three are phase-shifted by a third of a period so that their wake-ups never coincide.
All run on asyncio's default loop and on uvloop, ``--reps`` times each; medians and bests
are reported. Event loops arm timers in whole milliseconds, so the baseline's jitter shows
what the loop alone gives. Each ticker also records its *lateness* (processing time minus
the tick's deadline), and the table shows the machine's load average: on a loaded machine
the wake-up latency of the OS scheduler, not the code, sets p99.

Run: ``python benchmarks/bench_clock_jitter.py [--quick] [--seconds 5] [--reps 3] [--cases idle100,tick100,tick1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from typing import Any, ClassVar, NamedTuple

from bench_spawn import SilentSource, spawn_idle_actors
from measure import LOOP_RUNNERS, Target, describe_tree, percentile, print_table

from streamlib import Actor, TimedTick
from streamlib.clock import sleep_until

FPS = 60.0
WARMUP_TICKS = 3  # the first intervals include start-up, not steady-state pacing

CASES: dict[str, tuple[str, int]] = {
    "idle100": ("idle", 100),
    "tick100": ("ticking", 100),
    "tick1000": ("ticking", 1000),
}
"""Each case: what the other actors do, and how many there are."""

OTHER_FPS = 10.0
BURST_WINDOW = 0.0005  # seconds: ticks due within this of each other arrive as one burst

TARGETS = [
    Target(f"jitter_{case}_{loop}_ms_median", f"clock: 60 fps p99 - p50, {case}, {loop}", "<", 0.5, " ms")
    for case in CASES
    for loop in ("asyncio", "uvloop")
]


class Ticker(Actor):
    """No inputs, so it runs its own 60 fps clock; records when each tick is processed."""

    default_fps: ClassVar[float | None] = FPS

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.stamps: list[float] = []
        self.lateness: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        self.stamps.append(time.perf_counter())
        self.lateness.append(time.monotonic() - tick.timestamp)  # the tick's deadline, on monotonic


class OtherTicker(Actor):
    """One of the other actors of the ``tick*`` cases: its own 10 fps clock, a trivial tick."""

    default_fps: ClassVar[float | None] = OTHER_FPS

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.ticks_seen = 0
        self.deadline = 0.0  # its latest tick's deadline (on time.monotonic())

    async def process(self, tick: TimedTick) -> None:
        self.ticks_seen += 1
        self.deadline = tick.timestamp


def largest_burst(deadlines: list[float], period: float, window: float = BURST_WINDOW) -> int:
    """The most deadlines, of clocks sharing ``period``, that fall within ``window`` of each other
    (modulo the period): how many ticks the loop may be handed at one instant. Deterministic:
    it depends on the clocks' phases only, not on the machine's load."""
    phases = sorted(d % period for d in deadlines)
    ring = phases + [p + period for p in phases]
    most, start = 0, 0
    for end in range(len(ring)):
        while ring[end] - ring[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return min(most, len(phases))


class Pacing(NamedTuple):
    """Statistics of one ticker's run, in milliseconds (intervals between ticks, lateness)."""

    p50: float
    p99: float
    jitter: float
    worst: float
    late_p50: float
    late_p99: float
    ticks: int
    skipped: int


def pacing(stamps: list[float], lateness: list[float], skipped: int = 0) -> Pacing:
    intervals = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)][WARMUP_TICKS:]
    late = [x * 1000 for x in lateness[WARMUP_TICKS:]]
    p50, p99 = percentile(intervals, 50), percentile(intervals, 99)
    return Pacing(p50, p99, p99 - p50, max(intervals), percentile(late, 50), percentile(late, 99), len(stamps), skipped)


async def deadline_loop(
    sleep: Any, stamps: list[float], lateness: list[float], offset: float, stop: asyncio.Event
) -> None:
    """A 60 Hz loop with absolute deadlines; ``sleep(deadline, delay)`` waits for each."""
    period = 1 / FPS
    t0 = time.monotonic() + offset
    n = 0
    while not stop.is_set():
        deadline = t0 + n * period
        delay = deadline - time.monotonic()
        if delay > 0:
            await sleep(deadline, delay)
        stamps.append(time.perf_counter())
        lateness.append(time.monotonic() - deadline)
        n += 1


async def _asyncio_sleep(deadline: float, delay: float) -> None:
    await asyncio.sleep(delay)  # what a user writes: the loop's own (millisecond) timer


async def _timer_sleep(deadline: float, delay: float) -> None:
    await sleep_until(deadline)  # the SoftwareClock's timer, without the actor


class Run(NamedTuple):
    """One run: the actor, the asyncio.sleep baseline, the bare timer; the load average around it."""

    ticker: Pacing
    baseline: Pacing
    timer: Pacing
    load: float
    burst: int  # the other actors' largest burst (see largest_burst); 0 when they are idle


async def jitter_run(seconds: float, case: str) -> Run:
    """Run the ticker and both plain loops side by side for ``seconds``, beside ``case``'s actors."""
    kind, count = CASES[case]
    source = SilentSource()
    others: list[Actor] = []
    if kind == "idle":
        others += spawn_idle_actors(source, count)
    else:
        others += [OtherTicker() for _ in range(count)]  # built together: one burst
    await asyncio.sleep(0.25)  # the idle actors are asleep, the ticking ones on their clocks
    stop = asyncio.Event()
    base: tuple[list[float], list[float]] = ([], [])
    timer: tuple[list[float], list[float]] = ([], [])
    ticker = Ticker()
    loops = [
        asyncio.create_task(deadline_loop(_asyncio_sleep, *base, 1 / (3 * FPS), stop)),
        asyncio.create_task(deadline_loop(_timer_sleep, *timer, 2 / (3 * FPS), stop)),
    ]
    await asyncio.sleep(seconds)
    await ticker.stop()
    stop.set()
    await asyncio.gather(*loops)
    burst = 0
    if kind == "ticking":
        tickers = [a for a in others if isinstance(a, OtherTicker)]
        seen = sum(a.ticks_seen for a in tickers)
        if seen < count * OTHER_FPS * seconds * 0.5:
            raise AssertionError(f"the {count} other actors ticked only {seen} times in {seconds} s")
        burst = largest_burst([a.deadline for a in tickers], 1 / OTHER_FPS)
    await asyncio.gather(*(a.stop() for a in others))
    await source.stop()
    skipped = ticker.clock.skipped if ticker.clock is not None else 0
    return Run(
        pacing(ticker.stamps, ticker.lateness, skipped), pacing(*base), pacing(*timer), os.getloadavg()[0], burst
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the measurements, print the table, return the figures (milliseconds)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of one run")
    parser.add_argument("--reps", type=int, default=3, help="runs per case and loop type")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 run of 2 s per case and loop)")
    args = parser.parse_args(argv)
    seconds, reps = (2.0, 1) if args.quick else (args.seconds, args.reps)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(
        f"# bench_clock_jitter: {FPS:g} fps beside {', '.join(cases)}; {reps} x {seconds:g} s per case and loop "
        f"({describe_tree()})"
    )

    # Rounds interleave cases and loop types, so a slow moment of the machine is shared out.
    results: dict[tuple[str, str], list[Run]] = {(c, loop): [] for c in cases for loop in LOOP_RUNNERS}
    for _ in range(reps):
        for case in cases:
            for loop, run in LOOP_RUNNERS.items():
                results[(case, loop)].append(run(jitter_run(seconds, case)))

    figures: dict[str, float] = {}
    rows: list[list[object]] = []
    tickers = (
        ("streamlib SoftwareClock actor", "ticker"),
        ("asyncio.sleep loop (baseline)", "baseline"),
        ("sleep_until loop (bare timer)", "timer"),
    )
    for (case, loop), found in results.items():
        load = statistics.median(r.load for r in found)
        for label, field in tickers:
            runs: list[Pacing] = [getattr(r, field) for r in found]
            jitters = [p.jitter for p in runs]
            rows.append(
                [
                    case,
                    loop,
                    label,
                    f"{statistics.median(p.p50 for p in runs):.3f}",
                    f"{statistics.median(p.p99 for p in runs):.3f}",
                    f"{statistics.median(jitters):.3f}",
                    f"{min(jitters):.3f}",
                    f"{statistics.median(p.late_p50 for p in runs):.3f} / "
                    f"{statistics.median(p.late_p99 for p in runs):.3f}",
                    f"{max(p.worst for p in runs):.2f}",
                    f"{sum(p.ticks for p in runs)}",
                    f"{sum(p.skipped for p in runs)}" if field == "ticker" else "-",
                    f"{load:.1f}",
                    f"{max(r.burst for r in found)}" if field == "ticker" else "",
                ]
            )
        ours = [r.ticker.jitter for r in found]
        theirs = [r.baseline.jitter for r in found]
        key = f"jitter_{case}_{loop}"
        figures[f"{key}_ms_median"] = statistics.median(ours)
        figures[f"{key}_ms_best"] = min(ours)
        figures[f"{key}_baseline_ms_median"] = statistics.median(theirs)
        figures[f"{key}_timer_ms_median"] = statistics.median(r.timer.jitter for r in found)
        figures[f"{key}_ratio_median"] = statistics.median(t / o for t, o in zip(theirs, ours, strict=True))
        figures[f"{key}_skipped"] = float(sum(r.ticker.skipped for r in found))
        figures[f"{key}_p50_ms"] = statistics.median(r.ticker.p50 for r in found)
        figures[f"{key}_load"] = load
        figures[f"{key}_largest_burst"] = float(max(r.burst for r in found))
    print_table(
        "Tick intervals in ms (target: streamlib p99 - p50 < 0.5 ms)",
        [
            "case",
            "loop",
            "ticker",
            "p50",
            "p99",
            "p99-p50 median",
            "p99-p50 best",
            "late p50 / p99",
            "worst",
            "ticks",
            "skipped",
            "load avg",
            "largest burst",
        ],
        rows,
    )
    ratio_rows = [[case, loop, f"{figures[f'jitter_{case}_{loop}_ratio_median']:.1f}x"] for case, loop in results]
    print_table(
        "Jitter ratio, asyncio.sleep baseline / streamlib (> 1: streamlib steadier)",
        ["case", "loop", "median"],
        ratio_rows,
    )
    return figures


if __name__ == "__main__":
    main()
