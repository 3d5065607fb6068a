"""Cost of many idle actors: construction time, memory per actor, stop time -- vs bare asyncio tasks.

What is measured
    Inside a running event loop, 10,000 idle actors are constructed, each declaring one
    ``StreamInput`` connected from one shared, silent source output. Nothing is ever sent,
    so every actor starts, finds no message and no clock to run (its input is connected,
    so it waits for its upstream instead of running its own clock), and sleeps on its
    mailbox using no CPU -- the state of most actors of a large graph most of the time.

    * construction: constructing the 10,000 actors and connecting them (target < 0.5 s);
    * start: the few loop iterations (``await asyncio.sleep(0)``) in which every actor's
      task runs ``on_start`` and goes to sleep (checked: every actor is asleep after it);
    * memory: what ``tracemalloc`` sees allocated by construction and start, per actor
      (target < 5 KB), in a separate run because tracing slows everything down;
    * stop: ``await`` every actor's ``stop()``, i.e. until each task ended, ``on_stop`` ran
      and end of stream was signalled.

Why
    Actors are meant to be cheap enough to spawn freely (one per stream, per client, per
    detected object). The baseline is the cheapest thing with the same shape: 10,000 bare
    ``asyncio`` tasks each waiting on its own Future, created, started, measured and
    ended (by resolving the Futures) the same way in the same run. Its ratios say how many
    bare tasks one actor costs.

Figures: absolute (the targets are absolute) and as ratios to the baseline (lower is
cheaper), medians and bests over repetitions on asyncio's loop and on uvloop.

Run: ``python benchmarks/bench_spawn.py [--quick] [--count 10000] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NamedTuple

from measure import LOOP_RUNNERS, Stopwatch, Target, describe_tree, fresh_heap, print_table

from streamlib import Actor, StreamInput, StreamOutput, TimedTick

TARGETS = [
    Target("spawn_construct_s_median", "spawn: construct + connect 10,000 idle actors", "<", 0.5, " s"),
    Target("spawn_kb_per_actor", "spawn: memory per idle actor (tracemalloc)", "<", 5.0, " KB"),
]


class SilentSource(Actor):
    """An output that never sends: no inputs and ``default_fps = None``, so it never ticks."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["out"] = StreamOutput("out", int)

    async def process(self, tick: TimedTick) -> None:
        """Never called."""


class IdleActor(Actor):
    """One connected input that never receives anything: the actor sleeps on it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int)

    async def process(self, tick: TimedTick) -> None:
        """Never called: no message arrives."""


class Phases(NamedTuple):
    """Seconds (wall-clock) spent in each phase of one run, and the actors found asleep."""

    construct: float
    start: float
    stop: float
    asleep: int


def spawn_idle_actors(source: SilentSource, count: int) -> list[IdleActor]:
    """Construct ``count`` idle actors, each connected from ``source``."""
    actors = [IdleActor() for _ in range(count)]
    out = source.outputs["out"]
    for actor in actors:
        out >> actor.inputs["in"]
    return actors


def _asleep(actors: list[IdleActor]) -> int:
    # A private look (the doorbell is set while the run loop waits): how many really sleep.
    return sum(1 for a in actors if a._core.doorbell is not None)


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def actors_run(count: int) -> Phases:
    """Construct, start and stop ``count`` idle actors, timing each phase."""
    source = SilentSource()
    await _settle()
    watch = Stopwatch()
    actors = spawn_idle_actors(source, count)
    construct = watch.read().wall
    watch = Stopwatch()
    await _settle()
    start = watch.read().wall
    asleep = _asleep(actors)
    watch = Stopwatch()
    await asyncio.gather(*(a.stop() for a in actors))
    stop = watch.read().wall
    await source.stop()
    return Phases(construct, start, stop, asleep)


async def tasks_run(count: int) -> Phases:
    """The baseline: ``count`` bare tasks, each awaiting its own Future, ended by resolving it."""
    loop = asyncio.get_running_loop()
    await _settle()
    watch = Stopwatch()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(count)]
    tasks = [loop.create_task(_wait(f)) for f in futures]
    construct = watch.read().wall
    watch = Stopwatch()
    await _settle()
    start = watch.read().wall
    watch = Stopwatch()
    for f in futures:
        f.set_result(None)
    await asyncio.gather(*tasks)
    stop = watch.read().wall
    return Phases(construct, start, stop, count)


async def _wait(fut: asyncio.Future[None]) -> None:
    await fut


async def _traced(build: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]], count: int) -> float:
    """Bytes per item that tracemalloc sees allocated, and still held, after ``build`` and a start.

    ``build`` returns the coroutine function that ends what it built (run untraced)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    finish = await build(count)
    await _settle()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await finish()
    return (after - before) / count


