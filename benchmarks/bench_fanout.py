"""Fan-out and fan-in: one source -> 100 actors -> one sink, lossless; vs asyncio.Queue tasks and Pykka.

What is measured
    The source sends ``n`` int messages on one output connected to 100 workers (fan-out:
    every worker gets every message); each worker forwards what it reads to the one input
    of a counting sink (fan-in: 100 upstreams into one input), so the sink counts
    ``100 * n`` messages. Every input is ``StreamInput(maxsize=2, overflow="block")``: the
    graph is lossless and the source waits whenever a worker is full, the workers whenever
    the sink is. This is what a send to many subscribers and a mailbox shared by many
    senders cost: the wake-ups of 100 blocked senders, not one hop after another.

    * streamlib: the source sends everything in its first ``process`` call and stops; end of
      stream reaches the sink once all 100 workers ended, and ``await sink.join()`` marks the end.
    * baseline: the same graph hand-written as ``asyncio.Queue(maxsize=2)`` tasks on the same
      event loop type (the source ``put``s each message into 100 queues in turn; the workers
      ``put`` into the sink's one queue), ending with a sentinel per worker.
    * Pykka: ``pykka.ThreadingActor`` workers (a thread each) that ``tell`` a counting actor;
      the main thread is the source. Pykka's mailboxes are unbounded.

Figures are speed ratios (baseline time / streamlib time: > 1 means streamlib is faster),
from pairs of runs interleaved in one process, medians and bests over the rounds, on wall
and CPU time, on asyncio's loop and on uvloop. No target: the chain (``bench_chain.py``)
carries the speed targets; this shape shows that they hold when one send has many
receivers and one mailbox many senders.

Run: ``python benchmarks/bench_fanout.py [--quick] [--n 300] [--width 100] [--reps 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from typing import Any

from measure import LOOP_RUNNERS, Sample, Stopwatch, Target, describe_tree, print_table, ratio_stats
from pykka_peers import Count, Forward

from streamlib import Actor, StreamInput, StreamOutput, TimedTick

END = object()  # the asyncio.Queue graph's end-of-stream sentinel

TARGETS: list[Target] = []
"""No target of its own (see the module docstring); ``run_all`` reports its figures."""


# -- streamlib ---------------------------------------------------------------------------------


class FanSource(Actor):
    """Waits for ``go`` in ``on_start``, sends ``n`` ints in its first tick, then stops itself."""

    def __init__(self, n: int, go: asyncio.Event, **kw: Any) -> None:
        super().__init__(**kw)
        self.n = n
        self.go = go
        self.outputs["out"] = StreamOutput("out", int)

    async def on_start(self) -> None:
        await self.go.wait()

    async def process(self, tick: TimedTick) -> None:
        out = self.outputs["out"]
        for i in range(self.n):
            await out.send(i)
        self.stop()


class FanWorker(Actor):
    """Pass-through: every message it reads goes to the sink, lossless."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=2, overflow="block")
        self.outputs["out"] = StreamOutput("out", int)

    async def process(self, tick: TimedTick) -> None:
        m = await self.inputs["in"].try_read()
        if m is not None:
            await self.outputs["out"].send(m)


class FanSink(Actor):
    """Counts what arrives from every worker; stops by itself at end of stream."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=2, overflow="block")
        self.count = 0

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        while port.read_nowait() is not None:
            self.count += 1


async def streamlib_fan(n: int, width: int) -> Sample:
    """Time ``n`` messages from the source's go until the sink ended, ``width`` workers between."""
    go = asyncio.Event()
    source = FanSource(n, go)
    workers = [FanWorker() for _ in range(width)]
    sink = FanSink()
    for worker in workers:
        source >> worker >> sink
    await asyncio.sleep(0.05)  # every actor started and asleep
    watch = Stopwatch()
    go.set()
    await sink.join()
    sample = watch.read()
    if sink.count != n * width:
        raise AssertionError(f"lossless fan-out/fan-in lost messages: sink got {sink.count} of {n * width}")
    return sample


# -- baseline: asyncio.Queue tasks ----------------------------------------------------------------


async def queue_fan(n: int, width: int) -> Sample:
    """The same graph by hand: a task per worker between ``asyncio.Queue(2)`` queues."""
    go = asyncio.Event()
    inboxes: list[asyncio.Queue[Any]] = [asyncio.Queue(2) for _ in range(width)]
    sink_box: asyncio.Queue[Any] = asyncio.Queue(2)
    count = 0

    async def source() -> None:
        await go.wait()
        for i in range(n):
            for box in inboxes:
                await box.put(i)
        for box in inboxes:
            await box.put(END)

    async def worker(inbox: asyncio.Queue[Any]) -> None:
        while (m := await inbox.get()) is not END:
            await sink_box.put(m)
        await sink_box.put(END)

    async def sink() -> None:
        nonlocal count
        ended = 0
        while ended < width:
            if await sink_box.get() is END:
                ended += 1
            else:
                count += 1

    tasks = [asyncio.create_task(source())] + [asyncio.create_task(worker(box)) for box in inboxes]
    last = asyncio.create_task(sink())
    await asyncio.sleep(0.05)
    watch = Stopwatch()
    go.set()
    await last
    sample = watch.read()
    await asyncio.gather(*tasks)
    if count != n * width:
        raise AssertionError(f"queue graph lost messages: sink got {count} of {n * width}")
    return sample


