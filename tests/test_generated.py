"""Actor classes generated from source strings (as agents hand them over), and their mistakes."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest
from conftest import frame

import streamlib
from streamlib import ActorDefinitionError, ActorInitError, LifecycleState, VideoFrame
from streamlib.testing import Feeder, Probe

GOOD = textwrap.dedent(
    """
    class Brighten(Actor):
        def __init__(self, amount=10, **kw):
            super().__init__(**kw)
            self.amount = amount
            self.inputs['video'] = StreamInput('video', VideoFrame)
            self.outputs['video'] = StreamOutput('video', VideoFrame)

        async def process(self, tick):
            f = await self.inputs['video'].try_read()
            if f is not None:
                await self.outputs['video'].send(f.with_data(f.data + self.amount))
    """
)


def generate(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {name: None for name in streamlib.__all__}
    namespace.update({n: getattr(streamlib, n) for n in streamlib.__all__})
    exec(compile(source, "<agent>", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("dispatcher", ["asyncio", "thread", "process"])
async def test_a_generated_class_runs_on_each_dispatcher(dispatcher: str) -> None:
    cls = generate(GOOD, "Brighten")
    feeder, actor, probe = Feeder(VideoFrame), cls(amount=5, dispatcher=dispatcher), Probe(VideoFrame)
    feeder >> actor >> probe
    await feeder.send(frame(10))
    assert (await probe.wait_for(1))[0].data[0, 0, 0] == 15
    await feeder.end()
    assert await asyncio.wait_for(probe.join(), 2) is LifecycleState.STOPPED


async def test_a_generated_class_without_process_names_the_class_and_the_fault() -> None:
    cls = generate("class NoProcess(Actor):\n    pass\n", "NoProcess")
    with pytest.raises(ActorDefinitionError, match=r"NoProcess.*does not define process"):
        cls()


async def test_a_wrong_port_names_the_class_and_the_port() -> None:
    src = GOOD.replace("StreamOutput('video', VideoFrame)", "'video'")
    cls = generate(src, "Brighten")
    with pytest.raises(ActorDefinitionError, match=r"Brighten: outputs\['video'\] must be a StreamOutput"):
        cls()
    src = GOOD.replace("StreamInput('video', VideoFrame)", "StreamInput('video', 'VideoFrame')")
    with pytest.raises(ActorDefinitionError, match="msg_type must be a class"):
        generate(src, "Brighten")()


async def test_an_exception_in_init_names_the_class_and_nothing_else_stops() -> None:
    bystander = Probe(VideoFrame)
    cls = generate(GOOD.replace("self.amount = amount", "self.amount = 1 / 0"), "Brighten")
    with pytest.raises(ActorInitError, match=r"Brighten\.__init__ raised ZeroDivisionError") as err:
        cls()
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    assert bystander.state is LifecycleState.RUNNING
    assert all(a.name != "brighten" for a in streamlib.running_actors())  # the half-built actor left no trace
    await bystander.stop()


async def test_forgetting_super_init_is_reported() -> None:
    cls = generate(
        "class Lazy(Actor):\n    def __init__(self):\n        pass\n    async def process(self, tick):\n        pass\n",
        "Lazy",
    )
    with pytest.raises(ActorDefinitionError, match=r"Lazy.__init__ did not call super\(\).__init__\(\)"):
        cls()


async def test_a_generated_class_failing_at_runtime_is_contained() -> None:
    cls = generate(GOOD.replace("f.data + self.amount", "f.data + undefined_name"), "Brighten")
    feeder, actor, probe = Feeder(VideoFrame), cls(), Probe(VideoFrame)
    feeder >> actor >> probe
    await feeder.send(frame(1))
    assert await asyncio.wait_for(actor.join(), 2) is LifecycleState.FAILED
    assert isinstance(actor.failure, NameError)
    assert feeder.state is LifecycleState.RUNNING
    await feeder.end()


async def test_name_and_path_are_reserved_with_a_clear_error() -> None:
    src = GOOD.replace("self.amount = amount", "self.amount = amount\n        self.name = 'window'")
    with pytest.raises(ActorDefinitionError, match="'name' is the actor's name"):
        generate(src, "Brighten")()


async def test_state_is_reserved_with_a_clear_error() -> None:
    # "self.state" is what generated code reaches for first for its own data: it must not
    # silently replace the lifecycle state the runtime relies on.
    src = GOOD.replace("self.amount = amount", "self.amount = amount\n        self.state = {'count': 0}")
    with pytest.raises(ActorDefinitionError, match="'state' is the actor's lifecycle state"):
        generate(src, "Brighten")()
    actor = generate(GOOD, "Brighten")()
    assert actor.state is LifecycleState.RUNNING
    await actor.stop()
    assert actor.state is LifecycleState.STOPPED
