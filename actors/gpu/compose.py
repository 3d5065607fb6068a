"""GPUCompositor: N GPU video layers blended into one frame, in one compute pass.

The GPU twin of :class:`streamlib.actors.compose.Compositor`, with the same layer model and API::

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

from typing import Any, cast

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.gpu import GPUContext, GPUImage, upload
from streamlib.mailbox import Overflow

from ..layers import Layer, LayerStack, LayerState
from .shader import ShaderProgram, gpu_dispatcher

GPULayer = Layer  # the same layer model as the CPU compositor

__all__ = ["GPUCompositor", "GPULayer"]


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


class GPUCompositor(LayerStack[LayerState], Actor):
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
        self._init_layers(width, height, fps, background, maxsize, overflow)
        self.base = base
        self.outputs["video"] = StreamOutput("video", VideoFrame, memory="gpu")
        self._programs: dict[int, ShaderProgram] = {}
        self._last: tuple[str | None, float] | None = None
        self.frames_out = 0
        if base is not None:
            self.add_layer(base, z=0)
            self.driving_input = base  # type: ignore[misc]

    def _layer_port(self, name: str, maxsize: int, overflow: Overflow) -> StreamInput:
        return StreamInput(name, VideoFrame, maxsize=maxsize, overflow=overflow, memory="gpu")

    # -- per tick --------------------------------------------------------------------------

    def _layer_state(self, spec: Layer, port: StreamInput) -> LayerState:
        return LayerState(spec, port)

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
        drawn = [s for s in self._order if s.spec.visible and s.spec.opacity > 0.0 and s.frame is not None]
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
            image = cast(GPUImage, frame.data)
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
