"""AudioGenerator, AudioMixer, and audio muxed with video into a real MP4 decoded back with PyAV."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from streamlib import Actor, ActorInitError, AudioBuffer, LifecycleState, StreamOutput, TimedTick, VideoFrame
from streamlib.actors.audio import AudioGenerator, AudioMixer
from streamlib.actors.files import FileSink
from streamlib.testing import Feeder, Probe


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


async def test_sine_is_continuous_exact_and_ends_after_duration() -> None:
    gen = AudioGenerator(1000.0, sample_rate=16000, channels=2, block_size=256, realtime=False, duration=0.5)
    probe = Probe(AudioBuffer, overflow="block")
    gen >> probe
    assert await asyncio.wait_for(gen.join(), 5) is LifecycleState.STOPPED
    await asyncio.wait_for(probe.join(), 5)
    samples = np.concatenate([m.data for m in probe.messages])
    assert samples.shape == (8000, 2) and samples.dtype == np.float32
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000)
    np.testing.assert_allclose(samples[:, 0], expected, atol=1e-6)  # no phase jump at block edges
    np.testing.assert_array_equal(samples[:, 0], samples[:, 1])
    assert dominant_frequency(samples[:, 0], 16000) == pytest.approx(1000, abs=2)
    stamps = np.array([m.timestamp for m in probe.messages])
    assert np.diff(stamps) == pytest.approx(np.full(len(stamps) - 1, 256 / 16000), abs=1e-9)


async def test_realtime_generator_runs_at_sample_rate_over_block_size() -> None:
    gen = AudioGenerator(440.0, sample_rate=48000, block_size=480)  # 100 blocks per second
    assert gen.own_fps == 100.0
    probe = Probe(AudioBuffer)
    gen >> probe
    await probe.wait_for(5)
    start, first = time.monotonic(), len(probe.messages)
    await probe.wait_for(first + 20)
    elapsed = time.monotonic() - start
    await gen.stop()
    assert 0.15 < elapsed < 0.35  # 20 blocks of 10 ms
    stamps = np.array([m.timestamp for m in probe.messages])
    assert np.median(np.diff(stamps)) == pytest.approx(0.01, abs=1e-4)


async def test_white_noise_is_seeded_and_bounded() -> None:
    async def render(seed: int) -> np.ndarray:
        gen = AudioGenerator(waveform="noise", amplitude=0.3, channels=1, realtime=False, duration=0.25, seed=seed)
        probe = Probe(AudioBuffer, overflow="block")
        gen >> probe
        await asyncio.wait_for(probe.join(), 5)
        return np.concatenate([m.data for m in probe.messages])[:, 0]

    a, b = await render(1), await render(1)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a)) <= 0.3
    assert np.std(a) == pytest.approx(0.3 / math.sqrt(3), rel=0.05)
    assert abs(float(np.mean(a))) < 0.01


def test_generator_rejects_a_frequency_above_nyquist() -> None:
    with pytest.raises(ActorInitError, match="Nyquist"):
        AudioGenerator(30000.0, sample_rate=48000)


def block(value: float | np.ndarray, n: int, t: float, rate: int = 8000, channels: int = 1) -> AudioBuffer:
    data = np.broadcast_to(np.asarray(value, np.float32).reshape(-1, 1), (n, channels)).copy()
    return AudioBuffer(data, rate, timestamp=t)


async def test_mixer_sums_with_gains_sample_accurately_across_block_sizes() -> None:
    mixer = AudioMixer(2, gains=[0.5, 0.25])
    a, b = Feeder(AudioBuffer), Feeder(AudioBuffer)
    a >> mixer.inputs["in0"]
    b >> mixer.inputs["in1"]
    probe = Probe(AudioBuffer)
    mixer >> probe
    ramp = np.arange(600, dtype=np.float32) / 1000
    t0 = time.monotonic()
    await a.send(block(ramp[:200], 200, t0), block(ramp[200:400], 200, t0 + 0.025), block(ramp[400:], 200, t0 + 0.05))
    await b.send(block(0.4, 300, t0), block(0.4, 300, t0 + 0.0375))
    await a.end()
    await b.end()
    assert await asyncio.wait_for(mixer.join(), 5) is LifecycleState.STOPPED
    out = np.concatenate([m.data for m in probe.messages])[:, 0]
    np.testing.assert_allclose(out, 0.5 * ramp + 0.25 * 0.4, atol=1e-6)
    assert probe.messages[0].timestamp == pytest.approx(t0)


async def test_mixer_clips_and_spreads_mono_over_stereo() -> None:
    mixer = AudioMixer(2)
    a, b = Feeder(AudioBuffer), Feeder(AudioBuffer)
    a >> mixer.inputs["in0"]
    b >> mixer.inputs["in1"]
    probe = Probe(AudioBuffer)
    mixer >> probe
    await a.send(block(0.8, 160, 0.0, channels=2))
    await b.send(block(0.7, 160, 0.0, channels=1))
    await probe.wait_for(1)
    assert probe.messages[0].data.shape == (160, 2)
    assert np.all(probe.messages[0].data == 1.0)
    await a.end()
    await b.end()


async def test_mixer_does_not_wait_forever_for_a_silent_input() -> None:
    mixer = AudioMixer(2, max_latency=0.05)
    a, silent = Feeder(AudioBuffer), Feeder(AudioBuffer)
    a >> mixer.inputs["in0"]
    silent >> mixer.inputs["in1"]
    probe = Probe(AudioBuffer)
    mixer >> probe
    for i in range(8):
        await a.send(block(0.25, 80, i * 0.01))  # 10 ms blocks at 8 kHz
        await asyncio.sleep(0.01)
    await probe.wait_for(1, timeout=2)
    assert np.allclose(np.concatenate([m.data for m in probe.messages]), 0.25)
    await a.end()
    await silent.end()


async def test_mixer_rejects_mismatched_sample_rates() -> None:
    mixer = AudioMixer(2)
    a, b = Feeder(AudioBuffer), Feeder(AudioBuffer)
    a >> mixer.inputs["in0"]
    b >> mixer.inputs["in1"]
    await a.send(block(0.1, 100, 0.0, rate=8000))
    await b.send(block(0.1, 100, 0.0, rate=44100))
    assert await asyncio.wait_for(mixer.join(), 5) is LifecycleState.FAILED
    assert "44100 Hz" in str(mixer.failure) and mixer.path in str(mixer.failure)
    await a.end()
    await b.end()


class Colours(Actor):
    """``count`` frames, not paced, stamped ``t0 + n / fps`` (lossless into blocking inputs)."""

    default_fps = math.inf

    def __init__(self, count: int, fps: float = 30.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.count, self.fps, self.n = count, fps, 0
        self.t0 = time.monotonic()
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        if self.n >= self.count:
            self.stop()
            return
        img = np.full((72, 96, 3), (0, 0, 0), np.uint8)
        img[..., 1] = 200
        await self.outputs["video"].send(
            VideoFrame(img, timestamp=self.t0 + self.n / self.fps, frame_number=self.n, clock_rate=self.fps)
        )
        self.n += 1


@pytest.mark.parametrize(("name", "audio_codec"), [("av.mp4", "aac"), ("av.mkv", "opus")])
async def test_mux_sine_and_video_then_decode_both_streams(tmp_path: Path, name: str, audio_codec: str) -> None:
    path = tmp_path / name
    sink = FileSink(path, lossless=True)
    Colours(60) >> sink.inputs["video"]  # 2 s of video
    AudioGenerator(1000.0, sample_rate=44100, channels=2, realtime=False, duration=2.0) >> sink.inputs["audio"]
    assert await asyncio.wait_for(sink.join(), 15) is LifecycleState.STOPPED

    with av.open(str(path)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == "h264" and aus.codec_context.name == audio_codec
        video = [f for f in c.decode(vs)]
    with av.open(str(path)) as c:
        aus = c.streams.audio[0]
        frames = list(c.decode(aus))
        rate = frames[0].sample_rate
        audio = np.concatenate([f.to_ndarray() for f in frames], axis=1)  # (channels, samples)
        audio_start = float(frames[0].time)
    assert len(video) == 60
    assert float(video[-1].time) == pytest.approx(59 / 30, abs=2e-3)
    assert audio.shape[0] == 2
    duration = audio.shape[1] / rate
    assert duration == pytest.approx(2.0, abs=0.05)  # codec priming/padding aside
    assert abs(audio_start) < 0.05
    assert dominant_frequency(audio[0], rate) == pytest.approx(1000, abs=3)
    assert np.max(np.abs(audio[0, rate // 2 : rate])) == pytest.approx(0.5, abs=0.05)
    assert abs(int(video[30].to_ndarray(format="rgb24")[36, 48, 1]) - 200) <= 6


async def test_offline_mix_of_two_tones_is_lossless_aligned_and_as_long_as_the_video(tmp_path: Path) -> None:
    """Two 5 s tones from offline generators (as fast as the mix takes them) and 5 s of
    offline video: exactly 5 s of audio (within a frame), both tones from t = 0 (FFT), no
    sample dropped. (Issue 17: default mailboxes dropped ~500 blocks, 2.95 s came out.)"""
    from streamlib.actors.video import TestPattern

    path = tmp_path / "mix.mkv"
    sink = FileSink(path, lossless=True, audio_codec="pcm")  # PCM: no codec priming to allow for
    mixer = AudioMixer(2, gains=[1.0, 1.0], lossless=True)
    low = AudioGenerator(440.0, amplitude=0.3, realtime=False, duration=5.0)
    high = AudioGenerator(1000.0, amplitude=0.3, realtime=False, duration=5.0, block_size=480)
    low >> mixer.inputs["in0"]
    high >> mixer.inputs["in1"]
    TestPattern("gradient", 96, 72, fps=30, frames=150, realtime=False) >> sink.inputs["video"]
    mixer >> sink.inputs["audio"]
    assert await asyncio.wait_for(sink.join(), 60) is LifecycleState.STOPPED
    assert mixer.late_samples == 0 and mixer.inputs["in0"].dropped == 0 and mixer.inputs["in1"].dropped == 0
    with av.open(str(path)) as c:
        video = [float(f.time) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    rate = frames[0].sample_rate
    audio = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in frames]) / 32768.0  # packed s16 stereo
    audio_start = float(frames[0].time)
    audio_seconds = audio.shape[0] / rate
    video_seconds = video[-1] + 1 / 30 - video[0]
    assert len(video) == 150
    assert audio_seconds == pytest.approx(5.0, abs=1 / 30)
    assert abs(audio_start - video[0]) < 1 / 30 and abs(audio_seconds - video_seconds) < 1 / 30
    first = audio[: rate // 10, 0].astype(np.float64)  # the first 100 ms
    spectrum = np.abs(np.fft.rfft(first * np.hanning(len(first))))
    freqs = np.fft.rfftfreq(len(first), 1 / rate)
    peak = spectrum.max()
    for tone in (440.0, 1000.0):
        assert spectrum[np.argmin(np.abs(freqs - tone))] > 0.5 * peak, f"{tone} Hz missing at the start"
    assert np.max(np.abs(audio[rate : 2 * rate, 0])) == pytest.approx(0.6, abs=0.02)  # both, in phase at times
