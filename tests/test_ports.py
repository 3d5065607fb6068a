"""Inputs, outputs and ``>>``: wiring rules, type errors naming both ends, fan-out/in, rewiring."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Counter, Invert, Relay, frame

from streamlib import Actor, AudioBuffer, DataMessage, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.errors import ActorDefinitionError
from streamlib.testing import Feeder, Probe


class Mix(Actor):
    """Two inputs of the same type: actor-to-actor wiring is ambiguous."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["base"] = StreamInput("base", VideoFrame)
        self.inputs["layer"] = StreamInput("layer", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        pass


class AudioSink(Actor):
    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["audio"] = StreamInput("audio", AudioBuffer)

    async def process(self, tick: TimedTick) -> None:
        pass


async def test_rshift_returns_the_right_side_so_chains_compose() -> None:
    feeder, inv, probe = Feeder(VideoFrame), Invert(), Probe(VideoFrame)
    assert (feeder >> inv) is inv
    assert (inv.outputs["video"] >> probe.inputs["in"]) is probe.inputs["in"]
    await feeder.send(frame(10))
    (msg,) = await probe.wait_for(1)
    assert msg.data[0, 0, 0] == 245
    await feeder.end()
    await probe.join()


async def test_actor_to_port_and_port_to_actor() -> None:
    feeder, probe = Feeder(VideoFrame), Probe(VideoFrame)
    inv = Invert()
    assert (feeder >> inv.inputs["video"]) is inv.inputs["video"]
    assert (inv.outputs["video"] >> probe) is probe
    await feeder.send(frame(1))
    await probe.wait_for(1)
    await feeder.end()


async def test_incompatible_types_fail_at_connect_naming_both_actors_and_ports() -> None:
    src, sink = Invert(name="inv"), AudioSink(name="speaker")
    with pytest.raises(TypeError) as err:
        src.outputs["video"] >> sink.inputs["audio"]
    text = str(err.value)
    assert "/inv.outputs['video']" in text and "/speaker.inputs['audio']" in text
    assert "VideoFrame" in text and "AudioBuffer" in text
    with pytest.raises(TypeError, match="incompatible message types"):
        src >> sink
    assert sink.inputs["audio"].upstreams == ()
    await src.stop()
    await sink.stop()


async def test_several_candidate_pairs_is_an_error_listing_them() -> None:
    inv, mix = Invert(), Mix()
    with pytest.raises(TypeError) as err:
        inv >> mix
    assert "2 type-compatible pairs" in str(err.value)
    assert "inputs['base']" in str(err.value) and "inputs['layer']" in str(err.value)
    inv.outputs["video"] >> mix.inputs["layer"]  # explicit ports always work
    assert mix.inputs["layer"].connected
    await inv.stop()
    await mix.stop()


async def test_an_input_cannot_be_the_left_side() -> None:
    inv = Invert()
    with pytest.raises(TypeError, match="is an input"):
        inv.inputs["video"] >> inv
    await inv.stop()


async def test_sending_the_wrong_message_type_names_the_port() -> None:
    out = StreamOutput("video", VideoFrame)
    with pytest.raises(TypeError, match=r"outputs\['video'\] is declared for VideoFrame but was sent a int"):
        await out.send(3)


def test_ports_reject_non_class_message_types() -> None:
    with pytest.raises(ActorDefinitionError, match="msg_type must be a class"):
        StreamInput("video", "VideoFrame")


async def test_send_never_blocks_on_a_full_dropping_input_and_counts_drops() -> None:
    out = StreamOutput("out", DataMessage)
    port = StreamInput("in", DataMessage, maxsize=2)
    out >> port
    for i in range(10):
        await asyncio.wait_for(out.send(DataMessage(i)), 0.1)
    assert port.dropped == 8
    assert [(await port.try_read()).data, (await port.try_read()).data] == [8, 9]
    assert await port.try_read() is None


async def test_fan_out_delivers_the_same_object_to_every_subscriber() -> None:
    feeder, a, b = Feeder(VideoFrame), Probe(VideoFrame), Probe(VideoFrame)
    feeder >> a
    feeder >> b
    f = frame(7)
    await feeder.send(f)
    (got_a,), (got_b,) = await a.wait_for(1), await b.wait_for(1)
    assert got_a is f and got_b is f  # by reference: zero copies
    await feeder.end()


async def test_fan_in_merges_two_sources() -> None:
    f1, f2, probe = Feeder(DataMessage), Feeder(DataMessage), Probe(DataMessage)
    f1 >> probe
    f2 >> probe
    await f1.send(DataMessage("a"))
    await f2.send(DataMessage("b"))
    got = await probe.wait_for(2)
    assert sorted(m.data for m in got) == ["a", "b"]
    await f1.end()
    await asyncio.sleep(0.02)
    assert probe.state.name == "RUNNING"  # one upstream is still live
    await f2.end()
    await asyncio.wait_for(probe.join(), 2)


async def test_connections_can_be_added_and_removed_while_running() -> None:
    src = Counter(fps=200)
    first, second = Probe(DataMessage), Probe(DataMessage)
    src >> first
    await first.wait_for(3)
    src // first
    src >> second
    await second.wait_for(3)
    count = len(first.messages)
    await asyncio.sleep(0.05)
    assert len(first.messages) == count  # disconnected: nothing more arrives
    assert not first.inputs["in"].connected
    await src.stop()


async def test_relay_chain_with_block_loses_nothing() -> None:
    src = Counter(fps=2000, limit=200)
    chain = [Relay(overflow="block") for _ in range(3)]
    probe = Probe(DataMessage, overflow="block", maxsize=2)
    src >> chain[0] >> chain[1] >> chain[2] >> probe
    await asyncio.wait_for(probe.join(), 10)
    assert [m.data for m in probe.messages] == list(range(200))
    assert sum(r.inputs["in"].dropped for r in chain) == 0
