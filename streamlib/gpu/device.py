"""GPU-resident frames on wgpu: one shared context, a texture pool, cached pipelines, transfers.

::

    from streamlib import gpu

    ctx = gpu.context()                    # the process's one adapter + device (created once, logged once)
    image = gpu.upload(pixels)             # numpy (h, w, 3|4|1) uint8 -> GPUImage (a pooled texture)
    frame = VideoFrame(image)              # frame.is_gpu() is True; width/height/channels work as usual
    pixels = await gpu.download_async(image)   # back to numpy, without blocking the event loop

**The context.** :func:`context` returns the process's shared :class:`GPUContext`
(adapter, device, queue, texture pool, pipeline cache). The adapter is chosen by
:func:`configure` or by the ``STREAMLIB_GPU_ADAPTER`` environment variable (words that
must all appear in the adapter's name, vendor, backend or type, e.g. ``"nvidia"``,
``"vulkan"``, ``"llvmpipe"``, ``"cpu"``), else wgpu's high-performance choice; the choice
is logged once. Without a GPU, Mesa's software Vulkan driver (lavapipe, "llvmpipe")
runs everything on the CPU. A lost device marks the context :attr:`~GPUContext.lost`:
the actors using it fail with :class:`GPUDeviceLost`, and the next :func:`context` call
(a restarted actor's) creates a new device.

**GPU frames.** A :class:`GPUImage` is a ``rgba8unorm`` texture plus the logical number
of channels (3: alpha is 1; 4: straight alpha; 1: gray in r, g and b). It has ``shape``
``(height, width, channels)`` like the array it stands for, so ``VideoFrame`` properties
work unchanged, and it refuses to be used as a numpy array: transfers are explicit.

**The pool.** Textures come from :attr:`GPUContext.pool` and go back to it when the last
reference to their ``GPUImage`` goes (CPython frees it at once), so a steady stream of
frames allocates no GPU memory. Reusing a texture that earlier GPU work still reads is
safe: all work goes through one queue, in submission order.

**Transfers.** :func:`upload` writes a numpy image into a pooled texture (RGB and gray
are expanded to RGBA by a compute shader, on the GPU). :func:`download_async` packs the
texture back into tightly packed bytes on the GPU, copies them into a mappable buffer
and waits for the mapping on a readback thread, so the awaiting loop stays free;
:func:`download` is the blocking form, for code outside any event loop. Every transfer
is counted in :attr:`GPUContext.stats`.

``wgpu`` is imported only when a context is created: ``import streamlib`` never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from streamlib.worker import JobWorker, LazySingleton

from .thread import gpu_thread

__all__ = [
    "ENV_ADAPTER",
    "FORMAT",
    "DownloadJob",
    "GPUContext",
    "GPUDeviceLost",
    "GPUError",
    "GPUImage",
    "GPUUnavailableError",
    "LRUCache",
    "ShaderCompileError",
    "ShaderError",
    "TexturePool",
    "TransferStats",
    "configure",
    "context",
    "download",
    "download_async",
    "gpu_available",
    "parse_shader_error",
    "readback_thread",
    "upload",
    "upload_async",
]

log = logging.getLogger("streamlib.gpu")

ENV_ADAPTER = "STREAMLIB_GPU_ADAPTER"
"""Environment variable naming the adapter to use (words matched against its description)."""

FORMAT = "rgba8unorm"


# ----------------------------------------------------------------------------- errors


class GPUError(RuntimeError):
    """Base of streamlib's GPU errors."""


class GPUUnavailableError(GPUError):
    """No wgpu adapter could be created (no GPU and no software driver, or wgpu missing)."""


class GPUDeviceLost(GPUError):
    """The GPU device was lost (driver reset, device removed, destroyed). The actor that
    hit it fails; restarting it (a supervisor does) creates a new device."""


@dataclass(frozen=True, slots=True)
class ShaderError:
    """A WGSL compile error, located in the source the user wrote.

    ``line`` and ``column`` are 1-based (``0`` when the compiler gave no location, e.g.
    a missing entry point); ``source_line`` is that line's text; ``details`` is the
    compiler's full report."""

    message: str
    line: int = 0
    column: int = 0
    source_line: str = ""
    details: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON, or an agent's prompt)."""
        return {
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "source_line": self.source_line,
        }


class ShaderCompileError(GPUError):
    """WGSL that does not compile; :attr:`error` is the structured :class:`ShaderError`."""

    def __init__(self, error: ShaderError) -> None:
        super().__init__(f"WGSL compile error at {error}")
        self.error = error

    @property
    def message(self) -> str:
        return self.error.message

    @property
    def line(self) -> int:
        return self.error.line

    @property
    def column(self) -> int:
        return self.error.column


_LOCATION = re.compile(r"┌─ [^\n]*?:(\d+):(\d+)")


def parse_shader_error(report: str, source: str = "", line_offset: int = 0) -> ShaderError:
    """Turn wgpu/naga's text report into a :class:`ShaderError`.

    ``line_offset`` lines of generated code preceded the user's ``source`` in what was
    compiled; lines are reported in the user's numbering."""
    text = report.split("Caused by:", 1)[-1]
    lines = [ln.strip() for ln in text.splitlines()]
    headline = ""
    for ln in lines:
        if not ln or ln.startswith(("In wgpu", "┌─", "│", "=")) or re.match(r"^\d+\s*│", ln):
            continue
        headline = ln
        break
    headline = re.sub(r"^Shader '[^']*' ", "", headline)
    headline = re.sub(r"^Shader ", "", headline)
    notes = [ln[1:].strip() for ln in lines if ln.startswith("= ")]
    message = "; ".join([headline, *notes]) if notes else headline
    line = column = 0
    source_line = ""
    found = _LOCATION.search(report)
    if found:
        line, column = int(found.group(1)) - line_offset, int(found.group(2))
        if line < 1:
            message = f"{message} (in the generated declarations before your code)"
            line = column = 0
        else:
            src_lines = source.splitlines()
            if line <= len(src_lines):
                source_line = src_lines[line - 1]
    return ShaderError(message or report.strip(), line, column, source_line, report.strip())


