"""H.264 over RTP (RFC 6184) and MPEG-TS over UDP, through PyAV, against ffmpeg in both directions.

Frames are counted and the SMPTE bars checked with a looser tolerance (``TOL`` = 16 levels): H.264
at 4:2:0 smears chroma and quantizes, but a wrong colour matrix is still ~30 levels off.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from netpeers import BARS_75, assert_bars, ffmpeg_bars, free_port, peer, read_exactly

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
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def assert_bars75(rgb: np.ndarray) -> None:
    assert_bars(rgb, BARS_75, TOL)


async def ffmpeg_frames(proc: subprocess.Popen[bytes], frames: int) -> np.ndarray:
    data = await read_exactly(proc, frames * W * H * 3)
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
    assert_bars75(video[-1])


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
    sdp_out = ["-f", "rtp", "-sdp_file", str(tmp_path / "written.sdp"), f"rtp://127.0.0.1:{port}"]
    args = ffmpeg_bars(W, H, frames, FFMPEG_X264, *sdp_out)
    with peer(args) as ffmpeg:
        await asyncio.to_thread(ffmpeg.wait, 20)
        got = await probe.wait_for(frames, timeout=5)
    await receiver.stop()
    await probe.stop()
    written = parse_sdp((tmp_path / "written.sdp").read_text()).first("video")
    assert (written.port, written.encoding, written.fmtp) == (port, "H264", {"packetization-mode": "1"})
    assert len(got) == frames and got[-1].data.shape == (H, W, 3)
    assert_bars75(got[-1].data)
    assert got[-1].clock_source_id == f"rtp-h264:127.0.0.1:{port}"
    stamps = [(m.frame_number, m.timestamp) for m in got]
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(got)), stamps


async def test_h264_receiver_timestamps_only_increase(tmp_path: Path) -> None:
    """A frame the decoder gives no PTS is placed one period after the last; a stream whose next
    PTS comes before that (re-based on an RTCP report) must not make time run backwards."""
    port = free_port()
    sdp = tmp_path / "in.sdp"
    sdp.write_text(
        f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
    )
    receiver = H264RTPReceiveActor(sdp=sdp)
    probe = Probe(VideoFrame)
    receiver >> probe
    assert await asyncio.to_thread(receiver.opened.wait, 10)
    rgb = np.zeros((H, W, 3), np.uint8)
    for pts in (None, -90, 2910, 5910):  # as decoded: no PTS first, then a stream that starts earlier
        receiver._ready.append((rgb, pts))
    got = await probe.wait_for(4, timeout=5)
    await receiver.stop()
    await probe.stop()
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(got)), [m.timestamp for m in got]
    assert receiver.network_stats()["timestamps_held"] == 1
    assert got[3].timestamp - got[2].timestamp == pytest.approx(3000 / 90000)  # the stream's own spacing resumes


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
    assert_bars75(video[-1])


async def test_mpegts_ffmpeg_to_streamlib() -> None:
    port = free_port()
    frames = 45
    receiver = MPEGTSReceiveActor(port)
    probe = Probe(VideoFrame)
    receiver >> probe
    args = ffmpeg_bars(W, H, frames, FFMPEG_X264, "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316")
    with peer(args) as ffmpeg:
        await asyncio.to_thread(ffmpeg.wait, 20)
        got = await probe.wait_for(frames - 15, timeout=5)
    await receiver.stop()
    await probe.stop()
    assert got[-1].data.shape == (H, W, 3)
    assert_bars75(got[-1].data)
    assert receiver.stats()["network"]["frames_received"] >= frames - 15
