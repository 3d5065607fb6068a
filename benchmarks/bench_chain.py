"""Throughput of a 10-stage lossless chain: streamlib vs asyncio.Queue tasks vs Pykka threads.

What is measured
    ``n`` int messages go from a source through 10 pass-through stages into a counting
    sink. Every streamlib input is ``StreamInput(maxsize=2, overflow="block")``, so the
    chain is lossless and each stage holds at most two messages: a message costs one
    mailbox hop and (often) one scheduler round trip per stage. This is the per-message
    overhead of the actor runtime itself -- tick, mailbox, wakeup -- with no work to hide it.

    * streamlib: the source sends all ``n`` messages in its first ``process`` call and
      stops itself, which signals end of stream downstream; the sink stops by itself at end
      of stream, so ``await sink.join()`` marks the end. Stages and sink keep the library's
      default ``default_fps`` (a user's pass-through stage does not change it).
    * baseline: the same chain hand-written as ``asyncio.Queue(maxsize=2)`` tasks on the
      same event loop type, ending with a sentinel.
    * Pykka: a chain of ``pykka.ThreadingActor`` (one thread each) where each stage
      ``tell``s the next and a final counting actor sets a ``threading.Event`` after ``n``
      messages; the main thread is the source. Pykka's mailboxes are unbounded.

Why
    An actor system on asyncio should cost no more per hop than the queues and tasks a
    user would otherwise write by hand (target: streamlib >= 1.5x the Queue chain's
    speed, on asyncio's loop and on uvloop), and should beat a thread-per-actor system
    clearly (target: >= 2x Pykka).

Figures are speed ratios (baseline time / streamlib time: > 1 means streamlib is faster),
from pairs of runs interleaved in one process; the median and the best of the repetitions
are reported, on wall-clock and on CPU time. ``--callgrind`` adds a deterministic figure:
CPU instructions per message of both asyncio chains, counted by valgrind's callgrind (the
difference between two message counts, so start-up cancels out).

Run: ``python benchmarks/bench_chain.py [--quick] [--n 20000] [--reps 5] [--callgrind]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pykka_peers
from measure import LOOP_RUNNERS, Sample, Stopwatch, Target, describe_tree, print_table, ratio_stats

from streamlib import Actor, StreamInput, StreamOutput, TimedTick, handoff

VALGRIND_SLOWDOWN = 50
"""How much slower code runs under callgrind here (measured: 40-60x), to keep hand-off's
wall-clock slice covering as many messages as natively in the deterministic count."""

STAGES = 10
END = object()  # the asyncio.Queue chain's end-of-stream sentinel

TARGETS = [
    Target("chain_asyncio_cpu_ratio_median", "chain: streamlib vs asyncio.Queue, asyncio loop (CPU)", ">=", 1.5, "x"),
    Target("chain_asyncio_wall_ratio_median", "chain: streamlib vs asyncio.Queue, asyncio loop (wall)", ">=", 1.5, "x"),
    Target("chain_uvloop_cpu_ratio_median", "chain: streamlib vs asyncio.Queue, uvloop (CPU)", ">=", 1.5, "x"),
    Target("chain_uvloop_wall_ratio_median", "chain: streamlib vs asyncio.Queue, uvloop (wall)", ">=", 1.5, "x"),
    Target("pykka_uvloop_cpu_ratio_median", "chain: streamlib (uvloop) vs Pykka threads (CPU)", ">=", 2.0, "x"),
    Target("pykka_uvloop_wall_ratio_median", "chain: streamlib (uvloop) vs Pykka threads (wall)", ">=", 2.0, "x"),
    Target("pykka_asyncio_cpu_ratio_median", "chain: streamlib (asyncio) vs Pykka threads (CPU)", ">=", 2.0, "x"),
    Target("pykka_asyncio_wall_ratio_median", "chain: streamlib (asyncio) vs Pykka threads (wall)", ">=", 2.0, "x"),
]
"""What ``run_all`` checks. Callgrind's ratio, when measured, is reported without a target of its own."""


# -- streamlib chain ---------------------------------------------------------------------


class ChainSource(Actor):
    """Waits for ``go`` in ``on_start``, sends ``n`` ints in its first tick, then stops itself."""

    def __init__(self, n: int, go: asyncio.Event, **kw: Any) -> None:
        super().__init__(**kw)
        self.n = n
        self.go = go
        self.outputs["out"] = StreamOutput("out", int)

    async def on_start(self) -> None:
        await self.go.wait()  # start the clock only once the whole chain is up

    async def process(self, tick: TimedTick) -> None:
        out = self.outputs["out"]
        for i in range(self.n):
            await out.send(i)
        self.stop()  # a stopped actor signals end of stream downstream


class ChainStage(Actor):
    """Pass-through: one message in, the same message out, lossless."""

    def __init__(self, maxsize: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=maxsize, overflow="block")
        self.outputs["out"] = StreamOutput("out", int)

    async def process(self, tick: TimedTick) -> None:
        m = await self.inputs["in"].try_read()
        if m is not None:
            await self.outputs["out"].send(m)