async def _build_actors(count: int) -> Callable[[], Awaitable[None]]:
    source = SilentSource()
    actors = spawn_idle_actors(source, count)

    async def finish() -> None:
        await asyncio.gather(*(a.stop() for a in actors))
        await source.stop()

    return finish


async def _build_tasks(count: int) -> Callable[[], Awaitable[None]]:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in range(count)]
    tasks = [loop.create_task(_wait(f)) for f in futures]

    async def finish() -> None:
        for f in futures:
            f.set_result(None)
        await asyncio.gather(*tasks)

    return finish


async def _spawn_and_stop(count: int) -> list[weakref.ref[IdleActor]]:
    source = SilentSource()
    actors = spawn_idle_actors(source, count)
    await _settle()
    await asyncio.gather(*(a.stop() for a in actors))
    await source.stop()
    return [weakref.ref(a) for a in actors]


def leaked_actors(count: int) -> int:
    """How many of ``count`` stopped actors are still alive once their loop is closed and gc ran.

    Nothing outside should hold a stopped actor; a survivor keeps its task, ports and
    loop alive too, and makes every later garbage collection slower."""
    refs = asyncio.run(_spawn_and_stop(count))
    gc.collect()
    return sum(1 for ref in refs if ref() is not None)


async def memory_run(count: int) -> tuple[float, float]:
    """Bytes per idle actor and per bare task, measured one after the other on one loop."""
    per_actor = await _traced(_build_actors, count)
    per_task = await _traced(_build_tasks, count)
    return per_actor, per_task


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the measurements, print the tables, return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=10_000, help="idle actors (and bare tasks) per run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per loop type")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 rep)")
    args = parser.parse_args(argv)
    count, reps = args.count, 1 if args.quick else args.reps
    print(f"# bench_spawn: {count} idle actors vs {count} bare tasks, {reps} reps per loop ({describe_tree()})")

    figures: dict[str, float] = {}
    ours: list[Phases] = []
    rows: list[list[object]] = []
    for loop, run in LOOP_RUNNERS.items():
        pairs: list[tuple[Phases, Phases]] = []
        for rep in range(reps):
            # Alternate the order; start each run from a frozen heap (see measure.fresh_heap).
            first, second = (tasks_run, actors_run) if rep % 2 == 0 else (actors_run, tasks_run)
            fresh_heap()
            a = run(first(count))
            fresh_heap()
            b = run(second(count))
            base, mine = (a, b) if rep % 2 == 0 else (b, a)
            if mine.asleep != count:
                raise AssertionError(f"only {mine.asleep} of {count} actors were asleep after starting")
            pairs.append((base, mine))
            ours.append(mine)
        for phase in ("construct", "start", "stop"):
            mine_s = [getattr(m, phase) for _, m in pairs]
            ratios = [getattr(m, phase) / getattr(b, phase) for b, m in pairs]
            figures[f"spawn_{loop}_{phase}_s_median"] = statistics.median(mine_s)
            figures[f"spawn_{loop}_{phase}_ratio_median"] = statistics.median(ratios)
            rows.append(
                [
                    loop,
                    phase,
                    f"{statistics.median(mine_s):.3f} s",
                    f"{min(mine_s):.3f} s",
                    f"{statistics.median(getattr(b, phase) for b, _ in pairs):.3f} s",
                    f"{statistics.median(ratios):.1f}x",
                    f"{min(ratios):.1f}x",
                ]
            )
    construct = [p.construct for p in ours]
    figures["spawn_construct_s_median"] = statistics.median(construct)
    figures["spawn_construct_s_best"] = min(construct)
    print_table(
        f"Time for {count} idle actors (ratio: actors / bare tasks, lower is cheaper)",
        ["loop", "phase", "actors median", "actors best", "tasks median", "ratio median", "ratio best"],
        rows,
    )

    fresh_heap()
    per_actor, per_task = asyncio.run(memory_run(count))
    leaked = leaked_actors(min(count, 1000))
    figures["spawn_leaked_actors_per_1000"] = leaked * 1000 / min(count, 1000)
    figures["spawn_kb_per_actor"] = per_actor / 1024
    figures["spawn_kb_per_task"] = per_task / 1024
    figures["spawn_memory_ratio"] = per_actor / per_task
    print_table(
        "Memory (tracemalloc, deterministic)",
        ["what", "KB each", "ratio to a bare task", "target"],
        [
            ["idle actor", f"{per_actor / 1024:.2f}", f"{per_actor / per_task:.1f}x", "< 5 KB"],
            ["bare task awaiting a Future", f"{per_task / 1024:.2f}", "1.0x", ""],
        ],
    )
    print(f"\nStopped actors still alive after their loop closed and gc ran: {leaked} of {min(count, 1000)}")
    return figures


if __name__ == "__main__":
    main()