# ----------------------------------------------------------------------------- settings


_settings: dict[str, str | None] = {"adapter": None, "power_preference": None}
_context: GPUContext | None = None
_context_lock = threading.RLock()
_generation = itertools.count(1)


def configure(*, adapter: str | None = None, power_preference: str | None = None) -> None:
    """Choose the adapter for the next context: ``adapter`` holds words that must all
    appear in its description (``"llvmpipe"``, ``"nvidia vulkan"``), overriding the
    ``STREAMLIB_GPU_ADAPTER`` environment variable; ``power_preference`` is
    ``"high-performance"`` (default) or ``"low-power"``. The context already in use, if
    any, is kept until it is lost."""
    with _context_lock:
        _settings["adapter"] = adapter
        _settings["power_preference"] = power_preference
        if _context is not None:
            log.warning(
                "streamlib.gpu.configure(): a GPU context exists already (%s); the setting applies to the next one",
                _context.name,
            )


def _import_wgpu() -> Any:
    try:
        import wgpu  # type: ignore[import-untyped]
    except ImportError as exc:
        raise GPUUnavailableError("streamlib's GPU actors need wgpu: pip install wgpu (or streamlib[gpu])") from exc
    except Exception as exc:  # its native library failed to load
        raise GPUUnavailableError(f"wgpu could not be loaded: {type(exc).__name__}: {exc}") from exc
    return wgpu


def _describe(adapter: Any) -> str:
    info = adapter.info
    return " ".join(str(info.get(k, "")) for k in ("device", "vendor", "description", "backend_type", "adapter_type"))


def _choose_adapter(wgpu: Any) -> tuple[Any, str]:
    want = _settings["adapter"] or os.environ.get(ENV_ADAPTER)
    if want:
        words = want.lower().split()
        adapters = wgpu.gpu.enumerate_adapters_sync()
        for adapter in adapters:
            if all(w in _describe(adapter).lower() for w in words):
                how = "streamlib.gpu.configure(adapter=...)" if _settings["adapter"] else ENV_ADAPTER
                return adapter, f"{how}={want!r}"
        names = "; ".join(_describe(a) for a in adapters) or "none"
        raise GPUUnavailableError(f"no GPU adapter matches {want!r} (available: {names})")
    preference = _settings["power_preference"] or "high-performance"
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference=preference)
    except Exception as exc:
        raise GPUUnavailableError(
            f"no GPU adapter: {exc}. Without a GPU, install Mesa's software Vulkan driver "
            "(apt-get install mesa-vulkan-drivers)"
        ) from exc
    if adapter is None:
        raise GPUUnavailableError(
            "no GPU adapter (Mesa lavapipe/llvmpipe not installed?): apt-get install mesa-vulkan-drivers"
        )
    return adapter, f"wgpu's {preference} default (set {ENV_ADAPTER} to choose)"