class ChainSink(Actor):
    """Counts what arrives; stops by itself at end of stream (the default ``on_end_of_stream``)."""

    def __init__(self, maxsize: int = 2, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=maxsize, overflow="block")
        self.count = 0

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        while port.read_nowait() is not None:
            self.count += 1


async def streamlib_chain(n: int, maxsize: int = 2) -> Sample:
    """Time ``n`` messages through source >> 10 stages >> sink, from the source's go to the sink's end."""
    go = asyncio.Event()
    source = ChainSource(n, go)
    stages = [ChainStage(maxsize) for _ in range(STAGES)]
    sink = ChainSink(maxsize)
    upstream: Actor = source
    for actor in (*stages, sink):
        upstream = upstream >> actor
    await asyncio.sleep(0.02)  # every actor started and asleep on its empty mailbox
    watch = Stopwatch()
    go.set()
    await sink.join()
    sample = watch.read()
    if sink.count != n or any(s.inputs["in"].dropped for s in stages):
        raise AssertionError(f"lossless chain lost messages: sink got {sink.count} of {n}")
    return sample


# -- baseline: asyncio.Queue tasks -----------------------------------------------------------


async def queue_chain(n: int, maxsize: int = 2) -> Sample:
    """The same chain written by hand: one task per stage between ``asyncio.Queue(maxsize)`` queues."""
    go = asyncio.Event()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize) for _ in range(STAGES + 1)]
    count = 0

    async def source(out: asyncio.Queue[Any]) -> None:
        await go.wait()
        for i in range(n):
            await out.put(i)
        await out.put(END)

    async def stage(inp: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        while True:
            m = await inp.get()
            await out.put(m)
            if m is END:
                return

    async def sink(inp: asyncio.Queue[Any]) -> None:
        nonlocal count
        while await inp.get() is not END:
            count += 1

    tasks = [asyncio.create_task(source(queues[0]))]
    tasks += [asyncio.create_task(stage(queues[i], queues[i + 1])) for i in range(STAGES)]
    last = asyncio.create_task(sink(queues[-1]))
    await asyncio.sleep(0.02)
    watch = Stopwatch()
    go.set()
    await last
    sample = watch.read()
    await asyncio.gather(*tasks)
    if count != n:
        raise AssertionError(f"queue chain lost messages: sink got {count} of {n}")
    return sample


# -- Pykka: a thread per actor ---------------------------------------------------------------


def pykka_chain(n: int) -> Sample:
    """Time ``n`` messages told through 10 Pykka stages into a counting actor (11 hops, as streamlib's)."""
    return pykka_peers.chain(n, STAGES)


# -- callgrind: deterministic instruction counts ------------------------------------------------


def _instructions(kind: str, n: int) -> subprocess.Popen[str]:
    """Start ``kind``'s chain with ``n`` messages under callgrind (asyncio loop, message-driven stages)."""
    script = str(Path(__file__).resolve())
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, script]
    cmd += ["--single", kind, "--n", str(n), "--stage-fps", "none"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def callgrind_per_message(kind: str, small: int = 1000, large: int = 3000) -> float:
    """CPU instructions per message: (Ir(large) - Ir(small)) / (large - small), start-up cancelling out.

    Stages run message-driven (``default_fps = None``) here: with an own-clock fallback
    their silence timers fire on wall-clock time, which valgrind slows 50-fold, so the
    count would depend on the machine's speed."""
    runs = {count: _instructions(kind, count) for count in (small, large)}
    collected: dict[int, int] = {}
    for count, proc in runs.items():
        _, err = proc.communicate()
        match = re.search(r"Collected : (\d+)", err)
        if proc.returncode != 0 or match is None:
            raise RuntimeError(f"callgrind run of the {kind} chain failed:\n{err[-2000:]}")
        collected[count] = int(match.group(1))
    return (collected[large] - collected[small]) / (large - small)


# -- the benchmark ------------------------------------------------------------------------------


def _set_stage_fps(value: str | None) -> None:
    if value is None:
        return
    fps: float | None = None if value == "none" else float(value)
    ChainStage.default_fps = fps
    ChainSink.default_fps = fps


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison, print the tables, return the figures (ratios: higher is better for streamlib)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--reps", type=int, default=5, help="interleaved pairs per comparison")
    parser.add_argument("--maxsize", type=int, default=2, help="mailbox / queue size of every stage")
    parser.add_argument("--stage-fps", default=None, help="override the stages' default_fps ('none' or a number)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (n=4000, 2 reps)")
    parser.add_argument("--no-pykka", action="store_true", help="skip the Pykka comparison")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per message (slow)")
    parser.add_argument("--single", choices=("streamlib", "queue"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_stage_fps(args.stage_fps)
    n, reps = (4000, 2) if args.quick else (args.n, args.reps)

    if args.single:  # one run for callgrind to count, on asyncio's loop
        # valgrind runs code ~50x slower but time passes as usual: hand-off's 1 ms slice per
        # loop turn (wall clock) would cover 50x fewer messages than natively. Scale it back.
        handoff.SLICE *= VALGRIND_SLOWDOWN
        chain = streamlib_chain if args.single == "streamlib" else queue_chain
        asyncio.run(chain(n, args.maxsize))
        return {}

    print(f"# bench_chain: {n} messages, {STAGES} stages, maxsize={args.maxsize}, {reps} reps ({describe_tree()})")
    figures: dict[str, float] = {}
    per_msg: dict[str, list[Sample]] = {}
    pykka_ratios: dict[str, list[Sample]] = {}
    pairs: dict[str, list[Sample]] = {loop: [] for loop in LOOP_RUNNERS}
    for rep in range(reps):
        streamlib_runs: dict[str, Sample] = {}
        for loop, run in LOOP_RUNNERS.items():
            # Alternate the order so that drift in the machine's load favours neither side.
            if rep % 2 == 0:
                base, ours = run(queue_chain(n, args.maxsize)), run(streamlib_chain(n, args.maxsize))
            else:
                ours, base = run(streamlib_chain(n, args.maxsize)), run(queue_chain(n, args.maxsize))
            pairs[loop].append(Sample(base.wall / ours.wall, base.cpu / ours.cpu))
            per_msg.setdefault(f"queue/{loop}", []).append(base.per(n))
            per_msg.setdefault(f"streamlib/{loop}", []).append(ours.per(n))
            streamlib_runs[loop] = ours
        if not args.no_pykka:
            theirs = pykka_chain(n)
            per_msg.setdefault("pykka/threads", []).append(theirs.per(n))
            for loop, ours in streamlib_runs.items():
                pykka_ratios.setdefault(loop, []).append(Sample(theirs.wall / ours.wall, theirs.cpu / ours.cpu))

    rows: list[list[object]] = []
    for loop, samples in pairs.items():
        for what, key in (("wall", "wall"), ("CPU", "cpu")):
            median, best = ratio_stats([getattr(s, key) for s in samples])
            figures[f"chain_{loop}_{key}_ratio_median"] = median
            figures[f"chain_{loop}_{key}_ratio_best"] = best
            rows.append([f"streamlib vs asyncio.Queue ({loop})", what, f"{median:.2f}x", f"{best:.2f}x", ">= 1.5x"])
    for loop, samples in pykka_ratios.items():
        for what, key in (("wall", "wall"), ("CPU", "cpu")):
            median, best = ratio_stats([getattr(s, key) for s in samples])
            figures[f"pykka_{loop}_{key}_ratio_median"] = median
            figures[f"pykka_{loop}_{key}_ratio_best"] = best
            rows.append([f"streamlib ({loop}) vs Pykka threads", what, f"{median:.2f}x", f"{best:.2f}x", ">= 2.0x"])
    print_table(
        "Speed ratios (baseline time / streamlib time; > 1: streamlib faster)",
        ["comparison", "clock", "median", "best", "target"],
        rows,
    )

    abs_rows: list[list[object]] = []
    for name, samples in per_msg.items():
        wall = sorted(s.wall for s in samples)[len(samples) // 2] * 1e6
        cpu = sorted(s.cpu for s in samples)[len(samples) // 2] * 1e6
        figures[f"us_per_msg_{name.replace('/', '_')}_cpu"] = cpu
        abs_rows.append([name, f"{wall:.1f}", f"{cpu:.1f}", f"{cpu / (STAGES + 1):.2f}"])
    print_table(
        "Absolute cost, median (informative only: the machine is noisy)",
        ["chain", "wall us/msg", "CPU us/msg", "CPU us/hop"],
        abs_rows,
    )

    if args.callgrind:
        if shutil.which("valgrind") is None:
            print("\n(valgrind is not installed: no instruction counts)")
        else:
            ours_ir = callgrind_per_message("streamlib")
            base_ir = callgrind_per_message("queue")
            figures["callgrind_ir_per_msg_streamlib"] = ours_ir
            figures["callgrind_ir_per_msg_queue"] = base_ir
            figures["callgrind_ratio"] = base_ir / ours_ir
            print_table(
                "Instructions per message (callgrind, asyncio loop, message-driven stages; deterministic)",
                ["chain", "instructions/msg", "per hop"],
                [
                    ["streamlib", f"{ours_ir:,.0f}", f"{ours_ir / (STAGES + 1):,.0f}"],
                    ["asyncio.Queue", f"{base_ir:,.0f}", f"{base_ir / (STAGES + 1):,.0f}"],
                    ["ratio (Queue / streamlib)", f"{base_ir / ours_ir:.2f}x", ""],
                ],
            )
    return figures


if __name__ == "__main__":
    main()
