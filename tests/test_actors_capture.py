"""Camera, with video files behind cv2.VideoCapture standing in for a device (there is no camera here)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import av
import numpy as np
import pytest

from streamlib import ActorInitError, LifecycleState, VideoFrame
from streamlib.actors.capture import Camera
from streamlib.testing import Probe

H, W = 120, 160


def write_video(path: Path, count: int, noise: bool = False) -> None:
    """``count`` frames at 25 fps: orange (RGB 230, 120, 20), or noise (a big file, to truncate)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "8" if noise else "18"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for n in range(count):
            img = (
                rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                if noise
                else np.full((H, W, 3), (230, 120, 20), np.uint8)
            )
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = n
            c.mux(s.encode(f))
        c.mux(s.encode(None))


async def test_camera_reads_a_file_in_rgb_at_its_rate_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 20)
    cam = Camera(path)
    assert (cam.fps, cam.width, cam.height) == (25.0, W, H)
    probe = Probe(VideoFrame)
    cam >> probe
    assert await asyncio.wait_for(cam.join(), 5) is LifecycleState.STOPPED  # end of file is end of stream
    await asyncio.wait_for(probe.join(), 5)
    assert len(probe.messages) == 20 == cam.frames_read
    img = probe.messages[10].data
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert np.all(np.abs(img[H // 2, W // 2].astype(int) - (230, 120, 20)) <= 6)  # RGB, not BGR
    stamps = np.diff([m.timestamp for m in probe.messages])
    assert np.median(stamps) == pytest.approx(1 / 25, abs=2e-3)
    assert probe.messages[0].clock_rate == 25.0


async def test_camera_loops_a_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 10)
    cam = Camera(path, fps=400, loop=True)
    probe = Probe(VideoFrame, overflow="block")
    cam >> probe
    await probe.wait_for(25)
    await cam.stop()
    assert cam.state is LifecycleState.STOPPED


async def test_a_source_that_disappears_fails_the_camera_clearly(tmp_path: Path) -> None:
    path = tmp_path / "unplugged.mp4"
    write_video(path, 60, noise=True)
    cam = Camera(path, fps=200, name="webcam")
    probe = Probe(VideoFrame)
    cam >> probe
    await probe.wait_for(5)
    os.truncate(path, path.stat().st_size // 3)  # the "device" goes away mid-stream
    assert await asyncio.wait_for(cam.join(), 5) is LifecycleState.FAILED
    message = str(cam.failure)
    assert "/webcam" in message and "unplugged.mp4" in message and "stopped delivering frames" in message
    assert 5 <= cam.frames_read < 60


def test_a_deleted_file_raises_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "gone.mp4"
    write_video(path, 2)
    path.unlink()
    with pytest.raises(ActorInitError, match=r"/camera.*no such video file.*gone\.mp4"):
        Camera(path)


def test_an_unreadable_file_raises_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "junk.avi"
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(ActorInitError, match=r"cannot open .*junk\.avi"):
        Camera(path)


def test_an_absent_device_raises_at_construction() -> None:
    with pytest.raises(ActorInitError, match="cannot open camera 97"):
        Camera(97)


def test_a_missing_camera_is_one_clear_error_not_opencv_noise() -> None:
    """OpenCV logs a warning per backend it probes for a missing device; the CameraError says
    it in one line, and OPENCV_LOG_LEVEL brings OpenCV's own messages back."""
    import subprocess
    import sys

    code = (
        "from streamlib.actors.capture import Camera\n"
        "try:\n    Camera(97, name='cam')\nexcept Exception as exc:\n    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "/cam: cannot open camera 97 with OpenCV" in quiet.stdout
    assert "WARN" not in quiet.stderr and "ERROR" not in quiet.stderr, quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "OPENCV_LOG_LEVEL": "WARNING"},
    )
    assert "/cam: cannot open camera 97" in loud.stdout and "WARN" in loud.stderr, loud.stderr
