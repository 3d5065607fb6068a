"""Running on a Ray cluster: ``python benchmarks/bench_cluster.py [--short]``.

Starts a local multi-node Ray (``ray.cluster_utils.Cluster``: a head and two nodes with a
``stage`` resource) and measures, in one run, a lossless 1280x720 RGB pipeline
``source (here) -> invert -> meter (here)``:

1. in one process (the baseline);
2. with ``invert`` placed on a Ray node (``RayDispatcher``): frames go runtime to runtime on
   streamlib's links (shared memory: the nodes share this host);
3. with each frame passed through Ray itself: ``ray.put`` the frame, a Ray actor on the node
   inverts it, ``ray.get`` the result (one frame in flight, as a per-frame call would be);

frames/s and per-frame latency (median, p95: send to arrival, one monotonic clock), flat out
(the source sends as fast as the lossless pipeline takes frames: latency includes queueing)
and paced at 30 frames/s (the latency a camera sees). Then the
time from killing the node that runs ``invert`` (supervised) to frames flowing here again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import ray
from ray.cluster_utils import Cluster

import streamlib
from streamlib import Actor, StreamInput, StreamOutput, Supervisor, TimedTick, VideoFrame
from streamlib.cluster import RayDispatcher
from streamlib.cluster.hosting import forget_hosts

HERE = Path(__file__).resolve().parent
ROOT = Path(streamlib.__file__).resolve().parent.parent
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}}
SHAPE = (720, 1280, 3)


class Source(Actor):
    """Sends 720p frames as fast as the (blocking) downstream takes them, stamped with the send time."""

    def __init__(self, rate: float = 2000.0, **kw: Any) -> None:
        super().__init__(fps=rate, **kw)
        self.outputs["out"] = StreamOutput("out", VideoFrame)
        self.frames = [np.full(SHAPE, i, np.uint8) for i in range(4)]

    async def process(self, tick: TimedTick) -> None:
        data = self.frames[tick.frame_number % 4]
        await self.outputs["out"].send(VideoFrame(data, timestamp=time.monotonic(), frame_number=tick.frame_number))


class Invert(Actor):
    """``255 - pixels``: the stage that runs on the Ray node."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", VideoFrame, maxsize=2, overflow="block")
        self.outputs["out"] = StreamOutput("out", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        while (frame := self.inputs["in"].read_nowait()) is not None:
            await self.outputs["out"].send(frame.with_data(255 - frame.data))


class Meter(Actor):
    """Keeps each frame's latency (arrival minus the source's send time) and arrival time."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", VideoFrame, maxsize=2, overflow="block")
        self.latencies: list[float] = []
        self.arrivals: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        while (frame := self.inputs["in"].read_nowait()) is not None:
            now = time.monotonic()
            self.latencies.append(now - frame.timestamp)
            self.arrivals.append(now)


class RayInvert:
    """The same stage as a plain Ray actor (for the ray.put/ray.get comparison)."""

    def invert(self, data: np.ndarray) -> np.ndarray:
        return 255 - data


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "frames": len(latencies),
        "fps": round(len(latencies) / seconds, 1),
        "latency_ms_p50": round(1e3 * statistics.median(ordered), 2),
        "latency_ms_p95": round(1e3 * ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def measure(stage: Actor, seconds: float, rate: float = 2000.0) -> dict[str, float]:
    source, meter = Source(rate), Meter()
    source >> stage >> meter
    deadline = time.monotonic() + 60
    while len(meter.latencies) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    first, start = len(meter.latencies), time.monotonic()
    time.sleep(seconds)
    got = meter.latencies[first:]
    elapsed = time.monotonic() - start
    source.stop().wait(10)
    stage.stop().wait(10)
    meter.stop().wait(10)
    return summary(got, elapsed)


def through_ray(node_id: str, seconds: float) -> dict[str, float]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = (
        ray.remote(RayInvert)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        .remote()
    )
    frames = [np.full(SHAPE, i, np.uint8) for i in range(4)]
    ray.get(actor.invert.remote(ray.put(frames[0])))  # warm
    latencies = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        sent = time.monotonic()
        out = ray.get(actor.invert.remote(ray.put(frames[i % 4])))
        assert out[0, 0, 0] == 255 - (i % 4)
        latencies.append(time.monotonic() - sent)
        i += 1
    elapsed = time.monotonic() - start
    ray.kill(actor)
    return summary(latencies, elapsed)


def node_kill(cluster: Cluster, doomed: Any, seconds: float) -> dict[str, Any]:
    sup = Supervisor(max_restarts=3, within=60)
    dispatcher = RayDispatcher({"stage": 1}, node=doomed.node_id, runtime_env=RUNTIME_ENV)
    stage = sup.spawn(Invert, dispatcher=dispatcher, restart_wait=30)
    source, meter = Source(), Meter()
    source >> stage >> meter

    def until(predicate: Any, what: str) -> float:
        while not predicate():
            if time.monotonic() - killed > 60:
                raise RuntimeError(f"no {what} within 60 s of the node kill")
            time.sleep(0.002)
        return time.monotonic() - killed

    killed = time.monotonic()
    until(lambda: len(meter.arrivals) >= 20, "frames before the kill")
    killed = time.monotonic()
    cluster.remove_node(doomed, allow_graceful=False)
    failed = until(lambda: stage.state.name == "FAILED", "failure")
    restarted = until(lambda: stage.replaced_by is not None, "restart")
    # Frames that arrive after the restart are the new stage's (the old node is gone).
    again = until(lambda: meter.arrivals[-1] > killed + restarted, "frames after the restart")
    new = stage.replaced_by
    time.sleep(seconds / 2)
    sup.stop().wait(10)
    source.stop().wait(10)
    meter.stop().wait(10)
    return {
        "failure_seen_s": round(failed, 3),
        "restarted_s": round(restarted, 3),
        "frames_again_s": round(again, 3),
        "moved_from": doomed.node_id[:8],
        "moved_to": getattr(new, "node_id", "?")[:8],
    }


def main() -> None:
    if __name__ == "__main__":  # the hosted runtimes import the actor classes as bench_cluster.X
        sys.path.insert(0, str(HERE))
        import bench_cluster

        bench_cluster.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="1 s per measurement")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    seconds = 1.0 if args.short else args.seconds
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    first = cluster.add_node(num_cpus=1, resources={"stage": 1})
    cluster.add_node(num_cpus=1, resources={"stage": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="streamlib", log_to_driver=False)
    try:
        results: dict[str, Any] = {}
        results["one_process"] = measure(Invert(), seconds)
        placed = Invert(dispatcher=RayDispatcher({"stage": 1}, node=first.node_id, runtime_env=RUNTIME_ENV))
        results["ray_node_streamlib_links"] = measure(placed, seconds)
        results["one_process_30fps"] = measure(Invert(), seconds, 30.0)
        placed = Invert(dispatcher=RayDispatcher({"stage": 1}, node=first.node_id, runtime_env=RUNTIME_ENV))
        results["ray_node_streamlib_links_30fps"] = measure(placed, seconds, 30.0)
        results["ray_put_get_per_frame"] = through_ray(first.node_id, seconds)
        results["node_kill"] = node_kill(cluster, first, seconds)
    finally:
        forget_hosts()
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    os._exit(0)


if __name__ == "__main__":
    main()
