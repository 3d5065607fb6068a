"""InferenceActor and DetectionOverlay on ONNX Runtime, with models built here by ``onnx.helper``
(no downloads): a convolution checked exactly against numpy, a "detector" whose box is the
bounding box of the bright pixels, a model whose run costs the same for any batch (batching
keeps up) and one whose batches cost more per frame (batching must stop), bad inputs, provider
fallback and the process dispatcher."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="inference needs onnxruntime: pip install 'streamlib[ml]'")
onnx = pytest.importorskip("onnx", reason="the test models are built with onnx: pip install 'streamlib[ml]'")
import onnxruntime as ort  # noqa: E402
from conftest import eventually  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from streamlib import (  # noqa: E402
    Actor,
    ActorInitError,
    DataMessage,
    LifecycleState,
    ProcessPoolDispatcher,
    StreamInput,
    StreamOutput,
    TimedTick,
    VideoFrame,
)
from streamlib.actors.inference import (  # noqa: E402
    DetectionOutputs,
    Detections,
    ImagePreprocess,
    InferenceActor,
    InferenceInputError,
    ProviderWarning,
)
from streamlib.actors.overlay import PALETTE, DetectionOverlay, draw_detections  # noqa: E402
from streamlib.testing import Feeder, Probe  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]
rng = np.random.default_rng(16)


def finish(graph: Any) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 9  # what every onnxruntime since 1.15 reads
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


# -- models ------------------------------------------------------------------------------

WEIGHTS = rng.integers(-2, 3, (2, 3, 3, 3)).astype(np.float32)
BIAS = np.array([1.0, -3.0], np.float32)


def conv_model(batch: str | int = "N", size: int = 8) -> bytes:
    """A 3x3 convolution, 3 -> 2 channels, padding 1, with small integer weights: on integer
    pixels every sum is exact in float32, so the result must equal numpy's exactly."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2, size, size])
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    inits = [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")]
    return finish(helper.make_graph([node], "conv", [x], [y], inits))


def conv_reference(rgb: np.ndarray) -> np.ndarray:
    """The same convolution in numpy, on an (H, W, 3) uint8 image; returns (2, H, W)."""
    chw = np.pad(rgb.transpose(2, 0, 1).astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    h, w = rgb.shape[:2]
    out = np.zeros((2, h, w))
    for o in range(2):
        for c in range(3):
            for dy in range(3):
                for dx in range(3):
                    out[o] += WEIGHTS[o, c, dy, dx] * chw[c, dy : dy + h, dx : dx + w]
        out[o] += BIAS[o]
    return out.astype(np.float32)


def detector_model(width: int, height: int) -> bytes:
    """Grey [N, 1, H, W] in 0..1 -> the bounding box of pixels > 0.5 (boxes [N, 1, 4], x2/y2
    exclusive), scores [N, 1] (1 if any pixel is bright) and labels [N, 1] (0)."""
    nodes = [
        helper.make_node("Greater", ["images", "half"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["mask"], ["rows"], axes=[1, 3], keepdims=0),  # [N, H]
        helper.make_node("ReduceMax", ["mask"], ["cols"], axes=[1, 2], keepdims=0),  # [N, W]
        helper.make_node("ArgMax", ["cols"], ["x1"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["rows"], ["y1"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["cols"], ["xl"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("ArgMax", ["rows"], ["yl"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("Add", ["xl", "one"], ["x2"]),
        helper.make_node("Add", ["yl", "one"], ["y2"]),
        helper.make_node("Concat", ["x1", "y1", "x2", "y2"], ["corners"], axis=1),
        helper.make_node("Cast", ["corners"], ["flat"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["flat", "axis1"], ["boxes"]),
        helper.make_node("ReduceMax", ["mask"], ["scores"], axes=[2, 3], keepdims=0),  # [N, 1]
        helper.make_node("Mul", ["scores", "zero"], ["nothing"]),
        helper.make_node("Cast", ["nothing"], ["labels"], to=TensorProto.INT64),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "bright-box",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, height, width])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 1, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", 1]),
        ],
        inits,
    )
    return finish(graph)


def fixed_cost_model(matmuls: int, size: int = 384) -> bytes:
    """[N, 1, 8, 8] -> the same, after a chain of ``matmuls`` size x size products that depends
    on the input (so it is not folded away) but not on N: a batch costs what one frame costs."""
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["w", "z"], ["a0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"a{i}", "w"], [f"a{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"a{matmuls}"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["x", "s0"], ["y"]),
    ]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph = helper.make_graph(
        nodes,
        "fixed-cost",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        inits,
    )
    return finish(graph)


def superlinear_model(matmuls: int, size: int = 256) -> bytes:
    """[N, 1, 8, 8] -> the same, after work that grows with N squared: a Scan over the frames
    whose body multiplies an (N * size, size) matrix ``matmuls`` times. A batch of N costs N
    times more per frame than a frame alone (as a large model that thrashes a CPU's caches
    does): batching never pays."""
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body_nodes = [
        helper.make_node("ReduceMean", ["xi"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Tile", ["w", "reps"], ["tiled"]),
        helper.make_node("Add", ["tiled", "z"], ["a0"]),
    ]
    for i in range(matmuls):
        body_nodes.append(helper.make_node("MatMul", [f"a{i}", "w"], [f"a{i + 1}"]))
    body_nodes += [
        helper.make_node("ReduceSum", [f"a{matmuls}"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["xi", "s0"], ["yi"]),
    ]
    body = helper.make_graph(
        body_nodes,
        "one-frame",
        [helper.make_tensor_value_info("xi", TensorProto.FLOAT, [1, 8, 8])],
        [helper.make_tensor_value_info("yi", TensorProto.FLOAT, [1, 8, 8])],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "stop"], ["n"]),
        helper.make_node("Concat", ["n", "one"], ["reps"], axis=0),
        helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1),
    ]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "stop"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "superlinear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])],
        inits,
    )
    return finish(graph)


def vector_model() -> bytes:
    """A non-image model: [N, 10] -> [N, 10]."""
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    return finish(graph)


# -- helpers -----------------------------------------------------------------------------


def frame(data: np.ndarray, n: int = 0, clock: str = "cam", ts: float | None = None) -> VideoFrame:
    return VideoFrame(data, 100.0 + n / 30 if ts is None else ts, n, clock, 30.0)


def square_at(n: int, width: int = 96, height: int = 64, side: int = 12) -> tuple[int, int, int, int]:
    """Where frame ``n`` of :class:`Squares` has its white square: x1, y1, x2, y2 (exclusive)."""
    x = (n * 9) % (width - side)
    y = (n * 5) % (height - side)
    return x, y, x + side, y + side


class Squares(Actor):
    """A source on its own clock: dark grey frames with a white square that jumps every frame."""

    def __init__(self, fps: float, frames: int, width: int = 96, height: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        self._fps, self.frames, self.size = fps, frames, (width, height)
        self.sent = 0
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    @property
    def default_fps(self) -> float:  # type: ignore[override]
        return self._fps

    async def process(self, tick: TimedTick) -> None:
        width, height = self.size
        img = np.full((height, width, 3), 40, np.uint8)
        x1, y1, x2, y2 = square_at(tick.frame_number, width, height)
        img[y1:y2, x1:x2] = 255
        await self.outputs["video"].send(VideoFrame.at(tick, data=img))
        self.sent += 1
        if self.sent >= self.frames:
            self.stop()


class Stamp(Actor):
    """Records when each message arrives (for latency: arrival - frame timestamp)."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=1000)
        self.latencies: list[float] = []
        self.numbers: list[int] = []

    async def process(self, tick: TimedTick) -> None:
        while (message := self.inputs["in"].read_nowait()) is not None:
            self.latencies.append(time.monotonic() - message.timestamp)
            self.numbers.append(message.frame_number)


async def infer(
    actor: InferenceActor, frames: list[VideoFrame], port: str = "tensors", expect: int | None = None
) -> list[Any]:
    feed, probe = Feeder(VideoFrame), Probe()
    feed >> actor.inputs["video"]
    actor.outputs[port] >> probe
    for f in frames:
        await feed.send(f)
    await probe.wait_for(len(frames) if expect is None else expect, timeout=20)
    await feed.end()
    await asyncio.wait_for(actor.join(), 10)
    return probe.messages


def missing_provider() -> str | None:
    available = set(ort.get_available_providers())
    for name in ("CoreMLExecutionProvider", "DmlExecutionProvider", "ROCMExecutionProvider", "CUDAExecutionProvider"):
        if name not in available and name in ort.get_all_providers():
            return name
    return None


# -- exact results -----------------------------------------------------------------------


async def test_convolution_matches_numpy_exactly_with_batches_and_metadata() -> None:
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(10)]
    frames = [frame(img, n) for n, img in enumerate(images)]
    actor = InferenceActor(conv_model(), preprocess=ImagePreprocess(scale=1.0), batch=4, overflow="block", threads=1)
    results = await infer(actor, frames)
    assert [m.frame_number for m in results] == list(range(10))
    for message, f, img in zip(results, frames, images, strict=True):
        assert (message.timestamp, message.clock_source_id, message.clock_rate) == (f.timestamp, "cam", 30.0)
        assert message.data["y"].shape == (2, 8, 8)
        np.testing.assert_array_equal(message.data["y"], conv_reference(img))
    inference = actor.stats()["inference"]
    assert inference["frames"] == 10 and inference["provider"] == "CPUExecutionProvider"
    assert sum(size * count for size, count in inference["batches"].items()) == 10


async def test_default_preprocess_resizes_scales_normalizes_and_lays_out() -> None:
    """NHWC float model of 4x4 with mean/std: the sample is exactly what the numpy recipe gives."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, 3])
    model = finish(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y]))
    img = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)  # RGBA, twice the model's size
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    actor = InferenceActor(model, preprocess=ImagePreprocess(mean=mean, std=std, interpolation="nearest"))
    assert actor.transform is not None and actor.transform.layout == "NHWC"  # read from the model at construction
    (message,) = await infer(actor, [frame(img)])
    expected = (img[::2, ::2, :3].astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(message.data["y"], expected, rtol=1e-6, atol=1e-6)


async def test_subclass_hooks_and_detections_keep_frame_metadata() -> None:
    class BrightBox(InferenceActor):
        def postprocess(self, outputs: dict[str, np.ndarray], frame: VideoFrame) -> Detections:
            return Detections(outputs["boxes"], outputs["scores"], outputs["labels"])

    width, height = 96, 64
    frames = []
    for n in range(6):
        img = np.full((height, width, 3), 40, np.uint8)
        x1, y1, x2, y2 = square_at(n)
        img[y1:y2, x1:x2] = 255
        frames.append(frame(img, n))
    actor = BrightBox(detector_model(width, height), batch=3, overflow="block")
    results = await infer(actor, frames, port="detections")
    for n, det in enumerate(results):
        assert isinstance(det, Detections) and len(det) == 1
        assert (det.frame_number, det.timestamp, det.source, det.frame_size) == (
            n,
            frames[n].timestamp,
            "video",
            (width, height),
        )
        np.testing.assert_array_equal(det.boxes[0], np.float32(square_at(n)))


async def test_detection_outputs_scale_from_the_model_input_and_serve_several_cameras() -> None:
    """Frames of 192x128 resized to a 96x64 detector; two inputs in one actor, each camera's
    boxes in its own frame's pixels."""
    post = DetectionOutputs(threshold=0.5, input_size=(96, 64))
    actor = InferenceActor(
        detector_model(96, 64), postprocess=post, inputs=("left", "right"), batch=4, overflow="block"
    )
    feeds = {name: Feeder(VideoFrame, name=f"feed-{name}") for name in ("left", "right")}
    probe = Probe(Detections)
    for name, feed in feeds.items():
        feed >> actor.inputs[name]
    actor >> probe
    expected = {}
    for n in range(4):
        for k, name in enumerate(("left", "right")):
            img = np.zeros((128, 192, 3), np.uint8)
            x1, y1, x2, y2 = square_at(n + 7 * k)
            img[2 * y1 : 2 * y2, 2 * x1 : 2 * x2] = 255
            expected[(name, n)] = np.float32([2 * x1, 2 * y1, 2 * x2, 2 * y2])
            await feeds[name].send(frame(img, n, clock=name))
    results = await probe.wait_for(8, timeout=20)
    for det in results:
        assert det.clock_source_id == det.source
        np.testing.assert_array_equal(det.boxes[0], expected[(det.source, det.frame_number)])
    assert {(d.source, d.frame_number) for d in results} == set(expected)
    for feed in feeds.values():
        await feed.end()
    await asyncio.wait_for(actor.join(), 10)


# -- dynamic batching --------------------------------------------------------------------


async def test_frames_that_wait_run_as_batches() -> None:
    """24 frames queued at once on a model whose run costs the same for 1 or 8 frames: after
    three single runs (the measure batches are judged against) they go 8 at a time, in order,
    each result exactly its own frame's."""
    actor = InferenceActor(
        fixed_cost_model(4),
        preprocess=lambda f: f.data[None, :, :, 0].astype(np.float32),
        batch=8,
        maxsize=24,
        threads=1,
    )
    feed, probe = Feeder(VideoFrame), Probe(DataMessage)
    feed >> actor
    actor.outputs["tensors"] >> probe
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(24)]
    await feed.send(*(frame(img, n) for n, img in enumerate(images)))
    results = await probe.wait_for(24, timeout=30)
    assert [m.frame_number for m in results] == list(range(24))
    for message, img in zip(results, images, strict=True):
        np.testing.assert_array_equal(message.data["y"][0], img[:, :, 0].astype(np.float32))
    batches = actor.stats()["inference"]["batches"]
    assert batches.get(1, 0) >= 3 and sum(batches.values()) <= 8 and max(batches) == 8, batches
    await feed.end()


async def test_fast_source_into_slow_model_keeps_up_within_latency_bound() -> None:
    """A 120 fps source into a model of ~25 ms per run (several times that under load): one
    frame per run could not keep up; batches do, and results come within ``max_latency``."""
    bound = 1.0
    source = Squares(120.0, 180, width=8, height=8)
    actor = InferenceActor(
        fixed_cost_model(20),
        preprocess=lambda f: f.data[None, :, :, 0].astype(np.float32),
        batch=32,
        max_latency=bound,
        threads=1,
    )
    stamp = Stamp()
    source >> actor
    actor.outputs["tensors"] >> stamp
    await asyncio.wait_for(stamp.join(), 30)
    stats = actor.stats()["inference"]
    assert stats["frames"] >= 0.8 * source.sent, (stats, source.sent)
    assert max(stats["batches"]) > 1, stats
    assert stamp.numbers == sorted(stamp.numbers)  # results in frame order
    # The bound is kept on estimated run times: a run that a load spike slows past its
    # estimate can overshoot, so the tail is checked at the 95th percentile.
    latencies = sorted(stamp.latencies)
    assert latencies[int(0.95 * (len(latencies) - 1))] <= bound, (latencies[-10:], stats)


async def test_batches_that_do_not_pay_are_not_used_and_waiting_frames_do_not_age() -> None:
    """A model whose batches cost more per frame than single frames (as a large model on a CPU
    can), fed bursts of 4 frames: once the actor has measured that, it runs the newest frame
    of each burst alone and drops the older ones, as a shallower mailbox would, rather than
    make every frame wait for a batch."""
    actor = InferenceActor(
        superlinear_model(20),
        preprocess=lambda f: f.data[None, :, :, 0].astype(np.float32),
        batch=4,
        threads=1,
    )
    feed, probe = Feeder(VideoFrame), Probe(DataMessage)
    feed >> actor
    actor.outputs["tensors"] >> probe
    img = np.zeros((8, 8, 3), np.uint8)
    for burst in range(7):
        frames = [frame(img, 4 * burst + k) for k in range(4)]
        await feed.send(*frames)
        newest = frames[-1].frame_number
        await eventually(lambda n=newest: bool(probe.messages) and probe.messages[-1].frame_number == n, timeout=30)
    stats = actor.stats()["inference"]
    last_two = [m.frame_number for m in probe.messages[-2:]]
    assert last_two == [23, 27], ([m.frame_number for m in probe.messages], stats)  # the newest of each burst
    assert stats["superseded"] >= 6 and stats["batches"].get(4, 0) <= 4, stats
    await feed.end()


async def test_batch_of_one_when_keeping_up() -> None:
    source = Squares(30.0, 12, width=8, height=8)
    actor = InferenceActor(conv_model(), batch=8, threads=1)
    probe = Probe(DataMessage)
    source >> actor
    actor.outputs["tensors"] >> probe
    await asyncio.wait_for(actor.join(), 10)
    batches = actor.stats()["inference"]["batches"]
    assert sum(size * count for size, count in batches.items()) == 12
    assert batches.get(1, 0) >= 0.75 * sum(batches.values()), batches  # nothing waits, nothing is held back


async def test_max_latency_drops_frames_that_cannot_make_it(caplog: pytest.LogCaptureFixture) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    old = VideoFrame(img, time.monotonic() - 5.0, 0, "cam", 30.0)  # already 5 s old
    fresh = VideoFrame(img, time.monotonic() + 0.5, 1, "cam", 30.0)
    actor = InferenceActor(conv_model(), max_latency=1.0, overflow="block")
    with caplog.at_level(logging.WARNING, "streamlib.inference"):
        (result,) = await infer(actor, [old, fresh], expect=1)
    assert result.frame_number == 1 and actor.late == 1
    assert "max_latency=1.000" in caplog.text


# -- overlay -----------------------------------------------------------------------------


async def test_overlay_draws_each_frames_own_boxes() -> None:
    """The square jumps every frame and inference lags the video: a box drawn from another
    frame's detections would land elsewhere. Every drawn frame's box outline must be exactly
    its own square's border (the one-pixel outline replaces the square's edge pixels)."""
    source = Squares(30.0, 24)
    detector = InferenceActor(detector_model(96, 64), postprocess=DetectionOutputs(threshold=0.5), batch=4)
    overlay = DetectionOverlay(labels=False, thickness=1, max_delay=2.0)
    probe = Probe(VideoFrame)
    source >> detector >> overlay
    source >> overlay
    overlay >> probe
    await asyncio.wait_for(overlay.join(), 20)
    frames = probe.messages
    assert len(frames) >= 20 and overlay.drawn >= 20, (len(frames), overlay.drawn, overlay.unmatched)
    red = np.array(PALETTE[0], np.uint8)
    for out in frames:
        is_red = np.all(out.data == red, axis=2)
        if not is_red.any():
            continue  # passed undrawn (its detections were dropped)
        x1, y1, x2, y2 = square_at(out.frame_number)
        ys, xs = np.nonzero(is_red)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2), out.frame_number
        border = np.zeros_like(is_red)
        border[y1:y2, x1:x2] = True
        border[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] = False
        assert np.array_equal(is_red, border), out.frame_number
        assert np.all(out.data[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == 255)  # the inside is untouched
    assert sum(np.all(f.data == red, axis=2).any() for f in frames) == overlay.drawn


async def test_overlay_passes_a_frame_whose_detections_never_come() -> None:
    video, dets, probe = Feeder(VideoFrame), Feeder(Detections), Probe(VideoFrame)
    overlay = DetectionOverlay(labels=False, thickness=1, max_delay=5.0)
    video >> overlay.inputs["video"]
    dets >> overlay.inputs["detections"]
    overlay >> probe
    img = np.zeros((20, 20, 3), np.uint8)
    f0, f1 = frame(img, 0), frame(img, 1)
    await video.send(f0, f1)
    # Frame 1's detections come; frame 0's never will: it is passed at once, not after max_delay.
    started = time.monotonic()
    await dets.send(Detections([[2, 2, 8, 8]], timestamp=f1.timestamp, frame_number=1, clock_source_id="cam"))
    out0, out1 = await probe.wait_for(2)
    assert time.monotonic() - started < 4.0
    assert out0.data is f0.data and overlay.unmatched == 1  # passed as it came
    assert out1.frame_number == 1 and (out1.data[2, 2] == PALETTE[0]).all() and not img.any()
    await video.end()
    await dets.end()


def test_draw_detections_scales_boxes_masks_and_keypoints_to_the_frame() -> None:
    """Detections made on a 40x20 frame drawn on its 80x40 version: everything doubles."""
    mask = np.zeros((1, 20, 40), np.float32)
    mask[0, 10:20, 20:40] = 1.0  # bottom-right quarter
    dets = Detections(
        [[2, 1, 12, 6]], [0.9], [1], masks=mask, keypoints=[[[30, 5, 1.0], [35, 5, 0.1]]], frame_size=(40, 20)
    )
    img = np.zeros((40, 80, 3), np.uint8)
    draw_detections(img, dets, thickness=1, labels=False, mask_alpha=0.5)
    green = np.array(PALETTE[1], np.uint8)
    is_green = np.all(img == green, axis=2)
    assert is_green[2, 4:24].all() and is_green[11, 4:24].all() and is_green[2:12, 4].all() and is_green[2:12, 23].all()
    assert not is_green[3:11, 5:23].any()  # the outline only
    tinted = img[20:40, 40:80]
    assert (tinted == (green // 2)).all(axis=2).mean() > 0.95  # the mask, half blended over black
    assert is_green[10, 60] and not is_green[10, 70]  # the confident keypoint only (at 2x)


def pretrained_text_detector() -> Path | None:
    """PP-OCRv4's text detector (DBNet, 4.7 MB ONNX), as the rapidocr-onnxruntime wheel ships it."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "models" / "ch_PP-OCRv4_det_infer.onnx"
    return path if path.is_file() else None


def text_boxes(outputs: dict[str, np.ndarray], frame: VideoFrame) -> Detections:
    """DBNet's postprocessing, reduced to rectangles: threshold the text probability map, take
    each region's bounding box and grow it back by the shrink the model was trained with."""
    probability = outputs["sigmoid_0.tmp_0"][0]
    count, _, stats, _ = cv2.connectedComponentsWithStats((probability > 0.3).astype(np.uint8))
    boxes, scores = [], []
    for x, y, w, h, area in stats[1:count]:
        if area < 20:
            continue
        grow = w * h * 1.6 / (2 * (w + h))  # DB's unclip: area * ratio / perimeter
        boxes.append([x - grow, y - grow, x + w + grow, y + h + grow])
        scores.append(float(probability[y : y + h, x : x + w].mean()))
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), scores)


async def test_a_real_pretrained_detector_finds_the_text_drawn_on_the_frame() -> None:
    """End to end with a real model trained by others (no download: it comes in a wheel)."""
    model = pretrained_text_detector()
    if model is None:
        pytest.skip("no pretrained detector installed: pip install rapidocr-onnxruntime (ships PP-OCRv4 det)")
    img = np.full((160, 640, 3), 255, np.uint8)
    text, scale, stroke = "STREAMLIB 16", 2.0, 4
    cv2.putText(img, text, (40, 100), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), stroke)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)
    drawn = np.array([40, 100 - th, 40 + tw, 100 + base], np.float32)
    actor = InferenceActor(
        model, preprocess=ImagePreprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), postprocess=text_boxes
    )
    (found,) = await infer(actor, [frame(img)], port="detections")
    assert len(found) == 1, found.boxes
    box = found.boxes[0]
    inter = np.prod(np.clip(np.minimum(box[2:], drawn[2:]) - np.maximum(box[:2], drawn[:2]), 0, None))
    union = np.prod(box[2:] - box[:2]) + np.prod(drawn[2:] - drawn[:2]) - inter
    assert inter / union > 0.6, (box, drawn)


# -- bad input, providers, dispatchers ---------------------------------------------------


async def test_model_that_cannot_take_images_fails_at_construction() -> None:
    with pytest.raises(ActorInitError, match=r"/vector_net: .*model input 'x' \[N, 10\] tensor\(float\)") as info:
        InferenceActor(vector_model(), name="vector_net")
    assert isinstance(info.value.__cause__, InferenceInputError)
    with pytest.raises(ActorInitError, match=r"size=\(16, 16\) .*fixes the width at 8"):
        InferenceActor(conv_model(), preprocess=ImagePreprocess(size=(16, 16)))
    with pytest.raises(ActorInitError, match=r"read as NHWC has 8 channels"):
        InferenceActor(conv_model(), preprocess=ImagePreprocess(layout="NHWC"))
    with pytest.raises(ActorInitError, match="cannot read the model"):
        InferenceActor(b"not an onnx model")


async def test_frames_that_do_not_fit_fail_at_the_first_frame_naming_everything() -> None:
    actor = InferenceActor(conv_model(), preprocess=lambda f: f.data, name="raw_pixels")
    feed = Feeder(VideoFrame)
    feed >> actor
    await feed.send(frame(np.zeros((48, 64, 3), np.uint8)))
    assert await asyncio.wait_for(actor.join(), 10) is LifecycleState.FAILED
    error = actor.failure
    assert isinstance(error, InferenceInputError)
    text = str(error)
    for part in ("/raw_pixels", "inputs['video']", "shape (48, 64, 3)", "'x' [N, 3, 8, 8] tensor(float)", "uint8"):
        assert part in text, (part, text)
    await feed.end()


async def test_missing_provider_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    missing = missing_provider()
    if missing is None:
        pytest.skip("every provider ONNX Runtime knows is available here")
    with pytest.warns(ProviderWarning, match=missing), caplog.at_level(logging.INFO, "streamlib.inference"):
        actor = InferenceActor(conv_model(), providers=[missing], preprocess=ImagePreprocess(scale=1.0))
        img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        (result,) = await infer(actor, [frame(img)])
    np.testing.assert_array_equal(result.data["y"], conv_reference(img))
    assert actor.provider == "CPUExecutionProvider"
    assert "running <model of" in caplog.text and "on CPUExecutionProvider" in caplog.text
    with pytest.raises(ActorInitError, match="unknown execution provider 'cudaa'"):
        InferenceActor(conv_model(), providers=["cudaa"])


async def test_runs_in_a_worker_process_with_its_own_session() -> None:
    dispatcher = ProcessPoolDispatcher(workers=1)
    actor = InferenceActor(
        conv_model(),
        preprocess=ImagePreprocess(scale=1.0),
        postprocess=lambda outputs, f: {"y": outputs["y"], "pid": os.getpid()},
        dispatcher=dispatcher,
        overflow="block",
    )
    await eventually(lambda: dispatcher.pid(actor) is not None, timeout=10)
    worker = dispatcher.pid(actor)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    results = await infer(actor, [frame(img, n) for n, img in enumerate(images)])
    for n, (message, img) in enumerate(zip(results, images, strict=True)):
        assert message.frame_number == n and message.data["pid"] == worker != os.getpid()
        np.testing.assert_array_equal(message.data["y"], conv_reference(img))
    assert actor.provider is None  # the parent never opened a session: the worker did