class _LostWatch(logging.Filter):
    """wgpu reports a lost device only through its log: mark the context lost when it does."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        if "device was lost" in text or "DEVICE LOST" in text:
            ctx = _context
            if ctx is not None and not ctx.lost:
                ctx._mark_lost(text.strip().splitlines()[-1] if text.strip() else "device lost")
        return True


_watch_installed = False


def context() -> GPUContext:
    """The process's shared GPU context, created on first use (thread-safe). After the
    device is lost, the next call creates a new one."""
    global _context, _watch_installed
    ctx = _context
    if ctx is not None and not ctx.lost:
        return ctx
    with _context_lock:
        ctx = _context
        if ctx is not None and not ctx.lost:
            return ctx
        wgpu = _import_wgpu()
        if not _watch_installed:
            logging.getLogger("wgpu").addFilter(_LostWatch())
            _watch_installed = True
        adapter, how = _choose_adapter(wgpu)
        try:
            device = adapter.request_device_sync()
        except Exception as exc:
            raise GPUUnavailableError(f"could not open a device on {_describe(adapter)}: {exc}") from exc
        ctx = GPUContext(adapter, device, how)
        if _context is not None:
            log.warning("GPU device lost (%s); new context %s", _context.lost_reason, ctx.name)
        elif ctx.software:
            log.warning(
                "GPU context: %s, chosen by %s -- a software adapter: GPU actors run on the CPU cores", ctx.name, how
            )
        else:
            log.info("GPU context: %s, chosen by %s", ctx.name, how)
        _context = ctx
        return ctx


def gpu_available() -> bool:
    """Whether a GPU context can be created here (creating it if needed)."""
    try:
        context()
    except GPUUnavailableError:
        return False
    return True


# ----------------------------------------------------------------------------- the pool


class _Slot:
    """One pooled texture, its view, and the bind groups made for it (they live and die
    with the texture); ``serial`` identifies it for other bind-group caches."""

    __slots__ = ("groups", "key", "nbytes", "serial", "texture", "view")

    def __init__(self, texture: Any, key: tuple[int, int], serial: int) -> None:
        self.texture = texture
        self.view = texture.create_view()
        self.key = key
        self.nbytes = key[0] * key[1] * 4
        self.serial = serial
        self.groups: dict[Hashable, Any] = {}


class TexturePool:
    """Textures by size, handed out as :class:`GPUImage` and taken back when the image goes.

    A released texture is kept for reuse, so a size holds as many textures as were ever in
    use at once (what a steady stream needs: after warm-up nothing is allocated);
    ``max_free`` caps the idle ones per size (``None``: no cap). Idle textures are kept
    for the ``max_sizes`` most recently used sizes; those of older sizes are destroyed.
    :meth:`clear` destroys every idle texture. Counters: :attr:`allocated` (textures ever
    created), :attr:`reused`, :attr:`destroyed`, :attr:`live_bytes` (GPU memory held by
    the pool's textures, in use or idle)."""

    def __init__(self, ctx: GPUContext, max_free: int | None = None, max_sizes: int = 8) -> None:
        self.ctx = ctx
        self.max_free = max_free
        self.max_sizes = max_sizes
        self._free: OrderedDict[tuple[int, int], list[_Slot]] = OrderedDict()
        # Every slot handed out, by serial. The pool must hold the in-use textures itself:
        # when garbage collection frees a reference cycle that holds a GPUImage, everything
        # reachable only from that cycle is finalized together, and wgpu's finalizers release
        # the native texture and bind groups -- while GPUImage.__del__ hands the same slot back
        # for reuse. A slot reachable from the pool is never part of such garbage.
        self._in_use: dict[int, _Slot] = {}
        self._lock = threading.RLock()  # re-entered when garbage collection releases an image meanwhile
        self._serials = itertools.count(1)
        self.allocated = 0
        self.reused = 0
        self.destroyed = 0
        self.in_use = 0
        self.live_bytes = 0

    def acquire(self, width: int, height: int, channels: int = 4) -> GPUImage:
        """A texture of this size for a new image (reused when one is idle)."""
        if width < 1 or height < 1:
            raise ValueError(f"a GPU image needs a positive size, got {width}x{height}")
        if channels not in (1, 3, 4):
            raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}")
        key = (int(width), int(height))
        evicted: list[_Slot] = []
        with self._lock:
            free = self._free.get(key)
            if free is None:
                free = self._free[key] = []
                while len(self._free) > self.max_sizes:  # forget the least recently used size
                    evicted += self._free.popitem(last=False)[1]
            else:
                self._free.move_to_end(key)
            slot = free.pop() if free else None
            if slot is not None:
                self.reused += 1
                self._in_use[slot.serial] = slot
            self.in_use += 1
            self.destroyed += len(evicted)
            self.live_bytes -= sum(e.nbytes for e in evicted)
        self._destroy(old.texture for old in evicted)
        if slot is None:
            slot = self._create(key)
        return GPUImage._make(slot, self, channels)

    def _create(self, key: tuple[int, int]) -> _Slot:
        wgpu = _import_wgpu()
        usage = (
            wgpu.TextureUsage.TEXTURE_BINDING
            | wgpu.TextureUsage.STORAGE_BINDING
            | wgpu.TextureUsage.COPY_SRC
            | wgpu.TextureUsage.COPY_DST
        )
        try:
            texture = self.ctx.device.create_texture(size=(key[0], key[1], 1), format=FORMAT, usage=usage)
        except Exception as exc:
            with self._lock:
                self.in_use -= 1
            raise self.ctx.translate(exc) from exc
        with self._lock:
            self.allocated += 1
            self.live_bytes += key[0] * key[1] * 4
            slot = _Slot(texture, key, next(self._serials))
            self._in_use[slot.serial] = slot
            return slot

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            self._in_use.pop(slot.serial, None)
            self.in_use -= 1
            free = self._free.get(slot.key)
            if free is not None and (self.max_free is None or len(free) < self.max_free) and not self.ctx.lost:
                free.append(slot)
                return
            self.destroyed += 1
            self.live_bytes -= slot.nbytes
        self._destroy([slot.texture])

    def clear(self) -> None:
        """Destroy every idle texture."""
        with self._lock:
            slots = [s for free in self._free.values() for s in free]
            self._free.clear()
            self.destroyed += len(slots)
            self.live_bytes -= sum(s.nbytes for s in slots)
        self._destroy(slot.texture for slot in slots)

    def _destroy(self, textures: Iterable[Any]) -> None:
        """Free textures now, under the context's lock (this may run in any thread's garbage
        collection, while the GPU thread is using the queue)."""
        with self.ctx.lock:
            for texture in textures:
                with contextlib.suppress(Exception):  # a lost device: nothing left to free
                    texture.destroy()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "allocated": self.allocated,
                "reused": self.reused,
                "destroyed": self.destroyed,
                "in_use": self.in_use,
                "idle": sum(len(f) for f in self._free.values()),
                "live_bytes": self.live_bytes,
            }


