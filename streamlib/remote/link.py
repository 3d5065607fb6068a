"""The data plane: one TCP connection per link, carrying :mod:`.wire` records.

A *link* joins one output to one input in another runtime. Whichever side connects, the
runtime that hosts the sending output runs a :class:`Sender` and the one that hosts the
receiving input runs a :class:`Receiver`:

``push``
    the connecting side sends: ``local_output >> stub.inputs[...]``, and a runtime asked to
    connect one of its outputs to another runtime's input (``remote_a >> remote_b``).
``pull``
    the connecting side receives: ``stub.outputs[...] >> local_input``.

**The receiving input's semantics hold across the link.** The sender queues messages in a
mailbox with the receiving input's own ``maxsize`` and ``overflow`` (it learns them in the
``WELCOME``) and sends only while it has *credit*: the receiver grants one credit per message
it has put into the input. So a dropping input drops (newest or oldest, as declared) at the
sender while the link or the consumer is slow, and every such drop is reported with the next
frame and added to the input's own ``dropped``; an input with ``overflow="block"`` holds back
credit while it is full, the sender's queue fills, and the producer's ``send`` waits: end-to-end
backpressure.

**Liveness.** The connecting side pings every :data:`PING_INTERVAL` seconds; a side that hears
nothing for :data:`DEAD_AFTER` seconds drops the connection, and the connecting side reconnects
(with backoff) for as long as the link exists. End of stream (``END``) and a deliberate close
(``BYE``) are control records: never dropped, and never confused with a lost connection.

**Shared memory.** When both runtimes are on one host (same boot id and network namespace), a
payload of at least :data:`SHM_THRESHOLD` bytes is copied once into a shared-memory slot of the
sender's (:class:`streamlib.dispatch.shared_memory.Segment`) and the record carries only the
slot's name; the receiver maps it and hands out a zero-copy array, and says when the last view
of it died (``released`` in its next record), so the slot can be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import logging
import mmap
import os
import secrets
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamlib import Actor, StreamInput, StreamOutput, VideoFrame
from streamlib.dispatch.shared_memory import Segment, new_prefix
from streamlib.mailbox import EMPTY, Mailbox

from . import wire
from .control import client_for, sign, verify
from .errors import ActorUnavailable, AuthenticationFailed
from .wire import Kind, NotSerializable, WireError

__all__ = [
    "DEAD_AFTER",
    "PING_INTERVAL",
    "SHM_THRESHOLD",
    "DataServer",
    "LinkStats",
    "PortOwner",
    "PullLink",
    "PushLink",
    "SendableMailbox",
    "host_id",
]

log = logging.getLogger("streamlib.remote")

PING_INTERVAL = 0.25
DEAD_AFTER = 1.5
HANDSHAKE_TIMEOUT = 5.0
SHM_THRESHOLD = 64 * 1024
MAX_SHM_SLOTS = 8
PULL_GRACE = 10.0
"""Seconds a runtime keeps a link's end (a pulled output's queue, a pushed input's connection)
after the connection dropped, for the reconnection."""


def host_id() -> str:
    """What two runtimes compare to know they share memory: boot id, network namespace, host."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        netns = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return f"{socket.gethostname()}:{secrets.token_hex(4)}"  # unknown: never treated as shared
    return f"{boot}:{netns}:{socket.gethostname()}"


@dataclass
class LinkStats:
    """Counters of one link (``stats()['links']`` of a stub or a runtime)."""

    direction: str
    peer: str
    state: str = "connecting"
    frames: int = 0
    bytes: int = 0
    dropped: int = 0
    """Messages the sending side's queue dropped (the receiving input's policy); they are also
    added to that input's ``dropped``."""
    reconnects: int = 0
    latency_ms: float | None = None
    """Smoothed time from a frame leaving to its credit coming back (delivery round trip)."""
    shm_frames: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SendableMailbox(Mailbox):
    """A mailbox that refuses, in the sender's own ``send``, a message that could never cross
    the link (a GPU frame), so the error names the sending actor instead of vanishing."""

    __slots__ = ("port_path",)

    def __init__(self, maxsize: int, overflow: Any, port_path: str) -> None:
        super().__init__(maxsize, overflow)
        self.port_path = port_path

    def put_nowait(self, item: Any) -> bool | None:
        try:
            wire.check_sendable(item)
        except NotSerializable as exc:
            raise NotSerializable(f"{self.port_path}: {exc}") from None
        return super().put_nowait(item)


# -- records on a stream ---------------------------------------------------------------------


async def read_record(
    reader: asyncio.StreamReader, max_payload: int
) -> tuple[Kind, dict[str, Any], memoryview | bytes]:
    """One record: its kind, its meta and its payload (a view, not a copy, of what was read)."""
    header = await reader.readexactly(wire.HEADER.size)
    kind, meta_len, payload_len = wire.parse_header(header, max_payload)
    if not meta_len + payload_len:
        return kind, {}, b""
    body = await reader.readexactly(meta_len + payload_len)
    meta = wire.parse_meta(body[:meta_len]) if meta_len else {}
    return kind, meta, memoryview(body)[meta_len:] if payload_len else b""


