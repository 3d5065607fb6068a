"""Opt-in profiling: nothing on the tick path while off; per-actor process time, lateness and
end-to-end latency while on; ``profile()`` sections; the table, JSON, and the exit report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import eventually

from streamlib import Actor, StreamInput, StreamOutput, TimedTick, VideoFrame, profiling
from streamlib.observe.profiling import profile
from streamlib.testing import Probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def profiling_off() -> Iterator[None]:
    """Every test starts and ends with profiling off and nothing recorded."""
    profiling.disable()
    profiling.reset()
    yield
    profiling.disable()
    profiling.reset()


class Source(Actor):
    default_fps = 100.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        with profile("source.render", frame=tick.frame_number):
            pixels = np.full((8, 8, 3), tick.frame_number % 256, np.uint8)
        await self.outputs["video"].send(VideoFrame.at(tick, data=pixels))


class Slow(Actor):
    """Takes 5 ms per frame (awaiting, so the loop stays free)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is not None:
            await asyncio.sleep(0.005)
            await self.outputs["video"].send(frame)


class ThreadWork(Actor):
    """A synchronous ``process`` on the thread dispatcher, with a section inside."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)

    def process(self, tick: TimedTick) -> None:  # type: ignore[override]
        frame = self.inputs["video"].read_nowait()
        if frame is not None:
            with profile("thread.work"):
                time.sleep(0.002)


def test_off_by_default_costs_nothing_per_tick() -> None:
    assert not profiling.enabled()
    assert profile("anything") is profile("else")  # one shared do-nothing object, no allocation
    with profile("anything", label=1):
        pass
    assert profiling.summary() == {} and profiling.events() == []
    assert "profiling is off" in profiling.report()


async def test_actors_bind_the_plain_callable_while_off() -> None:
    source = Source()
    probe = Probe(VideoFrame)
    source >> probe
    await probe.wait_for(3)
    # The run loop calls the dispatcher's own callable: for asyncio, process itself.
    assert source._core.run_tick == source.process
    assert probe._core.run_tick == probe.process
    assert "profile" not in source.stats()
    await source.stop()
    await probe.stop()


async def test_enable_while_running_times_process_latency_and_lateness() -> None:
    source = Source(name="prof_source")
    slow = Slow(name="prof_slow")
    probe = Probe(VideoFrame, name="prof_probe")
    source >> slow >> probe
    await probe.wait_for(2)
    profiling.enable()  # running actors re-bind between two ticks
    seen = len(probe.messages)
    await probe.wait_for(seen + 15)
    assert source._core.run_tick != source.process  # now wrapped

    s = profiling.summary()
    for name in (
        "/prof_source.process",
        "/prof_source.lateness",
        "/prof_source.latency",
        "/prof_slow.process",
        "/prof_slow.latency",
        "/prof_probe.latency",
        "source.render",
    ):
        assert s[name]["count"] > 0, name
    assert "/prof_slow.lateness" not in s  # synced ticks are not the own clock's: no lateness
    slow_process = s["/prof_slow.process"]
    assert 0.004 < slow_process["p50"] < 0.1  # the 5 ms sleep
    # Latency is measured from the source frame's timestamp: it grows along the chain.
    assert s["/prof_slow.latency"]["p50"] >= slow_process["p50"]
    assert s["/prof_probe.latency"]["p50"] >= s["/prof_slow.latency"]["p50"]
    assert 0 <= s["/prof_source.lateness"]["p50"] < 0.05
    for row in s.values():
        assert row["p50"] <= row["p95"] <= row["p99"] <= row["max"]

    stats = slow.stats()
    assert set(stats["profile"]) == {"process", "latency"}
    assert stats["profile"]["process"]["count"] >= s["/prof_slow.process"]["count"]  # counted since

    event = next(e for e in profiling.events() if e["name"] == "source.render")
    assert event["actor"] == "/prof_source" and "frame" in event["labels"] and event["duration"] >= 0

    profiling.reset()  # forgets the samples; running actors keep recording
    assert profiling.summary() == {}
    await probe.wait_for(len(probe.messages) + 3)
    assert profiling.summary()["/prof_probe.latency"]["count"] >= 1

    profiling.disable()
    await eventually(lambda: source._core.run_tick == source.process)  # back to the plain callable
    for actor in (source, slow, probe):
        await actor.stop()


async def test_thread_dispatcher_and_sections_in_workers() -> None:
    profiling.enable()
    source = Source()
    work = ThreadWork(dispatcher="thread")
    source >> work
    for _ in range(200):
        await asyncio.sleep(0.01)
        if profiling.summary().get("thread.work", {}).get("count", 0) >= 5:
            break
    s = profiling.summary()
    assert s[f"{work.path}.process"]["count"] >= 5
    assert s[f"{work.path}.process"]["p50"] >= 0.002
    assert any(e["name"] == "thread.work" and e.get("actor") == work.path for e in profiling.events())
    await source.stop()
    await work.stop()


async def test_async_with_and_errors_are_recorded() -> None:
    profiling.enable()
    async with profile("async.section", kind="demo"):
        await asyncio.sleep(0.001)
    with pytest.raises(ValueError), profile("failing.section"):
        raise ValueError("boom")
    s = profiling.summary()
    assert s["async.section"]["count"] == 1 and s["async.section"]["max"] >= 0.001
    assert s["failing.section"]["count"] == 1
    failing = [e for e in profiling.events() if e["name"] == "failing.section"]
    assert failing[0]["error"] == "ValueError"


def test_table_and_json_export(tmp_path: Path) -> None:
    profiling.enable()
    for ms in (1, 2, 3, 4, 100):
        profiling.series("decode").add(ms / 1000)
    table = profiling.report()
    lines = table.splitlines()
    assert lines[0] == "=== Profiling Results ==="
    assert lines[2].split() == ["Operation", "Count", "Mean", "P50", "P95", "P99", "Max"]
    decode = next(line for line in lines if line.startswith("decode"))
    assert decode.split() == ["decode", "5", "22.0ms", "3.0ms", "100.0ms", "100.0ms", "100.0ms"]
    exported = json.loads(profiling.export_json(tmp_path / "p.json").read_text())
    assert exported["unit"] == "seconds" and exported["enabled"] is True
    assert exported["series"]["decode"]["count"] == 5
    assert exported["series"]["decode"]["p50"] == pytest.approx(0.003)
    assert json.loads(profiling.to_json())["series"].keys() == {"decode"}
    profiling.reset()
    assert profiling.summary() == {}


SCRIPT = """
import asyncio
from streamlib import Actor, StreamOutput, DataMessage
from streamlib.observe.profiling import profile
from streamlib.testing import Probe

class Src(Actor):
    default_fps = 200.0
    def __init__(self, **kw):
        super().__init__(**kw)
        self.outputs["out"] = StreamOutput("out", DataMessage)
    async def process(self, tick):
        with profile("user.section"):
            await self.outputs["out"].send(DataMessage.at(tick, data=1))

async def main():
    probe = Probe(DataMessage)
    Src(name="src") >> probe
    await probe.wait_for(20)

asyncio.run(main())
"""


def test_environment_variable_prints_the_table_and_writes_json_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    env = {**os.environ, "STREAMLIB_PROFILE": "1", "STREAMLIB_PROFILE_JSON": str(out)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "=== Profiling Results ===" in done.stderr
    assert "/src.process" in done.stderr and "user.section" in done.stderr
    data = json.loads(out.read_text())
    assert data["series"]["user.section"]["count"] >= 20

    quiet = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, "STREAMLIB_PROFILE": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert quiet.returncode == 0 and "Profiling Results" not in quiet.stderr