class GPUImage:
    """A frame's pixels in a GPU texture (``rgba8unorm``): what ``VideoFrame.data`` holds
    for a GPU frame. ``shape`` is ``(height, width, channels)``; the texture goes back to
    its pool when the last reference to this object goes."""

    memory: ClassVar[str] = "gpu"
    ndim: ClassVar[int] = 3
    dtype: ClassVar[np.dtype[np.uint8]] = np.dtype(np.uint8)

    __slots__ = ("__weakref__", "_pool", "_slot", "channels", "context", "height", "width")

    _slot: _Slot
    _pool: TexturePool | None
    channels: int
    context: GPUContext
    width: int
    height: int

    @classmethod
    def _make(cls, slot: _Slot, pool: TexturePool, channels: int) -> GPUImage:
        self = object.__new__(cls)
        self._slot = slot
        self._pool = pool
        self.context = pool.ctx
        self.width, self.height = slot.key
        self.channels = channels
        return self

    def __init__(self) -> None:
        raise TypeError("GPUImage comes from streamlib.gpu.upload() or GPUContext.pool.acquire()")

    @property
    def texture(self) -> Any:
        """The ``wgpu.GPUTexture``."""
        return self._slot.texture

    @property
    def view(self) -> Any:
        """A view of the whole texture (created once per pooled texture)."""
        return self._slot.view

    @property
    def serial(self) -> int:
        """Unique per pooled texture (stable while it is reused): a key for bind-group caches."""
        return self._slot.serial

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def bind_group(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """A bind group that involves this texture, made once by ``make()`` and kept with the
        pooled texture (so a steady stream creates none): e.g. ``key="dst"`` for one whose
        only entry is this texture as a storage texture, of a layout shared by all pipelines."""
        groups = self._slot.groups
        group = groups.get(key)
        if group is None:
            group = groups[key] = make()
        return group

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels

    def download(self) -> NDArray[np.uint8]:
        """Copy to a numpy array, blocking (see :func:`download`)."""
        return download(self)

    async def download_async(self) -> NDArray[np.uint8]:
        """Copy to a numpy array without blocking the loop (see :func:`download_async`)."""
        return await download_async(self)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this frame's data is a GPU texture: download it first (await streamlib.gpu.download_async(image)), "
            "or connect a CPU actor through a port with memory='cpu' so a Download actor is inserted"
        )

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            self._pool = None
            with contextlib.suppress(Exception):  # interpreter shutdown
                pool._release(self._slot)

    def __repr__(self) -> str:
        return f"<GPUImage {self.width}x{self.height}x{self.channels} texture #{self._slot.serial}>"


# ----------------------------------------------------------------------------- the context


@dataclass
class TransferStats:
    """Counts and cumulative wall time of CPU↔GPU transfers through this context."""

    uploads: int = 0
    upload_bytes: int = 0
    upload_seconds: float = 0.0
    downloads: int = 0
    download_bytes: int = 0
    download_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "uploads": self.uploads,
                "upload_bytes": self.upload_bytes,
                "upload_seconds": self.upload_seconds,
                "downloads": self.downloads,
                "download_bytes": self.download_bytes,
                "download_seconds": self.download_seconds,
            }

    def _add(self, kind: str, nbytes: int, seconds: float) -> None:
        with self._lock:
            if kind == "upload":
                self.uploads += 1
                self.upload_bytes += nbytes
                self.upload_seconds += seconds
            else:
                self.downloads += 1
                self.download_bytes += nbytes
                self.download_seconds += seconds


class LRUCache:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


_UNPACK_WGSL = """
// Tightly packed bytes (1, 3 or 4 per pixel) -> rgba8unorm texture; one invocation per 4 pixels.
struct Shape { width: u32, height: u32, channels: u32, words: u32 }
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var<storage, read> data: array<u32>;
@group(0) @binding(2) var dst: texture_storage_2d<rgba8unorm, write>;

fn word(index: u32) -> u32 {
    return select(0u, data[min(index, shape.words - 1u)], index < shape.words);
}

fn put(n: u32, rgba: vec4<f32>) {
    if (n < shape.width * shape.height) {
        textureStore(dst, vec2<i32>(i32(n % shape.width), i32(n / shape.width)), rgba);
    }
}

fn gray(v: u32) -> vec4<f32> {
    let g = f32(v & 255u) / 255.0;
    return vec4<f32>(g, g, g, 1.0);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x + id.y * 65535u * 64u;
    let n = i * 4u;
    if (n >= shape.width * shape.height) { return; }
    if (shape.channels == 4u) {
        put(n, unpack4x8unorm(word(i * 4u)));
        put(n + 1u, unpack4x8unorm(word(i * 4u + 1u)));
        put(n + 2u, unpack4x8unorm(word(i * 4u + 2u)));
        put(n + 3u, unpack4x8unorm(word(i * 4u + 3u)));
    } else if (shape.channels == 3u) {
        let w0 = word(i * 3u);
        let w1 = word(i * 3u + 1u);
        let w2 = word(i * 3u + 2u);
        let opaque = 0xff000000u;
        put(n, unpack4x8unorm((w0 & 0xffffffu) | opaque));
        put(n + 1u, unpack4x8unorm((w0 >> 24u) | ((w1 & 0xffffu) << 8u) | opaque));
        put(n + 2u, unpack4x8unorm((w1 >> 16u) | ((w2 & 0xffu) << 16u) | opaque));
        put(n + 3u, unpack4x8unorm((w2 >> 8u) | opaque));
    } else {
        let w0 = word(i);
        put(n, gray(w0));
        put(n + 1u, gray(w0 >> 8u));
        put(n + 2u, gray(w0 >> 16u));
        put(n + 3u, gray(w0 >> 24u));
    }
}
"""