_WRITE_HIGH_WATER = 1 << 20
_BATCH_BYTES = 256 << 10
"""A sender writes records queued back to back in one go, up to this many bytes."""


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait for the socket only when a lot is buffered (a drain per small record costs more than it saves)."""
    transport = writer.transport
    if transport.is_closing() or transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
        await writer.drain()


def write_record(
    writer: asyncio.StreamWriter, kind: Kind, meta: dict[str, Any] | None = None, payload: list[Any] | None = None
) -> int:
    parts = wire.pack_record(kind, meta, payload)
    writer.writelines(parts)
    return sum(memoryview(p).nbytes for p in parts)


def _reap(*tasks: asyncio.Future[Any]) -> None:
    """Cancel what still runs and retrieve what failed (no "exception was never retrieved")."""
    for task in tasks:
        if task.done():
            if not task.cancelled():
                task.exception()
        else:
            task.cancel()  # it may still end with an exception of its own: retrieve that too
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _smooth(old: float | None, sample: float) -> float:
    return sample if old is None else old * 0.9 + sample * 0.1


# -- shared memory -----------------------------------------------------------------------------


class _ShmPool:
    """The sender's slots for one connection (a reconnection starts a new pool)."""

    def __init__(self) -> None:
        self.prefix = new_prefix()
        self.free: list[tuple[int, Segment]] = []
        self.busy: dict[int, Segment] = {}
        self.names: list[str] = []
        self._next = 0

    def take(self, nbytes: int) -> tuple[int, Segment] | None:
        for i, (slot_id, seg) in enumerate(self.free):
            if seg.size >= nbytes:
                del self.free[i]
                self.busy[slot_id] = seg
                return slot_id, seg
        if len(self.busy) + len(self.free) >= MAX_SHM_SLOTS:
            if not self.free:
                return None
            self.free.pop(0)  # too small: drop it for a bigger one
        capacity = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        slot_id = self._next
        self._next += 1
        name = f"{self.prefix}{slot_id:x}"
        seg = Segment(name, capacity, create=True)
        self.names.append(name)
        self.busy[slot_id] = seg
        return slot_id, seg

    def release(self, ids: Any) -> None:
        if not isinstance(ids, list):
            return
        for slot_id in ids:
            seg = self.busy.pop(slot_id, None) if type(slot_id) is int else None
            if seg is not None:
                self.free.append((slot_id, seg))

    def close(self) -> None:
        for name in self.names:
            Segment.unlink(name)  # names the receiver never mapped; mapped memory lives on with its views
        self.free.clear()
        self.busy.clear()


class _ShmViews:
    """The receiver's mappings of one sender's slots, and the slots whose views died."""

    def __init__(self) -> None:
        self.mapped: dict[str, Segment] = {}
        self.released: deque[int] = deque()

    def view(self, spec: Any) -> np.ndarray[Any, Any]:
        if not (isinstance(spec, list) and len(spec) == 4 and isinstance(spec[1], str)):
            raise WireError("bad shm descriptor")
        slot_id, name, capacity, nbytes = spec
        if not (type(slot_id) is int and type(capacity) is int and type(nbytes) is int and 0 <= nbytes <= capacity):
            raise WireError("bad shm descriptor")
        if not name.isascii() or "/" in name or len(name) > 64:
            raise WireError("bad shm name")
        seg = self.mapped.get(name)
        if seg is None:
            try:
                seg = Segment(name, capacity, create=False)
            except OSError as exc:
                raise WireError(f"cannot map shared memory {name!r}: {exc}") from None
            Segment.unlink(name)  # mapped on both sides now: no name needs to outlive them
            self.mapped[name] = seg
        if seg.size < nbytes:
            raise WireError("shm slot smaller than its payload")
        array: np.ndarray[Any, Any] = np.frombuffer(seg.mmap, np.uint8, nbytes)
        weakref.finalize(array, self.released.append, slot_id).atexit = False
        return array

    def take_released(self) -> list[int]:
        done = self.released
        return [done.popleft() for _ in range(len(done))]


