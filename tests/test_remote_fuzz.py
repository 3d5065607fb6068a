"""Garbage on the control and data ports: each malformed input closes its own connection with a
logged reason and is counted; the runtime keeps running. Over 10,000 inputs, on real sockets.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from test_remote import NodeProcess

import streamlib
import streamlib.remote
from streamlib import DataMessage, VideoFrame
from streamlib.remote import wire
from streamlib.remote.control import client_for, pack, unpack
from streamlib.testing import Probe

OPS = ["ping", "describe", "ensure", "stats", "stop", "connect", "disconnect", "watch", "list", "node", "nope"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    started = NodeProcess("fuzz", log_dir=tmp_path_factory.mktemp("fuzz"))
    try:
        yield started
    finally:
        started.stop()


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value (never a valid class or instance id of the node)."""
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.randint(-(2**40), 2**40)
    if choice == 3:
        return rng.uniform(-1e9, 1e9)
    if choice == 4:
        return "".join(rng.choice("xyz$/:.#!{}[]") for _ in range(rng.randrange(12)))
    if choice == 5:
        return rng.choice(["$nd", "$bytes", "$dc", "$tuple", "$dict", "$float", "Frames", "actor://1.2.3.4:5/A/b"])
    if choice == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["$nd", "$bytes", "$dc", "f", "$tuple", "$dict", "args", "kwargs", "x"]
    return {rng.choice(keys): junk(rng, depth + 1) for _ in range(rng.randrange(3))}


def fuzz_request(rng: random.Random, ident: int) -> dict[str, Any]:
    request: dict[str, Any] = {"id": ident, "op": rng.choice(OPS)}
    for key in rng.sample(
        [
            "target",
            "class",
            "args",
            "output",
            "to",
            "input",
            "maxsize",
            "overflow",
            "wait",
            "deadline",
            "recursive",
            "token",
        ],
        rng.randrange(6),
    ):
        request[key] = junk(rng)
    if rng.random() < 0.3:
        request["target"] = "zz-" + "".join(rng.choice("abc/") for _ in range(5))
    return request


async def send_malformed(ws: aiohttp.ClientWebSocketResponse, kind: int, rng: random.Random) -> None:
    """One message that breaks the control protocol (the runtime closes the connection)."""
    if kind == 0:
        await ws.send_str("not binary")
    elif kind == 1:
        await ws.send_bytes(b"\x00\x00\x10\x00{")
    elif kind == 2:
        await ws.send_bytes(struct.pack("!I", 2) + b"[]")
    elif kind == 3:
        await ws.send_bytes(pack({"id": "x", "op": 3}))
    else:
        await ws.send_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))


async def fuzz_control(address: str, rng: random.Random, connections: int, per_connection: int) -> int:
    """Authenticated control connections, each sent ``per_connection`` garbage-field requests (the
    runtime answers each with an error) and then one malformed message (which closes it)."""
    sent = 0
    async with aiohttp.ClientSession() as session:
        for c in range(connections):
            ws = await session.ws_connect(f"http://{address}/streamlib/v1/control")
            await ws.receive()  # the challenge
            await ws.send_bytes(pack({"auth": ""}))
            await ws.receive()  # welcome
            for i in range(per_connection):
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
                await ws.send_bytes(pack(fuzz_request(rng, i)) + payload)
                sent += 1
            answers = 0
            while answers < per_connection:
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                reply, _ = unpack(msg.data)
                if "event" in reply:
                    continue
                answers += 1
                assert "ok" in reply and (reply["ok"] or reply["error"]["type"]), reply
            await send_malformed(ws, c % 5, rng)
            sent += 1
            closed = await ws.receive(timeout=10)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            await ws.close()
    return sent


FRAME_META, FRAME_BUFFERS = wire.encode_message(VideoFrame(np.zeros((2, 3, 3), np.uint8), 1.0, 2, "c", 30.0))


