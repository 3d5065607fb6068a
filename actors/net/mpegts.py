"""MPEG-TS over UDP through PyAV: H.264 in a transport stream, out and in (what ffmpeg, VLC,
GStreamer ``tsdemux`` and IP set-top boxes speak). SRT is not offered: PyAV's bundled FFmpeg has no
``srt://`` protocol (``ProtocolNotFoundError``); see ``docs/network.md``.
"""

from __future__ import annotations

from typing import Any

from .h264 import DecodingReceiver, EncodingSender
from .rtp import is_multicast

__all__ = ["MPEGTSReceiveActor", "MPEGTSSendActor"]


class MPEGTSSendActor(EncodingSender):
    """Encodes ``'stream'`` to H.264 (low latency) in MPEG-TS and sends it over UDP to ``host:port``
    in 1316-byte datagrams (7 TS packets, the IPTV convention), flushing every packet.

    Watch it with ``ffplay udp://127.0.0.1:PORT`` or ``ffmpeg -i udp://127.0.0.1:PORT ...``."""

    container_format = "mpegts"

    def __init__(self, host: str, port: int, *, pkt_size: int = 1316, **kw: Any) -> None:
        self.host, self.port = host, int(port)
        options = {"flush_packets": "1"}
        super().__init__(f"udp://{host}:{port}?pkt_size={pkt_size}", container_options=options, **kw)


class MPEGTSReceiveActor(DecodingReceiver):
    """Receives MPEG-TS over UDP on ``port`` (bound to ``bind``, or joined to ``multicast``) and emits
    the first video stream as RGB frames on ``'stream'``. Damaged packets are counted (``decode_errors``)
    and skipped."""

    def __init__(self, port: int, *, bind: str = "127.0.0.1", multicast: str | None = None, **kw: Any) -> None:
        self.port = int(port)
        host = multicast if multicast else bind
        if multicast and not is_multicast(multicast):
            raise ValueError(f"multicast={multicast!r} is not a multicast address")
        url = f"udp://{host}:{port}?fifo_size=65536&overrun_nonfatal=1&buffer_size=4194304"
        options = {"probesize": "65536", "analyzeduration": "200000"}
        super().__init__(url, "mpegts", options={**options, **kw.pop("options", {})}, **kw)
        self.clock_id = f"mpegts:{host}:{port}"
