"""The GPU layer: one shared wgpu context, pooled textures, transfers and the GPU dispatcher.

A layer on top of the core (it uses only ``streamlib``'s public API). ``wgpu`` itself is
imported only when a context is created, so importing this package is cheap. See
:mod:`streamlib.gpu.device` for the context and transfers and :mod:`streamlib.gpu.dispatch`
for ``dispatcher="gpu"``.
"""

from __future__ import annotations

from .device import (
    ENV_ADAPTER,
    FORMAT,
    DownloadJob,
    GPUContext,
    GPUDeviceLost,
    GPUError,
    GPUImage,
    GPUUnavailableError,
    LRUCache,
    ShaderCompileError,
    ShaderError,
    TexturePool,
    TransferStats,
    configure,
    context,
    download,
    download_async,
    gpu_available,
    parse_shader_error,
    readback_thread,
    upload,
    upload_async,
)
from .dispatch import GPUDispatcher
from .thread import GPUThread, gpu_thread

__all__ = [
    "ENV_ADAPTER",
    "FORMAT",
    "DownloadJob",
    "GPUContext",
    "GPUDeviceLost",
    "GPUDispatcher",
    "GPUError",
    "GPUImage",
    "GPUThread",
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
    "gpu_thread",
    "parse_shader_error",
    "readback_thread",
    "upload",
    "upload_async",
]