class H264:
    """Optional H.264 for VideoFrames on a slow link (PyAV's libx264, low-latency settings):
    one encoder per sending connection, one decoder per receiving one. Lossy; RGB frames of even
    size only (others, and RGBA, cross raw). A reconnection starts a fresh stream (a keyframe)."""

    def __init__(self) -> None:
        import av  # the [media] extra; checked when a link asks for compression

        self._av = av
        self.encoder: Any = None
        self.decoder: Any = None
        self.size: tuple[int, int] | None = None
        self.pts = 0

    @staticmethod
    def available() -> bool:
        try:
            import av  # noqa: F401
        except ImportError:
            return False
        return True

    def encode(self, frame: VideoFrame, meta: dict[str, Any]) -> list[Any] | None:
        data = frame.data
        if meta.get("format") != "rgb24" or data.shape[0] % 2 or data.shape[1] % 2:
            return None
        av = self._av
        size = (int(data.shape[1]), int(data.shape[0]))
        if self.encoder is None or self.size != size:
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height = size
            encoder.pix_fmt = "yuv420p"
            encoder.time_base = fractions.Fraction(1, 90000)
            encoder.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "60", "bf": "0"}
            self.encoder, self.size, self.pts = encoder, size, 0
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format="rgb24").reformat(format="yuv420p")
        picture.pts = self.pts
        self.pts += 1
        packets = self.encoder.encode(picture)
        meta["format"] = "h264"
        meta["metadata"] = {"keyframe": any(p.is_keyframe for p in packets)}
        return [b"".join(bytes(p) for p in packets)]

    def decode(self, meta: dict[str, Any], payload: memoryview | bytes) -> VideoFrame | None:
        av = self._av
        if self.decoder is None:
            self.decoder = av.CodecContext.create("h264", "r")
        try:
            pictures = self.decoder.decode(av.Packet(bytes(payload)))
        except Exception as exc:  # PyAV's errors for a corrupt stream
            raise WireError(f"undecodable H.264: {exc}") from None
        if not pictures:
            return None  # the decoder wants more (it never does with these settings)
        pixels = pictures[-1].to_ndarray(format="rgb24")
        timestamp, number = meta.get("timestamp", 0.0), meta.get("frame_number", 0)
        clock_id, rate = meta.get("clock_id"), meta.get("clock_rate")
        if not (isinstance(timestamp, (int, float)) and type(number) is int):
            raise WireError("bad clock metadata on an H.264 frame")
        return VideoFrame(
            pixels,
            float(timestamp),
            number,
            clock_id if isinstance(clock_id, str) else None,
            float(rate) if isinstance(rate, (int, float)) else None,
        )


# -- the sending side -------------------------------------------------------------------------


class _Connection:
    """One open data connection: its streams, and when we last heard from the peer."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shm: bool, h264: bool = False
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.last_heard = time.monotonic()
        self.pool = _ShmPool() if shm else None
        self.views = _ShmViews()
        self.credit = 0
        self.credit_event = asyncio.Event()
        self.sent_at: deque[float] = deque()
        self.ping_sent: float | None = None
        self.h264 = H264() if h264 else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        if self.pool is not None:
            self.pool.close()


class Sender:
    """Drains ``port``'s mailbox into a connection, one message per credit."""

    def __init__(self, port: StreamInput, stats: LinkStats) -> None:
        self.port = port
        self.stats = stats
        self.reported_drops = 0
        self.pending: Any = EMPTY  # a message taken but not yet sent (kept across a reconnection)

    async def pump(self, conn: _Connection) -> str:
        """Send until the stream ends (``"end"``), the port closes (``"bye"``) or the connection
        breaks (raises). Records queued back to back go out in one write."""
        mailbox = self.port.mailbox
        writer = conn.writer
        batch: list[Any] = []
        batched = 0

        def write_batch() -> None:
            nonlocal batched
            if batch:
                writer.writelines(batch)
                batch.clear()
                batched = 0

        while True:
            if conn.credit <= 0:
                write_batch()
                await _flush(writer)
                while conn.credit <= 0:
                    conn.credit_event.clear()
                    await conn.credit_event.wait()
            msg = self.pending
            if msg is EMPTY:
                msg = mailbox.get_nowait()
            if msg is EMPTY:
                write_batch()
                if self.port.ended:
                    write_record(writer, Kind.END, {"dropped": self._new_drops()})
                    await writer.drain()
                    return "end"
                if mailbox.closed:
                    write_record(writer, Kind.BYE)
                    await writer.drain()
                    return "bye"
                await _flush(writer)
                await mailbox.wait_nonempty()
                continue
            self.pending = msg
            try:
                meta, buffers = wire.encode_message(msg)
            except NotSerializable as exc:
                self.pending = EMPTY
                self.stats.errors += 1
                log.error(
                    "%s: a %s cannot cross the link and was dropped: %s", self.port.path, type(msg).__qualname__, exc
                )
                continue
            meta["dropped"] = self._new_drops()
            if conn.h264 is not None and type(msg) is VideoFrame:
                buffers = conn.h264.encode(msg, meta) or buffers
            if conn.pool is not None and len(buffers) == 1 and buffers[0].nbytes >= SHM_THRESHOLD:
                buffers = self._to_shm(conn.pool, meta, buffers[0])
            parts = wire.pack_record(Kind.FRAME, meta, buffers)
            size = sum(memoryview(p).nbytes for p in parts)
            batch.extend(parts)
            batched += size
            conn.credit -= 1
            conn.sent_at.append(time.perf_counter())
            self.pending = EMPTY
            self.stats.frames += 1
            self.stats.bytes += size
            if batched >= _BATCH_BYTES:
                write_batch()
                await _flush(writer)

    def _to_shm(self, pool: _ShmPool, meta: dict[str, Any], buffer: memoryview) -> list[Any]:
        taken = pool.take(buffer.nbytes)
        if taken is None:
            return [buffer]  # every slot is still viewed by the receiver: send inline
        slot_id, seg = taken
        seg.mmap[: buffer.nbytes] = buffer
        meta["shm"] = [slot_id, seg.name, seg.size, buffer.nbytes]
        self.stats.shm_frames += 1
        return []

    def _new_drops(self) -> int:
        total = self.port.mailbox.dropped
        new = total - self.reported_drops
        self.reported_drops = total
        self.stats.dropped += new
        return new

    def on_credit(self, conn: _Connection, meta: dict[str, Any]) -> None:
        n = meta.get("n", 0)
        if type(n) is not int or n < 0 or n > 1 << 20:
            raise WireError(f"bad credit {n!r}")
        conn.credit += n
        for _ in range(min(n, len(conn.sent_at))):
            rtt = (time.perf_counter() - conn.sent_at.popleft()) * 1e3
            self.stats.latency_ms = _smooth(self.stats.latency_ms, rtt)
        if conn.pool is not None:
            conn.pool.release(meta.get("released"))
        conn.credit_event.set()


