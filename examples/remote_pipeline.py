"""Actors in two processes, wired with ``>>``: a camera-like source on an *edge* runtime, an
inverter on the same edge runtime, and a meter here.

::

    edge runtime (streamlib node)              this process
    TestPattern cam-1 >> Invert-ish ─── link ──> meter (frames, latency, clock metadata)

Without ``--connect`` it starts the edge runtime itself (``streamlib node --listen
127.0.0.1:0``) and stops it at the end; with ``--connect HOST:PORT`` it uses one you started
in another terminal (``streamlib node --listen 127.0.0.1:7400 --name edge``). ``get_actor``
creates the actors there on first use and finds them afterwards (get-or-create).

Run it with ``python examples/remote_pipeline.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import streamlib
from streamlib import Actor, StreamInput, TimedTick, VideoFrame


class Meter(Actor):
    """Counts frames and their latency (source timestamp to here: one host, one monotonic clock)."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.frames = 0
        self.latency = 0.0
        self.last: VideoFrame | None = None

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is not None:
            self.frames += 1
            self.latency += time.monotonic() - frame.timestamp
            self.last = frame


def start_edge() -> tuple[subprocess.Popen[str], str]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    edge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlib",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "edge",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert edge.stdout is not None
    line = edge.stdout.readline()  # "streamlib node edge listening on actor://127.0.0.1:PORT ..."
    return edge, line.split("actor://")[1].split()[0]


async def main(address: str, seconds: float) -> None:
    camera = streamlib.get_actor(f"actor://{address}/TestPattern/cam-1", "moving_box", 320, 180, 30.0)
    invert = streamlib.get_actor(f"actor://{address}/Resize/half", width=160, height=90)
    meter = Meter()
    camera >> invert >> meter  # edge to edge (no copy passes here), then edge to this process
    await asyncio.sleep(seconds)
    print(
        f"{meter.frames} frames in {seconds:g} s from {invert.uri}, "
        f"mean latency {meter.latency / max(meter.frames, 1) * 1e3:.1f} ms"
    )
    if meter.last is not None:
        f = meter.last
        print(f"last frame: {f.width}x{f.height}, frame_number={f.frame_number}, clock={f.clock_source_id}")
    print("edge link:", invert.stats()["links"]["outputs['video']"])
    streamlib.tree()
    for actor in (camera, invert, meter):
        await actor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connect", metavar="HOST:PORT", help="an edge runtime you started (default: start one)")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    edge = None
    if args.connect is None:
        edge, args.connect = start_edge()
    try:
        asyncio.run(main(args.connect, args.seconds))
    finally:
        if edge is not None:
            edge.terminate()
            edge.wait(10)
