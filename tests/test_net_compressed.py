"""H.264 over RTP (RFC 6184) and MPEG-TS over UDP, through PyAV, against ffmpeg in both directions.

Frames are counted and the SMPTE bars checked with a looser tolerance (``TOL`` = 16 levels): H.264
at 4:2:0 smears chroma and quantizes, but a wrong colour matrix is still ~30 levels off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamlib import VideoFrame
from streamlib.actors import (
    H264RTPReceiveActor,
    H264RTPSendActor,
    MPEGTSReceiveActor,
    MPEGTSSendActor,
    TestPattern,
)
from streamlib.actors.net.sdp import parse_sdp
from streamlib.testing import Probe

W, H = 320, 240
TOL = 16
BARS_75 = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port % 2 == 0 and port < 65000:
                return port
    raise RuntimeError("no free UDP port")


def assert_bars(rgb: np.ndarray, tol: int = TOL) -> None:
    h, w = rgb.shape[:2]
    got = [tuple(int(c) for c in rgb[h // 3, int((i + 0.5) * w / 7)]) for i in range(7)]
    worst = max(abs(g - e) for gb, eb in zip(got, BARS_75, strict=True) for g, e in zip(gb, eb, strict=True))
    assert worst <= tol, f"bar colours {got} differ from {BARS_75} by {worst} > {tol}"


@contextlib.contextmanager
def peer(args: list[str], stdout: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def ffmpeg_frames(proc: subprocess.Popen[bytes], frames: int) -> np.ndarray:
    assert proc.stdout is not None
    data = await asyncio.wait_for(asyncio.to_thread(proc.stdout.read, frames * W * H * 3), 20)
    return np.frombuffer(data, np.uint8).reshape(-1, H, W, 3)


FFMPEG_RAW_OUT = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
FFMPEG_X264 = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-tune",
    "zerolatency",
    "-g",
    "15",
    "-bf",
    "0",
    "-pix_fmt",
    "yuv420p",
]


async def test_h264_rtp_streamlib_to_ffmpeg(tmp_path: Path) -> None:
    port = free_port()
    sdp = tmp_path / "h264.sdp"
    sender = H264RTPSendActor("127.0.0.1", port, width=W, height=H, sdp_file=sdp)
    fmtp = parse_sdp(sdp.read_text()).first("video").fmtp
    assert fmtp["packetization-mode"] == "1" and "," in fmtp["sprop-parameter-sets"]
    frames = 20
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-i",
        str(sdp),
        "-frames:v",
        str(frames),
        *FFMPEG_RAW_OUT,
    ]
    with peer(args, stdout=subprocess.PIPE) as ffmpeg:
        await asyncio.sleep(0.5)
        source = TestPattern(width=W, height=H)
        source >> sender
        video = await ffmpeg_frames(ffmpeg, frames)
        await source.stop()
        await sender.stop()
    assert len(video) == frames
    assert_bars(video[-1])


async def test_h264_rtp_ffmpeg_to_streamlib(tmp_path: Path) -> None:
    port = free_port()
    frames = 45
    # The SDP ffmpeg writes for this command (-sdp_file), written first so that we listen before it sends
    sdp = tmp_path / "ffmpeg.sdp"
    sdp.write_text(
        f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
    )
    receiver = H264RTPReceiveActor(sdp=sdp)
    probe = Probe(VideoFrame)
    receiver >> probe
    assert await asyncio.to_thread(receiver.opened.wait, 10)
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"smptebars=size={W}x{H}:rate=30",
        "-frames:v",
        str(frames),
        *FFMPEG_X264,
        "-f",
        "rtp",
        "-sdp_file",
        str(tmp_path / "written.sdp"),
        f"rtp://127.0.0.1:{port}",
    ]
    with peer(args) as ffmpeg:
        await asyncio.to_thread(ffmpeg.wait, 20)
        got = await probe.wait_for(frames, timeout=5)
    await receiver.stop()
    await probe.stop()
    written = parse_sdp((tmp_path / "written.sdp").read_text()).first("video")
    assert (written.port, written.encoding, written.fmtp) == (port, "H264", {"packetization-mode": "1"})
    assert len(got) == frames and got[-1].data.shape == (H, W, 3)
    assert_bars(got[-1].data)
    assert got[-1].clock_source_id == f"rtp-h264:127.0.0.1:{port}"
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(got))


async def test_mpegts_streamlib_to_ffmpeg() -> None:
    port = free_port()
    frames = 20
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-probesize",
        "65536",
        "-analyzeduration",
        "300000",
        "-i",
        f"udp://127.0.0.1:{port}?fifo_size=65536&overrun_nonfatal=1",
        "-frames:v",
        str(frames),
        *FFMPEG_RAW_OUT,
    ]
    with peer(args, stdout=subprocess.PIPE) as ffmpeg:
        await asyncio.sleep(0.5)
        source = TestPattern(width=W, height=H)
        sender = MPEGTSSendActor("127.0.0.1", port)
        source >> sender
        video = await ffmpeg_frames(ffmpeg, frames)
        await source.stop()
        await sender.stop()
    assert len(video) == frames
    assert_bars(video[-1])


async def test_mpegts_ffmpeg_to_streamlib() -> None:
    port = free_port()
    frames = 45
    receiver = MPEGTSReceiveActor(port)
    probe = Probe(VideoFrame)
    receiver >> probe
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"smptebars=size={W}x{H}:rate=30",
        "-frames:v",
        str(frames),
        *FFMPEG_X264,
        "-f",
        "mpegts",
        f"udp://127.0.0.1:{port}?pkt_size=1316",
    ]
    with peer(args) as ffmpeg:
        await asyncio.to_thread(ffmpeg.wait, 20)
        got = await probe.wait_for(frames - 15, timeout=5)
    await receiver.stop()
    await probe.stop()
    assert got[-1].data.shape == (H, W, 3)
    assert_bars(got[-1].data)
    assert receiver.stats()["network"]["frames_received"] >= frames - 15