def fuzz_frame(rng: random.Random) -> bytes:
    """A FRAME record, sent on an open push link, with a mutated description or payload."""
    meta = json.loads(json.dumps(FRAME_META))
    payload = b"".join(bytes(b) for b in FRAME_BUFFERS)
    for _ in range(rng.randrange(1, 3)):
        key = rng.choice(["type", "format", "width", "height", "metadata", "timestamp", "frame_number", "shm"])
        meta[key] = junk(rng)
    if rng.random() < 0.3:
        payload = payload[: rng.randrange(len(payload))]
    body = json.dumps(meta).encode()
    return wire.pack_header(wire.Kind.FRAME, len(body), len(payload)) + body + payload


def fuzz_record(rng: random.Random) -> bytes:
    """Garbage for a data port, after its challenge: random bytes, bad headers, bad HELLOs and
    bad frames."""
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(16, 64)))
    if kind == 1:  # a header with a random kind/version/lengths
        return struct.pack(
            "!4sBBHII",
            rng.choice([b"SLNK", b"SLNX", b"\0\0\0\0"]),
            rng.randrange(3),
            rng.randrange(20),
            0,
            rng.choice([0, 3, 1 << 30]),
            rng.choice([0, 5, 1 << 31]),
        )
    if kind == 2:  # HELLO whose meta is not JSON
        body = bytes(rng.randrange(256) for _ in range(20))
        return wire.pack_header(wire.Kind.HELLO, len(body), 0) + body
    if kind == 3:  # HELLO with junk fields
        meta = json.dumps(
            {
                k: junk(rng)
                for k in rng.sample(["op", "target", "input", "output", "link", "mac", "maxsize", "overflow"], 5)
            }
        ).encode()
        return wire.pack_header(wire.Kind.HELLO, len(meta), 0) + meta
    if kind == 4:  # a well-formed HELLO for a junk op
        meta = json.dumps({"op": "".join(rng.choice("pushl") for _ in range(4)), "link": "x"}).encode()
        return wire.pack_header(wire.Kind.HELLO, len(meta), 0) + meta
    meta = json.dumps({"type": junk(rng), "format": junk(rng)}).encode()  # a FRAME before any HELLO
    return wire.pack_header(wire.Kind.FRAME, len(meta), 3) + meta + b"abc"


async def fuzz_data(host: str, port: int, rng: random.Random, count: int, concurrency: int = 32) -> int:
    """``count`` connections: half send garbage right after the challenge, half open a valid push
    link to the node's ``fuzz-target`` input first and then send a mutated frame."""
    records = [(i % 2 == 1, fuzz_frame(rng) if i % 2 else fuzz_record(rng)) for i in range(count)]
    gate = asyncio.Semaphore(concurrency)

    async def one(item: tuple[bool, bytes]) -> None:
        linked, data = item
        async with gate:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                _, meta_len, _ = wire.parse_header(await reader.readexactly(wire.HEADER.size))
                await reader.readexactly(meta_len)  # the challenge
                if linked:
                    hello = {"op": "push", "target": "fuzz-target", "input": "in", "link": f"f{id(data)}", "mac": ""}
                    writer.writelines(wire.pack_record(wire.Kind.HELLO, hello))
                    kind, meta_len, _ = wire.parse_header(await reader.readexactly(wire.HEADER.size))
                    await reader.readexactly(meta_len)
                    assert kind is wire.Kind.WELCOME
                writer.write(data)
                await writer.drain()
                await asyncio.wait_for(reader.read(), 10)  # the runtime closes on us
            finally:
                writer.close()

    await asyncio.gather(*(one(r) for r in records))
    return count


async def test_ten_thousand_malformed_inputs_are_survived_and_counted(node: NodeProcess) -> None:
    rng = random.Random(1234)
    client = client_for(node.address)
    before = client.call_sync("node")
    control_inputs = await fuzz_control(node.address, rng, connections=40, per_connection=200)
    data_port = client.hello["data_port"]
    target = streamlib.get_actor(node.uri("Fragile", "fuzz-target"))
    data_inputs = await fuzz_data("127.0.0.1", data_port, rng, 2000)
    assert control_inputs + data_inputs >= 10_000
    after = client.call_sync("node")
    # Every malformed control message and nearly every data input was counted (a few random
    # frames happen to be valid: they are delivered, and a random prefix may just end early).
    assert after["malformed"] - before["malformed"] >= 40 + 2000 * 0.8, (before, after)
    assert target.stats()["state"] == "running"
    # The runtime still serves: a stream crosses.
    frames = streamlib.get_actor(node.uri("Frames", "after-fuzz"), fps=60.0)
    probe = Probe(VideoFrame)
    frames >> probe
    await probe.wait_for(5, timeout=10)
    await frames.stop()
    await probe.stop()
    await target.stop()


