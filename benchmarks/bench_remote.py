"""Remote runtimes: ``python benchmarks/bench_remote.py [--short]``.

Starts ``streamlib node`` subprocesses on loopback and measures, in one run:

1. control round trip: ``stub.stats()`` on a remote stub, median (target <= 150 us), against its
   floor -- a bare aiohttp WebSocket echo between two processes, called the same way -- and a
   Ray actor method call (``ray.init(num_cpus=1)``) when Ray is installed;
2. a 1080p RGB frame from this runtime to another on the same host (shared memory), median
   one-way latency measured by the receiver on the shared monotonic clock (target <= 2 ms);
3. 1080p RGB frames over TCP loopback (shared memory off), sustained frames/s (target >= 60);
4. a 10-stage chain split across two runtimes vs the same chain in one runtime, messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import streamlib
import streamlib.remote
from streamlib import Actor, DataMessage, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.testing import Feeder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class Meter(Actor):
    """Receives frames and keeps each one's one-way latency (``now - frame.timestamp``: both
    runtimes read the same monotonic clock on one host); ``stats()['latency']`` reports them."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=2, overflow="block")
        self.latencies: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        while (frame := self.inputs["video"].read_nowait()) is not None:
            self.latencies.append(time.monotonic() - frame.timestamp)

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        found = super().stats(recursive=recursive)
        lat = self.latencies[1:]  # the first includes mapping the slot
        found["latency"] = {"n": len(lat), "median": statistics.median(lat) if lat else None}
        return found


class Stage(Actor):
    """One stage of a lossless chain."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=8, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        port, out = self.inputs["in"], self.outputs["out"]
        while (msg := port.read_nowait()) is not None:
            await out.send(msg)


class Counter(Actor):
    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", object, maxsize=8, overflow="block")
        self.count = 0

    async def process(self, tick: TimedTick) -> None:
        while self.inputs["in"].read_nowait() is not None:
            self.count += 1


def start_node(name: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlib",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--import",
            "bench_remote",
            "--log-level",
            "WARNING",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("actor://")[1].split()[0]


def control_round_trip(address: str, n: int) -> float:
    stub = streamlib.get_actor(f"actor://{address}/Counter/rtt")
    for _ in range(50):
        stub.stats()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        stub.stats()
        times.append(time.perf_counter() - t)
    stub.stop().wait(5)
    return statistics.median(times)


ECHO_SERVER = """
import asyncio, sys
from aiohttp import web
async def main():
    async def handle(request):
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws
    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def echo_round_trip(n: int) -> float:
    """The floor under the control round trip, in the same run: a bare aiohttp WebSocket echo in
    another process, called as ``stub.stats()`` is (from this thread, through a loop thread)."""
    import aiohttp

    from streamlib.worker import start_loop_thread

    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    loop = asyncio.new_event_loop()
    start_loop_thread(loop, "echo-client")
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())

        async def connect() -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
            session = aiohttp.ClientSession()
            return session, await session.ws_connect(f"http://127.0.0.1:{port}/", compress=0)

        session, ws = asyncio.run_coroutine_threadsafe(connect(), loop).result(10)
        request = json.dumps({"id": 1, "op": "stats", "target": "rtt"}).encode()

        async def echo() -> None:
            await ws.send_bytes(request)
            await ws.receive()

        for _ in range(50):
            asyncio.run_coroutine_threadsafe(echo(), loop).result(5)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            asyncio.run_coroutine_threadsafe(echo(), loop).result(5)
            times.append(time.perf_counter() - t)

        async def close() -> None:
            await ws.close()
            await session.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        return statistics.median(times)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        server.terminate()
        server.wait(10)


def ray_round_trip(n: int) -> float | None:
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:

        @ray.remote
        class Stats:
            def stats(self) -> dict[str, Any]:
                return {"ticks": 0, "inputs": {}, "outputs": {}}

        actor = Stats.remote()  # type: ignore[attr-defined]
        for _ in range(50):
            ray.get(actor.stats.remote())
        times = []
        for _ in range(n):
            t = time.perf_counter()
            ray.get(actor.stats.remote())
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        ray.shutdown()


async def frame_latency(address: str, n: int, shared_memory: bool) -> tuple[float, int]:
    """Frames sent one at a time; the receiver measures each one's one-way latency."""
    meter = streamlib.get_actor(f"actor://{address}/Meter/meter-{int(shared_memory)}", shared_memory=shared_memory)
    feeder = Feeder(VideoFrame)
    feeder >> meter
    pixels = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    await asyncio.sleep(0.3)
    for i in range(n):
        want = i + 1
        await feeder.send(VideoFrame(pixels, timestamp=time.monotonic(), frame_number=i))
        deadline = time.monotonic() + 5
        while meter.stats()["messages_in"] < want and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
    stats = meter.stats()
    shm = meter._endpoint.link_stats()["inputs['video']"]["shm_frames"]
    await feeder.stop()
    await meter.stop()
    return float(stats["latency"]["median"]), int(shm)


