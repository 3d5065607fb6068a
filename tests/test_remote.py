"""Remote runtimes, with real OS processes on loopback: ``streamlib node`` subprocesses.

The actor classes below are what the nodes create by name: each node imports this module
(``--import test_remote``), as a runtime imports the actor classes it may host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamlib
import streamlib.observe.views
import streamlib.remote
import streamlib.remote.control
from streamlib import Actor, DataMessage, StreamInput, StreamOutput, Supervisor, TimedTick, VideoFrame
from streamlib.testing import Feeder, Probe

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


# -- the actors the nodes host ------------------------------------------------------------------


class Source(Actor):
    """Sends DataMessage(0), (1) ... at ``fps``; stops after ``limit`` (0: never)."""

    def __init__(self, fps: float = 100.0, limit: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self._fps = fps
        self.limit = limit
        self.count = 0
        self.outputs["out"] = StreamOutput("out", DataMessage)

    @property
    def default_fps(self) -> float:  # type: ignore[override]
        return self._fps

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["out"].send(DataMessage.at(tick, data=self.count))
        self.count += 1
        if self.limit and self.count >= self.limit:
            self.stop()


class Relay(Actor):
    """Passes DataMessages on, optionally slowly (``delay`` seconds each)."""

    default_fps = None

    def __init__(self, maxsize: int = 2, overflow: Any = "drop_oldest", delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=maxsize, overflow=overflow)
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        while (msg := await self.inputs["in"].try_read()) is not None:
            if self.delay:
                await asyncio.sleep(self.delay)
            await self.outputs["out"].send(msg)


class Frames(Actor):
    """Sends small RGB VideoFrames whose pixels hold the frame number."""

    def __init__(self, fps: float = 60.0, **kw: Any) -> None:
        super().__init__(**kw)
        self._fps = fps
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    @property
    def default_fps(self) -> float:  # type: ignore[override]
        return self._fps

    async def process(self, tick: TimedTick) -> None:
        pixels = np.full((24, 32, 3), tick.frame_number % 256, np.uint8)
        await self.outputs["video"].send(VideoFrame.at(tick, data=pixels))


class AudioIn(Actor):
    """Only takes audio: for the type-check test."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["audio"] = StreamInput("audio", streamlib.AudioBuffer)

    async def process(self, tick: TimedTick) -> None:
        await self.inputs["audio"].try_read()


