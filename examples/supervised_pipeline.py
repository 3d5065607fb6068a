"""A pipeline that survives a crashing stage: a filter that raises every N frames, under a Supervisor.

::

    pattern (TestPattern) ──> [supervisor: glitchy (crashes every --every frames)] ──> counter

The supervisor restarts ``glitchy`` each time (one_for_one); the restarted instance keeps
the old one's mailboxes and connections, so frames keep flowing and only the frame in
hand at each crash is lost. Prints restarts, frames delivered and lost. Headless, no files.

Run: ``python examples/supervised_pipeline.py [--frames 90] [--every 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any, ClassVar

import numpy as np

from streamlib import Actor, Dispatcher, StreamInput, Supervisor, TimedTick, VideoFrame
from streamlib.actors.filters import FrameFilter
from streamlib.actors.video import TestPattern

# The supervisor logs every restart with a traceback; keep the example's output short.
logging.basicConfig(level=logging.CRITICAL)


class Glitchy(FrameFilter):
    """Inverts frames, and raises on every ``every``-th frame it is given."""

    seen: ClassVar[int] = 0  # across restarts (a restarted instance is a fresh object)

    def __init__(self, every: int = 20, *, dispatcher: Dispatcher | str | None = None, **kw: Any) -> None:
        super().__init__(dispatcher=dispatcher, **kw)
        self.every = every

    def apply(self, data: np.ndarray) -> np.ndarray:
        Glitchy.seen += 1
        if Glitchy.seen % self.every == 0:
            raise RuntimeError(f"simulated glitch on frame #{Glitchy.seen}")
        return 255 - data


class Counter(Actor):
    """Counts the frames that arrive, and checks that they were inverted."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=8, overflow="block")
        self.frames = 0
        self.inverted = 0

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is not None:
            self.frames += 1
            self.inverted += int(frame.data[0, 0, 0] == 255 - 191)  # the bars' top-left grey is 191


async def main(frames: int, every: int) -> None:
    sup = Supervisor(strategy="one_for_one", max_restarts=frames, within=60)
    pattern = TestPattern("smpte_bars", 320, 240, fps=60, frames=frames)
    glitchy = sup.spawn(Glitchy, every, overflow="block", maxsize=4)
    counter = Counter()
    pattern >> glitchy >> counter
    await pattern.join()
    await asyncio.sleep(0.3)  # let the last frames through
    current = sup.children[0]
    restarts, lost = current.restarts, current.inputs["video"].lost
    await sup.stop()  # the counter sees end of stream and stops
    await counter.join()
    print(f"source sent {pattern.sent} frames; the filter crashed and was restarted {restarts} times")
    print(f"counter received {counter.frames} frames ({counter.inverted} correctly inverted), lost in crashes: {lost}")
    expected_crashes = frames // every
    if restarts != expected_crashes or counter.frames + lost != frames:
        raise SystemExit(f"expected {expected_crashes} restarts and {frames} frames accounted for")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.frames, args.every))
