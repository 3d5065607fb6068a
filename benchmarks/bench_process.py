"""1080p RGB frames in and out of a worker process: ``python benchmarks/bench_process.py``.

A source in the parent feeds full-HD ``uint8`` frames into an actor that reads each one
and sends a result (``255 - frame`` by default, or the frame itself with
``--mode passthrough``) to a sink in the parent. Every input blocks when full
(``overflow="block"``), so the run is lossless and the rate is what the dispatcher
sustains, not what it drops. The same pipeline on the thread dispatcher is measured in
the same run as a baseline. Target: >= 120 frames/s through the process dispatcher.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any, ClassVar

import numpy as np

from streamlib import Actor, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.dispatch import Dispatcher, ProcessPoolDispatcher, ThreadPoolDispatcher
from streamlib.testing import Feeder

TARGET_FPS = 120.0


class Invert(Actor):
    default_fps: ClassVar[float | None] = None

    def __init__(self, passthrough: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.passthrough = passthrough
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=2, overflow="block")
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is not None:
            await self.outputs["video"].send(frame if self.passthrough else frame.with_data(255 - frame.data))


class Sink(Actor):
    """Counts frames, checks one pixel of each, and keeps none (so their memory is reused)."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, expected: list[int], **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=2, overflow="block")
        self.expected = expected
        self.count = 0
        self.wrong = 0
        self.want = 0
        self.reached: asyncio.Event = asyncio.Event()

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["video"]
        while (frame := port.read_nowait()) is not None:
            if int(frame.data[7, 11, 1]) != self.expected[frame.frame_number % len(self.expected)]:
                self.wrong += 1
            self.count += 1
            if self.count >= self.want:
                self.reached.set()


async def run(dispatcher: Dispatcher, frames: list[np.ndarray[Any, Any]], count: int, passthrough: bool) -> float:
    """Frames per second for ``count`` frames through an actor on ``dispatcher``."""
    expected = [int(f[7, 11, 1]) if passthrough else 255 - int(f[7, 11, 1]) for f in frames]
    source, worker, sink = Feeder(VideoFrame), Invert(passthrough, dispatcher=dispatcher), Sink(expected)
    source >> worker >> sink

    async def feed(first: int, n: int) -> None:
        for i in range(first, first + n):
            await source.send(VideoFrame(frames[i % len(frames)], timestamp=time.monotonic(), frame_number=i))

    warmup = 30
    sink.want = warmup
    await feed(0, warmup)
    await asyncio.wait_for(sink.reached.wait(), 60)
    sink.reached.clear()
    sink.want = warmup + count
    start = time.perf_counter()
    feeding = asyncio.ensure_future(feed(warmup, count))
    await asyncio.wait_for(sink.reached.wait(), 600)
    elapsed = time.perf_counter() - start
    await feeding
    dropped = worker.inputs["video"].dropped + sink.inputs["video"].dropped
    for actor in (source, worker, sink):
        await actor.stop()
    if sink.count != warmup + count or dropped or sink.wrong:
        raise SystemExit(f"lossless run broken: got {sink.count}, dropped {dropped}, wrong pixels {sink.wrong}")
    return count / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="frames to time per run (after 30 warm-up frames)")
    parser.add_argument("--runs", type=int, default=3, help="runs per dispatcher; the median is reported")
    parser.add_argument("--mode", choices=["invert", "passthrough"], default="invert")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(4)]
    passthrough = args.mode == "passthrough"
    size = f"{args.width}x{args.height} RGB uint8 ({frames[0].nbytes / 1e6:.1f} MB)"
    print(f"{args.frames} frames of {size} per run, {args.mode}, lossless (overflow='block'), {os.cpu_count()} CPUs")

    results: dict[str, list[float]] = {"process": [], "thread": []}
    for _ in range(args.runs):  # interleaved, so both see the same machine load
        results["process"].append(await run(ProcessPoolDispatcher(1), frames, args.frames, passthrough))
        results["thread"].append(await run(ThreadPoolDispatcher(1), frames, args.frames, passthrough))
    for name, fps in results.items():
        runs = ", ".join(f"{f:.1f}" for f in fps)
        print(f"  {name} dispatcher: median {statistics.median(fps):7.1f} frames/s  (runs: {runs})")

    process_fps, thread_fps = statistics.median(results["process"]), statistics.median(results["thread"])
    verdict = "PASS" if process_fps >= TARGET_FPS else "FAIL"
    print(
        f"RESULT {verdict}: process dispatcher {process_fps:.1f} frames/s ({args.mode}, {args.width}x{args.height}, "
        f"median of {args.runs}); target >= {TARGET_FPS:g}; {process_fps / thread_fps:.2f}x the thread dispatcher "
        f"({thread_fps:.1f} frames/s, same run)"
    )


if __name__ == "__main__":
    asyncio.run(main())