# -- Pykka --------------------------------------------------------------------------------------


def pykka_fan(n: int, width: int) -> Sample:
    """Time ``n`` messages told to ``width`` Pykka workers, each telling a counting actor."""
    done = threading.Event()
    sink = Count.start(n * width, done)
    workers = [Forward.start(sink) for _ in range(width)]
    watch = Stopwatch()
    for i in range(n):
        for ref in workers:
            ref.tell(i)
    if not done.wait(timeout=600):
        raise TimeoutError("the Pykka graph did not deliver every message")
    sample = watch.read()
    for ref in workers:
        ref.stop()
    sink.stop()
    return sample


# -- the benchmark ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison, print the tables, return the figures (ratios: higher is better for streamlib)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=300, help="messages from the source (the sink gets n * width)")
    parser.add_argument("--width", type=int, default=100, help="workers between source and sink")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (n=60, 2 rounds)")
    parser.add_argument("--no-pykka", action="store_true", help="skip the Pykka comparison")
    args = parser.parse_args(argv)
    n, reps, width = (60, 2, args.width) if args.quick else (args.n, args.reps, args.width)
    deliveries = n * width
    print(
        f"# bench_fanout: 1 -> {width} -> 1, {n} messages ({deliveries} at the sink), {reps} rounds ({describe_tree()})"
    )

    pairs: dict[str, list[Sample]] = {loop: [] for loop in LOOP_RUNNERS}
    pykka_pairs: dict[str, list[Sample]] = {loop: [] for loop in LOOP_RUNNERS}
    per_delivery: dict[str, list[Sample]] = {}
    for rep in range(reps):
        ours_by_loop: dict[str, Sample] = {}
        for loop, run in LOOP_RUNNERS.items():
            if rep % 2 == 0:  # alternate the order: drift in the machine's load favours neither side
                base, ours = run(queue_fan(n, width)), run(streamlib_fan(n, width))
            else:
                ours, base = run(streamlib_fan(n, width)), run(queue_fan(n, width))
            pairs[loop].append(Sample(base.wall / ours.wall, base.cpu / ours.cpu))
            per_delivery.setdefault(f"queue/{loop}", []).append(base.per(deliveries))
            per_delivery.setdefault(f"streamlib/{loop}", []).append(ours.per(deliveries))
            ours_by_loop[loop] = ours
        if not args.no_pykka:
            theirs = pykka_fan(n, width)
            per_delivery.setdefault("pykka/threads", []).append(theirs.per(deliveries))
            for loop, ours in ours_by_loop.items():
                pykka_pairs[loop].append(Sample(theirs.wall / ours.wall, theirs.cpu / ours.cpu))

    figures: dict[str, float] = {}
    rows: list[list[object]] = []
    for label, found, prefix in (("asyncio.Queue", pairs, "fanout"), ("Pykka threads", pykka_pairs, "fanout_pykka")):
        for loop, samples in found.items():
            if not samples:
                continue
            for what, key in (("wall", "wall"), ("CPU", "cpu")):
                median, best = ratio_stats([getattr(s, key) for s in samples])
                figures[f"{prefix}_{loop}_{key}_ratio_median"] = median
                figures[f"{prefix}_{loop}_{key}_ratio_best"] = best
                rows.append([f"streamlib ({loop}) vs {label}", what, f"{median:.2f}x", f"{best:.2f}x"])
    print_table(
        f"Speed ratios, 1 -> {width} -> 1 (baseline time / streamlib time; > 1: streamlib faster)",
        ["comparison", "clock", "median", "best"],
        rows,
    )
    abs_rows = []
    for name, samples in per_delivery.items():
        wall = sorted(s.wall for s in samples)[len(samples) // 2] * 1e6
        cpu = sorted(s.cpu for s in samples)[len(samples) // 2] * 1e6
        abs_rows.append([name, f"{wall:.1f}", f"{cpu:.1f}"])
    print_table(
        "Absolute cost per message delivered to the sink (2 hops), median (informative only)",
        ["graph", "wall us", "CPU us"],
        abs_rows,
    )
    return figures


if __name__ == "__main__":
    main()
