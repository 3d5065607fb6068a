"""FileSource, FileSink and HLSSink against real media: every file is decoded back with PyAV."""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from streamlib import (
    Actor,
    ActorInitError,
    AudioBuffer,
    LifecycleState,
    StreamOutput,
    Supervisor,
    TimedTick,
    VideoFrame,
)
from streamlib.actors.files import FileSink, FileSource, HLSSink
from streamlib.testing import Feeder, Probe

REPO = Path(__file__).resolve().parents[1]
H, W = 96, 128
RED, GREEN, BLUE = (220, 30, 40), (30, 200, 60), (40, 50, 210)


def solid(color: tuple[int, int, int], h: int = H, w: int = W) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = color
    return img


class Frames(Actor):
    """A tiny video source for these tests: ``count`` frames from ``make(n)``, stamped ``t0 + n / fps``.

    ``realtime=False`` sends as fast as downstream accepts (lossless into blocking inputs)."""

    def __init__(self, count: int | None, make: Any = None, fps: float = 30.0, realtime: bool = False, **kw: Any):
        super().__init__(**kw)
        self.count, self.fps, self.realtime = count, fps, realtime
        self.make = make or (lambda n: solid(RED))
        self.n = 0
        self.t0 = time.monotonic()
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    @property  # type: ignore[override]
    def default_fps(self) -> float:
        return self.fps if self.realtime else math.inf

    async def process(self, tick: TimedTick) -> None:
        if self.count is not None and self.n >= self.count:
            self.stop()
            return
        n = self.n
        self.n += 1
        await self.outputs["video"].send(
            VideoFrame(self.make(n), timestamp=self.t0 + n / self.fps, frame_number=n, clock_rate=self.fps)
        )


async def feed_frames(sink: FileSink, frames: list[np.ndarray], stamps: list[float] | None = None) -> None:
    """Send ``frames`` losslessly into ``sink`` (which must be lossless) and end the stream."""
    feeder = Feeder(VideoFrame)
    feeder >> sink.inputs["video"]
    t0 = time.monotonic()
    for n, img in enumerate(frames):
        ts = t0 + (stamps[n] if stamps is not None else n / 30)
        await feeder.send(VideoFrame(img, timestamp=ts, frame_number=n, clock_rate=30.0))
    await feeder.end()


def decode_video(path: Path) -> tuple[list[float], list[np.ndarray], Any]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
        }
        times, images = [], []
        for f in c.decode(stream):
            times.append(float(f.time))
            images.append(f.to_ndarray(format="rgb24"))
    return times, images, info


