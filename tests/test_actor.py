"""The actor: self-starting, where it runs, how it ticks, how it ends."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from conftest import Counter, Invert, Relay, eventually, frame

from streamlib import (
    Actor,
    DataMessage,
    EndOfStream,
    LifecycleState,
    StreamInput,
    StreamOutput,
    ThreadPoolDispatcher,
    TimedTick,
    VideoFrame,
)
from streamlib.testing import Feeder, ManualClock, Probe


class Recorder(Actor):
    """Records hook calls and ticks; no inputs, so it runs on its own clock."""

    default_fps = 100.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.events: list[str] = []
        self.tick_log: list[TimedTick] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def process(self, tick: TimedTick) -> None:
        self.tick_log.append(tick)

    async def on_stop(self) -> None:
        self.events.append("stop")


# -- self-starting ---------------------------------------------------------------------


async def test_constructing_an_actor_starts_it() -> None:
    rec = Recorder()
    await eventually(lambda: len(rec.tick_log) >= 2)
    assert rec.events == ["start"]
    assert rec.state is LifecycleState.RUNNING
    assert await rec.stop() is LifecycleState.STOPPED
    assert rec.events == ["start", "stop"]


def test_without_a_running_loop_actors_run_on_the_shared_background_loop() -> None:
    rec = Recorder()
    deadline = time.monotonic() + 2
    while len(rec.tick_log) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rec.tick_log) >= 3
    assert rec.event_loop.is_running() and threading.current_thread() is threading.main_thread()
    assert type(rec.event_loop).__module__.startswith("uvloop")
    assert rec.stop().wait(2) is LifecycleState.STOPPED


def test_process_never_runs_before_the_subclass_init_returns() -> None:
    """The background loop runs in another thread: the task must still wait for __init__."""
    errors: list[str] = []

    class SlowInit(Actor):
        first_tick_grace = 0  # an unconnected source: tick at once rather than wait for a subscriber

        def __init__(self) -> None:
            super().__init__()
            time.sleep(0.05)  # the loop thread is free to run meanwhile
            self.outputs["out"] = StreamOutput("out", object)
            self.ready = True

        async def on_start(self) -> None:
            if not getattr(self, "ready", False):
                errors.append("on_start before __init__ returned")

        async def process(self, tick: TimedTick) -> None:
            if "out" not in self.outputs:
                errors.append("process before ports were declared")

    actor = SlowInit()
    time.sleep(0.05)
    actor.stop().wait(2)
    assert errors == []
    assert actor.stats()["ticks"] > 0


def test_actors_can_be_constructed_from_many_threads_at_once() -> None:
    made: list[Recorder] = []
    lock = threading.Lock()

    def build() -> None:
        for _ in range(20):
            rec = Recorder()
            with lock:
                made.append(rec)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a.path for a in made}) == 80  # unique names
    time.sleep(0.1)
    assert all(a.events == ["start"] for a in made)
    for a in made:
        a.stop()
    assert all(a.join().wait(2) is LifecycleState.STOPPED for a in made)


async def test_repr_shows_state_ports_and_counts() -> None:
    feeder, inv = Feeder(VideoFrame), Invert(name="inverter")
    feeder >> inv
    await feeder.send(frame(1))
    await asyncio.sleep(0.02)
    text = repr(inv)
    assert "Invert /inverter RUNNING" in text and "video[" in text and "dropped=0" in text and "sent=1" in text
    await feeder.end()
    await inv.join()
    assert "STOPPED" in repr(inv)


# -- clocks ------------------------------------------------------------------------------


async def test_a_bathtub_actor_runs_its_own_clock_at_default_fps() -> None:
    rec = Recorder()
    await asyncio.sleep(0.3)
    await rec.stop()
    n = len(rec.tick_log)
    assert 20 <= n <= 40  # 100 fps for 0.3 s
    first = rec.tick_log[0]
    assert first.clock_source_id == f"clock:{rec.path}" and first.fps == 100.0
    assert [t.frame_number for t in rec.tick_log[:3]] == [0, 1, 2]


async def test_a_connected_actor_ticks_on_arrival_with_the_upstream_metadata() -> None:
    feeder, relay, probe = Feeder(DataMessage), Relay(), Probe(DataMessage)
    feeder >> relay >> probe
    sent = [
        DataMessage(i, timestamp=100.0 + i, frame_number=i, clock_source_id="cam", clock_rate=25.0) for i in range(3)
    ]
    for msg in sent:
        await feeder.send(msg)
        await probe.wait_for(msg.frame_number + 1)
    assert [(t.timestamp, t.frame_number, t.clock_source_id, t.fps) for t in relay.seen_ticks] == [
        (100.0 + i, i, "cam", 25.0) for i in range(3)
    ]
    await feeder.end()


async def test_messages_built_with_at_carry_the_tick_metadata() -> None:
    tick = TimedTick(12.5, 7, "clock-x", 30.0)
    msg = VideoFrame.at(tick, data=frame().data)
    assert (msg.timestamp, msg.frame_number, msg.clock_source_id, msg.clock_rate) == (12.5, 7, "clock-x", 30.0)
    assert msg.tick() == tick
    assert tick.clock_source == "clock-x" and tick.clock_rate == 30.0


async def test_with_several_upstreams_the_first_to_deliver_drives_the_others_are_sampled() -> None:
    class Pair(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["a"] = StreamInput("a", DataMessage)
            self.inputs["b"] = StreamInput("b", DataMessage, maxsize=10)
            self.seen: list[tuple[str | None, Any]] = []

        async def process(self, tick: TimedTick) -> None:
            b = await self.inputs["b"].try_read()
            self.seen.append((tick.clock_source_id, b.data if b else None))
            await self.inputs["a"].try_read()

    fa, fb = Feeder(DataMessage), Feeder(DataMessage)
    pair = Pair()
    fa >> pair.inputs["a"]
    fb >> pair.inputs["b"]
    await fa.send(DataMessage("a0", clock_source_id="A"))
    await asyncio.sleep(0.02)
    await fb.send(DataMessage("b0", clock_source_id="B"), DataMessage("b1", clock_source_id="B"))
    await asyncio.sleep(0.02)
    assert len(pair.seen) == 1  # b's arrivals did not tick the actor
    await fa.send(DataMessage("a1", clock_source_id="A"))
    await eventually(lambda: len(pair.seen) == 2)
    assert pair.seen == [("A", None), ("A", "b0")]
    await pair.stop()


async def test_silent_upstream_falls_back_to_the_own_clock_then_resyncs() -> None:
    class Watch(Relay):
        default_fps = 100.0
        silence_periods = 3.0

    feeder, watch = Feeder(DataMessage), Watch()
    feeder >> watch
    await feeder.send(DataMessage(0, clock_source_id="cam", clock_rate=100.0))
    await eventually(lambda: len(watch.seen_ticks) >= 1)
    assert watch.seen_ticks[0].clock_source_id == "cam"

    def own() -> list[TimedTick]:  # silence: 3 periods of 10 ms, then the own clock ticks
        return [t for t in watch.seen_ticks if t.clock_source_id == f"clock:{watch.path}"]

    await eventually(lambda: len(own()) >= 5)
    await feeder.send(DataMessage(1, clock_source_id="cam", clock_rate=100.0))
    await asyncio.sleep(0.005)
    before = len(watch.seen_ticks)
    assert watch.seen_ticks[-1].clock_source_id == "cam"
    await asyncio.sleep(0.02)  # re-synced and silent again only after 30 ms: no own ticks yet
    assert len(watch.seen_ticks) == before
    await watch.stop()


async def test_default_fps_none_makes_an_actor_purely_message_driven() -> None:
    probe = Probe(DataMessage)  # default_fps = None, nothing connected
    await asyncio.sleep(0.05)
    assert probe.stats()["ticks"] == 0
    await probe.stop()


async def test_an_explicit_clock_drives_the_actor_tick_by_tick() -> None:
    clock = ManualClock(fps=10)
    feeder, inv, probe = Feeder(VideoFrame), Invert(clock=clock), Probe(VideoFrame)
    feeder >> inv >> probe
    await feeder.send(frame(3), frame(4))
    await asyncio.sleep(0.02)
    assert inv.stats()["ticks"] == 0  # arrivals do not tick an actor with an explicit clock
    await clock.step()
    assert (await probe.wait_for(1))[0].data[0, 0, 0] == 252
    await clock.step()
    assert (await probe.wait_for(2))[1].data[0, 0, 0] == 251
    assert inv.stats()["ticks"] == 2
    await inv.stop()


# -- lifecycle and end of stream ---------------------------------------------------------


async def test_an_actor_may_stop_itself() -> None:
    src = Counter(fps=500, limit=5)
    assert await asyncio.wait_for(src.join(), 2) is LifecycleState.STOPPED
    assert src.count == 5


async def test_end_of_stream_stops_the_chain_after_draining() -> None:
    src = Counter(fps=1000, limit=50)
    relay = Relay(overflow="block", maxsize=4)
    probe = Probe(DataMessage, overflow="block", maxsize=2)
    src >> relay >> probe
    assert await asyncio.wait_for(probe.join(), 5) is LifecycleState.STOPPED
    assert relay.state is LifecycleState.STOPPED
    assert [m.data for m in probe.messages] == list(range(50))
    assert probe.inputs["in"].ended


async def test_on_end_of_stream_can_be_overridden_to_keep_running() -> None:
    class Keep(Relay):
        def on_end_of_stream(self) -> None:
            self.ended_once = True

    feeder, keep = Feeder(DataMessage), Keep()
    feeder >> keep
    await feeder.send(DataMessage(1))
    await feeder.end()
    await eventually(lambda: keep.ended_once)
    assert keep.state is LifecycleState.RUNNING
    await keep.stop()


async def test_stop_interrupts_a_process_waiting_in_read_or_elsewhere() -> None:
    class Waiter(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", DataMessage)

        async def process(self, tick: TimedTick) -> None:
            await asyncio.sleep(3600)

    class Reader(Waiter):
        default_fps = 100.0

        async def process(self, tick: TimedTick) -> None:
            await self.inputs["in"].read()

    for cls in (Waiter, Reader):
        actor = cls()
        if cls is Waiter:
            out = StreamOutput("o", DataMessage)
            out >> actor
            await out.send(DataMessage(1))
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(actor.stop(), 1) is LifecycleState.STOPPED


async def test_read_raises_end_of_stream_when_upstream_is_gone() -> None:
    port = StreamInput("in", DataMessage)
    out = StreamOutput("out", DataMessage)
    out >> port
    await out.send(DataMessage(1))
    out.end_of_stream()
    assert (await port.read()).data == 1
    with pytest.raises(EndOfStream):
        await port.read()


async def test_a_failing_actor_is_contained_and_logged_with_its_path(caplog: pytest.LogCaptureFixture) -> None:
    class Boom(Relay):
        async def process(self, tick: TimedTick) -> None:
            raise ValueError("kaboom")

    src, boom, bystander = Counter(fps=100), Boom(name="boom"), Recorder()
    src >> boom
    with caplog.at_level(logging.ERROR, logger="streamlib"):
        assert await asyncio.wait_for(boom.join(), 2) is LifecycleState.FAILED
    assert isinstance(boom.failure, ValueError)
    record = next(r for r in caplog.records if "/boom" in r.getMessage())
    assert "kaboom" in record.getMessage() and record.exc_info is not None
    assert src.state is LifecycleState.RUNNING and bystander.state is LifecycleState.RUNNING
    n = len(bystander.tick_log)
    await eventually(lambda: len(bystander.tick_log) > n)
    assert boom.inputs["in"].mailbox.closed  # gone for good: senders can never block on it
    await src.stop()
    await bystander.stop()


async def test_on_stop_runs_on_failure_too() -> None:
    class Fragile(Recorder):
        async def process(self, tick: TimedTick) -> None:
            raise RuntimeError("no")

    f = Fragile()
    assert await f.join() is LifecycleState.FAILED
    assert f.events == ["start", "stop"]


async def test_children_stop_with_their_parent_and_await_stop_waits_for_all() -> None:
    parent = Recorder(name="app")
    pipeline = parent.spawn(Recorder, name="pipeline")
    encoder = pipeline.spawn(Recorder, name="encoder")
    assert encoder.path == "/app/pipeline/encoder"
    assert parent.children == [pipeline] and encoder.parent is pipeline
    assert await parent.stop() is LifecycleState.STOPPED
    assert encoder.events == ["start", "stop"] and pipeline.events == ["start", "stop"]
    assert encoder.state is LifecycleState.STOPPED


async def test_stats_counts_ticks_messages_and_drops() -> None:
    out = StreamOutput("out", DataMessage)
    probe = Probe(DataMessage, maxsize=3)
    out >> probe
    for i in range(3):
        await out.send(DataMessage(i))
    await probe.wait_for(3)
    stats = probe.stats()
    assert stats["inputs"]["in"]["received"] == 3 and stats["ticks"] >= 1 and stats["state"] == "running"
    await probe.stop()


async def test_a_message_driven_actor_switches_away_from_a_quiet_driver() -> None:
    class Pair(Actor):
        default_fps = None
        silence_periods = 2.0

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["a"] = StreamInput("a", DataMessage)
            self.inputs["b"] = StreamInput("b", DataMessage)
            self.sources: list[str | None] = []

        async def process(self, tick: TimedTick) -> None:
            self.sources.append(tick.clock_source_id)
            for port in self.inputs.values():
                await port.try_read()

    fa, fb, pair = Feeder(DataMessage), Feeder(DataMessage), Pair()
    fa >> pair.inputs["a"]
    fb >> pair.inputs["b"]
    await fa.send(DataMessage(0, clock_source_id="A", clock_rate=100.0))
    for i in range(10):
        await asyncio.sleep(0.01)
        await fb.send(DataMessage(i, clock_source_id="B", clock_rate=100.0))
    await eventually(lambda: pair.sources.count("B") >= 5)
    assert pair.sources[0] == "A"
    await pair.stop()


async def test_awaiting_its_own_stop_from_process_is_an_error_not_a_hang() -> None:
    class Impatient(Recorder):
        async def process(self, tick: TimedTick) -> None:
            await self.stop()

    actor = Impatient()
    assert await asyncio.wait_for(actor.join(), 2) is LifecycleState.FAILED
    assert isinstance(actor.failure, RuntimeError) and "without 'await'" in str(actor.failure)


async def test_an_actor_built_inside_a_thread_dispatched_hook_lives_on_the_creators_loop() -> None:
    class Maker(Actor):
        default_fps = 100.0

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.made: list[Actor] = []

        async def process(self, tick: TimedTick) -> None:
            if not self.made:
                self.made.append(Probe())

    maker = Maker(dispatcher="thread")
    await asyncio.sleep(0.05)
    (made,) = maker.made
    assert made.event_loop is asyncio.get_running_loop()
    await maker.stop()
    assert await asyncio.wait_for(made.stop(), 2) is LifecycleState.STOPPED


async def test_driving_input_names_the_input_that_drives_while_it_is_live() -> None:
    class Comp(Actor):
        driving_input = "base"

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["base"] = StreamInput("base", DataMessage)
            self.inputs["layer"] = StreamInput("layer", DataMessage, maxsize=10)
            self.sources: list[str | None] = []

        async def process(self, tick: TimedTick) -> None:
            self.sources.append(tick.clock_source_id)
            await self.inputs["base"].try_read()

    base, layer, comp = Feeder(DataMessage), Feeder(DataMessage), Comp()
    base >> comp.inputs["base"]
    layer >> comp.inputs["layer"]
    await layer.send(DataMessage(0, clock_source_id="L"))  # delivers first, but may not drive
    await asyncio.sleep(0.02)
    assert comp.sources == []
    await base.send(DataMessage(0, clock_source_id="B"))
    await eventually(lambda: comp.sources != [])
    assert comp.sources == ["B"]
    await comp.stop()


async def test_framework_options_reach_actor_when_a_base_class_declares_them() -> None:
    class Base(Actor):
        def __init__(self, size: int = 1, dispatcher: Any = "thread", **kw: Any) -> None:
            super().__init__(dispatcher=dispatcher, **kw)
            self.size = size

        async def process(self, tick: TimedTick) -> None:
            pass

    class Child(Base):
        def __init__(self, **kw: Any) -> None:
            super().__init__(size=3, **kw)

    custom = ThreadPoolDispatcher(workers=1)
    child = Child(dispatcher=custom)
    assert child.dispatcher is custom and child.size == 3
    await child.stop()


async def test_an_unread_message_ticks_once_instead_of_spinning() -> None:
    class Ignore(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", DataMessage)

        async def process(self, tick: TimedTick) -> None:
            pass  # never reads

    feeder, ignore = Feeder(DataMessage), Ignore()
    feeder >> ignore
    await feeder.send(DataMessage(1))
    await eventually(lambda: ignore.stats()["ticks"] >= 1)
    await asyncio.sleep(0.05)
    assert ignore.stats()["ticks"] == 1  # one arrival, one tick: the queued message is not re-ticked
    await feeder.send(DataMessage(2))
    await eventually(lambda: ignore.stats()["ticks"] >= 2)
    await asyncio.sleep(0.02)
    assert ignore.stats()["ticks"] == 2
    await ignore.stop()


async def test_stopped_actors_can_be_garbage_collected() -> None:
    import gc
    import weakref

    refs = []
    for _ in range(20):
        actor = Recorder()
        refs.append(weakref.ref(actor))
        await actor.stop()
    del actor
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
