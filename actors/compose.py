"""The :class:`Compositor`: N video inputs blended as layers into one ``'video'`` output.

::

    comp = Compositor(1920, 1080)
    camera >> comp.inputs["base"]                                  # z=0, the background layer
    overlay >> comp.add_layer("overlay", z=10)                     # RGBA: its alpha is used
    pip >> comp.add_layer("pip", z=5, x=1400, y=40, scale=0.25, opacity=0.9)
    comp >> sink
    comp.update_layer("pip", x=40)                                 # while it runs
    comp.remove_layer("pip")

Layers are drawn bottom to top by ``z`` at ``(x, y)`` (top-left, may be partly off the
canvas), resized by ``scale``, with ``opacity`` in 0..1. RGB layers are opaque; RGBA
layers use straight (unpremultiplied) alpha times ``opacity``. Uncovered canvas shows
``background``. Each layer keeps showing its latest frame until a newer one arrives.

Timing: the compositor ticks on the input that delivers first (the core's driving
input) and emits one frame per tick, stamped with that frame's clock metadata. Layers
fed from the same clock as the tick are matched by timestamp: a layer never shows a
frame newer than the tick, and with ``sync=True`` the compositor waits (at most
``sync_timeout``, default one frame period) for a layer whose frame for this tick is
late, e.g. a branch that went through a slower actor. Two ticks of the same source
instant produce one output frame. With nothing delivering, it keeps producing frames at
``fps`` (``fps=None``: only when an input delivers, which keeps a lossless pipeline's
frame count exact).

Cost. Work is restricted to each layer's visible rectangle. An RGBA layer's alpha is
classified once per frame in 16-row bands: fully transparent bands are skipped, opaque
bands are copied, constant-alpha bands use one weighted add, and only mixed bands (and
only their non-transparent columns) run the per-pixel blend: vectorised uint8 arithmetic
(OpenCV's SIMD multiply-with-scale and saturating add), 16 rows at a time so the
intermediates stay in cache. The classification is cached while a layer's frame stays
the same. The output frame is the canvas itself, taken from a pool of arrays that are
reused once nobody downstream holds them; no per-frame allocation of full frames.
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.mailbox import EMPTY, Overflow

from .buffer import FramePool, own_thread
from .layers import Layer, LayerStack, LayerState

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised only without OpenCV
    raise ImportError("actors.compose needs OpenCV: pip install opencv-python (or streamlib[media])") from exc

__all__ = ["Compositor", "Layer", "blend_rgba", "classify_alpha", "classify_rgba", "composite"]

BAND = 16  # rows per alpha-classification band and per cache block of the blend kernel

Region = tuple[str, int, int, int, int, int]  # kind, y0, y1, x0, x1, constant alpha


# ----------------------------------------------------------------------------- kernels


def classify_alpha(alpha: NDArray[np.uint8], band: int = BAND) -> list[Region]:
    """Split an alpha plane into regions: ``const`` (one alpha value, full width) and
    ``mixed`` (per-pixel alpha; columns trimmed to the non-transparent ones); fully
    transparent bands are left out. Consecutive bands of one kind are merged."""
    h, w = alpha.shape
    colmax = _band_reduce(alpha, band, np.maximum)
    colmin = _band_reduce(alpha, band, np.minimum)
    return _regions_from(colmax, colmax.max(axis=1), colmin.min(axis=1), h, w, band)


def classify_rgba(rgba: NDArray[np.uint8], band: int = BAND) -> list[Region]:
    """:func:`classify_alpha` of an RGBA image, without extracting its alpha plane.

    Each pixel is read as one little-endian uint32 whose top byte is alpha, so the
    maximum (minimum) of the pixel values has the maximum (minimum) alpha: one reduction
    over contiguous words instead of a strided channel copy. The minimum is only taken
    over bands that are not fully transparent."""
    h, w = rgba.shape[:2]
    try:
        if sys.byteorder != "little":
            raise ValueError("big-endian")
        words = rgba.view(np.uint32)[..., 0]
    except ValueError:  # not 4 contiguous bytes per pixel (or a big-endian machine)
        return classify_alpha(_alpha(rgba), band)
    colmax = _band_reduce(words, band, np.maximum) >> 24
    bmax = colmax.max(axis=1)
    live = np.flatnonzero(bmax)
    bmin = np.zeros_like(bmax)
    if len(live) * 2 > len(bmax):
        bmin = _band_reduce(words, band, np.minimum).min(axis=1) >> 24
    else:
        for i in live.tolist():
            bmin[i] = words[i * band : (i + 1) * band].min() >> 24
    return _regions_from(colmax, bmax, bmin, h, w, band)


def _band_reduce(plane: NDArray[Any], band: int, op: np.ufunc) -> NDArray[Any]:
    """Per band of ``band`` rows, the column-wise reduction of ``plane`` (bands x width)."""
    h, w = plane.shape
    full = h - h % band
    parts = []
    if full:
        parts.append(op.reduce(plane[:full].reshape(full // band, band, w), axis=1))
    if full < h:
        parts.append(op.reduce(plane[full:], axis=0, keepdims=True))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _regions_from(
    colmax: NDArray[Any], bmax: NDArray[Any], bmin: NDArray[Any], h: int, w: int, band: int
) -> list[Region]:
    nonzero = colmax > 0
    first = nonzero.argmax(axis=1).tolist()
    last = (w - nonzero[:, ::-1].argmax(axis=1)).tolist()
    regions: list[Region] = []
    for i, (hi, lo) in enumerate(zip(bmax.tolist(), bmin.tolist(), strict=True)):
        y0, y1 = i * band, min((i + 1) * band, h)
        if hi == 0:
            continue
        if lo == hi:
            kind, x0, x1, value = "const", 0, w, lo
        else:
            kind, x0, x1, value = "mixed", first[i], last[i], 0
        if regions:
            pk, py0, py1, px0, px1, pv = regions[-1]
            if pk == kind and py1 == y0 and pv == value:
                regions[-1] = (kind, py0, y1, min(px0, x0), max(px1, x1), value)
                continue
        regions.append((kind, y0, y1, x0, x1, value))
    return regions


def blend_rgba(dst: NDArray[np.uint8], src: NDArray[np.uint8], opacity: float = 1.0) -> None:
    """Blend straight-alpha RGBA ``src`` over RGB ``dst`` in place (same height and width;
    rows may be strided views).

    ``out = src * a / 255 + dst * (255 - a) / 255`` in uint8 SIMD arithmetic (OpenCV's
    saturating multiply-with-scale and add), 16 rows at a time so every intermediate stays
    in cache. Alpha 255 gives ``src`` and 0 gives ``dst`` exactly; in between the error
    versus exact float blending is at most 1.
    """
    h = dst.shape[0]
    if h == 0 or dst.shape[1] == 0:
        return
    for r in range(0, h, BAND):
        s = src[r : r + BAND]
        a = cv2.extractChannel(s, 3)
        if opacity < 1.0:
            a = cv2.convertScaleAbs(a, alpha=opacity)
        a3 = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
        s3 = cv2.cvtColor(s, cv2.COLOR_RGBA2RGB)
        cv2.multiply(s3, a3, dst=s3, scale=1 / 255)
        cv2.bitwise_not(a3, a3)
        d = dst[r : r + BAND]
        cv2.multiply(d, a3, dst=d, scale=1 / 255)
        cv2.add(d, s3, dst=d)


def _paste_rgb(dst: NDArray[np.uint8], src: NDArray[np.uint8], opacity: float) -> None:
    """An RGB (or gray) layer: opaque, or mixed with ``opacity``."""
    if src.ndim == 2 or src.shape[2] == 1:
        src = cv2.cvtColor(src, cv2.COLOR_GRAY2RGB)  # type: ignore[assignment]
    if opacity >= 1.0:
        np.copyto(dst, src)
    else:
        cv2.addWeighted(src, opacity, dst, 1.0 - opacity, 0.0, dst=dst)


def _paste_rgba(dst: NDArray[np.uint8], src: NDArray[np.uint8], opacity: float, regions: list[Region]) -> None:
    for kind, y0, y1, x0, x1, value in regions:
        d, s = dst[y0:y1, x0:x1], src[y0:y1, x0:x1]
        if kind == "mixed":
            blend_rgba(d, s, opacity)
            continue
        weight = value / 255 * opacity
        if weight >= 1.0:
            cv2.cvtColor(s, cv2.COLOR_RGBA2RGB, dst=d)
        elif weight > 0.0:
            for r in range(0, y1 - y0, 4 * BAND):  # in blocks, so the RGB copy stays in cache
                block = d[r : r + 4 * BAND]
                rgb = cv2.cvtColor(s[r : r + 4 * BAND], cv2.COLOR_RGBA2RGB)
                cv2.addWeighted(rgb, weight, block, 1.0 - weight, 0.0, dst=block)


def _visible_rect(
    canvas_w: int, canvas_h: int, x: int, y: int, w: int, h: int
) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas_w), min(y + h, canvas_h)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def composite(
    size: tuple[int, int],
    layers: list[tuple[Layer, NDArray[np.uint8]]],
    background: tuple[int, int, int] = (0, 0, 0),
) -> NDArray[np.uint8]:
    """Blend ``(layer, image)`` pairs (bottom first, images already scaled) onto a new RGB
    canvas of ``size`` = (width, height). The stateless form of what :class:`Compositor`
    does per frame (which adds caching and buffer reuse)."""
    width, height = size
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = background
    for layer, image in layers:
        _draw(canvas, layer, image, None)
    return canvas


def _draw(
    canvas: NDArray[np.uint8],
    layer: Layer,
    image: NDArray[np.uint8],
    regions: list[Region] | None,
) -> None:
    """Draw one layer onto the RGB canvas, restricted to its visible rectangle."""
    ch, cw = canvas.shape[:2]
    h, w = image.shape[:2]
    rect = _visible_rect(cw, ch, layer.x, layer.y, w, h)
    if rect is None or layer.opacity <= 0.0:
        return
    x0, y0, x1, y1 = rect
    dst = canvas[y0:y1, x0:x1]
    src = image[y0 - layer.y : y1 - layer.y, x0 - layer.x : x1 - layer.x]
    if image.ndim == 3 and image.shape[2] == 4:
        if regions is None:
            regions = classify_rgba(src)
        _paste_rgba(dst, src, layer.opacity, regions)
    else:
        _paste_rgb(dst, src, layer.opacity)


# ----------------------------------------------------------------------------- the actor


class _LayerState(LayerState):
    """A layer plus its caches: the scaled image and its alpha regions."""

    __slots__ = ("regions", "regions_key", "scaled", "scaled_key")

    def __init__(self, spec: Layer, port: StreamInput) -> None:
        super().__init__(spec, port)
        self.scaled: NDArray[np.uint8] | None = None
        self.scaled_key: tuple[Any, float] | None = None
        self.regions: list[Region] | None = None
        self.regions_key: tuple[Any, ...] | None = None

    def image(self) -> NDArray[np.uint8] | None:
        """The latest frame, scaled (cached per frame)."""
        frame = self.frame
        if frame is None:
            return None
        data, scale = frame.data, self.spec.scale
        if scale == 1.0:
            return data
        key = (data, scale)
        if self.scaled_key is None or self.scaled_key[0] is not data or self.scaled_key[1] != scale:
            h, w = data.shape[:2]
            size = (max(round(w * scale), 1), max(round(h * scale), 1))
            interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            self.scaled = cv2.resize(data, size, interpolation=interp)  # type: ignore[assignment]
            self.scaled_key = key
        return self.scaled


class Compositor(LayerStack, Actor):
    """Blends layers into one RGB ``'video'`` output (see the module docstring).

    ``width``/``height``: the canvas (``None``: the size of the first frame to arrive).
    ``base``: name of the input created at construction as the bottom layer (z=0), so
    ``source >> comp`` works while it is the only input; ``None`` for none.
    ``maxsize``/``overflow``: defaults for the layer inputs (``overflow="block"`` for
    lossless pipelines).
    """

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        *,
        fps: float | None = 30.0,
        background: tuple[int, int, int] = (0, 0, 0),
        base: str | None = "base",
        sync: bool = True,
        sync_timeout: float | None = None,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither (the first frame's size)")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        self.size: tuple[int, int] | None = (int(width), int(height)) if width and height else None
        self.fps = fps
        self.background = tuple(int(c) for c in background)
        self.sync = sync
        self.sync_timeout = sync_timeout
        self._init_layers(maxsize, overflow)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self._background: NDArray[np.uint8] | None = None
        self._pool = FramePool(6)
        self._last: tuple[str | None, float] | None = None
        self.frames_out = 0
        self.sync_timeouts = 0
        if base is not None:
            self.add_layer(base, z=0)
        self._constructed = True  # from now on, layer changes are remembered for restarts

    @property
    def default_fps(self) -> float | None:  # type: ignore[override]
        return self.fps

    def _layer_state(self, spec: Layer, port: StreamInput) -> _LayerState:
        return _LayerState(spec, port)

    async def on_start(self) -> None:
        self._restore_layers()

    # -- per tick ------------------------------------------------------------------------

    async def process(self, tick: TimedTick) -> None:
        order = self._order
        for state in order:
            self._take(state, tick)
        if self.sync:
            await self._sync(order, tick)
        key = (tick.clock_source_id, tick.timestamp)
        last = self._last
        if last is not None and last[0] == key[0] and key[1] <= last[1]:
            return  # this instant was already composited (a second layer of the same frame)
        self._last = key
        data = self.render(order)
        if data is None:
            return
        await self.outputs["video"].send(VideoFrame.at(tick, data=data))
        self.frames_out += 1

    @staticmethod
    def _take(state: _LayerState, tick: TimedTick) -> None:
        """Consume the layer's queued frames up to the tick's instant (same clock), or all."""
        mailbox = state.port.mailbox
        while True:
            head = mailbox.peek()
            if head is EMPTY:
                return
            if head.clock_source_id == tick.clock_source_id and head.timestamp > tick.timestamp:
                return  # a later frame of this clock: it belongs to a later tick
            state.frame = mailbox.get_nowait()

    async def _sync(self, order: list[_LayerState], tick: TimedTick) -> None:
        def late(s: _LayerState) -> bool:
            f = s.frame
            return (
                f is not None
                and f.clock_source_id == tick.clock_source_id
                and f.timestamp < tick.timestamp
                and s.port.connected
                and not s.port.ended
                and not s.port.mailbox.closed
            )

        waiting = [s for s in order if late(s)]
        if not waiting:
            return
        rate = tick.fps if tick.fps and math.isfinite(tick.fps) else (self.fps or 30.0)
        timeout = self.sync_timeout if self.sync_timeout is not None else min(max(1.0 / rate, 0.005), 0.1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for state in waiting:
            while late(state):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.sync_timeouts += 1
                    return
                if not len(state.port.mailbox):
                    try:
                        await asyncio.wait_for(state.port.mailbox.wait_nonempty(), remaining)
                    except TimeoutError:
                        self.sync_timeouts += 1
                        return
                self._take(state, tick)

    def render(self, order: list[_LayerState] | None = None) -> NDArray[np.uint8] | None:
        """Composite the layers' current frames into a new (pooled) RGB array."""
        order = self._order if order is None else order
        if self.size is None:
            first = next((s.frame for s in order if s.frame is not None), None)
            if first is None:
                return None
            self.size = (first.width, first.height)
        width, height = self.size
        drawn: list[tuple[_LayerState, NDArray[np.uint8]]] = []
        for state in order:
            if state.spec.visible and state.spec.opacity > 0.0:
                image = state.image()
                if image is not None:
                    drawn.append((state, image))
        canvas = self._pool.get((height, width, 3))  # drawn in place: the output frame itself
        if not (drawn and self._covers(drawn[0][0], drawn[0][1], width, height)):
            np.copyto(canvas, self._background_image(width, height))
        for state, image in drawn:
            _draw(canvas, state.spec, image, self._regions(state, image, width, height))
        return canvas

    def _background_image(self, width: int, height: int) -> NDArray[np.uint8]:
        bg = self._background
        if bg is None or bg.shape[:2] != (height, width):
            bg = self._background = np.empty((height, width, 3), np.uint8)
            bg[...] = self.background
        return bg

    def render_frames(self, frames: dict[str, VideoFrame]) -> NDArray[np.uint8] | None:
        """Make ``frames`` (by layer name) the layers' current frames and composite them,
        outside the stream (offline use, tests, benchmarks). Not for use while the actor
        receives frames on its inputs."""
        for name, frame in frames.items():
            state = self._layers.get(name)
            if state is None:
                raise KeyError(f"{self.path} has no layer {name!r}")
            state.frame = frame
        return self.render()

    def _regions(self, state: _LayerState, image: NDArray[np.uint8], width: int, height: int) -> list[Region] | None:
        """The alpha classification of the layer's visible part, cached per frame and position."""
        if image.ndim != 3 or image.shape[2] != 4:
            return None
        spec = state.spec
        rect = _visible_rect(width, height, spec.x, spec.y, image.shape[1], image.shape[0])
        if rect is None:
            return []
        key = (image, rect, spec.x, spec.y)
        cached = state.regions_key
        if cached is not None and cached[0] is image and cached[1:] == key[1:]:
            return state.regions
        x0, y0, x1, y1 = rect
        visible = image[y0 - spec.y : y1 - spec.y, x0 - spec.x : x1 - spec.x]
        state.regions = classify_rgba(visible)
        state.regions_key = key
        return state.regions

    def _covers(self, state: _LayerState, image: NDArray[np.uint8], width: int, height: int) -> bool:
        """Does this layer paint every canvas pixel opaquely (so no background fill is needed)?"""
        spec = state.spec
        h, w = image.shape[:2]
        if spec.opacity < 1.0 or spec.x > 0 or spec.y > 0 or spec.x + w < width or spec.y + h < height:
            return False
        if image.ndim == 2 or image.shape[2] != 4:
            return True
        regions = self._regions(state, image, width, height)
        return regions == [("const", 0, height, 0, width, 255)]


def _alpha(rgba: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The alpha plane of an RGBA image, contiguous."""
    return cv2.extractChannel(rgba, 3)  # type: ignore[return-value]