def close_to(img: np.ndarray, color: tuple[int, int, int], tol: float = 8.0) -> bool:
    centre = img[img.shape[0] // 4 : -img.shape[0] // 4, img.shape[1] // 4 : -img.shape[1] // 4]
    return bool(np.all(np.abs(centre.reshape(-1, 3).mean(axis=0) - np.array(color)) <= tol))


# --------------------------------------------------------------------------------- FileSink


async def test_h264_mp4_frames_sizes_timestamps_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    sink = FileSink(path, lossless=True)
    colours = [RED] * 10 + [GREEN] * 10 + [BLUE] * 10
    await feed_frames(sink, [solid(c) for c in colours])
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.STOPPED
    assert sink.frames_written == 30
    times, images, info = decode_video(path)
    assert info == {"codec": "h264", "width": W, "height": H}
    assert len(images) == 30
    assert times == pytest.approx([n / 30 for n in range(30)], abs=1e-3)
    for img, colour in zip(images, colours, strict=True):
        assert img.shape == (H, W, 3)
        assert close_to(img, colour), (img[H // 2, W // 2], colour)


@pytest.mark.parametrize(
    ("name", "codec", "expect"),
    [
        ("out.mkv", "hevc", "hevc"),
        ("out.mov", "hevc", "hevc"),
        ("out.webm", "vp9", "vp9"),
        ("out.mp4", "vp9", "vp9"),
        ("out.mov", "h264", "h264"),
        ("out.mkv", "h264", "h264"),
    ],
)
async def test_codecs_and_containers(tmp_path: Path, name: str, codec: str, expect: str) -> None:
    path = tmp_path / name
    sink = FileSink(path, codec=codec, crf=20, lossless=True)
    await feed_frames(sink, [solid(GREEN)] * 6 + [solid(BLUE)] * 6)
    await asyncio.wait_for(sink.join(), 15)
    times, images, info = decode_video(path)
    assert info == {"codec": expect, "width": W, "height": H}
    assert len(images) == 12
    assert times == pytest.approx([n / 30 for n in range(12)], abs=2e-3)  # MKV/WebM store milliseconds
    assert close_to(images[0], GREEN) and close_to(images[-1], BLUE)


async def test_ffv1_is_lossless_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(5)]
    path = tmp_path / "lossless.mkv"
    sink = FileSink(path, codec="ffv1", lossless=True)
    await feed_frames(sink, frames)
    await asyncio.wait_for(sink.join(), 10)
    _, images, info = decode_video(path)
    assert info["codec"] == "ffv1"
    assert len(images) == 5
    for got, sent in zip(images, frames, strict=True):
        np.testing.assert_array_equal(got, sent)


async def test_variable_frame_rate_timestamps_come_from_clock_metadata(tmp_path: Path) -> None:
    stamps = [0.0, 0.05, 0.06, 0.2, 0.21, 0.5, 1.0, 1.0333]
    path = tmp_path / "vfr.mp4"
    sink = FileSink(path, lossless=True)
    await feed_frames(sink, [solid(RED)] * len(stamps), stamps)
    await asyncio.wait_for(sink.join(), 10)
    times, _, _ = decode_video(path)
    assert times == pytest.approx(stamps, abs=1e-3)


async def test_frames_without_timestamps_get_the_nominal_rate(tmp_path: Path) -> None:
    path = tmp_path / "nots.mp4"
    sink = FileSink(path, fps=25, lossless=True)
    feeder = Feeder(VideoFrame)
    feeder >> sink.inputs["video"]
    for _ in range(10):
        await feeder.send(VideoFrame(solid(RED)))  # timestamp 0.0 on every frame
    await feeder.end()
    await asyncio.wait_for(sink.join(), 10)
    times, _, _ = decode_video(path)
    assert times == pytest.approx([n / 25 for n in range(10)], abs=1e-3)


async def test_odd_sizes_rgba_and_grey_frames_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    sink = FileSink(path, lossless=True)
    rgba = np.dstack([solid(BLUE, 33, 47), np.full((33, 47), 255, np.uint8)])
    await feed_frames(sink, [rgba, rgba])
    await asyncio.wait_for(sink.join(), 10)
    _, images, info = decode_video(path)
    assert (info["width"], info["height"]) == (48, 34)  # padded to even for 4:2:0
    assert close_to(images[0], BLUE)

    grey_path = tmp_path / "grey.mkv"
    grey_sink = FileSink(grey_path, codec="ffv1", lossless=True)
    await feed_frames(grey_sink, [np.full((20, 30), 77, np.uint8)] * 2)
    await asyncio.wait_for(grey_sink.join(), 10)
    _, images, _ = decode_video(grey_path)
    assert images[0].shape == (20, 30, 3) and np.all(images[0] == 77)


async def test_source_to_sink_pipeline_ends_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "pipe.mkv"
    sink = FileSink(path, codec="ffv1", lossless=True)
    Frames(20, make=lambda n: solid((n * 10, 0, 0))) >> sink
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.STOPPED
    _, images, _ = decode_video(path)
    assert [int(img[0, 0, 0]) for img in images] == [n * 10 for n in range(20)]


async def test_realtime_sink_drops_rather_than_blocks_by_default(tmp_path: Path) -> None:
    realtime, lossless = FileSink(tmp_path / "a.mp4"), FileSink(tmp_path / "b.mp4", lossless=True)
    assert realtime.inputs["video"].mailbox.overflow == "drop_oldest"
    assert lossless.inputs["video"].mailbox.overflow == "block"
    await realtime.stop()
    await lossless.stop()
    assert not (tmp_path / "a.mp4").exists()  # no frames: no file, rather than an unplayable one


async def test_a_slow_encode_does_not_hold_the_sinks_tick_and_stop_writes_everything(tmp_path: Path) -> None:
    path = tmp_path / "slow.mkv"
    sink = FileSink(path, codec="ffv1", lossless=True)
    write = sink._write

    def slow_write(msg: Any) -> None:  # an encoder stalling for many frame periods
        time.sleep(0.5)
        write(msg)

    sink._write = slow_write  # type: ignore[method-assign]
    feeder = Feeder(VideoFrame)
    feeder >> sink
    start = time.perf_counter()
    for n in range(4):  # within the writer's depth: handed over without waiting for the encoder
        await feeder.send(VideoFrame(solid((n * 40, 0, 0)), timestamp=n / 30, frame_number=n))
    while sink.inputs["video"].mailbox.received < 4 or len(sink.inputs["video"].mailbox):
        await asyncio.sleep(0.005)
    handed_over = time.perf_counter() - start
    assert handed_over < 1.0 and sink.frames_written < 4, (handed_over, sink.frames_written)  # writing takes 2 s
    await feeder.end()
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.STOPPED
    assert sink.frames_written == 4 and len(sink.writer.seconds) == 4
    _, images, _ = decode_video(path)
    assert [int(img[0, 0, 0]) for img in images] == [0, 40, 80, 120]  # in order, all of them


async def test_an_encoder_error_fails_the_sink_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    sink = FileSink(path)
    write = sink._write

    def flaky_write(msg: Any) -> None:
        if msg.frame_number == 3:
            raise RuntimeError("the encoder gave up")
        write(msg)

    sink._write = flaky_write  # type: ignore[method-assign]
    feeder = Feeder(VideoFrame)
    feeder >> sink
    for n in range(10):
        await feeder.send(VideoFrame(solid(RED), timestamp=n / 30, frame_number=n))
        await asyncio.sleep(0.02)
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.FAILED
    assert "the encoder gave up" in str(sink.failure)
    _, images, _ = decode_video(path)
    assert len(images) == 3  # frames 0..2, finalized into a playable file
    await feeder.stop()


# ------------------------------------------------------------------- killed mid-way: still playable


async def test_stop_mid_stream_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "stopped.mp4"
    sink = FileSink(path)
    src = Frames(None, realtime=True, fps=60)
    src >> sink
    while sink.frames_written < 12:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(sink.stop(), 10)
    await sink.stop()  # a second stop finalizes nothing twice
    written = sink.frames_written
    await src.stop()
    _, images, info = decode_video(path)
    assert len(images) == written >= 12
    assert info["width"] == W


async def test_parent_stop_finalizes_the_child_sink(tmp_path: Path) -> None:
    path = tmp_path / "parent.mkv"
    parent = Supervisor()
    sink = parent.spawn(FileSink, path, codec="vp9")
    src = Frames(None, realtime=True, fps=60)
    src >> sink
    while sink.frames_written < 8:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(parent.stop(), 10)
    await src.stop()
    _, images, _ = decode_video(path)
    assert len(images) == sink.frames_written >= 8


class Doomed(Actor):
    """A parent that fails on request (to test that its children's files survive)."""

    default_fps = 100.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail = False

    async def process(self, tick: TimedTick) -> None:
        if self.fail:
            raise RuntimeError("parent exploded")


async def test_parent_failure_finalizes_the_child_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "orphan.mp4"
    parent = Doomed()
    sink = parent.spawn(FileSink, path, lossless=True)
    await feed_frames_without_end(sink, 7)
    parent.fail = True
    assert await asyncio.wait_for(parent.join(), 10) is LifecycleState.FAILED
    assert sink.join().done()
    _, images, _ = decode_video(path)
    assert len(images) == 7


async def feed_frames_without_end(sink: FileSink, count: int) -> Feeder:
    feeder = Feeder(VideoFrame)
    feeder >> sink.inputs["video"]
    t0 = time.monotonic()
    for n in range(count):
        await feeder.send(VideoFrame(solid(GREEN), timestamp=t0 + n / 30, frame_number=n, clock_rate=30.0))
    while sink.frames_written < count:
        await asyncio.sleep(0.01)
    return feeder


@pytest.mark.parametrize(
    ("bad", "words"),
    [(solid(RED, 50, 60), "cannot change mid-stream"), (solid(RED).astype(np.float32), "dtype float32")],
)
async def test_bad_frame_fails_the_sink_clearly_and_keeps_what_was_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: np.ndarray, words: str
) -> None:
    path = tmp_path / "bad.mp4"
    sink = FileSink(path, lossless=True)
    feeder = await feed_frames_without_end(sink, 5)
    await feeder.send(VideoFrame(bad, timestamp=time.monotonic(), frame_number=5))
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.FAILED
    message = str(sink.failure)
    assert sink.path in message and words in message
    assert any(sink.path in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    _, images, _ = decode_video(path)
    assert len(images) == 5
    await feeder.end()


SIGINT_SCRIPT = textwrap.dedent(
    """
    import asyncio, math, sys, time
    import numpy as np
    from streamlib import Actor, StreamOutput, VideoFrame
    from streamlib.actors.files import FileSink

    class Src(Actor):
        default_fps = 60.0
        def __init__(self, **kw):
            super().__init__(**kw)
            self.outputs["video"] = StreamOutput("video", VideoFrame)
        async def process(self, tick):
            await self.outputs["video"].send(VideoFrame.at(tick, data=np.full((64, 80, 3), 90, np.uint8)))

    async def main():
        sink = FileSink(sys.argv[1])
        Src() >> sink
        while sink.frames_written < 10:
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        if "exit" in sys.argv:
            return  # leave the pipeline running: interpreter exit must finalize it
        await asyncio.Event().wait()

    if "exit" in sys.argv:
        # No asyncio.run: actors live on streamlib's background loop, stopped by the atexit hook.
        asyncio.run_coroutine_threadsafe(main(), __import__("streamlib.eventloop").eventloop.background_loop())
        time.sleep(1.0)
        print("exiting", flush=True)
    else:
        asyncio.run(main())
    """
)


async def restart_mid_stream(sink_type: type, path: Path, **kw: Any) -> tuple[Any, Any]:
    """Feed a supervised sink 40 frames, one of them of the wrong size (the sink fails on it
    and is restarted); return (first instance, restarted instance) once both have stopped."""
    sup = Supervisor(max_restarts=3)
    first = sup.spawn(sink_type, path, lossless=True, **kw)
    feeder = Feeder(VideoFrame)
    feeder >> first
    for n in range(40):
        data = solid(RED if n < 20 else BLUE) if n != 20 else solid(RED, h=H // 2)
        await feeder.send(VideoFrame(data, timestamp=n / 30, frame_number=n))
        if n == 20:
            while not sup.children or sup.children[0] is first:
                await asyncio.sleep(0.01)  # the bad frame failed it; the supervisor restarts it
    restarted = sup.children[0]
    await feeder.end()
    assert await asyncio.wait_for(restarted.join(), 20) is LifecycleState.STOPPED
    await sup.stop()
    return first, restarted


async def test_a_restarted_sink_writes_a_new_part_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    first, restarted = await restart_mid_stream(FileSink, path)
    assert first.state is LifecycleState.FAILED and restarted.restarts == 1
    assert restarted.file == tmp_path / "clip.part2.mp4" and restarted.part == 2
    _, before, _ = decode_video(path)  # the first instance's file, finalized when it failed
    _, after, _ = decode_video(restarted.file)
    assert len(before) == 20 and all(close_to(img, RED) for img in before)
    assert len(after) == 19 and all(close_to(img, BLUE) for img in after)


async def test_a_restarted_hls_sink_appends_to_its_playlist(tmp_path: Path) -> None:
    playlist = tmp_path / "live.m3u8"
    _, restarted = await restart_mid_stream(HLSSink, playlist, segment_seconds=0.5)
    text = playlist.read_text()
    assert "#EXT-X-DISCONTINUITY" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    listed = restarted.segments()
    assert sorted(listed) == sorted(tmp_path.glob("*.ts")) and len(set(listed)) == len(listed)
    with av.open(str(playlist)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 39  # 20 red before the crash, 19 blue after: none overwritten
    assert close_to(frames[0], RED) and close_to(frames[-1], BLUE)


async def test_missing_audio_buffers_become_silence_so_sound_stays_in_sync(tmp_path: Path) -> None:
    path = tmp_path / "gaps.mkv"
    sink = FileSink(path, codec="ffv1", audio_codec="pcm", lossless=True)
    video, audio = Feeder(VideoFrame), Feeder(AudioBuffer)
    video >> sink.inputs["video"]
    audio >> sink.inputs["audio"]
    rate, block = 48000, 1024
    await video.send(VideoFrame(solid(RED), timestamp=0.0))
    for n in range(10):
        if n in (4, 5, 6):
            continue  # dropped upstream
        tone = np.full((block, 1), (n + 1) / 20, np.float32)
        await audio.send(AudioBuffer(tone, rate, timestamp=n * block / rate, frame_number=n))
    await video.end()
    await audio.end()
    assert await asyncio.wait_for(sink.join(), 10) is LifecycleState.STOPPED
    assert sink.audio_gap_samples == 3 * block
    with av.open(str(path)) as c:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]) / 32768  # s16 PCM
    assert len(samples) == 10 * block
    levels = [float(np.round(samples[n * block : (n + 1) * block].mean() * 20, 2)) for n in range(10)]
    assert levels == [1, 2, 3, 4, 0, 0, 0, 8, 9, 10]  # each buffer at its own time, silence in the hole


def test_sigint_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "sigint.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err or proc.returncode != 0
    _, images, _ = decode_video(path)
    assert len(images) >= 10
    assert np.all(np.abs(images[-1].astype(int) - 90) <= 4)


def test_interpreter_exit_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "atexit.mp4"
    out = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT, str(path), "exit"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "exiting" in out.stdout, out.stderr
    _, images, _ = decode_video(path)
    assert len(images) >= 10


# --------------------------------------------------------------------------------- HLS


async def test_hls_playlist_lists_its_segments_and_reads_back(tmp_path: Path) -> None:
    playlist = tmp_path / "live.m3u8"
    sink = HLSSink(playlist, segment_seconds=1.0, lossless=True)
    Frames(135, make=lambda n: solid(RED if n < 60 else BLUE)) >> sink  # 4.5 s at 30 fps
    assert await asyncio.wait_for(sink.join(), 20) is LifecycleState.STOPPED
    text = playlist.read_text()
    listed = sink.segments()
    on_disk = sorted(tmp_path.glob("*.ts"))
    assert len(listed) == 5
    assert sorted(listed) == on_disk
    assert all(p.stat().st_size > 0 for p in listed)
    durations = [float(line.split(":")[1].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF")]
    assert durations[:4] == pytest.approx([1.0] * 4, abs=0.04)
    assert "#EXT-X-ENDLIST" in text
    with av.open(str(playlist)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 135
    assert close_to(frames[0], RED) and close_to(frames[-1], BLUE)


async def test_hls_sliding_window_playlist(tmp_path: Path) -> None:
    playlist = tmp_path / "window.m3u8"
    sink = HLSSink(playlist, segment_seconds=0.5, playlist_size=2, delete_segments=True, lossless=True)
    Frames(90) >> sink  # 3 s: 6 segments, 2 listed
    await asyncio.wait_for(sink.join(), 20)
    listed = sink.segments()
    assert len(listed) == 2
    assert [p.name for p in listed] == ["window_00004.ts", "window_00005.ts"]
    assert all(p.exists() for p in listed)
    assert len(list(tmp_path.glob("*.ts"))) <= 3  # older segments deleted (ffmpeg keeps one spare)


# --------------------------------------------------------------------------------- bad input


def test_missing_file_raises_at_construction_naming_actor_and_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(ActorInitError, match=r"/reader.*no such media file.*nope\.mp4"):
        FileSource(missing, name="reader")


def test_corrupt_file_raises_at_construction(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ActorInitError, match=r"cannot open .*junk\.mp4.* as media") as info:
        FileSource(junk)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("name", "kwargs", "words"),
    [
        ("x.mp4", {"codec": "mpeg2"}, "unsupported codec 'mpeg2'"),
        ("x.mov", {"codec": "ffv1"}, "does not support 'ffv1'"),
        ("x.mov", {"codec": "vp9"}, "cannot hold libvpx-vp9"),
        ("x.xyz", {}, "cannot tell the container"),
        ("x.mp4", {"audio_codec": "mp3"}, "unsupported audio_codec"),
        ("missing-dir/x.mp4", {}, "does not exist"),
    ],
)
def test_sink_configuration_errors_at_construction(
    tmp_path: Path, name: str, kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(ActorInitError, match=words) as info:
        FileSink(tmp_path / name, name="writer", **kwargs)
    assert "/writer" in str(info.value)


async def test_truncated_file_ends_or_fails_without_hanging(tmp_path: Path) -> None:
    good = tmp_path / "good.mkv"
    sink = FileSink(good, codec="h264", crf=5, lossless=True)
    rng = np.random.default_rng(3)
    await feed_frames(sink, [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(30)])
    await sink.join()
    data = good.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    src = FileSource(cut, realtime=False)
    probe = Probe(VideoFrame, overflow="block")
    src >> probe
    state = await asyncio.wait_for(src.join(), 10)
    assert state in (LifecycleState.STOPPED, LifecycleState.FAILED)
    assert 0 < len(probe.messages) < 30
    if state is LifecycleState.FAILED:
        assert src.path in str(src.failure)


# --------------------------------------------------------------------------------- FileSource


@pytest.fixture
def av_file(tmp_path: Path) -> Path:
    """2 s of 30 fps video (frame n has grey level 4n, losslessly) and 48 kHz stereo 440 Hz audio."""
    path = tmp_path / "av.mkv"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("ffv1", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "bgr0"
        aus = c.add_stream("pcm_s16le", rate=48000, layout="stereo")
        k = np.arange(96000)
        tone = (0.5 * np.sin(2 * np.pi * 440 * k / 48000)).astype(np.float32)
        for n in range(60):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 4 * n, np.uint8), format="rgb24")
            f.pts = n
            c.mux(vs.encode(f))
            block = np.ascontiguousarray(np.stack([tone[n * 1600 : (n + 1) * 1600]] * 2))
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, n * 1600
            c.mux(aus.encode(af))
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))
    return path


async def test_source_decodes_everything_losslessly_when_not_realtime(av_file: Path) -> None:
    src = FileSource(av_file, realtime=False)
    video, audio = Probe(VideoFrame, overflow="block"), Probe(AudioBuffer, overflow="block")
    src.outputs["video"] >> video
    src.outputs["audio"] >> audio
    start = time.monotonic()
    assert await asyncio.wait_for(src.join(), 10) is LifecycleState.STOPPED
    assert time.monotonic() - start < 1.5  # 2 s of media, not paced
    await asyncio.wait_for(video.join(), 5)  # end of stream reached the probes
    await asyncio.wait_for(audio.join(), 5)
    assert (src.fps, src.width, src.height, src.sample_rate, src.channels) == (30.0, W, H, 48000, 2)
    assert [int(m.data[0, 0, 0]) for m in video.messages] == [4 * n for n in range(60)]
    assert video.messages[0].data.shape == (H, W, 3)
    stamps = np.array([m.timestamp for m in video.messages])
    assert stamps - stamps[0] == pytest.approx(np.arange(60) / 30, abs=1e-3)  # MKV stores milliseconds
    samples = np.concatenate([m.data for m in audio.messages])
    assert samples.dtype == np.float32 and samples.shape == (96000, 2)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(96000) / 48000)
    assert np.max(np.abs(samples[:, 0] - expected)) < 1e-3  # 16-bit PCM
    assert audio.messages[0].timestamp == pytest.approx(video.messages[0].timestamp, abs=1e-6)


async def test_source_paces_at_the_file_rate_in_realtime(av_file: Path) -> None:
    src = FileSource(av_file, realtime=True)
    probe, audio = Probe(VideoFrame), Probe(AudioBuffer)
    src.outputs["video"] >> probe
    src.outputs["audio"] >> audio
    await probe.wait_for(16, timeout=5)
    start = time.monotonic()
    await probe.wait_for(31, timeout=5)
    assert 0.4 < time.monotonic() - start < 0.75  # 15 frames at 30 fps = 0.5 s
    await src.stop()
    assert abs(len(audio.messages) - len(probe.messages)) <= 2  # the interleaved audio went out alongside
    video_only = FileSource(av_file, audio=False)
    assert list(video_only.outputs) == ["video"]
    await video_only.stop()


async def test_audio_only_file_is_paced_by_its_samples(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=22050, layout="mono")
        tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(11025) / 22050)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 22050, 0
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    src = FileSource(path)
    assert list(src.outputs) == ["audio"] and (src.sample_rate, src.channels) == (22050, 1)
    probe = Probe(AudioBuffer)
    src >> probe
    start = time.monotonic()
    await asyncio.wait_for(src.join(), 5)
    assert 0.4 < time.monotonic() - start < 0.8  # 0.5 s of audio, sent as it falls due
    assert sum(m.samples for m in probe.messages) == 11025


