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

The first frame. Until the *base* -- the bottom connected layer -- has delivered its first
frame, the compositor emits nothing without it: a tick driven by another layer (a fast
picture-in-picture branch beside a slower overlay branch) waits for the base's first
frame, at most ``base_wait`` seconds (default 2) from the first tick; a base that shows
nothing by then is logged once and the layers are composited without it.

``align=<seconds>`` matches the layers' frames by timestamp instead, for cameras of one
scene: an :class:`~streamlib.alignment.InputSync` over every layer (policy
``"tolerance"``, ``sync_timeout`` as its timeout) releases sets of frames within ``align``
seconds of each other, and each set becomes one output frame, stamped with the set's
timestamp; a layer missing from a set keeps its previous frame.

Cost. The canvas is RGBA, handled as one ``uint32`` per pixel; each RGBA layer is blended
onto it by :func:`streamlib.actors.blend.over`, a single-pass SIMD kernel compiled by Numba that
skips fully transparent rows, copies fully opaque ones and blends the rest with exact
integer arithmetic, without holding the GIL. RGB layers are opaque: they are converted
straight into the canvas (OpenCV), or through a scratch RGBA image when ``opacity`` < 1.
A single opaque RGB layer that covers the canvas is passed through untouched (no copy).
The output frame is the canvas itself (``channels=4``) or its RGB conversion
(``channels=3``, the default), taken from a pool of arrays that are reused once nobody
downstream holds them: no per-frame allocation of full frames.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, InputSync, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.mailbox import EMPTY, Overflow

from .blend import over, words
from .buffer import FramePool, own_thread
from .layers import Layer, LayerStack, LayerState

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised only without OpenCV
    raise ImportError("streamlib.actors.compose needs OpenCV: pip install opencv-python (or streamlib[media])") from exc

__all__ = ["Compositor", "Layer", "composite"]

log = logging.getLogger("streamlib.compose")


# ----------------------------------------------------------------------------- drawing


def _visible_rect(canvas_w: int, canvas_h: int, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas_w), min(y + h, canvas_h)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _draw(canvas: NDArray[np.uint8], layer: Layer, image: NDArray[np.uint8], background: int | None) -> None:
    """Draw one layer onto the opaque RGBA canvas at its position, with its opacity (over
    ``background``, an RGBA word, instead of the canvas's pixels when given)."""
    if layer.opacity <= 0.0:
        return
    if image.ndim == 3 and image.shape[2] == 4:
        over(words(canvas), words(image), layer.x, layer.y, layer.opacity, background)
        return
    ch, cw = canvas.shape[:2]
    h, w = image.shape[:2]
    rect = _visible_rect(cw, ch, layer.x, layer.y, w, h)
    if rect is None:
        return
    x0, y0, x1, y1 = rect
    src = image[y0 - layer.y : y1 - layer.y, x0 - layer.x : x1 - layer.x]
    code = cv2.COLOR_GRAY2RGBA if image.ndim == 2 or image.shape[2] == 1 else cv2.COLOR_RGB2RGBA
    if layer.opacity >= 1.0:
        cv2.cvtColor(src, code, dst=canvas[y0:y1, x0:x1])  # opaque: straight into the canvas
    else:
        converted: NDArray[np.uint8] = cv2.cvtColor(src, code)  # type: ignore[assignment]
        over(words(canvas), words(converted), x0, y0, layer.opacity, background)


def _paint(
    canvas: NDArray[np.uint8], layers: list[tuple[Layer, NDArray[np.uint8]]], background: tuple[int, ...]
) -> None:
    """Paint the background and the layers (bottom first) onto the RGBA canvas. When the
    bottom layer spans the whole canvas it is blended over the background colour directly,
    which saves the pass that would paint the background first."""
    r, g, b = background[:3]
    colour = 0xFF000000 | (b << 16) | (g << 8) | r
    height, width = canvas.shape[:2]
    spans = False
    if layers:
        bottom, image = layers[0]
        h, w = image.shape[:2]
        spans = bottom.x <= 0 and bottom.y <= 0 and bottom.x + w >= width and bottom.y + h >= height
    if not spans:
        words(canvas)[...] = np.uint32(colour)
    for i, (layer, image) in enumerate(layers):
        _draw(canvas, layer, image, colour if spans and i == 0 else None)


def composite(
    size: tuple[int, int],
    layers: list[tuple[Layer, NDArray[np.uint8]]],
    background: tuple[int, int, int] = (0, 0, 0),
    channels: int = 3,
) -> NDArray[np.uint8]:
    """Blend ``(layer, image)`` pairs (bottom first, images already scaled) onto a new
    canvas of ``size`` = (width, height), RGB (``channels=3``) or opaque RGBA (4). The
    stateless form of what :class:`Compositor` does per frame (which adds caching and
    buffer reuse)."""
    width, height = size
    canvas = np.empty((height, width, 4), np.uint8)
    _paint(canvas, layers, background)
    return canvas if channels == 4 else cv2.cvtColor(canvas, cv2.COLOR_RGBA2RGB)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- the actor


class _LayerState(LayerState):
    """A layer plus its cache: the scaled image."""

    __slots__ = ("scaled", "scaled_key")

    def __init__(self, spec: Layer, port: StreamInput) -> None:
        super().__init__(spec, port)
        self.scaled: NDArray[np.uint8] | None = None
        self.scaled_key: tuple[Any, float] | None = None

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