def test_decoding_random_frames_raises_only_wire_errors() -> None:
    """10,000 mutated FRAME descriptions and payloads: decode_message either builds a message or
    raises WireError -- never anything else."""
    rng = random.Random(99)
    frame = VideoFrame(np.zeros((4, 4, 3), np.uint8), timestamp=1.0, frame_number=3, clock_source_id="c")
    base_meta, buffers = wire.encode_message(frame)
    payload = b"".join(bytes(b) for b in buffers)
    value_meta, value_buffers = wire.encode_message({"a": np.arange(6, dtype="<i4"), "b": (1, b"xy")})
    value_payload = b"".join(bytes(b) for b in value_buffers)
    built = 0
    for i in range(10_000):
        meta = json.loads(json.dumps(base_meta if i % 2 else value_meta))
        data = bytearray(payload if i % 2 else value_payload)
        for _ in range(rng.randrange(1, 4)):
            target = meta if rng.random() < 0.5 else meta.setdefault("metadata", {})
            if isinstance(target, dict) and target and rng.random() < 0.5:
                target[rng.choice(list(target))] = junk(rng)
            elif isinstance(target, dict):
                target[rng.choice(["type", "format", "width", "height", "value", "dtype", "shape"])] = junk(rng)
            if rng.random() < 0.3 and data:
                del data[rng.randrange(len(data)) :]
        try:
            wire.decode_message(meta, memoryview(bytes(data)))
            built += 1
        except wire.WireError:
            pass
    assert built < 10_000


def test_every_message_kind_round_trips() -> None:
    from dataclasses import dataclass

    messages: list[Any] = [
        VideoFrame(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), 1.5, 7, "clk", 30.0),
        VideoFrame(np.ones((5, 6), np.uint8)),
        VideoFrame(np.ones((2, 2, 3), np.float32)),
        streamlib.AudioBuffer(np.linspace(-1, 1, 20, dtype=np.float32).reshape(10, 2), 48000, 2.0, "a", 4, 100.0),
        streamlib.KeyEvent(27, 1.0, 2),
        streamlib.MouseEvent(3, 4, 1, 5.0),
        DataMessage({"k": [1, 2.5, None, "s"], 3: (b"\x00\x01", np.eye(2))}, 9.0, 1),
        {"plain": "dict", "nan": float("nan")},
        Point(1, 2.0, tags=("a",)),
    ]
    for message in messages:
        meta, buffers = wire.encode_message(message)
        back = wire.decode_message(json.loads(json.dumps(meta)), memoryview(b"".join(bytes(b) for b in buffers)))
        assert type(back) is type(message)
        if isinstance(message, (VideoFrame, streamlib.AudioBuffer)):
            np.testing.assert_array_equal(back.data, message.data)
            assert back.tick() == message.tick()
        elif isinstance(message, DataMessage):
            assert back.data["k"] == message.data["k"] and back.data[3][0] == b"\x00\x01"
            np.testing.assert_array_equal(back.data[3][1], np.eye(2))
        elif isinstance(message, dict):
            assert back["plain"] == "dict" and back["nan"] != back["nan"]
        else:
            assert back == message

    @dataclass
    class Local:  # not importable by module:QualName from another runtime
        x: int

    meta, _ = wire.encode_message(Local(1))
    with pytest.raises(wire.WireError, match="cannot import message type"):
        wire.decode_message(meta, memoryview(b""))
    with pytest.raises(wire.NotSerializable, match=r"DataMessage\.data\[0\] holds a function"):
        wire.encode_message(DataMessage([lambda: 1]))


from dataclasses import dataclass, field  # noqa: E402


@dataclass
class Point:
    """A user dataclass: it crosses as 'test_remote_fuzz:Point'."""

    x: int
    y: float
    tags: tuple[str, ...] = field(default_factory=tuple)
