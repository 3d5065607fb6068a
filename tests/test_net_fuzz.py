"""A hostile network: 100,000+ mutated RFC 4175 packets, then a clean stream must still decode.

Mutations are made in bulk with numpy from real packets (seeded, so a failure reproduces):
bit flips anywhere in the headers, wrong RTP versions, truncation, oversized SRD lengths, line
numbers and offsets past the frame, continuation bits with nothing after, padding/extension bits,
pure garbage, duplicates and reordering. Most go straight into the receiver's packet handler
(``receiver.assembler.push``, what its socket thread calls); a share goes over a real socket.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc

import numpy as np
import pytest
from netpeers import free_port

from streamlib import VideoFrame
from streamlib.actors import RTPReceiveActor, RTPSendActor
from streamlib.actors.net import kernel
from streamlib.actors.net.rtp import stamp_sequence
from streamlib.actors.net.st2110 import FrameAssembler, VideoFormat, VideoPacketizer, from_rgb, to_rgb
from streamlib.actors.video import smpte_bars
from streamlib.testing import Feeder, Probe

W, H = 128, 64
SEED = 20251201


def clean_packets(fmt: VideoFormat, frames: int, ssrc: int = 0x1234) -> tuple[np.ndarray, np.ndarray]:
    """``frames`` frames of SMPTE bars as one (packets, width) array plus each packet's length."""
    pk = VideoPacketizer(fmt, 96, ssrc)
    packed = from_rgb(smpte_bars(fmt.width, fmt.height), fmt)
    rows, lengths = [], []
    for i in range(frames):
        p, n = pk.packetize(packed, 90000 + i * 3000)
        rows.append(p)
        lengths += n
    packets = np.concatenate(rows)
    stamp_sequence(packets, 65000, extended_at=12)  # crosses a 16-bit wrap
    return packets, np.array(lengths)


