"""Media files in and out: :class:`FileSource`, :class:`FileSink` and :class:`HLSSink` (PyAV).

Decoding and encoding are blocking C calls that take milliseconds per frame, so every
actor here runs its hooks on its *own* one-thread :class:`~streamlib.ThreadPoolDispatcher`
by default. One thread per actor (rather than the shared ``"thread"`` pool) means a
lossless source that waits for room downstream can never occupy the thread its
consumer needs, and the PyAV objects of one file are only ever touched by one thread.

Lossless pipelines. ``FileSource(realtime=False)`` decodes as fast as downstream takes
frames, but only inputs declared with ``overflow="block"`` make it wait; a dropping
input (the realtime default) keeps only the newest frames. ``FileSink(lossless=True)``
declares blocking inputs, so::

    FileSource("in.mp4", realtime=False) >> FileSink("out.mkv", codec="ffv1", lossless=True)

transcodes every frame, and ends by itself at the end of the file.

Finalizing. A sink writes the container trailer (the MP4 ``moov`` box, the MKV cues,
the HLS ``#EXT-X-ENDLIST``) in ``on_stop``, which the actor runtime runs on *every*
exit path: end of stream, ``stop()``, a failure of the sink or of its parent,
cancellation at ``KeyboardInterrupt``/loop shutdown, interpreter exit. So a sink always
leaves a file that players and PyAV can read, containing everything it had encoded.

Crash safety. Where ``on_stop`` never runs (``kill -9``, a power cut, an out-of-memory
kill), a classic MP4 is unreadable: its index (``moov``) is written last. So FileSink
writes MP4/MOV *fragmented* by default, as OBS does: an empty index up front, then a
self-contained fragment (``moof`` + ``mdat``) every half second (``frag_duration``; a
fragment per keyframe alone would wait 250 frames for x264's next one), each pushed to
the operating system as soon as it is cut (``flush_packets``). MKV/WebM close a cluster
every quarter second, flushed the same way. A killed file then plays up to its last
complete fragment: everything but about the last second (the fragment being filled,
plus the encoder's ~0.5 s of delay). The MP4 index is written with the first fragment, which the sink cuts after
0.2 s (a keyframe there), so a file killed in its first second has a playable start.
``faststart=True`` writes the classic single-index MP4 with the index moved to the front
(progressive download, players that predate fragments) -- at the price of crash safety.
What fragmenting costs (file size, CPU) is measured in ``benchmarks/bench_fragmented.py``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, cast

# OpenCV must load its X11 libraries before PyAV, or its windows freeze (see streamlib.actors.display);
# FileSink also uses its fast RGB->YUV conversion.
import cv2  # isort: skip
import av  # isort: skip
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.frame import PictureType
from av.video.stream import VideoStream
from numpy.typing import NDArray

from streamlib import Actor, AudioBuffer, Dispatcher, StreamInput, StreamOutput, ThreadPoolDispatcher, TimedTick
from streamlib import VideoFrame as Frame
from streamlib.mailbox import Overflow

__all__ = ["FileSink", "FileSource", "HLSSink", "MediaError"]

log = logging.getLogger("streamlib.files")


#: Container chosen from a path's suffix (``container=`` overrides it).
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".m4a": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".mka": "matroska",
    ".webm": "webm",
    ".m3u8": "hls",
}

#: ``codec=`` names (and aliases) -> the FFmpeg encoder used.
VIDEO_CODECS: dict[str, str] = {
    "h264": "libx264",
    "avc": "libx264",
    "x264": "libx264",
    "libx264": "libx264",
    "hevc": "libx265",
    "h265": "libx265",
    "x265": "libx265",
    "libx265": "libx265",
    "vp9": "libvpx-vp9",
    "libvpx-vp9": "libvpx-vp9",
    "ffv1": "ffv1",
}

#: ``audio_codec=`` names (and aliases) -> the FFmpeg encoder used.
AUDIO_CODECS: dict[str, str] = {
    "aac": "aac",
    "opus": "libopus",
    "libopus": "libopus",
    "pcm": "pcm_s16le",
    "pcm_s16le": "pcm_s16le",
}

# Pairs FFmpeg's format query accepts but whose header write fails (found by trying).
_UNSUPPORTED: set[tuple[str, str]] = {("mov", "libvpx-vp9"), ("mov", "libopus")}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
_VIDEO_TIME_BASE = Fraction(1, 90000)  # MPEG's 90 kHz: exact for 24/25/30/50/60 fps and their /1.001 kin

#: Timestamp rounding a container may add (MKV stores milliseconds): audio that overlaps the
#: previous block by less than this simply continues it; more is an overlap, trimmed.
_TIMESTAMP_SLACK = 0.002

#: How often a crash-safe MP4/MOV is made durable: its fragment length. A kill loses the
#: fragment being filled plus what is still inside the encoder (x264's lookahead and frame
#: threads hold ~0.5 s), so half-second fragments keep the loss within ~1 s; a fragment costs
#: one ``moof`` box, a few hundred bytes (benchmarks/bench_fragmented.py measures it).
FRAGMENT_S = 0.5
#: A crash-safe MKV/WebM closes a cluster this often. A cluster costs a dozen bytes, and
#: MKV starts one early at a keyframe only once the current one holds 4 KB, which a
#: low-bitrate stream takes seconds to fill: short clusters keep such a file safe too.
CLUSTER_S = 0.25
#: Where a fragmented MP4's first fragment (and with it the index) ends: a keyframe forced
#: here, so a recording killed in its first second still leaves a playable start.
FIRST_CUT_S = 0.2


def container_defaults(fmt: str, *, faststart: bool = False) -> dict[str, str]:
    """The muxer options FileSink uses for ``fmt`` unless ``container_options`` overrides them.

    MP4/MOV: fragmented (crash-safe) unless ``faststart``, a fragment per :data:`FRAGMENT_S`;
    MKV/WebM: a flushed cluster per :data:`CLUSTER_S`. ``flush_packets=1`` hands every write to the OS at once:
    without it the header and the last fragment sit in FFmpeg's 32 KB buffer, and a killed
    process leaves a file that does not even start ("moov atom not found")."""
    if fmt in ("mp4", "mov"):
        if faststart:
            return {"movflags": "+faststart"}
        # delay_moov: the index waits for the first fragment, so it can carry the edit list
        # that starts the picture at 0 despite B-frames (with empty_moov alone the video starts
        # two frames late, out of sync with its audio). FileSink cuts that first fragment early.
        return {
            "movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof",
            "frag_duration": str(round(FRAGMENT_S * 1_000_000)),  # microseconds
            "flush_packets": "1",
        }
    if fmt in ("matroska", "webm"):
        return {"cluster_time_limit": str(round(CLUSTER_S * 1000)), "flush_packets": "1"}  # ms
    return {}


class MediaError(RuntimeError):
    """A media file cannot be read or written: the message names the actor, the file and the cause."""


def _own_thread(dispatcher: Dispatcher | str | None) -> Dispatcher | str:
    """The dispatcher to use: the caller's, else a private single worker thread (see the module docstring)."""
    return dispatcher if dispatcher is not None else ThreadPoolDispatcher(workers=1)


