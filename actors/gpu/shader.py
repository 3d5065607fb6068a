"""ShaderActor: a WGSL compute shader over the input frame(s), rewritable while it runs.

::

    blur_x = ShaderActor('''
    @compute @workgroup_size(8, 8)
    fn main(@builtin(global_invocation_id) id: vec3<u32>) {
        if (!inside(id)) { return; }
        let p = vec2<i32>(id.xy);
        let c = load_clamped(src, p - vec2<i32>(1, 0)) + load_clamped(src, p) + load_clamped(src, p + vec2<i32>(1, 0));
        textureStore(dst, p, c / 3.0 * u.gain);
    }
    ''', params={"gain": 1.0})
    camera >> blur_x >> display              # CPU ends: upload / download actors are inserted
    blur_x.set_params(gain=1.5)              # from any thread
    await blur_x.update_shader(new_source)   # raises ShaderCompileError; the old shader keeps running

What your WGSL sees. ShaderActor puts these declarations before your code (``prelude``
shows them exactly; error lines are counted in *your* code):

* ``u``: the uniforms -- ``u.resolution`` (output width, height as ``vec2<f32>``),
  ``u.time`` (seconds since the first frame), ``u.frame_number`` (``u32``, the frame's
  own), ``u.pass_index`` (``u32``, see ``passes``), and one field per user parameter:
  numbers become ``f32``, 2/3/4-sequences ``vec2/3/4<f32>``, 3x3 and 4x4 nested
  sequences ``mat3x3/mat4x4<f32>`` (given row-major like numpy: ``u.m * v`` is ``M @ v``).
* ``src``: the input texture (``texture_2d<f32>``; with several inputs, one variable per
  input, named after it); ``dst``: the output (``texture_storage_2d<rgba8unorm, write>``);
  ``smp``: a linear, clamp-to-edge sampler for ``textureSampleLevel``.
* helpers ``inside(id)`` (is this invocation within the output?) and
  ``load_clamped(texture, p)`` (``textureLoad`` with coordinates clamped to the edge).

Your code defines ``@compute @workgroup_size(x, y) fn main(@builtin(global_invocation_id)
id: vec3<u32>)``; one invocation per output pixel is dispatched (the workgroup size must be
written as integer literals). Colours are 0..1 floats; the output's alpha is ignored for
3-channel frames.

``passes=n`` runs the shader n times per frame, each pass reading the previous one's output
as ``src`` (``u.pass_index`` tells which): a separable blur is 2 passes.

Live rewrite. ``await actor.update_shader(source)`` (or a ``str`` sent to the ``'shader'``
input) compiles the new source on the GPU thread and swaps it in between two frames. A
compile error raises :class:`~streamlib.gpu.ShaderCompileError` -- its ``.error`` is a
:class:`~streamlib.gpu.ShaderError` with ``message``, ``line``, ``column`` and the offending
``source_line`` -- is kept in ``actor.last_error``, and is sent as a :class:`ShaderStatus`
on the ``'status'`` output; the previous shader keeps running. A supervisor's restart keeps
the latest good shader and parameters.

Parameters. ``set_params(**values)`` (any thread) or a ``DataMessage`` whose ``data`` is a
dict on the ``'params'`` input changes them from the next frame; a new name or a value of
another shape recompiles (the prelude changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from streamlib import Actor, DataMessage, Dispatcher, Message, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.dispatch import resolve_dispatcher
from streamlib.gpu import (
    GPUContext,
    GPUDispatcher,
    GPUImage,
    LRUCache,
    ShaderCompileError,
    ShaderError,
    context,
    gpu_thread,
    upload,
)
from streamlib.mailbox import Overflow

__all__ = ["ShaderActor", "ShaderProgram", "ShaderStatus", "UniformLayout", "gpu_dispatcher"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORKGROUP = re.compile(r"@workgroup_size\s*\(\s*(\d+)[iu]?\s*(?:,\s*(\d+)[iu]?\s*)?(?:,\s*(\d+)[iu]?\s*)?,?\s*\)")
_HEADER = ("resolution", "time", "frame_number", "pass_index")


def gpu_dispatcher(dispatcher: Dispatcher | str | None) -> Dispatcher | str:
    """``dispatcher`` if it runs on the GPU thread (default ``"gpu"``), else a clear error."""
    if dispatcher is None:
        return "gpu"
    if not isinstance(resolve_dispatcher(dispatcher), GPUDispatcher):
        raise ValueError(f"GPU actors run on dispatcher='gpu' (a GPUDispatcher), not {dispatcher!r}")
    return dispatcher


@dataclass(slots=True)
class ShaderStatus(Message):
    """What became of a shader sent to a :class:`ShaderActor`: ``ok`` and the new
    ``version``, or the structured compile ``error`` (the previous shader still runs)."""

    ok: bool
    version: int
    error: ShaderError | None = None
    timestamp: float = 0.0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None


# ----------------------------------------------------------------------------- uniforms


def _wgsl_type(name: str, value: Any) -> tuple[str, int, int]:
    """(WGSL type, size, alignment) of a parameter value, by WGSL's uniform layout rules."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return "f32", 4, 4
    if arr.ndim == 1 and arr.shape[0] in (2, 3, 4):
        n = arr.shape[0]
        return f"vec{n}<f32>", 4 * n, 8 if n == 2 else 16
    if arr.ndim == 2 and arr.shape in ((3, 3), (4, 4)):
        n = arr.shape[0]
        return f"mat{n}x{n}<f32>", 16 * n, 16
    raise TypeError(
        f"shader parameter {name!r}: expected a number, a 2/3/4-sequence or a 3x3/4x4 matrix, got {value!r}"
    )


