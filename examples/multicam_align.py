"""Three cameras on one timeline, aligned into triplets and composited side by side.

Seed 003's example 4: time-synchronised cameras (as PTP-clocked cameras are: every camera
captures frame *n* at ``epoch + n / fps``) that start at different moments, stamp their
frames with ±5 ms of jitter and lose 1 % of them. An :class:`~streamlib.alignment.InputSync`
with the ``"tolerance"`` policy pairs the frames of one instant; a lost frame leaves a
black panel (``None`` in the matched set) instead of stalling or mismatching the others.

    python examples/multicam_align.py --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlib import Actor, Clock, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.alignment import InputSync, MatchedSet
from streamlib.clock import sleep_until
from streamlib.testing import Probe

FPS = 30.0
TOLERANCE = 0.012  # > the worst pairwise jitter (10 ms), < half a frame period (16.7 ms)
JITTER = 0.005
LOSS = 0.01
SIZE = (90, 160)  # height, width of one camera


class Timeline(Clock):
    """Ticks at ``epoch + n / fps`` from frame ``first`` on: every camera on one epoch
    captures frame *n* at the same instant, whenever it started (what PTPClock gives
    cameras on different machines)."""

    def __init__(self, epoch: float, fps: float, first: int, clock_id: str) -> None:
        self.epoch, self.fps, self.clock_id, self._n = epoch, fps, clock_id, first

    async def next_tick(self) -> TimedTick:
        due = self.epoch + self._n / self.fps
        await sleep_until(due)
        tick = TimedTick(due, self._n, self.clock_id, self.fps)
        self._n += 1
        return tick


class Camera(Actor):
    """A simulated camera: a numbered grey frame per tick, jittered timestamp, some frames lost."""

    def __init__(self, index: int, rng: random.Random, sent: set[int], **kw: Any) -> None:
        super().__init__(**kw)
        self.index, self.rng, self.sent = index, rng, sent
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        if self.rng.random() < LOSS:
            return  # lost on the way
        pixels = np.full((*SIZE, 3), 60 + 60 * self.index, np.uint8)
        pixels[:, : 1 + tick.frame_number % SIZE[1], 0] = 255  # a bar that grows with the frame number
        stamp = tick.timestamp + self.rng.uniform(-JITTER, JITTER)
        self.sent.add(tick.frame_number)
        await self.outputs["video"].send(VideoFrame(pixels, stamp, tick.frame_number, tick.clock_source_id, tick.fps))


class SideBySide(Actor):
    """Aligns its three camera inputs and puts each triplet side by side (black where one is missing)."""

    default_fps = None

    def __init__(self, names: tuple[str, ...], tolerance: float, timeout: float | None, **kw: Any) -> None:
        super().__init__(**kw)
        for name in names:
            self.inputs[name] = StreamInput(name, VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.cameras = InputSync(*self.inputs.values(), policy="tolerance", tolerance=tolerance, timeout=timeout)
        self.sets: list[MatchedSet] = []
        self._black = np.zeros((*SIZE, 3), np.uint8)

    async def process(self, tick: TimedTick) -> None:
        for matched in await self.cameras.read_many():
            self.sets.append(matched)
            panels = [self._black if f is None else f.data for f in matched.values()]
            first = next(f for f in matched.values() if f is not None)
            await self.outputs["video"].send(
                VideoFrame(np.hstack(panels), matched.timestamp, first.frame_number, first.clock_source_id, FPS)
            )


@dataclass
class Report:
    existing_triplets: set[int]
    """Frame numbers that all three cameras sent."""
    matched_triplets: set[int]
    """Frame numbers released as a complete set of that one frame number."""
    mismatched_sets: list[MatchedSet] = field(repr=False)
    composited: int
    wall_latencies: list[float] = field(repr=False)
    """Per set while all three cameras run: when the sync released it minus when its newest
    member arrived (seconds)."""

    @property
    def mismatched(self) -> int:
        return len(self.mismatched_sets)

    @property
    def wall_latency_p50(self) -> float:
        return float(np.percentile(self.wall_latencies, 50))

    @property
    def wall_latency_p99(self) -> float:
        return float(np.percentile(self.wall_latencies, 99))


async def align_cameras(seconds: float = 3.0, seed: int = 1, timeout: float | None = 0.25) -> Report:
    """Run three cameras for ``seconds`` into a SideBySide aligner; report what was matched."""
    rng = random.Random(seed)
    epoch = time.monotonic() + 0.1
    sent: list[set[int]] = [set(), set(), set()]
    names = ("left", "centre", "right")
    aligner = SideBySide(names, TOLERANCE, timeout)
    probe = Probe(VideoFrame)
    aligner >> probe
    cameras = []
    for i, name in enumerate(names):
        start = rng.randrange(0, 8)  # cameras switch on at different frames
        clock = Timeline(epoch, FPS, start, clock_id="ptp:shared-timeline")
        camera = Camera(i, random.Random(rng.random()), sent[i], name=f"camera_{name}", clock=clock)
        camera.outputs["video"] >> aligner.inputs[name]
        cameras.append(camera)
    await asyncio.sleep(seconds)
    for camera in cameras:
        camera.stop()
    await asyncio.wait_for(aligner.join(), 10)  # the cameras' end of stream flushes and ends it
    await asyncio.wait_for(probe.join(), 10)
    existing = sent[0] & sent[1] & sent[2]
    matched: set[int] = set()
    mismatched: list[MatchedSet] = []
    for s in aligner.sets:
        numbers = {f.frame_number for f in s.values() if f is not None}
        if len(numbers) > 1:
            mismatched.append(s)
        elif s.complete:
            matched.update(numbers)
    # Added latency while all three run: before a camera's first frame its sets can only wait
    # (for that frame or the timeout), which is start-up, not alignment cost.
    first, last = (min(existing), max(existing)) if existing else (0, -1)
    latencies = [
        s.decided_at - s.arrived_last
        for s in aligner.sets
        if first <= next(f.frame_number for f in s.values() if f is not None) <= last
    ]
    return Report(existing, matched, mismatched, len(probe.messages), latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = asyncio.run(align_cameras(args.seconds, args.seed))
    existing = len(report.existing_triplets)
    found = len(report.matched_triplets & report.existing_triplets)
    print(
        f"triplets: {found}/{existing} matched ({100 * found / max(existing, 1):.1f} %), "
        f"{report.mismatched} mismatched, {report.composited} frames composited; added latency "
        f"p50 {1e3 * report.wall_latency_p50:.2f} ms, p99 {1e3 * report.wall_latency_p99:.2f} ms "
        f"(budget {1e3 * (TOLERANCE + 1 / FPS):.1f} ms)"
    )


if __name__ == "__main__":
    main()
