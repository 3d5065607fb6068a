"""GPU actors on wgpu: WGSL shader actors, ready effects, a compositor, CPU<->GPU transfers.

::

    from streamlib.actors.gpu import ShaderActor, Invert, Grade, GaussianBlur, ChromaKey, GPUCompositor

    camera >> Grade(contrast=1.2) >> GaussianBlur(sigma=3) >> display   # one upload, one download

Every actor here runs on ``dispatcher="gpu"`` (the GPU thread) and passes frames whose data
is a :class:`streamlib.gpu.GPUImage`. Importing this package registers the
:class:`Upload`/:class:`Download` transfers that ``>>`` inserts between CPU and GPU ports.
See ``docs/gpu.md``.
"""

from __future__ import annotations

from streamlib.gpu import GPUImage, ShaderCompileError, ShaderError

from .compose import GPUCompositor, GPULayer
from .effects import ChromaKey, ColorMatrix, GaussianBlur, Grade, Invert
from .shader import ShaderActor, ShaderProgram, ShaderStatus
from .transfer import Download, TransferWarning, Upload

__all__ = [
    "ChromaKey",
    "ColorMatrix",
    "Download",
    "GPUCompositor",
    "GPUImage",
    "GPULayer",
    "GaussianBlur",
    "Grade",
    "Invert",
    "ShaderActor",
    "ShaderCompileError",
    "ShaderError",
    "ShaderProgram",
    "ShaderStatus",
    "TransferWarning",
    "Upload",
]
