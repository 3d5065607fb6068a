"""Live capture: :class:`Camera` (OpenCV ``cv2.VideoCapture``).

Anything ``cv2.VideoCapture`` opens works: a device index (``0`` is the default
webcam), a video file, or a stream URL (RTSP, HTTP, ...). Reading a frame blocks until
the device delivers it, so the camera runs on its own one-thread dispatcher and the
event loop stays free.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamlib import Actor, Dispatcher, StreamOutput, ThreadPoolDispatcher, TimedTick, VideoFrame

__all__ = ["Camera", "CameraError"]


class CameraError(RuntimeError):
    """A capture source could not be opened, or stopped delivering frames."""


def _is_url(source: str) -> bool:
    return "://" in source


@contextlib.contextmanager
def _quiet_opencv_probe() -> Iterator[None]:
    """Silence OpenCV's log while ``VideoCapture`` probes its backends.

    With ``CAP_ANY`` OpenCV tries V4L2, FFmpeg, Orbbec... in turn and logs a WARN or ERROR for
    each that cannot open the source, even when a later one can; a missing camera prints a
    dozen lines. Whether the source opened is what matters, and :class:`Camera` reports that
    itself (a :class:`CameraError` naming the actor and the source). Setting
    ``OPENCV_LOG_LEVEL`` in the environment shows OpenCV's own messages again."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None or "OPENCV_LOG_LEVEL" in os.environ:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


class Camera(Actor):
    """Captures ``source`` into ``'video'`` (RGB :class:`~streamlib.VideoFrame`) at the device's rate.

    ``source`` is a device index, a file path or a URL. The rate is the device's
    (``CAP_PROP_FPS``) unless ``fps=`` says otherwise; ``width``/``height`` request a
    capture size from devices that support it. The source is opened at construction, so
    a missing file or an absent camera raises there, naming the actor and the source.

    A read that fails fails the actor with :class:`CameraError`: a camera that was
    unplugged, a stream that dropped, a file that was truncated under it. The one
    exception is a file read to its last frame, which is a normal end of stream (or
    starts over with ``loop=True``).
    """

    def __init__(
        self,
        source: int | str | os.PathLike[str] = 0,
        *,
        fps: float | None = None,
        width: int | None = None,
        height: int | None = None,
        loop: bool = False,
        api: int = cv2.CAP_ANY,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=dispatcher if dispatcher is not None else ThreadPoolDispatcher(workers=1), **kw)
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        self.source: int | str = source
        self.is_file = isinstance(source, str) and not _is_url(source)
        if self.is_file and not Path(str(source)).is_file():
            raise FileNotFoundError(f"{self.path}: no such video file: {source!r}")
        self.requested_fps = fps
        self.requested_size = (width, height)
        self.loop_file = loop
        self.api = api
        self._cap: cv2.VideoCapture | None = self._open()  # at construction: fail early and clearly
        self.frames_read = 0
        self._pass_frames = 0  # frames read since the file (re)started
        self._frames_in_file = 0
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    def _open(self) -> cv2.VideoCapture:
        with _quiet_opencv_probe():
            cap = cv2.VideoCapture(self.source, self.api)
        if not cap.isOpened():
            cap.release()
            what = f"camera {self.source}" if isinstance(self.source, int) else repr(self.source)
            raise CameraError(
                f"{self.path}: cannot open {what} with OpenCV (no such device, unreadable or unsupported; "
                "OPENCV_LOG_LEVEL=DEBUG shows why)"
            )
        width, height = self.requested_size
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        device_fps = cap.get(cv2.CAP_PROP_FPS)
        rate = self.requested_fps or device_fps
        self.fps = float(rate) if rate and math.isfinite(rate) and 0 < rate <= 1000 else 30.0
        self.own_fps = self.fps  # frames are read on the actor's own clock at the capture rate
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return cap

    async def on_start(self) -> None:
        if self._cap is None:  # a restarted instance: open the device again
            self._cap = self._open()
        if self.is_file:
            self._frames_in_file = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))

    async def process(self, tick: TimedTick) -> None:
        cap = self._cap
        if cap is None:
            return
        ok, bgr = cap.read()
        if not ok or bgr is None:
            if not self._at_end_of_file():
                raise CameraError(self._lost_message())
            if self.loop_file and self._pass_frames:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._pass_frames = 0
                ok, bgr = cap.read()
            if not ok or bgr is None:
                self.stop()  # the file is over: end of stream
                return
        self._pass_frames += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
        self.frames_read += 1
        frame = VideoFrame(
            data=np.ascontiguousarray(rgb),
            timestamp=tick.timestamp,
            frame_number=tick.frame_number,
            clock_source_id=tick.clock_source_id,
            clock_rate=self.fps,
        )
        await self.outputs["video"].send(frame)

    def _at_end_of_file(self) -> bool:
        """A failed read of a file is its end only if it came at (or within a frame of) the last frame.

        The frame count comes from the container header, so a file truncated (or
        overwritten) while open fails well before it: that is a lost source, not an end."""
        if not self.is_file:
            return False
        expected = self._frames_in_file
        return expected <= 0 or self._pass_frames >= expected - 1

    def _lost_message(self) -> str:
        what = f"camera {self.source}" if isinstance(self.source, int) else repr(self.source)
        detail = f" of {self._frames_in_file}" if self.is_file and self._frames_in_file > 0 else ""
        return (
            f"{self.path}: {what} stopped delivering frames (read failed after {self.frames_read}{detail} frames): "
            "device unplugged, stream dropped or file truncated"
        )

    async def on_stop(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