def count_remote_drops(mailbox: Mailbox, n: int) -> None:
    """Messages the sending side dropped on this input's behalf (its policy, applied there): they
    were offered to the input and dropped, so they count in both ``delivered`` and ``dropped``,
    and the mailbox's books still balance."""
    mailbox.delivered += n
    mailbox.dropped += n


async def _deliver(output: StreamOutput, target: StreamInput, msg: Any, conn: _Connection, dropped: Any) -> None:
    """Put a received message into the input through its mirror output (its own policy)."""
    if type(dropped) is int and dropped > 0:
        count_remote_drops(target.mailbox, dropped)
    msg_type = target.msg_type
    if msg_type is not object and not isinstance(msg, msg_type):
        target.mailbox.delivered += 1  # offered, and refused for its type: discarded, and said so
        target.mailbox.discarded += 1
        log.warning(
            "%s: dropped a %s from a link (it takes %s)", target.path, type(msg).__qualname__, msg_type.__qualname__
        )
        return
    await output.send(msg)


def _decode_frame(conn: _Connection, meta: dict[str, Any], payload: memoryview | bytes) -> Any:
    if meta.get("format") == "h264":
        if conn.h264 is None:
            raise WireError("an H.264 frame on a link that did not agree to compression")
        return conn.h264.decode(meta, payload)
    shm = meta.get("shm")
    if shm is not None:
        return wire.decode_message(meta, conn.views.view(shm).data)
    return wire.decode_message(meta, memoryview(payload))


async def _receive(
    conn: _Connection,
    max_payload: int,
    window: int,
    stats: LinkStats,
    deliver: Callable[[Any, dict[str, Any]], Any],
    answer_pings: bool,
) -> str:
    """The receiving side of a connection: read records while delivering (delivery may wait on
    a full blocking input for as long as it takes; reading goes on, so pings are answered and
    the connection is not taken for dead). Returns ``"end"`` or ``"bye"``; raises when the
    connection breaks or the peer breaks the protocol."""
    queue: asyncio.Queue[tuple[Any, dict[str, Any]] | None] = asyncio.Queue()
    writer = conn.writer

    async def read() -> str:
        while True:
            kind, meta, payload = await asyncio.wait_for(read_record(conn.reader, max_payload), DEAD_AFTER * 2)
            conn.last_heard = time.monotonic()
            if kind is Kind.FRAME:
                if queue.qsize() > window:
                    raise WireError(f"the sender exceeded its credit of {window}")
                msg = _decode_frame(conn, meta, payload)
                stats.bytes += len(payload)
                if meta.get("shm") is not None:
                    stats.shm_frames += 1
                queue.put_nowait((msg, meta))
                del msg
            elif kind is Kind.PING and answer_pings:
                write_record(writer, Kind.PONG, {"released": conn.views.take_released()})
            elif kind is Kind.PONG and not answer_pings:
                if conn.ping_sent is not None:
                    stats.latency_ms = _smooth(stats.latency_ms, (time.perf_counter() - conn.ping_sent) * 1e3)
                    conn.ping_sent = None
            elif kind is Kind.END:
                queue.put_nowait((_END, meta))
                return "end"
            elif kind is Kind.BYE:
                queue.put_nowait(None)
                return "bye"
            else:
                raise WireError(f"unexpected {kind.name} on a link")

    async def work() -> str:
        owed = 0
        while True:
            item = await queue.get()
            if item is None:
                return "bye"
            msg, meta = item
            if msg is _END:  # the sender's last drops come with it
                await deliver(None, {"dropped": meta.get("dropped"), "end": True})
                return "end"
            if msg is not None or meta.get("format") != "h264":
                await deliver(msg, meta)
            del msg, item
            owed += 1
            if queue.empty() or owed >= window:  # under load, one credit record for several messages
                write_record(writer, Kind.CREDIT, {"n": owed, "released": conn.views.take_released()})
                owed = 0
                await _flush(writer)

    reader, worker = asyncio.ensure_future(read()), asyncio.ensure_future(work())
    try:
        done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a broken connection or a protocol error
        return await worker
    finally:
        _reap(reader, worker)


