"""Object detection on a video, with the boxes drawn on the very frame they were found in.

::

    TestPattern (moving box) ──> InferenceActor (ONNX model) ──Detections──> DetectionOverlay ──> FileSink
                 └────────────────────────────video──────────────────────────────┘

The model is built here with ``onnx.helper`` (no download): a tiny "detector" whose box is
the bounding box of the bright pixels of a 160x90 grey image. Pass ``--model yolo.onnx``
with your own ``--postprocess`` wiring to run a real one, and ``--input clip.mp4`` to read a
file instead of the test pattern. Headless; writes ``detections.mp4`` to ``--out``.

Run: ``python examples/inference_overlay.py [--seconds 2] [--input FILE] [--out DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from streamlib.actors.files import FileSink, FileSource
from streamlib.actors.inference import DetectionOutputs, InferenceActor
from streamlib.actors.overlay import DetectionOverlay
from streamlib.actors.video import TestPattern

MODEL_SIZE = (160, 90)  # width, height of the model input


def bright_box_detector(width: int, height: int) -> bytes:
    """Grey [N, 1, H, W] in 0..1 -> boxes [N, 1, 4] around the pixels > 0.5, scores, labels."""
    n = helper.make_node
    nodes = [
        n("Greater", ["images", "half"], ["bright"]),
        n("Cast", ["bright"], ["mask"], to=TensorProto.FLOAT),
        n("ReduceMax", ["mask"], ["rows"], axes=[1, 3], keepdims=0),
        n("ReduceMax", ["mask"], ["cols"], axes=[1, 2], keepdims=0),
        n("ArgMax", ["cols"], ["x1"], axis=1, keepdims=1),
        n("ArgMax", ["rows"], ["y1"], axis=1, keepdims=1),
        n("ArgMax", ["cols"], ["xl"], axis=1, keepdims=1, select_last_index=1),
        n("ArgMax", ["rows"], ["yl"], axis=1, keepdims=1, select_last_index=1),
        n("Add", ["xl", "one"], ["x2"]),
        n("Add", ["yl", "one"], ["y2"]),
        n("Concat", ["x1", "y1", "x2", "y2"], ["corners"], axis=1),
        n("Cast", ["corners"], ["flat"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["flat", "axis1"], ["boxes"]),
        n("ReduceMax", ["mask"], ["scores"], axes=[2, 3], keepdims=0),
        n("Mul", ["scores", "zero"], ["nothing"]),
        n("Cast", ["nothing"], ["labels"], to=TensorProto.INT64),
    ]
    constants = {"half": np.float32(0.5), "one": np.int64(1), "axis1": np.array([1]), "zero": np.float32(0)}
    graph = helper.make_graph(
        nodes,
        "bright-box",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, height, width])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 1, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", 1]),
        ],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return bytes(model.SerializeToString())


async def main(seconds: float, source_file: Path | None, out: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # shows which provider runs the model
    if source_file is not None:
        source = FileSource(source_file, audio=False)
    else:
        source = TestPattern("moving_box", 640, 360, 30, frames=round(seconds * 30))
    detector = InferenceActor(
        bright_box_detector(*MODEL_SIZE),
        postprocess=DetectionOutputs(threshold=0.5, input_size=MODEL_SIZE),  # boxes back in frame pixels
        batch=4,
    )
    overlay = DetectionOverlay(names=["box"])
    sink = FileSink(out / "detections.mp4")
    source >> detector >> overlay  # Detections -> overlay.inputs['detections']
    source >> overlay >> sink  # the frames themselves -> overlay.inputs['video']
    await sink.join()  # the sink ends after the source's end of stream has passed through
    stats = detector.stats()["inference"]
    print(
        f"ran the model on {stats['frames']} frames ({stats['provider']}, batches by size {stats['batches']}); "
        f"drew boxes on {overlay.drawn} frames, {overlay.unmatched} without detections"
    )
    print(f"wrote {out / 'detections.mp4'} ({sink.frames_written} frames)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the test pattern")
    parser.add_argument("--input", type=Path, default=None, help="a video file to read instead")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a new temporary one)")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.input, args.out or Path(tempfile.mkdtemp(prefix="streamlib-inference-"))))