class Compositor(LayerStack[_LayerState], Actor):
    """Blends layers into one ``'video'`` output (see the module docstring).

    ``width``/``height``: the canvas (``None``: the size of the first frame to arrive).
    ``channels``: 3 for RGB frames out (the default), 4 for opaque RGBA (one conversion
    less per frame, for consumers that take RGBA: FileSink, Drawing, Display).
    ``base``: name of the input created at construction as the bottom layer (z=0), so
    ``source >> comp`` works while it is the only input; ``None`` for none.
    ``maxsize``/``overflow``: defaults for the layer inputs (``overflow="block"`` for
    lossless pipelines).
    ``base_wait``: how long the first output frame may wait for the bottom layer's first
    frame (see the module docstring).
    """

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        *,
        fps: float | None = 30.0,
        background: tuple[int, int, int] = (0, 0, 0),
        channels: int = 3,
        base: str | None = "base",
        sync: bool = True,
        sync_timeout: float | None = None,
        base_wait: float = 2.0,
        align: float | None = None,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        self._init_layers(width, height, fps, background, maxsize, overflow)
        if channels not in (3, 4):
            raise ValueError(f"channels must be 3 (RGB) or 4 (RGBA), got {channels!r}")
        self.channels = channels
        self.sync = sync
        self.sync_timeout = sync_timeout
        self.base_wait = base_wait
        self._base_shown = False  # the bottom layer has delivered (or was waited for long enough)
        self._base_deadline: float | None = None
        self.align = align
        self._aligned: tuple[tuple[StreamInput, ...], InputSync] | None = None
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self._canvas = FramePool(6)  # RGBA canvases (the output frames when channels=4)
        self._pool = FramePool(6)  # RGB output frames
        self._last: tuple[str | None, float] | None = None
        self.frames_out = 0
        self.sync_timeouts = 0
        if base is not None:
            self.add_layer(base, z=0)

    def _layer_state(self, spec: Layer, port: StreamInput) -> _LayerState:
        return _LayerState(spec, port)

    # -- per tick ------------------------------------------------------------------------

    async def process(self, tick: TimedTick) -> None:
        order = self._order
        if self.align is not None:
            await self._composite_aligned(order)
            return
        for state in order:
            self._take(state, tick)
        if not self._base_shown and not await self._wait_for_base(order, tick):
            return
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

    async def _composite_aligned(self, order: list[_LayerState]) -> None:
        """``align``: one output frame per set of layer frames matched by timestamp."""
        ports = tuple(state.port for state in order)
        if self._aligned is None or self._aligned[0] != ports:  # layers changed: a new sync set
            if self._aligned is not None:
                self._aligned[1].close()
            sync = InputSync(*ports, policy="tolerance", tolerance=self.align or 0.0, timeout=self.sync_timeout)
            self._aligned = (ports, sync)
        for matched in await self._aligned[1].read_many():
            for state in order:
                frame = matched.get(state.port.name)
                if frame is not None:
                    state.frame = frame
            data = self.render(order)
            first = next(f for f in matched.values() if f is not None)
            if data is not None:
                tick = TimedTick(matched.timestamp, first.frame_number, first.clock_source_id, first.clock_rate)
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

    async def _wait_for_base(self, order: list[_LayerState], tick: TimedTick) -> bool:
        """Before the bottom connected layer's first frame: wait for it (within ``base_wait``
        of the first tick). False: skip this tick (the base's first frame is of a later instant)."""
        base = next((s for s in order if s.port.connected and not s.port.ended), None)
        if base is None:
            return True  # nothing connected below: composite what there is
        loop = asyncio.get_running_loop()
        if self._base_deadline is None:
            self._base_deadline = loop.time() + self.base_wait
        mailbox = base.port.mailbox
        while base.frame is None:
            remaining = self._base_deadline - loop.time()
            if remaining <= 0 or base.port.ended:
                log.warning(
                    "%s: layer %r sent no frame within %.1f s; compositing without it",
                    self.path,
                    base.spec.name,
                    self.base_wait,
                )
                break
            if not len(mailbox):
                try:
                    await asyncio.wait_for(mailbox.wait_nonempty(), remaining)
                except TimeoutError:
                    continue
            self._take(base, tick)
            if base.frame is None and len(mailbox):
                return False  # its first frame belongs to a later tick: emit nothing for this one
        self._base_shown = True
        return True

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
        """Composite the layers' current frames into a new (pooled) RGB or RGBA array."""
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
                    self._check_layer(state, image)
                    drawn.append((state, image))
        if len(drawn) == 1 and self._passes_through(drawn[0][0], drawn[0][1], width, height):
            return drawn[0][1]  # frames are immutable: the one opaque layer is the output
        canvas = self._canvas.get((height, width, 4))
        _paint(canvas, [(state.spec, image) for state, image in drawn], self.background)
        if self.channels == 4:
            return canvas
        out = self._pool.get((height, width, 3))
        cv2.cvtColor(canvas, cv2.COLOR_RGBA2RGB, dst=out)
        return out

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

    def _check_layer(self, state: _LayerState, image: NDArray[np.uint8]) -> None:
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
            raise ValueError(
                f"{self.path}: layer {state.spec.name!r} got a frame of shape {image.shape} and dtype {image.dtype}; "
                f"layers take uint8 frames: (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA"
            )

    def _passes_through(self, state: _LayerState, image: NDArray[np.uint8], width: int, height: int) -> bool:
        """Is the output exactly this layer's image (one opaque layer, in the output's layout)?"""
        spec = state.spec
        return (
            self.channels == 3
            and image.dtype == np.uint8
            and image.shape == (height, width, 3)
            and spec.x == 0
            and spec.y == 0
            and spec.opacity >= 1.0
        )