class UniformLayout:
    """The ``Uniforms`` struct: the fixed header then one field per parameter, with offsets."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        fields: list[tuple[str, str, int]] = [
            ("resolution", "vec2<f32>", 0),
            ("time", "f32", 8),
            ("frame_number", "u32", 12),
            ("pass_index", "u32", 16),
        ]
        offset, align_max = 20, 8
        for name, value in params.items():
            if not _IDENT.match(name) or name in _HEADER:
                raise ValueError(f"shader parameter {name!r} must be a WGSL identifier other than {_HEADER}")
            wgsl, size, align = _wgsl_type(name, value)
            offset = (offset + align - 1) // align * align
            fields.append((name, wgsl, offset))
            offset += size
            align_max = max(align_max, align)
        self.fields = fields
        self.size = (offset + align_max - 1) // align_max * align_max
        self.signature = tuple((name, wgsl) for name, wgsl, _ in fields)
        self._words = max(self.size, 16) // 4

    def declaration(self) -> list[str]:
        notes = {
            "resolution": "output width, height in pixels",
            "time": "seconds since the first frame",
            "frame_number": "the frame's number",
            "pass_index": "0, 1, ... with passes > 1",
        }
        lines = ["struct Uniforms {"]
        for name, wgsl, _ in self.fields:
            note = f"  // {notes[name]}" if name in notes else ""
            lines.append(f"    {name}: {wgsl},{note}")
        lines.append("}")
        return lines

    def pack(
        self, resolution: tuple[int, int], t: float, frame_number: int, pass_index: int, params: Mapping[str, Any]
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        data = np.zeros(self._words, np.float32)
        data[0], data[1], data[2] = resolution[0], resolution[1], t
        ints = data.view(np.uint32)
        ints[3] = frame_number & 0xFFFFFFFF
        ints[4] = pass_index
        for name, wgsl, offset in self.fields[4:]:
            value = np.asarray(params[name], dtype=np.float32)
            i = offset // 4
            if wgsl == "f32":
                data[i] = value
            elif wgsl.startswith("vec"):
                data[i : i + value.size] = value
            else:  # matrices: columns (of M, given row-major) padded to 16 bytes
                n = value.shape[0]
                for col in range(n):
                    data[i + 4 * col : i + 4 * col + n] = value[:, col]
        return data


def workgroup_size(source: str) -> tuple[int, int]:
    """The ``@workgroup_size(x, y)`` of WGSL source (8x8 if none is written as literals)."""
    found = _WORKGROUP.search(source)
    if not found:
        return (8, 8)
    return int(found.group(1)), int(found.group(2) or 1)


# ----------------------------------------------------------------------------- programs


_serials = itertools.count(1)


class ShaderProgram:
    """User WGSL compiled with the generated declarations, ready to encode per frame.

    ``textures``: the names of the input texture variables, in binding order.
    Compile errors raise :class:`ShaderCompileError` located in ``source``."""

    def __init__(
        self,
        ctx: GPUContext,
        source: str,
        *,
        textures: Sequence[str],
        params: Mapping[str, Any],
        passes: int = 1,
    ) -> None:
        for name in textures:
            if not _IDENT.match(name):
                raise ValueError(f"texture name {name!r} is not a WGSL identifier")
        self.ctx = ctx
        self.source = source
        self.textures = tuple(textures)
        self.layout = UniformLayout(params)
        self.prelude = prelude(self.layout, self.textures)
        self.passes = passes
        self.workgroup = workgroup_size(source)
        self.serial = next(_serials)
        wgpu = ctx._wgpu
        compute = wgpu.ShaderStage.COMPUTE
        groups = [
            [
                {"binding": 0, "visibility": compute, "buffer": {"type": "uniform"}},
                {"binding": 1, "visibility": compute, "sampler": {"type": "filtering"}},
            ],
            ctx.storage_entries(),
        ]
        if self.textures:
            groups.append(ctx.texture_entries(len(self.textures)))
        self.pipeline, self.layouts = ctx.compute_pipeline(
            self.prelude + source, groups, user_source=source, line_offset=self.prelude.count("\n")
        )
        self.uniforms = [ctx.uniform_buffer(self.layout.size) for _ in range(passes)]
        self._params = [
            ctx.device.create_bind_group(
                layout=self.layouts[0],
                entries=[{"binding": 0, "resource": {"buffer": buffer}}, {"binding": 1, "resource": ctx.sampler}],
            )
            for buffer in self.uniforms
        ]
        self._groups = LRUCache(64)  # several inputs: bind groups by their textures' serials

    def matches(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` fit this program's uniform layout (no recompile needed)."""
        try:
            return UniformLayout(params).signature == self.layout.signature
        except (TypeError, ValueError):
            return False

    def run(
        self,
        inputs: Sequence[GPUImage],
        size: tuple[int, int],
        channels: int,
        params: Mapping[str, Any],
        t: float = 0.0,
        frame_number: int = 0,
    ) -> GPUImage:
        """Encode and submit every pass; return the output image (from the pool)."""
        with self.ctx.lock:  # see GPUContext.lock
            self.ctx.check()
            ctx = self.ctx
            device = ctx.device
            width, height = size
            wx, wy = self.workgroup
            encoder = device.create_command_encoder()
            hold: list[GPUImage] = list(inputs)
            current = list(inputs)
            for k in range(self.passes):
                out = ctx.pool.acquire(width, height, channels)
                hold.append(out)
                ctx.queue.write_buffer(self.uniforms[k], 0, self.layout.pack(size, t, frame_number, k, params))
                cpass = encoder.begin_compute_pass()
                cpass.set_pipeline(self.pipeline)
                cpass.set_bind_group(0, self._params[k])
                cpass.set_bind_group(1, self._output_group(out))
                if current:
                    cpass.set_bind_group(2, self._inputs_group(current))
                cpass.dispatch_workgroups((width + wx - 1) // wx, (height + wy - 1) // wy, 1)
                cpass.end()
                current = [out, *current[1:]] if current else []
                result = out
            ctx.queue.submit([encoder.finish()])
            del hold  # the textures go back to the pool; later work is queued after this submit
            return result

    def _output_group(self, image: GPUImage) -> Any:
        """The output texture's bind group, kept with the texture: its layout is shared by
        every ShaderProgram, so a steady stream creates none."""
        device, layout = self.ctx.device, self.layouts[1]
        return image.bind_group(
            "dst", lambda: device.create_bind_group(layout=layout, entries=[{"binding": 0, "resource": image.view}])
        )

    def _inputs_group(self, images: Sequence[GPUImage]) -> Any:
        """The input textures' bind group: kept with the texture for one input, by the
        textures' serials for several."""
        device, layout = self.ctx.device, self.layouts[2]

        def make() -> Any:
            entries = [{"binding": i, "resource": img.view} for i, img in enumerate(images)]
            return device.create_bind_group(layout=layout, entries=entries)

        if len(images) == 1:
            return images[0].bind_group(("src", 1), make)
        return self._groups.get(tuple(img.serial for img in images), make)


def prelude(layout: UniformLayout, textures: Sequence[str]) -> str:
    """The declarations put before a ShaderActor's WGSL."""
    lines = [
        "// ---- generated by streamlib's ShaderActor; your code starts after the last line ----",
        *layout.declaration(),
        "@group(0) @binding(0) var<uniform> u: Uniforms;",
        "@group(0) @binding(1) var smp: sampler;  // linear, clamp to edge",
        "@group(1) @binding(0) var dst: texture_storage_2d<rgba8unorm, write>;",
        *(f"@group(2) @binding({i}) var {name}: texture_2d<f32>;" for i, name in enumerate(textures)),
        "fn inside(id: vec3<u32>) -> bool {",
        "    return f32(id.x) < u.resolution.x && f32(id.y) < u.resolution.y;",
        "}",
        "fn load_clamped(t: texture_2d<f32>, p: vec2<i32>) -> vec4<f32> {",
        "    let size = vec2<i32>(textureDimensions(t));",
        "    return textureLoad(t, clamp(p, vec2<i32>(0), size - vec2<i32>(1)), 0);",
        "}",
        "// ---- end of generated code ----",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the actor


class ShaderActor(Actor):
    """Runs a WGSL compute shader over its input frame(s) (see the module docstring).

    ``source``: the WGSL (subclasses may set the class attribute ``source`` instead).
    ``inputs``: names of the GPU video inputs (default one, ``'video'``, seen as ``src``;
    ``()`` makes a generator, which then needs ``size`` and runs at ``fps``).
    ``params``: initial parameter values. ``passes``: times the shader runs per frame.
    ``size``: output (width, height), default the first input's. ``channels``: output
    channels (3 or 4), default the first input's. ``maxsize``/``overflow``: the frame inputs'
    mailboxes (``overflow="block"`` for lossless pipelines).

    Ports: ``inputs[name]`` (``VideoFrame`` on the GPU), ``inputs['params']``
    (``DataMessage`` of a dict), ``inputs['shader']`` (``str``: new WGSL);
    ``outputs['video']`` (``VideoFrame`` on the GPU), ``outputs['status']`` (:class:`ShaderStatus`).
    """

    source: ClassVar[str | None] = None
    gpu: GPUContext

    def __init__(
        self,
        source: str | None = None,
        *,
        inputs: Sequence[str] = ("video",),
        params: Mapping[str, Any] | None = None,
        passes: int = 1,
        size: tuple[int, int] | None = None,
        channels: int | None = None,
        fps: float | None = 30.0,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=gpu_dispatcher(dispatcher), **kw)
        source = source if source is not None else type(self).source
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{type(self).__name__} needs WGSL source (a non-empty str)")
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes!r}")
        if channels not in (None, 3, 4):
            raise ValueError(f"channels must be 3 or 4, got {channels!r}")
        names = list(inputs)
        if not names and size is None:
            raise ValueError("a ShaderActor without inputs (a generator) needs size=(width, height)")
        for name in names:
            if name in ("params", "shader") or not _IDENT.match(name):
                raise ValueError(f"input name {name!r} must be a WGSL identifier other than 'params'/'shader'")
            self.inputs[name] = StreamInput(name, VideoFrame, maxsize=maxsize, overflow=overflow, memory="gpu")
        self.inputs["params"] = StreamInput("params", DataMessage, maxsize=16)
        self.inputs["shader"] = StreamInput("shader", str, maxsize=4)
        self.outputs["video"] = StreamOutput("video", VideoFrame, memory="gpu")
        self.outputs["status"] = StreamOutput("status", ShaderStatus)
        self.frame_inputs: tuple[str, ...] = tuple(names)
        self.textures: tuple[str, ...] = ("src",) if len(names) == 1 else tuple(names)
        if names:
            self.driving_input = names[0]  # type: ignore[misc]
        self.passes = passes
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.channels = channels
        self.fps = fps
        self.own_fps = None if self.frame_inputs else fps  # a generator ticks on its own clock
        self._source = source
        self._params: dict[str, Any] = dict(params or {})
        UniformLayout(self._params)  # reject bad parameters now, not on the GPU thread
        self._program: ShaderProgram | None = None
        self._lock = threading.Lock()
        self._latest: dict[str, VideoFrame] = {}
        self._t0: float | None = None
        self.version = 0
        """Counts shaders swapped in (0: the one given at construction)."""
        self.last_error: ShaderError | None = None
        self.frames_out = 0
        self.stale_frames = 0

    # -- what the shader sees ----------------------------------------------------------

    @property
    def shader_source(self) -> str:
        """The WGSL now running (the user's part)."""
        program = self._program
        return program.source if program is not None else self._source

    @property
    def prelude(self) -> str:
        """The declarations put before the WGSL (uniforms, textures, helpers)."""
        program = self._program
        if program is not None:
            return program.prelude
        return prelude(UniformLayout(self._params), self.textures)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def set_params(self, **values: Any) -> None:
        """Change parameters from the next frame (any thread)."""
        UniformLayout({**self._params, **values})  # raises on a bad value, in the caller
        with self._lock:
            self._params = {**self._params, **values}

    # -- live rewrite ------------------------------------------------------------------

    async def update_shader(self, source: str) -> int:
        """Compile ``source`` and swap it in between two frames; returns the new version.

        Raises :class:`~streamlib.gpu.ShaderCompileError` (``.error``: message, line,
        column) if it does not compile; the previous shader keeps running."""
        result: int = await asyncio.wrap_future(gpu_thread().call(self._swap, source))
        return result

    def _context(self) -> GPUContext:
        ctx = getattr(self, "gpu", None)
        return ctx if ctx is not None else context()

    def _compile(self, source: str, params: Mapping[str, Any]) -> ShaderProgram:
        return ShaderProgram(self._context(), source, textures=self.textures, params=params, passes=self.passes)

    def _swap(self, source: str) -> int:
        """Compile and install ``source`` (on the GPU thread)."""
        try:
            program = self._compile(source, self._params)
        except ShaderCompileError as exc:
            self.last_error = exc.error
            self._status(ShaderStatus(False, self.version, exc.error, time.monotonic()))
            raise
        self._program = program
        self._source = source
        self.version += 1
        self.last_error = None
        self._status(ShaderStatus(True, self.version, None, time.monotonic()))
        return self.version

    def _status(self, status: ShaderStatus) -> None:
        with contextlib.suppress(RuntimeError):  # a full blocking subscriber: it is in last_error too
            self.outputs["status"].send_nowait(status)

    # -- lifecycle -----------------------------------------------------------------------

    def on_restart(self, previous: Actor) -> None:
        """Keep the shader and parameters that were running (the last good ones)."""
        if isinstance(previous, ShaderActor):
            self._source = previous._source
            self._params = dict(previous._params)

    async def on_start(self) -> None:
        if self._program is None or self._program.ctx is not self._context():
            self._program = self._compile(self._source, self._params)

    async def process(self, tick: TimedTick) -> None:
        self._take_controls()
        program = self._program
        if program is None:
            return
        frames = self._take_frames()
        if frames is None:
            return
        if self._t0 is None:
            self._t0 = tick.timestamp
        images = [cast(GPUImage, f.data) for f in frames]
        size = self.size or (images[0].width, images[0].height)
        channels = self.channels or (images[0].channels if images else 3)
        if channels not in (3, 4):
            channels = 3
        params = self._params
        if not program.matches(params):
            try:
                program = self._compile(program.source, params)
                self._program = program
            except (ShaderCompileError, TypeError, ValueError) as exc:
                error = exc.error if isinstance(exc, ShaderCompileError) else ShaderError(str(exc))
                self.last_error = error
                self._status(ShaderStatus(False, self.version, error, time.monotonic()))
                with self._lock:  # back to parameters the running shader understands
                    self._params = {k: v for k, v in params.items() if k in dict(program.layout.signature)}
                params = self._params
        frame_number = frames[0].frame_number if frames else tick.frame_number
        try:
            out = program.run(images, size, channels, params, tick.timestamp - self._t0, frame_number)
        except Exception as exc:
            raise self._context().translate(exc) from exc
        message = frames[0].with_data(out) if frames else VideoFrame.at(tick, data=out)
        await self.outputs["video"].send(message)
        self.frames_out += 1

    def _take_controls(self) -> None:
        newest: str | None = None
        shader = self.inputs["shader"]
        while (text := shader.read_nowait()) is not None:
            newest = text
        if newest is not None:
            with contextlib.suppress(ShaderCompileError):  # reported on 'status' and in last_error
                self._swap(newest)
        port = self.inputs["params"]
        while (msg := port.read_nowait()) is not None:
            data = msg.data if isinstance(msg, DataMessage) else msg
            if isinstance(data, Mapping):
                try:
                    self.set_params(**data)
                except (TypeError, ValueError) as exc:
                    self.last_error = ShaderError(str(exc))
                    self._status(ShaderStatus(False, self.version, self.last_error, time.monotonic()))

    def _take_frames(self) -> list[VideoFrame] | None:
        """The frames for this tick: one new frame from the driving input, the newest of
        the others (or their last one); ``None`` when there is nothing new to render."""
        if not self.frame_inputs:
            return []
        primary, *others = self.frame_inputs
        frame = self.inputs[primary].read_nowait()
        if frame is None:
            return None
        frame = self._usable(frame)
        if frame is None:
            return None
        frames = [frame]
        for name in others:
            port = self.inputs[name]
            while (f := port.read_nowait()) is not None:
                usable = self._usable(f)
                if usable is not None:
                    self._latest[name] = usable
            last = self._latest.get(name)
            if last is None:
                return None  # every input must have delivered once
            frames.append(last)
        return frames

    def _usable(self, frame: VideoFrame) -> VideoFrame | None:
        """A GPU frame of this actor's device (CPU frames are uploaded; frames of a lost
        device are dropped and counted)."""
        if not frame.is_gpu():
            return frame.with_data(upload(frame.data, ctx=self._context()))
        if cast(GPUImage, frame.data).context is not self._context():
            self.stale_frames += 1
            return None
        return frame
