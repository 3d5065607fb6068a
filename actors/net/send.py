"""RTPSendActor: VideoFrames as SMPTE ST 2110-20, AudioBuffers as ST 2110-30 / AES67, over RTP/UDP."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, AudioBuffer, Dispatcher, StreamInput, TimedTick, VideoFrame

from ..buffer import own_thread
from . import batch
from .aes67 import AudioFormat, Encoding, pack_samples
from .rtp import build_header, media_time_offset, open_send_socket, pid_ssrc, stamp_sequence
from .sdp import format_rate, write_sdp
from .st2110 import Colorimetry, Sampling, VideoFormat, VideoPacketizer, from_rgb

__all__ = ["PacingStats", "RTPSendActor"]

PayloadKind = Literal["video", "audio"]


class PacingStats:
    """What the pacer measured: packets, the largest back-to-back burst, and per-frame spread.

    ``max_burst`` is the most packets sent in one wake-up of the pacing thread (they leave
    back to back); ST 2110-21's CMAX bounds the same quantity for a compliant sender.
    ``send_times`` keeps the send time of every packet of the last ``keep`` frames when
    ``record=True`` (for the benchmark's ST 2110-21 model)."""

    def __init__(self, record: bool = False, keep: int = 600) -> None:
        self.packets = 0
        self.frames = 0
        self.max_burst = 0
        self.late_frames = 0  # frames whose sending overran their period
        self.record = record
        self.send_times: deque[NDArray[np.float64]] = deque(maxlen=keep)


class RTPSendActor(Actor):
    """Sends its ``'stream'`` input as RTP to ``host:port``: ST 2110-20 video or ST 2110-30/AES67 audio.

    ``payload_type='video'``: RGB/RGBA :class:`VideoFrame` in, converted to ``sampling``
    (``'YCbCr-4:2:2'`` or ``'RGB'``) at ``depth`` 8 or 10 bits with ``colorimetry`` (``'BT709'``
    or ``'BT601'``), RFC 4175 packets under 1460 octets, General Packing Mode. Each frame's packets
    are paced evenly over ``pacing`` of its frame period by a sender thread (ST 2110-21 wide sender,
    ``TP=2110TPW``; measured bursts are in ``stats()['network']``), while the next frame is converted.
    The size comes from the first frame (or ``width``/``height``); a new size changes the SDP
    (``format_changes``).

    ``payload_type='audio'``: :class:`AudioBuffer` in (float32, 48 kHz), sent as ``encoding``
    (``'L24'`` or ``'L16'``) in ``ptime_ms`` packets (1 ms: 48 samples per channel).

    RTP timestamps count the media clock -- this host's real-time clock (``time.time()``), onto
    which each message's ``timestamp`` (``time.monotonic()``) is mapped -- at 90 kHz for video and
    the sample rate for audio (ST 2110-10 §8.2), so a receiver recovers the sender's timing.
    :meth:`sdp` returns the session description (``sdp_file=`` also writes it, and rewrites it on
    a format change). ``rtp_payload_type`` is the dynamic RTP payload number (96 video, 97 audio).
    Multicast ``host``\\ s are sent with ``ttl`` on ``interface``.
    """

    default_fps = None  # driven by its input only

    def __init__(
        self,
        host: str,
        port: int,
        payload_type: PayloadKind = "video",
        *,
        sampling: Sampling = "YCbCr-4:2:2",
        depth: int = 8,
        colorimetry: Colorimetry = "BT709",
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        encoding: Encoding = "L24",
        channels: int | None = None,
        ptime_ms: float = 1.0,
        rtp_payload_type: int | None = None,
        pacing: float = 0.9,
        sdp_file: str | os.PathLike[str] | None = None,
        ttl: int = 16,
        interface: str | None = None,
        record_pacing: bool = False,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if payload_type not in ("video", "audio"):
            raise ValueError(f"{self.path}: payload_type must be 'video' or 'audio', got {payload_type!r}")
        if not 0 < port < 65536:
            raise ValueError(f"{self.path}: port must be 1..65535, got {port!r}")
        if not 0.05 <= pacing <= 1.0:
            raise ValueError(f"{self.path}: pacing is the share of a frame period to spread packets over (0.05..1)")
        self.host, self.port, self.kind = host, int(port), payload_type
        self.dest = (host, self.port)
        self.sampling, self.depth, self.colorimetry = sampling, depth, colorimetry
        self.fps = fps
        self.pacing = pacing
        self.sdp_file = Path(sdp_file) if sdp_file is not None else None
        self.ssrc = pid_ssrc()
        self.rtp_payload_type = (
            rtp_payload_type if rtp_payload_type is not None else (96 if payload_type == "video" else 97)
        )
        self.format: VideoFormat | None = None
        self.audio_format: AudioFormat | None = None
        self.format_changes = 0
        self.pacer = PacingStats(record=record_pacing)
        self.frames_dropped = 0  # converted frames the pacer had no time for
        self._encoding, self._ptime, self._channels = encoding, ptime_ms, channels
        self._offset = media_time_offset()
        self._packetizer: VideoPacketizer | None = None
        self._sock: socket.socket = open_send_socket(host, interface=interface, ttl=ttl)
        self._batch = batch.DatagramSender(self._sock, host, self.port) if batch.AVAILABLE else None
        self._jobs: deque[tuple[NDArray[np.uint8], list[int], float]] = deque()
        self._wake = threading.Condition()
        self._running = True
        self._pacer_thread: threading.Thread | None = None
        # audio
        self._sequence = int.from_bytes(os.urandom(2), "big")  # RFC 3550 §5.1: a random start
        self._audio_ts: int | None = None
        self._audio_pending = np.zeros((0, channels or 2), np.float32)
        if payload_type == "video":
            self.inputs["stream"] = StreamInput("stream", VideoFrame)
            if width is not None and height is not None:
                self._set_video_format(width, height, fps or 30.0)
        else:
            self.inputs["stream"] = StreamInput("stream", AudioBuffer, maxsize=16)
            if channels is not None:
                self.audio_format = AudioFormat(encoding, 48000, channels, ptime_ms)
                self._write_sdp()

    # ------------------------------------------------------------------ SDP

    def sdp(self) -> str:
        """The SDP text describing this stream (RFC 8866 with ST 2110 attributes).

        Known once the format is: from the first frame, or from ``width``/``height`` (video) or
        ``channels`` (audio) given to the constructor."""
        if self.kind == "video":
            fmt = self.format
            if fmt is None:
                raise RuntimeError(
                    f"{self.path}: the video format is not known before the first frame; "
                    "pass width= and height= to RTPSendActor, or wait for a frame"
                )
            fmtp = (
                f"a=fmtp:{self.rtp_payload_type} sampling={fmt.sampling}; width={fmt.width}; "
                f"height={fmt.height}; exactframerate={format_rate(fmt.fps)}; depth={fmt.depth}; TCS=SDR; "
                f"colorimetry={fmt.colorimetry}; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPW"
            )
            return write_sdp(
                self.host,
                self.port,
                [fmtp],
                "video",
                self.rtp_payload_type,
                "raw/90000",
                session="streamlib ST 2110-20",
            )
        afmt = self.audio_format
        if afmt is None:
            raise RuntimeError(
                f"{self.path}: the channel count is not known before the first audio buffer; "
                "pass channels= to RTPSendActor, or wait for a buffer"
            )
        ptime = f"{afmt.ptime_ms:g}"
        lines = [f"a=fmtp:{self.rtp_payload_type} channel-order=SMPTE2110.(U{afmt.channels:02d})", f"a=ptime:{ptime}"]
        return write_sdp(
            self.host,
            self.port,
            lines,
            "audio",
            self.rtp_payload_type,
            f"{afmt.encoding}/{afmt.sample_rate}/{afmt.channels}",
            session="streamlib ST 2110-30",
        )

    def _write_sdp(self) -> None:
        if self.sdp_file is not None:
            tmp = self.sdp_file.with_name(self.sdp_file.name + ".tmp")
            tmp.write_text(self.sdp())
            tmp.replace(self.sdp_file)

    def network_stats(self) -> dict[str, Any]:
        """The sender's counters (also under ``stats()['network']``)."""
        return {
            "packets_sent": self.pacer.packets,
            "frames_sent": self.pacer.frames,
            "max_burst": self.pacer.max_burst,
            "late_frames": self.pacer.late_frames,
            "frames_dropped": self.frames_dropped,
            "format_changes": self.format_changes,
            "ssrc": f"{self.ssrc:08x}",
        }

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        self._running = True
        self._pacer_thread = threading.Thread(target=self._pace, name=f"rtp-pacer{self.path}", daemon=True)
        self._pacer_thread.start()

    async def on_stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._pacer_thread is not None:  # it sends what is queued (a frame or two), then ends
            self._pacer_thread.join(timeout=5.0)
        self._sock.close()

    async def process(self, tick: TimedTick) -> None:
        if self._pacer_failure is not None:
            raise RuntimeError(
                f"{self.path}: the pacing thread failed: {self._pacer_failure!r}"
            ) from self._pacer_failure
        msg = await self.inputs["stream"].try_read()
        if msg is None:
            return
        if self.kind == "video":
            assert isinstance(msg, VideoFrame)
            self._send_video(msg)
        else:
            assert isinstance(msg, AudioBuffer)
            self._send_audio(msg)

    # ------------------------------------------------------------------ video

    def _set_video_format(self, width: int, height: int, fps: float) -> None:
        try:
            fmt = VideoFormat(width, height, self.sampling, self.depth, fps, self.colorimetry)
        except ValueError as exc:
            raise ValueError(f"{self.path}: input 'stream': {exc}") from None
        if self.format is not None:
            self.format_changes += 1
        self.format = fmt
        self._packetizer = VideoPacketizer(fmt, self.rtp_payload_type, self.ssrc)
        self._write_sdp()

    def _send_video(self, frame: VideoFrame) -> None:
        if frame.is_gpu():
            raise TypeError(f"{self.path}: input 'stream' got a GPU frame; put a Download() before RTPSendActor")
        data = frame.data
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] not in (3, 4):
            raise TypeError(
                f"{self.path}: input 'stream' needs RGB/RGBA uint8 (H, W, 3|4) frames, got {data.dtype} {data.shape}"
            )
        h, w = data.shape[:2]
        fps = self.fps or frame.clock_rate or 30.0
        if self.format is None or (self.format.width, self.format.height) != (w, h):
            self._set_video_format(w, h, fps)
        assert self._packetizer is not None and self.format is not None
        packed = from_rgb(data, self.format)
        rtp_ts = round((frame.timestamp + self._offset) * 90000) & 0xFFFFFFFF
        packets, lengths = self._packetizer.packetize(packed, rtp_ts)
        self._queue(packets, lengths, 1.0 / self.format.fps)

    def _queue(self, packets: NDArray[np.uint8], lengths: list[int], period: float) -> None:
        with self._wake:
            while len(self._jobs) >= (2 if self.kind == "video" else 16):  # the pacer is behind: newest data wins
                self._jobs.popleft()
                self.frames_dropped += 1
            self._jobs.append((packets, lengths, period))
            self._wake.notify()

    def _pace(self) -> None:
        """The pacing thread; a failure in it fails the actor on its next tick."""
        try:
            self._pace_jobs()
        except BaseException as exc:
            self._pacer_failure = exc

    _pacer_failure: BaseException | None = None

    def _pace_jobs(self) -> None:
        """Spreads each job's packets evenly over ``pacing`` of its period."""
        sock, dest, stats = self._sock, self.dest, self.pacer
        while True:
            with self._wake:
                while self._running and not self._jobs:
                    self._wake.wait()
                if not self._jobs:  # stopped, and everything queued has been sent
                    return
                packets, lengths, period = self._jobs.popleft()
            n = len(lengths)
            self._sequence = stamp_sequence(packets, self._sequence, 12 if self.kind == "video" else None)
            span = period * self.pacing
            # Bursts are capped at 2 ms worth of packets at the paced rate (at least 16); a pacer woken late
            # sends that much and lets its schedule slip, unless the frame would then miss its period:
            # the cap then grows to what still finishes it in time.
            base_cap = max(16, math.ceil(n / span * 0.002))
            if self._batch is not None:
                self._batch.load(packets, lengths)
                views = []
            else:
                flat = packets.reshape(-1).data.cast("B")
                stride = packets.shape[1]
                views = [flat[i * stride : i * stride + length] for i, length in enumerate(lengths)]
            times = np.empty(n) if stats.record else None
            t0 = start = time.perf_counter()
            deadline = start + period * 0.98
            sent = 0
            while sent < n:
                now = time.perf_counter()
                due = min(n, int((now - t0) / span * n) + 1)
                cap = max(base_cap, math.ceil((n - sent) * 0.002 / max(deadline - now, 0.002)))
                if due > sent + cap:
                    due = sent + cap
                    t0 = now - (due - 1) * span / n  # slip: the schedule continues from here
                if due > sent:
                    if self._batch is not None:
                        self._batch.send(sent, due - sent)  # one system call for the burst
                    else:
                        for i in range(sent, due):
                            try:  # noqa: SIM105 - per packet: a with-block costs more than try
                                sock.sendto(views[i], dest)
                            except OSError:  # ENOBUFS/ECONNREFUSED: a lost packet, as on a real network
                                pass
                    if times is not None:
                        times[sent:due] = time.perf_counter()
                    stats.max_burst = max(stats.max_burst, due - sent)
                    stats.packets += due - sent
                    sent = due
                if sent < n:
                    wait = t0 + sent * span / n - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
            t0 = start
            stats.frames += 1
            if time.perf_counter() - t0 > period:
                stats.late_frames += 1
            if times is not None:
                stats.send_times.append(times)

    # ------------------------------------------------------------------ audio

    def _send_audio(self, buf: AudioBuffer) -> None:
        data = np.asarray(buf.data, np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if buf.sample_rate not in (48000, 96000):
            raise ValueError(
                f"{self.path}: input 'stream': ST 2110-30 audio is 48 kHz (or 96 kHz), got "
                f"{buf.sample_rate} Hz; resample first"
            )
        fmt0 = self.audio_format
        if fmt0 is None or (fmt0.channels, fmt0.sample_rate) != (data.shape[1], buf.sample_rate):
            fmt0 = self.audio_format = AudioFormat(self._encoding, buf.sample_rate, data.shape[1], self._ptime)
            self._audio_pending = np.zeros((0, data.shape[1]), np.float32)
            self._write_sdp()
        fmt = fmt0
        rate = fmt.sample_rate
        start = round((buf.timestamp + self._offset) * rate) & 0xFFFFFFFF
        if self._audio_ts is not None:  # RTP timestamp of the first pending sample
            expected = (self._audio_ts + self._audio_pending.shape[0]) & 0xFFFFFFFF
            drift = ((start - expected + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            if abs(drift) > rate // 10:  # a gap or jump of over 100 ms: restart the timeline there
                self._audio_pending = self._audio_pending[:0]
                self._audio_ts = None
        if self._audio_ts is None:
            self._audio_ts = start
        pending = np.concatenate([self._audio_pending, data]) if self._audio_pending.size else data
        spp = fmt.samples_per_packet
        count = pending.shape[0] // spp
        if count == 0:
            self._audio_pending = pending
            return
        payload = pack_samples(pending[: count * spp], fmt.encoding)
        self._audio_pending = pending[count * spp :]
        per = spp * fmt.channels * fmt.sample_bytes
        ts0 = self._audio_ts
        assert ts0 is not None
        packets = np.empty((count, 12 + per), np.uint8)
        for i in range(count):
            packets[i, :12] = np.frombuffer(build_header(self.rtp_payload_type, 0, ts0 + i * spp, self.ssrc), np.uint8)
        packets[:, 12:] = np.frombuffer(payload, np.uint8).reshape(count, per)
        self._audio_ts = (ts0 + count * spp) & 0xFFFFFFFF
        self._queue(packets, [12 + per] * count, count * spp / rate)
