"""Hand-off (issue 14): a sleeping actor's tick runs in the turn of the code that woke it
(see ``streamlib.handoff``). It must be invisible to the actor -- its context, its task,
its failures, its accounting -- and must not let a busy sender hold the loop."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import sys
import time
import warnings
from typing import Any, ClassVar

import pytest
from conftest import eventually

from streamlib import (
    Actor,
    DataMessage,
    LifecycleState,
    StreamInput,
    StreamOutput,
    Supervisor,
    TimedTick,
    current_actor,
)
from streamlib.dispatch.asyncio import BlockingWarning
from streamlib.handoff import MAX_DEPTH
from streamlib.testing import Feeder, Probe

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Burst(Actor):
    """Sends ``n`` DataMessages in its first tick, then stops (end of stream downstream)."""

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.n = n
        self.outputs["out"] = StreamOutput("out", DataMessage)

    def on_start(self) -> None:
        who.set("burst")

    async def process(self, tick: TimedTick) -> None:
        for i in range(self.n):
            await self.outputs["out"].send(DataMessage(i))
        self.stop()


class Relay(Actor):
    """Forwards every message losslessly; records who it ran as; optional waits and failures."""

    default_fps: ClassVar[float | None] = None
    deepest = 0  # the most Relay.process calls seen on one stack

    def __init__(self, wait: bool = False, fail_at: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=2, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)
        self.wait, self.fail_at = wait, fail_at
        self.seen: list[tuple[Actor | None, asyncio.Task[Any] | None, str]] = []
        self.inside = False
        self.overlapped = False

    def on_start(self) -> None:
        who.set(self.name)  # in this actor's context only

    async def process(self, tick: TimedTick) -> None:
        if self.inside:
            self.overlapped = True
        self.inside = True
        Relay.deepest = max(Relay.deepest, _relays_on_stack())
        try:
            message = await self.inputs["in"].try_read()
            if message is None:
                return
            self.seen.append((current_actor(), asyncio.current_task(), who.get()))
            if message.data == self.fail_at:
                raise RuntimeError(f"relay fails at {message.data}")
            if self.wait:
                await asyncio.sleep(0)  # a real suspension in the middle of the tick
            await self.outputs["out"].send(message)
        finally:
            self.inside = False


def _relays_on_stack() -> int:
    frame, found = sys._getframe(), 0
    while frame is not None:
        found += frame.f_code is Relay.process.__code__
        frame = frame.f_back  # type: ignore[assignment]
    return found


async def paced(n: int, into: Actor, pause: float = 0.002) -> None:
    """Send DataMessage(0 .. n-1) to ``into`` from this task, one at a time, letting the
    chain fall asleep in between (so each message is handed off)."""
    feeder = Feeder(DataMessage)
    feeder >> into
    for i in range(n):
        await feeder.send(DataMessage(i))
        await asyncio.sleep(pause)


def link(*actors: Actor) -> None:
    """``a >> b >> c ...``"""
    for upstream, downstream in itertools.pairwise(actors):
        upstream >> downstream


def chain(n: int, stages: int, **relay: Any) -> tuple[Burst, list[Relay], Probe]:
    burst = Burst(n)
    relays = [Relay(**relay) for _ in range(stages)]
    probe = Probe(DataMessage, overflow="block")
    link(burst, *relays, probe)
    return burst, relays, probe


async def test_a_handed_off_tick_runs_as_its_actor_in_its_task_and_context() -> None:
    _, relays, probe = chain(200, 3)
    await probe.wait_for(200)
    assert [m.data for m in probe.messages] == list(range(200))
    for relay in relays:
        assert relay.stats()["handed_off"] > 100  # most ticks ran in the sender's turn...
        for actor, task, name in relay.seen:  # ...and every one of them ran as the relay
            assert actor is relay and task is relay._core.task and name == relay.name
        assert not relay.overlapped
    assert who.get() == "nobody"  # nothing leaked into the test's context


async def test_a_tick_that_waits_is_finished_by_its_own_task_in_order() -> None:
    relays = [Relay(wait=True) for _ in range(4)]
    probe = Probe(DataMessage, overflow="block")
    link(*relays, probe)
    await paced(60, relays[0])
    await probe.wait_for(60)
    assert [m.data for m in probe.messages] == list(range(60))
    for relay in relays:
        assert relay.stats()["handed_off"] >= 30 and not relay.overlapped
        assert all(task is relay._core.task for _, task, _ in relay.seen)
        stats = relay.inputs["in"].statistics()
        assert stats.delivered == stats.taken == 60 and stats.lost == 0


async def test_a_failing_handed_off_tick_fails_its_actor_and_loses_only_its_message() -> None:
    burst, (relay,), probe = chain(50, 1, fail_at=20)
    assert await asyncio.wait_for(relay.join(), 5) is LifecycleState.FAILED
    assert str(relay.failure) == "relay fails at 20"
    stats = relay.inputs["in"].statistics()
    assert stats.lost == 1 and stats.taken == 20
    assert stats.delivered == stats.taken + stats.lost + stats.dropped + stats.discarded + stats.queued
    assert [m.data for m in probe.messages] == list(range(20))
    await asyncio.wait_for(burst.join(), 5)  # the sender was not hurt: it ran to its end


async def test_a_supervisor_restarts_an_actor_that_failed_in_a_handed_off_tick() -> None:
    class Pipeline(Supervisor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.relay = Relay(fail_at=5, parent=self, name="relay")

    burst = Burst(40)
    pipeline = Pipeline()
    probe = Probe(DataMessage, overflow="block")
    burst >> pipeline.relay >> probe
    await eventually(lambda: len(probe.messages) == 39)  # all but the one lost in the crash
    relay = pipeline.children[0]
    assert relay.stats()["restarts"] == 1 and relay.failure is None
    assert [m.data for m in probe.messages] == [i for i in range(40) if i != 5]
    pipeline.stop()


async def test_a_timeout_inside_a_handed_off_tick_cancels_only_that_actor() -> None:
    class Patient(Relay):
        timeouts = 0

        async def process(self, tick: TimedTick) -> None:
            message = self.inputs["in"].read_nowait()
            if message is None:
                return
            try:
                async with asyncio.timeout(0.01):  # binds to the current task: it must be ours
                    await asyncio.sleep(10)
            except TimeoutError:
                self.timeouts += 1
            await self.outputs["out"].send(message)

    patient = Patient()
    probe = Probe(DataMessage, overflow="block")
    patient >> probe
    await paced(5, patient, pause=0.05)  # sent from this test's task: a timeout bound to it would cancel us
    await probe.wait_for(5)
    assert patient.timeouts == 5 and patient.stats()["handed_off"] >= 3
    assert patient.state is LifecycleState.RUNNING


async def test_hand_offs_nest_no_deeper_than_the_bound() -> None:
    Relay.deepest = 0
    _, _, probe = chain(100, 3 * MAX_DEPTH)  # a chain far deeper than the bound
    await probe.wait_for(100, timeout=20)
    assert [m.data for m in probe.messages] == list(range(100))
    assert MAX_DEPTH // 2 <= Relay.deepest <= MAX_DEPTH + 1  # nested, but bounded


async def test_a_cycle_of_actors_neither_recurses_nor_stalls() -> None:
    class Ring(Relay):
        async def process(self, tick: TimedTick) -> None:
            message = self.inputs["in"].read_nowait()
            if message is not None and message.data < 2000:
                self.seen.append((None, None, ""))
                await self.outputs["out"].send(DataMessage(message.data + 1))

    first, second = Ring(), Ring()
    first >> second >> first
    starter = Burst(1)
    starter >> first
    await eventually(lambda: len(first.seen) + len(second.seen) >= 2000, timeout=10)
    assert first.state is second.state is LifecycleState.RUNNING
    first.stop()
    second.stop()


async def test_a_busy_sender_does_not_hold_the_loop() -> None:
    """A source sending a burst in one tick, through actors that all run by hand-off, still
    lets the loop turn about every millisecond (the slice), not once at the end."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    last = time.perf_counter()

    def turn() -> None:
        nonlocal last
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        if probe.inputs["in"].statistics().taken < 20_000:
            loop.call_soon(turn)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, relays, probe = chain(20_000, 4)
        began = time.perf_counter()
        loop.call_soon(turn)
        await probe.wait_for(20_000, timeout=60)
        elapsed = time.perf_counter() - began
    assert sum(r.stats()["handed_off"] for r in relays) > 60_000
    # Unsliced, the burst holds the loop for one gap of most of its length.
    assert max(gaps) < elapsed / 4, f"the loop stood still for {max(gaps):.3f} s of {elapsed:.3f} s"
    assert not [w for w in caught if issubclass(w.category, BlockingWarning)]