async def test_source_loops_with_increasing_timestamps(av_file: Path) -> None:
    src = FileSource(av_file, realtime=False, loop=True, audio=False)
    probe = Probe(VideoFrame, overflow="block")
    src >> probe
    await probe.wait_for(130, timeout=10)
    await src.stop()
    levels = [int(m.data[0, 0, 0]) for m in probe.messages[:130]]
    assert levels == [4 * (n % 60) for n in range(130)]
    stamps = np.array([m.timestamp for m in probe.messages[:130]])
    assert stamps - stamps[0] == pytest.approx(np.arange(130) / 30, abs=2e-3)  # ms rounding, per loop


async def test_source_seek(av_file: Path) -> None:
    src = FileSource(av_file, realtime=True)
    probe = Probe(VideoFrame)
    src.outputs["video"] >> probe
    await probe.wait_for(3)
    src.seek(1.5)
    await probe.wait_for(12)
    await src.stop()
    levels = [int(m.data[0, 0, 0]) // 4 for m in probe.messages]
    jump = next(i for i in range(1, len(levels)) if levels[i] != levels[i - 1] + 1)
    assert levels[jump] == 45  # frame 45 is at 1.5 s
    assert levels[jump + 1 :] == list(range(46, 46 + len(levels) - jump - 1))
    stamps = np.array([m.timestamp for m in probe.messages])
    assert stamps - stamps[0] == pytest.approx(np.arange(len(stamps)) / 30, abs=1e-3)


async def test_transcode_audio_and_video_file_to_file(av_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "transcoded.mp4"
    src = FileSource(av_file, realtime=False)
    sink = FileSink(out, lossless=True)
    src.outputs["video"] >> sink.inputs["video"]
    src.outputs["audio"] >> sink.inputs["audio"]
    assert await asyncio.wait_for(sink.join(), 15) is LifecycleState.STOPPED
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = list(c.decode(video=0))
    with av.open(str(out)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert len(frames) == 60
    assert abs(int(frames[30].to_ndarray(format="rgb24")[H // 2, W // 2, 0]) - 120) <= 4
    assert abs(samples - 96000) <= 2048  # AAC priming/padding


@pytest.mark.parametrize("example", ["hls_output.py", "audio_video_mux.py"])
def test_examples_run_headless(tmp_path: Path, example: str) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / example), "--out", str(tmp_path), "--seconds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert str(tmp_path) in out.stdout


# --------------------------------------------------------------------------------- issue 17


@pytest.fixture
def aac_mp4(tmp_path: Path) -> Path:
    """2 s of H.264 + AAC in a classic (faststart) MP4: AAC's 1024-sample frames do not line
    up with the video's, so the demuxer hands out audio ahead of the video."""
    path = tmp_path / "aac.mp4"
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        vs = c.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        aus = c.add_stream("aac", rate=48000, layout="stereo")
        k = np.arange(96000)
        tone = (0.3 * np.sin(2 * np.pi * 440 * k / 48000)).astype(np.float32)
        for n in range(60):
            f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 4 * n, np.uint8), format="rgb24")
            f.pts = n
            c.mux(vs.encode(f))
            af = av.AudioFrame.from_ndarray(
                np.stack([tone[n * 1600 : (n + 1) * 1600]] * 2), format="fltp", layout="stereo"
            )
            af.sample_rate, af.pts = 48000, n * 1600
            c.mux(aus.encode(af))
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))
    return path


def assert_monotonic(blocks: list[AudioBuffer]) -> None:
    for before, after in itertools.pairwise(blocks):
        end = before.timestamp + before.samples / before.sample_rate
        assert after.timestamp >= end - 1e-6, (
            f"audio went back {end - after.timestamp:.4f} s at block {after.frame_number}"
        )


async def test_audio_timestamps_stay_monotonic_across_seek_and_loop(aac_mp4: Path) -> None:
    src = FileSource(aac_mp4, realtime=False, loop=True)
    video, audio = Probe(VideoFrame, overflow="block"), Probe(AudioBuffer, overflow="block")
    src.outputs["video"] >> video
    src.outputs["audio"] >> audio
    await video.wait_for(20, timeout=10)
    src.seek(1.3)
    await video.wait_for(100, timeout=10)  # past the seek and across a loop
    await src.stop()
    assert len(audio.messages) > 100
    assert_monotonic(audio.messages)
    stamps = [m.timestamp for m in video.messages]
    assert all(b > a for a, b in itertools.pairwise(stamps))


async def test_a_truncated_mp4_fails_the_source_instead_of_ending_quietly(aac_mp4: Path, tmp_path: Path) -> None:
    data = aac_mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (at the front) still declares 2 s
    src = FileSource(cut, realtime=False, audio=False)
    probe = Probe(VideoFrame, overflow="block")
    src >> probe
    assert await asyncio.wait_for(src.join(), 10) is LifecycleState.FAILED
    assert str(src.failure).startswith(f"{src.path}: {str(cut)!r} ended at ")
    assert "of the 2.00 s its header declares" in str(src.failure) and "truncated" in str(src.failure)
    assert 0 < len(probe.messages) < 60


async def test_a_truncated_file_can_be_tolerated_logged_and_counted(
    aac_mp4: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = aac_mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    src = FileSource(cut, realtime=False, audio=False, tolerate_truncation=True)
    probe = Probe(VideoFrame, overflow="block")
    src >> probe
    assert await asyncio.wait_for(src.join(), 10) is LifecycleState.STOPPED
    assert src.truncations == 1 and "truncated or damaged" in caplog.text
    whole = FileSource(aac_mp4, realtime=False)  # a whole file is not flagged
    whole_probe = Probe(VideoFrame, overflow="block")
    whole.outputs["video"] >> whole_probe
    whole.outputs["audio"] >> Probe(AudioBuffer, overflow="block")
    assert await asyncio.wait_for(whole.join(), 10) is LifecycleState.STOPPED
    assert len(whole_probe.messages) == 60 and whole.truncations == 0


async def test_hls_writes_no_one_frame_last_segment(tmp_path: Path) -> None:
    playlist = tmp_path / "tail.m3u8"
    sink = HLSSink(playlist, segment_seconds=1.0, lossless=True)
    Frames(31, make=lambda n: solid(RED if n < 30 else BLUE)) >> sink  # frame 30 starts a new second
    assert await asyncio.wait_for(sink.join(), 20) is LifecycleState.STOPPED
    text = playlist.read_text()
    assert [p.name for p in sink.segments()] == ["tail_00000.ts"] and sorted(tmp_path.glob("*.ts")) == sink.segments()
    durations = [float(line.split(":")[1].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF")]
    assert durations == pytest.approx([31 / 30], abs=0.01)
    assert "#EXT-X-TARGETDURATION:1" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    with av.open(str(playlist)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 31 and close_to(frames[-1], BLUE)


async def test_offline_audio_racing_ahead_does_not_make_a_lossless_sink_drop_its_video(tmp_path: Path) -> None:
    """Offline, 3 s of audio arrive in milliseconds before the first video frame: the sink
    waits for the video in wall-clock time, not media time (which the audio ran through)."""
    path = tmp_path / "race.mkv"
    sink = FileSink(path, lossless=True, start_wait=2.0)
    audio, video = Feeder(AudioBuffer), Feeder(VideoFrame)
    audio >> sink.inputs["audio"]
    video >> sink.inputs["video"]
    t0 = time.monotonic()
    for n in range(30):  # 3 s of media, at once
        await audio.send(AudioBuffer(np.zeros((4800, 2), np.float32), 48000, timestamp=t0 + n * 0.1, clock_rate=10.0))
    await asyncio.sleep(0.3)  # the video source is slower to start
    for n in range(10):
        await video.send(VideoFrame(solid(RED), timestamp=t0 + n / 30, frame_number=n, clock_rate=30.0))
    audio.end()
    video.end()
    assert await asyncio.wait_for(sink.join(), 15) is LifecycleState.STOPPED
    _, images, _ = decode_video(path)
    assert len(images) == 10 and close_to(images[0], RED)


async def test_expect_waits_for_an_input_wired_after_the_other_already_delivers(tmp_path: Path) -> None:
    """A plain script wires audio, then video; audio may flow before the video is connected."""
    path = tmp_path / "late.mkv"
    sink = FileSink(path, lossless=True, expect=("video", "audio"))
    audio, video = Feeder(AudioBuffer), Feeder(VideoFrame)
    audio >> sink.inputs["audio"]
    t0 = time.monotonic()
    for n in range(5):
        await audio.send(AudioBuffer(np.zeros((4800, 2), np.float32), 48000, timestamp=t0 + n * 0.1, clock_rate=10.0))
    await asyncio.sleep(0.2)
    video >> sink.inputs["video"]  # connected only now
    for n in range(6):
        await video.send(VideoFrame(solid(GREEN), timestamp=t0 + n / 30, frame_number=n, clock_rate=30.0))
    audio.end()
    video.end()
    assert await asyncio.wait_for(sink.join(), 15) is LifecycleState.STOPPED
    _, images, _ = decode_video(path)
    assert len(images) == 6 and close_to(images[0], GREEN)
    with pytest.raises(ActorInitError, match="expect takes 'video' and/or 'audio'"):
        FileSink(tmp_path / "x.mkv", expect=("subtitles",))
