"""Run a user's ONNX model on frames: :class:`InferenceActor`, its :class:`Detections` results.

::

    camera >> InferenceActor("yolo.onnx", postprocess=DetectionOutputs(threshold=0.5), batch=4) >> overlay

ONNX Runtime is the engine: the portable one (CPU everywhere; CUDA and TensorRT where the
installed build and the machine have them). With ``providers=None`` the actor picks the best
available provider (TensorRT, then CUDA, then CPU) and logs one line saying which one runs the
model; a requested provider this machine lacks falls back with a :class:`ProviderWarning`.

What a frame goes through:

1. ``preprocess(frame)`` turns a :class:`~streamlib.VideoFrame` into one sample (an array
   without the batch axis, or a dict ``{model input name: array}``). The default,
   :class:`ImagePreprocess`, resizes to the model's input size, converts RGB to what the
   model takes (RGB, BGR, grey), scales, subtracts ``mean``, divides by ``std`` and lays the
   pixels out as NCHW or NHWC, all read from the model's input shape and type.
2. Samples are stacked into a batch and run with ``session.run`` (ONNX Runtime releases the
   GIL, so the default thread dispatcher computes in parallel with the rest of the pipeline).
3. ``postprocess(outputs, frame)`` gets that frame's slice of every model output (``{name:
   array}``, batch axis removed) and returns a :class:`Detections` (sent on ``'detections'``),
   anything else (sent as a :class:`~streamlib.DataMessage` on ``'tensors'``), or ``None``
   (nothing sent). The default returns the outputs themselves. :class:`DetectionOutputs`
   maps a detector's outputs to :class:`Detections`.

Every result carries the clock metadata of the frame it was computed from (timestamp, frame
number, clock id, rate), so a downstream actor can match it to that frame: see
:class:`~streamlib.actors.overlay.DetectionOverlay`.

**Dynamic batching.** Frames that wait -- on one input, or on several (``inputs=("cam1",
"cam2")``) -- run as one batch of up to ``batch`` frames; an actor that keeps up runs each
frame alone as it comes, so batching never adds latency. ``max_latency`` (seconds, measured
from each frame's timestamp, which live sources stamp on ``time.monotonic()``) caps the batch
so that its estimated run time keeps the oldest frame within the bound, and drops frames
that can no longer make it (counted as ``late``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, DataMessage, Dispatcher, Message, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.mailbox import Overflow

from .buffer import own_thread

try:
    import onnxruntime as ort  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised only without onnxruntime
    raise ImportError(
        "streamlib.actors.inference needs ONNX Runtime: pip install onnxruntime (or streamlib[ml])"
    ) from exc

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised only without OpenCV
    raise ImportError(
        "streamlib.actors.inference needs OpenCV for its image preprocessing: pip install opencv-python"
    ) from exc

__all__ = [
    "DetectionOutputs",
    "Detections",
    "ImagePreprocess",
    "InferenceActor",
    "InferenceError",
    "InferenceInputError",
    "ProviderWarning",
    "TensorSpec",
    "choose_providers",
]

log = logging.getLogger("streamlib.inference")

ModelSource = str | os.PathLike[str] | bytes
Preprocess = Callable[[VideoFrame], "NDArray[Any] | Mapping[str, NDArray[Any]]"]
Postprocess = Callable[[dict[str, "NDArray[Any]"], VideoFrame], Any]

# ONNX Runtime's tensor type names -> numpy dtypes.
_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}

PROVIDER_ALIASES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
"""Short names accepted in ``providers=`` (full ONNX Runtime names work too)."""

AUTO_PROVIDERS: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
"""What ``providers=None`` tries, best first, among those this onnxruntime build has."""

_CPU = "CPUExecutionProvider"

BATCH_PAYS = 1.0
"""A batch size is used unless its fastest run costs more per frame than this times a single
frame's fastest run: a size that does not pay (a large model on a CPU) only makes frames wait."""

JUDGE_AFTER = 3
"""Runs of a batch size (and of single frames) before judging whether that size pays."""

RECHECK_SECONDS = 5.0
"""How long a batch size found not to pay stays unused before it is measured again."""


class ProviderWarning(UserWarning):
    """A requested execution provider is not available here: the model runs on the next one."""


class InferenceInputError(ValueError):
    """The frames (after preprocessing) do not fit the model's input: shape, layout or type."""


class InferenceError(RuntimeError):
    """The model, or the pre/postprocessing around it, failed on a batch of frames."""


# -- model signature ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: its name, shape (ints, symbolic names or ``None`` for
    dimensions the model leaves open) and ONNX Runtime type name (``'tensor(float)'``)."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The numpy dtype of this tensor, or ``None`` for types numpy cannot hold (strings...)."""
        return _DTYPES.get(self.type)

    def fixed(self, axis: int) -> int | None:
        """The size of ``axis`` if the model fixes it, else ``None``."""
        dim = self.shape[axis]
        return dim if isinstance(dim, int) and dim > 0 else None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} [{dims}] {self.type}"

    @classmethod
    def from_node(cls, node: Any) -> TensorSpec:
        """From an ``onnxruntime.NodeArg`` (``session.get_inputs()``)."""
        shape = tuple(d if isinstance(d, int | str) else None for d in (node.shape or ()))
        return cls(node.name, tuple(d if not (isinstance(d, int) and d <= 0) else None for d in shape), node.type)


