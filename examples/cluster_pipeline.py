"""A camera placed on a Ray node by its resources, its frames flowing here on streamlib's links.

::

    Ray node with {"camera": 1}                 this process
    TestPattern (720p) ─────── link ───────────> Meter (frames/s, latency)

Without ``--address`` it starts a one-node Ray on this machine that claims a ``camera``
resource; with ``--address auto`` (or ``HOST:6379``) it uses your cluster, where some node was
started with ``ray start ... --resources '{"camera": 1}'``. The camera runs under a supervisor:
if its node dies, it is placed again on another node with a camera. See ``docs/cluster.md``.

Run it with ``python examples/cluster_pipeline.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import ray

import streamlib
from streamlib import Actor, StreamInput, Supervisor, TimedTick, VideoFrame
from streamlib.actors import TestPattern
from streamlib.cluster import RayDispatcher, forget_hosts


class Meter(Actor):
    """Counts frames and their latency (source timestamp to here; one host, one monotonic clock)."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=4)
        self.frames = 0
        self.latency = 0.0

    async def process(self, tick: TimedTick) -> None:
        while (frame := await self.inputs["video"].try_read()) is not None:
            self.frames += 1
            self.latency += time.monotonic() - frame.timestamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", help="a Ray cluster to join (default: start a one-node Ray here)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to measure (default 3)")
    args = parser.parse_args()

    # The hosted runtimes must import this streamlib (a checkout need not be installed on the node).
    root = str(Path(streamlib.__file__).resolve().parent.parent)
    if args.address:
        ray.init(address=args.address, namespace="streamlib", log_to_driver=False)
    else:
        ray.init(num_cpus=1, resources={"camera": 1}, include_dashboard=False, log_to_driver=False)
    try:
        dispatcher = RayDispatcher({"camera": 1}, runtime_env={"env_vars": {"PYTHONPATH": root}})
        sup = Supervisor(max_restarts=3, within=60)
        camera = sup.spawn(TestPattern, "moving_box", 1280, 720, 30.0, dispatcher=dispatcher, name="camera")
        meter = Meter()
        camera >> meter
        deadline = time.monotonic() + 30
        while meter.frames == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        start, first = time.monotonic(), meter.frames
        time.sleep(args.seconds)
        got = meter.frames - first
        print(f"camera placed on Ray node {camera.node_ip}/{camera.node_id[:8]} as {camera.uri}")
        print(
            f"{got / (time.monotonic() - start):.1f} frames/s of 1280x720 RGB here; "
            f"mean latency {1e3 * meter.latency / max(meter.frames, 1):.1f} ms"
        )
        print("link:", camera.stats()["links"]["outputs['video']"])
        sup.stop().wait(10)
        meter.stop().wait(5)
    finally:
        forget_hosts()  # before ray.shutdown(): the death watchers leave Ray first
        ray.shutdown()
    os._exit(0)  # Ray's and the link threads are daemons; leave without waiting on them


if __name__ == "__main__":
    main()
