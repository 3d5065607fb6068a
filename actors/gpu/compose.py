"""GPUCompositor: N GPU video layers blended into one frame, in one compute pass.

The GPU twin of :class:`actors.compose.Compositor`, with the same layer model and API::

    comp = GPUCompositor(1920, 1080)
    camera >> comp.inputs["base"]                               # z=0, the background layer
    overlay >> comp.add_layer("overlay", z=10)                  # RGBA: its alpha is used
    pip >> comp.add_layer("pip", z=5, x=1400, y=40, scale=0.25, opacity=0.9)
    comp.update_layer("pip", x=40)                              # while it runs
    comp >> sink

Layers are drawn bottom to top by ``z`` at ``(x, y)`` (top-left, may be partly off the
canvas), scaled by ``scale`` (bilinear sampling), with ``opacity`` in 0..1; RGB layers
are opaque, RGBA layers use straight alpha times ``opacity``; the uncovered canvas shows
``background``. The output is an RGB frame on the GPU. At ``scale=1`` the result matches
the CPU compositor within 2 levels (it blends in float and rounds once, where the CPU one
rounds after every layer); scaled layers are sampled bilinearly rather than resized with
OpenCV's area filter.

Timing: it ticks on the base layer while that delivers (any input otherwise) and emits
one frame per tick, stamped with the tick's clock metadata, drawing every layer's latest
frame (the base layer's frames are taken one per tick, so a lossless base stays lossless).
With nothing delivering it keeps producing frames at ``fps`` (``fps=None``: only when an
input delivers).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.gpu import GPUContext, GPUImage, upload
from streamlib.mailbox import Overflow
from streamlib.ports import PortMap

from .shader import ShaderProgram, gpu_dispatcher

__all__ = ["GPUCompositor", "GPULayer"]


@dataclass(frozen=True, slots=True)
class GPULayer:
    """Where and how a layer is drawn (immutable: :meth:`GPUCompositor.update_layer` replaces it)."""

    name: str
    z: float = 0.0
    x: int = 0
    y: int = 0
    scale: float = 1.0
    opacity: float = 1.0
    visible: bool = True


def _blend_source(n: int) -> str:
    """WGSL blending ``n`` layers (``layer0`` bottom) over the background."""
    body = []
    for i in range(n):
        body.append(f"""
    {{
        let r = u.rect{i};
        let local = p - r.xy;
        if (local.x >= 0.0 && local.y >= 0.0 && local.x < r.z && local.y < r.w) {{
            var c: vec4<f32>;
            if (u.mix{i}.y == 1.0) {{
                c = textureLoad(layer{i}, vec2<i32>(floor(local)), 0);
            }} else {{
                c = textureSampleLevel(layer{i}, smp, local / r.zw, 0.0);
            }}
            let a = select(1.0, c.a, u.mix{i}.z > 0.5) * u.mix{i}.x;
            out = c.rgb * a + out * (1.0 - a);
        }}
    }}""")
    return f"""
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {{
    if (!inside(id)) {{ return; }}
    let p = vec2<f32>(id.xy) + vec2<f32>(0.5);
    var out = u.background;{"".join(body)}
    textureStore(dst, vec2<i32>(id.xy), vec4<f32>(out, 1.0));
}}
"""


class _LayerState:
    __slots__ = ("frame", "port", "spec")

    def __init__(self, spec: GPULayer, port: StreamInput) -> None:
        self.spec = spec
        self.port = port
        self.frame: VideoFrame | None = None


_layer_specs: dict[str, dict[str, GPULayer]] = {}


class GPUCompositor(Actor):
    """Blends GPU layers into one RGB ``'video'`` output on the GPU (see the module docstring).

    ``width``/``height``: the canvas (``None``: the size of the first frame to arrive).
    ``base``: the input created at construction as the bottom layer (z=0), ``None`` for
    none. ``maxsize``/``overflow``: defaults for the layer inputs.
    """

    gpu: GPUContext

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        *,
        fps: float | None = 30.0,
        background: tuple[int, int, int] = (0, 0, 0),
        base: str | None = "base",
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=gpu_dispatcher(dispatcher), **kw)
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither (the first frame's size)")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        self.size: tuple[int, int] | None = (int(width), int(height)) if width and height else None
        self.fps = fps
        self.background = tuple(int(c) for c in background)
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self.base = base
        self.outputs["video"] = StreamOutput("video", VideoFrame, memory="gpu")
        self._layers: dict[str, _LayerState] = {}
        self._order: list[_LayerState] = []
        self._programs: dict[int, ShaderProgram] = {}
        self._last: tuple[str | None, float] | None = None
        self._lock = threading.Lock()
        self._constructed = False
        self.frames_out = 0
        if base is not None:
            self.add_layer(base, z=0)
            self.driving_input = base  # type: ignore[misc]
        self._constructed = True

    @property
    def default_fps(self) -> float | None:  # type: ignore[override]
        return self.fps

    # -- layers (any thread) -------------------------------------------------------------

    def add_layer(
        self,
        name: str,
        *,
        z: float | None = None,
        x: int = 0,
        y: int = 0,
        scale: float = 1.0,
        opacity: float = 1.0,
        visible: bool = True,
        maxsize: int | None = None,
        overflow: Overflow | None = None,
    ) -> StreamInput:
        """Create a layer and its GPU input port (named ``name``); returns the port, for ``>>``.
        ``z`` defaults to one above the current top layer."""
        with self._lock:
            if name in self._layers:
                raise ValueError(f"{self.path} already has a layer {name!r}")
            if not scale > 0:
                raise ValueError(f"scale must be > 0, got {scale!r}")
            if z is None:
                z = max((s.spec.z for s in self._layers.values()), default=-1.0) + 1.0
            spec = GPULayer(name, float(z), int(x), int(y), float(scale), _clamp01(opacity), bool(visible))
            port = StreamInput(
                name, VideoFrame, maxsize=maxsize or self.maxsize, overflow=overflow or self.overflow, memory="gpu"
            )
            self._set_layers({**self._layers, name: _LayerState(spec, port)})
            self._replace_inputs(add=port)
        return port

    def remove_layer(self, name: str) -> None:
        """Remove a layer: it disappears from the next frame, and its port is disconnected."""
        with self._lock:
            layers = dict(self._layers)
            state = layers.pop(name, None)
            if state is None:
                raise KeyError(f"{self.path} has no layer {name!r}")
            self._set_layers(layers)
            self._replace_inputs(remove=name)
        for upstream in state.port.upstreams:
            upstream.disconnect(state.port)
        state.port.mailbox.close()

    def update_layer(self, name: str, **changes: Any) -> GPULayer:
        """Change a layer's ``z``, ``x``, ``y``, ``scale``, ``opacity`` or ``visible``; returns the new spec."""
        unknown = set(changes) - {"z", "x", "y", "scale", "opacity", "visible"}
        if unknown:
            raise TypeError(f"update_layer() cannot change {', '.join(sorted(unknown))}")
        for key, cast in (("x", int), ("y", int), ("z", float), ("scale", float), ("visible", bool)):
            if key in changes:
                changes[key] = cast(changes[key])
        if "opacity" in changes:
            changes["opacity"] = _clamp01(changes["opacity"])
        if "scale" in changes and not changes["scale"] > 0:
            raise ValueError(f"scale must be > 0, got {changes['scale']!r}")
        with self._lock:
            state = self._layers.get(name)
            if state is None:
                raise KeyError(f"{self.path} has no layer {name!r}")
            state.spec = dataclasses.replace(state.spec, **changes)
            self._set_layers(dict(self._layers))
            if self._constructed:
                _layer_specs[self.path] = {n: s.spec for n, s in self._layers.items()}
        return state.spec

    @property
    def layers(self) -> list[GPULayer]:
        """The layers, bottom to top."""
        return [s.spec for s in self._order]

    def _set_layers(self, layers: dict[str, _LayerState]) -> None:
        self._layers = layers
        self._order = sorted(layers.values(), key=lambda s: s.spec.z)

    def _replace_inputs(self, add: StreamInput | None = None, remove: str | None = None) -> None:
        ports = PortMap(self, StreamInput)
        for name, port in self.inputs.items():
            if name != remove:
                dict.__setitem__(ports, name, port)
        if add is not None:
            add.owner = self
            dict.__setitem__(ports, add.name, add)
        self.inputs = ports
        if add is not None:
            ports[add.name] = add  # through PortMap: tells the runtime the wiring changed
        else:
            self._wiring_changed()
        if self._constructed:
            _layer_specs[self.path] = {n: s.spec for n, s in self._layers.items()}

    async def on_start(self) -> None:
        # A restarted instance adopts the old one's ports: bring their layers back.
        remembered = _layer_specs.get(self.path, {}) if self.restarts else {}
        with self._lock:
            layers = dict(self._layers)
            for name, port in self.inputs.items():
                state = layers.get(name)
                spec = remembered.get(name) or (state.spec if state is not None else GPULayer(name))
                if state is None or state.port is not port:
                    layers[name] = _LayerState(spec, port)
            self._set_layers(layers)

    # -- per tick --------------------------------------------------------------------------

    async def process(self, tick: TimedTick) -> None:
        ctx = self.gpu
        for state in self._order:
            port = state.port
            one = state.port.name == self.driving_input and port.connected and not port.ended
            while True:
                frame = port.read_nowait()
                if frame is None:
                    break
                if not frame.is_gpu():
                    frame = frame.with_data(upload(frame.data, ctx=ctx))
                elif frame.data.context is not ctx:
                    continue  # a frame of a lost device
                state.frame = frame
                if one:
                    break
        key = (tick.clock_source_id, tick.timestamp)
        last = self._last
        if last is not None and last[0] == key[0] and key[1] <= last[1]:
            return  # this instant was composited already
        self._last = key
        image = self.render()
        if image is None:
            return
        await self.outputs["video"].send(VideoFrame.at(tick, data=image))
        self.frames_out += 1

    def render(self) -> GPUImage | None:
        """Composite the layers' current frames into a new GPU image (on the GPU thread)."""
        ctx = self.gpu
        drawn = [
            s for s in self._order if s.spec.visible and s.spec.opacity > 0.0 and s.frame is not None
        ]
        if self.size is None:
            if not drawn:
                return None
            first = drawn[0].frame
            assert first is not None
            self.size = (first.width, first.height)
        width, height = self.size
        params: dict[str, Any] = {"background": [c / 255.0 for c in self.background]}
        images: list[GPUImage] = []
        for i, state in enumerate(drawn):
            frame = state.frame
            assert frame is not None
            spec = state.spec
            image: GPUImage = frame.data
            w = max(round(image.width * spec.scale), 1)
            h = max(round(image.height * spec.scale), 1)
            exact = 1.0 if (w, h) == (image.width, image.height) else 0.0
            params[f"rect{i}"] = [float(spec.x), float(spec.y), float(w), float(h)]
            params[f"mix{i}"] = [spec.opacity, exact, 1.0 if image.channels == 4 else 0.0, 0.0]
            images.append(image)
        program = self._programs.get(len(images))
        if program is None or program.ctx is not ctx:
            program = self._programs[len(images)] = ShaderProgram(
                ctx, _blend_source(len(images)), textures=[f"layer{i}" for i in range(len(images))], params=params
            )
        try:
            return program.run(images, (width, height), 3, params)
        except Exception as exc:
            raise ctx.translate(exc) from exc


def _clamp01(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)