@pytest.mark.parametrize("dispatcher", ["thread", "asyncio"])
async def test_a_sender_on_another_thread_hands_off_on_the_receivers_loop(dispatcher: str) -> None:
    class ThreadBurst(Actor):
        def __init__(self, n: int, **kw: Any) -> None:
            super().__init__(**kw)
            self.n = n
            self.outputs["out"] = StreamOutput("out", DataMessage)

        def process(self, tick: TimedTick) -> None:  # a worker thread with "thread"
            for i in range(self.n):
                self.outputs["out"].send_nowait(DataMessage(i))
                if dispatcher == "thread":
                    time.sleep(0.002)  # the relay falls asleep in between: each arrival is handed off
            self.stop()

    source = ThreadBurst(50, dispatcher=dispatcher)
    relay = Relay()
    relay.inputs["in"] = StreamInput("in", DataMessage, maxsize=100, overflow="drop_oldest")
    probe = Probe(DataMessage)
    source >> relay >> probe
    await probe.wait_for(50)
    assert all(actor is relay and task is relay._core.task for actor, task, _ in relay.seen)
    assert [m.data for m in probe.messages] == list(range(50))
    if dispatcher == "thread":  # from a callback on the relay's loop, with no task running
        assert relay.stats()["handed_off"] >= 25


