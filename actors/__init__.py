"""Ready-made actors for streamlib: sources, filters, drawing, compositing, files, display, audio.

Names are imported lazily, so ``from streamlib.actors import TestPattern`` does not load skia or
PyAV, and a missing optional library fails with an :class:`ImportError` that names the
pip package to install (all of them come with ``pip install streamlib[media]``)::

    from streamlib.actors import TestPattern, Drawing, Compositor, FileSink
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> (module, what to pip install if its import fails)
_EXPORTS: dict[str, tuple[str, str]] = {
    "TestPattern": ("video", "numpy"),
    "Drawing": ("draw", "skia-python"),
    "DrawContext": ("draw", "skia-python"),
    "DrawingError": ("draw", "skia-python"),
    "Compositor": ("compose", "opencv-python"),
    "Layer": ("compose", "opencv-python"),
    "Resize": ("filters", "opencv-python"),
    "ColorConvert": ("filters", "opencv-python"),
    "Blur": ("filters", "opencv-python"),
    "FrameFilter": ("filters", "opencv-python"),
    "BufferActor": ("buffer", "numpy"),
    "FramePool": ("buffer", "numpy"),
    "FileSource": ("files", "av"),
    "FileSink": ("files", "av"),
    "HLSSink": ("files", "av"),
    "MediaError": ("files", "av"),
    "Camera": ("capture", "opencv-python"),
    "CameraError": ("capture", "opencv-python"),
    "Display": ("display", "opencv-python"),
    "NoScreenError": ("display", "opencv-python"),
    "screen_available": ("display", "opencv-python"),
    "AudioGenerator": ("audio", "numpy"),
    "AudioMixer": ("audio", "numpy"),
    "ShaderActor": ("gpu", "wgpu"),
    "ShaderStatus": ("gpu", "wgpu"),
    "Invert": ("gpu", "wgpu"),
    "ColorMatrix": ("gpu", "wgpu"),
    "Grade": ("gpu", "wgpu"),
    "GaussianBlur": ("gpu", "wgpu"),
    "ChromaKey": ("gpu", "wgpu"),
    "GPUCompositor": ("gpu", "wgpu"),
    "GPULayer": ("gpu", "wgpu"),
    "Upload": ("gpu", "wgpu"),
    "Download": ("gpu", "wgpu"),
    "TransferWarning": ("gpu", "wgpu"),
    "InferenceActor": ("inference", "onnxruntime"),
    "Detections": ("inference", "onnxruntime"),
    "DetectionOutputs": ("inference", "onnxruntime"),
    "ImagePreprocess": ("inference", "onnxruntime"),
    "InferenceError": ("inference", "onnxruntime"),
    "InferenceInputError": ("inference", "onnxruntime"),
    "ProviderWarning": ("inference", "onnxruntime"),
    "DetectionOverlay": ("overlay", "opencv-python"),
    "RTPSendActor": ("net", "numpy"),
    "RTPReceiveActor": ("net", "numpy"),
    "H264RTPSendActor": ("net", "av"),
    "H264RTPReceiveActor": ("net", "av"),
    "MPEGTSSendActor": ("net", "av"),
    "MPEGTSReceiveActor": ("net", "av"),
    "WebRTCSink": ("net", "aiortc"),
}

# The third-party module each pip package provides (to tell a missing library from a bug).
_MODULES = {
    "skia-python": "skia",
    "opencv-python": "cv2",
    "av": "av",
    "numpy": "numpy",
    "wgpu": "wgpu",
    "numba": "numba",
    "onnxruntime": "onnxruntime",
    "aiortc": "aiortc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module_name, package = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'streamlib.actors' has no attribute {name!r}") from None
    try:
        module = importlib.import_module(f".{module_name}", __name__)
    except ImportError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
        missing = (getattr(cause, "name", None) or "").split(".")[0]
        by_module = {module: pip for pip, module in _MODULES.items()}
        if missing in by_module or "pip install" in str(exc):
            package = by_module.get(missing, package)
            extra = {"wgpu": "gpu", "onnxruntime": "ml"}.get(package, "media")
            raise ImportError(
                f"streamlib.actors.{name} needs the {package!r} package: pip install {package} "
                f"(or pip install streamlib[{extra}])"
            ) from exc
        raise
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static checkers and IDEs see the real names
    from .audio import AudioGenerator as AudioGenerator
    from .audio import AudioMixer as AudioMixer
    from .buffer import BufferActor as BufferActor
    from .buffer import FramePool as FramePool
    from .capture import Camera as Camera
    from .capture import CameraError as CameraError
    from .compose import Compositor as Compositor
    from .compose import Layer as Layer
    from .display import Display as Display
    from .display import NoScreenError as NoScreenError
    from .display import screen_available as screen_available
    from .draw import DrawContext as DrawContext
    from .draw import Drawing as Drawing
    from .draw import DrawingError as DrawingError
    from .files import FileSink as FileSink
    from .files import FileSource as FileSource
    from .files import HLSSink as HLSSink
    from .files import MediaError as MediaError
    from .filters import Blur as Blur
    from .filters import ColorConvert as ColorConvert
    from .filters import FrameFilter as FrameFilter
    from .filters import Resize as Resize
    from .gpu import ChromaKey as ChromaKey
    from .gpu import ColorMatrix as ColorMatrix
    from .gpu import Download as Download
    from .gpu import GaussianBlur as GaussianBlur
    from .gpu import GPUCompositor as GPUCompositor
    from .gpu import GPULayer as GPULayer
    from .gpu import Grade as Grade
    from .gpu import Invert as Invert
    from .gpu import ShaderActor as ShaderActor
    from .gpu import ShaderStatus as ShaderStatus
    from .gpu import TransferWarning as TransferWarning
    from .gpu import Upload as Upload
    from .inference import DetectionOutputs as DetectionOutputs
    from .inference import Detections as Detections
    from .inference import ImagePreprocess as ImagePreprocess
    from .inference import InferenceActor as InferenceActor
    from .inference import InferenceError as InferenceError
    from .inference import InferenceInputError as InferenceInputError
    from .inference import ProviderWarning as ProviderWarning
    from .net import H264RTPReceiveActor as H264RTPReceiveActor
    from .net import H264RTPSendActor as H264RTPSendActor
    from .net import MPEGTSReceiveActor as MPEGTSReceiveActor
    from .net import MPEGTSSendActor as MPEGTSSendActor
    from .net import RTPReceiveActor as RTPReceiveActor
    from .net import RTPSendActor as RTPSendActor
    from .net import WebRTCSink as WebRTCSink
    from .overlay import DetectionOverlay as DetectionOverlay
    from .video import TestPattern as TestPattern
