"""Supervision trees: policies, strategies, intensity, escalation, wiring kept across restarts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from conftest import Counter, Relay, eventually

from streamlib import (
    Actor,
    DataMessage,
    LifecycleState,
    RestartIntensityExceeded,
    StreamInput,
    StreamOutput,
    Supervisor,
    TimedTick,
)
from streamlib.testing import Feeder, Probe


class Crashy(Actor):
    """Relays DataMessages; raises on a message whose data is 'boom'; counts instances."""

    instances = 0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        type(self).instances += 1
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=8, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        msg = await self.inputs["in"].try_read()
        if msg is None:
            return
        if msg.data == "boom":
            raise ValueError("boom")
        if msg.data == "quit":
            self.stop()
            return
        await self.outputs["out"].send(msg)


class Idle(Actor):
    default_fps = None

    async def process(self, tick: TimedTick) -> None:
        pass


async def test_one_for_one_restart_keeps_mailboxes_and_wiring_and_counts_the_lost_message() -> None:
    sup = Supervisor(name="sup1")
    feeder = Feeder(DataMessage)
    worker = sup.spawn(Crashy, name="worker")
    probe = Probe(DataMessage)
    feeder >> worker >> probe
    await feeder.send(DataMessage("a"), DataMessage("boom"), DataMessage("b"), DataMessage("c"))
    await probe.wait_for(3)
    assert [m.data for m in probe.messages] == ["a", "b", "c"]
    new = sup.children[0]
    assert new is not worker and new.path == "/sup1/worker" and new.restarts == 1
    assert worker.state is LifecycleState.FAILED and new.state is LifecycleState.RUNNING
    assert new.inputs["in"] is worker.inputs["in"] and new.inputs["in"].lost == 1
    await feeder.send(DataMessage("d"))  # upstream wiring survived
    await probe.wait_for(4)
    await sup.stop()
    assert new.state is LifecycleState.STOPPED


async def test_restart_policies() -> None:
    sup = Supervisor(max_restarts=10)
    feeders = {p: Feeder(DataMessage) for p in ("permanent", "transient", "temporary")}
    workers = {p: sup.spawn(Crashy, name=p, restart=p) for p in feeders}
    for p, f in feeders.items():
        f >> workers[p]
    for f in feeders.values():
        await f.send(DataMessage("quit"))  # a normal exit
    await asyncio.sleep(0.05)
    names = {c.name: c for c in sup.children}
    assert names["permanent"] is not workers["permanent"]  # permanent: restarted even after a normal exit
    assert names["transient"] is workers["transient"] and workers["transient"].state is LifecycleState.STOPPED
    assert names["temporary"].state is LifecycleState.STOPPED
    await feeders["transient"].send(DataMessage("boom"))  # never reached: it is gone
    await feeders["permanent"].send(DataMessage("boom"))
    await eventually(lambda: sup.children[0].restarts == 2)
    await sup.stop()


async def test_transient_child_is_restarted_after_a_failure() -> None:
    sup = Supervisor()
    f = Feeder(DataMessage)
    w = sup.spawn(Crashy, restart="transient")
    f >> w
    await f.send(DataMessage("boom"))
    await eventually(lambda: sup.children[0] is not w)
    assert sup.children[0].state is LifecycleState.RUNNING
    await sup.stop()


async def test_an_explicit_stop_is_never_restarted() -> None:
    sup = Supervisor()
    w = sup.spawn(Idle)
    await w.stop()
    await asyncio.sleep(0.02)
    assert sup.children == [w] and w.restarts == 0
    await sup.stop()


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", [False, True, False]), ("one_for_all", [True, True, True]), ("rest_for_one", [False, True, True])],
)
async def test_strategies_restart_the_right_siblings(strategy: str, restarted: list[bool]) -> None:
    sup = Supervisor(strategy=strategy)
    first, crashy, last = sup.spawn(Idle, name="first"), sup.spawn(Crashy, name="crashy"), sup.spawn(Idle, name="last")
    feeder = Feeder(DataMessage)
    feeder >> crashy
    await feeder.send(DataMessage("boom"))
    await eventually(
        lambda: sup.children[1] is not crashy and all(c.state is LifecycleState.RUNNING for c in sup.children)
    )
    await asyncio.sleep(0.02)
    assert [new is not old for new, old in zip(sup.children, [first, crashy, last], strict=True)] == restarted
    assert [c.name for c in sup.children] == ["first", "crashy", "last"]
    await sup.stop()


async def test_past_the_restart_intensity_the_supervisor_fails_and_escalates() -> None:
    root = Supervisor(name="root", max_restarts=5)
    inner = root.spawn(Supervisor, name="inner", max_restarts=2, within=10.0)
    worker = inner.spawn(Crashy, name="worker")
    feeder, probe = Feeder(DataMessage), Probe(DataMessage)
    feeder >> worker >> probe
    for n in range(3):
        await feeder.send(DataMessage("boom"))
        if n < 2:  # the next "boom" must reach a restarted worker
            await eventually(lambda n=n: inner.children and inner.children[0].restarts == n + 1, timeout=5)
    await eventually(lambda: inner.failure is not None and root.children[0] is not inner, timeout=5)
    assert isinstance(inner.failure, RestartIntensityExceeded)
    assert inner.state is LifecycleState.FAILED
    new_inner = root.children[0]
    assert new_inner is not inner and new_inner.restarts == 1 and new_inner.path == "/root/inner"
    # The re-created worker kept the old one's wiring on both sides.
    new_worker = new_inner.children[0]
    assert new_worker.path == "/root/inner/worker" and new_worker is not worker
    await feeder.send(DataMessage("ok"))
    assert (await probe.wait_for(1))[0].data == "ok"
    await root.stop()


async def test_an_unsupervised_failure_is_logged_and_siblings_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    app = Idle(name="app")
    pipeline = app.spawn(Idle, name="pipeline")
    encoder = pipeline.spawn(Crashy, name="encoder")
    sibling = pipeline.spawn(Counter, fps=100)
    feeder = Feeder(DataMessage)
    feeder >> encoder
    with caplog.at_level(logging.ERROR, logger="streamlib"):
        await feeder.send(DataMessage("boom"))
        await encoder.join()
    assert any("/app/pipeline/encoder" in r.getMessage() and r.exc_info for r in caplog.records)
    count = sibling.count
    await eventually(lambda: sibling.count > count, timeout=5)
    assert pipeline.state is LifecycleState.RUNNING
    await app.stop()


async def test_a_restart_in_a_block_chain_loses_only_the_message_in_hand() -> None:
    sup = Supervisor(max_restarts=20)
    src = Feeder(DataMessage)
    relay = sup.spawn(Crashy)
    probe = Probe(DataMessage, overflow="block", maxsize=2)
    src >> relay >> probe
    data = [DataMessage(i) for i in range(30)]
    data[10] = DataMessage("boom")
    data[20] = DataMessage("boom")
    await src.send(*data)
    await probe.wait_for(28)
    assert [m.data for m in probe.messages] == [i for i in range(30) if i not in (10, 20)]
    assert sup.children[0].inputs["in"].lost == 2
    await src.end()
    await asyncio.wait_for(probe.join(), 2)
    await sup.stop()


async def test_stopping_the_supervisor_does_not_restart_children() -> None:
    sup = Supervisor()
    children = [sup.spawn(Relay) for _ in range(3)]
    assert await sup.stop() is LifecycleState.STOPPED
    assert sup.children == children and all(c.state is LifecycleState.STOPPED for c in children)


def test_bad_supervisor_arguments_are_rejected() -> None:
    with pytest.raises(Exception, match="strategy"):
        Supervisor(strategy="one_for_some")  # type: ignore[arg-type]


class Configurable(Crashy):
    """A Crashy whose runtime setting survives restarts through on_restart."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.setting = "from the constructor"
        self.seen_at_start: str | None = None
        self.previous: Actor | None = None

    def on_restart(self, previous: Actor) -> None:
        assert isinstance(previous, Configurable)
        if previous.setting == "explode":
            raise RuntimeError("cannot carry this")
        self.previous = previous
        self.setting = previous.setting

    async def on_start(self) -> None:
        self.seen_at_start = self.setting


async def test_on_restart_carries_runtime_configuration_before_on_start(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(max_restarts=5)
    worker = sup.spawn(Configurable)
    feeder = Feeder(DataMessage)
    feeder >> worker
    await eventually(lambda: worker.seen_at_start is not None)
    assert worker.previous is None and worker.seen_at_start == "from the constructor"  # a first start
    worker.setting = "set at runtime"
    await feeder.send(DataMessage("boom"))
    await eventually(lambda: sup.children[0] is not worker and sup.children[0].seen_at_start is not None)
    second = sup.children[0]
    assert isinstance(second, Configurable)
    assert second.previous is worker and second.seen_at_start == "set at runtime"

    second.setting = "explode"  # on_restart raises: logged, and the restart still happens
    await feeder.send(DataMessage("boom"))
    await eventually(lambda: sup.children[0] is not second and sup.children[0].seen_at_start is not None)
    third = sup.children[0]
    assert isinstance(third, Configurable) and third.state is LifecycleState.RUNNING
    assert third.seen_at_start == "from the constructor" and third.restarts == 2
    assert any("on_restart raised" in r.getMessage() for r in caplog.records)
    await feeder.stop()
    await sup.stop()
