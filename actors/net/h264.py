"""Compressed video over the network through PyAV: H.264 over RTP (RFC 6184), and the shared pieces
the MPEG-TS actors use (a low-latency encoder that muxes to a URL, a demux-and-decode thread).

PyAV (FFmpeg) does the codec and RTP/TS packetization; this module wires it into actors: the
encoder runs on the sender's own thread, the network read and decode on a receiver thread, and
frames keep their clock metadata across the hop (see :class:`~.rtp.RemoteClock`).
"""

from __future__ import annotations

import base64
import math
import os
import tempfile
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.codec.context
import av.error
import numpy as np

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame

from ..buffer import own_thread
from .rtp import RemoteClock, media_time_offset
from .sdp import read_sdp, write_sdp

__all__ = ["LOW_LATENCY_X264", "H264RTPReceiveActor", "H264RTPSendActor"]

# x264 for live use: no lookahead or B-frames, parameter sets repeated before every keyframe
# (a receiver that joins late can start at the next one), a keyframe each second at 30 fps.
LOW_LATENCY_X264 = {"tune": "zerolatency", "preset": "ultrafast", "bf": "0", "x264-params": "repeat-headers=1"}
# Demuxer options for live input: no probing buffer, no reordering wait (the network is loopback or LAN)
LOW_LATENCY_INPUT = {
    "fflags": "nobuffer",
    "flags": "low_delay",
    "reorder_queue_size": "0",
    "protocol_whitelist": "file,udp,rtp",
    "buffer_size": "4194304",
}
_TB90K = Fraction(1, 90000)


