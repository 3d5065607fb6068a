"""ST 2110-30 / AES67 audio over RTP: L16/L24, 48 kHz, 1-8 channels, 1 ms packets; GStreamer both ways.

Each test checks the tone: the FFT peak of what arrived is the frequency that was sent.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest
from netpeers import free_port

from streamlib import AudioBuffer
from streamlib.actors import AudioGenerator, RTPReceiveActor, RTPSendActor
from streamlib.actors.net.aes67 import pack_samples, unpack_samples
from streamlib.actors.net.sdp import parse_sdp
from streamlib.testing import Probe

needs_gst = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer is not installed")
RATE = 48000


def peak_hz(samples: np.ndarray) -> float:
    mono = samples if samples.ndim == 1 else samples[:, 0]
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * RATE / len(mono))


@pytest.mark.parametrize("encoding", ["L16", "L24"])
def test_sample_packing_round_trips(encoding: str) -> None:
    x = np.linspace(-1, 1, 96, dtype=np.float32).reshape(48, 2)
    back = unpack_samples(pack_samples(x, encoding), 2, encoding)  # type: ignore[arg-type]
    assert np.abs(back - x).max() <= (1 / 32768 if encoding == "L16" else 1 / 8388608) * 1.01


@pytest.mark.parametrize(("encoding", "channels"), [("L24", 2), ("L16", 8), ("L24", 1)])
async def test_loopback_tone_channels_and_timestamps(encoding: str, channels: int) -> None:
    port = free_port()
    gen = AudioGenerator(1000.0, channels=channels, block_size=480)
    sent = Probe(AudioBuffer)
    sender = RTPSendActor("127.0.0.1", port, "audio", encoding=encoding, channels=channels)  # type: ignore[arg-type]
    sdp = parse_sdp(sender.sdp()).first("audio")
    assert (sdp.encoding, sdp.clock_rate, sdp.channels, sdp.attribute("ptime")) == (encoding, RATE, channels, "1")
    receiver = RTPReceiveActor(sdp=sender.sdp(), payload_type="audio")
    probe = Probe(AudioBuffer)
    receiver >> probe
    gen >> sender
    gen >> sent
    blocks = await probe.wait_for(30, timeout=10)
    for actor in (gen, sender, receiver, probe, sent):
        await actor.stop()
    audio = np.concatenate([b.data for b in blocks[5:30]])
    assert audio.shape[1] == channels and blocks[-1].sample_rate == RATE
    assert abs(peak_hz(audio) - 1000) < 5
    assert np.abs(audio[:, -1] - audio[:, 0]).max() < 1e-3  # every channel carries the tone
    net = receiver.stats()["network"]
    assert net["packets_lost"] == 0 and net["timing"] == "media-clock"
    # the blocks keep the sender's timeline: block k starts where the sent samples say it should
    t_sent = np.array([b.timestamp for b in sent.messages])
    assert np.min(np.abs(t_sent - blocks[10].timestamp)) < 0.0101  # on the sender's 10 ms block grid
    assert blocks[-1].clock_source_id == f"rtp:{sender.ssrc:08x}"


@needs_gst
async def test_streamlib_to_gstreamer_l24() -> None:
    port = free_port()
    caps = "application/x-rtp,media=audio,clock-rate=48000,encoding-name=L24,channels=2,payload=97"
    args = [
        "gst-launch-1.0",
        "-q",
        "udpsrc",
        f"port={port}",
        f"caps={caps}",
        "!",
        "rtpL24depay",
        "!",
        "audioconvert",
        "!",
        "audio/x-raw,format=F32LE,channels=2,rate=48000",
        "!",
        "fdsink",
        "fd=1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(0.7)
        gen = AudioGenerator(1500.0, channels=2)
        sender = RTPSendActor("127.0.0.1", port, "audio")
        gen >> sender
        assert proc.stdout is not None
        data = await asyncio.wait_for(asyncio.to_thread(proc.stdout.read, RATE // 2 * 2 * 4), 15)
        await gen.stop()
        await sender.stop()
    finally:
        proc.kill()
        proc.communicate()
    audio = np.frombuffer(data, "<f4").reshape(-1, 2)
    assert len(audio) == RATE // 2
    assert abs(peak_hz(audio) - 1500) < 5 and 0.3 < np.abs(audio).max() <= 0.51


@needs_gst
async def test_gstreamer_to_streamlib_l24() -> None:
    port = free_port()
    receiver = RTPReceiveActor(port, "audio", encoding="L24", channels=2)
    probe = Probe(AudioBuffer)
    receiver >> probe
    args = [
        "gst-launch-1.0",
        "-q",
        "audiotestsrc",
        "freq=2000",
        "volume=0.5",
        "num-buffers=50",
        "samplesperbuffer=480",
        "is-live=true",
        "!",
        "audio/x-raw,rate=48000,channels=2,format=S24BE",
        "!",
        "rtpL24pay",
        "min-ptime=1000000",
        "max-ptime=1000000",
        "!",
        "udpsink",
        "host=127.0.0.1",
        f"port={port}",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.to_thread(proc.wait, 20)
    blocks = await probe.wait_for(45, timeout=5)
    await receiver.stop()
    await probe.stop()
    net = receiver.stats()["network"]
    assert net["packets_received"] >= 450 and net["packets_lost"] == 0
    audio = np.concatenate([b.data for b in blocks[2:45]])
    assert abs(peak_hz(audio) - 2000) < 5 and 0.4 < np.abs(audio).max() < 0.6
    assert net["timing"] == "anchored"