async def tcp_throughput(address: str, seconds: float) -> float:
    """1080p frames as fast as the link takes them (every queue blocks: lossless)."""
    meter = streamlib.get_actor(f"actor://{address}/Meter/tcp-rate", shared_memory=False)
    feeder = Feeder(VideoFrame)
    feeder >> meter
    pixels = np.random.default_rng(2).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    await asyncio.sleep(0.3)
    for i in range(10):  # warm up
        await feeder.send(VideoFrame(pixels, timestamp=time.monotonic(), frame_number=i))
    start_count = meter.stats()["messages_in"]
    start = time.perf_counter()
    sent = 0
    while time.perf_counter() - start < seconds:
        await feeder.send(VideoFrame(pixels, timestamp=time.monotonic(), frame_number=sent))
        sent += 1
    elapsed = time.perf_counter() - start
    received = meter.stats()["messages_in"] - start_count
    await feeder.stop()
    await meter.stop()
    return received / elapsed


async def chain(address: str | None, n: int) -> float:
    """Messages/s through Feeder >> 10 stages >> Counter; with ``address``, stages 6-10 and the
    counter run in that runtime."""
    feeder = Feeder(DataMessage)
    stages: list[Actor] = [Stage(name=f"s{i}") for i in range(5)]
    if address is None:
        stages += [Stage(name=f"s{i}") for i in range(5, 10)]
        counter: Any = Counter()
    else:
        stages += [streamlib.get_actor(f"actor://{address}/Stage/c{i}") for i in range(5, 10)]
        counter = streamlib.get_actor(f"actor://{address}/Counter/c-count")
    left: Any = feeder
    for stage in [*stages, counter]:
        left = left >> stage
    await asyncio.sleep(0.5)

    def received() -> int:
        return int(counter.count if address is None else counter.stats()["messages_in"])

    start = time.perf_counter()
    for i in range(n):
        await feeder.send(DataMessage(i))
    while received() < n and time.perf_counter() - start < 60:
        await asyncio.sleep(0.01)
    rate = received() / (time.perf_counter() - start)
    for actor in [feeder, *stages, counter]:
        await actor.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a quick run (fewer samples)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    n_rtt, n_frames, seconds, n_chain = (300, 20, 1.5, 2000) if args.short else (3000, 100, 5.0, 20000)
    node_a, address_a = start_node("bench-a")
    node_b, address_b = start_node("bench-b")
    results: dict[str, Any] = {}
    try:
        results["control_rtt_us"] = control_round_trip(address_a, n_rtt) * 1e6
        results["aiohttp_echo_rtt_us"] = echo_round_trip(n_rtt) * 1e6
        latency, shm = asyncio.run(frame_latency(address_a, n_frames, True))
        results["frame_1080p_shm_ms"] = latency * 1e3
        results["frame_1080p_shm_frames"] = shm
        latency, _ = asyncio.run(frame_latency(address_a, n_frames, False))
        results["frame_1080p_tcp_ms"] = latency * 1e3
        results["tcp_1080p_fps"] = asyncio.run(tcp_throughput(address_b, seconds))
        results["chain_one_runtime_msgs_per_s"] = asyncio.run(chain(None, n_chain))
        results["chain_two_runtimes_msgs_per_s"] = asyncio.run(chain(address_b, n_chain))
    finally:
        for proc in (node_a, node_b):
            proc.terminate()
            proc.wait(10)
    ray_rtt = ray_round_trip(n_rtt)
    results["ray_actor_call_us"] = ray_rtt * 1e6 if ray_rtt is not None else None
    print(f"control round trip (stub.stats())   median {results['control_rtt_us']:8.1f} us   (target <= 150)")
    echo = results["aiohttp_echo_rtt_us"]
    print(
        f"bare aiohttp WebSocket echo (floor)  median {echo:8.1f} us   "
        f"(control round trip = {results['control_rtt_us'] / echo:.2f}x the floor)"
    )
    if ray_rtt is not None:
        print(f"Ray actor method call (same run)     median {results['ray_actor_call_us']:8.1f} us")
    print(
        f"1080p RGB frame, shared memory       median {results['frame_1080p_shm_ms']:8.2f} ms   (target <= 2; "
        f"{results['frame_1080p_shm_frames']} frames via shm)"
    )
    print(f"1080p RGB frame, TCP loopback        median {results['frame_1080p_tcp_ms']:8.2f} ms")
    print(f"1080p RGB over TCP loopback, sustained     {results['tcp_1080p_fps']:8.1f} frames/s (target >= 60)")
    one, two = results["chain_one_runtime_msgs_per_s"], results["chain_two_runtimes_msgs_per_s"]
    print(f"10-stage chain, one runtime                {one:8.0f} messages/s")
    print(f"10-stage chain, split across two           {two:8.0f} messages/s ({two / one:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
