"""Session descriptions (SDP, RFC 8866) for the network actors: written for ST 2110 and read back.

Writing follows SMPTE ST 2110-20 §7 (video ``fmtp`` parameters), ST 2110-30 §6 (audio), ST 2110-10
§8 (``a=mediaclk``, ``a=ts-refclk`` per RFC 7273) and RFC 6184 §8 (H.264). Reading accepts what
ffmpeg's ``-sdp_file`` writes (CRLF lines, a short ``fmtp``), GStreamer users' hand-written files
and our own: only the fields a receiver needs are interpreted, the rest are kept in ``attributes``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .rtp import is_multicast, local_mac

__all__ = ["MediaDescription", "SessionDescription", "format_rate", "parse_rate", "parse_sdp", "read_sdp", "write_sdp"]


@dataclass
class MediaDescription:
    """One ``m=`` section: media kind, port, payload type, ``rtpmap`` and ``fmtp`` decoded."""

    media: str  # "video" | "audio"
    port: int
    payload_type: int
    encoding: str  # "raw", "L24", "L16", "H264", "MP2T" ...
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    address: str | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None


@dataclass
class SessionDescription:
    media: list[MediaDescription]
    address: str | None = None
    text: str = ""

    def first(self, kind: str) -> MediaDescription:
        for m in self.media:
            if m.media == kind:
                return m
        kinds = ", ".join(m.media for m in self.media) or "none"
        raise ValueError(f"the SDP has no {kind} media section (it has: {kinds})")


def format_rate(fps: float) -> str:
    """``exactframerate`` (ST 2110-20 §7.2): an integer, or a ratio such as ``30000/1001``."""
    if abs(fps - round(fps)) < 1e-6:
        return str(round(fps))
    ntsc = Fraction(round(fps * 1.001)) * 1000 / 1001
    if abs(float(ntsc) - fps) < 1e-4:
        return f"{ntsc.numerator}/{ntsc.denominator}"
    frac = Fraction(fps).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def parse_rate(text: str) -> float:
    num, _, den = text.strip().partition("/")
    return float(num) / float(den or 1)


def _connection(host: str) -> str:
    return f"c=IN IP4 {host}/32" if is_multicast(host) else f"c=IN IP4 {host}"


def write_sdp(
    host: str,
    port: int,
    lines: list[str],
    media: str,
    payload_type: int,
    rtpmap: str,
    session: str = "streamlib",
    clock_lines: bool = True,
    source: str | None = None,
) -> str:
    """An SDP for one RTP stream: session lines, the ``m=`` line, ``rtpmap``, then ``lines``.

    ``clock_lines`` adds ST 2110-10's ``a=mediaclk:direct=0`` and ``a=ts-refclk:localmac=...``: with no
    PTP clock the RTP timestamps count this host's real-time clock, which RFC 7273 §4.8 names as a
    local (unsynchronised) reference identified by the host's MAC."""
    origin = source or ("127.0.0.1" if host.startswith("127.") else "0.0.0.0")
    ident = int(time.time())
    out = [
        "v=0",
        f"o=- {ident} {ident} IN IP4 {origin}",
        f"s={session}",
        "t=0 0",
        f"m={media} {port} RTP/AVP {payload_type}",
        _connection(host),
        f"a=rtpmap:{payload_type} {rtpmap}",
        *lines,
    ]
    if clock_lines:
        out += [f"a=ts-refclk:localmac={local_mac()}", "a=mediaclk:direct=0"]
    return "\r\n".join(out) + "\r\n"


def parse_sdp(text: str) -> SessionDescription:
    """Parse SDP text. Raises ``ValueError`` naming the line for anything a receiver cannot use."""
    session_addr: str | None = None
    media: list[MediaDescription] = []
    current: MediaDescription | None = None
    formats: list[int] = []
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    fmtps: dict[int, dict[str, str]] = {}

    def close() -> None:
        if current is None:
            return
        pt = current.payload_type
        if pt in rtpmaps:
            current.encoding, current.clock_rate, current.channels = rtpmaps[pt]
        elif pt == 33:  # RFC 3551 static payload type 33: MPEG-2 transport stream
            current.encoding, current.clock_rate = "MP2T", 90000
        current.fmtp = fmtps.get(pt, {})
        media.append(current)

    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            close()
            parts = value.split()
            if len(parts) < 4:
                raise ValueError(f"SDP m= line needs media, port, protocol and a format: {line!r}")
            formats = [int(p) for p in parts[3:] if p.isdigit()]
            if not formats:
                raise ValueError(f"SDP m= line has no numeric payload type: {line!r}")
            current = MediaDescription(parts[0], int(parts[1].split("/")[0]), formats[0], "", 0)
            rtpmaps, fmtps = {}, {}
        elif kind == "c":
            parts = value.split()
            addr = parts[2].split("/")[0] if len(parts) >= 3 else None
            if current is None:
                session_addr = addr
            else:
                current.address = addr
        elif kind == "a" and current is not None:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt_text, _, enc = rest.partition(" ")
                bits = enc.strip().split("/")
                try:
                    rtpmaps[int(pt_text)] = (
                        bits[0],
                        int(bits[1]) if len(bits) > 1 else 90000,
                        int(bits[2]) if len(bits) > 2 else 1,
                    )
                except ValueError as exc:
                    raise ValueError(f"unreadable SDP rtpmap: {line!r}") from exc
            elif name == "fmtp":
                pt_text, _, params = rest.partition(" ")
                found: dict[str, str] = {}
                for item in params.split(";"):
                    key, eq, val = item.strip().partition("=")
                    if key:
                        found[key.strip()] = val.strip() if eq else ""
                if pt_text.isdigit():
                    fmtps[int(pt_text)] = found
            else:
                current.attributes.append((name, rest))
    close()
    if not media:
        raise ValueError("the SDP has no m= media section")
    for m in media:
        m.address = m.address or session_addr
    return SessionDescription(media, session_addr, text)


def read_sdp(sdp: str | os.PathLike[str]) -> SessionDescription:
    """``sdp`` is SDP text (it contains ``v=0`` or ``m=``) or the path of an SDP file."""
    text = os.fspath(sdp)
    if "\n" not in text and ("m=" not in text):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"no SDP file at {text!r} (pass SDP text or an existing .sdp path)")
        text = path.read_text()
    return parse_sdp(text)
