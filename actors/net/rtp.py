"""RTP (RFC 3550) for the network actors: the fixed header, sequence bookkeeping, UDP sockets.

The header is parsed and built field by field as RFC 3550 §5.1 draws it; sequence accounting
follows the receiver algorithm of RFC 3550 Appendix A.1 (extended sequence numbers, a
probation rule for large jumps), so loss, reordering and duplicates are counted the way every
RTP receiver counts them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "RTP_VERSION",
    "RTPHeader",
    "SequenceTracker",
    "build_header",
    "is_multicast",
    "local_mac",
    "media_time_offset",
    "open_receive_socket",
    "open_send_socket",
    "parse_header",
    "payload_bounds",
    "stamp_sequence",
]

RTP_VERSION = 2
FIXED_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC (§5.1)


class MalformedPacket(ValueError):
    """A datagram that is not a well-formed RTP packet (counted, never raised to the user)."""


@dataclass(slots=True)
class RTPHeader:
    """The RFC 3550 §5.1 fixed header, plus where the payload starts and ends."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int


def payload_bounds(packet: bytes | bytearray | memoryview, n: int) -> tuple[int, int] | None:
    """Where the payload of the first ``n`` bytes of ``packet`` starts and ends, past CSRCs
    (§5.1), a header extension (§5.3.1) and padding (§5.1 P bit); ``None`` if it cannot be an
    RTP v2 packet. The receivers' per-packet check: a tuple, not an :class:`RTPHeader`."""
    if n < 12:
        return None
    b0 = packet[0]
    if b0 & 0xC0 != 0x80:
        return None
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # X: extension header: 16-bit profile, 16-bit length in 32-bit words
        if start + 4 > n:
            return None
        start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
    end = n
    if b0 & 0x20:  # P: the last octet counts the padding octets, itself included
        pad = packet[n - 1]
        if pad == 0:
            return None
        end -= pad
    if start > end:
        return None
    return start, end


def parse_header(packet: bytes | bytearray | memoryview, length: int | None = None) -> RTPHeader:
    """The fixed header and the payload's bounds (see :func:`payload_bounds`).

    Raises :class:`MalformedPacket` for anything that cannot be an RTP v2 packet."""
    n = len(packet) if length is None else length
    bounds = payload_bounds(packet, n)
    if bounds is None:
        raise MalformedPacket(
            "not an RTP v2 packet (shorter than its header, another version, a truncated extension or bad padding)"
        )
    _, b1, seq, ts, ssrc = FIXED_HEADER.unpack_from(packet, 0)
    return RTPHeader(bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, *bounds)


def build_header(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool = False) -> bytes:
    """A 12-byte fixed header (no CSRC, no extension, no padding)."""
    return FIXED_HEADER.pack(
        0x80,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )


class SequenceTracker:
    """Extended-sequence bookkeeping after RFC 3550 Appendix A.1.

    ``bits`` is 16 for plain RTP, 32 for RFC 4175 / ST 2110-20 (whose payload header carries the
    high 16 bits). :meth:`update` says whether to use the packet; the counters say what happened.
    A jump larger than ``max_dropout`` (or further back than ``max_misorder``) is held on probation:
    the next packet must follow it before the tracker resynchronises (A.1's ``bad_seq``), so one
    garbage sequence number cannot derail the stream.
    """

    __slots__ = (
        "_bad",
        "_base",
        "_highest",
        "_mod",
        "_recent",
        "_recent_set",
        "duplicates",
        "lost_base",
        "max_dropout",
        "max_misorder",
        "received",
        "reordered",
        "resyncs",
    )

    def __init__(self, bits: int = 16, max_dropout: int = 3000, max_misorder: int = 100) -> None:
        self._mod = 1 << bits
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self._highest: int | None = None
        self._base = 0
        self._bad: int | None = None
        self.received = 0
        self.reordered = 0
        self.duplicates = 0
        self.resyncs = 0
        self.lost_base = 0  # losses counted before the last resync
        self._recent: list[int] = []  # ring of recent sequence numbers, to tell duplicates from reordering
        self._recent_set: set[int] = set()

    def update(self, seq: int) -> bool:
        """Account for one packet; False means drop it (a duplicate, or a jump on probation)."""
        if self._highest is None:
            self._restart(seq)
            return True
        delta = (seq - self._highest) % self._mod
        if 0 < delta < self.max_dropout:  # in order, maybe with a gap (the gap counts as loss)
            self._highest = seq
        elif delta == 0 or (self._mod - delta) <= self.max_misorder:  # duplicate or late
            if seq in self._recent_set:
                self.duplicates += 1
                return False
            self.reordered += 1
        else:  # a big jump: accept only if the next packet confirms it (A.1 bad_seq)
            if self._bad is not None and seq == self._bad:
                self.lost_base += self.lost
                self.resyncs += 1
                self._restart(seq)
                return True
            self._bad = (seq + 1) % self._mod
            return False
        self._bad = None
        self._remember(seq)
        self.received += 1
        return True

    def accept_run(self, first: int, count: int) -> bool:
        """Account for ``count`` packets numbered ``first, first + 1, ...`` at once, if they follow the
        highest number seen exactly (the common case, checked in bulk); False: use :meth:`update`."""
        if self._highest is None or first != (self._highest + 1) % self._mod or count >= self.max_dropout:
            return False
        last = (first + count - 1) % self._mod
        self._highest = last
        self._bad = None
        self.received += count
        run = list(range(first, last + 1)) if first <= last else [(first + k) % self._mod for k in range(count)]
        self._recent.extend(run)
        self._recent_set.update(run)
        if len(self._recent) > 2 * self.max_misorder + 64:
            old = self._recent[: len(self._recent) // 2]
            del self._recent[: len(old)]
            self._recent_set.difference_update(old)
            self._recent_set.update(self._recent)
        return True

    def _restart(self, seq: int) -> None:
        self._highest = seq
        self._base = seq
        self._bad = None
        self.received = 1
        self._recent.clear()
        self._recent_set.clear()
        self._remember(seq)

    def _remember(self, seq: int) -> None:
        self._recent.append(seq)
        self._recent_set.add(seq)
        if len(self._recent) > 2 * self.max_misorder + 64:
            old = self._recent[: len(self._recent) // 2]
            del self._recent[: len(old)]
            self._recent_set.difference_update(old)
            self._recent_set.update(self._recent)

    @property
    def highest(self) -> int | None:
        """The highest (extended) sequence number accepted so far."""
        return self._highest

    @property
    def expected(self) -> int:
        if self._highest is None:
            return 0
        return (self._highest - self._base) % self._mod + 1

    @property
    def lost(self) -> int:
        """Packets expected since the last resync but never received (RFC 3550 A.3), clamped at 0."""
        return max(self.expected - self.received, 0)

    @property
    def total_lost(self) -> int:
        return self.lost_base + self.lost


def stamp_sequence(packets: NDArray[np.uint8], first: int, extended_at: int | None = None) -> int:
    """Write consecutive sequence numbers from ``first`` into a block of packets (one per row):
    the 16-bit RTP field (RFC 3550 §5.1, octets 2-3) and, for RFC 4175, the high 16 bits at
    ``extended_at``. Returns the next number. Stamped when sent, so a frame the sender had to drop
    leaves no hole in the sequence (no false loss at the receiver)."""
    n = packets.shape[0]
    bits = 32 if extended_at is not None else 16
    seq = (np.arange(first, first + n, dtype=np.uint64)) & np.uint64((1 << bits) - 1)
    packets[:, 2] = (seq >> np.uint64(8)) & np.uint64(0xFF)
    packets[:, 3] = seq & np.uint64(0xFF)
    if extended_at is not None:
        packets[:, extended_at] = (seq >> np.uint64(24)) & np.uint64(0xFF)
        packets[:, extended_at + 1] = (seq >> np.uint64(16)) & np.uint64(0xFF)
    return int((first + n) % (1 << bits))


def is_multicast(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False


def open_receive_socket(
    port: int,
    bind: str = "127.0.0.1",
    multicast: str | None = None,
    interface: str = "0.0.0.0",
    buffer_size: int = 8 << 20,
) -> socket.socket:
    """A UDP socket bound to ``(bind, port)``, joined to ``multicast`` on ``interface`` if given.

    With a group, the socket binds to the group address (Linux then delivers only that group's
    datagrams to it) and joins it with ``IP_ADD_MEMBERSHIP``. The receive buffer is raised toward
    ``buffer_size`` (the kernel caps it at ``net.core.rmem_max``): raw video arrives in bursts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        if multicast:  # several receivers of one group on one host may share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((multicast, port))
            mreq = socket.inet_aton(multicast) + socket.inet_aton(interface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock.bind((bind, port))
    except BaseException:
        sock.close()
        raise
    return sock


def open_send_socket(
    host: str, interface: str | None = None, ttl: int = 16, buffer_size: int = 4 << 20
) -> socket.socket:
    """A UDP socket for sending to ``host`` (multicast: ``IP_MULTICAST_IF``/``TTL``, loopback on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
    if is_multicast(host):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if interface:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    return sock


def local_mac() -> str:
    """This host's MAC in the ``XX-XX-XX-XX-XX-XX`` form RFC 7273 ``ts-refclk:localmac`` uses."""
    node = uuid.getnode()
    return "-".join(f"{(node >> s) & 0xFF:02X}" for s in range(40, -1, -8))


def media_time_offset() -> float:
    """Seconds to add to ``time.monotonic()`` to get the media clock (the system's real-time clock,
    our stand-in for PTP/TAI when no PTP clock runs): RTP timestamps count this clock.

    Measured once per process (the tightest of a few paired readings), so every sender and
    receiver of a process maps timestamps identically."""
    global _MEDIA_OFFSET
    if _MEDIA_OFFSET is None:
        best = (float("inf"), 0.0)
        for _ in range(5):
            a = time.monotonic()
            wall = time.time()
            b = time.monotonic()
            best = min(best, (b - a, wall - (a + b) / 2))
        _MEDIA_OFFSET = best[1]
    return _MEDIA_OFFSET


_MEDIA_OFFSET: float | None = None


def pid_ssrc() -> int:
    """A random 32-bit SSRC (RFC 3550 §8: chosen randomly)."""
    return int.from_bytes(os.urandom(4), "big")


class RemoteClock:
    """Maps a stream's RTP timestamps onto this host's ``time.monotonic()`` timeline.

    If the timestamps count the real-time clock (what :class:`RTPSendActor` and ST 2110 senders
    locked to PTP do: ST 2110-10 §8.2) and agree with ours to within ``tolerance`` seconds, a
    frame keeps its sender's media time exactly (``mode == "media-clock"``). Otherwise (ffmpeg and
    GStreamer start from a random timestamp) the first packet anchors the timeline at its arrival
    and later timestamps advance from there by their RTP difference (``mode == "anchored"``).
    Either way a 32-bit wrap is unwrapped, so time keeps increasing."""

    __slots__ = ("_anchor_local", "_anchor_rtp", "_first", "_last", "_offset", "mode", "rate", "tolerance")

    def __init__(self, rate: int, tolerance: float = 5.0) -> None:
        self.rate = rate
        self.tolerance = tolerance
        self._offset = media_time_offset()
        self.mode: str | None = None
        self._anchor_rtp = 0  # unwrapped RTP count at the anchor
        self._anchor_local = 0.0
        self._last = 0  # last unwrapped RTP count
        self._first = 0

    def reset(self) -> None:
        self.mode = None

    def to_local(self, rtp_ts: int) -> float:
        """The ``time.monotonic()`` time of a packet stamped ``rtp_ts``."""
        now = time.monotonic()
        if self.mode is None:
            media_now = now + self._offset
            period = (1 << 32) / self.rate
            t = rtp_ts / self.rate
            media = t + round((media_now - t) / period) * period
            if abs(media - media_now) < self.tolerance:
                self.mode = "media-clock"
                self._last = round(media * self.rate)
                self._anchor_rtp, self._anchor_local = 0, -self._offset
            else:
                self.mode = "anchored"
                self._last = rtp_ts
                self._anchor_rtp, self._anchor_local = rtp_ts, now
            self._first = self._last
        step = ((rtp_ts - self._last + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        self._last += step
        return self._anchor_local + (self._last - self._anchor_rtp) / self.rate

    @property
    def elapsed(self) -> int:
        """RTP ticks from the first timestamp seen to the last one mapped."""
        return self._last - self._first


class SourceLock:
    """Follows one synchronisation source (SSRC, RFC 3550 §8) and switches only to a sustained new one.

    The first SSRC seen is locked. Packets of another SSRC are *foreign* and dropped, unless
    ``switch_after`` of them arrive in a row with none of the locked source in between: then the
    sender was replaced (restarted, or another took the group) and the lock moves to it. One stray
    or corrupted SSRC can therefore never take a stream over."""

    __slots__ = ("_candidate", "_run", "changes", "foreign", "ssrc", "switch_after")

    SAME, FOREIGN, SWITCHED = 0, 1, 2

    def __init__(self, switch_after: int = 32) -> None:
        self.ssrc: int | None = None
        self.switch_after = switch_after
        self._candidate: int | None = None
        self._run = 0
        self.changes = 0
        self.foreign = 0

    def check(self, ssrc: int) -> int:
        if ssrc == self.ssrc:
            self._run = 0
            return self.SAME
        if self.ssrc is None:
            self.ssrc = ssrc
            return self.SAME
        if ssrc == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = ssrc, 1
        if self._run >= self.switch_after:
            self.ssrc, self._candidate, self._run = ssrc, None, 0
            self.changes += 1
            return self.SWITCHED
        self.foreign += 1
        return self.FOREIGN