def mutate(packets: np.ndarray, lengths: np.ndarray, count: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` mutated packets, built with array operations (one kind of damage per packet)."""
    width = packets.shape[1]
    pick = rng.integers(0, len(packets), count)
    out = packets[pick].copy()
    n = lengths[pick].copy()
    kind = rng.integers(0, 10, count)
    idx = np.arange(count)

    def rows(k: int) -> np.ndarray:
        return idx[kind == k]

    r = rows(0)  # 1-4 random bit flips in the first 20 bytes (RTP + RFC 4175 headers)
    for _ in range(4):
        out[r, rng.integers(0, 20, len(r))] ^= (1 << rng.integers(0, 8, len(r))).astype(np.uint8)
    r = rows(1)  # wrong RTP version
    out[r, 0] = (out[r, 0] & 0x3F) | (rng.integers(0, 3, len(r)) << 6).astype(np.uint8)
    r = rows(2)  # truncated anywhere, down to nothing
    n[r] = rng.integers(0, n[r] + 1)
    r = rows(3)  # oversized SRD length
    out[r, 14] = 0xFF
    out[r, 15] = rng.integers(0, 256, len(r)).astype(np.uint8)
    r = rows(4)  # line number / offset beyond the frame (and the field bit)
    out[r, 16] = rng.integers(0, 256, len(r)).astype(np.uint8)
    out[r, 18] = rng.integers(0, 128, len(r)).astype(np.uint8)
    r = rows(5)  # continuation bit set with no SRD after it, or CSRC count / extension / padding bits
    out[r, 18] |= 0x80
    out[r, 0] |= rng.choice(np.array([0x0F, 0x10, 0x20, 0x3F], np.uint8), len(r))
    r = rows(6)  # pure garbage of random length
    out[r] = rng.integers(0, 256, (len(r), width), dtype=np.uint8)
    n[r] = rng.integers(0, width + 1, len(r))
    r = rows(7)  # random sequence numbers and timestamps
    out[r, 2:8] = rng.integers(0, 256, (len(r), 6), dtype=np.uint8)
    out[r, 12:14] = rng.integers(0, 256, (len(r), 2), dtype=np.uint8)
    # kinds 8 and 9 stay intact: duplicates and reordering of real packets (pick is random)
    return [out[i, : n[i]].tobytes() for i in range(count)]


async def test_fuzzed_receiver_survives_and_then_decodes_a_clean_stream() -> None:
    rng = np.random.default_rng(SEED)
    fmt = VideoFormat(W, H, "YCbCr-4:2:2", 8, 30.0, "BT709")
    port = free_port()
    receiver = RTPReceiveActor(port, width=W, height=H, fps=30, queue=4)
    probe = Probe(VideoFrame)
    receiver >> probe
    packets, lengths = clean_packets(fmt, 40)
    push = receiver.assembler.push
    for _ in range(9):
        for pkt in mutate(packets, lengths, 10_000, rng):
            push(pkt)
    last = mutate(packets, lengths, 10_000, rng)
    tracemalloc.start()  # the last 10,000 under tracemalloc: a leak per packet would show here
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for pkt in last:
            push(pkt)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 1 << 20, f"receiver memory grew by {grown} bytes over 10,000 fuzzed packets"
    a = receiver.assembler
    assert a.packets_received == 100_000
    assert a.packets_malformed > 20_000  # the damage was seen as such
    assert len(receiver._ready) <= 4

    # a share over a real socket, through the receive thread
    before = a.packets_received
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i, pkt in enumerate(mutate(packets, lengths, 5_000, rng)):
            tx.sendto(pkt, ("127.0.0.1", port))
            if i % 200 == 199:
                await asyncio.sleep(0.001)  # let the receiver drain its socket buffer
    deadline = time.monotonic() + 10
    while a.packets_received - before < 4_500:  # a few empty datagrams may be dropped by nothing at all
        assert time.monotonic() < deadline, f"socket share: {a.packets_received - before} of 5000 arrived"
        await asyncio.sleep(0.02)

    # then a clean stream from a new sender decodes, at full quality
    stats = receiver.stats()["network"]
    for key in ("packets_received", "packets_lost", "packets_reordered", "frames_incomplete", "packets_malformed"):
        assert key in stats
    n_before = len(probe.messages)
    feeder = Feeder(VideoFrame)
    sender = RTPSendActor("127.0.0.1", port)
    feeder >> sender
    bars = smpte_bars(W, H)
    for i in range(40):
        await feeder.send(VideoFrame(bars, time.monotonic(), i, "test", 30.0))
        await asyncio.sleep(1 / 60)
        if len(probe.messages) - n_before >= 5:
            break
    got = await probe.wait_for(n_before + 5, timeout=10)
    await feeder.end()
    await sender.stop()
    await receiver.stop()
    await probe.stop()
    last = got[-1]
    assert last.clock_source_id == f"rtp:{sender.ssrc:08x}"
    assert np.abs(last.data.astype(int) - to_rgb(from_rgb(bars, fmt), fmt)).max() == 0
    assert receiver.stats()["network"]["ssrc_changes"] >= 1


def test_incomplete_frames_are_dropped_or_concealed_by_policy() -> None:
    fmt = VideoFormat(W, H, "YCbCr-4:2:2", 8)
    packets, lengths = clean_packets(fmt, 3)
    per_frame = len(packets) // 3
    for policy, emitted in (("drop", 2), ("conceal", 3)):
        frames: list[tuple[bytes, bool]] = []
        a = FrameAssembler(fmt, 96, lambda b, ts, c, f, frames=frames: frames.append((b, c)), policy=policy)  # type: ignore[arg-type]
        for i in range(len(packets)):
            if i == per_frame + 5:  # lose one packet of the second frame
                continue
            a.push(packets[i, : lengths[i]].tobytes())
        assert a.frames_complete == 2 and a.frames_incomplete == 1 and a.packets_lost == 1
        assert len(frames) == emitted


def test_reordering_and_duplicates_are_counted() -> None:
    fmt = VideoFormat(W, H, "YCbCr-4:2:2", 8)
    packets, lengths = clean_packets(fmt, 2)
    order = list(range(len(packets)))
    order[10], order[11] = order[11], order[10]
    order.insert(20, 20)
    got: list[bool] = []
    a = FrameAssembler(fmt, 96, lambda b, ts, c, f: got.append(c))
    for i in order:
        a.push(packets[i, : lengths[i]].tobytes())
    assert got == [True, True]
    assert (a.packets_reordered, a.packets_duplicate, a.packets_lost) == (1, 1, 0)


async def test_resolution_change_mid_stream_is_followed() -> None:
    port = free_port()
    receiver = RTPReceiveActor(port, width=W, height=H)
    probe = Probe(VideoFrame)
    receiver >> probe
    feeder = Feeder(VideoFrame)
    sender = RTPSendActor("127.0.0.1", port)
    feeder >> sender
    for size in ((W, H), (W // 2, H * 2)):
        bars = smpte_bars(*size)
        for i in range(60):
            await feeder.send(VideoFrame(bars, time.monotonic(), i, "test", 30.0))
            await asyncio.sleep(1 / 60)
            if probe.messages and probe.messages[-1].data.shape[:2] == (size[1], size[0]):
                break
    await feeder.end()
    await sender.stop()
    await receiver.stop()
    await probe.stop()
    shapes = [m.data.shape[:2] for m in probe.messages]
    assert (H, W) in shapes and shapes[-1] == (H * 2, W // 2)
    assert receiver.stats()["network"]["format_changes"] == 1
    assert sender.stats()["network"]["format_changes"] == 1 and "width=64; height=128" in sender.sdp()


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "python"])
def test_batch_path_counts_exactly_like_the_packet_path(compiled: bool) -> None:
    """The receive thread's bulk path (recvmmsg batches, the compiled kernel or its Python twin)
    must agree with push() packet for packet."""
    rng = np.random.default_rng(SEED + 1)
    fmt = VideoFormat(W, H, "YCbCr-4:2:2", 8)
    packets, lengths = clean_packets(fmt, 30)
    stream: list[bytes] = []
    for i in range(len(packets)):  # mostly clean, in order, with damage mixed in
        stream.append(packets[i, : lengths[i]].tobytes())
        if rng.random() < 0.05:
            stream.extend(mutate(packets, lengths, 1, rng))
    one: list[bytes] = []
    bulk: list[bytes] = []
    a = FrameAssembler(fmt, 96, lambda b, ts, c, f: one.append(b), policy="conceal")
    b = FrameAssembler(fmt, 96, lambda b_, ts, c, f: bulk.append(b_), policy="conceal")
    if not compiled:
        b._kernel = kernel.python_fast_run
    elif not kernel.COMPILED:
        pytest.skip("numba is not installed")
    for pkt in stream:
        a.push(pkt)
    slot = 2048
    for start in range(0, len(stream), 64):
        chunk = stream[start : start + 64]
        rows = np.zeros((len(chunk), slot), np.uint8)
        for k, pkt in enumerate(chunk):
            rows[k, : len(pkt)] = np.frombuffer(pkt, np.uint8)
        b.push_batch(rows, np.array([len(p) for p in chunk], np.uint32), np.zeros(len(chunk), bool))
    keys = (
        "packets_received",
        "packets_malformed",
        "packets_foreign",
        "packets_lost",
        "packets_reordered",
        "packets_duplicate",
        "frames_complete",
        "frames_incomplete",
    )
    assert {k: getattr(a, k) for k in keys} == {k: getattr(b, k) for k in keys}
    assert a.frames_complete >= 5 and one == bulk