async def test_a_requested_stop_is_never_overtaken_by_a_handed_off_tick() -> None:
    relay = Relay()
    feeder = Feeder(DataMessage)
    feeder >> relay >> Probe(DataMessage)
    await feeder.send(DataMessage(1))
    await eventually(lambda: relay._core.handoff_port is not None and len(relay.seen) == 1)
    relay.stop()  # rings its doorbell: the stop is pending, the task not yet awake...
    await feeder.send(DataMessage(2))  # ...so this message must not be handed off before it
    assert await asyncio.wait_for(relay.join(), 5) is LifecycleState.STOPPED
    assert len(relay.seen) == 1
    stats = relay.inputs["in"].statistics()
    assert stats.delivered == 2 and stats.taken == 1 and stats.discarded == 1


async def test_profiling_times_each_tick_alone_then_hand_off_resumes() -> None:
    """While profiling is on, no tick is handed off (a nested tick would be timed inside its
    sender's too); switched off, hand-offs resume with the re-bound callable."""
    from streamlib.observe import profiling

    relay = Relay()
    probe = Probe(DataMessage, overflow="block")
    relay >> probe
    try:
        profiling.enable()
        await paced(20, relay)
        await probe.wait_for(20)
        assert relay.stats()["handed_off"] == 0 and relay.stats()["ticks"] >= 20
        assert relay.stats()["profile"]["process"]["count"] >= 20  # and each tick was timed
    finally:
        profiling.disable()
    await paced(20, relay)
    await probe.wait_for(40)
    assert relay.stats()["handed_off"] >= 10
    assert [m.data for m in probe.messages] == list(range(20)) * 2


async def test_a_dispatcher_built_without_hand_off_ticks_every_actor_in_its_task() -> None:
    from streamlib import AsyncioDispatcher

    plain = AsyncioDispatcher(hand_off=False)
    relays = [Relay(dispatcher=plain) for _ in range(3)]
    probe = Probe(DataMessage, overflow="block", dispatcher=plain)
    link(*relays, probe)
    await paced(30, relays[0])
    await probe.wait_for(30)
    assert [m.data for m in probe.messages] == list(range(30))
    assert all(r.stats()["handed_off"] == 0 and r.stats()["ticks"] >= 30 for r in relays)
    assert all(task is relay._core.task for relay in relays for _, task, _ in relay.seen)


def test_a_loop_is_not_kept_alive_by_its_hand_off_budget() -> None:
    import gc
    import weakref

    from streamlib.handoff import loop_slice

    loop = asyncio.new_event_loop()
    loop_slice(loop).open_slice()
    loop.run_until_complete(asyncio.sleep(0))  # the slice closes with the turn
    gone = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert gone() is None


async def test_a_stop_between_hand_over_and_take_over_closes_the_unfinished_tick_at_the_end() -> None:
    """A handed-off tick that waits is handed to the actor's task; a stop in that same turn
    cancels the task before it takes the tick over. The unfinished ``process`` call must be
    closed when the actor ends (its ``finally`` runs), not whenever the collector gets to it."""

    class Waits(Actor):
        default_fps: ClassVar[float | None] = None

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", DataMessage)
            self.closed = False

        async def process(self, tick: TimedTick) -> None:
            message = await self.inputs["in"].try_read()
            if message is None or message.data == 0:
                return
            try:
                await asyncio.sleep(10)
            finally:
                self.closed = True

    feeder = Feeder(DataMessage)
    actor = Waits()
    feeder >> actor
    await asyncio.sleep(0.05)
    await feeder.send(DataMessage(0))  # makes "in" its driver
    await asyncio.sleep(0.05)  # asleep on its driver: the next message is handed off
    await feeder.send(DataMessage(1))
    assert actor.stats()["handed_off"] == 1 and not actor.closed
    await actor.stop()  # in the same turn: the task is cancelled before it takes the tick over
    assert actor.closed
    feeder.stop()