_END = object()


# -- the accepting side: a runtime's data port ---------------------------------------------------


class LinkHost(Protocol):
    """What a :class:`DataServer` needs from the runtime it serves."""

    name: str
    token: str | None
    counters: dict[str, int]
    max_payload: int
    allow_shm: bool

    def lookup(self, instance_id: str) -> Actor | None: ...


class PortOwner:
    """The owner of a link's ports in this runtime (a mirror output, a pulled output's queue):
    names them after the peer, for errors and views, and needs nothing from the run loop."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _wiring_changed(self) -> None:
        pass

    def _reader_should_stop(self) -> bool:
        return False


class _PullState:
    """A pulled output's queue in the sending runtime, kept across reconnections of its link."""

    def __init__(self, output: StreamOutput, proxy: StreamInput, stats: LinkStats) -> None:
        self.output = output
        self.proxy = proxy
        self.sender = Sender(proxy, stats)
        self.expiry: asyncio.TimerHandle | None = None
        self.conn: _Connection | None = None

    def detach(self) -> None:
        self.output.disconnect(self.proxy)
        self.proxy.mailbox.close()


class DataServer:
    """A runtime's data port: accepts links from other runtimes' senders and receivers."""

    def __init__(self, host: LinkHost, host_id_value: str) -> None:
        self.host = host
        self.host_id = host_id_value
        self.mirrors: dict[str, tuple[StreamOutput, StreamInput]] = {}
        self.pulls: dict[str, _PullState] = {}
        self.links: dict[str, LinkStats] = {}
        self.sessions: dict[str, int] = {}
        self.server: asyncio.AbstractServer | None = None

    async def start(self, bind: str, port: int) -> int:
        self.server = await asyncio.start_server(self._accept, bind, port, limit=1 << 20)
        sock = self.server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for state in list(self.pulls.values()):
            state.detach()
            if state.conn is not None:
                state.conn.close()
        self.pulls.clear()

    def _count(self, key: str) -> None:
        counters = self.host.counters
        counters[key] = counters.get(key, 0) + 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nonce = secrets.token_hex(16)
        try:
            write_record(
                writer,
                Kind.CHALLENGE,
                {"nonce": nonce, "node": self.host.name, "host_id": self.host_id, "token": bool(self.host.token)},
            )
            kind, hello, _ = await asyncio.wait_for(read_record(reader, 0), HANDSHAKE_TIMEOUT)
            if kind is not Kind.HELLO:
                raise WireError(f"expected HELLO, got {kind.name}")
            if not verify(self.host.token, nonce, "data", hello.get("mac")):
                self._count("auth_rejected")
                log.warning("data connection from %s refused: wrong or missing token", peer)
                write_record(writer, Kind.REFUSED, {"reason": "wrong or missing token"})
                await writer.drain()
                writer.close()
                return
            op = hello.get("op")
            if op == "push":
                await self._serve_push(reader, writer, hello, peer)
            elif op == "pull":
                await self._serve_pull(reader, writer, hello, peer)
            else:
                raise WireError(f"unknown op {op!r}")
        except WireError as exc:
            self._count("malformed")
            log.warning("data connection from %s closed: malformed input: %s", peer, exc)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.debug("data connection from %s ended: %r", peer, exc)
        except LookupError as exc:
            with contextlib.suppress(Exception):
                write_record(writer, Kind.REFUSED, {"reason": str(exc)})
                await writer.drain()
        except Exception as exc:  # never let a peer's input end the runtime; say what happened
            self._count("malformed")
            log.exception("data connection from %s closed: %s", peer, exc)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _port(self, hello: dict[str, Any], kind: str) -> tuple[Actor, Any]:
        target, port_name = hello.get("target"), hello.get(kind)
        if not isinstance(target, str) or not isinstance(port_name, str):
            raise WireError(f"HELLO needs 'target' and '{kind}' strings")
        actor = self.host.lookup(target)
        if actor is None:
            raise LookupError(f"no actor {target!r} on runtime {self.host.name}")
        ports = actor.inputs if kind == "input" else actor.outputs
        port = ports.get(port_name)
        if port is None:
            raise LookupError(f"{actor.path} has no {kind} {port_name!r} (it has {sorted(ports)})")
        return actor, port

    def _link_id(self, hello: dict[str, Any]) -> str:
        link = hello.get("link")
        if not isinstance(link, str) or not 0 < len(link) <= 64:
            raise WireError("HELLO needs a 'link' id")
        return link

    async def _serve_push(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any], peer: str
    ) -> None:
        """A peer sends into one of our inputs through a mirror output (kept across reconnections)."""
        link = self._link_id(hello)
        _, target = self._port(hello, "input")
        mirror = self.mirrors.get(link)
        if mirror is None or mirror[1] is not target:
            output = StreamOutput("link", object)
            output.owner = PortOwner(f"{hello.get('source') or peer}")  # type: ignore[assignment]
            output.connect(target)
            mirror = self.mirrors[link] = (output, target)
        output = mirror[0]
        stats = self.links.setdefault(link, LinkStats("in", str(hello.get("source") or peer)))
        stats.state = "up"
        shm = bool(hello.get("shm")) and self.host.allow_shm and hello.get("host_id") == self.host_id
        mailbox = target.mailbox
        h264 = hello.get("compress") == "h264" and H264.available()
        write_record(
            writer,
            Kind.WELCOME,
            {
                "maxsize": mailbox.maxsize,
                "overflow": mailbox.overflow,
                "window": mailbox.maxsize,
                "shm": shm,
                "compress": "h264" if h264 else None,
            },
        )
        await writer.drain()
        conn = _Connection(reader, writer, False, h264)

        async def deliver(msg: Any, meta: dict[str, Any]) -> None:
            if meta.get("end"):
                dropped = meta.get("dropped")
                if type(dropped) is int and dropped > 0:
                    count_remote_drops(target.mailbox, dropped)
                return
            stats.frames += 1
            await _deliver(output, target, msg, conn, meta.get("dropped"))

        self.sessions[link] = self.sessions.get(link, 0) + 1
        session = self.sessions[link]
        try:
            outcome = await _receive(conn, self.host.max_payload, mailbox.maxsize, stats, deliver, answer_pings=True)
        finally:
            if stats.state == "up":
                stats.state = "down"
                # Lost, not closed: keep the connection to the input for the sender's reconnection,
                # and let it go if none comes (a sender that vanished for good).
                loop = asyncio.get_running_loop()
                loop.call_later(PULL_GRACE, self._forget_mirror, link, session)
        if outcome == "end":
            output.end_of_stream()
            self.mirrors.pop(link, None)
            stats.state = "ended"
        elif outcome == "bye":
            output.disconnect(target)
            self.mirrors.pop(link, None)
            stats.state = "closed"

    def _forget_mirror(self, link: str, session: int) -> None:
        if self.sessions.get(link) != session or self.links.get(link, LinkStats("", "")).state != "down":
            return  # it reconnected meanwhile
        mirror = self.mirrors.pop(link, None)
        if mirror is not None:
            mirror[0].disconnect(mirror[1])

    async def _serve_pull(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any], peer: str
    ) -> None:
        """A peer receives from one of our outputs: a queue with its input's policy, then a Sender."""
        link = self._link_id(hello)
        _, output = self._port(hello, "output")
        maxsize, overflow = hello.get("maxsize"), hello.get("overflow")
        if (
            type(maxsize) is not int
            or not 0 < maxsize <= 1 << 16
            or overflow not in ("drop_oldest", "drop_newest", "block")
        ):
            raise WireError("pull needs maxsize (1..65536) and overflow")
        state = self.pulls.get(link)
        if state is not None and (state.output is not output or state.proxy.mailbox.closed):
            state.detach()
            state = None
        if state is None:
            proxy = StreamInput("link", object, maxsize=maxsize, overflow=overflow)
            proxy.owner = PortOwner(str(hello.get("source") or peer))  # type: ignore[assignment]
            stats = self.links.setdefault(link, LinkStats("out", str(hello.get("source") or peer)))
            state = self.pulls[link] = _PullState(output, proxy, stats)
            output.connect(proxy)
        if state.expiry is not None:
            state.expiry.cancel()
            state.expiry = None
        if state.conn is not None:
            state.conn.close()
        shm = bool(hello.get("shm")) and self.host.allow_shm and hello.get("host_id") == self.host_id
        h264 = hello.get("compress") == "h264" and H264.available()
        conn = state.conn = _Connection(reader, writer, shm and not h264, h264)
        sender = state.sender
        sender.stats.state = "up"
        write_record(
            writer,
            Kind.WELCOME,
            {
                "maxsize": maxsize,
                "overflow": overflow,
                "shm": shm and not h264,
                "type": wire.describe_type(output.msg_type),
                "compress": "h264" if h264 else None,
            },
        )
        await writer.drain()
        pump = asyncio.ensure_future(sender.pump(conn))
        listen = asyncio.ensure_future(self._listen_pull(conn, sender))
        try:
            done, _ = await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            _reap(pump, listen)
            if state.conn is conn:
                state.conn = None
            conn.close()
            closed = sender.stats.state in ("closed", "ended") or (pump.done() and not pump.cancelled())
            if closed or self.pulls.get(link) is not state:
                state.detach()
                self.pulls.pop(link, None)
            else:
                sender.stats.state = "down"
                loop = asyncio.get_running_loop()
                state.expiry = loop.call_later(PULL_GRACE, self._expire, link, state)

    def _expire(self, link: str, state: _PullState) -> None:
        if self.pulls.get(link) is state and state.conn is None:
            state.detach()
            del self.pulls[link]

    async def _listen_pull(self, conn: _Connection, sender: Sender) -> None:
        while True:
            kind, meta, _ = await asyncio.wait_for(read_record(conn.reader, 0), DEAD_AFTER * 2)
            conn.last_heard = time.monotonic()
            if kind is Kind.CREDIT:
                sender.on_credit(conn, meta)
            elif kind is Kind.PING:
                if conn.pool is not None:
                    conn.pool.release(meta.get("released"))
                write_record(conn.writer, Kind.PONG)
            elif kind is Kind.BYE:
                sender.stats.state = "closed"
                return
            else:
                raise WireError(f"unexpected {kind.name} on a pull link")