_PACK_WGSL = """
// rgba8unorm texture -> tightly packed bytes (1, 3 or 4 per pixel); one invocation per 4 pixels.
struct Shape { width: u32, height: u32, channels: u32, words: u32 }
@group(0) @binding(0) var<uniform> shape: Shape;
@group(0) @binding(1) var src: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> data: array<u32>;

fn texel(n: u32) -> u32 {
    let m = min(n, shape.width * shape.height - 1u);
    return pack4x8unorm(textureLoad(src, vec2<i32>(i32(m % shape.width), i32(m / shape.width)), 0));
}

fn put(index: u32, value: u32) {
    if (index < shape.words) { data[index] = value; }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x + id.y * 65535u * 64u;
    let n = i * 4u;
    if (n >= shape.width * shape.height) { return; }
    let p0 = texel(n);
    let p1 = texel(n + 1u);
    let p2 = texel(n + 2u);
    let p3 = texel(n + 3u);
    if (shape.channels == 4u) {
        put(i * 4u, p0);
        put(i * 4u + 1u, p1);
        put(i * 4u + 2u, p2);
        put(i * 4u + 3u, p3);
    } else if (shape.channels == 3u) {
        put(i * 3u, (p0 & 0xffffffu) | (p1 << 24u));
        put(i * 3u + 1u, ((p1 >> 8u) & 0xffffu) | (p2 << 16u));
        put(i * 3u + 2u, ((p2 >> 16u) & 0xffu) | (p3 << 8u));
    } else {
        put(i, (p0 & 255u) | ((p1 & 255u) << 8u) | ((p2 & 255u) << 16u) | ((p3 & 255u) << 24u));
    }
}
"""


