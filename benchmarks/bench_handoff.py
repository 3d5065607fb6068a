"""What hand-off buys a realtime pipeline: per-frame latency and CPU, with it and without.

What is measured
    A 100 fps source sends a 640x360 RGB ``VideoFrame`` per tick through ``stages``
    pass-through actors (``drop_oldest``, the realtime default) into a sink that records each
    frame's age on arrival (``time.monotonic() - frame.timestamp``, the source's tick time).
    The same graph runs twice per round, interleaved, in one process: every actor on the
    default ``AsyncioDispatcher()`` (hand-off on) and on ``AsyncioDispatcher(hand_off=False)``
    (each tick waits for its task's turn on the loop, as before hand-off existed).

Why
    Hand-off exists for message throughput (``bench_chain.py``), but a frame that crosses a
    pipeline within its source's turn also arrives sooner and costs less CPU; this shows how
    much, on the path a camera or file source takes.

Run: ``python benchmarks/bench_handoff.py [--seconds 3] [--stages 5] [--rounds 3] [--loop uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, ClassVar

import numpy as np
from measure import LOOP_RUNNERS, describe_tree, print_table

from streamlib import Actor, AsyncioDispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.observe.profiling import percentile

SHAPE = (360, 640, 3)


class Camera(Actor):
    """A frame per tick, stamped with the tick (as a capture source does)."""

    default_fps: ClassVar[float | None] = 100.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["video"].send(VideoFrame.at(tick, data=np.zeros(SHAPE, np.uint8)))


class Pass(Actor):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is not None:
            await self.outputs["video"].send(frame)


class Ages(Actor):
    """Records how old each frame is when it arrives."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.ages: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is not None:
            self.ages.append(time.monotonic() - frame.timestamp)


async def run(stages: int, seconds: float, hand_off: bool) -> tuple[list[float], float, int]:
    """Ages of the frames that arrived, CPU seconds per frame, frames dropped on the way."""
    dispatcher = AsyncioDispatcher(hand_off=hand_off)
    camera = Camera(dispatcher=dispatcher)
    middle = [Pass(dispatcher=dispatcher) for _ in range(stages)]
    sink = Ages(dispatcher=dispatcher)
    upstream: Actor = camera
    for actor in (*middle, sink):
        upstream = upstream >> actor
    await asyncio.sleep(0.5)  # warm up; then measure
    sink.ages.clear()
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    frames = len(sink.ages)
    ages = list(sink.ages)
    dropped = sum(a.inputs["video"].dropped for a in (*middle, sink))
    await camera.stop()
    await sink.join()
    return ages, cpu / max(frames, 1), dropped


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=sorted(LOOP_RUNNERS), default="asyncio")
    args = parser.parse_args(argv)

    async def rounds() -> dict[bool, list[tuple[list[float], float, int]]]:
        found: dict[bool, list[tuple[list[float], float, int]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for hand_off in (True, False):
                found[hand_off].append(await run(args.stages, args.seconds, hand_off))
        return found

    print(
        f"# bench_handoff: 100 fps 640x360 frames through {args.stages} stages, {args.rounds} x {args.seconds} s, "
        f"{args.loop} ({describe_tree()})"
    )
    found = LOOP_RUNNERS[args.loop](rounds())
    rows = []
    figures: dict[str, float] = {}
    for hand_off, label in ((True, "hand-off (default)"), (False, "hand_off=False")):
        ages = sorted(a for result in found[hand_off] for a in result[0])
        cpu = statistics.median(result[1] for result in found[hand_off])
        dropped = sum(result[2] for result in found[hand_off])
        p50, p99 = percentile(ages, 50, ordered=True), percentile(ages, 99, ordered=True)
        key = "on" if hand_off else "off"
        figures |= {f"latency_p50_ms_{key}": p50 * 1e3, f"latency_p99_ms_{key}": p99 * 1e3, f"cpu_us_{key}": cpu * 1e6}
        rows.append([label, len(ages), f"{p50 * 1e3:.3f}", f"{p99 * 1e3:.3f}", f"{cpu * 1e6:.0f}", dropped])
    print_table(
        "Source tick to sink, per frame",
        ["actors", "frames", "latency p50 ms", "latency p99 ms", "CPU µs/frame (median round)", "dropped"],
        rows,
    )
    return figures


if __name__ == "__main__":
    main()
