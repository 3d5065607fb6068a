"""Per-frame OpenCV filters: :class:`Resize`, :class:`ColorConvert`, :class:`Blur`.

Each is synced to its upstream (one output frame per input frame, same clock metadata),
runs on its own worker thread by default (OpenCV releases the GIL), and never modifies
the incoming array::

    TestPattern() >> Resize(width=640) >> Blur(ksize=9) >> ColorConvert("RGB2BGR") >> sink
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.mailbox import Overflow

from .buffer import own_thread

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised only without OpenCV
    raise ImportError("streamlib.actors.filters needs OpenCV: pip install opencv-python (or streamlib[media])") from exc

__all__ = ["CONVERSIONS", "INTERPOLATIONS", "Blur", "ColorConvert", "FrameFilter", "Resize"]

INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}

# Friendly names -> OpenCV codes. "RGB->GRAY", "rgb2gray" and "RGB2GRAY" all work.
CONVERSIONS: dict[str, int] = {
    "RGB2BGR": cv2.COLOR_RGB2BGR,
    "BGR2RGB": cv2.COLOR_BGR2RGB,
    "RGB2GRAY": cv2.COLOR_RGB2GRAY,
    "BGR2GRAY": cv2.COLOR_BGR2GRAY,
    "GRAY2RGB": cv2.COLOR_GRAY2RGB,
    "RGB2RGBA": cv2.COLOR_RGB2RGBA,
    "RGBA2RGB": cv2.COLOR_RGBA2RGB,
    "BGR2BGRA": cv2.COLOR_BGR2BGRA,
    "BGRA2BGR": cv2.COLOR_BGRA2BGR,
    "RGBA2BGRA": cv2.COLOR_RGBA2BGRA,
    "BGRA2RGBA": cv2.COLOR_BGRA2RGBA,
    "RGBA2GRAY": cv2.COLOR_RGBA2GRAY,
    "GRAY2RGBA": cv2.COLOR_GRAY2RGBA,
    "RGB2HSV": cv2.COLOR_RGB2HSV,
    "HSV2RGB": cv2.COLOR_HSV2RGB,
    "RGB2YUV": cv2.COLOR_RGB2YUV,
    "YUV2RGB": cv2.COLOR_YUV2RGB,
}


def _conversion_code(conversion: str | int) -> int:
    if isinstance(conversion, int):
        return conversion
    key = conversion.upper().replace("->", "2").replace("_", "").replace(" ", "").replace("TO", "2")
    if key not in CONVERSIONS:
        raise ValueError(f"unknown conversion {conversion!r}; known: {', '.join(CONVERSIONS)} (or a cv2.COLOR_* code)")
    return CONVERSIONS[key]


class FrameFilter(Actor):
    """Base of one-frame-in, one-frame-out filters: subclasses implement :meth:`apply`.

    Input ``'video'`` (``maxsize``/``overflow`` as given; ``overflow="block"`` for
    lossless pipelines), output ``'video'``. Message-driven only: without an upstream it
    does nothing. Subclasses must declare ``dispatcher`` in their own ``__init__`` and pass
    it on (the runtime routes an undeclared ``dispatcher=`` around this class's default).
    """

    default_fps: ClassVar[float | None] = None

    def __init__(
        self,
        *,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=maxsize, overflow=overflow)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    def apply(self, data: NDArray[np.uint8]) -> NDArray[np.uint8]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is None:
            return
        shape = np.shape(frame.data)
        if len(shape) not in (2, 3) or 0 in shape:
            raise ValueError(
                f"{self.path}: input 'video' got frame {frame.frame_number} of shape {shape}; "
                f"{type(self).__name__} takes images: (height, width) grey or (height, width, channels)"
            )
        try:
            data = self.apply(frame.data)
        except (cv2.error, ValueError, TypeError) as exc:  # the bare causes name neither actor nor frame
            cause = (getattr(exc, "err", "") or str(exc)).strip().splitlines()[0].rstrip(":")
            raise ValueError(
                f"{self.path}: cannot process video frame {frame.frame_number} of shape "
                f"{shape} and dtype {np.asarray(frame.data).dtype}: {cause}"
            ) from exc
        await self.outputs["video"].send(frame.with_data(data))


class Resize(FrameFilter):
    """Scale frames to ``width`` x ``height``; give one of them to keep the aspect ratio,
    or ``scale`` for a factor. ``interpolation``: ``'linear'`` (default), ``'area'``
    (best for shrinking), ``'nearest'``, ``'cubic'``, ``'lanczos'``."""

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        *,
        scale: float | None = None,
        interpolation: str = "linear",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=dispatcher, **kw)
        if width is None and height is None and scale is None:
            raise ValueError("Resize needs width, height or scale")
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; known: {', '.join(INTERPOLATIONS)}")
        self.width, self.height, self.scale = width, height, scale
        self.interpolation = interpolation

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The output (width, height) for an input of ``width`` x ``height``."""
        if self.scale is not None:
            return max(round(width * self.scale), 1), max(round(height * self.scale), 1)
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.width is not None:
            return self.width, max(round(height * self.width / width), 1)
        assert self.height is not None
        return max(round(width * self.height / height), 1), self.height

    def apply(self, data: NDArray[np.uint8]) -> NDArray[np.uint8]:
        h, w = data.shape[:2]
        size = self.target_size(w, h)
        if size == (w, h):
            return data
        return cv2.resize(data, size, interpolation=INTERPOLATIONS[self.interpolation])  # type: ignore[return-value]


class ColorConvert(FrameFilter):
    """Convert the colour layout: ``'RGB2BGR'``, ``'RGB->GRAY'`` (2-D output), ``'RGB2RGBA'``
    (alpha 255), ``'RGBA2RGB'``, ... (see :data:`CONVERSIONS`) or any ``cv2.COLOR_*`` code."""

    def __init__(
        self, conversion: str | int = "RGB2BGR", *, dispatcher: Dispatcher | str | None = None, **kw: Any
    ) -> None:
        super().__init__(dispatcher=dispatcher, **kw)
        self.conversion = conversion
        self.code = _conversion_code(conversion)

    def apply(self, data: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return cv2.cvtColor(data, self.code)  # type: ignore[return-value]


class Blur(FrameFilter):
    """Gaussian blur with an odd ``ksize`` (pixels) and ``sigma`` (0: derived from ksize)."""

    def __init__(
        self, ksize: int = 5, sigma: float = 0.0, *, dispatcher: Dispatcher | str | None = None, **kw: Any
    ) -> None:
        super().__init__(dispatcher=dispatcher, **kw)
        if ksize < 1 or ksize % 2 == 0:
            raise ValueError(f"ksize must be a positive odd number, got {ksize!r}")
        self.ksize = ksize
        self.sigma = sigma

    def apply(self, data: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if self.ksize == 1:
            return data
        return cv2.GaussianBlur(data, (self.ksize, self.ksize), self.sigma)  # type: ignore[return-value]
