"""InferenceActor on a MobileNet-class model at 640x640: ``python benchmarks/bench_inference.py``.

The model is MobileNetV2 (width 1.0, 1000 classes) written out with ``onnx.helper`` from ONNX
operators (Conv, depthwise Conv, Clip, Add, GlobalAveragePool, Gemm) with random weights:
accuracy is not the point, compute is (~2.5 GMAC per 640x640 frame). Measured in one run,
interleaved (baseline, streamlib, streamlib, baseline, ...):

* **overhead**: N frames through ``Feeder >> InferenceActor(batch=1) >> Probe`` (lossless,
  ``overflow="block"``) against a plain loop of the same preprocessing + ``session.run`` on
  the same frames. Figure: streamlib's extra time per inference, in microseconds and as a
  percentage of the loop's. Target <= 5 %. The same on a tiny model (a 3x3 convolution on
  64x64) shows the absolute cost where the model costs nothing.
* **throughput**: frames/s with ``batch=1`` and with dynamic batching (``batch=4``, ``8``)
  when frames wait (a source faster than the model), each next to a plain loop of batches
  of that size.
* **realtime**: a 30 fps source of 640x640 frames for a few seconds into ``batch=1`` and
  ``batch=8`` actors (realtime mailboxes that drop the oldest): frames run per second, frames
  lost, and latency (result arrival - frame timestamp) p50/p95.

``--providers cuda`` (or ``tensorrt``) measures the same on a GPU where onnxruntime-gpu has one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Sample, Stopwatch, Target, describe_tree, percentile, print_table

from streamlib import Actor, DataMessage, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.actors.inference import ImagePreprocess, InferenceActor, TensorSpec, choose_providers
from streamlib.testing import Feeder, Probe

TARGETS = [
    Target("overhead_pct", "inference: streamlib's overhead per inference vs session.run (wall)", "<", 5.0, " %"),
    Target("overhead_cpu_pct", "inference: the same in CPU time (all threads)", "<", 5.0, " %"),
]


# -- models --------------------------------------------------------------------------------


def mobilenet_v2(size: int = 640, classes: int = 1000, seed: int = 0) -> bytes:
    """MobileNetV2 as an ONNX graph with random (He-initialised) weights, input [N, 3, size, size]."""
    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    inits = [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    ids = itertools.count()

    def conv(x: str, cin: int, cout: int, k: int, stride: int, groups: int = 1, relu6: bool = True) -> str:
        i = next(ids)
        fan_in = cin // groups * k * k
        w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2 / fan_in)).astype(np.float32)
        inits.extend(
            [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        )
        out = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"w{i}", f"b{i}"],
                [out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=groups,
            )
        )
        if not relu6:
            return out
        nodes.append(helper.make_node("Clip", [out, "zero", "six"], [f"relu{i}"]))
        return f"relu{i}"

    x = conv("images", 3, 32, 3, 2)
    cin = 32
    for t, c, n, s in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for j in range(n):
            stride = s if j == 0 else 1
            h = x if t == 1 else conv(x, cin, cin * t, 1, 1)
            h = conv(h, cin * t, cin * t, 3, stride, groups=cin * t)
            h = conv(h, cin * t, c, 1, 1, relu6=False)
            if stride == 1 and cin == c:
                nodes.append(helper.make_node("Add", [x, h], [f"res{next(ids)}"]))
                h = nodes[-1].output[0]
            x, cin = h, c
    x = conv(x, cin, 1280, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"]))
    fc = (rng.standard_normal((classes, 1280)) * 0.01).astype(np.float32)
    inits.extend([numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")])
    nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "mobilenet_v2",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def tiny_conv(size: int = 64) -> bytes:
    w = np.random.default_rng(1).standard_normal((8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, size, size])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


# -- the two sides -------------------------------------------------------------------------


def open_session(model: bytes, providers: list[Any]) -> Any:
    return ort.InferenceSession(model, ort.SessionOptions(), providers=providers)


def direct_loop(session: Any, frames: list[VideoFrame], batch: int = 1) -> Sample:
    """The baseline: the same preprocessing and ``session.run`` in a plain loop. Called on a
    worker thread, as the actor's own calls are (on these machines a busy main thread was
    measured 10-30 % slower than a worker thread doing the same, which would flatter streamlib)."""
    spec = TensorSpec.from_node(session.get_inputs()[0])
    transform = ImagePreprocess().bind(spec, "baseline")
    watch = Stopwatch()
    for i in range(0, len(frames), batch):
        chunk = frames[i : i + batch]
        feed = transform(chunk[0])[None] if batch == 1 else np.stack([transform(f) for f in chunk])
        session.run(None, {spec.name: feed})
    return watch.read()


async def through_actor(model: bytes, frames: list[VideoFrame], batch: int, providers: list[Any]) -> tuple[Sample, Any]:
    """Seconds for ``frames`` through Feeder >> InferenceActor >> Probe (lossless), after warm-up."""
    actor = InferenceActor(model, batch=batch, maxsize=max(2, batch), overflow="block", providers=providers)
    feed, probe = Feeder(VideoFrame), Probe(DataMessage)
    feed >> actor
    actor.outputs["tensors"] >> probe
    await feed.send(frames[0], frames[1])  # warm-up: the session opens and runs once
    await probe.wait_for(2, timeout=120)
    watch = Stopwatch()
    for f in frames:
        await feed.send(f)
    await probe.wait_for(len(frames) + 2, timeout=600)
    elapsed = watch.read()
    await feed.end()
    await actor.join()
    return elapsed, actor.stats()["inference"]


class Camera(Actor):
    """A realtime source: pre-made frames at ``fps`` on its own clock, for ``frames`` frames."""

    def __init__(self, pictures: list[np.ndarray], fps: float, frames: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.pictures, self._fps, self.frames, self.sent = pictures, fps, frames, 0
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    @property
    def default_fps(self) -> float:  # type: ignore[override]
        return self._fps

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["video"].send(VideoFrame.at(tick, data=self.pictures[self.sent % len(self.pictures)]))
        self.sent += 1
        if self.sent >= self.frames:
            self.stop()


class Latency(Actor):
    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=10_000)
        self.latencies: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        while (message := self.inputs["in"].read_nowait()) is not None:
            self.latencies.append(time.monotonic() - message.timestamp)


async def realtime(
    model: bytes,
    pictures: list[np.ndarray],
    fps: float,
    seconds: float,
    batch: int,
    providers: list[Any],
    max_latency: float | None = None,
) -> dict[str, float]:
    actor = InferenceActor(model, batch=batch, max_latency=max_latency, providers=providers)
    while actor.provider is None:  # the session opens in on_start, before the camera's first frame
        await asyncio.sleep(0.01)
    camera, sink = Camera(pictures, fps, round(fps * seconds)), Latency()
    camera >> actor
    actor.outputs["tensors"] >> sink
    started = time.perf_counter()
    await camera.join()
    await actor.join()
    elapsed = time.perf_counter() - started
    await sink.join()
    stats = actor.stats()
    ran = stats["inference"]["frames"]
    return {
        "fps": ran / seconds,  # frames run per second of source time (the same span for both)
        "drain_s": elapsed - seconds,
        "ran": ran,
        "sent": camera.sent,
        "lost": camera.sent - ran,
        "p50": percentile(sink.latencies, 50),
        "p95": percentile(sink.latencies, 95),
        "batches": stats["inference"]["batches"],
    }


# -- main ------------------------------------------------------------------------------------


def frames_of(size: int, count: int, distinct: int = 6) -> list[VideoFrame]:
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(distinct)]
    return [VideoFrame(pictures[i % distinct], float(i), i, "bench", 30.0) for i in range(count)]


async def overhead(model: bytes, frames: list[VideoFrame], reps: int, providers: list[Any]) -> dict[str, float]:
    session = open_session(model, providers)
    direct_loop(session, frames[:2])  # warm-up
    base, ours = [], []
    for rep in range(reps):  # baseline, streamlib, streamlib, baseline, ...
        order = ("direct", "streamlib") if rep % 2 == 0 else ("streamlib", "direct")
        for side in order:
            if side == "direct":
                base.append(await asyncio.to_thread(direct_loop, session, frames))
            else:
                ours.append((await through_actor(model, frames, 1, providers))[0])
    n = len(frames)
    pairs = [o.wall / b.wall - 1 for o, b in zip(ours, base, strict=True)]
    cpu_pairs = [o.cpu / b.cpu - 1 for o, b in zip(ours, base, strict=True)]
    wall_base, wall_ours = statistics.median(b.wall for b in base), statistics.median(o.wall for o in ours)
    return {
        "direct_ms": wall_base / n * 1e3,
        "streamlib_ms": wall_ours / n * 1e3,
        "overhead_us": (wall_ours - wall_base) / n * 1e6,
        "overhead_pct": statistics.median(pairs) * 100,
        "overhead_pct_best": min(pairs) * 100,
        "overhead_cpu_pct": statistics.median(cpu_pairs) * 100,
        "direct_cpu_ms": statistics.median(b.cpu for b in base) / n * 1e3,
        "streamlib_cpu_ms": statistics.median(o.cpu for o in ours) / n * 1e3,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    providers = choose_providers(args.providers.split(",") if args.providers else None, "bench")
    print(describe_tree())
    print(f"{os.cpu_count()} CPUs; onnxruntime {ort.__version__}; providers {providers}")
    model = mobilenet_v2(args.size)
    frames = frames_of(args.size, args.frames)
    results: dict[str, Any] = {}

    big = await overhead(model, frames, args.reps, providers)
    tiny = await overhead(tiny_conv(), frames_of(64, args.tiny_frames), args.reps, providers)
    results.update(
        {
            "overhead_pct": big["overhead_pct"],
            "overhead_us": big["overhead_us"],
            "overhead_cpu_pct": big["overhead_cpu_pct"],
            "tiny_overhead_us": tiny["overhead_us"],
            "tiny_overhead_pct": tiny["overhead_pct"],
        }
    )
    print_table(
        "Overhead per inference: Feeder >> InferenceActor(batch=1) >> Probe vs preprocess + session.run in a loop",
        [
            "model",
            "loop ms/frame",
            "streamlib ms/frame",
            "overhead µs/frame",
            "overhead % (median, best)",
            "CPU ms/frame loop / streamlib (overhead %)",
        ],
        [
            [
                f"MobileNetV2 {args.size}x{args.size}",
                f"{big['direct_ms']:.2f}",
                f"{big['streamlib_ms']:.2f}",
                f"{big['overhead_us']:.0f}",
                f"{big['overhead_pct']:.2f} ({big['overhead_pct_best']:.2f})",
                f"{big['direct_cpu_ms']:.1f} / {big['streamlib_cpu_ms']:.1f} ({big['overhead_cpu_pct']:.2f})",
            ],
            [
                "3x3 conv 64x64",
                f"{tiny['direct_ms']:.3f}",
                f"{tiny['streamlib_ms']:.3f}",
                f"{tiny['overhead_us']:.0f}",
                f"{tiny['overhead_pct']:.1f} ({tiny['overhead_pct_best']:.1f})",
                f"{tiny['direct_cpu_ms']:.3f} / {tiny['streamlib_cpu_ms']:.3f} ({tiny['overhead_cpu_pct']:.1f})",
            ],
        ],
    )

    session = open_session(model, providers)
    direct_loop(session, frames[:8], batch=8)
    sizes = (1, 4, 8)
    actor_fps: dict[int, list[float]] = {b: [] for b in sizes}
    loop_fps: dict[int, list[float]] = {b: [] for b in sizes}
    seen: dict[int, Any] = {}
    for rep in range(args.reps):
        for b in sizes if rep % 2 == 0 else sizes[::-1]:
            took, stats = await through_actor(model, frames, b, providers)
            actor_fps[b].append(len(frames) / took.wall)
            seen[b] = stats["batches"]
            loop_fps[b].append(len(frames) / (await asyncio.to_thread(direct_loop, session, frames, b)).wall)
    rows = []
    for b in sizes:
        results[f"fps_batch{b}"] = statistics.median(actor_fps[b])
        results[f"fps_loop_batch{b}"] = statistics.median(loop_fps[b])
        label = "InferenceActor batch=1" if b == 1 else f"InferenceActor batch={b} (dynamic; ran {seen[b]})"
        rows.append([label, f"{results[f'fps_batch{b}']:.2f}", ", ".join(f"{v:.2f}" for v in actor_fps[b])])
        rows.append(
            [
                f"plain loop, batches of {b}",
                f"{results[f'fps_loop_batch{b}']:.2f}",
                ", ".join(f"{v:.2f}" for v in loop_fps[b]),
            ]
        )
    print_table(
        f"Throughput, MobileNetV2 {args.size}x{args.size}, frames waiting (lossless source faster than the model)",
        ["configuration", "frames/s (median)", "runs"],
        rows,
    )

    if args.seconds > 0:
        pictures = [f.data for f in frames[:6]]
        rows = []
        for batch, bound in ((1, None), (8, None), (8, args.bound)):
            r = await realtime(model, pictures, args.fps, args.seconds, batch, providers, bound)
            label = f"batch={batch}" + (f", max_latency={bound:g} s" if bound else "")
            results[f"realtime_fps_batch{batch}" + ("_bounded" if bound else "")] = r["fps"]
            rows.append(
                [
                    label,
                    f"{r['fps']:.2f}",
                    f"{r['ran']}/{r['sent']}",
                    f"{r['p50'] * 1e3:.0f}",
                    f"{r['p95'] * 1e3:.0f}",
                    str(r["batches"]),
                ]
            )
        print_table(
            f"Realtime: {args.fps:g} fps source of {args.size}x{args.size} frames for {args.seconds:g} s "
            "(mailboxes drop the oldest)",
            ["actor", "frames run per source second", "run/sent", "latency p50 ms", "p95 ms", "batches by size"],
            rows,
        )
    for target in TARGETS:
        value = results[target.key]
        verdict = "PASS" if target.passed(value) else "FAIL"
        print(f"RESULT {verdict}: {target.description}: {value:.2f}{target.unit} (target {target.goal()})")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640, help="input width and height")
    parser.add_argument("--frames", type=int, default=24, help="frames per timed run")
    parser.add_argument("--tiny-frames", type=int, default=1000, help="frames per timed run of the tiny model")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per side (median reported)")
    parser.add_argument("--seconds", type=float, default=5.0, help="realtime scenario length (0: skip)")
    parser.add_argument("--fps", type=float, default=30.0, help="realtime source rate")
    parser.add_argument("--bound", type=float, default=1.5, help="max_latency of the bounded realtime actor (s)")
    parser.add_argument("--providers", default="", help="comma-separated, e.g. cuda (default: best available)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.tiny_frames, args.reps, args.seconds = 8, 200, 1, 3.0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
