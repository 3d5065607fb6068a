"""Video sources: :class:`TestPattern`.

::

    TestPattern("smpte_bars", width=1920, height=1080, fps=30, burn_in=True, frames=300) >> sink

Static patterns (``smpte_bars``, ``gradient``, ``checkerboard``) are computed once and the
same read-only array is sent every frame (messages are read-only by contract), so they
cost nothing per frame; ``moving_box`` copies a precomputed background and fills one
rectangle; ``noise`` takes a random window of a precomputed noise pool (a view, no copy).
Burn-in (frame number and stream time, drawn with OpenCV) costs one frame copy.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, StreamOutput, TimedTick, VideoFrame

from .buffer import own_thread

__all__ = ["PATTERNS", "SMPTE_COLORS", "Pattern", "TestPattern", "smpte_bars"]

Pattern = Literal["smpte_bars", "gradient", "checkerboard", "moving_box", "noise"]
PATTERNS: tuple[str, ...] = get_args(Pattern)

# Full-range RGB approximations of SMPTE EG-1 75% colour bars.
SMPTE_COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (191, 191, 191),
    "yellow": (191, 191, 0),
    "cyan": (0, 191, 191),
    "green": (0, 191, 0),
    "magenta": (191, 0, 191),
    "red": (191, 0, 0),
    "blue": (0, 0, 191),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "minus_i": (0, 33, 76),
    "plus_q": (50, 0, 106),
    "pluge_plus": (10, 10, 10),
}
_TOP = ("gray", "yellow", "cyan", "green", "magenta", "red", "blue")
_MIDDLE = ("blue", "black", "magenta", "black", "cyan", "black", "gray")
# Bottom row in units of 1/28 of the width (a top bar is 4 units): -I, white, +Q, black
# (5 units each), then PLUGE (-4 % clipped to black, black, +4 %; 4/3 unit each), black.
_BOTTOM = (
    ("minus_i", 5.0),
    ("white", 5.0),
    ("plus_q", 5.0),
    ("black", 5.0),
    ("black", 4 / 3),
    ("black", 4 / 3),
    ("pluge_plus", 4 / 3),
    ("black", 4.0),
)


def smpte_bars(width: int, height: int) -> NDArray[np.uint8]:
    """SMPTE colour bars: 7 bars on the top 2/3, castellations on the next 1/12, PLUGE row below."""
    img = np.zeros((height, width, 3), np.uint8)
    y_mid, y_bottom = round(height * 2 / 3), round(height * 3 / 4)
    edges = [round(i * width / 7) for i in range(8)]
    for i in range(7):
        img[:y_mid, edges[i] : edges[i + 1]] = SMPTE_COLORS[_TOP[i]]
        img[y_mid:y_bottom, edges[i] : edges[i + 1]] = SMPTE_COLORS[_MIDDLE[i]]
    x = 0.0
    for name, units in _BOTTOM:
        x0, x = round(x), x + units * width / 28
        img[y_bottom:, x0 : round(x)] = SMPTE_COLORS[name]
    return img


def _gradient(width: int, height: int) -> NDArray[np.uint8]:
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (np.arange(width, dtype=np.float32) * (255 / max(width - 1, 1)) + 0.5).astype(np.uint8)[None, :]
    img[..., 1] = (np.arange(height, dtype=np.float32) * (255 / max(height - 1, 1)) + 0.5).astype(np.uint8)[:, None]
    img[..., 2] = 128
    return img


def _checkerboard(width: int, height: int, square: int) -> NDArray[np.uint8]:
    ys = (np.arange(height) // square)[:, None]
    xs = (np.arange(width) // square)[None, :]
    light = (ys + xs) % 2 == 0
    img = np.empty((height, width, 3), np.uint8)
    img[...] = np.where(light[..., None], np.uint8(235), np.uint8(16))
    return img


def _read_only(a: NDArray[np.uint8]) -> NDArray[np.uint8]:
    a.flags.writeable = False
    return a


class TestPattern(Actor):
    """A test-pattern source on its own clock: ``'video'`` output of RGB uint8 frames.

    ``pattern``: ``'smpte_bars'``, ``'gradient'`` (red ramps left to right, green top to
    bottom, blue 128), ``'checkerboard'`` (``square`` pixels, 235/16), ``'moving_box'``
    (a white box bouncing over dark grey, one position per frame number) or ``'noise'``.
    ``burn_in=True`` writes the frame number and the stream time on each frame.
    ``frames=N`` stops after N frames (end of stream downstream). ``realtime=False``
    produces frames as fast as downstream accepts them (wire it into ``overflow="block"``
    inputs for a lossless run); its frames are then stamped on a synthetic timeline
    ``t0 + n / fps`` so sinks still see ``fps``.

    Frames are shared read-only arrays for static patterns: never modify ``frame.data``.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        pattern: Pattern = "smpte_bars",
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        *,
        burn_in: bool = False,
        frames: int | None = None,
        realtime: bool = True,
        square: int | None = None,
        seed: int | None = 0,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be >= 1, got {width}x{height}")
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        if frames is not None and frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames!r}")
        self.pattern: Pattern = pattern
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.burn_in = burn_in
        self.frames = frames
        self.realtime = realtime
        self.own_fps = self.fps if realtime else math.inf
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.sent = 0
        self._t0: float | None = None
        self._rng = np.random.default_rng(seed)
        self._static: NDArray[np.uint8] | None = None
        self._background: NDArray[np.uint8] | None = None
        self._noise: NDArray[np.uint8] | None = None
        w, h = self.width, self.height
        if pattern == "smpte_bars":
            self._static = _read_only(smpte_bars(w, h))
        elif pattern == "gradient":
            self._static = _read_only(_gradient(w, h))
        elif pattern == "checkerboard":
            self._static = _read_only(_checkerboard(w, h, square or max(min(w, h) // 8, 1)))
        elif pattern == "moving_box":
            self._background = np.full((h, w, 3), 40, np.uint8)
            self._box = max(min(w, h) // 6, 1)
        else:  # noise: a pool twice the frame size; each frame is a window at a random offset
            n = w * h * 3
            raw = self._rng.bit_generator.random_raw((2 * n + 7) // 8).view(np.uint8)
            self._noise = _read_only(raw[: 2 * n])
        if burn_in:
            import cv2  # noqa: F401  (fail at construction, not on the first frame)

    def render(self, frame_number: int) -> NDArray[np.uint8]:
        """The pattern for ``frame_number``, without burn-in (read-only for static patterns)."""
        if self._static is not None:
            return self._static
        w, h = self.width, self.height
        if self._noise is not None:
            n = w * h * 3
            start = int(self._rng.integers(0, n + 1))
            return self._noise[start : start + n].reshape(h, w, 3)
        assert self._background is not None
        img = self._background.copy()
        box = self._box
        x = _bounce(frame_number * 7, w - box)
        y = _bounce(frame_number * 5, h - box)
        img[y : y + box, x : x + box] = 255
        return img

    def frame_data(self, frame_number: int, seconds: float) -> NDArray[np.uint8]:
        """The pixels of one frame: the pattern, plus the burn-in if asked for."""
        data = self.render(frame_number)
        if not self.burn_in:
            return data
        # moving_box renders a fresh array: write into it; shared patterns get a copy
        fresh = self._background is not None
        return _burn_in(data if fresh else data.copy(), frame_number, seconds)

    async def process(self, tick: TimedTick) -> None:
        if self.frames is not None and self.sent >= self.frames:
            self.stop()
            return
        if self.realtime:
            timestamp, number, rate = tick.timestamp, tick.frame_number, tick.fps
        else:
            if self._t0 is None:
                self._t0 = time.monotonic()
            number = self.sent
            timestamp, rate = self._t0 + number / self.fps, self.fps
        if self._t0 is None:
            self._t0 = timestamp
        data = self.frame_data(number, timestamp - self._t0)
        frame = VideoFrame(data, timestamp, number, tick.clock_source_id, rate)
        await self.outputs["video"].send(frame)
        self.sent += 1
        if self.frames is not None and self.sent >= self.frames:
            self.stop()


def _bounce(position: int, span: int) -> int:
    """A triangle wave over 0..span."""
    if span <= 0:
        return 0
    period = 2 * span
    p = position % period
    return p if p <= span else period - p


def _burn_in(out: NDArray[np.uint8], frame_number: int, seconds: float) -> NDArray[np.uint8]:
    """Write the frame number and stream time into the top-left corner of ``out`` (in place)."""
    import cv2

    h = out.shape[0]
    scale = max(h / 720, 0.3)
    text = f"#{frame_number:06d}  {seconds:8.3f}s"
    thickness = max(round(2 * scale), 1)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(round(8 * scale), 2)
    cv2.rectangle(out, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(out, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