# -- the connecting side -------------------------------------------------------------------------


async def _open(
    address: str, token: str | None, hello: dict[str, Any], max_payload: int
) -> tuple[_Connection, dict[str, Any]]:
    """Connect to a runtime's data port, answer its challenge, and return the open connection
    and its WELCOME. The data port comes from the control connection's handshake."""
    client = client_for(address, token)
    await client.ensure_connected(2.0)
    data_port = client.hello.get("data_port")
    if type(data_port) is not int:
        raise ActorUnavailable(f"runtime {address} announced no data port")
    host = address.rpartition(":")[0].strip("[]")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, data_port, limit=1 << 20), 2.0)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        kind, challenge, _ = await asyncio.wait_for(read_record(reader, 0), HANDSHAKE_TIMEOUT)
        if kind is not Kind.CHALLENGE:
            raise WireError(f"expected CHALLENGE, got {kind.name}")
        want_shm = bool(hello.pop("shm", False)) and challenge.get("host_id") == _HOST_ID
        write_record(
            writer,
            Kind.HELLO,
            {
                **hello,
                "mac": sign(client.token, str(challenge.get("nonce")), "data"),
                "host_id": _HOST_ID,
                "shm": want_shm,
            },
        )
        await writer.drain()
        kind, welcome, _ = await asyncio.wait_for(read_record(reader, max_payload), HANDSHAKE_TIMEOUT)
        if kind is Kind.REFUSED:
            reason = str(welcome.get("reason"))
            if "token" in reason:
                raise AuthenticationFailed(f"runtime {address} refused the data link: {reason}")
            raise LookupError(f"runtime {address} refused the data link: {reason}")
        if kind is not Kind.WELCOME:
            raise WireError(f"expected WELCOME, got {kind.name}")
    except BaseException:
        writer.close()
        raise
    h264 = welcome.get("compress") == "h264"
    if h264 and hello.get("compress") != "h264":
        writer.close()
        raise WireError("the runtime offered compression nobody asked for")
    return _Connection(reader, writer, bool(welcome.get("shm")) and not h264, h264), welcome