def _declared_end(container: InputContainer, streams: list[Any]) -> float | None:
    """Where the header says the chosen streams end (media seconds), or None if it does not say."""
    ends = []
    for stream in streams:
        if stream.duration and stream.time_base:
            start = stream.start_time or 0
            ends.append(float((start + stream.duration) * stream.time_base))
    if ends:
        return max(ends)
    if container.duration and len(streams) == len(container.streams.video) + len(container.streams.audio):
        start = container.start_time or 0
        return float(start + container.duration) / av.time_base
    return None


def _finite_rate(*candidates: float | Fraction | None) -> float:
    """The first usable frame rate among ``candidates`` (a clock may say ``inf`` for "as fast as possible")."""
    for rate in candidates:
        if rate is not None and math.isfinite(float(rate)) and float(rate) > 0:
            return float(rate)
    return 30.0


# ---------------------------------------------------------------------------------------------- source


class FileSource(Actor):
    """Decodes a media file into ``'video'`` (RGB :class:`VideoFrame`) and ``'audio'``
    (float32 ``(samples, channels)`` :class:`AudioBuffer`) outputs.

    An output exists only when the file has that kind of stream (``video=False`` /
    ``audio=False`` ignore one). ``realtime=True`` paces frames at the file's own rate
    on the actor's own clock, like a player; ``realtime=False`` decodes as fast as
    downstream accepts -- losslessly only into inputs with ``overflow="block"``.
    ``loop=True`` rewinds at the end of the file, keeping timestamps increasing;
    otherwise the source stops at the end of the file, which ends the stream downstream.

    Timestamps are the file's presentation times moved onto ``time.monotonic()``'s
    timeline (frame *n* of a 30 fps file is stamped ``t0 + n / 30``), so a sink
    reproduces the file's timing whether it was decoded in real time or not.

    A missing, unreadable or undecodable file raises at construction, naming the actor
    and the file; a decode error later in the file fails the actor. So does a file that
    ends well short of the duration its header declares (a truncated download, a copy
    cut off: the decoder's frame threads turn the damage into a quiet early end, which
    must not pass for a normal end of stream). ``tolerate_truncation=True`` logs it,
    counts it in :attr:`truncations` and ends normally instead.

    Timestamps are monotonic per stream across seeks and loops: audio that the file
    demuxed ahead of the video before a jump is trimmed where it would overlap what follows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        realtime: bool = True,
        loop: bool = False,
        video: bool = True,
        audio: bool = True,
        tolerate_truncation: bool = False,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=_own_thread(dispatcher), **kw)
        self.file = Path(path)
        self.realtime = realtime
        self.tolerate_truncation = tolerate_truncation
        self.truncations = 0  # early ends tolerated (tolerate_truncation=True)
        self.loop_file = loop
        self._seek_to: float | None = None
        if not self.file.is_file():
            raise FileNotFoundError(f"{self.path}: no such media file: {str(self.file)!r}")
        try:
            with av.open(str(self.file)) as probe:
                vstreams = probe.streams.video if video else ()
                astreams = probe.streams.audio if audio else ()
                self.has_video = bool(vstreams)
                self.has_audio = bool(astreams)
                if not (self.has_video or self.has_audio):
                    raise MediaError(f"{self.path}: {str(self.file)!r} has no video or audio stream to read")
                for stream in (*vstreams[:1], *astreams[:1]):
                    if stream.codec_context is None:
                        raise MediaError(f"{self.path}: {str(self.file)!r}: no decoder for its {stream.type} codec")
                self.fps: float = 0.0
                if self.has_video:
                    vs = vstreams[0]
                    self.fps = _finite_rate(vs.average_rate, vs.guessed_rate, vs.base_rate)
                    self.width, self.height = vs.codec_context.width, vs.codec_context.height
                if self.has_audio:
                    ast = astreams[0]
                    self.sample_rate: int = ast.codec_context.sample_rate
                    self.channels: int = ast.codec_context.channels
                    self._audio_block = ast.codec_context.frame_size or 1024
                    self._audio_block_s = self._audio_block / self.sample_rate
                    if not self.has_video:
                        self.fps = self.sample_rate / self._audio_block
                self.duration: float | None = float(probe.duration) / av.time_base if probe.duration else None
                self._declared_end = _declared_end(probe, [*vstreams[:1], *astreams[:1]])
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise MediaError(f"{self.path}: cannot open {str(self.file)!r} as media: {exc}") from exc
        # In real time, the video's frame rate (100 Hz for audio alone: blocks go out when due);
        # otherwise unbounded: as fast as downstream takes frames.
        self.own_fps = (self.fps if self.has_video else 100.0) if realtime else math.inf
        if self.has_video:
            self.outputs["video"] = StreamOutput("video", Frame)
        if self.has_audio:
            self.outputs["audio"] = StreamOutput("audio", AudioBuffer)
        self._container: InputContainer | None = None
        self._frames: Iterator[tuple[str, Any]] | None = None
        self._held: tuple[str, Any, float, float] | None = None  # decoded in real time, not due yet
        self._resampler: AudioResampler | None = None
        self._base: float | None = None  # out timestamp = base + media time
        self._first_media: float | None = None
        self._end_media = 0.0  # where the last frame (video, or audio in an audio-only file) ends
        if not self.has_audio:
            self._audio_block_s = 0.0
        self._skip_before: dict[str, float] = {}  # per stream kind, after a seek
        self._decoded_since_rewind = 0
        self._reached = -math.inf  # the furthest media time decoded since the last rewind
        self._audio_next: float | None = None  # where the next audio block may start (output time)
        self.video_frames_sent = 0
        self.audio_blocks_sent = 0

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds`` into the file (from any thread); applied before the next frame.

        Output timestamps keep increasing across the jump, as they do across a loop."""
        self._seek_to = max(float(seconds), 0.0)

    async def on_start(self) -> None:
        self._open()

    def _open(self) -> None:
        try:
            self._container = container = av.open(str(self.file))
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: cannot reopen {str(self.file)!r}: {exc}") from exc
        if self.has_video:
            container.streams.video[0].thread_type = "AUTO"  # frame threads: decode several frames at once
        self._frames = self._decode()

    def _decode(self) -> Iterator[tuple[str, Any]]:
        """Yield ``('video'|'audio', frame)`` in file order, flushing the decoders at the end."""
        container = self._container
        assert container is not None
        streams: list[Any] = []
        if self.has_video:
            streams.append(container.streams.video[0])
        if self.has_audio:
            streams.append(container.streams.audio[0])
        for packet in container.demux(*streams):
            for frame in packet.decode():
                yield packet.stream.type, frame

    async def process(self, tick: TimedTick) -> None:
        if self._seek_to is not None:
            self._apply_seek()
        # In real time: send every frame that is due by this tick (normally one video
        # frame and the audio demuxed around it); a frame not yet due waits for a later
        # tick. Otherwise: one video frame per tick (one audio block in an audio-only file).
        horizon = tick.timestamp + 0.5 / (self.own_fps or 100.0)
        while True:
            item, self._held = self._held or self._next_frame(tick), None
            if item is None:
                self.stop()  # end of file: end of stream downstream
                return
            kind, frame, media_time, ts = item
            if self.realtime and ts > horizon:
                self._held = item
                return
            if kind == "video":
                self._end_media = media_time + 1.0 / self.fps
                await self._send_video(frame, ts, tick)
            else:
                if not self.has_video:
                    self._end_media = media_time + frame.samples / frame.sample_rate
                await self._send_audio(frame, ts, tick)
            if not self.realtime and (kind == "video" or not self.has_video):
                return

    def _next_frame(self, tick: TimedTick) -> tuple[str, Any, float, float] | None:
        """The next frame to send as ``(kind, frame, media time, output timestamp)``; None at the end."""
        while True:
            frame: Any
            try:
                kind, frame = next(self._frames) if self._frames is not None else ("eof", None)
            except StopIteration:
                kind, frame = "eof", None
            except av.error.FFmpegError as exc:
                sent = self.video_frames_sent
                raise MediaError(
                    f"{self.path}: decoding {str(self.file)!r} failed after {sent} video frames: {exc}"
                ) from exc
            if kind == "eof":
                self._check_complete()
                if self.loop_file and self._decoded_since_rewind:
                    self._loop()
                    continue
                return None
            self._decoded_since_rewind += 1
            media_time = float(frame.time) if frame.time is not None else self._fallback_time(kind)
            length = 1.0 / self.fps if kind == "video" else frame.samples / frame.sample_rate
            self._reached = max(self._reached, media_time + length)
            skip = self._skip_before.get(kind)
            if skip is not None:
                if media_time < skip:
                    continue  # decoding from the keyframe before a seek target
                del self._skip_before[kind]  # (per stream: the file may interleave audio ahead of video)
            return kind, frame, media_time, self._out_time(media_time, tick)

    def _check_complete(self) -> None:
        """At the end of the file: did decoding reach the duration the header declares?"""
        declared, reached = self._declared_end, self._reached
        if declared is None or not self._decoded_since_rewind or self._skip_before:
            return
        if reached >= declared - max(0.5, 2.0 / (self.fps or 30.0)):
            return
        message = (
            f"{self.path}: {str(self.file)!r} ended at {reached:.2f} s of the {declared:.2f} s its header declares "
            f"(after {self.video_frames_sent} video frames): truncated or damaged"
        )
        if not self.tolerate_truncation:
            raise MediaError(message + "; FileSource(tolerate_truncation=True) plays what there is")
        self.truncations += 1
        log.warning("%s; ending here (tolerate_truncation=True)", message)

    def _fallback_time(self, kind: str) -> float:
        if kind == "video":
            return self.video_frames_sent / self.fps
        return self.audio_blocks_sent * self._audio_block / self.sample_rate

    def _out_time(self, media_time: float, tick: TimedTick) -> float:
        if self._base is None:
            start = tick.timestamp if self.realtime else time.monotonic()
            self._base = start - media_time
            self._first_media = media_time
        return self._base + media_time

    async def _send_video(self, frame: av.VideoFrame, ts: float, tick: TimedTick) -> None:
        rgb: NDArray[np.uint8] = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
        msg = Frame(
            data=rgb,
            timestamp=ts,
            frame_number=self.video_frames_sent,
            clock_source_id=tick.clock_source_id,
            clock_rate=self.fps,
        )
        self.video_frames_sent += 1
        await self.outputs["video"].send(msg)

    async def _send_audio(self, frame: AudioFrame, ts: float, tick: TimedTick) -> None:
        if frame.format.name != "fltp":
            if self._resampler is None:
                self._resampler = AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
            frames = self._resampler.resample(frame)
        else:
            frames = [frame]
        for f in frames:
            data = np.ascontiguousarray(f.to_ndarray().T, dtype=np.float32)  # (channels, n) planar -> (n, channels)
            follows = self._audio_next
            if follows is not None and ts < follows:
                if follows - ts > _TIMESTAMP_SLACK:
                    # Audio demuxed ahead of the video before a seek or loop overlaps what follows
                    # the jump: drop the overlap, so time never runs backwards on this stream.
                    skip = round((follows - ts) * f.sample_rate)
                    if skip >= data.shape[0]:
                        continue
                    data = data[skip:]
                ts = follows  # (within the container's timestamp precision: MKV's 1 ms, just continue)
            self._audio_next = ts + data.shape[0] / f.sample_rate
            msg = AudioBuffer(
                data=data,
                sample_rate=f.sample_rate,
                timestamp=ts,
                clock_source_id=tick.clock_source_id,
                frame_number=self.audio_blocks_sent,
                clock_rate=f.sample_rate / max(data.shape[0], 1),
            )
            self.audio_blocks_sent += 1
            ts += data.shape[0] / f.sample_rate
            await self.outputs["audio"].send(msg)

    def _apply_seek(self) -> None:
        target, self._seek_to = self._seek_to, None
        if target is None:
            return
        if self._base is not None:
            # The frame at `target` follows the last frame sent, one period later.
            self._base += self._end_media - target
        self._rewind(target)
        self._reached = math.inf  # a jump: the end reached no longer says whether the file is whole
        self._skip_before = (
            {"video": target - 0.5 / self.fps, "audio": target - 0.5 * self._audio_block_s} if target > 0 else {}
        )

    def _loop(self) -> None:
        if self._base is not None and self._first_media is not None:
            self._base += self._end_media - self._first_media  # the file again, right after itself
            self._end_media = self._first_media
        self._rewind(0.0)
        self._reached = -math.inf

    def _rewind(self, seconds: float) -> None:
        container = self._container
        if container is None:
            return
        try:
            container.seek(int(seconds * av.time_base), backward=True)
        except av.error.FFmpegError:  # an unseekable stream: start over from the beginning
            container.close()
            self._open()
        self._resampler = None
        self._frames = self._decode()
        self._held = None
        self._decoded_since_rewind = 0

    async def on_stop(self) -> None:
        container, self._container = self._container, None
        self._frames = None
        if container is not None:
            container.close()


