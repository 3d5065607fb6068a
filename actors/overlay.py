"""Draw :class:`~streamlib.actors.inference.Detections` over the frame they were computed from.

::

    source >> detector >> overlay          # Detections -> overlay.inputs['detections']
    source >> overlay >> sink              # the same frames -> overlay.inputs['video']

Inference takes time, so a frame's detections reach the overlay after the frame itself.
Drawing the *latest* detections would put every box where the object was some frames ago.
:class:`DetectionOverlay` instead holds each frame until the detections stamped with that
frame's clock metadata (clock id, timestamp, frame number) arrive, and draws those: boxes
never lag their frame. The picture is delayed by the inference latency instead.

A frame whose detections will not come is passed on undrawn (``unmatched="pass"``, the
default) or dropped (``unmatched="drop"``). The overlay knows they will not come once
detections of a *later* frame of the same clock arrive (the inference skipped or dropped
this one), once ``max_delay`` seconds have passed, or once the detections stream has ended.
Detections that arrive before their frame (a slower video path) wait for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, EndOfStream, StreamInput, StreamOutput, TimedTick, VideoFrame

from .buffer import own_thread
from .inference import Detections

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised only without OpenCV
    raise ImportError("streamlib.actors.overlay needs OpenCV: pip install opencv-python (or streamlib[media])") from exc

__all__ = ["PALETTE", "DetectionOverlay", "draw_detections"]

PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 56, 56),
    (56, 255, 56),
    (56, 120, 255),
    (255, 210, 0),
    (255, 0, 255),
    (0, 230, 230),
    (255, 140, 0),
    (160, 90, 255),
    (0, 160, 90),
    (255, 120, 170),
)
"""RGB colours by label (label ``i`` gets ``PALETTE[i % len(PALETTE)]``)."""

_Key = tuple[str | None, float, int]


def _key(message: VideoFrame | Detections) -> _Key:
    return (message.clock_source_id, message.timestamp, message.frame_number)


def draw_detections(
    pixels: NDArray[np.uint8],
    detections: Detections,
    *,
    names: Sequence[str] | None = None,
    palette: Sequence[tuple[int, int, int]] = PALETTE,
    thickness: int = 2,
    font_scale: float = 0.5,
    labels: bool = True,
    mask_alpha: float = 0.4,
) -> NDArray[np.uint8]:
    """Draw ``detections`` onto ``pixels`` (an RGB or RGBA image, modified in place) and return it.

    Boxes are scaled from ``detections.frame_size`` to the image. A box ``x1, y1, x2, y2``
    covers pixel columns ``floor(x1) .. ceil(x2) - 1``; its outline is drawn on the box's
    outermost pixels, inwards. Masks are blended under the boxes, keypoints drawn as dots."""
    height, width = pixels.shape[:2]
    fw, fh = detections.frame_size or (width, height)
    sx, sy = width / fw, height / fh
    alpha_channel = (255,) if pixels.ndim == 3 and pixels.shape[2] == 4 else ()
    assert detections.labels is not None and detections.scores is not None

    def colour(label: int) -> tuple[int, ...]:
        return tuple(palette[int(label) % len(palette)]) + alpha_channel

    if detections.masks is not None:
        for mask, label in zip(detections.masks, detections.labels, strict=True):
            m: NDArray[Any] = np.asarray(mask, np.float32)
            if m.shape != (height, width):
                m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
            inside = m > 0.5
            tint = np.asarray(colour(label), np.float32)
            pixels[inside] = (pixels[inside] * (1 - mask_alpha) + tint * mask_alpha).astype(np.uint8)
    for i, (box, score, label) in enumerate(zip(detections.boxes, detections.scores, detections.labels, strict=True)):
        x1, y1 = math.floor(box[0] * sx), math.floor(box[1] * sy)
        x2, y2 = math.ceil(box[2] * sx) - 1, math.ceil(box[3] * sy) - 1
        if x2 < x1 or y2 < y1:
            continue
        c = colour(label)
        t = max(1, min(thickness, (x2 - x1 + 2) // 2, (y2 - y1 + 2) // 2))
        # Outline inside the box: cv2.rectangle centres thick lines on the edge, so draw filled bands.
        cv2.rectangle(pixels, (x1, y1), (x2, y1 + t - 1), c, -1)
        cv2.rectangle(pixels, (x1, y2 - t + 1), (x2, y2), c, -1)
        cv2.rectangle(pixels, (x1, y1), (x1 + t - 1, y2), c, -1)
        cv2.rectangle(pixels, (x2 - t + 1, y1), (x2, y2), c, -1)
        if labels:
            name = names[int(label)] if names is not None and 0 <= int(label) < len(names) else str(int(label))
            text = f"{name} {float(score):.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1 + t
            cv2.rectangle(pixels, (x1, top), (x1 + tw + 4, top + th + base + 2), c, -1)
            cv2.putText(
                pixels,
                text,
                (x1 + 2, top + th + 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                (0, 0, 0, *alpha_channel),
                1,
                cv2.LINE_AA,
            )
        if detections.keypoints is not None:
            for point in detections.keypoints[i]:
                if len(point) > 2 and point[2] < 0.5:
                    continue
                cv2.circle(pixels, (round(float(point[0]) * sx), round(float(point[1]) * sy)), max(2, t), c, -1)
    return pixels


class DetectionOverlay(Actor):
    """Draws each frame's own detections over it, holding the frame until they arrive (docs/inference.md).

    Inputs ``'video'`` (:class:`~streamlib.VideoFrame`, drives the actor) and
    ``'detections'`` (:class:`~streamlib.actors.inference.Detections`), each holding
    ``maxsize`` messages; output ``'video'`` (a drawn copy: the input frame is never
    modified). ``names``: label names (``names[label]``); ``source``: draw only detections from
    that input of the inference actor (several cameras, one inference actor); ``max_delay``:
    seconds a frame may wait for its detections; ``unmatched``: ``'pass'`` or ``'drop'``
    frames without detections. ``labels=False`` draws boxes without their text.
    Counters: ``drawn``, ``unmatched``.
    """

    default_fps: ClassVar[float | None] = None
    driving_input: ClassVar[str | None] = "video"

    def __init__(
        self,
        *,
        names: Sequence[str] | None = None,
        source: str | None = None,
        max_delay: float = 0.5,
        unmatched: Literal["pass", "drop"] = "pass",
        thickness: int = 2,
        font_scale: float = 0.5,
        labels: bool = True,
        mask_alpha: float = 0.4,
        palette: Sequence[tuple[int, int, int]] = PALETTE,
        maxsize: int = 16,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if unmatched not in ("pass", "drop"):
            raise ValueError(f"{self.path}: unmatched must be 'pass' or 'drop', got {unmatched!r}")
        if not max_delay >= 0:
            raise ValueError(f"{self.path}: max_delay must be >= 0 seconds, got {max_delay!r}")
        self.names = list(names) if names is not None else None
        self.source = source
        self.max_delay = max_delay
        self.unmatched_policy = unmatched
        self.style: dict[str, Any] = {
            "thickness": thickness,
            "font_scale": font_scale,
            "labels": labels,
            "mask_alpha": mask_alpha,
            "palette": tuple(palette),
        }
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=maxsize)
        self.inputs["detections"] = StreamInput("detections", Detections, maxsize=maxsize)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.drawn = 0
        self.unmatched = 0
        self._waiting: OrderedDict[_Key, Detections] = OrderedDict()
        self._newest: dict[str | None, float] = {}  # newest detections' timestamp, per clock

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        self._take_detections()
        if frame is None:
            return
        found = await self._detections_for(frame)
        self._forget_up_to(frame)
        if found is None:
            self.unmatched += 1
            if self.unmatched_policy == "pass":
                await self.outputs["video"].send(frame)
            return
        pixels = draw_detections(np.array(frame.data, copy=True), found, names=self.names, **self.style)
        self.drawn += 1
        await self.outputs["video"].send(frame.with_data(pixels))

    async def _detections_for(self, frame: VideoFrame) -> Detections | None:
        """This frame's detections: already here, or awaited until they come or cannot."""
        port = self.inputs["detections"]
        key = _key(frame)
        deadline = time.monotonic() + self.max_delay
        while True:
            found = self._waiting.pop(key, None)
            if found is not None:
                return found
            if not port.connected or port.ended:
                return None
            if self._newest.get(frame.clock_source_id, -math.inf) > frame.timestamp:
                return None  # a later frame's detections came: this frame's never will
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                message = await asyncio.wait_for(port.read(), remaining)
            except (TimeoutError, EndOfStream):
                return None
            self._keep(message)

    def _take_detections(self) -> None:
        port = self.inputs["detections"]
        while (message := port.read_nowait()) is not None:
            self._keep(message)

    def _keep(self, detections: Detections) -> None:
        if self.source is not None and detections.source != self.source:
            return
        clock = detections.clock_source_id
        self._newest[clock] = max(self._newest.get(clock, -math.inf), detections.timestamp)
        self._waiting[_key(detections)] = detections
        while len(self._waiting) > 256:  # detections of frames this overlay never sees
            self._waiting.popitem(last=False)

    def _forget_up_to(self, frame: VideoFrame) -> None:
        """Drop detections of this frame's clock stamped at or before it (their frames are gone)."""
        clock, ts = frame.clock_source_id, frame.timestamp
        stale = [k for k in self._waiting if k[0] == clock and k[1] <= ts]
        for k in stale:
            del self._waiting[k]
