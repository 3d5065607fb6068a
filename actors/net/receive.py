"""RTPReceiveActor: ST 2110-20 video and ST 2110-30 / AES67 audio from RTP/UDP, hardened against a hostile network."""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, AudioBuffer, Dispatcher, StreamOutput, TimedTick, VideoFrame

from ..buffer import own_thread
from . import batch
from .aes67 import AudioAssembler, AudioFormat, Encoding
from .rtp import RemoteClock, is_multicast, open_receive_socket
from .sdp import MediaDescription, parse_rate, read_sdp
from .st2110 import Colorimetry, FrameAssembler, Sampling, VideoFormat, to_rgb

__all__ = ["RTPReceiveActor", "video_format_from_sdp"]

PayloadKind = Literal["video", "audio"]


def _colorimetry(value: str | None) -> Colorimetry:
    """ST 2110-20 §7.5 names (``BT709``), GStreamer's (``BT709-2``, ``BT601-5``); none means BT.601,
    as RFC 4175 §6.1 defaults and as ffmpeg decodes an SDP without it."""
    if value and value.upper().startswith("BT709"):
        return "BT709"
    return "BT601"


def video_format_from_sdp(m: MediaDescription) -> VideoFormat:
    """The :class:`VideoFormat` an SDP ``m=video`` section with ``raw/90000`` describes."""
    if m.encoding.lower() != "raw":
        raise ValueError(f"the SDP video is {m.encoding!r}, not raw (RFC 4175 / ST 2110-20) video")
    f = m.fmtp
    try:
        width, height = int(f["width"]), int(f["height"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the SDP fmtp line lacks a usable width/height: {f}") from exc
    sampling = f.get("sampling", "YCbCr-4:2:2")
    if sampling not in ("YCbCr-4:2:2", "RGB"):
        raise ValueError(f"unsupported sampling {sampling!r} (YCbCr-4:2:2 or RGB)")
    fps = parse_rate(f["exactframerate"]) if "exactframerate" in f else 30.0
    return VideoFormat(
        width,
        height,
        cast(Sampling, sampling),
        int(f.get("depth", "8")),
        fps,
        _colorimetry(f.get("colorimetry")),
    )


class RTPReceiveActor(Actor):
    """Receives ST 2110-20 video or ST 2110-30/AES67 audio on ``port`` and emits it on ``'stream'``.

    The stream is described by ``sdp=`` (SDP text, or the path of an SDP file such as ffmpeg's
    ``-sdp_file``; port, payload number, format and multicast group come from it) or by keywords:
    ``width``, ``height``, ``sampling``, ``depth``, ``fps``, ``colorimetry`` for video;
    ``encoding``, ``channels``, ``sample_rate`` for audio. Video leaves as RGB uint8
    :class:`VideoFrame` (H, W, 3); audio as float32 :class:`AudioBuffer` blocks of ``block`` samples.

    Sockets bind ``bind`` (``127.0.0.1`` unless told otherwise); ``multicast=`` (or a multicast
    ``c=`` address in the SDP) joins that group on ``interface``. A thread receives and reassembles
    packets (Python per packet, numpy per frame); conversion runs on the actor's own thread.

    Timing: messages carry the sender's media time (RTP timestamps mapped onto ``time.monotonic()``,
    see :class:`~.rtp.RemoteClock`), a frame number counted from the RTP timestamps (gaps show lost
    frames), and ``clock_source_id`` ``'rtp:<ssrc>'`` so downstream actors sync to the remote source.

    Robustness: every loss, reordering, duplicate, malformed or foreign packet is counted in
    ``stats()['network']``; an incomplete frame is dropped (``incomplete='drop'``) or emitted with the
    previous picture under its missing lines (``'conceal'``); audio gaps become silence. A sender that
    changes resolution is followed (``format_changes``). Memory is bounded: one assembly buffer and
    at most ``queue`` finished frames waiting for conversion (older ones are dropped and counted).
    """

    default_fps = 500.0  # how often finished frames are collected from the receive thread

    def __init__(
        self,
        port: int | None = None,
        payload_type: PayloadKind = "video",
        *,
        sdp: str | os.PathLike[str] | None = None,
        bind: str = "127.0.0.1",
        multicast: str | None = None,
        interface: str = "0.0.0.0",
        width: int | None = None,
        height: int | None = None,
        sampling: Sampling = "YCbCr-4:2:2",
        depth: int = 8,
        fps: float = 30.0,
        colorimetry: Colorimetry = "BT709",
        encoding: Encoding = "L24",
        channels: int = 2,
        sample_rate: int = 48000,
        block: int = 480,
        rtp_payload_type: int | None = None,
        incomplete: Literal["drop", "conceal"] = "drop",
        queue: int = 4,
        buffer_size: int = 8 << 20,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if payload_type not in ("video", "audio"):
            raise ValueError(f"{self.path}: payload_type must be 'video' or 'audio', got {payload_type!r}")
        if incomplete not in ("drop", "conceal"):
            raise ValueError(f"{self.path}: incomplete must be 'drop' or 'conceal', got {incomplete!r}")
        self.kind = payload_type
        self.video_format: VideoFormat | None = None
        self.audio_format: AudioFormat | None = None
        try:
            if sdp is not None:
                m = read_sdp(sdp).first(payload_type)
                port = port if port is not None else m.port
                rtp_payload_type = rtp_payload_type if rtp_payload_type is not None else m.payload_type
                if m.address and is_multicast(m.address) and multicast is None:
                    multicast = m.address
                if payload_type == "video":
                    self.video_format = video_format_from_sdp(m)
                else:
                    if m.encoding.upper() not in ("L16", "L24"):
                        raise ValueError(f"the SDP audio is {m.encoding!r}, not L16/L24 (ST 2110-30 / AES67)")
                    ptime = m.attribute("ptime")
                    self.audio_format = AudioFormat(
                        cast(Encoding, m.encoding.upper()),
                        m.clock_rate,
                        m.channels,
                        float(ptime) if ptime else 1.0,
                    )
            elif payload_type == "video":
                if width is None or height is None:
                    raise ValueError("pass sdp= (text or file) or width= and height= to describe the video")
                self.video_format = VideoFormat(width, height, sampling, depth, fps, colorimetry)
            else:
                self.audio_format = AudioFormat(encoding, sample_rate, channels)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{self.path}: {exc}") from None
        if port is None or not 0 < port < 65536:
            raise ValueError(f"{self.path}: a UDP port (1..65535) is needed, from port= or the SDP's m= line")
        self.port, self.bind, self.multicast = int(port), bind, multicast
        self.incomplete = incomplete
        self._ready: deque[Any] = deque()
        self._queue_limit = queue if payload_type == "video" else max(queue, 64)
        self.frames_dropped = 0
        self.frames_emitted = 0
        self.assembler: FrameAssembler | AudioAssembler
        if self.video_format is not None:
            self.assembler = FrameAssembler(self.video_format, rtp_payload_type, self._on_frame, policy=incomplete)
            self._clock = RemoteClock(90000)
            self.outputs["stream"] = StreamOutput("stream", VideoFrame)
        else:
            assert self.audio_format is not None
            self.assembler = AudioAssembler(self.audio_format, rtp_payload_type, self._on_block, block=block)
            self._clock = RemoteClock(self.audio_format.sample_rate)
            self.outputs["stream"] = StreamOutput("stream", AudioBuffer)
        try:
            self._sock = open_receive_socket(self.port, bind, multicast, interface, buffer_size)
        except OSError as exc:
            where = f"group {multicast}" if multicast else bind
            raise OSError(exc.errno, f"{self.path}: cannot receive on {where}:{self.port}: {exc.strerror}") from None
        self._running = False
        self._thread: threading.Thread | None = None
        self._source_changes = 0

    @property
    def clock_id(self) -> str:
        """The clock id this stream's messages carry: ``'rtp:<SSRC in hex>'``."""
        ssrc = self.assembler.ssrc
        return f"rtp:{ssrc:08x}" if ssrc is not None else "rtp:unknown"

    def network_stats(self) -> dict[str, Any]:
        """The receiver's counters (also under ``stats()['network']``)."""
        a = self.assembler
        found: dict[str, Any] = {
            "packets_received": a.packets_received,
            "packets_lost": a.packets_lost,
            "packets_reordered": a.packets_reordered,
            "packets_duplicate": a.seq.duplicates,
            "packets_malformed": a.packets_malformed,
            "packets_foreign": a.packets_foreign,
            "sequence_resyncs": a.seq.resyncs,
            "ssrc_changes": a.source.changes,
            "frames_dropped": self.frames_dropped,
            "timing": self._clock.mode,
            "clock_id": self.clock_id,
        }
        if isinstance(a, FrameAssembler):
            found.update(
                frames_received=a.frames_complete,
                frames_incomplete=a.frames_incomplete,
                format_changes=a.format_changes,
                width=a.fmt.width,
                height=a.fmt.height,
            )
        else:
            found.update(blocks_received=a.blocks, samples_concealed=a.samples_concealed, frames_incomplete=0)
        return found

    # ------------------------------------------------------------------ receive thread

    def _on_frame(self, packed: bytes, ts: int, complete: bool, fmt: VideoFormat) -> None:
        self._enqueue((packed, ts, fmt))

    def _on_block(self, samples: NDArray[np.float32], ts: int) -> None:
        self._enqueue((samples, ts, None))

    def _enqueue(self, item: Any) -> None:
        ready = self._ready
        while len(ready) >= self._queue_limit:
            try:
                ready.popleft()
            except IndexError:
                break
            self.frames_dropped += 1
        ready.append(item)

    def _receive(self) -> None:
        if batch.AVAILABLE:
            self._receive_batches()
        else:
            self._receive_each()

    def _receive_batches(self) -> None:
        """Many datagrams per ``recvmmsg`` call; video batches take the assembler's bulk path."""
        receiver = batch.DatagramReceiver(self._sock)
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        assembler = self.assembler
        slot = receiver.slot
        flat = receiver.buffer.reshape(-1).data.cast("B")
        while self._running:
            if not poller.poll(100):
                continue
            while self._running:
                n, lengths, flags = receiver.receive()
                if n == 0:
                    break
                truncated = (flags & batch.MSG_TRUNC) != 0
                if isinstance(assembler, FrameAssembler):
                    assembler.push_batch(receiver.buffer[:n], lengths, truncated)
                else:
                    for i in range(n):
                        if truncated[i]:
                            assembler.packets_received += 1
                            assembler.packets_malformed += 1
                        else:
                            assembler.push(flat[i * slot : i * slot + int(lengths[i])], int(lengths[i]))

    def _receive_each(self) -> None:
        sock = self._sock
        buf = bytearray(65536)
        view = memoryview(buf)
        push = self.assembler.push
        while self._running:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                if not self._running:
                    return
                continue
            push(view, n)

    async def on_start(self) -> None:
        self._running = True
        if not batch.AVAILABLE:
            self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._receive, name=f"rtp-receive{self.path}", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sock.close()

    async def process(self, tick: TimedTick) -> None:
        out = self.outputs["stream"]
        while self._ready:
            payload, ts, fmt = self._ready.popleft()
            if self.assembler.source.changes != self._source_changes:  # a new sender, a new timeline
                self._source_changes = self.assembler.source.changes
                self._clock.reset()
            when = self._clock.to_local(ts)
            if fmt is not None:
                rgb = to_rgb(np.frombuffer(payload, np.uint8), fmt)
                number = round(self._clock.elapsed * fmt.fps / 90000)
                msg: VideoFrame | AudioBuffer = VideoFrame(rgb, when, number, self.clock_id, fmt.fps)
            else:
                afmt = self.audio_format
                assert afmt is not None
                number = self._clock.elapsed // payload.shape[0]
                msg = AudioBuffer(
                    payload, afmt.sample_rate, when, self.clock_id, number, afmt.sample_rate / payload.shape[0]
                )
            self.frames_emitted += 1
            await out.send(msg)
