"""InputSync: matching a group of inputs by timestamp under each policy."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import eventually

from streamlib import Actor, DataMessage, EndOfStream, StreamInput, TimedTick
from streamlib.alignment import InputSync, MatchedSet
from streamlib.testing import Feeder

ROOT = Path(__file__).resolve().parents[1]


class Matcher(Actor):
    """Collects the matched sets of one sync set over inputs ``names``."""

    default_fps = None

    def __init__(self, names: tuple[str, ...] = ("a", "b", "c"), **sync: Any) -> None:
        super().__init__()
        for name in names:
            self.inputs[name] = StreamInput(name, DataMessage, maxsize=100)
        self.sync = InputSync(*self.inputs.values(), **sync)
        self.sets: list[MatchedSet] = []
        self.ended = False

    async def process(self, tick: TimedTick) -> None:
        try:
            self.sets.extend(await self.sync.read_many())
        except EndOfStream:
            self.ended = True
            raise


def msg(ts: float, data: Any = None) -> DataMessage:
    return DataMessage(data=ts if data is None else data, timestamp=ts)


async def wired(names: tuple[str, ...] = ("a", "b", "c"), **sync: Any) -> tuple[Matcher, dict[str, Feeder]]:
    matcher = Matcher(names, **sync)
    feeders = {}
    for name in names:
        feeder = Feeder(DataMessage)
        feeder.outputs["out"] >> matcher.inputs[name]
        feeders[name] = feeder
    return matcher, feeders


def shape(sets: list[MatchedSet]) -> list[dict[str, float | None]]:
    return [{n: (None if m is None else m.timestamp) for n, m in s.items()} for s in sets]


async def test_default_waits_for_every_input_then_groups_equal_timestamps() -> None:
    matcher, feed = await wired()
    await feed["a"].send(msg(1.0), msg(2.0))
    await feed["b"].send(msg(1.0))
    await asyncio.sleep(0.05)
    assert matcher.sets == []  # c has said nothing: a set at 1.0 may still get its frame
    await feed["c"].send(msg(1.0))
    await eventually(lambda: len(matcher.sets) == 1)
    assert shape(matcher.sets) == [{"a": 1.0, "b": 1.0, "c": 1.0}]
    assert matcher.sets[0].complete


async def test_default_never_drops_and_fills_gaps_with_none() -> None:
    matcher, feed = await wired(("fast", "slow"))
    await feed["fast"].send(msg(1.0), msg(2.0), msg(3.0), msg(4.0))
    await feed["slow"].send(msg(2.0), msg(4.0))
    await eventually(lambda: len(matcher.sets) == 4)
    assert shape(matcher.sets) == [
        {"fast": 1.0, "slow": None},
        {"fast": 2.0, "slow": 2.0},
        {"fast": 3.0, "slow": None},
        {"fast": 4.0, "slow": 4.0},
    ]
    stats = matcher.sync.stats
    assert stats["slow"].missing == 2 and stats["fast"].unmatched == 2 and stats["fast"].matched == 2
    assert all(s.late == 0 and s.overflow == 0 for s in stats.values())


async def test_immediate_delivers_each_message_alone_in_arrival_order() -> None:
    matcher, feed = await wired(("a", "b"), policy="immediate")
    await feed["a"].send(msg(5.0))
    await eventually(lambda: len(matcher.sets) == 1)
    await feed["b"].send(msg(1.0))
    await eventually(lambda: len(matcher.sets) == 2)
    assert shape(matcher.sets) == [{"a": 5.0, "b": None}, {"a": None, "b": 1.0}]


async def test_tolerance_matches_jittered_timestamps_and_releases_a_partial_set_on_a_later_frame() -> None:
    matcher, feed = await wired(policy="tolerance", tolerance=0.010)
    await feed["a"].send(msg(1.000), msg(1.033))
    await feed["b"].send(msg(1.004), msg(1.030))
    await feed["c"].send(msg(0.997))
    await eventually(lambda: len(matcher.sets) == 1)
    assert shape(matcher.sets) == [{"a": 1.000, "b": 1.004, "c": 0.997}]
    # c loses its frame at ~1.033 and shows the next one: the set at 1.03 is decided without it.
    await feed["c"].send(msg(1.068))
    await eventually(lambda: len(matcher.sets) == 2)
    assert shape(matcher.sets)[1] == {"a": 1.033, "b": 1.030, "c": None}
    assert not matcher.sets[1].complete and matcher.sets[1].missing == ("c",)
    stats = matcher.sync.stats
    assert (stats["c"].missing, stats["c"].timed_out, stats["a"].unmatched) == (1, 0, 1)


async def test_tolerance_timeout_releases_the_set_and_counts_the_timeout_and_the_late_frame() -> None:
    matcher, feed = await wired(("a", "b"), policy="tolerance", tolerance=0.010, timeout=0.1)
    await feed["a"].send(msg(2.0))
    await asyncio.sleep(0.02)
    assert matcher.sets == []  # within the timeout: still waiting for b
    await eventually(lambda: len(matcher.sets) == 1, timeout=5)
    assert shape(matcher.sets) == [{"a": 2.0, "b": None}]
    await feed["b"].send(msg(2.005), msg(2.040))  # the first is too late: its set is gone
    await feed["a"].send(msg(2.036))
    await eventually(lambda: len(matcher.sets) == 2)
    assert shape(matcher.sets)[1] == {"a": 2.036, "b": 2.040}
    stats = matcher.sync.stats
    assert (stats["b"].timed_out, stats["b"].late, stats["b"].matched) == (1, 1, 1)


async def test_tolerance_can_drop_partial_sets() -> None:
    matcher, feed = await wired(("a", "b"), policy="tolerance", tolerance=0.005, partial="drop")
    await feed["a"].send(msg(1.0), msg(2.0))
    await feed["b"].send(msg(2.001))
    await eventually(lambda: len(matcher.sets) == 1)
    assert shape(matcher.sets) == [{"a": 2.0, "b": 2.001}]
    assert matcher.sync.dropped_sets == 1 and matcher.sync.stats["a"].unmatched == 1


async def test_two_sync_sets_of_one_actor_are_independent_and_both_show_in_stats() -> None:
    class Two(Actor):
        default_fps = None

        def __init__(self) -> None:
            super().__init__()
            for name in ("l1", "r1", "l2", "r2"):
                self.inputs[name] = StreamInput(name, DataMessage, maxsize=100)
            self.first = InputSync(self.inputs["l1"], self.inputs["r1"], name="first")
            self.second = InputSync(self.inputs["l2"], self.inputs["r2"], policy="tolerance", tolerance=0.01)
            self.got: list[tuple[str, MatchedSet]] = []

        async def process(self, tick: TimedTick) -> None:
            for label, sync in (("first", self.first), ("second", self.second)):
                while (found := sync.take()) is not None:
                    self.got.append((label, found))

    two = Two()
    feeders = {}
    for name in ("l1", "r1", "l2", "r2"):
        feeders[name] = Feeder(DataMessage)
        feeders[name].outputs["out"] >> two.inputs[name]
    await feeders["l2"].send(msg(3.0))
    await feeders["r2"].send(msg(3.002))
    await feeders["l1"].send(msg(1.0))  # the first set still waits for r1: no effect on the second
    await eventually(lambda: [label for label, _ in two.got] == ["second"])
    await feeders["r1"].send(msg(1.0))
    await feeders["l1"].send(msg(1.5))  # ticks the actor again
    await eventually(lambda: [label for label, _ in two.got] == ["second", "first"])
    sections = two.stats()["sync"]
    assert set(sections) == {"first", "sync1"}
    assert sections["sync1"]["complete"] == 1 and sections["first"]["inputs"]["l1"]["matched"] == 1
    with pytest.raises(ValueError, match="already belong to sync set 'first'"):
        InputSync(two.inputs["l1"], two.inputs["l2"])
    await two.stop()


async def test_a_message_without_timestamp_is_an_error_naming_the_port() -> None:
    class Raw(Actor):
        default_fps = None

        def __init__(self) -> None:
            super().__init__()
            self.inputs["x"] = StreamInput("x")
            self.sync = InputSync(self.inputs["x"])

        async def process(self, tick: TimedTick) -> None:
            await self.sync.read()

    raw = Raw()
    feeder = Feeder()
    feeder >> raw
    await feeder.send(b"not a message")
    await eventually(lambda: raw.state.value == "failed")
    assert "inputs['x']" in raw.stats()["failure"] and "policy='immediate'" in raw.stats()["failure"]


async def test_end_of_stream_releases_what_waits_then_ends_the_actor() -> None:
    matcher, feed = await wired(("a", "b"))
    await feed["a"].send(msg(1.0), msg(2.0))
    await eventually(lambda: matcher.sync.stats["a"].buffered == 2)
    assert matcher.sets == []
    await feed["b"].end()
    await eventually(lambda: len(matcher.sets) == 2)
    assert shape(matcher.sets) == [{"a": 1.0, "b": None}, {"a": 2.0, "b": None}]
    await feed["a"].end()
    await eventually(lambda: matcher.state.value == "stopped")


async def test_stopping_the_actor_while_it_waits_leaves_no_task_behind() -> None:
    matcher, feed = await wired(("a", "b"))
    await feed["a"].send(msg(1.0))
    await eventually(lambda: matcher.sync.stats["a"].buffered == 1)
    await matcher.stop()
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if "StreamInput.read" in repr(t.get_coro())]
    assert pending == []


def test_bad_configuration_is_refused_clearly() -> None:
    port = StreamInput("a")
    with pytest.raises(ValueError, match="policy must be one of"):
        InputSync(port, policy="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        InputSync()
    with pytest.raises(ValueError, match="distinct names"):
        InputSync(port, StreamInput("a"))


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("multicam_align", ROOT / "examples" / "multicam_align.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["multicam_align"] = module
    spec.loader.exec_module(module)
    return module


async def test_three_jittered_lossy_cameras_align_into_triplets() -> None:
    """Seed 003's example 4: 30 fps, independent start offsets, ±5 ms jitter, 1 % loss."""
    example = _example()
    report = await example.align_cameras(seconds=4.0, seed=7)
    existing = report.existing_triplets
    assert len(existing) >= 90, report
    assert report.mismatched == 0, report.mismatched_sets
    assert len(report.matched_triplets & existing) >= 0.99 * len(existing), report
    assert report.composited >= len(report.matched_triplets)  # every matched set was composited
    budget = example.TOLERANCE + 1 / example.FPS
    # Added latency while all three run: release time minus the arrival of the set's newest
    # member. Complete sets go out on that arrival; a set with a lost frame waits for the
    # camera's next frame (one period), within the budget.
    assert max(report.wall_latencies) <= budget, sorted(report.wall_latencies)[-5:]


