"""Display: a real window on a real (virtual) X server, with keys and clicks injected by xdotool.

The window test runs in a child process: Qt binds to the X server of its first window
for the life of the process and aborts the process when that server goes away, so the
pytest process itself never opens a window (and stopping Xvfb cannot take it down).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamlib import ActorInitError
from streamlib.actors.display import Display, screen_available

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY decides about screens on Linux only")
def test_no_screen_fails_at_construction(no_screen: None) -> None:
    start = time.monotonic()
    with pytest.raises(ActorInitError, match=r"/viewer.*no screen: the DISPLAY environment variable is not set"):
        Display("x", name="viewer")
    assert time.monotonic() - start < 1.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 sockets are a Linux matter")
def test_unreachable_x_server_fails_at_construction(no_screen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":4321")
    ok, why = screen_available()
    assert not ok and "DISPLAY=:4321" in why
    with pytest.raises(ActorInitError, match="unreachable"):
        Display()


@pytest.fixture
def xvfb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A virtual X server on a free display number (``:99`` if free), as ``DISPLAY``."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed")
    number = next(
        n for n in range(99, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists()
    )
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Xvfb :{number} did not start")
            time.sleep(0.05)
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


WINDOW_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, shutil, subprocess, time
    import numpy as np
    from streamlib.actors.display import Display
    from streamlib import KeyEvent, MouseEvent, VideoFrame
    from streamlib.testing import Feeder, Probe

    TITLE = "streamlib-display-test"

    def xdotool(*args):
        return subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=10, check=True).stdout

    async def main():
        display = Display(TITLE)
        feeder, keys, mouse = Feeder(VideoFrame), Probe(KeyEvent), Probe(MouseEvent)
        feeder >> display
        display.outputs["keyboard"] >> keys
        display.outputs["mouse"] >> mouse
        image = np.zeros((120, 160, 3), np.uint8)
        image[:] = (250, 20, 20)  # red, in RGB

        async def play():
            n = 0
            while True:
                await feeder.send(VideoFrame(image, timestamp=time.monotonic(), frame_number=n, clock_rate=30.0))
                n += 1
                await asyncio.sleep(1 / 30)

        player = asyncio.create_task(play())
        deadline = time.monotonic() + 20
        while display.window_rect is None:
            assert time.monotonic() < deadline, "no frame was shown"
            await asyncio.sleep(0.02)
        window = xdotool("search", "--sync", "--name", TITLE).split()[0]
        # A loaded machine maps, sizes and paints the window late: look again until it shows
        # the image at its own size (or 10 s pass), then check what the screen shows there.
        painted = time.monotonic() + 10
        centre = None
        while True:
            await asyncio.sleep(0.3)
            x, y, w, h = display.window_rect
            if (w, h) != (160, 120) and time.monotonic() < painted:
                continue
            if not shutil.which("ffmpeg"):
                break
            # a screenshot of where the image should be (not PyAV: see streamlib.actors.display)
            grab = ["ffmpeg", "-loglevel", "error", "-f", "x11grab", "-video_size", f"{w}x{h}"]
            grab += ["-i", f"{os.environ['DISPLAY']}+{x},{y}", "-frames:v", "1"]
            grab += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
            raw = subprocess.run(grab, capture_output=True, timeout=20, check=True).stdout
            centre = np.frombuffer(raw, np.uint8).reshape(h, w, 3)[h // 2, w // 2].tolist()
            if centre != [0, 0, 0] or time.monotonic() > painted:
                break
        xdotool("key", "--window", window, "a")
        await keys.wait_for(1, timeout=15)
        xdotool("mousemove", str(x + 40), str(y + 30), "click", "1")
        await mouse.wait_for(1, timeout=15)
        player.cancel()
        await display.stop()
        print(json.dumps({
            "shown": display.frames_shown,
            "rect": [x, y, w, h],
            "centre": centre,
            "keys": [k.key for k in keys.messages],
            "key_frame": keys.messages[0].frame_number,
            "clicks": [[m.x, m.y, m.button] for m in mouse.messages],
            "state": display.state.name,
        }))

    asyncio.run(main())
    """
)


def test_window_shows_frames_and_reports_keys_and_clicks(xvfb: str) -> None:
    assert shutil.which("xdotool"), "xdotool not installed: it injects the key and the click (apt-get install xdotool)"
    out = subprocess.run(
        [sys.executable, "-c", WINDOW_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DISPLAY": xvfb},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shown"] >= 1
    assert result["rect"][2:] == [160, 120]  # the image at its own size
    if shutil.which("ffmpeg"):  # the screenshot shows the frame's colour where the window says the image is
        assert all(abs(a - b) <= 2 for a, b in zip(result["centre"], [250, 20, 20], strict=True)), result
    assert result["keys"][0] == ord("a")
    assert result["key_frame"] >= 0
    assert [40, 30, 1] in result["clicks"]
    assert result["state"] == "STOPPED"


def test_pyav_imported_before_opencv_fails_clearly_instead_of_freezing(xvfb: str) -> None:
    script = "import av\nfrom streamlib.actors.display import Display\nDisplay()\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "PyAV was imported before OpenCV" in out.stderr and "import cv2" in out.stderr


def test_files_module_imports_opencv_first_so_windows_work_with_it(xvfb: str) -> None:
    script = textwrap.dedent(
        """
        import numpy as np
        import streamlib.actors.files  # imports av (after cv2)
        from streamlib.actors.display import Display, _pyav_loaded_first
        assert _pyav_loaded_first() is None
        import cv2
        cv2.namedWindow("probe")
        cv2.imshow("probe", np.zeros((8, 8, 3), np.uint8))
        cv2.waitKey(1)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]
