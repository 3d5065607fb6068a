"""A PTP (IEEE 1588-2008, PTPv2) slave clock: the time of the network's grandmaster.

:class:`PTPClock` is an ordinary clock in slave-only mode (§9.2.2) using the end-to-end
delay mechanism (§11.3) over UDP/IPv4 multicast (Annex D: 224.0.1.129, event port 319,
general port 320), as GStreamer's PTP clock does. It listens to Announce messages and
picks the best master with the best master clock algorithm (§9.3), takes Sync/Follow_Up
for the master-to-slave path and sends Delay_Req for the slave-to-master path, filters
both, and models the grandmaster's time as the local ``CLOCK_REALTIME`` plus an offset
and a rate. It never adjusts the system clock: it only reads it.

Receive and send times of event messages are the kernel's software timestamps
(``SO_TIMESTAMPING``: the send time of a Delay_Req comes back on the socket's error queue),
so the Python interpreter's own delays stay out of t2 and t3. Binding ports 319 and 320 needs root,
``CAP_NET_BIND_SERVICE`` (``setcap cap_net_bind_service=ep $(readlink -f $(which python3))``)
or ``sysctl net.ipv4.ip_unprivileged_port_start=319``; a multicast route on the interface
may be needed (``ip route add 224.0.0.0/4 dev eth0``).

A ``PTPClock`` is also a :class:`streamlib.Clock`: an actor built with ``clock=PTPClock(fps=30)``
ticks when the grandmaster's time crosses a whole frame period (``n / fps`` seconds since
the PTP epoch), so actors on different machines tick on the same instants and number
their frames alike. Each tick's ``timestamp`` stays on this machine's ``time.monotonic()``
timeline (the instant the tick was due here), as every streamlib timestamp is; its
``frame_number`` is the frame index on the PTP timeline and its clock id names the
grandmaster: ``ptp:<grandmaster identity>:<domain>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import select
import socket
import statistics
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

from .timeline import TimelineClock

__all__ = ["AnnounceData", "PTPClock", "PTPError", "ts_refclk"]

log = logging.getLogger("streamlib.clocks.ptp")

PTP_MULTICAST = "224.0.1.129"  # Annex D.3: the primary IPv4 multicast address
EVENT_PORT = 319  # Annex D.2
GENERAL_PORT = 320

# messageType values (Table 19)
SYNC, DELAY_REQ, FOLLOW_UP, DELAY_RESP, ANNOUNCE = 0x0, 0x1, 0x8, 0x9, 0xB

_HEADER = struct.Struct(">BBHBxHq4x8sHHBb")  # §13.3: the 34-byte common header
_TIMESTAMP = struct.Struct(">HIL")  # §5.3.3: secondsField (UInt48 as 16+32 bits), nanosecondsField
_ANNOUNCE = struct.Struct(">hxBBBHB8sHB")  # §13.5.1 after originTimestamp

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export these
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
# linux/net_tstamp.h: software timestamps of sent and received packets, reported without the payload
SOF_TIMESTAMPING = (1 << 1) | (1 << 3) | (1 << 4) | (1 << 11)  # TX_SOFTWARE|RX_SOFTWARE|SOFTWARE|OPT_TSONLY

FOREIGN_MASTER_THRESHOLD = 2  # §9.3.2.4.5: Announce messages to qualify a foreign master
FOREIGN_MASTER_WINDOW = 4  # ... within this many announce intervals
ANNOUNCE_RECEIPT_TIMEOUT = 3  # §8.2.5.4.2 default (announce intervals)


class PTPError(RuntimeError):
    """The PTP clock cannot run (ports not bindable, interface missing) or did not lock in time."""


@dataclass(frozen=True, slots=True)
class AnnounceData:
    """What one master announces about its grandmaster (§13.5), compared by the BMCA (§9.3.4)."""

    source: bytes  # sourcePortIdentity: clockIdentity (8) + portNumber (2)
    grandmaster_identity: bytes
    priority1: int
    clock_class: int
    clock_accuracy: int
    offset_scaled_log_variance: int
    priority2: int
    steps_removed: int
    time_source: int
    current_utc_offset: int
    utc_offset_valid: bool
    ptp_timescale: bool
    log_announce_interval: int

    def rank(self) -> tuple[int, ...]:
        """The data set comparison of §9.3.4 (Figure 28) for different grandmasters: lower wins."""
        return (
            self.priority1,
            self.clock_class,
            self.clock_accuracy,
            self.offset_scaled_log_variance,
            self.priority2,
            int.from_bytes(self.grandmaster_identity, "big"),
        )


def better(a: AnnounceData, b: AnnounceData) -> bool:
    """Is ``a`` a better master than ``b`` (§9.3.4, the data set comparison algorithm)?"""
    if a.grandmaster_identity != b.grandmaster_identity:
        return a.rank() < b.rank()
    # Same grandmaster (Figure 28): fewer steps removed wins when they differ by more than one;
    # otherwise the topology decides (the lower sender identity, a stable tie-break).
    if abs(a.steps_removed - b.steps_removed) > 1:
        return a.steps_removed < b.steps_removed
    if a.steps_removed != b.steps_removed:
        return a.steps_removed < b.steps_removed
    return a.source < b.source


def ts_refclk(clock_source_id: str | None) -> str | None:
    """The RFC 7273 §4.3 SDP attribute value for a stream stamped by a :class:`PTPClock`.

    ``ts_refclk("ptp:001122.fffe.334455:0")`` is ``"ptp=IEEE1588-2008:00-11-22-FF-FE-33-44-55:0"``
    (write it as ``a=ts-refclk:<value>``, as ST 2110-10 asks); ``None`` for any other clock id.
    """
    if not clock_source_id or not clock_source_id.startswith("ptp:"):
        return None
    parts = clock_source_id.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    gmid = parts[1].replace(".", "")
    if len(gmid) != 16 or any(c not in "0123456789abcdefABCDEF" for c in gmid):
        return None
    eui64 = "-".join(gmid[i : i + 2] for i in range(0, 16, 2)).upper()
    return f"ptp=IEEE1588-2008:{eui64}:{int(parts[2])}"


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The software timestamp in ``SCM_TIMESTAMPNS`` or ``SCM_TIMESTAMPING`` (its first timespec)."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind in (SO_TIMESTAMPNS, SO_TIMESTAMPING) and len(payload) >= 16:
            sec, nsec = struct.unpack("=qq", payload[:16])
            if sec or nsec:
                return int(sec * 1_000_000_000 + nsec)
    return None


def format_identity(identity: bytes) -> str:
    """A clockIdentity as ptp4l prints it: ``001122.fffe.334455``."""
    h = identity.hex()
    return f"{h[0:6]}.{h[6:10]}.{h[10:16]}"


def _timestamp(data: bytes, at: int) -> int:
    high, low, ns = _TIMESTAMP.unpack_from(data, at)
    return int(((high << 32) | low) * 1_000_000_000 + ns)


@dataclass(slots=True)
class _Foreign:
    announce: AnnounceData
    heard: deque[float]  # local monotonic times of its recent Announce messages


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: returns ``(a, b)`` (a flat line through one x)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else 0.0
    return mean_y - slope * mean_x, slope


class _Estimator:
    """Offset and rate of the grandmaster's time against the local CLOCK_REALTIME.

    Path delay: the median of the last ``window`` round trips (§11.3: meanPathDelay =
    ((t2 - t1) + (t4 - t3)) / 2), robust to one delayed packet either way.
    Offset: every Sync gives ``master - local = t1 + delay - t2`` at local time ``t2``;
    a least-squares line through the recent samples that survive a median-absolute-
    deviation cut gives the offset now and the rate (the grandmaster's frequency against
    ours), so ``now()`` extrapolates between Syncs instead of stepping."""

    def __init__(self, window: int = 32) -> None:
        self.window = window
        self.delays: deque[int] = deque(maxlen=window)
        self.samples: deque[tuple[int, int]] = deque(maxlen=window)  # (local t2, master - local before delay)
        self.model: tuple[int, float, float] | None = None  # (reference local ns, offset ns there, rate - 1)

    def reset(self) -> None:
        self.delays.clear()
        self.samples.clear()
        self.model = None

    @property
    def path_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None

    def add_delay(self, t1: int, t2: int, t3: int, t4: int) -> None:
        # (t2 - t1) + (t4 - t3) = 2 * delay + (offset at t3 - offset at t2): the offset moves
        # between the Sync and the Delay_Req at the rate the model has learnt; take that out.
        drift = self.model[2] * (t3 - t2) if self.model is not None else 0.0
        delay = ((t2 - t1) + (t4 - t3) - drift) / 2
        if delay < 0 and self.delays and abs(delay) > 10 * abs(statistics.median(self.delays)) + 1000:
            return  # a bogus pair (e.g. a Follow_Up lost and a stale t1): ignore
        self.delays.append(round(delay))

    def add_sync(self, t1: int, t2: int) -> None:
        self.samples.append((t2, t1 - t2))
        self._fit()

    def _fit(self) -> None:
        delay = self.path_delay
        if delay is None or len(self.samples) < 2:
            return
        ref = self.samples[-1][0]
        points = [(float(x - ref), y + delay) for x, y in self.samples]
        offset, slope = _line(points)
        # Cut what lies far off the line (a Sync held up in a queue), judged by the median
        # absolute residual, then fit again.
        residuals = [abs(y - (offset + slope * x)) for x, y in points]
        limit = 4 * statistics.median(residuals) + 2000
        kept = [p for p, r in zip(points, residuals, strict=True) if r <= limit]
        if 2 <= len(kept) < len(points):
            offset, slope = _line(kept)
        if abs(slope) > 500e-6:  # more than 500 ppm apart is noise, not two clocks: keep the offset flat
            offset, slope = statistics.median(y for _, y in kept), 0.0
        self.model = (ref, offset, slope)

    def offset_at(self, local_ns: int) -> float | None:
        model = self.model
        if model is None:
            return None
        ref, offset, slope = model
        return offset + slope * (local_ns - ref)

    def jumped(self, t1: int, t2: int, limit_ns: int) -> bool:
        """Does this Sync disagree with the model by more than ``limit_ns`` (a master time step)?"""
        predicted = self.offset_at(t2)
        delay = self.path_delay or 0.0
        return predicted is not None and abs(t1 - t2 + delay - predicted) > limit_ns


class _PTPSlave:
    """The protocol engine for one (domain, interface): one thread, two sockets.

    Shared by every :class:`PTPClock` of the process on that domain and interface."""

    _shared: ClassVar[dict[tuple[int, str | None], _PTPSlave]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, domain: int, interface: str | None, min_samples: int, step_threshold: float) -> None:
        self.domain = domain
        self.interface = interface
        self.min_samples = min_samples
        self.step_threshold_ns = int(step_threshold * 1e9)
        self.users = 0
        self.identity = self._own_identity(interface)
        self.port_identity = self.identity + struct.pack(">H", 1)
        self.estimator = _Estimator()
        self.lock = threading.Lock()
        self.foreign: dict[bytes, _Foreign] = {}
        self.master: AnnounceData | None = None
        self.master_heard = 0.0
        self.locked = threading.Event()
        self.locked_at: float | None = None
        self.started_at = time.monotonic()
        self.counters = {
            "sync": 0,
            "follow_up": 0,
            "delay_req": 0,
            "delay_resp": 0,
            "announce": 0,
            "malformed": 0,
            "other_domain": 0,
            "master_changes": 0,
            "lost_master": 0,
            "steps": 0,
            "tx_timestamp_missing": 0,
        }
        self._pending_sync: dict[int, tuple[int, int]] = {}  # sequenceId -> (t2, correction ns)
        self._delay_reqs: dict[int, int] = {}  # sequenceId -> t3
        self._delay_seq = random.randrange(1 << 16)
        self._next_delay_req = 0.0
        self._log_delay_interval = 0
        self._stop = threading.Event()
        self.tx_timestamps = False
        self.event_sock, self.general_sock = self._open_sockets()
        self.thread = threading.Thread(target=self._run, name=f"streamlib-ptp-{domain}", daemon=True)
        self.thread.start()

    @classmethod
    def acquire(cls, domain: int, interface: str | None, min_samples: int, step_threshold: float) -> _PTPSlave:
        with cls._shared_lock:
            slave = cls._shared.get((domain, interface))
            if slave is None or not slave.thread.is_alive():
                slave = cls._shared[(domain, interface)] = cls(domain, interface, min_samples, step_threshold)
            slave.users += 1
            return slave

    def release(self) -> None:
        with self._shared_lock:
            self.users -= 1
            if self.users > 0:
                return
            if self._shared.get((self.domain, self.interface)) is self:
                del self._shared[(self.domain, self.interface)]
        self._stop.set()
        self.thread.join(timeout=2)
        self.event_sock.close()
        self.general_sock.close()

    # -- setup -------------------------------------------------------------------------

    @staticmethod
    def _own_identity(interface: str | None) -> bytes:
        """clockIdentity: the interface's EUI-48 with FFFE inserted (§7.5.2.2.2), else random."""
        if interface is not None:
            with contextlib.suppress(OSError):
                with open(f"/sys/class/net/{interface}/address") as f:
                    mac = bytes.fromhex(f.read().strip().replace(":", ""))
                if len(mac) == 6 and any(mac):
                    return mac[:3] + b"\xff\xfe" + mac[3:]
        return bytes([(random.randrange(256) | 0x02) & 0xFE]) + os.urandom(7)  # locally administered

    def _membership(self) -> bytes:
        index = socket.if_nametoindex(self.interface) if self.interface else 0
        return struct.pack("=4s4si", socket.inet_aton(PTP_MULTICAST), socket.inet_aton("0.0.0.0"), index)

    def _open_sockets(self) -> tuple[socket.socket, socket.socket]:
        if self.interface is not None:
            try:
                socket.if_nametoindex(self.interface)
            except OSError:
                raise PTPError(f"PTPClock: no network interface {self.interface!r}") from None
        socks: list[socket.socket] = []
        for port in (EVENT_PORT, GENERAL_PORT):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if port == EVENT_PORT:  # the kernel's send times make t3 as exact as t2
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOF_TIMESTAMPING)
                        self.tx_timestamps = True
                    except OSError:
                        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                else:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.bind(("0.0.0.0", port))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, self._membership())
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self._membership())
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            except PermissionError as exc:
                sock.close()
                for s in socks:
                    s.close()
                raise PTPError(
                    f"PTPClock: cannot bind UDP port {port} ({exc.strerror}): PTP's ports are privileged. "
                    "Run as root, grant the interpreter CAP_NET_BIND_SERVICE, or lower "
                    "net.ipv4.ip_unprivileged_port_start to 319"
                ) from None
            except OSError as exc:
                sock.close()
                for s in socks:
                    s.close()
                raise PTPError(
                    f"PTPClock: cannot listen on {PTP_MULTICAST}:{port}"
                    f"{' on ' + self.interface if self.interface else ''} ({exc}); is there a multicast "
                    "route (ip route add 224.0.0.0/4 dev <interface>)?"
                ) from None
            sock.setblocking(False)
            socks.append(sock)
        return socks[0], socks[1]

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        socks = [self.event_sock, self.general_sock]
        while not self._stop.is_set():
            now = time.monotonic()
            wait = max(min(self._next_delay_req - now if self.master else 0.1, 0.1), 0.0)
            try:
                ready, _, _ = select.select(socks, [], [], wait)
            except (OSError, ValueError):
                return  # closed under us
            for sock in ready:
                self._receive(sock)
            now = time.monotonic()
            self._expire(now)
            if self.master is not None and now >= self._next_delay_req:
                self._send_delay_req(now)

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(1500, socket.CMSG_SPACE(48))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            rx = _kernel_time(ancillary)
            if rx is None:
                rx = time.clock_gettime_ns(time.CLOCK_REALTIME)
            try:
                self._handle(data, rx)
            except (struct.error, ValueError, IndexError):
                self.counters["malformed"] += 1  # network garbage: counted, survived

    def _handle(self, data: bytes, rx: int) -> None:
        if len(data) < _HEADER.size:
            self.counters["malformed"] += 1
            return
        (first, version, length, domain, flags, correction, identity, port, seq, _, log_interval) = _HEADER.unpack_from(
            data
        )
        kind = first & 0x0F
        if version & 0x0F != 2 or length > len(data):
            self.counters["malformed"] += 1
            return
        if domain != self.domain:
            self.counters["other_domain"] += 1
            return
        source = identity + struct.pack(">H", port)
        if identity == self.identity:
            return  # our own Delay_Req looped back
        if kind == ANNOUNCE:
            self._on_announce(data, source, flags, log_interval)
            return
        master = self.master
        if master is None or source != master.source:
            return  # only the selected master's timing messages count
        correction_ns = correction >> 16  # §13.3.2.7: nanoseconds * 2^16
        if kind == SYNC:
            self.counters["sync"] += 1
            if flags & 0x0200:  # twoStepFlag (§13.3.2.6, flagField octet 0 bit 1): t1 comes in the Follow_Up
                self._pending_sync[seq] = (rx, correction_ns)
                if len(self._pending_sync) > 8:
                    self._pending_sync.pop(next(iter(self._pending_sync)))
            else:
                self._on_sync(_timestamp(data, 34) + correction_ns, rx)
        elif kind == FOLLOW_UP:
            self.counters["follow_up"] += 1
            pending = self._pending_sync.pop(seq, None)
            if pending is not None:
                t2, sync_correction = pending
                self._on_sync(_timestamp(data, 34) + correction_ns + sync_correction, t2)
        elif kind == DELAY_RESP:
            requesting = data[44:54]
            if requesting != self.port_identity:
                return
            self.counters["delay_resp"] += 1
            t3 = self._delay_reqs.pop(seq, None)
            self._log_delay_interval = max(min(log_interval, 4), -7)
            if t3 is None or self._last_sync is None:
                return
            t4 = _timestamp(data, 34) - correction_ns
            t1, t2 = self._last_sync
            with self.lock:
                self.estimator.add_delay(t1, t2, t3, t4)

    _last_sync: tuple[int, int] | None = None
    _disagreeing = 0  # consecutive Syncs off the model by more than the step threshold

    def _on_sync(self, t1: int, t2: int) -> None:
        est = self.estimator
        with self.lock:
            if est.model is not None and est.jumped(t1, t2, self.step_threshold_ns):
                self._disagreeing += 1
                if self._disagreeing < 3:
                    return  # one outlier (a delayed packet) is not a step: wait for a second opinion
                self._disagreeing = 0
                self.counters["steps"] += 1
                log.warning(
                    "PTP domain %d: the grandmaster's time stepped (by %.6f s); re-locking",
                    self.domain,
                    (t1 - t2 - (est.offset_at(t2) or 0)) / 1e9,
                )
                est.reset()
                self._unlock()
            self._disagreeing = 0
            self._last_sync = (t1, t2)
            est.add_sync(t1, t2)
            if (
                not self.locked.is_set()
                and est.model is not None
                and len(est.samples) >= self.min_samples
                and len(est.delays) >= min(self.min_samples, 2)
            ):
                self.locked_at = time.monotonic()
                self.locked.set()
                master = self.master
                log.info(
                    "PTP domain %d: locked to grandmaster %s (offset %+.6f s, path delay %.1f us)",
                    self.domain,
                    format_identity(master.grandmaster_identity) if master else "?",
                    (est.offset_at(t2) or 0) / 1e9,
                    (est.path_delay or 0) / 1e3,
                )

    def _unlock(self) -> None:
        self.locked.clear()
        self.locked_at = None

    def _on_announce(self, data: bytes, source: bytes, flags: int, log_interval: int) -> None:
        if len(data) < 64:
            self.counters["malformed"] += 1
            return
        self.counters["announce"] += 1
        utc_offset, prio1, cls, acc, var, prio2, gm, steps, tsrc = _ANNOUNCE.unpack_from(data, 44)
        if steps >= 255:
            return  # §9.3.2.5: stepsRemoved of 255 or more is not qualified
        announce = AnnounceData(
            source=source,
            grandmaster_identity=gm,
            priority1=prio1,
            clock_class=cls,
            clock_accuracy=acc,
            offset_scaled_log_variance=var,
            priority2=prio2,
            steps_removed=steps,
            time_source=tsrc,
            current_utc_offset=utc_offset,
            utc_offset_valid=bool(flags & 0x0004),  # flagField octet 1 bit 2: currentUtcOffsetValid
            ptp_timescale=bool(flags & 0x0008),  # octet 1 bit 3: ptpTimescale
            log_announce_interval=max(min(log_interval, 6), -4),
        )
        now = time.monotonic()
        entry = self.foreign.get(source)
        if entry is None:
            entry = self.foreign[source] = _Foreign(announce, deque(maxlen=FOREIGN_MASTER_THRESHOLD))
        entry.announce = announce
        entry.heard.append(now)
        if self.master is not None and source == self.master.source:
            self.master = announce
            self.master_heard = now
        self._select(now)

    def _qualified(self, entry: _Foreign, now: float) -> bool:
        window = FOREIGN_MASTER_WINDOW * 2.0**entry.announce.log_announce_interval
        heard = entry.heard
        return len(heard) >= FOREIGN_MASTER_THRESHOLD and now - heard[0] <= window

    def _select(self, now: float) -> None:
        """The BMCA (§9.3.2/§9.3.3) restricted to a slave-only clock: pick the best qualified master."""
        best: AnnounceData | None = None
        for entry in self.foreign.values():
            if self._qualified(entry, now) and (best is None or better(entry.announce, best)):
                best = entry.announce
        current = self.master
        if best is None or (current is not None and best.source == current.source):
            return
        previous = current
        self.master = best
        self.master_heard = now
        self._pending_sync.clear()
        self._delay_reqs.clear()
        self._last_sync = None
        self._next_delay_req = now
        with self.lock:
            self.estimator.reset()
            self._unlock()
        self.counters["master_changes"] += 1
        log.info(
            "PTP domain %d: selected master %s (grandmaster %s, priority1 %d, class %d)%s",
            self.domain,
            format_identity(best.source[:8]),
            format_identity(best.grandmaster_identity),
            best.priority1,
            best.clock_class,
            f", replacing {format_identity(previous.source[:8])}" if previous else "",
        )

    def _expire(self, now: float) -> None:
        """Forget silent foreign masters; lose the master after announceReceiptTimeout (§9.2.6.11)."""
        for source, entry in list(self.foreign.items()):
            window = FOREIGN_MASTER_WINDOW * 2.0**entry.announce.log_announce_interval
            if entry.heard and now - entry.heard[-1] > window:
                del self.foreign[source]
        master = self.master
        if master is None:
            return
        timeout = ANNOUNCE_RECEIPT_TIMEOUT * 2.0**master.log_announce_interval
        if now - self.master_heard > timeout:
            self.counters["lost_master"] += 1
            log.warning(
                "PTP domain %d: master %s silent for %.1f s; free-running until a master is heard",
                self.domain,
                format_identity(master.source[:8]),
                now - self.master_heard,
            )
            self.master = None
            self.foreign.pop(master.source, None)
            with self.lock:
                self._unlock()
            self._select(now)

    def _send_delay_req(self, now: float) -> None:
        """A Delay_Req (§13.6) to the master; mean spacing 2^logMinDelayReqInterval (§9.5.11.2)."""
        interval = 2.0**self._log_delay_interval
        if not self.locked.is_set():
            interval = min(interval, 0.25)  # gather path delays quickly while locking
        self._next_delay_req = now + random.uniform(0.5, 1.5) * interval
        self._delay_seq = (self._delay_seq + 1) & 0xFFFF
        seq = self._delay_seq
        header = _HEADER.pack(
            DELAY_REQ,
            2,
            44,
            self.domain,
            0,
            0,
            self.identity,
            1,
            seq,
            1,  # controlField: Delay_Req (§13.3.2.10)
            0x7F,  # logMessageInterval: 0x7F for Delay_Req (Table 24)
        )
        message = header + bytes(10)  # originTimestamp may be zero (§11.3.2: t3 is kept locally)
        t3 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        try:
            self.event_sock.sendto(message, (PTP_MULTICAST, EVENT_PORT))
        except OSError as exc:
            log.debug("PTP: Delay_Req not sent: %s", exc)
            return
        self.counters["delay_req"] += 1
        if self.tx_timestamps:
            t3 = self._sent_time() or t3
        self._delay_reqs[seq] = t3
        if len(self._delay_reqs) > 16:
            self._delay_reqs.pop(next(iter(self._delay_reqs)))

    def _sent_time(self) -> int | None:
        """The kernel's send time of the Delay_Req just sent (from the socket's error queue)."""
        deadline = time.monotonic() + 0.002
        while True:
            try:
                _, ancillary, _, _ = self.event_sock.recvmsg(64, socket.CMSG_SPACE(48) * 2, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                if time.monotonic() > deadline:
                    self.counters["tx_timestamp_missing"] += 1
                    return None
                time.sleep(0)
                continue
            except OSError:
                return None
            return _kernel_time(ancillary)

    # -- reading -------------------------------------------------------------------------

    def offset_ns(self, local_ns: int) -> float | None:
        with self.lock:
            return self.estimator.offset_at(local_ns)


class PTPClock(TimelineClock):
    """The grandmaster's time, and a :class:`~streamlib.Clock` that ticks on it.

    ``PTPClock(fps=30, domain=0, interface="eth0")`` joins PTP domain ``domain`` on
    ``interface`` (``None``: the default multicast interface) and starts listening at
    once; ``wait_synced(timeout)`` blocks until it has locked. ``min_samples`` Syncs (and
    two path delays) are needed to lock; a Sync more than ``step_threshold`` seconds off
    the model (the grandmaster's time stepped, or a new grandmaster) resets and re-locks.

    Every ``PTPClock`` of a process on one domain and interface shares one listening
    thread and its sockets; ``close()`` (or ``with``) releases them.
    """

    def __init__(
        self,
        fps: float = 30.0,
        domain: int = 0,
        interface: str | None = None,
        *,
        min_samples: int = 4,
        step_threshold: float = 0.001,
    ) -> None:
        super().__init__(fps)
        if not (isinstance(domain, int) and 0 <= domain <= 255):
            raise ValueError(f"PTPClock: domain must be 0..255, got {domain!r}")
        self.domain = domain
        self.interface = interface
        self._slave = _PTPSlave.acquire(domain, interface, min_samples, step_threshold)
        self._closed = False

    # -- time ----------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True while locked to a master (cleared when the master goes silent or steps)."""
        return self._slave.locked.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until locked (or ``timeout`` seconds pass); return :attr:`synced`."""
        return self._slave.locked.wait(timeout)

    async def wait_synced_async(self, timeout: float | None = None) -> bool:
        """``wait_synced`` for a coroutine (polls, so the event loop keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.synced:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def now_ns(self) -> int:
        """The grandmaster's time in nanoseconds since the PTP epoch, on its timescale (TAI
        when it announces ``ptpTimescale``, else its arbitrary timescale). Raises
        :class:`PTPError` before the first lock."""
        local = time.clock_gettime_ns(time.CLOCK_REALTIME)
        offset = self._slave.offset_ns(local)
        if offset is None:
            raise PTPError(f"PTPClock(domain={self.domain}): not synchronised to a master yet (see wait_synced)")
        return local + round(offset)

    def now(self) -> float:
        """:meth:`now_ns` in seconds."""
        return self.now_ns() / 1e9

    def utc_ns(self) -> int:
        """UTC in nanoseconds: PTP (TAI) time minus ``currentUtcOffset`` when the master
        uses the PTP timescale (§7.2.3); an arbitrary timescale is returned as it is."""
        return self.now_ns() - self.utc_offset * 1_000_000_000

    @property
    def utc_offset(self) -> int:
        """Seconds from UTC to the master's timescale: ``currentUtcOffset`` for the PTP
        timescale (TAI), 0 for an arbitrary one (ptp4l on ``CLOCK_REALTIME`` announces that)."""
        master = self._slave.master
        return master.current_utc_offset if master is not None and master.ptp_timescale else 0

    @property
    def offset(self) -> float | None:
        """Seconds to add to this machine's ``CLOCK_REALTIME`` to get the grandmaster's time."""
        found = self._slave.offset_ns(time.clock_gettime_ns(time.CLOCK_REALTIME))
        return None if found is None else found / 1e9

    @property
    def path_delay(self) -> float | None:
        """The filtered mean path delay to the master, in seconds."""
        with self._slave.lock:
            delay = self._slave.estimator.path_delay
        return None if delay is None else delay / 1e9

    @property
    def grandmaster_id(self) -> str | None:
        """The selected master's grandmaster identity, as ptp4l prints it (``001122.fffe.334455``)."""
        master = self._slave.master
        return None if master is None else format_identity(master.grandmaster_identity)

    @property
    def master(self) -> AnnounceData | None:
        """What the selected master last announced."""
        return self._slave.master

    @property
    def clock_id(self) -> str:  # type: ignore[override]
        """``ptp:<grandmaster identity>:<domain>``: streams stamped with it share one time."""
        return f"ptp:{self.grandmaster_id or 'unsynced'}:{self.domain}"

    @property
    def lock_time(self) -> float | None:
        """Seconds from the start of listening to the (latest) lock."""
        slave = self._slave
        return None if slave.locked_at is None else slave.locked_at - slave.started_at

    def stats(self) -> dict[str, Any]:
        """Message counters, the selected master and the estimate (for dashboards and logs)."""
        slave = self._slave
        return {
            "domain": self.domain,
            "synced": self.synced,
            "grandmaster": self.grandmaster_id,
            "offset_s": self.offset,
            "path_delay_s": self.path_delay,
            "lock_time_s": self.lock_time,
            "foreign_masters": len(slave.foreign),
            **slave.counters,
        }

    # -- ticks (TimelineClock) -------------------------------------------------------------

    async def ready(self) -> None:
        """Ticks wait for the lock: a frame stamped before it would carry a wrong time."""
        if not self.synced:
            await self.wait_synced_async()

    def still_ready(self) -> bool:
        return self.synced

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop using the shared listener (the last user's close stops its thread)."""
        if not self._closed:
            self._closed = True
            self._slave.release()

    def __enter__(self) -> PTPClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = f"locked to {self.grandmaster_id}" if self.synced else "not synced"
        return f"<PTPClock domain={self.domain} {self.fps:g} fps {state}>"
