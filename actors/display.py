"""An on-screen window: :class:`Display` (OpenCV HighGUI).

HighGUI is not thread-safe and its Qt/GTK backends bind to the thread that first
created a window, so *every* Display of the process runs its hooks on one shared,
never-ending GUI thread (:data:`GUI_DISPATCHER`). Keyboard and mouse input is only
delivered while ``cv2.waitKey`` pumps the window's events, which the display does on
every tick -- for each frame, and on its own clock while no frames arrive -- so keys
keep working when the video pauses.

Without a screen, a window cannot exist: the display raises at construction (rather
than letting the GUI toolkit abort the whole process at its first call).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from streamlib import (
    Actor,
    Dispatcher,
    KeyEvent,
    MouseEvent,
    StreamInput,
    StreamOutput,
    ThreadPoolDispatcher,
    TimedTick,
    VideoFrame,
)

__all__ = ["GUI_DISPATCHER", "Display", "NoScreenError", "screen_available"]


class NoScreenError(RuntimeError):
    """There is no screen to open a window on (no ``DISPLAY``, or its X server is unreachable)."""


class _GuiDispatcher(ThreadPoolDispatcher):
    """One worker thread that outlives the actors using it.

    A plain one-thread pool shuts its thread down when its last actor detaches; the
    next window would then be created on a new thread, which Qt refuses (its
    application object belongs to the first one)."""

    def __init__(self) -> None:
        super().__init__(workers=1)

    async def stop(self) -> None:
        """Keep the GUI thread: windows of later displays must be created on it too."""

    def __repr__(self) -> str:
        return f"<GuiDispatcher actors={self._attached}>"


GUI_DISPATCHER: Dispatcher = _GuiDispatcher()
"""The dispatcher every :class:`Display` uses unless given another (one thread for all HighGUI calls)."""

_MOUSE_BUTTONS = {
    cv2.EVENT_LBUTTONDOWN: 1,
    cv2.EVENT_RBUTTONDOWN: 2,
    cv2.EVENT_MBUTTONDOWN: 3,
}


def _gui_backend() -> str | None:
    """The HighGUI backend OpenCV was built with (``None`` for headless builds)."""
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        stripped = line.strip()
        if stripped.startswith("GUI:"):
            backend = stripped.split(":", 1)[1].strip()
            return None if backend.upper() in ("", "NONE", "NO") else backend
    return "unknown"


def _x11_socket(display: str) -> str | None:
    """The local socket of an X display such as ``:99`` or ``unix:0.0`` (``None`` for a remote one)."""
    host, _, rest = display.rpartition(":")
    if host not in ("", "unix") or not rest:
        return None
    number = rest.split(".", 1)[0]
    return f"/tmp/.X11-unix/X{number}" if number.isdigit() else None


def _pyav_loaded_first() -> str | None:
    """The name of a library OpenCV's Qt shares with PyAV but got from PyAV, if any.

    The pip wheels of both bundle X11/xcb libraries under identical names; whichever
    package is imported first provides them to the other, and when PyAV's copies reach
    OpenCV's Qt plugin, the first window livelocks at 100 % CPU (PyAV issue #978,
    OpenCV issue #21952). Importing ``cv2`` before ``av`` avoids it (``streamlib.actors.files``
    does), so this detects the bad order and lets the display fail clearly instead."""
    if "av" not in sys.modules or not sys.platform.startswith("linux"):
        return None
    cv_libs = Path(cv2.__file__).resolve().parent.parent / "opencv_python.libs"
    try:
        ours = set(os.listdir(cv_libs))
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.rsplit(None, 1)[-1]
        if "/av.libs/" in path and os.path.basename(path) in ours:
            return os.path.basename(path)
    return None


def screen_available() -> tuple[bool, str]:
    """Whether a window can be opened here, and if not why (never touches the GUI toolkit)."""
    if _gui_backend() is None:
        return False, "this OpenCV build has no GUI support (opencv-python-headless?); install opencv-python"
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return True, ""
    display = os.environ.get("DISPLAY", "")
    if not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            return True, ""
        return False, "no screen: the DISPLAY environment variable is not set (run under X11, or Xvfb for tests)"
    path = _x11_socket(display)
    if path is None:
        return True, ""  # a remote X server: trust it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
    except OSError as exc:
        return False, f"no screen: the X server of DISPLAY={display} is unreachable ({path}: {exc.strerror or exc})"
    return True, ""


class Display(Actor):
    """Shows ``'video'`` in a window titled ``title``; emits ``'keyboard'`` and ``'mouse'`` events.

    ``KeyEvent.key`` is the code ``cv2.waitKeyEx`` reports (the character code for
    printable keys, so ``chr(event.key)`` works for them). ``MouseEvent`` is sent for
    button presses (``button`` 1 left, 2 right, 3 middle) and, with
    ``mouse_moves=True``, for movement (``button`` 0), in image pixel coordinates.
    Events carry the clock metadata of the frame on screen when they happened.

    At end of stream the window closes, unless ``keep_open=True``: then it keeps
    showing the last frame (and sending events) until stopped or closed by the user.
    Closing the window stops the actor. Without a screen, the constructor raises
    :class:`NoScreenError`.
    """

    default_fps: ClassVar[float | None] = 60.0  # pumps window events while no frames arrive

    def __init__(
        self,
        title: str = "streamlib",
        *,
        keep_open: bool = False,
        mouse_moves: bool = False,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=dispatcher if dispatcher is not None else GUI_DISPATCHER, **kw)
        ok, why = screen_available()
        if not ok:
            raise NoScreenError(f"{self.path}: cannot open window {title!r}: {why}")
        clash = _pyav_loaded_first()
        if clash is not None:
            raise RuntimeError(
                f"{self.path}: PyAV was imported before OpenCV and provided {clash} to OpenCV's GUI, which makes "
                "its windows freeze (PyAV #978); import cv2 (or streamlib.actors.display, streamlib.actors.files) "
                "before av"
            )
        self.title = title
        self.keep_open = keep_open
        self.mouse_moves = mouse_moves
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["keyboard"] = StreamOutput("keyboard", KeyEvent)
        self.outputs["mouse"] = StreamOutput("mouse", MouseEvent)
        self.frames_shown = 0
        self.window_rect: tuple[int, int, int, int] | None = None
        """Where the image is on screen, ``(x, y, width, height)``, once a frame has been shown."""
        self._mouse: list[tuple[int, int, int]] = []
        self._window = False
        self._last_tick: TimedTick | None = None

    async def on_start(self) -> None:
        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.setMouseCallback(self.title, self._on_mouse)
        self._window = True

    def _on_mouse(self, event: int, x: int, y: int, flags: int, param: Any) -> None:
        """HighGUI's callback; runs inside ``waitKey`` on the GUI thread."""
        button = _MOUSE_BUTTONS.get(event)
        if button is not None:
            self._mouse.append((x, y, button))
        elif event == cv2.EVENT_MOUSEMOVE and self.mouse_moves:
            self._mouse.append((x, y, 0))

    def on_end_of_stream(self) -> None:
        if not self.keep_open:
            super().on_end_of_stream()

    async def process(self, tick: TimedTick) -> None:
        frame = None
        port = self.inputs["video"]
        while (msg := port.read_nowait()) is not None:
            frame = msg  # show the newest; older ones are already late
        if frame is not None:
            cv2.imshow(self.title, _to_bgr(frame.data))
            self.frames_shown += 1
            self._last_tick = frame.tick()
            self.window_rect = tuple(cv2.getWindowImageRect(self.title))  # type: ignore[assignment]
        key = cv2.waitKeyEx(1)
        if self.frames_shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self._window = False
            self.stop()  # the user closed the window
            return
        stamp = self._last_tick or tick
        now = time.monotonic()
        if key != -1:
            await self.outputs["keyboard"].send(
                KeyEvent(
                    key=key,
                    timestamp=now,
                    frame_number=stamp.frame_number,
                    clock_source_id=stamp.clock_source_id,
                    clock_rate=stamp.fps,
                )
            )
        events, self._mouse = self._mouse, []
        for x, y, button in events:
            await self.outputs["mouse"].send(
                MouseEvent(
                    x=x,
                    y=y,
                    button=button,
                    timestamp=now,
                    frame_number=stamp.frame_number,
                    clock_source_id=stamp.clock_source_id,
                    clock_rate=stamp.fps,
                )
            )

    async def on_stop(self) -> None:
        if self._window:
            self._window = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)  # let the toolkit process the close
            except cv2.error:
                pass  # already gone


def _to_bgr(data: np.ndarray) -> np.ndarray:
    if data.ndim == 2 or data.shape[2] == 1:
        return data
    if data.shape[2] == 4:
        return cv2.cvtColor(data, cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(data, cv2.COLOR_RGB2BGR)