# ---------------------------------------------------------------------------------------------- sinks


def _check_pair(owner: str, fmt: str, codec: str, path: str) -> None:
    """Raise :class:`MediaError` now if the container cannot hold ``codec`` (not at the first frame)."""
    if (fmt, codec) in _UNSUPPORTED:
        raise MediaError(f"{owner}: the {fmt} container cannot hold {codec} ({path!r}); use .mkv or .mp4")
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream(codec)
    except ValueError as exc:  # "'mov' format does not support 'ffv1' codec"
        raise MediaError(f"{owner}: cannot write {codec} into {path!r}: {exc}") from exc


class _Writer:
    """The thread a sink encodes and muxes on, in arrival order.

    A frame-threaded x264 encode call returns in a few milliseconds most of the time, but
    blocks for several frame periods now and then (while its threads finish earlier
    frames). Handing the writes to this thread keeps the sink's tick short and the actor
    responsive (its other input, stop, end of stream); ``depth`` bounds what may wait
    here, and beyond it :meth:`put` blocks, so a sink that really falls behind drops at
    (or back-pressures through) its input as before. An exception in a write is raised
    by the next :meth:`put` or by :meth:`close`; later writes are skipped.
    """

    def __init__(self, name: str, depth: int) -> None:
        self._jobs: queue.Queue[Frame | AudioBuffer | None] = queue.Queue(maxsize=depth)
        self._write: Any = None
        self.error: BaseException | None = None
        self.seconds: deque[float] = deque(maxlen=10_000)  # duration of each write, newest last
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, write: Any) -> None:
        self._write = write
        self._thread.start()

    def put(self, msg: Frame | AudioBuffer) -> None:
        if self.error is not None:
            raise self.error
        self._jobs.put(msg)

    def close(self) -> None:
        """Wait until everything handed over is written; raise what a write raised."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (msg := self._jobs.get()) is not None:
            if self.error is not None:
                continue
            start = time.perf_counter()
            try:
                self._write(msg)
            except BaseException as exc:
                self.error = exc
            self.seconds.append(time.perf_counter() - start)


class FileSink(Actor):
    """Encodes ``'video'`` (and ``'audio'``, when connected) into a media file.

    The container comes from the suffix (``.mp4``, ``.mov``, ``.mkv``, ``.webm``) or
    ``container=``; ``codec`` is ``"h264"`` (libx264), ``"hevc"`` (libx265), ``"vp9"``
    (libvpx-vp9) or ``"ffv1"`` (lossless; stored as RGB, so pixels survive exactly),
    tuned with ``preset=`` and ``crf=``. Audio is AAC in MP4/MOV, Opus in MKV/WebM
    (``audio_codec="pcm"`` for lossless PCM in MKV/MOV). An unknown codec, an
    impossible codec/container pair or a missing directory raise at construction.

    Timestamps come from the messages' clock metadata: a frame's presentation time is
    its ``timestamp`` minus the first message's, in a 90 kHz time base, so a live
    source's irregular timing is kept (variable frame rate). Frames whose timestamp does
    not advance get the nominal period (``fps=``, else the frame's ``clock_rate``).
    Audio is written as one continuous stream placed at its first buffer's time; where
    buffers are missing (dropped upstream, a source that paused), the gap is filled with
    silence up to the next buffer's timestamp, so sound stays in sync with the picture.

    The streams of a file are fixed when its header is written, so the sink opens the
    file once every connected input has delivered its first message (or, if one stays
    silent, ``start_wait`` seconds of media later -- of wall-clock time when ``lossless``,
    where an offline source can race seconds of media ahead in milliseconds -- without
    it). A plain script wires one input after the other while the first may already
    deliver: ``expect=("video", "audio")`` names the inputs to wait for, connected yet or
    not. Frames must keep the first frame's size; a frame of another size or dtype fails
    the actor with a clear error, and what was written before is finalized.

    ``lossless=False`` (default): realtime inputs that keep the newest ``maxsize``
    messages, so a slow encoder drops frames instead of stalling the pipeline.
    ``lossless=True``: ``overflow="block"`` inputs, so upstream waits for the encoder.

    Files survive ``kill -9``: MP4/MOV are written fragmented (a self-contained fragment
    every half second) and MKV/WebM flush a cluster every quarter second, so a killed process
    leaves a file that plays up to its last second or so (see the module docstring).
    ``faststart=True`` writes a classic MP4/MOV instead, its single index at the front
    (for progressive download and old players), readable only once finalized.
    ``container_options`` override these muxer options one by one.
    """

    default_fps: ClassVar[float | None] = None  # purely message-driven
    container_format: ClassVar[str | None] = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: str = "h264",
        audio_codec: str | None = None,
        preset: str | None = None,
        crf: int | None = None,
        pix_fmt: str | None = None,
        fps: float | None = None,
        container: str | None = None,
        lossless: bool = False,
        maxsize: int = 8,
        start_wait: float = 2.0,
        expect: Iterable[str] | None = None,
        options: Mapping[str, str] | None = None,
        container_options: Mapping[str, str] | None = None,
        faststart: bool = False,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=_own_thread(dispatcher), **kw)
        self.file = Path(path)
        fmt = container or self.container_format or CONTAINERS.get(self.file.suffix.lower())
        if fmt is None:
            known = ", ".join(sorted(CONTAINERS))
            raise MediaError(f"{self.path}: cannot tell the container of {str(self.file)!r}; use {known} or container=")
        if fmt not in av.formats_available:
            raise MediaError(f"{self.path}: this FFmpeg build cannot write {fmt!r} ({str(self.file)!r})")
        self.format = fmt
        self.codec = self._encoder(codec, VIDEO_CODECS, "codec")
        default_audio = "libopus" if fmt in ("matroska", "webm") else "aac"
        if self.codec == "ffv1" and fmt in ("matroska", "mov") and audio_codec is None:
            default_audio = "pcm_s16le"  # lossless video, lossless audio
        self.audio_codec = self._encoder(audio_codec, AUDIO_CODECS, "audio_codec") if audio_codec else default_audio
        check_fmt = "mpegts" if fmt == "hls" else fmt  # HLS segments are MPEG-TS
        _check_pair(self.path, check_fmt, self.codec, str(self.file))
        _check_pair(self.path, check_fmt, self.audio_codec, str(self.file))
        if not self.file.parent.is_dir():
            raise MediaError(
                f"{self.path}: cannot write {str(self.file)!r}: directory {str(self.file.parent)!r} does not exist"
            )
        if not os.access(self.file.parent, os.W_OK):
            raise MediaError(f"{self.path}: cannot write {str(self.file)!r}: directory is not writable")
        if crf is not None and not (0 <= crf <= 63):
            raise ValueError(f"{self.path}: crf must be within 0..63, got {crf!r}")
        self.preset = preset
        self.crf = crf
        self.pix_fmt = pix_fmt
        self.fps = fps
        self.start_wait = start_wait
        self.expect = frozenset(expect) if expect is not None else None
        if self.expect is not None and not self.expect <= {"video", "audio"}:
            raise ValueError(f"{self.path}: expect takes 'video' and/or 'audio', got {sorted(self.expect)}")
        self.options = dict(options or {})
        if faststart and fmt not in ("mp4", "mov"):
            raise MediaError(f"{self.path}: faststart=True is an MP4/MOV layout; {str(self.file)!r} is {fmt}")
        self.faststart = faststart
        self.container_options = {**container_defaults(fmt, faststart=faststart), **(container_options or {})}
        self.lossless = lossless
        self._waiting_since: float | None = None  # wall time the first message waited for the others
        overflow: Overflow = "block" if lossless else "drop_oldest"
        self.inputs["video"] = StreamInput("video", Frame, maxsize=maxsize, overflow=overflow)
        self.inputs["audio"] = StreamInput("audio", AudioBuffer, maxsize=maxsize * 4, overflow=overflow)

        self._pending: list[Frame | AudioBuffer] = []
        self._out: OutputContainer | None = None
        self._vstream: VideoStream | None = None
        self._astream: AudioStream | None = None
        self._finalized = False
        self._t0 = 0.0
        self._size: tuple[int, int] | None = None  # (height, width) of the incoming frames
        self._pad = (0, 0)
        self._rate = 30.0
        self._last_pts = -1
        self._next_key_pts = 0
        # A fragmented MP4 writes its index with the first fragment: a keyframe cuts that one early.
        movflags = self.container_options.get("movflags", "")
        early = "frag" in movflags and "delay_moov" in movflags
        self._first_cut_pts = round(FIRST_CUT_S / _VIDEO_TIME_BASE) if early else None
        self._audio_rate = 0
        self._audio_channels = 0
        self._audio_pts: int | None = None
        self._warned: set[str] = set()
        self.frames_written = 0
        self.audio_samples_written = 0
        self.audio_gap_samples = 0  # silence written where audio buffers were missing
        self.writer = _Writer(f"streamlib-write:{self.file.name}", depth=8)
        self.first_file = self.file
        self.part = 1  # a restarted sink writes part 2, 3, ... (see on_restart)
        self.opened = False

    def _encoder(self, name: str, table: Mapping[str, str], option: str) -> str:
        encoder = table.get(name.lower())
        if encoder is None:
            raise MediaError(f"{self.path}: unsupported {option} {name!r}; choose one of {', '.join(sorted(table))}")
        try:
            av.codec.Codec(encoder, "w")
        except Exception as exc:
            raise MediaError(
                f"{self.path}: {option} {name!r} needs the {encoder} encoder, missing here: {exc}"
            ) from exc
        return encoder

    def on_restart(self, previous: Actor) -> None:
        """Never overwrite what the failed instance wrote (it finalized its file when it
        stopped): continue in a new part, ``<name>.part2.mp4``, ``.part3``, ..."""
        if isinstance(previous, FileSink) and previous.opened:
            self.first_file = previous.first_file
            self.part = previous.part + 1
            self._next_part()
        elif isinstance(previous, FileSink):
            self.first_file, self.part = previous.first_file, previous.part

    def _next_part(self) -> None:
        first = self.first_file
        self.file = first.with_name(f"{first.stem}.part{self.part}{first.suffix}")
        log.info("%s: restarted; writing %s", self.path, self.file)

    # -- the stream -------------------------------------------------------------------

    async def process(self, tick: TimedTick) -> None:
        batch: list[Frame | AudioBuffer] = []
        for name in ("video", "audio"):
            port = self.inputs[name]
            while (msg := port.read_nowait()) is not None:
                batch.append(msg)
        if self._finalized or not batch:
            return
        if self._out is None:
            self._pending.extend(batch)
            if not self._ready():
                return
            batch, self._pending = self._pending, []
            self._open(batch)
            self.writer.start(self._write)
        for msg in batch:
            self._check(msg)  # a bad message fails the actor here, with the message that was wrong
            self.writer.put(msg)

    def _ready(self) -> bool:
        """Whether every connected input has shown what it carries (or kept us waiting long enough)."""
        waiting = []
        for name, kind in (("video", Frame), ("audio", AudioBuffer)):
            port = self.inputs[name]
            wanted = port.connected if self.expect is None else name in self.expect
            if wanted and not port.ended and not any(isinstance(m, kind) for m in self._pending):
                waiting.append(name)
        if not waiting:
            return True
        stamps = [m.timestamp for m in self._pending]
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        # Live, media time and wall time run together; offline (lossless), one source may race
        # seconds of media ahead of another in milliseconds: there only wall time says "silent".
        waited = time.monotonic() - self._waiting_since if self.lossless else max(stamps) - min(stamps)
        if waited >= self.start_wait or len(self._pending) > 2000:
            log.warning(
                "%s: no %s within %.1f s; writing %s without it", self.path, waiting[0], self.start_wait, self.file
            )
            return True
        return False

    def _open(self, first: list[Frame | AudioBuffer]) -> None:
        video = next((m for m in first if isinstance(m, Frame)), None)
        audio = next((m for m in first if isinstance(m, AudioBuffer)), None)
        self._t0 = min(m.timestamp for m in first)
        try:
            out = av.open(str(self.file), "w", format=self.format, options=self.container_options or None)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.path}: cannot create {str(self.file)!r}: {exc}") from exc
        self._out = out
        self.opened = True
        try:
            if video is not None:
                self._add_video(out, video)
            if audio is not None:
                self._add_audio(out, audio)
            out.start_encoding()
        except Exception as exc:
            raise MediaError(f"{self.path}: cannot start writing {str(self.file)!r}: {exc}") from exc

    def _video_options(self) -> dict[str, str]:
        codec, crf, preset = self.codec, self.crf, self.preset
        opts: dict[str, str] = {}
        if codec == "libx264":
            opts = {"preset": preset or "veryfast", "crf": str(23 if crf is None else crf)}
        elif codec == "libx265":
            opts = {
                "preset": preset or "veryfast",
                "crf": str(28 if crf is None else crf),
                "x265-params": "log-level=error",
            }
        elif codec == "libvpx-vp9":
            deadline = preset if preset in ("realtime", "good", "best") else "realtime"
            opts = {
                "deadline": deadline,
                "cpu-used": "8",
                "crf": str(32 if crf is None else crf),
                "b": "0",
                "row-mt": "1",
            }
        opts.update(self.options)
        return opts

    def _add_video(self, out: OutputContainer, first: Frame) -> None:
        data = np.asarray(first.data)
        self._check_frame(first, data)
        height, width = data.shape[:2]
        self._size = (height, width)
        subsampled = self.codec != "ffv1" and (self.pix_fmt or "yuv420p").startswith(("yuv420", "nv12"))
        self._pad = (height % 2, width % 2) if subsampled else (0, 0)
        self._rate = _finite_rate(self.fps, first.clock_rate)
        rate = Fraction(self._rate).limit_denominator(1001)
        stream = cast(VideoStream, out.add_stream(self.codec, rate=rate, options=self._video_options()))
        stream.width = width + self._pad[1]
        stream.height = height + self._pad[0]
        stream.pix_fmt = self.pix_fmt or ("bgr0" if self.codec == "ffv1" else "yuv420p")
        stream.codec_context.time_base = _VIDEO_TIME_BASE
        # Frame threads, not PyAV's default of slice threads: libx264 encodes several frames
        # at once that way, ~1.4x the throughput on 2 cores (what the ffmpeg CLI does), at
        # the cost of a few frames of encoder latency, which a file never notices.
        stream.codec_context.thread_type = "AUTO"
        stream.time_base = _VIDEO_TIME_BASE
        if self.codec == "libx265" and self.format in ("mp4", "mov"):
            stream.codec_tag = "hvc1"  # what Apple players need to recognise HEVC
        self._vstream = stream

    def _add_audio(self, out: OutputContainer, first: AudioBuffer) -> None:
        data = self._audio_data(first)
        self._audio_rate = first.sample_rate
        self._audio_channels = data.shape[1]
        rate = first.sample_rate
        if self.audio_codec == "libopus" and rate not in _OPUS_RATES:
            rate = 48000  # PyAV's encoder-side resampler converts
        stream = cast(AudioStream, out.add_stream(self.audio_codec, rate=rate, layout=_layout(self._audio_channels)))
        self._astream = stream
        self._audio_pts = max(round((first.timestamp - self._t0) * first.sample_rate), 0)

    def _write(self, msg: Frame | AudioBuffer) -> None:
        if isinstance(msg, Frame):
            if self._vstream is None:
                self._warn_once("video", "%s: video arrived after %s was started without video; dropping it")
                return
            self._write_video(msg)
        else:
            if self._astream is None:
                self._warn_once("audio", "%s: audio arrived after %s was started without audio; dropping it")
                return
            self._write_audio(msg)

    def _warn_once(self, key: str, fmt: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(fmt, self.path, self.file)

    def _check_frame(self, frame: Frame, data: np.ndarray) -> None:
        ok = data.dtype == np.uint8 and (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (1, 3, 4)))
        if not ok:
            raise ValueError(
                f"{self.path}: video frame {frame.frame_number} has shape {data.shape} and dtype {data.dtype}; "
                f"{self.file.name} takes (height, width, 3|4) uint8 RGB(A) frames"
            )
        if self._size is not None and data.shape[:2] != self._size:
            h, w = self._size
            raise ValueError(
                f"{self.path}: video frame {frame.frame_number} is {data.shape[1]}x{data.shape[0]} but "
                f"{self.file.name} was started at {w}x{h}; a file's frame size cannot change mid-stream"
            )

    def _write_video(self, frame: Frame) -> None:
        stream = self._vstream
        assert stream is not None and self._out is not None
        data = np.asarray(frame.data)
        self._check_frame(frame, data)
        if data.ndim == 2 or data.shape[2] == 1:
            data = np.repeat(data.reshape(data.shape[0], data.shape[1], 1), 3, axis=2)
        if self._pad != (0, 0):
            data = cast(NDArray[np.uint8], np.pad(data, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge"))
        if stream.pix_fmt == "yuv420p":
            # OpenCV's SIMD RGB->I420 (BT.601, limited range, as swscale's default) takes about half
            # the time of PyAV's own conversion, which dominates a 1080p x264 encode otherwise.
            code = cv2.COLOR_RGBA2YUV_I420 if data.shape[2] == 4 else cv2.COLOR_RGB2YUV_I420
            yuv: NDArray[np.uint8] = cv2.cvtColor(np.ascontiguousarray(data), code)  # type: ignore[assignment]
            vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        else:
            rgb_format = "rgba" if data.shape[2] == 4 else "rgb24"
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=rgb_format)
        pts = round((frame.timestamp - self._t0) / _VIDEO_TIME_BASE)
        if pts <= self._last_pts:  # no usable timestamp: one nominal period after the last frame
            pts = self._last_pts + max(round(1 / (self._rate * _VIDEO_TIME_BASE)), 1)
        self._last_pts = pts
        vf.pts = pts
        vf.time_base = _VIDEO_TIME_BASE
        if self._keyframe_due(pts) or self._first_cut_due(pts):
            vf.pict_type = PictureType.I
        self._out.mux(stream.encode(vf))
        self.frames_written += 1

    def _keyframe_due(self, pts: int) -> bool:
        """Whether to force a keyframe here (HLS segments must start on one)."""
        return False

    def _first_cut_due(self, pts: int) -> bool:
        """A fragmented MP4's first fragment, and with it the index, ends at a keyframe
        forced at :data:`FIRST_CUT_S`, not a whole fragment later."""
        cut = self._first_cut_pts
        if cut is None or pts < cut:
            return False
        self._first_cut_pts = None
        return True

    def _check(self, msg: Frame | AudioBuffer) -> None:
        """Validate a message on the actor's thread (cheap), so a bad one fails the actor
        at once, named, rather than later on the writer thread."""
        if isinstance(msg, Frame):
            if self._vstream is not None:
                self._check_frame(msg, np.asarray(msg.data))
        elif self._astream is not None:
            self._checked_audio(msg)

    def _audio_data(self, buf: AudioBuffer) -> np.ndarray:
        data = np.asarray(buf.data)
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.floating):
            raise ValueError(
                f"{self.path}: audio block {buf.frame_number} has shape {data.shape} and dtype {data.dtype}; "
                f"{self.file.name} takes (samples, channels) float32 audio"
            )
        return data

    def _checked_audio(self, buf: AudioBuffer) -> np.ndarray:
        data = self._audio_data(buf)
        if buf.sample_rate != self._audio_rate or data.shape[1] != self._audio_channels:
            raise ValueError(
                f"{self.path}: audio block {buf.frame_number} is {buf.sample_rate} Hz x {data.shape[1]} channels but "
                f"{self.file.name} was started at {self._audio_rate} Hz x {self._audio_channels} channels"
            )
        return data

    def _write_audio(self, buf: AudioBuffer) -> None:
        assert self._audio_pts is not None
        data = self._checked_audio(buf)
        if not data.shape[0]:
            return
        due = round((buf.timestamp - self._t0) * buf.sample_rate)
        gap = due - self._audio_pts
        if gap > max(data.shape[0] // 2, buf.sample_rate // 100):  # more than jitter: a hole
            self._encode_audio(np.zeros((gap, data.shape[1]), np.float32), buf.sample_rate)
            self.audio_gap_samples += gap
        self._encode_audio(data, buf.sample_rate)

    def _encode_audio(self, data: np.ndarray, rate: int) -> None:
        assert self._astream is not None and self._out is not None and self._audio_pts is not None
        planar = np.ascontiguousarray(np.clip(data, -1.0, 1.0).T, dtype=np.float32)
        af = AudioFrame.from_ndarray(planar, format="fltp", layout=_layout(self._audio_channels))
        af.sample_rate = rate
        af.pts = self._audio_pts
        af.time_base = Fraction(1, rate)
        self._audio_pts += data.shape[0]
        self._out.mux(self._astream.encode(af))
        self.audio_samples_written += data.shape[0]

    # -- the end ------------------------------------------------------------------------

    async def on_stop(self) -> None:
        """Finalize the file, exactly once, whatever ended the actor."""
        if self._finalized:
            return
        self._finalized = True
        # What was delivered but not yet taken (a stop lands between two ticks) is written
        # too: a graceful stop loses nothing that reached the sink. (Not after a failure: the
        # next message may be as bad as the one that failed it.)
        leftover = []
        if self.failure is None:
            leftover = [m for name in ("video", "audio") for m in iter(self.inputs[name].read_nowait, None)]
        if self._out is None:
            self._pending.extend(leftover)
        else:
            for msg in leftover:
                try:
                    self._check(msg)
                    self.writer.put(msg)
                except Exception as exc:
                    log.error("%s: while writing %s at stop: %s", self.path, self.file, exc)
                    break
        pending, self._pending = self._pending, []
        try:
            self.writer.close()  # what was handed over is written before the trailer
        except Exception as exc:
            log.error("%s: while writing %s: %s", self.path, self.file, exc)
        try:
            if self._out is None and pending:
                self._open(pending)
                for msg in pending:
                    self._write(msg)
        except Exception as exc:
            log.error("%s: while finishing %s: %s", self.path, self.file, exc)
        finally:
            self._finalize()

    def _finalize(self) -> None:
        out, self._out = self._out, None
        if out is None:
            log.warning("%s: received no frames; %s was not written", self.path, self.file)
            return
        errors: list[str] = []
        for stream in (self._vstream, self._astream):
            if stream is None:
                continue
            try:
                out.mux(stream.encode(None))  # flush the encoder's delayed frames
            except Exception as exc:
                errors.append(f"flushing {stream.type}: {exc}")
        try:
            out.close()  # writes the trailer
        except Exception as exc:
            errors.append(f"closing: {exc}")
        if errors:
            raise MediaError(f"{self.path}: finalizing {str(self.file)!r} failed: {'; '.join(errors)}")
        log.debug("%s: finalized %s (%d frames)", self.path, self.file, self.frames_written)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


class HLSSink(FileSink):
    """HTTP Live Streaming: an ``.m3u8`` playlist plus MPEG-TS segments of H.264/AAC.

    Segments are ``segment_seconds`` long: a keyframe is forced at every boundary (by
    timestamp, so variable-rate sources segment correctly too). The playlist keeps the
    last ``playlist_size`` segments (0 keeps them all, a VOD playlist), and
    ``delete_segments=True`` removes the files that fall off it. Segment files sit next
    to the playlist as ``<stem>_00000.ts``, ... On stop the playlist gets
    ``#EXT-X-ENDLIST``. For a service that runs for days, use a live window
    (``playlist_size=30``, say): FFmpeg's HLS muxer keeps a record of about 10 KB for every
    segment still in the playlist, so a keep-everything playlist grows by ~18 MB an hour at
    2 s segments.

    A stream that ends just past a boundary would leave a last segment of a frame or two
    (a player stalls on it, then shows one frame); on stop, a last segment shorter than
    half ``segment_seconds`` is appended to the one before it (MPEG-TS segments of one
    stream concatenate) and the playlist is rewritten to match.
    """

    container_format: ClassVar[str | None] = "hls"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_seconds: float = 2.0,
        playlist_size: int = 0,
        delete_segments: bool = False,
        segment_pattern: str | None = None,
        **kw: Any,
    ) -> None:
        if segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be > 0, got {segment_seconds!r}")
        if playlist_size < 0:
            raise ValueError(f"playlist_size must be >= 0, got {playlist_size!r}")
        p = Path(path)
        pattern = segment_pattern or str(p.with_name(f"{p.stem}_%05d.ts"))
        flags = "independent_segments" + ("+delete_segments" if delete_segments else "")
        copts = {
            "hls_time": f"{segment_seconds:g}",
            "hls_list_size": str(playlist_size),
            "hls_segment_filename": pattern,
            "hls_flags": flags,
        }
        if playlist_size == 0:
            copts["hls_playlist_type"] = "event"  # segments are only ever appended
        copts.update(kw.pop("container_options", None) or {})
        kw.setdefault("codec", "h264")
        kw.setdefault("audio_codec", "aac")
        super().__init__(path, container_options=copts, **kw)
        self.segment_seconds = segment_seconds
        self.playlist_size = playlist_size
        self._segment_ticks = round(segment_seconds / _VIDEO_TIME_BASE)

    def _next_part(self) -> None:
        """A restarted HLS sink appends to the same playlist (after a discontinuity marker),
        numbering its segments on from the last one."""
        self.container_options["hls_flags"] = self.container_options.get("hls_flags", "") + "+append_list"
        log.info("%s: restarted; appending to %s", self.path, self.file)

    def _keyframe_due(self, pts: int) -> bool:
        if pts >= self._next_key_pts:
            self._next_key_pts = (pts // self._segment_ticks + 1) * self._segment_ticks
            return True
        return False

    def _finalize(self) -> None:
        try:
            super()._finalize()
        finally:
            try:
                self._merge_short_tail()
            except OSError as exc:
                log.error("%s: could not merge the last segment of %s: %s", self.path, self.file, exc)

    def _merge_short_tail(self) -> None:
        """Append a last segment shorter than half a segment to the one before it."""
        try:
            lines = self.file.read_text().splitlines()
        except FileNotFoundError:
            return
        uris = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
        if len(uris) < 2:
            return
        last, before = uris[-1], uris[-2]
        between = lines[before + 1 : last]
        if [line for line in between if not line.startswith("#EXTINF:")]:
            return  # a discontinuity (a restart) or other tag between them: they do not join
        inf_last, inf_before = between[-1], lines[before - 1]
        if not (inf_last.startswith("#EXTINF:") and inf_before.startswith("#EXTINF:")):
            return
        tail = float(inf_last[8:].split(",")[0])
        if tail >= self.segment_seconds / 2:
            return
        merged = float(inf_before[8:].split(",")[0]) + tail
        tail_file, into = self.file.parent / lines[last], self.file.parent / lines[before]
        with into.open("ab") as out:
            out.write(tail_file.read_bytes())
        lines[before - 1] = f"#EXTINF:{merged:.6f},"
        del lines[before + 1 : last + 1]
        target = max(round(float(line[8:].split(",")[0])) for line in lines if line.startswith("#EXTINF:"))
        lines = [
            f"#EXT-X-TARGETDURATION:{max(target, int(line.split(':')[1]))}"
            if line.startswith("#EXT-X-TARGETDURATION:")
            else line
            for line in lines
        ]
        partial = self.file.with_name(self.file.name + ".tmp")
        partial.write_text("\n".join(lines) + "\n")
        partial.replace(self.file)  # players never see a half-written playlist
        tail_file.unlink()
        log.debug("%s: merged the %.3f s last segment into %s", self.path, tail, into.name)

    def segments(self) -> list[Path]:
        """The segment files the playlist lists right now, in order."""
        try:
            lines = self.file.read_text().splitlines()
        except OSError:
            return []
        return [self.file.parent / line for line in lines if line and not line.startswith("#")]