async def test_compositor_align_composites_matched_frames_side_by_side() -> None:
    from streamlib import VideoFrame
    from streamlib.actors import Compositor
    from streamlib.testing import Probe

    comp = Compositor(12, 2, fps=None, base=None, align=0.012)
    probe = Probe(VideoFrame)
    comp >> probe
    feeders = {}
    for i, name in enumerate(("left", "centre", "right")):
        feeders[name] = Feeder(VideoFrame)
        feeders[name].outputs["out"] >> comp.add_layer(name, x=4 * i, maxsize=16)

    def frame(value: int, ts: float, n: int) -> VideoFrame:
        return VideoFrame(np.full((2, 4, 3), value, np.uint8), timestamp=ts, frame_number=n, clock_source_id="ptp:x:0")

    jitter = {"left": 0.004, "centre": -0.003, "right": 0.001}
    for n in range(4):
        for i, (name, feeder) in enumerate(feeders.items()):
            if name == "centre" and n == 2:
                continue  # lost: the centre panel keeps frame 1
            await feeder.send(frame(10 * n + i, 10 + n / 30 + jitter[name], n))
    frames = await probe.wait_for(3)  # the set of frame 3 waits for what follows
    panels = [[int(f.data[0, 4 * i, 0]) for i in range(3)] for f in frames[:3]]
    assert panels == [[0, 1, 2], [10, 11, 12], [20, 11, 22]]
    assert [f.frame_number for f in frames[:3]] == [0, 1, 2]
    await comp.stop()
