"""ST 2110-20 video over RTP: streamlib against itself, ffmpeg and GStreamer, both directions.

Every interop test checks the frame count and the colours of the SMPTE bars. Tolerance: each
channel of a bar's centre pixel within ``TOL`` = 6 levels of the pattern's value after a 4:2:2
round trip through the peer's own colour conversion (BT.601 vs BT.709 matters: ~30 levels when
wrong, so the tolerance catches a matrix mix-up). 320x240 streams keep the whole module short.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from netpeers import BARS_75, BARS_100, assert_bars, ffmpeg_bars, free_port, peer, read_exactly

from streamlib import ActorInitError, VideoFrame
from streamlib.actors import RTPReceiveActor, RTPSendActor, TestPattern
from streamlib.actors.net.sdp import parse_sdp
from streamlib.testing import Probe

W, H = 320, 240
TOL = 6

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
needs_gst = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer is not installed")


async def stop_all(*actors: object) -> None:
    for actor in actors:
        await actor.stop()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- streamlib -> streamlib


@pytest.mark.parametrize(("sampling", "depth"), [("YCbCr-4:2:2", 8), ("YCbCr-4:2:2", 10), ("RGB", 8)])
async def test_loopback_keeps_pixels_timestamps_and_clock(sampling: str, depth: int) -> None:
    port = free_port()
    source = TestPattern(width=W, height=H, fps=30)
    sender = RTPSendActor("127.0.0.1", port, sampling=sampling, depth=depth)  # type: ignore[arg-type]
    source_probe = Probe(VideoFrame)
    source >> sender
    source >> source_probe
    deadline = time.monotonic() + 10
    while sender.format is None:  # the SDP is known from the first frame on
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    receiver = RTPReceiveActor(sdp=sender.sdp())
    probe = Probe(VideoFrame)
    receiver >> probe
    frames = await probe.wait_for(12, timeout=15)
    await stop_all(source, sender, receiver, probe, source_probe)
    last = frames[-1]
    assert last.data.shape == (H, W, 3) and last.data.dtype == np.uint8
    assert_bars(last.data, BARS_75, tol=0 if sampling == "RGB" else 3)
    # the sender's media timestamps survive: each received frame matches a sent frame to one 90 kHz tick
    sent = np.array([f.timestamp for f in source_probe.messages])
    for f in frames[-5:]:
        assert np.min(np.abs(sent - f.timestamp)) < 1.5 / 90000
    assert last.clock_source_id == f"rtp:{sender.ssrc:08x}" == receiver.clock_id
    # frame numbers count the RTP timeline: a gap (a frame the loaded machine skipped) shows as a jump
    for a, b in itertools.pairwise(frames[-5:]):
        assert b.frame_number - a.frame_number == round((b.timestamp - a.timestamp) * 30) >= 1
    net = receiver.stats()["network"]
    assert net["timing"] == "media-clock"
    assert net["packets_lost"] == 0 and net["packets_malformed"] == 0
    assert net["frames_received"] >= 12
    sdp = parse_sdp(sender.sdp()).first("video")
    assert sdp.fmtp["sampling"] == sampling and sdp.fmtp["depth"] == str(depth) and sdp.fmtp["TP"] == "2110TPW"
    assert sender.stats()["network"]["packets_sent"] >= net["packets_received"]


async def test_multicast_group_on_loopback() -> None:
    port = free_port()
    sender = RTPSendActor("239.255.42.17", port, width=64, height=48, interface="127.0.0.1")
    assert "c=IN IP4 239.255.42.17/32" in sender.sdp()
    receiver = RTPReceiveActor(sdp=sender.sdp(), interface="127.0.0.1")
    assert receiver.multicast == "239.255.42.17"
    probe = Probe(VideoFrame)
    receiver >> probe
    source = TestPattern(width=64, height=48)
    source >> sender
    frames = await probe.wait_for(3, timeout=10)
    await stop_all(source, sender, receiver, probe)
    assert frames[-1].data.shape == (48, 64, 3)


async def test_receiver_accepts_sdp_text_file_or_keywords(tmp_path: Path) -> None:
    port = free_port()
    sender = RTPSendActor("127.0.0.1", port, width=W, height=H, fps=25, sdp_file=tmp_path / "s.sdp")
    from_text = RTPReceiveActor(sdp=sender.sdp(), bind="127.0.0.1")
    assert (from_text.port, from_text.video_format) == (port, sender.format)
    await from_text.stop()
    from_file = RTPReceiveActor(sdp=tmp_path / "s.sdp")
    assert from_file.video_format == sender.format and from_file.video_format.fps == 25  # type: ignore[union-attr]
    await from_file.stop()
    keywords = RTPReceiveActor(port, width=W, height=H, fps=25)
    assert keywords.video_format == sender.format
    await stop_all(keywords, sender)
    with pytest.raises(ActorInitError, match=r"/rtp_receive_actor.*width= and height="):
        RTPReceiveActor(port)
    with pytest.raises(ActorInitError, match="no SDP file"):
        RTPReceiveActor(sdp=tmp_path / "missing.sdp")


# ---------------------------------------------------------------- ffmpeg


async def _to_ffmpeg(tmp_path: Path, depth: int) -> None:
    port = free_port()
    sdp = tmp_path / f"streamlib{depth}.sdp"
    sender = RTPSendActor("127.0.0.1", port, depth=depth, width=W, height=H, fps=30, sdp_file=sdp)
    frames = 20
    # ffmpeg converts with the colorimetry our SDP declares (BT.709, narrow range)
    args = [
        "ffmpeg",
        "-v",
        "error",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-reorder_queue_size",
        "0",
        "-buffer_size",
        "4194304",
        "-i",
        str(sdp),
        "-frames:v",
        str(frames),
        "-vf",
        "scale=in_color_matrix=bt709:in_range=limited",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    with peer(args, stdout=subprocess.PIPE) as ffmpeg:
        await asyncio.sleep(0.5)  # ffmpeg opens its socket after reading the SDP
        source = TestPattern(width=W, height=H, fps=30)
        source >> sender
        data = await read_exactly(ffmpeg, frames * W * H * 3)
        await stop_all(source, sender)
    video = np.frombuffer(data, np.uint8).reshape(-1, H, W, 3)
    assert len(video) == frames
    assert_bars(video[-1], BARS_75, TOL)


@needs_ffmpeg
async def test_streamlib_to_ffmpeg_8bit(tmp_path: Path) -> None:
    await _to_ffmpeg(tmp_path, 8)


@needs_ffmpeg
async def test_streamlib_to_ffmpeg_10bit(tmp_path: Path) -> None:
    await _to_ffmpeg(tmp_path, 10)


async def _from_ffmpeg(tmp_path: Path, codec: list[str]) -> None:
    port = free_port()
    sdp = tmp_path / "ffmpeg.sdp"
    frames = 30
    args = ffmpeg_bars(W, H, frames, codec, "-f", "rtp", "-sdp_file", str(sdp), f"rtp://127.0.0.1:{port}")
    with peer(args) as ffmpeg:
        deadline = time.monotonic() + 10
        while not (sdp.exists() and "a=fmtp" in sdp.read_text()):
            assert time.monotonic() < deadline, "ffmpeg wrote no SDP"
            await asyncio.sleep(0.02)
        receiver = RTPReceiveActor(sdp=sdp)  # no colorimetry in ffmpeg's SDP: BT.601, as ffmpeg itself assumes
        probe = Probe(VideoFrame)
        receiver >> probe
        await asyncio.to_thread(ffmpeg.wait, 20)
        await probe.wait_for(frames - 3, timeout=5)  # ffmpeg starts sending while we bind: allow the first few
    await asyncio.sleep(0.2)
    await stop_all(receiver, probe)
    net = receiver.stats()["network"]
    assert frames - 3 <= net["frames_received"] <= frames and net["packets_lost"] == 0
    assert net["timing"] == "anchored"
    assert_bars(probe.messages[-1].data, BARS_75, TOL)


@needs_ffmpeg
async def test_ffmpeg_to_streamlib_8bit(tmp_path: Path) -> None:
    await _from_ffmpeg(tmp_path, ["-pix_fmt", "uyvy422", "-c:v", "rawvideo"])


@needs_ffmpeg
async def test_ffmpeg_to_streamlib_10bit_bitpacked(tmp_path: Path) -> None:
    await _from_ffmpeg(tmp_path, ["-pix_fmt", "yuv422p10le", "-c:v", "bitpacked"])


# ---------------------------------------------------------------- GStreamer


@needs_gst
@pytest.mark.parametrize("depth", [8, 10])
async def test_streamlib_to_gstreamer(depth: int) -> None:
    port = free_port()
    caps = (
        f"application/x-rtp,media=video,clock-rate=90000,encoding-name=RAW,sampling=YCbCr-4:2:2,"
        f"depth=(string){depth},width=(string){W},height=(string){H},colorimetry=BT709-2,payload=96"
    )
    # rtpvrawdepay 1.22 labels its output bt601 whatever the caps say: capssetter restores BT.709
    args = [
        "gst-launch-1.0",
        "-q",
        "udpsrc",
        f"port={port}",
        "buffer-size=8388608",
        f"caps={caps}",
        "!",
        "rtpvrawdepay",
        "!",
        "capssetter",
        "caps=video/x-raw,colorimetry=bt709",
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=RGB",
        "!",
        "fdsink",
        "fd=1",
    ]
    frames = 20
    with peer(args, stdout=subprocess.PIPE) as gst:
        await asyncio.sleep(0.7)
        source = TestPattern(width=W, height=H, fps=30)
        sender = RTPSendActor("127.0.0.1", port, depth=depth)
        source >> sender
        data = await read_exactly(gst, frames * W * H * 3)
        await stop_all(source, sender)
    video = np.frombuffer(data, np.uint8).reshape(-1, H, W, 3)
    assert len(video) == frames
    assert_bars(video[-1], BARS_75, TOL)


@needs_gst
@pytest.mark.parametrize(("gst_format", "depth"), [("UYVY", 8), ("UYVP", 10)])
async def test_gstreamer_to_streamlib(gst_format: str, depth: int) -> None:
    port = free_port()
    frames = 30
    receiver = RTPReceiveActor(port, width=W, height=H, depth=depth, colorimetry="BT601")
    probe = Probe(VideoFrame)
    receiver >> probe
    args = [
        "gst-launch-1.0",
        "-q",
        "videotestsrc",
        f"num-buffers={frames}",
        "pattern=smpte",
        "!",
        f"video/x-raw,format={gst_format},width={W},height={H},framerate=30/1",
        "!",
        "rtpvrawpay",
        "!",
        "udpsink",
        "host=127.0.0.1",
        f"port={port}",
    ]
    with peer(args) as gst:
        await asyncio.to_thread(gst.wait, 20)
        await probe.wait_for(frames, timeout=5)
    await stop_all(receiver, probe)
    net = receiver.stats()["network"]
    assert net["frames_received"] == frames and net["packets_lost"] == 0 and net["frames_incomplete"] == 0
    assert_bars(probe.messages[-1].data, BARS_100, TOL)


async def test_port_in_use_error_names_the_actor() -> None:
    first = RTPReceiveActor(free_port(), width=W, height=H)
    with pytest.raises(ActorInitError, match=rf"/rtp_receive_actor\S*: cannot receive on 127.0.0.1:{first.port}"):
        RTPReceiveActor(first.port, width=W, height=H)  # a second receiver on a unicast port is refused
    await first.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ActorInitError, match=rf"/rtp_receive_actor\S*: cannot receive on 127.0.0.1:{port}"):
            RTPReceiveActor(port, width=W, height=H)


@pytest.mark.parametrize("depth", [8, 10])
def test_compiled_pgroup_conversions_match_their_python_twins_and_numpy(depth: int) -> None:
    from streamlib.actors.net import kernel
    from streamlib.actors.net.st2110 import (
        VideoFormat,
        _fixed_inverse,
        _fixed_matrix,
        _from_rgb_numpy,
        _to_rgb_numpy,
        from_rgb,
        to_rgb,
    )

    rgb = np.random.default_rng(depth).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    fmt = VideoFormat(16, 8, "YCbCr-4:2:2", depth)
    twin = np.empty((8, fmt.line_bytes), np.uint8)
    kernel.python_pack_422(rgb, twin, _fixed_matrix("BT709", depth), depth)
    assert np.array_equal(from_rgb(rgb, fmt), twin)
    rgba = np.dstack([rgb, np.full((8, 16), 7, np.uint8)])
    assert np.array_equal(from_rgb(rgba, fmt), twin)  # RGBA frames: alpha is ignored
    back = np.empty_like(rgb)
    kernel.python_unpack_422(twin, back, _fixed_inverse("BT709", depth), depth)
    assert np.array_equal(to_rgb(twin, fmt), back)
    assert np.abs(to_rgb(twin, fmt).astype(int) - _to_rgb_numpy(twin, fmt).astype(int)).max() <= 1
    # the OpenCV path rounds the pair average before the matrix: decoded, both agree within 4 levels
    ours = to_rgb(twin, fmt).astype(int)
    cv = to_rgb(_from_rgb_numpy(rgb, fmt), fmt).astype(int)
    assert np.abs(ours - cv).max() <= 4


async def test_a_ptp_clocked_stream_says_so_in_its_sdp_and_rtp_timestamps() -> None:
    """Frames from a PTPClock-driven source (clock id ``ptp:<gm>:<domain>``, frame numbers counting
    periods since the PTP epoch) are sent with RTP timestamps on PTP time, and the SDP names the
    grandmaster (RFC 7273 ts-refclk), as ST 2110-10 asks."""
    from streamlib.testing import Feeder

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    feeder = Feeder(VideoFrame)
    sender = RTPSendActor("127.0.0.1", port, width=64, height=32, fps=30)
    feeder >> sender
    try:
        assert "a=ts-refclk:localmac=" in sender.sdp()  # no PTP yet: the local clock
        pixels = np.zeros((32, 64, 3), np.uint8)
        frame_number = 52_000_000_123  # about 55 years of 30 fps periods since 1970
        clock = "ptp:001122.fffe.334455:0"
        await feeder.send(
            VideoFrame(
                pixels, timestamp=time.monotonic(), frame_number=frame_number, clock_source_id=clock, clock_rate=30.0
            )
        )
        packet = await asyncio.to_thread(rx.recv, 2048)  # off the loop: the sender runs on it
        assert int.from_bytes(packet[4:8], "big") == (frame_number * 3000) & 0xFFFFFFFF
        assert "a=ts-refclk:ptp=IEEE1588-2008:00-11-22-FF-FE-33-44-55:0" in sender.sdp()
        assert "localmac" not in sender.sdp()
    finally:
        rx.close()
        await feeder.stop()
        await sender.stop()