_HOST_ID = host_id()


class _Link:
    """A link's life on the connecting side: connect, run, and reconnect until it is closed."""

    op = ""

    def __init__(
        self,
        address: str,
        token: str | None,
        target: str,
        port_name: str,
        source: str,
        max_payload: int = wire.MAX_PAYLOAD,
        shm: bool = True,
        compress: str | None = None,
    ) -> None:
        if compress not in (None, "h264"):
            raise ValueError(f"compress must be None or 'h264', got {compress!r}")
        if compress and not H264.available():
            raise ImportError("compress='h264' needs PyAV: pip install 'streamlib[media]'")
        self.compress = compress
        self.address = address
        self.token = token
        self.target = target
        self.port_name = port_name
        self.link_id = secrets.token_hex(8)
        self.max_payload = max_payload
        self.shm = shm
        self.source = source
        self.stats = LinkStats("out" if self.op == "push" else "in", f"actor://{address}/{target}")
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def hello(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "target": self.target,
            "link": self.link_id,
            "shm": self.shm and not self.compress,
            "source": self.source,
            "compress": self.compress,
        }

    async def _run(self) -> None:
        delay = 0.05
        first = True
        while not self.closed:
            try:
                conn, welcome = await _open(self.address, self.token, self.hello(), self.max_payload)
            except (TimeoutError, ActorUnavailable, OSError, WireError, asyncio.IncompleteReadError) as exc:
                self.stats.state = "down"
                log.debug("link to %s: %r; retrying", self.stats.peer, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            except (AuthenticationFailed, LookupError) as exc:
                self.stats.state = "refused"
                log.error("link to %s refused: %s", self.stats.peer, exc)
                await asyncio.sleep(1.0)  # the actor may come back (a restart): keep trying, slowly
                continue
            if not first:
                self.stats.reconnects += 1
            first = False
            delay = 0.05
            self.stats.state = "up"
            try:
                outcome = await self._session(conn, welcome)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, WireError, ConnectionError) as exc:
                self.stats.state = "down"
                log.info("link to %s lost (%s); reconnecting", self.stats.peer, type(exc).__name__)
                continue
            finally:
                conn.close()
            if outcome in ("end", "bye"):
                self.stats.state = "ended" if outcome == "end" else "closed"
                return

    async def _session(self, conn: _Connection, welcome: dict[str, Any]) -> str:
        raise NotImplementedError

    async def _pinger(self, conn: _Connection, released: Callable[[], list[int]] | None = None) -> None:
        """Ping while connected; fail the session when the peer has been silent too long."""
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if time.monotonic() - conn.last_heard > DEAD_AFTER:
                raise ConnectionError(f"no answer from {self.stats.peer} for {DEAD_AFTER:g} s")
            conn.ping_sent = time.perf_counter()
            write_record(conn.writer, Kind.PING, {"released": released() if released is not None else []})

    async def close(self) -> None:
        """Stop the link for good (a ``BYE`` is sent by the sender when its port closes)."""
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class PushLink(_Link):
    """Sends what reaches ``port`` (a local queue shaped like the remote input) to that input."""

    op = "push"

    def __init__(
        self, port: StreamInput, address: str, token: str | None, target: str, input_name: str, source: str, **kw: Any
    ) -> None:
        super().__init__(address, token, target, input_name, source, **kw)
        self.port = port
        self.sender = Sender(port, self.stats)

    def hello(self) -> dict[str, Any]:
        return {**super().hello(), "input": self.port_name}

    async def _session(self, conn: _Connection, welcome: dict[str, Any]) -> str:
        window = welcome.get("window")
        conn.credit = window if type(window) is int and 0 < window <= 1 << 16 else 1
        conn.credit_event.set()
        pump = asyncio.ensure_future(self.sender.pump(conn))
        listen = asyncio.ensure_future(self._listen(conn))
        ping = asyncio.ensure_future(self._pinger(conn))
        try:
            done, _ = await asyncio.wait({pump, listen, ping}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                return str(pump.result())
            for task in done:
                task.result()
            return "lost"
        finally:
            _reap(pump, listen, ping)

    async def _listen(self, conn: _Connection) -> None:
        while True:
            kind, meta, _ = await read_record(conn.reader, 0)
            conn.last_heard = time.monotonic()
            if kind is Kind.CREDIT:
                self.sender.on_credit(conn, meta)
            elif kind is Kind.PONG:
                if conn.pool is not None:
                    conn.pool.release(meta.get("released"))
            else:
                raise WireError(f"unexpected {kind.name} on a push link")


class PullLink(_Link):
    """Receives what a remote output sends, and sends it on through ``output`` (a local proxy
    whose subscribers are the local inputs; their policies apply as they would locally)."""

    op = "pull"

    def __init__(
        self,
        output: StreamOutput,
        address: str,
        token: str | None,
        target: str,
        output_name: str,
        maxsize: int,
        overflow: str,
        source: str,
        **kw: Any,
    ) -> None:
        super().__init__(address, token, target, output_name, source, **kw)
        self.output = output
        self.maxsize = maxsize
        self.overflow = overflow

    def hello(self) -> dict[str, Any]:
        return {**super().hello(), "output": self.port_name, "maxsize": self.maxsize, "overflow": self.overflow}

    async def _session(self, conn: _Connection, welcome: dict[str, Any]) -> str:
        write_record(conn.writer, Kind.CREDIT, {"n": self.maxsize})
        stats = self.stats

        async def deliver(msg: Any, meta: dict[str, Any]) -> None:
            dropped = meta.get("dropped")
            if type(dropped) is int and dropped > 0:
                stats.dropped += dropped
                for port in self.output.subscribers:  # dropped on their behalf over there
                    count_remote_drops(port.mailbox, dropped)
            if not meta.get("end"):
                stats.frames += 1
                await self.output.send(msg)

        ping = asyncio.ensure_future(self._pinger(conn, conn.views.take_released))
        receive = asyncio.ensure_future(_receive(conn, self.max_payload, self.maxsize, stats, deliver, False))
        try:
            done, _ = await asyncio.wait({ping, receive}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            outcome = receive.result()
            return "end" if outcome == "end" else "lost"  # a BYE: the queue over there closed, ask again
        finally:
            _reap(ping, receive)

    async def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