class EncodingSender(Actor):
    """Base of the PyAV senders: encodes ``'stream'`` VideoFrames to H.264 and muxes them to ``url``.

    The container opens on the first frame (its size sets the encoder's), or at construction
    when ``width`` and ``height`` are given. Presentation times are the frames' timestamps on
    the media clock, in 1/90000 s."""

    default_fps = None
    container_format = ""

    def __init__(
        self,
        url: str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float = 30.0,
        gop: int = 30,
        bitrate: int | None = None,
        x264: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        self.url = url
        self.fps, self.gop, self.bitrate = fps, gop, bitrate
        self.x264 = {**LOW_LATENCY_X264, "g": str(gop), **(x264 or {})}
        self.container_options = container_options or {}
        self.inputs["stream"] = StreamInput("stream", VideoFrame)
        self.frames_sent = 0
        self.bytes_sent = 0
        self.size: tuple[int, int] | None = None
        self._container: Any = None
        self._stream: Any = None
        self._offset = media_time_offset()
        self._last_pts = -1
        if width is not None and height is not None:
            self._open(width, height)

    def _open(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"{self.path}: input 'stream': H.264 4:2:0 needs even sizes, got {width}x{height}")
        try:
            self._container = av.open(self.url, mode="w", format=self.container_format, options=self.container_options)
        except av.error.FFmpegError as exc:
            raise OSError(f"{self.path}: cannot open {self.url!r} for {self.container_format}: {exc}") from exc
        stream = self._container.add_stream(
            "libx264", rate=Fraction(self.fps).limit_denominator(1001), options=self.x264
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = _TB90K
        # global header: the parameter sets appear as extradata (for the SDP); repeat-headers keeps them in-band too
        stream.codec_context.flags = int(stream.codec_context.flags) | int(av.codec.context.Flags.global_header)
        if self.bitrate:
            stream.codec_context.bit_rate = self.bitrate
        stream.codec_context.open()  # now: the parameter sets (extradata) are known for the SDP
        self._stream = stream
        self.size = (width, height)
        self._opened()

    def _opened(self) -> None:
        """Hook: the container and encoder are open."""

    def network_stats(self) -> dict[str, Any]:
        return {"frames_sent": self.frames_sent, "bytes_sent": self.bytes_sent, "url": self.url}

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["stream"].try_read()
        if frame is None:
            return
        data = frame.data
        if frame.is_gpu() or data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] not in (3, 4):
            raise TypeError(f"{self.path}: input 'stream' needs RGB/RGBA uint8 frames, got {type(data).__name__}")
        h, w = data.shape[:2]
        if self._stream is None:
            self._open(w, h)
        elif self.size != (w, h):
            raise ValueError(
                f"{self.path}: input 'stream': the frame size changed from {self.size} to {(w, h)}; "
                "H.264 senders keep one size (put a Resize() before it)"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(data[..., :3]), format="rgb24")
        pts = round((frame.timestamp + self._offset) * 90000)
        pts = max(pts, self._last_pts + 1)  # strictly increasing, as muxers require
        self._last_pts = pts
        vf.pts, vf.time_base = pts, _TB90K
        for packet in self._stream.encode(vf.reformat(format="yuv420p")):
            self.bytes_sent += packet.size
            self._container.mux(packet)
        self.frames_sent += 1

    async def on_stop(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                for packet in self._stream.encode(None):
                    container.mux(packet)
            except av.error.FFmpegError:
                pass
            container.close()


class DecodingReceiver(Actor):
    """Base of the PyAV receivers: a thread opens ``url`` (with ``input_format``), demuxes and decodes
    the first video stream; :meth:`process` emits RGB frames on ``'stream'``.

    Frame times are the stream's presentation times anchored at the arrival of the first frame
    (``RemoteClock``); ``clock_source_id`` names the URL. At most ``queue`` decoded frames wait
    (older ones are dropped and counted)."""

    default_fps = 500.0

    def __init__(
        self,
        url: str,
        input_format: str | None,
        *,
        options: dict[str, str] | None = None,
        queue: int = 4,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        self.url, self.input_format = url, input_format
        self.options = {**LOW_LATENCY_INPUT, **(options or {})}
        self.outputs["stream"] = StreamOutput("stream", VideoFrame)
        self.frames_received = 0
        self.frames_dropped = 0
        self.decode_errors = 0
        self.timestamps_held = 0
        """Frames whose mapped time did not come after the previous frame's (a frame without a
        PTS is placed one period after the last, which a re-based stream's next PTS can precede):
        stamped just after the previous one instead, so timestamps only ever increase."""
        self._last_when = -math.inf
        self._ready: deque[tuple[np.ndarray, int | None]] = deque()
        self._queue = queue
        self._clock = RemoteClock(90000, tolerance=0.0)
        self._running = False
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._fps = 30.0
        self.opened = threading.Event()
        """Set once the input is open (its socket is receiving)."""
        self.clock_id = f"{input_format or 'av'}:{url}"
        """The ``clock_source_id`` of the frames: names the transport and address."""

    def network_stats(self) -> dict[str, Any]:
        return {
            "frames_received": self.frames_received,
            "frames_dropped": self.frames_dropped,
            "decode_errors": self.decode_errors,
            "timestamps_held": self.timestamps_held,
            "clock_id": self.clock_id,
        }

    async def on_start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._receive, name=f"av-receive{self.path}", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _receive(self) -> None:
        try:
            self._receive_loop()
        except BaseException as exc:  # handed to process(), which raises it
            self._failure = exc

    def _receive_loop(self) -> None:
        container: Any = None
        try:
            while self._running:
                if container is None:
                    try:
                        container = av.open(
                            self.url, format=self.input_format, options=self.options, timeout=(1.0, 0.5)
                        )
                    except av.error.ExitError:  # nothing arrived while probing: try again
                        continue
                    self.opened.set()
                    if not container.streams.video:
                        raise ValueError(f"{self.path}: {self.url!r} has no video stream")
                    video = container.streams.video[0]
                    # frame threading holds frames back (one per thread): decode with slice threads only
                    video.thread_type = "SLICE"
                    rate = video.average_rate or video.guessed_rate
                    self._fps = float(rate) if rate else 30.0
                try:
                    for packet in container.demux(video=0):
                        for frame in packet.decode():
                            self._deliver(frame)
                        if not self._running:
                            return
                except av.error.ExitError:  # the read timeout: check whether to stop, then go on
                    continue
                except av.error.FFmpegError:  # a damaged packet or datagram: count it and go on
                    self.decode_errors += 1
                    time.sleep(0.001)  # never spin on an error that repeats
        finally:
            if container is not None:
                container.close()

    def _deliver(self, frame: Any) -> None:
        rgb = frame.to_ndarray(format="rgb24")
        pts = None if frame.pts is None else round(frame.pts * frame.time_base * 90000)
        while len(self._ready) >= self._queue:
            self._ready.popleft()
            self.frames_dropped += 1
        self._ready.append((rgb, pts))
        self.frames_received += 1

    async def process(self, tick: TimedTick) -> None:
        if self._failure is not None:
            raise RuntimeError(f"{self.path}: receiving {self.url!r} failed: {self._failure!r}") from self._failure
        out = self.outputs["stream"]
        while self._ready:
            rgb, pts = self._ready.popleft()
            if pts is None:
                pts = self._clock._last + round(90000 / self._fps) if self._clock.mode else 0
            when = self._clock.to_local(pts & 0xFFFFFFFF)
            if when <= self._last_when:  # downstream (muxers, alignment) needs increasing times
                when = self._last_when + 1e-6
                self.timestamps_held += 1
            self._last_when = when
            number = round(self._clock.elapsed * self._fps / 90000)
            await out.send(VideoFrame(rgb, when, number, self.clock_id, self._fps))


class H264RTPSendActor(EncodingSender):
    """Encodes ``'stream'`` to H.264 (PyAV/libx264, low latency: ``LOW_LATENCY_X264``) and sends it as
    RTP (RFC 6184, packetization-mode 1) to ``host:port``.

    :meth:`sdp` describes the stream with ``sprop-parameter-sets`` and ``profile-level-id`` from the
    encoder (RFC 6184 §8.1); ``sdp_file=`` writes it. Any ffmpeg, GStreamer or browser gateway can
    play it: ``ffmpeg -protocol_whitelist file,udp,rtp -i stream.sdp ...``."""

    container_format = "rtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        rtp_payload_type: int = 96,
        sdp_file: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> None:
        self.host, self.port, self.rtp_payload_type = host, int(port), rtp_payload_type
        self.sdp_file = Path(sdp_file) if sdp_file is not None else None
        super().__init__(f"rtp://{host}:{port}", container_options={"payload_type": str(rtp_payload_type)}, **kw)

    def _opened(self) -> None:
        if self.sdp_file is not None:
            self.sdp_file.write_text(self.sdp())

    def sdp(self) -> str:
        """SDP for this stream (known once the encoder is open: first frame, or ``width``/``height``)."""
        if self._stream is None:
            raise RuntimeError(f"{self.path}: the encoder opens on the first frame; pass width= and height=")
        extradata = bytes(self._stream.codec_context.extradata or b"")
        nals = [n.rstrip(b"\x00") for n in extradata.split(b"\x00\x00\x01")]  # Annex B start codes
        nals = [n for n in nals if n]
        sps = next((n for n in nals if n[0] & 0x1F == 7), None)
        pps = next((n for n in nals if n[0] & 0x1F == 8), None)
        params = ["packetization-mode=1"]
        if sps is not None and len(sps) >= 4:
            params.append(f"profile-level-id={sps[1:4].hex()}")
        if sps is not None and pps is not None:
            sets = ",".join(base64.b64encode(n).decode() for n in (sps, pps))
            params.append(f"sprop-parameter-sets={sets}")
        fmtp = f"a=fmtp:{self.rtp_payload_type} " + "; ".join(params)
        return write_sdp(
            self.host,
            self.port,
            [fmtp],
            "video",
            self.rtp_payload_type,
            "H264/90000",
            session="streamlib H.264",
            clock_lines=False,
        )


class H264RTPReceiveActor(DecodingReceiver):
    """Receives H.264 over RTP described by ``sdp`` (text or file: ffmpeg's ``-sdp_file``, or
    :meth:`H264RTPSendActor.sdp`) and emits RGB frames on ``'stream'``. Decoding is PyAV with
    low-latency demuxer options (no probe buffering, no reorder queue)."""

    def __init__(
        self, sdp: str | os.PathLike[str], *, sdp_dir: str | os.PathLike[str] | None = None, **kw: Any
    ) -> None:
        description = read_sdp(sdp)
        media = description.first("video")
        if media.encoding.upper() != "H264":
            raise ValueError(f"the SDP video is {media.encoding!r}, not H264")
        self.port = media.port
        # FFmpeg's SDP demuxer reads a file: a private copy, removed when the actor stops
        folder = Path(sdp_dir) if sdp_dir is not None else Path(tempfile.gettempdir())
        path = folder / f"streamlib-h264-{os.getpid()}-{media.port}-{id(self):x}.sdp"
        path.write_text(description.text)
        self.sdp_path = path
        super().__init__(str(path), "sdp", **kw)
        self.clock_id = f"rtp-h264:{media.address or '127.0.0.1'}:{media.port}"

    async def on_stop(self) -> None:
        await super().on_stop()
        self.sdp_path.unlink(missing_ok=True)