def _groups(pixels: int) -> tuple[int, int]:
    """Workgroups (x, y) for one invocation per 4 pixels, 64 per group."""
    groups = max((pixels + 255) // 256, 1)
    return min(groups, 65535), (groups + 65534) // 65535


def _storage_entries(wgpu: Any) -> list[dict[str, Any]]:
    return [
        {
            "binding": 0,
            "visibility": wgpu.ShaderStage.COMPUTE,
            "storage_texture": {"access": "write-only", "format": FORMAT, "view_dimension": "2d"},
        }
    ]


def _texture_entries(wgpu: Any, count: int) -> list[dict[str, Any]]:
    return [
        {
            "binding": i,
            "visibility": wgpu.ShaderStage.COMPUTE,
            "texture": {"sample_type": "float", "view_dimension": "2d"},
        }
        for i in range(count)
    ]


class _UploadSlot:
    __slots__ = ("data", "nbytes", "uniform")

    def __init__(self, data: Any, uniform: Any, nbytes: int) -> None:
        self.data, self.uniform, self.nbytes = data, uniform, nbytes


class _DownloadSlot:
    __slots__ = ("free_maps", "nbytes", "storage", "uniform", "words")

    def __init__(self, storage: Any, uniform: Any, nbytes: int, words: int) -> None:
        self.storage, self.uniform, self.nbytes, self.words = storage, uniform, nbytes, words
        self.free_maps: list[Any] = []


class GPUContext:
    """The process's GPU: adapter, device, queue, texture pool and pipeline cache.

    Get it with :func:`context` (or ``self.gpu`` in an actor on ``dispatcher="gpu"``).
    """

    def __init__(self, adapter: Any, device: Any, chosen_by: str = "") -> None:
        self.adapter = adapter
        self.device = device
        self.queue = device.queue
        self.info: dict[str, Any] = dict(adapter.info)
        self.chosen_by = chosen_by
        self.generation = next(_generation)
        self.name = (
            f"{self.info.get('device', '?')} ({self.info.get('backend_type', '?')}, "
            f"{self.info.get('adapter_type', '?')})"
        )
        self.software = str(self.info.get("adapter_type", "")).lower() == "cpu"
        self.convert_on_cpu = self.software
        """Expand RGB to RGBA (upload) and drop alpha (download) on the CPU rather than in a
        compute shader: cheaper where the "GPU" is the CPU (a software adapter), else off."""
        self.lost = False
        self.lost_reason: str | None = None
        self.pool = TexturePool(self)
        self.stats = TransferStats()
        self._pipelines = LRUCache(128)
        self._layouts = LRUCache(256)
        self._lock = threading.RLock()
        self.lock = self._lock
        """Held around every call that touches the device or its queue (encode, submit, write,
        map, destroy). wgpu-native is not safe against all interleavings of those calls from
        several threads (a queue write racing a submit from another thread can abort the
        process), and GPU work here comes from the GPU thread, the readback thread and any
        thread whose garbage collection releases a texture."""
        self._upload_slots: dict[tuple[int, int, int], _UploadSlot] = {}
        self._download_slots: dict[tuple[int, int, int], _DownloadSlot] = {}
        wgpu = _import_wgpu()
        self._wgpu = wgpu
        self.sampler = device.create_sampler(
            mag_filter="linear", min_filter="linear", address_mode_u="clamp-to-edge", address_mode_v="clamp-to-edge"
        )
        self._unpack = self.compute_pipeline(
            _UNPACK_WGSL,
            [
                [
                    {"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": "uniform"}},
                    {"binding": 1, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": "read-only-storage"}},
                    {
                        "binding": 2,
                        "visibility": wgpu.ShaderStage.COMPUTE,
                        "storage_texture": {"access": "write-only", "format": FORMAT, "view_dimension": "2d"},
                    },
                ]
            ],
        )
        self._pack = self.compute_pipeline(
            _PACK_WGSL,
            [
                [
                    {"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": "uniform"}},
                    {
                        "binding": 1,
                        "visibility": wgpu.ShaderStage.COMPUTE,
                        "texture": {"sample_type": "float", "view_dimension": "2d"},
                    },
                    {"binding": 2, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": "storage"}},
                ]
            ],
        )

    # -- state -------------------------------------------------------------------------

    def _mark_lost(self, reason: str) -> None:
        if not self.lost:
            self.lost = True
            self.lost_reason = reason
            log.error("GPU device lost: %s (%s)", self.name, reason)

    def check(self) -> None:
        """Raise :class:`GPUDeviceLost` if the device is gone."""
        if self.lost:
            raise GPUDeviceLost(
                f"the GPU device {self.name} was lost ({self.lost_reason}); restart the actor to get a new one"
            )

    def translate(self, exc: BaseException) -> BaseException:
        """``exc``, or a :class:`GPUDeviceLost` for it if the device is gone."""
        if isinstance(exc, GPUDeviceLost):
            return exc
        text = str(exc).lower()
        if "device is lost" in text or "device lost" in text or "device was lost" in text:
            self._mark_lost(str(exc).strip().splitlines()[-1] if str(exc).strip() else "lost")
        if self.lost:
            return GPUDeviceLost(
                f"the GPU device {self.name} was lost ({self.lost_reason}) during {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}; restarting the actor "
                "creates a new device"
            )
        return exc

    def lose(self, reason: str = "destroyed by GPUContext.lose()") -> None:
        """Destroy the device, as a driver reset would (for tests of recovery)."""
        with self._lock:  # never in the middle of another thread's queue write or submit
            self._mark_lost(reason)
            with contextlib.suppress(Exception):
                self.device.destroy()

    def memory(self) -> dict[str, Any]:
        """What this context holds: the pool's counters plus wgpu's live object counts."""
        counts: dict[str, Any] = {}
        try:
            totals = self._wgpu.diagnostics.object_counts.get_dict()
            counts = {
                "textures": totals.get("Texture", {}).get("count", 0),
                "buffers": totals.get("Buffer", {}).get("count", 0),
                "bind_groups": totals.get("BindGroup", {}).get("count", 0),
                "resource_mem": totals.get("total", {}).get("resource_mem", 0),
            }
        except Exception:
            pass
        return {**self.pool.stats(), **counts, "pipelines": len(self._pipelines)}

    # -- shared layouts for ShaderActor-style pipelines -----------------------------------

    def storage_entries(self) -> list[dict[str, Any]]:
        """Layout entries of a bind group holding one write-only ``rgba8unorm`` storage texture."""
        return _storage_entries(self._wgpu)

    def texture_entries(self, count: int) -> list[dict[str, Any]]:
        """Layout entries of a bind group holding ``count`` sampled float textures (bindings 0..count-1)."""
        return _texture_entries(self._wgpu, count)

    # -- pipelines ---------------------------------------------------------------------

    def bind_group_layout(self, entries: list[dict[str, Any]]) -> Any:
        """The bind group layout for these entries, one object per distinct layout (so bind
        groups made for it fit every pipeline that uses the same entries)."""
        return self._layouts.get(repr(entries), lambda: self.device.create_bind_group_layout(entries=entries))

    def compute_pipeline(
        self,
        code: str,
        groups: list[list[dict[str, Any]]],
        entry_point: str = "main",
        *,
        user_source: str | None = None,
        line_offset: int = 0,
    ) -> tuple[Any, list[Any]]:
        """``(pipeline, bind_group_layouts)`` for WGSL ``code`` with one list of layout
        entries per bind group (``@group(i)``), compiled once and cached.

        A compile error raises :class:`ShaderCompileError`, located in ``user_source``
        when ``code`` is ``line_offset`` generated lines followed by it."""
        key = (code, entry_point, repr(groups))

        def build() -> tuple[Any, list[Any]]:
            self.check()
            try:
                with self._lock:
                    module = self.device.create_shader_module(code=code)
                    layout = [self.bind_group_layout(entries) for entries in groups]
                    pipeline_layout = self.device.create_pipeline_layout(bind_group_layouts=layout)
                    pipeline = self.device.create_compute_pipeline(
                        layout=pipeline_layout, compute={"module": module, "entry_point": entry_point}
                    )
            except Exception as exc:
                translated = self.translate(exc)
                if translated is not exc:
                    raise translated from exc
                if type(exc).__name__.startswith("GPU"):
                    src = user_source if user_source is not None else code
                    raise ShaderCompileError(parse_shader_error(str(exc), src, line_offset)) from None
                raise
            return pipeline, layout

        result: tuple[Any, list[Any]] = self._pipelines.get(key, build)
        return result

    def pipeline(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """Any pipeline (a render pipeline, ...) built once by ``build()`` and cached by ``key``."""
        return self._pipelines.get(("custom", key), build)

    def uniform_buffer(self, size: int) -> Any:
        """A new uniform buffer of at least ``size`` bytes (rounded up to 16), writable by the queue."""
        wgpu = self._wgpu
        return self.device.create_buffer(
            size=max(16, (size + 15) // 16 * 16), usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
        )

    # -- transfers (see upload / download) ------------------------------------------------

    def _upload_slot(self, width: int, height: int, channels: int) -> _UploadSlot:
        key = (width, height, channels)
        slot = self._upload_slots.get(key)
        if slot is None:
            wgpu = self._wgpu
            nbytes = width * height * channels
            words = (nbytes + 3) // 4
            data = self.device.create_buffer(
                size=max(4, words * 4), usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST
            )
            uniform = self.uniform_buffer(16)
            self.queue.write_buffer(uniform, 0, np.array([width, height, channels, words], np.uint32))
            slot = self._upload_slots[key] = _UploadSlot(data, uniform, nbytes)
        return slot

    def _download_slot(self, width: int, height: int, channels: int, on_cpu: bool) -> _DownloadSlot:
        key = (width, height, channels if not on_cpu else -1)
        slot = self._download_slots.get(key)
        if slot is None:
            wgpu = self._wgpu
            if on_cpu:  # the whole RGBA texture, rows padded to 256 bytes as copies require
                row = (width * 4 + 255) // 256 * 256
                slot = _DownloadSlot(None, None, height * row, (height * row) // 4)
            else:
                nbytes = width * height * channels
                words = (nbytes + 3) // 4
                storage = self.device.create_buffer(
                    size=max(4, words * 4), usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC
                )
                uniform = self.uniform_buffer(16)
                self.queue.write_buffer(uniform, 0, np.array([width, height, channels, words], np.uint32))
                slot = _DownloadSlot(storage, uniform, nbytes, words)
            self._download_slots[key] = slot
        return slot

    def upload(self, array: NDArray[np.uint8]) -> GPUImage:
        """See :func:`upload`."""
        self.check()
        a = np.asarray(array)
        if a.dtype != np.uint8:
            raise TypeError(f"upload() takes uint8 images, got {a.dtype}")
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ValueError(f"upload() takes (h, w), (h, w, 1|3|4) images, got shape {a.shape}")
        height, width, channels = (int(n) for n in a.shape)
        start = time.perf_counter()
        nbytes = a.nbytes
        image = self.pool.acquire(width, height, channels)
        try:
            if channels != 4 and self.convert_on_cpu:
                a = _to_rgba(a)
            if a.shape[2] == 4:
                a = np.ascontiguousarray(a)
                with self._lock:
                    self.check()  # lost meanwhile (lose() holds the lock while it destroys)
                    self.queue.write_texture(
                        {"texture": image.texture},
                        a,
                        {"bytes_per_row": width * 4, "rows_per_image": height},
                        (width, height, 1),
                    )
            else:
                self._unpack_on_gpu(np.ascontiguousarray(a), image)
        except Exception as exc:
            raise self.translate(exc) from exc
        self.stats._add("upload", nbytes, time.perf_counter() - start)
        return image

    def _unpack_on_gpu(self, a: NDArray[np.uint8], image: GPUImage) -> None:
        height, width, channels = a.shape
        with self._lock:
            slot = self._upload_slot(width, height, channels)
            flat = a.reshape(-1)
            whole = flat.size // 4 * 4
            if whole:
                self.queue.write_buffer(slot.data, 0, flat[:whole])
            if whole < flat.size:
                tail = np.zeros(4, np.uint8)
                tail[: flat.size - whole] = flat[whole:]
                self.queue.write_buffer(slot.data, whole, tail)
            group = image.bind_group(
                ("unpack", channels),
                lambda: self.device.create_bind_group(
                    layout=self._unpack[1][0],
                    entries=[
                        {"binding": 0, "resource": {"buffer": slot.uniform}},
                        {"binding": 1, "resource": {"buffer": slot.data}},
                        {"binding": 2, "resource": image.view},
                    ],
                ),
            )
            encoder = self.device.create_command_encoder()
            cpass = encoder.begin_compute_pass()
            cpass.set_pipeline(self._unpack[0])
            cpass.set_bind_group(0, group)
            cpass.dispatch_workgroups(*_groups(width * height), 1)
            cpass.end()
            self.queue.submit([encoder.finish()])

    def start_download(self, image: GPUImage) -> DownloadJob:
        """Start a download: the copy of ``image`` into a mappable buffer, encoded and
        submitted. ``job.finish()`` waits for the GPU (blocking: call it on a worker thread,
        e.g. ``readback_thread().submit(job.finish)``) and returns the numpy pixels."""
        self.check()
        if image.context is not self:
            raise GPUError(f"{image!r} belongs to another GPU context (a lost device's?)")
        start = time.perf_counter()
        width, height, channels = image.width, image.height, image.channels
        on_cpu = self.convert_on_cpu
        wgpu = self._wgpu
        try:
            with self._lock:
                slot = self._download_slot(width, height, channels, on_cpu)
                size = max(4, slot.words * 4)
                target = (
                    slot.free_maps.pop()
                    if slot.free_maps
                    else self.device.create_buffer(
                        size=size, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
                    )
                )
                encoder = self.device.create_command_encoder()
                if on_cpu:
                    encoder.copy_texture_to_buffer(
                        {"texture": image.texture},
                        {"buffer": target, "bytes_per_row": size // height, "rows_per_image": height},
                        (width, height, 1),
                    )
                else:
                    storage = slot.storage
                    group = image.bind_group(
                        ("pack", channels),
                        lambda: self.device.create_bind_group(
                            layout=self._pack[1][0],
                            entries=[
                                {"binding": 0, "resource": {"buffer": slot.uniform}},
                                {"binding": 1, "resource": image.view},
                                {"binding": 2, "resource": {"buffer": storage}},
                            ],
                        ),
                    )
                    cpass = encoder.begin_compute_pass()
                    cpass.set_pipeline(self._pack[0])
                    cpass.set_bind_group(0, group)
                    cpass.dispatch_workgroups(*_groups(width * height), 1)
                    cpass.end()
                    encoder.copy_buffer_to_buffer(storage, 0, target, 0, size)
                self.queue.submit([encoder.finish()])
        except Exception as exc:
            raise self.translate(exc) from exc
        return DownloadJob(self, target, slot, image.shape, on_cpu, start)

    def __repr__(self) -> str:
        state = " LOST" if self.lost else ""
        return f"<GPUContext {self.name} #{self.generation}{state}>"


class DownloadJob:
    """The second half of a download: wait for the mapping, copy the pixels out.

    Afterwards ``wait_s`` is how long the mapping took (the GPU finishing the work queued
    before the copy, and the copy) and ``copy_s`` the CPU time to copy the pixels out."""

    __slots__ = ("copy_s", "ctx", "encode_s", "on_cpu", "shape", "slot", "start", "target", "wait_s")

    def __init__(
        self, ctx: GPUContext, target: Any, slot: _DownloadSlot, shape: tuple[int, int, int], on_cpu: bool, start: float
    ) -> None:
        self.ctx, self.target, self.slot, self.shape, self.on_cpu, self.start = ctx, target, slot, shape, on_cpu, start
        self.encode_s = time.perf_counter() - start
        self.wait_s = self.copy_s = 0.0

    def finish(self) -> NDArray[np.uint8]:
        """Map the buffer (blocking this thread until the GPU is done) and copy the bytes out."""
        ctx, target, slot = self.ctx, self.target, self.slot
        size = max(4, slot.words * 4)
        begin = time.perf_counter()
        try:
            with ctx._lock:  # map_async may submit (wgpu-py syncs a buffer's first read that way)
                ctx.check()
                promise = target.map_async(ctx._wgpu.MapMode.READ)
            promise.sync_wait()  # wgpu's poller thread completes it; no lock held meanwhile
            mapped = time.perf_counter()
            with ctx._lock:
                try:
                    data = target.read_mapped(0, size, copy=True)
                finally:
                    target.unmap()
        except Exception as exc:
            raise ctx.translate(exc) from exc
        with ctx._lock:
            if len(slot.free_maps) < 4:
                slot.free_maps.append(target)
        height, width, channels = self.shape
        if self.on_cpu:
            rows = np.frombuffer(data, np.uint8, count=size).reshape(height, size // height)
            pixels = _from_rgba(rows[:, : width * 4].reshape(height, width, 4), channels)
        else:
            pixels = np.frombuffer(data, np.uint8, count=slot.nbytes).reshape(self.shape)
        end = time.perf_counter()
        self.wait_s, self.copy_s = mapped - begin, end - mapped
        ctx.stats._add("download", width * height * channels, end - self.start)
        return pixels


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _to_rgba(a: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """RGB or gray (h, w, 1|3) to RGBA with alpha 255, on the CPU (OpenCV if present)."""
    cv2 = _cv2()
    channels = a.shape[2]
    if cv2 is not None:
        code = cv2.COLOR_RGB2RGBA if channels == 3 else cv2.COLOR_GRAY2RGBA
        return cv2.cvtColor(np.ascontiguousarray(a), code)  # type: ignore[no-any-return]
    rgba = np.empty((*a.shape[:2], 4), np.uint8)
    rgba[..., :3] = a
    rgba[..., 3] = 255
    return rgba


def _from_rgba(rgba: NDArray[np.uint8], channels: int) -> NDArray[np.uint8]:
    """A new (h, w, channels) array from an RGBA view, on the CPU (OpenCV if present)."""
    if channels == 4:
        return np.ascontiguousarray(rgba) if not rgba.flags.c_contiguous else rgba
    if channels == 1:
        return np.ascontiguousarray(rgba[..., :1])
    cv2 = _cv2()
    if cv2 is not None:
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # type: ignore[no-any-return]
    return np.ascontiguousarray(rgba[..., :3])


# ----------------------------------------------------------------------------- transfers


def upload(array: NDArray[np.uint8], *, ctx: GPUContext | None = None) -> GPUImage:
    """Copy a numpy image (``(h, w)`` or ``(h, w, 1|3|4)`` uint8) into a pooled texture.

    Runs in the calling thread (a memcpy into wgpu's staging memory, plus a small compute
    pass for RGB and gray); actors on ``dispatcher="gpu"`` call it on the GPU thread.
    From event-loop code, prefer ``await upload_async(array)``."""
    return (ctx or context()).upload(array)


async def upload_async(array: NDArray[np.uint8], *, ctx: GPUContext | None = None) -> GPUImage:
    """:func:`upload`, run on the GPU thread so the awaiting loop is not held."""
    worker = gpu_thread()
    if worker.is_current():
        return upload(array, ctx=ctx)
    return await asyncio.wrap_future(worker.call(upload, array, ctx=ctx))


def download(image: GPUImage) -> NDArray[np.uint8]:
    """Copy a GPU image back into a new numpy array ``(h, w, channels)``, blocking until
    the GPU is done. Not for event-loop threads (it would hold the loop): there, use
    ``await download_async(image)``."""
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(
            "streamlib.gpu.download() blocks until the GPU is done, which would hold this event loop; "
            "use 'await streamlib.gpu.download_async(image)'"
        )
    return image.context.start_download(image).finish()


async def download_async(image: GPUImage) -> NDArray[np.uint8]:
    """Copy a GPU image back into a new numpy array ``(h, w, channels)``.

    The copy is encoded and submitted on the GPU thread, and the wait for the GPU
    happens on a readback thread: the awaiting event loop is never blocked."""
    worker = gpu_thread()
    if not worker.is_current():
        return await asyncio.wrap_future(worker.call(download_async, image))
    job = image.context.start_download(image)
    return await asyncio.wrap_future(readback_thread().submit(job.finish))


readback_thread: LazySingleton[JobWorker] = LazySingleton(lambda: JobWorker("streamlib-gpu-readback"))
"""The thread that waits for buffer mappings, so no event loop has to (started on first use)."""