class Fragile(Actor):
    """Fails on the message ``"boom"``."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", object)

    async def process(self, tick: TimedTick) -> None:
        msg = await self.inputs["in"].try_read()
        if msg == "boom":
            raise RuntimeError("boom")


# -- nodes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """A ``streamlib node`` subprocess; ``address`` is where it listens."""

    def __init__(self, name: str, port: int = 0, *extra: str, log_dir: Path) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        env.pop("STREAMLIB_TOKEN", None)
        self.log = log_dir / f"node-{name}-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "streamlib",
            "node",
            "--listen",
            f"127.0.0.1:{port}",
            "--name",
            name,
            "--import",
            "test_remote",
            *extra,
        ]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on actor://" not in line:
            self.proc.kill()
            raise RuntimeError(f"node {name} did not start: {line!r}\n{self.log.read_text()}")
        self.address = line.split("actor://")[1].split()[0]

    def uri(self, cls: str, instance: str) -> str:
        return f"actor://{self.address}/{cls}/{instance}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    logs = tmp_path_factory.mktemp("nodes")
    started: dict[str, NodeProcess] = {}
    try:
        started["a"] = NodeProcess("a", log_dir=logs)
        started["b"] = NodeProcess("b", log_dir=logs)
        yield started
    finally:
        for node in started.values():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)  # all at once: they stop in parallel
        for node in started.values():
            node.stop()


async def until(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(0.01)


async def stop_all(*actors: Actor) -> None:
    for actor in actors:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(actor.stop(), 10)


# -- get-or-create, URIs -----------------------------------------------------------------------


async def test_get_actor_creates_then_returns_the_same_remote_actor(nodes: dict[str, NodeProcess]) -> None:
    uri = nodes["a"].uri("Source", "goc")
    first = streamlib.get_actor(uri, fps=50.0)
    second = streamlib.get_actor(uri, fps=1.0)  # exists: the arguments are not used again
    try:
        assert first.uri == second.uri == uri
        assert isinstance(first, streamlib.remote.RemoteActor)
        assert list(first.outputs) == ["out"] and first.outputs["out"].msg_type is DataMessage
        await until(lambda: first.stats()["messages_out"] > 5, what="the remote source runs")
        created = first.call("describe")
        assert created["path"] == "/goc" and created["class"] == "Source"
        assert "actor://" in repr(first) and "goc" in repr(first)
        with pytest.raises(streamlib.ActorInitError, match="is a Source, not a Relay"):
            streamlib.get_actor(nodes["a"].uri("Relay", "goc"))
    finally:
        await stop_all(first)
    await until(
        lambda: "goc" not in streamlib.remote.control.client_for(nodes["a"].address).call_sync("list"),
        what="the name vanishes when the actor stops",
    )
    await until(lambda: second.state is streamlib.LifecycleState.STOPPED, what="the other stub followed")


async def test_get_actor_on_the_local_runtime_returns_the_actor_itself() -> None:
    node = streamlib.remote.serve("127.0.0.1", 0, name="local")
    try:
        sink = Probe(DataMessage, name="here")
        assert sink.uri == f"actor://{node.address}/Probe/here"
        assert streamlib.get_actor(sink.uri) is sink
        made = streamlib.get_actor(f"actor://{node.address}/test_remote.Relay/made-here", delay=0.0)
        assert isinstance(made, Relay) and made.path == "/made-here"
        assert streamlib.get_actor(made.uri) is made
        await stop_all(sink, made)
    finally:
        node.close()
    assert sink.uri is None  # no longer served


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    with pytest.raises(ValueError, match="without a token"):
        streamlib.remote.serve("0.0.0.0", 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "streamlib", "node", "--listen", "0.0.0.0:0"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and "refuses to listen on '0.0.0.0' without a token" in done.stderr


def test_bad_uris_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="expected actor://HOST:PORT/ClassName/instance-id"):
        streamlib.get_actor("http://x:1/A/b")
    with pytest.raises(ValueError, match="bad class name"):
        streamlib.get_actor("actor://127.0.0.1:7400/9x/b")
    with pytest.raises(ValueError, match="bad address"):
        streamlib.get_actor("actor://127.0.0.1/A/b")


# -- >> in every direction ----------------------------------------------------------------------


async def test_remote_to_local_keeps_clock_metadata(nodes: dict[str, NodeProcess]) -> None:
    frames = streamlib.get_actor(nodes["a"].uri("Frames", "r2l"), fps=60.0)
    probe = Probe(VideoFrame)
    try:
        frames >> probe
        got = await probe.wait_for(10, timeout=10)
        f = got[-1]
        assert f.data.shape == (24, 32, 3) and int(f.data[0, 0, 0]) == f.frame_number % 256
        assert f.clock_source_id == "clock:/r2l" and f.clock_rate == 60.0
        numbers = [m.frame_number for m in got]
        assert numbers == sorted(numbers)
        links = frames.stats()["links"]
        assert links["outputs['video']"]["frames"] >= 10 and links["outputs['video']"]["bytes"] > 0
    finally:
        await stop_all(frames, probe)


async def test_local_to_remote_to_local(nodes: dict[str, NodeProcess]) -> None:
    feeder = Feeder(DataMessage)
    relay = streamlib.get_actor(nodes["a"].uri("Relay", "l2r"), maxsize=100, overflow="block")
    probe = Probe(DataMessage)
    try:
        feeder >> relay.inputs["in"]  # output >> input
        relay.outputs["out"] >> probe  # output >> actor
        await asyncio.sleep(0.3)
        for i in range(20):
            await feeder.send(DataMessage(i, timestamp=float(i), frame_number=i, clock_source_id="feed"))
        got = await probe.wait_for(20, timeout=10)
        assert [m.data for m in got] == list(range(20))
        assert got[5].frame_number == 5 and got[5].clock_source_id == "feed"
        from prometheus_client import CollectorRegistry, generate_latest

        from streamlib.remote.metrics import link_collector

        registry = CollectorRegistry()
        registry.register(link_collector())
        text = generate_latest(registry).decode()
        assert f'streamlib_link_frames_total{{actor="{relay.path}",direction="out",link="inputs[\'in\']"}} 20.0' in text
    finally:
        await stop_all(relay, feeder, probe)


async def test_remote_a_to_remote_b_links_the_runtimes_directly(nodes: dict[str, NodeProcess]) -> None:
    source = streamlib.get_actor(nodes["a"].uri("Source", "ab-src"), fps=100.0)
    relay = streamlib.get_actor(nodes["b"].uri("Relay", "ab-relay"), maxsize=4)
    probe = Probe(DataMessage)
    try:
        source >> relay >> probe  # actor >> actor, across three processes
        got = await probe.wait_for(20, timeout=10)
        values = [m.data for m in got]
        assert values == sorted(values)
        stats = relay.stats()
        assert stats["inputs"]["in"]["received"] >= 20
        assert source.stats()["links"] == {}  # nothing from a to b passes through this process
        node_a = source.call("describe")
        assert node_a["outputs"]["out"]["type"].endswith(":DataMessage")
    finally:
        await stop_all(source, relay, probe)


async def test_type_checks_at_rshift_match_the_local_texts(nodes: dict[str, NodeProcess]) -> None:
    frames = streamlib.get_actor(nodes["a"].uri("Frames", "types"), fps=1.0)
    audio = streamlib.get_actor(nodes["b"].uri("AudioIn", "types-audio"))
    local_audio = AudioIn()
    try:
        with pytest.raises(TypeError) as remote_error:
            frames.outputs["video"] >> audio.inputs["audio"]
        with pytest.raises(TypeError) as local_error:
            frames.outputs["video"] >> local_audio.inputs["audio"]
        assert str(remote_error.value) == (
            f"cannot connect {frames.uri}.outputs['video'] (VideoFrame) >> {audio.uri}.inputs['audio'] "
            "(AudioBuffer): incompatible message types"
        )
        assert str(local_error.value).replace(local_audio.path, audio.uri) == str(remote_error.value)
        with pytest.raises(TypeError, match="incompatible message types"):
            frames >> audio  # actor >> actor: one pair of ports, checked as locally
    finally:
        await stop_all(frames, audio, local_audio)


# -- the receiving input's semantics across the link ---------------------------------------------


async def test_block_gives_backpressure_across_the_link(nodes: dict[str, NodeProcess]) -> None:
    relay = streamlib.get_actor(nodes["b"].uri("Relay", "bp"), maxsize=2, overflow="block", delay=0.05)
    feeder = Feeder(DataMessage)
    probe = Probe(DataMessage, maxsize=1000, overflow="block")
    try:
        feeder >> relay
        relay >> probe
        await asyncio.sleep(0.3)
        start = time.monotonic()
        for i in range(30):
            await feeder.send(DataMessage(i))
        elapsed = time.monotonic() - start
        # 30 messages at 50 ms each over there: the sender was held back (a few fit in queues)
        assert elapsed > 0.05 * (30 - 2 * 2 - 4)
        got = await probe.wait_for(30, timeout=15)
        assert [m.data for m in got] == list(range(30))
        assert relay.stats()["dropped"] == 0 and feeder.outputs["out"].sent == 30
    finally:
        await stop_all(relay, feeder, probe)


async def test_a_dropping_input_drops_and_counts_every_drop(nodes: dict[str, NodeProcess]) -> None:
    relay = streamlib.get_actor(nodes["b"].uri("Relay", "drops"), maxsize=2, overflow="drop_oldest", delay=0.02)
    feeder = Feeder(DataMessage)
    probe = Probe(DataMessage)
    try:
        feeder >> relay >> probe
        await asyncio.sleep(0.3)
        for i in range(200):
            await feeder.send(DataMessage(i))
        await until(lambda: relay.stats()["inputs"]["in"]["queued"] == 0 and len(probe.messages) > 0, 10)
        await asyncio.sleep(0.3)
        stats = relay.stats()
        delivered = stats["inputs"]["in"]["received"]
        assert stats["dropped"] > 0
        assert delivered + stats["dropped"] == 200  # every message arrived or was counted as dropped
        books = stats["inputs"]["in"]  # and the input's books balance, drops made at the sender included
        assert books["delivered"] == 200
        assert books["delivered"] == books["taken"] + books["dropped"] + books["in_hand"] + books["queued"]
        assert probe.messages[-1].data == 199  # newest data wins
    finally:
        await stop_all(relay, feeder, probe)


async def test_what_cannot_cross_fails_in_the_senders_send(nodes: dict[str, NodeProcess]) -> None:
    fragile = streamlib.get_actor(nodes["b"].uri("Fragile", "unsendable"))
    feeder = Feeder(object)
    try:
        feeder >> fragile
        from streamlib.remote.wire import NotSerializable, encode_message

        with pytest.raises(NotSerializable, match="holds a set"):
            encode_message({"a": {1, 2}})

        class GPUish:
            memory = "gpu"
            shape = (2, 2, 3)

        with pytest.raises(NotSerializable, match=r"unsendable\.inputs\['in'\]: a GPU VideoFrame"):
            await feeder.send(VideoFrame(GPUish()))  # type: ignore[arg-type]
    finally:
        await stop_all(fragile, feeder)


# -- security ----------------------------------------------------------------------------------


async def test_wrong_or_missing_tokens_are_refused_and_counted(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    node = NodeProcess("t", 0, "--token-file", str(token_file), log_dir=tmp_path)
    try:
        with pytest.raises(streamlib.ActorInitError) as wrong:
            streamlib.get_actor(node.uri("Source", "x"), token="wrong")
        assert isinstance(wrong.value.__cause__, streamlib.remote.AuthenticationFailed)
        assert "refused our token" in str(wrong.value)
        with pytest.raises(streamlib.ActorInitError, match="wants one"):
            streamlib.get_actor(node.uri("Source", "x"))
        good = streamlib.get_actor(node.uri("Source", "x"), token="s3cret", fps=5.0)
        assert good.stats()["class"].startswith("Source @ actor://")
        counters = good.call("describe") and good._client.call_sync("node")
        assert counters["auth_rejected"] == 2
        await stop_all(good)
    finally:
        node.stop()


# -- supervision across runtimes, heartbeats, reconnection ---------------------------------------


async def test_kill_9_fails_the_remote_child_within_2_s_and_its_supervisor_recreates_it(tmp_path: Path) -> None:
    port = free_port()
    node = NodeProcess("c", port, log_dir=tmp_path)
    sup = Supervisor(max_restarts=5, within=60.0)
    probe = Probe(DataMessage)
    child = streamlib.remote.spawn_remote(sup, node.uri("Source", "kid"), fps=50.0, restart_wait=20.0)
    try:
        child >> probe
        await probe.wait_for(5, timeout=10)
        assert "Source @ actor://" in streamlib.observe.views.tree_text(sup)  # seen in the tree with its URI
        node.kill()
        killed = time.monotonic()
        await until(lambda: child.state is streamlib.LifecycleState.FAILED, 5, "the stub failed")
        assert time.monotonic() - killed < 2.0
        assert isinstance(child.failure, streamlib.remote.ActorUnavailable)
        assert "missed its heartbeats" in str(child.failure)
        replacement = sup.children[0]
        assert replacement is not child and replacement.restarts == 1
        asked = time.monotonic()
        with pytest.raises(streamlib.remote.ActorUnavailable):
            replacement.call("stats")  # unreachable: a clear error, not a hang
        assert time.monotonic() - asked < replacement._timeout + 1
        node = NodeProcess("c", port, log_dir=tmp_path)  # the runtime is back, empty
        seen = len(probe.messages)
        await until(lambda: len(probe.messages) > seen + 5, 15, "frames flow again over the reconnected link")
        assert replacement.state is streamlib.LifecycleState.RUNNING
        assert replacement.stats()["links"]["outputs['out']"]["reconnects"] >= 1
    finally:
        await stop_all(sup, probe)
        node.stop()


async def test_big_frames_cross_through_shared_memory_on_one_host(nodes: dict[str, NodeProcess]) -> None:
    big = streamlib.get_actor(nodes["a"].uri("Frames", "shm"), fps=30.0)
    probe = Probe(VideoFrame)
    feeder = Feeder(VideoFrame)
    relay_probe = Probe(VideoFrame)
    echo = streamlib.get_actor(nodes["b"].uri("test_remote.Passthrough", "shm-echo"))
    try:
        big >> probe  # small frames (2 KB): inline on TCP
        feeder >> echo >> relay_probe  # 300 KB frames there and back: shared memory both ways
        await asyncio.sleep(0.3)
        pixels = np.random.default_rng(0).integers(0, 255, (240, 400, 3), dtype=np.uint8)
        for i in range(8):
            await feeder.send(VideoFrame(pixels, frame_number=i))
        got = await relay_probe.wait_for(8, timeout=10)
        np.testing.assert_array_equal(got[-1].data, pixels)
        assert echo.stats()["links"]["inputs['video']"]["shm_frames"] == 8
        assert echo.stats()["links"]["outputs['video']"]["shm_frames"] == 8
        await probe.wait_for(3, timeout=10)
        assert big.stats()["links"]["outputs['video']"]["shm_frames"] == 0
    finally:
        await stop_all(big, probe, feeder, echo, relay_probe)


class Passthrough(Actor):
    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=4, overflow="block")
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        while (frame := self.inputs["video"].read_nowait()) is not None:
            await self.outputs["video"].send(frame)


async def test_a_restarted_remote_child_moves_to_a_fallback_runtime(
    nodes: dict[str, NodeProcess], tmp_path: Path
) -> None:
    doomed = NodeProcess("doomed", log_dir=tmp_path)
    sup = Supervisor(max_restarts=5, within=60.0)
    probe = Probe(DataMessage)
    child = streamlib.remote.spawn_remote(
        sup, doomed.uri("Source", "mover"), fps=50.0, restart_wait=10.0, fallbacks=[nodes["a"].address]
    )
    try:
        child >> probe
        await probe.wait_for(5, timeout=10)
        doomed.kill()
        await until(
            lambda: sup.children[0] is not child and sup.children[0].uri.startswith(f"actor://{nodes['a'].address}/"),
            10,
            "the replacement moved to the fallback runtime",
        )
        seen = len(probe.messages)
        await until(lambda: len(probe.messages) > seen + 5, 10, "frames flow from the fallback runtime")
        moved = sup.children[0]
        assert moved.stats()["remote_path"] == "/mover" and moved.stats()["state"] == "running"
    finally:
        await stop_all(sup, probe)
        doomed.stop()


async def test_h264_compression_for_slow_links(nodes: dict[str, NodeProcess]) -> None:
    echo = streamlib.get_actor(nodes["b"].uri("test_remote.Passthrough", "h264-echo"), compress="h264")
    feeder = Feeder(VideoFrame)
    probe = Probe(VideoFrame)
    try:
        feeder >> echo >> probe
        await asyncio.sleep(0.3)
        y, x = np.mgrid[0:240, 0:320]
        pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)
        for i in range(10):
            await feeder.send(VideoFrame(pixels, timestamp=float(i), frame_number=i, clock_source_id="cam"))
        got = await probe.wait_for(10, timeout=15)
        assert [f.frame_number for f in got] == list(range(10)) and got[3].clock_source_id == "cam"
        error = np.abs(got[-1].data.astype(int) - pixels.astype(int)).mean()
        assert error < 8  # lossy, but the same picture
        links = echo.stats()["links"]
        raw = pixels.nbytes * 10
        assert links["inputs['video']"]["bytes"] < raw / 5 and links["outputs['video']"]["bytes"] < raw / 5
    finally:
        await stop_all(echo, feeder, probe)