def read_signature(model: bytes | Path) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """The model's inputs and outputs read with the ``onnx`` package (no session, no threads:
    safe before a worker process forks), or ``None`` where ``onnx`` is not installed."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx comes with streamlib[ml]
        return None
    if isinstance(model, Path):
        proto = onnx.load(str(model), load_external_data=False)
    else:
        proto = onnx.load_model_from_string(model)
    graph = proto.graph
    initialized = {init.name for init in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(tensor.elem_type).lower() if tensor.elem_type else "undefined"
        shape: tuple[int | str | None, ...] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in tensor.shape.dim
        )
        return TensorSpec(value.name, shape, f"tensor({elem})")

    inputs = [spec(v) for v in graph.input if v.name not in initialized]
    return inputs, [spec(v) for v in graph.output]


# -- providers ---------------------------------------------------------------------------


ProviderSpec = str | tuple[str, Mapping[str, Any]]


def choose_providers(requested: Sequence[ProviderSpec] | str | None, where: str = "") -> list[ProviderSpec]:
    """The execution providers to open a session with, best first.

    ``None``: every provider of :data:`AUTO_PROVIDERS` this onnxruntime build has. Otherwise
    the requested ones (short names such as ``"cuda"`` work; ``(name, options)`` pairs pass
    provider options) that are available; the rest are dropped with a :class:`ProviderWarning`.
    The CPU provider always ends the list, so a session can always be made. A name ONNX
    Runtime does not know at all is a mistake, not a missing device: :class:`ValueError`.
    """
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in AUTO_PROVIDERS if p in available] or [_CPU]
    if isinstance(requested, str):
        requested = [requested]
    known = set(ort.get_all_providers())
    chosen: list[ProviderSpec] = []
    missing: list[str] = []
    for item in requested:
        name, options = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in known:
            raise ValueError(
                f"{where}: unknown execution provider {name!r}; ONNX Runtime knows "
                f"{', '.join(sorted(known))} (or the short names {', '.join(sorted(PROVIDER_ALIASES))})"
            )
        if full not in available:
            missing.append(full)
        elif options is not None:
            chosen.append((full, dict(options)))
        else:
            chosen.append(full)
    if not any(_provider_name(p) == _CPU for p in chosen):
        chosen.append(_CPU)
    if missing:
        warnings.warn(
            f"{where}: execution provider {', '.join(missing)} is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); running on {_provider_name(chosen[0])} instead. "
            f"For CUDA/TensorRT install onnxruntime-gpu and the matching CUDA libraries.",
            ProviderWarning,
            stacklevel=4,
        )
    return chosen


def _provider_name(provider: ProviderSpec) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


# -- results -----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Detections(Message):
    """Objects found in one frame, stamped with that frame's clock metadata.

    ``boxes``: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels of a frame of ``frame_size``
    (``(width, height)``; the inference actor fills in the size of the frame it ran on).
    ``scores``: ``(N,)`` float32; ``labels``: ``(N,)`` int64 class indices. Optional
    ``masks``: ``(N, h, w)`` (any resolution; values > 0.5 are inside) and ``keypoints``:
    ``(N, K, 2)`` or ``(N, K, 3)`` (``x, y[, confidence]`` in the same pixels as the boxes).
    ``source`` names the inference actor's input the frame came in on (``'video'``, or a
    camera's input name when one actor serves several).
    """

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32] | None = None
    labels: NDArray[np.int64] | None = None
    masks: NDArray[Any] | None = None
    keypoints: NDArray[np.float32] | None = None
    frame_size: tuple[int, int] | None = None
    source: str | None = None
    timestamp: float = 0.0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"Detections.boxes must have shape (N, 4), got {boxes.shape}")
        n = boxes.shape[0]
        self.boxes = boxes
        self.scores = np.ones(n, np.float32) if self.scores is None else np.asarray(self.scores, np.float32).ravel()
        self.labels = np.zeros(n, np.int64) if self.labels is None else np.asarray(self.labels).astype(np.int64).ravel()
        for name in ("scores", "labels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Detections.{name} has {len(getattr(self, name))} entries for {n} boxes")
        for name in ("masks", "keypoints"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Detections.{name} has {len(value)} entries for {n} boxes")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class DetectionOutputs:
    """A ready ``postprocess`` for detectors: picks the model outputs named ``boxes``,
    ``scores``, ``labels`` (and optionally ``masks``, ``keypoints``), keeps scores >=
    ``threshold``, optionally suppresses overlaps (``nms_iou``, OpenCV's NMS) and returns
    :class:`Detections` in the frame's pixels.

    ``box_format``: ``'xyxy'`` (corners), ``'xywh'`` (corner and size) or ``'cxcywh'`` (centre
    and size). Coordinates are frame pixels, unless ``normalized=True`` (0..1 of the frame) or
    ``input_size=(width, height)`` (pixels of the model input, scaled to the frame: what a
    model fed by the default resizing preprocess gives). Outputs may carry a leading axis of 1.
    """

    boxes: str = "boxes"
    scores: str | None = "scores"
    labels: str | None = "labels"
    masks: str | None = None
    keypoints: str | None = None
    threshold: float = 0.0
    box_format: Literal["xyxy", "xywh", "cxcywh"] = "xyxy"
    normalized: bool = False
    input_size: tuple[int, int] | None = None
    nms_iou: float | None = None

    def __call__(self, outputs: dict[str, NDArray[Any]], frame: VideoFrame) -> Detections:
        def take(name: str | None) -> NDArray[Any] | None:
            if name is None:
                return None
            if name not in outputs:
                raise KeyError(f"DetectionOutputs: the model has no output {name!r} (outputs: {', '.join(outputs)})")
            return np.asarray(outputs[name])

        boxes = take(self.boxes)
        assert boxes is not None
        boxes = boxes.reshape(-1, 4).astype(np.float32)
        n = len(boxes)
        scores = take(self.scores)
        labels = take(self.labels)
        masks = take(self.masks)
        keypoints = take(self.keypoints)
        scores = np.ones(n, np.float32) if scores is None else scores.reshape(n).astype(np.float32)
        labels = np.zeros(n, np.int64) if labels is None else labels.reshape(n).astype(np.int64)
        if masks is not None:
            masks = masks.reshape(n, *masks.shape[-2:])
        if keypoints is not None:
            keypoints = keypoints.reshape(n, *keypoints.shape[-2:]).astype(np.float32)
        if self.box_format == "xywh":
            boxes[:, 2:] += boxes[:, :2]
        elif self.box_format == "cxcywh":
            half = boxes[:, 2:] / 2
            boxes = np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
        width, height = frame.width, frame.height
        sx, sy = 1.0, 1.0
        if self.normalized:
            sx, sy = float(width), float(height)
        elif self.input_size is not None:
            sx, sy = width / self.input_size[0], height / self.input_size[1]
        if (sx, sy) != (1.0, 1.0):
            boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
            if keypoints is not None:
                keypoints = keypoints.copy()
                keypoints[..., 0] *= sx
                keypoints[..., 1] *= sy
        keep = np.flatnonzero(scores >= self.threshold)
        if self.nms_iou is not None and len(keep):
            xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes[keep]]
            picked = cv2.dnn.NMSBoxes(xywh, scores[keep].tolist(), self.threshold, self.nms_iou)
            keep = keep[np.asarray(picked, np.int64).ravel()] if len(picked) else keep[:0]
        return Detections(
            boxes[keep],
            scores[keep],
            labels[keep],
            None if masks is None else masks[keep],
            None if keypoints is None else keypoints[keep],
            frame_size=(width, height),
        )


# -- preprocessing -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """The default preprocessing of image models, configured from the model's input.

    ``size``: ``(width, height)`` to resize to; by default the model's fixed input size, or
    the frame's own size for models that take any size. ``layout``: ``'NCHW'`` or ``'NHWC'``,
    by default read from where the model's channel axis (1, 3 or 4 channels) is. Float
    models get ``pixel * scale``, minus ``mean``, divided by ``std`` (per channel); integer
    models get the pixels as they are. ``channels``: ``'RGB'`` or ``'BGR'`` (OpenCV-trained
    models); a one-channel model gets grey. ``interpolation``: as for ``Resize``. Resizing
    stretches (no letterbox): boxes scale back per axis (see ``DetectionOutputs.input_size``).
    """

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    scale: float = 1 / 255
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    channels: Literal["RGB", "BGR"] = "RGB"
    interpolation: Literal["nearest", "linear", "cubic", "area", "lanczos"] = "linear"

    def bind(self, spec: TensorSpec, where: str) -> ImageTransform:
        """This configuration for the model input ``spec``; :class:`InferenceInputError`
        (naming ``where``, the actor) if an image cannot be fed to it."""
        hint = f"pass preprocess=<callable(frame) returning an array shaped like one sample of {spec.describe()}>"
        dtype = spec.dtype
        if dtype is None or dtype == np.bool_:
            raise InferenceInputError(
                f"{where}: model input {spec.describe()} is not a numeric tensor, so it cannot take images; {hint}"
            )
        if len(spec.shape) != 4:
            raise InferenceInputError(
                f"{where}: the default image preprocessing feeds 4-D image batches (NCHW or NHWC), but model "
                f"input {spec.describe()} has {len(spec.shape)} dimensions; {hint}"
            )
        layout = self.layout or _guess_layout(spec)
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"{where}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
        channels = spec.fixed(c_axis) or 3
        if channels not in (1, 3, 4):
            raise InferenceInputError(
                f"{where}: model input {spec.describe()} read as {layout} has {channels} channels; images "
                f"give 1 (grey), 3 (RGB/BGR) or 4 (RGBA). Pass layout='NCHW'/'NHWC' if the guess is wrong, or {hint}"
            )
        fixed = (spec.fixed(w_axis), spec.fixed(h_axis))
        size = self.size
        if size is not None:
            for axis, want, got in (("width", fixed[0], size[0]), ("height", fixed[1], size[1])):
                if want is not None and want != got:
                    raise InferenceInputError(
                        f"{where}: size={size} asks for images of {axis} {got}, but model input "
                        f"{spec.describe()} ({layout}) fixes the {axis} at {want}"
                    )
        elif fixed[0] is not None and fixed[1] is not None:
            size = (fixed[0], fixed[1])
        elif fixed[0] is not None or fixed[1] is not None:
            raise InferenceInputError(
                f"{where}: model input {spec.describe()} ({layout}) fixes only one of width and height; "
                f"pass ImagePreprocess(size=(width, height))"
            )
        return ImageTransform(self, spec, layout, channels, size, dtype)


def _guess_layout(spec: TensorSpec) -> Literal["NCHW", "NHWC"]:
    """Where the channel axis is: a 3 first, then a 1 or 4 where the other end has no such
    size; NCHW when unsure (most ONNX vision models are NCHW)."""
    first, last = spec.fixed(1), spec.fixed(3)
    if first == 3:
        return "NCHW"
    if last == 3:
        return "NHWC"
    if last in (1, 4) and first not in (1, 4):
        return "NHWC"
    return "NCHW"


_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


class ImageTransform:
    """An :class:`ImagePreprocess` bound to one model input: ``transform(frame)`` gives the
    frame's sample (no batch axis). Built by the actor; call it from a subclass's ``preprocess``
    through ``super().preprocess(frame)``."""

    def __init__(
        self,
        config: ImagePreprocess,
        spec: TensorSpec,
        layout: str,
        channels: int,
        size: tuple[int, int] | None,
        dtype: np.dtype[Any],
    ) -> None:
        self.config = config
        self.spec = spec
        self.layout = layout
        self.channels = channels
        self.size = size
        self.dtype = dtype
        self.is_float = np.issubdtype(dtype, np.floating)
        self._interpolation = _INTERPOLATIONS[config.interpolation]
        self._mean = None if config.mean is None else np.asarray(config.mean, np.float32)
        self._inv_std = None if config.std is None else (1.0 / np.asarray(config.std, np.float32))

    def __call__(self, frame: VideoFrame) -> NDArray[Any]:
        if frame.is_gpu():
            raise InferenceInputError(
                f"frame {frame.frame_number} is a GPU frame; the default preprocessing takes numpy frames "
                f"(put a Download actor before the inference, or pass your own preprocess)"
            )
        pixels: NDArray[Any] = np.asarray(frame.data)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
            raise InferenceInputError(
                f"frame {frame.frame_number} has shape {pixels.shape}; the default preprocessing takes (H, W), "
                f"(H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA frames"
            )
        have = pixels.shape[2]
        want = self.channels
        if want == 1 and have != 1:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY if have == 3 else cv2.COLOR_RGBA2GRAY)
        elif want == 3:
            if have == 4:
                pixels = pixels[..., :3]
            elif have == 1:
                pixels = np.repeat(pixels, 3, axis=2)
            if self.config.channels == "BGR":
                pixels = pixels[..., ::-1]
        elif want == 4 and have != 4:
            pixels = cv2.cvtColor(
                np.ascontiguousarray(pixels), cv2.COLOR_RGB2RGBA if have == 3 else cv2.COLOR_GRAY2RGBA
            )
        size = self.size
        if size is not None and (pixels.shape[1], pixels.shape[0]) != size:
            pixels = cv2.resize(np.ascontiguousarray(pixels), size, interpolation=self._interpolation)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if self.is_float:
            sample = pixels.astype(np.float32)
            if self.config.scale != 1.0:
                sample *= np.float32(self.config.scale)
            if self._mean is not None:
                sample -= self._mean
            if self._inv_std is not None:
                sample *= self._inv_std
            if self.dtype != np.float32:
                sample = sample.astype(self.dtype)
        else:
            sample = pixels.astype(self.dtype, copy=False)
        if self.layout == "NCHW":
            sample = sample.transpose(2, 0, 1)
        return np.ascontiguousarray(sample)

    def __repr__(self) -> str:
        return (
            f"<ImageTransform {self.layout} {self.channels}ch size={self.size} {self.dtype} for {self.spec.describe()}>"
        )


# -- the actor ---------------------------------------------------------------------------


class InferenceActor(Actor):
    """Runs an ONNX model on the frames of its input(s), batching frames that wait (docs/inference.md).

    ``model``: an ``.onnx`` path, the model's bytes (or an ``onnx.ModelProto``).
    ``preprocess``: a callable ``(frame) -> sample`` or an :class:`ImagePreprocess` (the
    default, configured from the model); ``postprocess``: a callable ``(outputs, frame) ->
    result`` (default: the outputs dict). A subclass may override the ``preprocess`` and
    ``postprocess`` methods instead. ``providers``: ``None`` (best available), or names such as
    ``["cuda", "cpu"]``. ``batch``: the most frames run at once (models with a fixed batch of
    1 run one at a time). ``max_latency``: seconds from a frame's timestamp to its result
    (``None``: no bound). ``inputs``: names of the video inputs (one per camera).
    ``threads``: ONNX Runtime's intra-op threads (default: its own choice); ``session_options``:
    an ``onnxruntime.SessionOptions`` to start from.

    Ports: inputs (``'video'`` by default) of :class:`~streamlib.VideoFrame`, each holding
    ``maxsize`` frames (default ``max(2, batch)``) with the given ``overflow``; outputs
    ``'detections'`` (:class:`Detections`) and ``'tensors'`` (:class:`~streamlib.DataMessage`
    whose ``data`` is what ``postprocess`` returned). The session is created in ``on_start``,
    where the dispatcher runs it: on the actor's own worker thread by default, in the worker
    process with ``dispatcher="process"``. A model whose inputs cannot take the frames fails
    at construction where that is knowable, else at the first frame, naming the model input
    and the frame's shape.
    """

    default_fps: ClassVar[float | None] = None  # message-driven only

    def __init__(
        self,
        model: ModelSource | Any,
        *,
        preprocess: Preprocess | ImagePreprocess | None = None,
        postprocess: Postprocess | None = None,
        providers: Sequence[ProviderSpec] | str | None = None,
        batch: int = 4,
        max_latency: float | None = None,
        inputs: Sequence[str] = ("video",),
        maxsize: int | None = None,
        overflow: Overflow = "drop_oldest",
        threads: int | None = None,
        session_options: Any = None,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"{self.path}: batch must be an int >= 1, got {batch!r}")
        if max_latency is not None and not max_latency > 0:
            raise ValueError(f"{self.path}: max_latency must be > 0 seconds (or None), got {max_latency!r}")
        if isinstance(inputs, str) or not inputs:
            raise ValueError(f"{self.path}: inputs must be a non-empty sequence of names, got {inputs!r}")
        self.model_path: Path | None = None
        self.model_bytes: bytes | None = None
        if isinstance(model, str | os.PathLike):
            self.model_path = Path(model)
            if not self.model_path.is_file():
                raise FileNotFoundError(f"{self.path}: model file {str(self.model_path)!r} not found")
        elif isinstance(model, bytes | bytearray | memoryview):
            self.model_bytes = bytes(model)
        elif hasattr(model, "SerializeToString"):
            self.model_bytes = model.SerializeToString()
        else:
            raise TypeError(
                f"{self.path}: model must be an .onnx path or the model's bytes, got {type(model).__name__}"
            )
        self.model_name = (
            self.model_path.name if self.model_path else f"<model of {len(self.model_bytes or b'')} bytes>"
        )
        self.batch = batch
        self.max_latency = max_latency
        self.threads = threads
        self.session_options = session_options
        self.providers = choose_providers(providers, self.path)
        self.provider: str | None = None
        """The provider that runs the model, once the session is open (in the process that runs it)."""
        self.input_names = tuple(inputs)
        depth = maxsize if maxsize is not None else max(2, batch)
        for name in self.input_names:
            self.inputs[name] = StreamInput(name, VideoFrame, maxsize=depth, overflow=overflow)
        self.outputs["detections"] = StreamOutput("detections", Detections)
        self.outputs["tensors"] = StreamOutput("tensors", DataMessage)

        self._image = preprocess if isinstance(preprocess, ImagePreprocess) else ImagePreprocess()
        self._pre: Callable[[VideoFrame], Any] = (
            preprocess if preprocess is not None and not isinstance(preprocess, ImagePreprocess) else self.preprocess
        )
        self._post: Callable[[dict[str, NDArray[Any]], VideoFrame], Any] = postprocess or self.postprocess
        self._uses_image = self._pre == self.preprocess and type(self).preprocess is InferenceActor.preprocess
        self.transform: ImageTransform | None = None
        """The bound default preprocessing (``None`` until the model's inputs are known)."""
        self.model_inputs: list[TensorSpec] = []
        self.model_outputs: list[TensorSpec] = []
        self._session: Any = None
        self._pending: deque[tuple[str, VideoFrame]] = deque()
        self._cost: dict[int, float] = {}  # seconds per batch size, moving average (for latency)
        self._best: dict[int, float] = {}  # the fastest run seen per batch size (for what pays)
        self._samples: Counter[int] = Counter()
        self._unpaid_since: float | None = None
        self._overflow = overflow
        self._warned_late = False
        self.inferred = 0
        self.late = 0
        self.superseded = 0
        """Frames dropped for newer ones while batching does not pay (``drop_oldest`` inputs only)."""
        self.batches: Counter[int] = Counter()
        self.run_seconds = 0.0

        try:
            signature = read_signature(self.model_path or self.model_bytes or b"")
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot read the model {self.model_name}: {exc}") from exc
        if signature is not None:
            self._adopt_signature(*signature)  # construction-time checks of what is knowable

    # -- hooks -----------------------------------------------------------------------------

    def preprocess(self, frame: VideoFrame) -> NDArray[Any] | Mapping[str, NDArray[Any]]:
        """One frame's sample: override in a subclass, or pass ``preprocess=``. The default is
        the :class:`ImagePreprocess` configured from the model's input."""
        if self.transform is None:
            raise InferenceInputError(f"{self.path}: the model's inputs are not known yet")
        return self.transform(frame)

    def postprocess(self, outputs: dict[str, NDArray[Any]], frame: VideoFrame) -> Any:
        """One frame's result from its slice of the model outputs: a :class:`Detections`, any
        other value (sent on ``'tensors'``) or ``None`` (nothing sent). Default: ``outputs``."""
        return outputs

    async def on_start(self) -> None:
        self._open_session()

    async def on_stop(self) -> None:
        self._session = None

    async def process(self, tick: TimedTick) -> None:
        pending = self._pending
        self._take_frames()
        while pending:
            if self.max_latency is not None:
                self._drop_late()
                if not pending:
                    break
            count = self._batch_size()
            await self._run_batch([pending.popleft() for _ in range(count)])

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        """The actor's counters plus ``inference``: frames run, batches by size, frames dropped
        as late, mean seconds per batch and the provider (counted where the model runs: in the
        worker process with ``dispatcher="process"``)."""
        found = super().stats(recursive=recursive)
        batches = dict(self.batches)  # one C-level copy: the worker thread may be adding a size
        runs = sum(batches.values())
        found["inference"] = {
            "provider": self.provider,
            "frames": self.inferred,
            "batches": dict(sorted(batches.items())),
            "late": self.late,
            "superseded": self.superseded,
            "mean_batch_seconds": self.run_seconds / runs if runs else None,
        }
        return found

    # -- the session -------------------------------------------------------------------------

    def _adopt_signature(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self.model_inputs, self.model_outputs = inputs, outputs
        if not inputs:
            raise InferenceInputError(f"{self.path}: the model {self.model_name} has no inputs to feed")
        for spec in inputs:
            fixed = spec.fixed(0) if spec.shape else None
            if fixed is not None and fixed != 1:
                raise InferenceInputError(
                    f"{self.path}: model input {spec.describe()} of {self.model_name} fixes the batch at {fixed}; "
                    f"the actor runs 1 to batch={self.batch} frames at a time: export the model with a dynamic "
                    f"batch axis (or a batch of 1)"
                )
        if len(inputs) != 1:
            if self._uses_image:
                raise InferenceInputError(
                    f"{self.path}: the model {self.model_name} has {len(inputs)} inputs "
                    f"({'; '.join(s.describe() for s in inputs)}); the default image preprocessing feeds one. "
                    f"Pass preprocess=<callable(frame) returning {{input name: sample}}>"
                )
            return
        if self._uses_image:
            self.transform = self._image.bind(inputs[0], self.path)
        else:  # a subclass's preprocess may still call super().preprocess()
            try:
                self.transform = self._image.bind(inputs[0], self.path)
            except InferenceInputError:
                self.transform = None

    def _open_session(self) -> None:
        options = self.session_options if self.session_options is not None else ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        source: Any = str(self.model_path) if self.model_path is not None else self.model_bytes
        wanted = _provider_name(self.providers[0])
        try:
            session = ort.InferenceSession(source, sess_options=options, providers=list(self.providers))
        except Exception as exc:
            if wanted == _CPU:
                raise InferenceError(f"{self.path}: ONNX Runtime cannot load {self.model_name}: {exc}") from exc
            log.warning("%s: %s failed to start (%s); falling back to the CPU provider", self.path, wanted, exc)
            session = ort.InferenceSession(source, sess_options=options, providers=[_CPU])
        active = session.get_providers()
        self.provider = active[0] if active else _CPU
        if self.provider != wanted:
            log.warning("%s: %s could not be used; %s runs %s", self.path, wanted, self.provider, self.model_name)
        log.info("%s: running %s on %s", self.path, self.model_name, self.provider)
        self._adopt_signature(
            [TensorSpec.from_node(n) for n in session.get_inputs()],
            [TensorSpec.from_node(n) for n in session.get_outputs()],
        )
        self._session = session

    @property
    def batch_limit(self) -> int:
        """The most frames one run takes: ``batch``, or 1 for a model with a fixed batch of 1."""
        fixed = [s.fixed(0) for s in self.model_inputs if s.shape]
        if any(f == 1 for f in fixed):
            return 1
        return self.batch

    # -- batching ----------------------------------------------------------------------------

    def _useful_limit(self) -> int:
        """The largest batch worth running: ``batch_limit``, or, once a size is measured not to
        pay (see :data:`BATCH_PAYS`), the largest smaller size measured to pay (else 1). Sizes
        are compared by their fastest of at least :data:`JUDGE_AFTER` runs (load only slows a
        run down), and a verdict is forgotten after :data:`RECHECK_SECONDS`."""
        limit = self.batch_limit
        best, samples = self._best, self._samples
        one = best.get(1)
        if one is None or limit == 1 or samples[1] < JUDGE_AFTER:
            return limit
        unpaid = [n for n in best if n > 1 and samples[n] >= JUDGE_AFTER and best[n] > BATCH_PAYS * one * n]
        if not unpaid:
            self._unpaid_since = None
            return limit
        now = time.monotonic()
        if self._unpaid_since is None:
            self._unpaid_since = now
        elif now - self._unpaid_since > RECHECK_SECONDS:
            best.clear()  # measure again, single frames first: the load may have changed
            samples.clear()
            self._unpaid_since = None
            return limit
        smallest = min(unpaid)
        paying = [n for n in best if 1 < n < smallest and samples[n] >= JUDGE_AFTER and n not in unpaid]
        return min(max(paying, default=1), limit)

    def _take_frames(self) -> None:
        """Top the pending frames up to the useful batch size, round-robin over the inputs
        (oldest first on each), leaving the rest in the mailboxes where their overflow policy
        applies. While batching does not pay, ``drop_oldest`` inputs keep only their newest
        frames, as shallower mailboxes would: frames that cannot be batched only grow old."""
        pending = self._pending
        limit = self._useful_limit()
        names = self.input_names
        ports = self.inputs
        while len(pending) < limit:
            took = False
            for name in names:
                frame = ports[name].read_nowait()
                if frame is not None:
                    pending.append((name, frame))
                    took = True
                    if len(pending) >= limit:
                        break
            if not took:
                break
        if limit >= self.batch_limit or self._overflow != "drop_oldest":
            return
        for name in names:
            while (frame := ports[name].read_nowait()) is not None:
                pending.append((name, frame))
        if len(pending) <= limit:
            return
        by_input: dict[str, list[VideoFrame]] = {}
        for name, frame in pending:
            by_input.setdefault(name, []).append(frame)
        kept: list[tuple[str, VideoFrame]] = []
        while len(kept) < limit:
            for name in names:
                frames = by_input.get(name)
                if frames and len(kept) < limit:
                    kept.append((name, frames.pop()))  # the newest left on that input
        self.superseded += len(pending) - len(kept)
        kept.sort(key=lambda item: item[1].timestamp)
        pending.clear()
        pending.extend(kept)

    def _estimate(self, count: int) -> float:
        """Seconds a batch of ``count`` should take: measured for that size, else scaled from
        the nearest smaller size measured (an upper bound when batching amortizes anything)."""
        cost = self._cost
        if count in cost:
            return cost[count]
        smaller = [m for m in cost if m < count]
        if smaller:
            m = max(smaller)
            return cost[m] * count / m
        larger = [m for m in cost if m > count]
        return cost[min(larger)] if larger else 0.0

    def _batch_size(self) -> int:
        pending = self._pending
        count = min(len(pending), self._useful_limit())
        if count > 1 and self._samples[1] < JUDGE_AFTER:
            return 1  # what one frame alone costs is what every batch size is judged against
        bound = self.max_latency
        if bound is None or count <= 1:
            return count
        now = time.monotonic()
        oldest = pending[0][1].timestamp
        best = 1
        for n in range(1, count + 1):
            oldest = min(oldest, pending[n - 1][1].timestamp)
            if now - oldest + self._estimate(n) <= bound:
                best = n
        return best

    def _drop_late(self) -> None:
        """Drop pending frames whose results could not come within ``max_latency`` even alone."""
        assert self.max_latency is not None
        bound = self.max_latency - self._estimate(1)
        now = time.monotonic()
        kept = [(name, f) for name, f in self._pending if now - f.timestamp <= bound]
        dropped = len(self._pending) - len(kept)
        if dropped:
            if not self._warned_late:
                self._warned_late = True
                age = now - min(f.timestamp for _, f in self._pending)
                log.warning(
                    "%s: dropping frames whose results cannot come within max_latency=%.3f s (the oldest is "
                    "%.3f s old, a run takes about %.3f s); frames must be stamped on time.monotonic(), and the "
                    "model must keep up",
                    self.path,
                    self.max_latency,
                    age,
                    self._estimate(1),
                )
            self.late += dropped
            self._pending.clear()
            self._pending.extend(kept)

    async def _run_batch(self, items: list[tuple[str, VideoFrame]]) -> None:
        """Preprocess, run and postprocess one batch; send each frame's result in order."""
        samples = [self._sample(name, frame) for name, frame in items]
        # Frames of different sizes (cameras of several resolutions, a model of any size) run
        # as one batch per shape.
        groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[int]] = {}
        for i, sample in enumerate(samples):
            groups.setdefault(tuple((k, v.shape) for k, v in sample.items()), []).append(i)
        results: list[dict[str, NDArray[Any]]] = [{} for _ in items]
        for indices in groups.values():
            for i, outputs in zip(
                indices, self._infer([items[i] for i in indices], [samples[i] for i in indices]), strict=True
            ):
                results[i] = outputs
        for (name, frame), outputs in zip(items, results, strict=True):
            await self._emit(name, frame, outputs)

    def _sample(self, port: str, frame: VideoFrame) -> dict[str, NDArray[Any]]:
        """``preprocess(frame)`` as ``{model input: array}``, checked against the model."""
        try:
            made = self._pre(frame)
        except InferenceInputError as exc:
            raise InferenceInputError(f"{self.path}: {exc} (from inputs[{port!r}])") from exc
        except Exception as exc:
            raise InferenceError(
                f"{self.path}: preprocess raised {type(exc).__name__} on frame {frame.frame_number} from "
                f"inputs[{port!r}] ({_describe_frame(frame)}): {exc}"
            ) from exc
        specs = self.model_inputs
        if isinstance(made, Mapping):
            sample = {str(k): np.asarray(v) for k, v in made.items()}
            names = {s.name for s in specs}
            if set(sample) != names:
                raise InferenceInputError(
                    f"{self.path}: preprocess returned arrays for {sorted(sample)}, but the model's inputs are "
                    f"{'; '.join(s.describe() for s in specs)}"
                )
        else:
            if len(specs) != 1:
                raise InferenceInputError(
                    f"{self.path}: the model has {len(specs)} inputs ({'; '.join(s.describe() for s in specs)}); "
                    f"preprocess must return {{input name: array}}, not one array"
                )
            sample = {specs[0].name: np.asarray(made)}
        for spec in specs:
            sample[spec.name] = self._check(spec, sample[spec.name], port, frame)
        return sample

    def _check(self, spec: TensorSpec, array: NDArray[Any], port: str, frame: VideoFrame) -> NDArray[Any]:
        """One sample for ``spec`` (batch axis removed), or a clear error naming both sides."""
        rank = len(spec.shape)
        if rank and array.ndim == rank and array.shape[0] == 1:
            array = array[0]  # a sample with its own batch axis of 1
        problem = ""
        if array.ndim != max(rank - 1, 0):
            problem = f"it has {array.ndim} dimensions, one sample of this input has {max(rank - 1, 0)}"
        else:
            for axis, (dim, got) in enumerate(zip(spec.shape[1:], array.shape, strict=True), start=1):
                if isinstance(dim, int) and dim > 0 and dim != got:
                    problem = f"dimension {axis} is {got}, the model fixes it at {dim}"
                    break
        dtype = spec.dtype
        if not problem and dtype is not None and array.dtype != dtype:
            if np.can_cast(array.dtype, dtype, "same_kind"):
                array = array.astype(dtype)
            else:
                problem = f"its type is {array.dtype}, the model takes {dtype}"
        if problem:
            raise InferenceInputError(
                f"{self.path}: frame {frame.frame_number} from inputs[{port!r}] ({_describe_frame(frame)}) does "
                f"not fit model input {spec.describe()} of {self.model_name}: preprocessed to {array.shape} "
                f"{array.dtype}, {problem}. Fix the preprocessing (preprocess=...) or feed frames the model takes."
            )
        return array

    def _infer(
        self, items: list[tuple[str, VideoFrame]], samples: list[dict[str, NDArray[Any]]]
    ) -> list[dict[str, NDArray[Any]]]:
        """Run one batch of same-shaped samples; return each frame's slice of the outputs."""
        session = self._session
        if session is None:
            raise InferenceError(f"{self.path}: no session (on_start has not run in this process)")
        count = len(samples)
        feeds = {spec.name: _stack([s[spec.name] for s in samples]) for spec in self.model_inputs}
        started = time.perf_counter()
        try:
            values = session.run(None, feeds)
        except Exception as exc:
            frames = ", ".join(f"{name}#{f.frame_number} ({_describe_frame(f)})" for name, f in items)
            fed = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in feeds.items())
            raise InferenceError(
                f"{self.path}: {self.model_name} failed on a batch of {count} frames [{frames}]; fed {fed} to "
                f"inputs {'; '.join(s.describe() for s in self.model_inputs)}: {exc}"
            ) from exc
        elapsed = time.perf_counter() - started
        previous = self._cost.get(count)
        self._cost[count] = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        self._best[count] = min(elapsed, self._best.get(count, elapsed))
        self._samples[count] += 1
        self.batches[count] += 1
        self.inferred += count
        self.run_seconds += elapsed
        names = [s.name for s in self.model_outputs]
        batched = [self._batched_output(i, value, count) for i, value in enumerate(values)]
        return [
            {name: (value[i] if split else value) for name, value, split in zip(names, values, batched, strict=True)}
            for i in range(count)
        ]

    def _batched_output(self, index: int, value: Any, count: int) -> bool:
        """Whether output ``index`` has a batch axis to split per frame."""
        shape = getattr(value, "shape", ())
        if not shape or shape[0] != count:
            return False
        spec = self.model_outputs[index] if index < len(self.model_outputs) else None
        if spec is None or not spec.shape:
            return True
        first = spec.shape[0]
        return not isinstance(first, int) or first == count

    async def _emit(self, port: str, frame: VideoFrame, outputs: dict[str, NDArray[Any]]) -> None:
        try:
            result = self._post(outputs, frame)
        except Exception as exc:
            raise InferenceError(
                f"{self.path}: postprocess raised {type(exc).__name__} on frame {frame.frame_number} from "
                f"inputs[{port!r}] (model outputs: "
                f"{', '.join(f'{k} {np.shape(v)}' for k, v in outputs.items())}): {exc}"
            ) from exc
        if result is None:
            return
        stamp: dict[str, Any] = {
            "timestamp": frame.timestamp,
            "frame_number": frame.frame_number,
            "clock_source_id": frame.clock_source_id,
            "clock_rate": frame.clock_rate,
        }
        if isinstance(result, Detections):
            size = result.frame_size or (frame.width, frame.height)
            await self.outputs["detections"].send(dataclasses.replace(result, frame_size=size, source=port, **stamp))
        elif isinstance(result, DataMessage):
            await self.outputs["tensors"].send(dataclasses.replace(result, **stamp))
        else:
            await self.outputs["tensors"].send(DataMessage(result, **stamp))


def _stack(samples: list[NDArray[Any]]) -> NDArray[Any]:
    return samples[0][None] if len(samples) == 1 else np.stack(samples)


def _describe_frame(frame: VideoFrame) -> str:
    data = frame.data
    return f"shape {tuple(np.shape(data))}, {getattr(data, 'dtype', type(data).__name__)}"
