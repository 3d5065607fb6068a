"""The public supervision protocol: a custom supervisor, restart backoff, runtime ports, clock modes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conftest import eventually

from streamlib import (
    Actor,
    Cause,
    ChildFate,
    ClockMode,
    DataMessage,
    LifecycleState,
    StreamInput,
    StreamOutput,
    Supervisor,
    TimedTick,
)
from streamlib.testing import Feeder, Probe


class Fragile(Actor):
    """Relays DataMessages and raises on 'boom'."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=8, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        msg = await self.inputs["in"].try_read()
        if msg is not None and msg.data == "boom":
            raise ValueError("boom")
        if msg is not None:
            await self.outputs["out"].send(msg)


# A supervisor written by a user with nothing but the public protocol: restart every failed
# child after an exponentially growing delay (10 ms, 20 ms, 40 ms, ...).
class BackoffSupervisor(Actor):
    default_fps = None

    def __init__(self, base: float = 0.01, **kw: Any) -> None:
        super().__init__(**kw)
        self.base = base
        self.delays: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        pass

    def on_child_ended(self, child: Actor, cause: Cause, failure: BaseException | None) -> ChildFate:
        if self.stopping:
            return ChildFate.DEFER
        if failure is None or child.restart_policy == "temporary":
            return ChildFate.END
        delay = self.base * 2 ** len(self.delays)
        self.delays.append(delay)

        async def restart() -> None:
            if not self.stopping:
                child.build_replacement()

        self.event_loop.call_later(delay, self.run_between_ticks, restart)
        return ChildFate.RESTART


async def test_a_custom_supervisor_restarts_with_backoff_through_the_public_protocol() -> None:
    sup = BackoffSupervisor(name="backoff")
    feeder, probe = Feeder(DataMessage), Probe(DataMessage)
    worker = sup.spawn(Fragile, name="worker")
    feeder >> worker >> probe
    await feeder.send(DataMessage("a"), DataMessage("boom"), DataMessage("b"), DataMessage("boom"), DataMessage("c"))
    got = await probe.wait_for(3, timeout=10)
    assert [m.data for m in got] == ["a", "b", "c"]  # wiring and queued messages survived both restarts
    assert sup.delays == [0.01, 0.02]
    current = sup.children[0]
    assert current is not worker and current.restarts == 2 and current.name == "worker"
    assert worker.replaced_by is not None
    await sup.stop()
    await feeder.stop()
    await probe.stop()


async def test_the_supervisor_backs_off_a_child_that_keeps_failing() -> None:
    class Bomb(Actor):
        default_fps = 200.0

        async def process(self, tick: TimedTick) -> None:
            raise RuntimeError("always")

    sup = Supervisor(max_restarts=1000, within=1.0, min_backoff=0.02, max_backoff=0.2, name="storm")
    sup.spawn(Bomb, name="bomb")
    start = time.monotonic()
    await asyncio.sleep(1.0)
    restarts = sup.children[0].restarts if sup.children else 0
    await sup.stop()
    elapsed = time.monotonic() - start
    # Without backoff this child restarts hundreds of times a second; with it, delays grow to 0.2 s.
    assert 3 <= restarts <= 20, (restarts, elapsed)


async def test_a_build_replacement_of_a_running_actor_is_refused() -> None:
    worker = Fragile(name="alive")
    try:
        worker.build_replacement()
    except RuntimeError as exc:
        assert "still running" in str(exc)
    else:
        raise AssertionError("build_replacement on a running actor must raise")
    await worker.stop()


async def test_ports_are_added_and_removed_while_running() -> None:
    relay = Fragile(name="ports")
    extra = relay.add_input(StreamInput("extra", DataMessage))
    feeder = Feeder(DataMessage)
    feeder >> extra
    assert "extra" in relay.inputs and extra.connected
    removed = relay.remove_input("extra")
    assert removed is extra and "extra" not in relay.inputs and not extra.connected
    out = relay.add_output(StreamOutput("copy", DataMessage))
    probe = Probe(DataMessage)
    out >> probe
    relay.remove_output("copy")
    assert "copy" not in relay.outputs
    assert await asyncio.wait_for(probe.join(), 5) is LifecycleState.STOPPED  # its upstream ended
    await relay.stop()
    await feeder.stop()


async def test_the_clock_mode_follows_the_wiring() -> None:
    class Ticker(Actor):
        default_fps = 100.0

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", DataMessage)

        async def process(self, tick: TimedTick) -> None:
            await self.inputs["in"].try_read()

    ticker = Ticker(name="moded")
    await eventually(lambda: ticker.stats()["ticks"] > 2)
    assert ticker.clock_mode is ClockMode.OWN  # the bathtub: nothing upstream
    feeder = Feeder(DataMessage)
    feeder >> ticker
    await feeder.send(DataMessage(1))
    await eventually(lambda: ticker.clock_mode is ClockMode.SYNCED)
    await feeder.stop()
    await eventually(lambda: ticker.state is LifecycleState.STOPPED)  # ENDING drained, then stopped


async def test_fps_is_a_constructor_option_of_every_actor() -> None:
    class Plain(Actor):
        async def process(self, tick: TimedTick) -> None:
            pass

    slow = Plain(fps=20.0, name="slow")
    assert slow.own_fps == 20.0
    await asyncio.sleep(0.5)
    assert 4 <= slow.stats()["ticks"] <= 14  # 20 fps, not the class default of 60
    await slow.stop()


def test_constructor_validation_errors_are_value_and_type_errors() -> None:
    import pytest

    from streamlib import ActorInitError
    from streamlib.actors import TestPattern

    with pytest.raises(ValueError) as info:
        TestPattern(width=-3)
    assert isinstance(info.value, ActorInitError)
