"""Broadcast and Gather (``streamlib.actors.mesh``) in one process: fan-out, per-frame sets, counters."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from conftest import eventually

from streamlib import Actor, DataMessage, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.actors import Broadcast, Gather
from streamlib.testing import Feeder, Probe


def result(frame_number: int, value: Any = None) -> DataMessage:
    return DataMessage(frame_number if value is None else value, timestamp=frame_number / 30, frame_number=frame_number)


class Score(Actor):
    """A worker: answers each frame with a DataMessage carrying its frame number, after ``delay``."""

    default_fps = None

    def __init__(self, tag: str, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.tag = tag
        self.delay = delay
        self.inputs["in"] = StreamInput("in", VideoFrame, maxsize=64, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        while (frame := await self.inputs["in"].try_read()) is not None:
            if self.delay:
                await asyncio.sleep(self.delay)
            await self.outputs["out"].send(
                DataMessage(self.tag, timestamp=frame.timestamp, frame_number=frame.frame_number)
            )


async def gathered(**options: Any) -> tuple[Gather, dict[str, Feeder], Probe]:
    gather = Gather(3, DataMessage, **options)
    feeders = {}
    for name in gather.inputs:
        feeders[name] = Feeder(DataMessage)
        feeders[name].outputs["out"] >> gather.inputs[name]
    probe = Probe(DataMessage, maxsize=256)
    gather >> probe
    return gather, feeders, probe


async def test_broadcast_sends_every_message_to_every_output() -> None:
    feeder = Feeder(DataMessage)
    fan = Broadcast(["left", "right"], DataMessage)
    probes = {name: Probe(DataMessage) for name in fan.outputs}
    feeder >> fan
    for name, probe in probes.items():
        fan.outputs[name] >> probe
    await feeder.send(*(result(i) for i in range(5)))
    for probe in probes.values():
        got = await probe.wait_for(5)
        assert [m.frame_number for m in got] == [0, 1, 2, 3, 4]
    assert fan.sent == 5


async def test_gather_emits_complete_sets_in_frame_order_whatever_the_arrival_order() -> None:
    gather, feed, probe = await gathered(timeout=5.0)
    await feed["in2"].send(result(0, "c0"), result(1, "c1"))  # one worker runs ahead
    await feed["in0"].send(result(0, "a0"), result(1, "a1"))
    await asyncio.sleep(0.05)
    assert probe.messages == []  # in1 has answered nothing: no set is decided yet
    await feed["in1"].send(result(0, "b0"), result(1, "b1"))
    got = await probe.wait_for(2)
    assert [m.frame_number for m in got] == [0, 1]
    assert [got[0].data[n].data for n in ("in0", "in1", "in2")] == ["a0", "b0", "c0"]
    assert [got[1].data[n].data for n in ("in0", "in1", "in2")] == ["a1", "b1", "c1"]
    assert gather.counters["complete"] == 2 and gather.counters["partial"] == 0


async def test_gather_times_out_a_missing_result_and_counts_late_missing_and_duplicate() -> None:
    gather, feed, probe = await gathered(timeout=0.2)
    await feed["in0"].send(result(0), result(0))  # a duplicate
    await feed["in1"].send(result(0))
    await eventually(lambda: gather.counters["sets"] == 1, timeout=5)  # in2 silent: the set times out
    assert probe.messages == []  # partial sets are dropped by default
    await feed["in2"].send(result(0))  # its set is gone: late
    for name in ("in0", "in1", "in2"):
        await feed[name].send(result(1))
    got = await probe.wait_for(1)
    assert got[0].frame_number == 1
    lanes = gather.counters["inputs"]
    assert (lanes["in0"]["duplicate"], lanes["in2"]["missing"], lanes["in2"]["timed_out"]) == (1, 1, 1)
    assert (lanes["in2"]["late"], lanes["in0"]["late"], lanes["in0"]["matched"]) == (1, 0, 1)
    assert gather.stats()["sync"]["gather"]["dropped"] == 1


async def test_gather_can_emit_partial_sets_with_none_for_the_missing() -> None:
    gather, feed, probe = await gathered(timeout=0.1, partial="emit")
    await feed["in0"].send(result(7))
    await feed["in1"].send(result(7))
    got = await probe.wait_for(1)
    assert got[0].frame_number == 7 and got[0].data["in2"] is None
    assert (gather.counters["partial"], gather.counters["dropped"]) == (1, 0)


async def test_mesh_of_three_workers_with_a_slow_one_stays_in_order_and_complete() -> None:
    source = Feeder(VideoFrame)
    fan = Broadcast(3, VideoFrame, maxsize=64, overflow="block")
    workers = [Score("fast0"), Score("slow", delay=0.03), Score("fast2")]
    gather = Gather(3, DataMessage, timeout=5.0)
    probe = Probe(DataMessage, maxsize=256)
    source >> fan
    for i, worker in enumerate(workers):
        fan.outputs[f"out{i}"] >> worker >> gather.inputs[f"in{i}"]
    gather >> probe
    frames = [VideoFrame(np.zeros((4, 4, 3), np.uint8), timestamp=i / 30, frame_number=i) for i in range(20)]
    await source.send(*frames)
    got = await probe.wait_for(20, timeout=20)
    assert [m.frame_number for m in got] == list(range(20))
    assert all([s.data[n].data for n in ("in0", "in1", "in2")] == ["fast0", "slow", "fast2"] for s in got)
    assert gather.counters["partial"] == 0


def test_bad_worker_lists_are_refused_with_the_actor_named() -> None:
    with pytest.raises(ValueError, match="Gather: workers must be"):
        Gather(["a", "a"])
    with pytest.raises(ValueError, match="Broadcast: workers must be"):
        Broadcast(0)
