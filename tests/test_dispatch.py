"""Dispatchers: thread pool, a user-defined dispatcher, name resolution, blocking detection."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable
from typing import Any

import pytest
from conftest import Invert, frame

from streamlib import (
    Actor,
    AsyncioDispatcher,
    BlockingWarning,
    DataMessage,
    Dispatcher,
    LifecycleState,
    StreamInput,
    StreamOutput,
    ThreadPoolDispatcher,
    TimedTick,
    VideoFrame,
)
from streamlib.dispatch import register_dispatcher, resolve_dispatcher
from streamlib.testing import Feeder, Probe


class Where(Actor):
    """Reports the thread its hooks ran on."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=10)
        self.outputs["out"] = StreamOutput("out", DataMessage)
        self.threads: set[int] = set()

    async def on_start(self) -> None:
        self.threads.add(threading.get_ident())

    async def process(self, tick: TimedTick) -> None:
        msg = await self.inputs["in"].read()  # a real wait, on the worker thread's own loop
        self.threads.add(threading.get_ident())
        await self.outputs["out"].send(DataMessage((msg.data, threading.get_ident())))


async def test_thread_dispatcher_runs_hooks_off_the_loop() -> None:
    feeder, where, probe = Feeder(DataMessage), Where(dispatcher="thread"), Probe(DataMessage)
    feeder >> where >> probe
    for i in range(5):
        await feeder.send(DataMessage(i))
    got = await probe.wait_for(5)
    loop_thread = threading.get_ident()
    assert [m.data[0] for m in got] == list(range(5))
    assert loop_thread not in where.threads and all(m.data[1] != loop_thread for m in got)
    await feeder.end()
    assert await asyncio.wait_for(where.join(), 2) is LifecycleState.STOPPED


async def test_thread_dispatcher_accepts_a_sync_process() -> None:
    class SyncInvert(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["video"] = StreamInput("video", VideoFrame)
            self.outputs["video"] = StreamOutput("video", VideoFrame)

        def process(self, tick: TimedTick) -> None:  # type: ignore[override]
            f = self.inputs["video"].read_nowait()
            if f is not None:
                time.sleep(0.005)  # blocking is fine off the loop
                self.outputs["video"].send_nowait(f.with_data(255 - f.data))

    feeder, inv, probe = Feeder(VideoFrame), SyncInvert(dispatcher=ThreadPoolDispatcher(workers=1)), Probe(VideoFrame)
    feeder >> inv >> probe
    await feeder.send(frame(100))
    assert (await probe.wait_for(1))[0].data[0, 0, 0] == 155
    await feeder.end()


async def test_send_nowait_waits_for_room_from_a_worker_thread_on_block_inputs() -> None:
    class Burst(Actor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.outputs["out"] = StreamOutput("out", DataMessage)

        def process(self, tick: TimedTick) -> None:  # type: ignore[override]
            for i in range(50):
                self.outputs["out"].send_nowait(DataMessage(i))
            self.stop()

    probe = Probe(DataMessage, maxsize=2, overflow="block")
    burst = Burst(dispatcher="thread")
    burst >> probe
    await asyncio.wait_for(probe.join(), 5)
    assert [m.data for m in probe.messages] == list(range(50)) and probe.dropped == 0


class CountingDispatcher(Dispatcher):
    """A user-defined dispatcher: runs process on the loop and counts what it scheduled."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0
        self.started = self.stopped = 0

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        self.scheduled += 1
        return actor.process(tick)

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1


async def test_a_user_defined_dispatcher_plugs_into_the_same_seam() -> None:
    dispatcher = CountingDispatcher()
    feeder, probe = Feeder(VideoFrame), Probe(VideoFrame)
    a, b = Invert(dispatcher=dispatcher), Invert(dispatcher=dispatcher)
    feeder >> a >> b >> probe
    await feeder.send(frame(1), frame(2))
    got = await probe.wait_for(2)
    assert [m.data[0, 0, 0] for m in got] == [1, 2]  # inverted twice
    assert dispatcher.scheduled == 4 and dispatcher.started == 1
    await feeder.end()
    await probe.join()
    assert dispatcher.stopped == 1  # after the last actor detached


def test_dispatcher_names_resolve_to_shared_instances() -> None:
    assert isinstance(resolve_dispatcher(None), AsyncioDispatcher)
    assert resolve_dispatcher("thread") is resolve_dispatcher("thread")
    register_dispatcher("counting", CountingDispatcher)
    assert isinstance(resolve_dispatcher("counting"), CountingDispatcher)
    with pytest.raises(ValueError, match=r"unknown dispatcher 'gpu-9'.*'thread'"):
        resolve_dispatcher("gpu-9")


async def test_a_process_holding_the_loop_gets_one_warning_naming_it() -> None:
    class Hog(Actor):
        default_fps = 50.0

        async def process(self, tick: TimedTick) -> None:
            time.sleep(0.15)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hog = Hog(name="hog", dispatcher=AsyncioDispatcher(blocking_threshold=0.05))
        for _ in range(4):
            await asyncio.sleep(0.01)
        await hog.stop()
    blocking = [w for w in caught if issubclass(w.category, BlockingWarning)]
    assert len(blocking) == 1
    text = str(blocking[0].message)
    assert "/hog" in text and 'dispatcher="thread"' in text


def test_the_watchdog_holds_no_actor_once_its_loop_has_closed() -> None:
    """The watchdog thread samples the loop's running task; it must not keep the last one it saw
    (and with it the actor and the loop) alive after the loop closed, until its next wake-up."""

    class SlowToStop(Actor):
        default_fps = None

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", int)

        async def process(self, tick: TimedTick) -> None:
            pass

        def on_stop(self) -> None:
            time.sleep(0.08)  # the watchdog sees this actor's task run, sample after sample

    async def main() -> weakref.ref[Actor]:
        actor = SlowToStop(dispatcher=AsyncioDispatcher(blocking_threshold=0.04))  # a look every 10 ms
        await asyncio.sleep(0.02)
        await actor.stop()
        return weakref.ref(actor)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlockingWarning)  # on_stop holds the loop: it is warned about
        ref = asyncio.run(main())  # the loop closes while the watchdog sleeps
    gc.collect()
    assert ref() is None


async def test_a_well_behaved_actor_gets_no_blocking_warning() -> None:
    class Polite(Actor):
        default_fps = 100.0

        async def process(self, tick: TimedTick) -> None:
            await asyncio.sleep(0.02)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        polite = Polite(dispatcher=AsyncioDispatcher(blocking_threshold=0.01))
        await asyncio.sleep(0.2)
        await polite.stop()
    assert not [w for w in caught if issubclass(w.category, BlockingWarning)]
