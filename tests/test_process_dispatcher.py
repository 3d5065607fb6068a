"""The process dispatcher: actors whose state and ``process`` live in a worker process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

import streamlib
from streamlib import (
    Actor,
    DataMessage,
    LifecycleState,
    StreamInput,
    StreamOutput,
    Supervisor,
    TimedTick,
    VideoFrame,
)
from streamlib.dispatch.process import ProcessPoolDispatcher, WorkerCrashed, WorkerError
from streamlib.testing import Feeder, Probe

HD = (1080, 1920, 3)
SHM = "/dev/shm"
OUR_SHM_PREFIX = f"sl{os.getpid():x}-"  # every slot name this process's dispatchers make


class Invert(Actor):
    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=2, overflow="block")
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        f = await self.inputs["video"].try_read()
        if f is not None:
            await self.outputs["video"].send(f.with_data(255 - f.data))


class Tally(Actor):
    """Counts what it saw and reports (pid, count, message) for each message."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=8, overflow="block")
        self.outputs["out"] = StreamOutput("out", DataMessage)
        self.count = 0

    async def on_start(self) -> None:
        await self.outputs["out"].send(DataMessage(("started", os.getpid())))

    async def process(self, tick: TimedTick) -> None:
        msg = self.inputs["in"].read_nowait()
        if msg is None:
            return
        if msg.data == "die":
            os._exit(3)
        if msg.data == "stop":
            self.stop()
            return
        self.count += 1
        await self.outputs["out"].send(DataMessage((os.getpid(), self.count, msg.data)))

    async def on_stop(self) -> None:
        await self.outputs["out"].send(DataMessage(("stopped", os.getpid(), self.count)))


class Exploder(Actor):
    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in")

    async def process(self, tick: TimedTick) -> None:
        if self.inputs["in"].read_nowait() is not None:
            raise ValueError("bad frame")


@pytest.fixture
async def dispatcher() -> AsyncIterator[ProcessPoolDispatcher]:
    d = ProcessPoolDispatcher(2)
    yield d
    assert "running=0" in repr(d)  # every test stops its actors: no worker outlives it


def our_shm_names() -> set[str]:
    return {n for n in os.listdir(SHM) if n.startswith(OUR_SHM_PREFIX)} if os.path.isdir(SHM) else set()


def gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie (it has been reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def stop_all(*actors: Actor) -> None:
    for actor in actors:
        await asyncio.wait_for(actor.stop(), 10)


# -- the basics --------------------------------------------------------------------


async def test_1080p_frames_round_trip_with_correct_pixels(dispatcher: ProcessPoolDispatcher) -> None:
    feeder, inv, probe = Feeder(VideoFrame), Invert(dispatcher=dispatcher), Probe(VideoFrame)
    feeder >> inv >> probe
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, HD, dtype=np.uint8) for _ in range(3)]
    for i, pixels in enumerate(frames):
        await feeder.send(VideoFrame(pixels, timestamp=10.0 + i, frame_number=i, clock_source_id="cam"))
    out = await probe.wait_for(3)
    assert [m.frame_number for m in out] == [0, 1, 2]
    assert [m.timestamp for m in out] == [10.0, 11.0, 12.0]
    for pixels, message in zip(frames, out, strict=True):
        assert message.data.shape == HD and message.data.dtype == np.uint8
        np.testing.assert_array_equal(message.data, 255 - pixels)
    await stop_all(feeder, inv, probe)


async def test_state_and_hooks_live_in_the_worker_process(dispatcher: ProcessPoolDispatcher) -> None:
    feeder, tally, probe = Feeder(DataMessage), Tally(dispatcher=dispatcher), Probe(DataMessage)
    feeder >> tally >> probe
    for word in ("a", "b", "c"):
        await feeder.send(DataMessage(word))
    out = [m.data for m in await probe.wait_for(4)]
    worker_pid = dispatcher.pid(tally)
    assert worker_pid is not None and worker_pid != os.getpid()
    assert out == [("started", worker_pid), (worker_pid, 1, "a"), (worker_pid, 2, "b"), (worker_pid, 3, "c")]
    assert tally.count == 0  # the parent's copy of the state never moved: it lives in the worker
    await stop_all(tally)
    assert probe.messages[-1].data == ("stopped", worker_pid, 3)  # on_stop ran there, and its send arrived
    await stop_all(feeder, probe)


GENERATED = textwrap.dedent(
    """
    class Generated(Actor):
        default_fps = None

        def __init__(self, gain, **kw):
            super().__init__(**kw)
            self.gain = gain
            self.inputs['video'] = StreamInput('video', VideoFrame)
            self.outputs['video'] = StreamOutput('video', VideoFrame)

        async def process(self, tick):
            f = await self.inputs['video'].try_read()
            if f is not None:
                await self.outputs['video'].send(f.with_data(f.data * self.gain))
    """
)


def generate(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "no_such_module"}  # nothing can import the class
    namespace.update({n: getattr(streamlib, n) for n in streamlib.__all__})
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("kind", ["asyncio", "thread", "process", "process-instance"])
async def test_a_class_created_by_exec_runs_on_every_dispatcher(kind: str) -> None:
    cls = generate(GENERATED, "Generated")
    assert cls.__module__ == "no_such_module"
    spec: Any = ProcessPoolDispatcher(1) if kind == "process-instance" else kind
    feeder, actor, probe = Feeder(VideoFrame), cls(3, dispatcher=spec), Probe(VideoFrame)
    feeder >> actor >> probe
    pixels = np.arange(300 * 400 * 3, dtype=np.uint8).reshape(300, 400, 3) % 50
    await feeder.send(VideoFrame(pixels))
    np.testing.assert_array_equal((await probe.wait_for(1))[0].data, pixels * 3)
    await stop_all(feeder, actor, probe)


# -- failures --------------------------------------------------------------------------


async def test_an_exception_in_the_worker_fails_the_actor_naming_it(dispatcher: ProcessPoolDispatcher) -> None:
    feeder, actor = Feeder(), Exploder(dispatcher=dispatcher, name="boom")
    feeder >> actor
    await feeder.send("go")
    assert await asyncio.wait_for(actor.join(), 5) is LifecycleState.FAILED
    failure = actor.failure
    assert isinstance(failure, ValueError)  # the original type, rebuilt in the parent
    text = str(failure)
    assert "/boom (Exploder) raised ValueError: bad frame" in text
    assert 'raise ValueError("bad frame")' in text  # the worker's traceback
    assert dispatcher.pid(actor) is None
    await stop_all(feeder)


async def test_an_exception_that_does_not_pickle_still_fails_the_actor(dispatcher: ProcessPoolDispatcher) -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    class Thrower(Actor):
        default_fps = None

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in")

        async def process(self, tick: TimedTick) -> None:
            if self.inputs["in"].read_nowait() is not None:
                raise Local("nope")

    feeder, actor = Feeder(), Thrower(dispatcher=dispatcher)
    feeder >> actor
    await feeder.send(1)
    assert await asyncio.wait_for(actor.join(), 5) is LifecycleState.FAILED
    assert isinstance(actor.failure, WorkerError)
    assert "Thrower) raised" in str(actor.failure) and "Local: nope" in str(actor.failure)
    await stop_all(feeder)


async def test_a_killed_worker_fails_the_actor_and_the_supervisor_restarts_it() -> None:
    before = our_shm_names()
    dispatcher = ProcessPoolDispatcher(1)
    sup = Supervisor(strategy="one_for_one")
    tally = sup.spawn(Tally, dispatcher=dispatcher, name="tally")
    feeder, probe = Feeder(DataMessage), Probe(DataMessage)
    feeder >> tally >> probe
    await feeder.send(DataMessage("a"))
    first_pid = (await probe.wait_for(2))[1].data[0]

    await feeder.send(DataMessage("die"))  # os._exit(3) inside process
    assert await asyncio.wait_for(tally.join(), 5) is LifecycleState.FAILED
    assert isinstance(tally.failure, WorkerCrashed)
    assert "exited with code 3" in str(tally.failure) and "/tally (Tally)" in str(tally.failure)

    await feeder.send(DataMessage("b"), DataMessage("c"))
    out = [m.data for m in await probe.wait_for(5)]
    restarted = sup.children[0]
    assert restarted is not tally and restarted.restarts == 1
    second_pid = dispatcher.pid(restarted)
    assert second_pid not in (None, first_pid)
    # The message in hand died with the worker; the fresh instance carries on with fresh state.
    assert out[2:] == [("started", second_pid), (second_pid, 1, "b"), (second_pid, 2, "c")]
    assert gone(first_pid)
    await stop_all(sup, feeder, probe)
    assert second_pid is not None and gone(second_pid)
    assert our_shm_names() <= before  # the dead worker's shared memory went too


async def test_self_stop_inside_the_worker_stops_the_actor(dispatcher: ProcessPoolDispatcher) -> None:
    feeder, tally = Feeder(DataMessage), Tally(dispatcher=dispatcher)
    feeder >> tally
    await feeder.send(DataMessage("stop"))
    assert await asyncio.wait_for(tally.join(), 5) is LifecycleState.STOPPED
    await stop_all(feeder)


async def test_workers_are_limited_per_dispatcher() -> None:
    dispatcher = ProcessPoolDispatcher(1)
    first, second = Invert(dispatcher=dispatcher, name="first"), Invert(dispatcher=dispatcher, name="second")
    assert await asyncio.wait_for(second.join(), 5) is LifecycleState.FAILED
    assert isinstance(second.failure, RuntimeError)
    assert "/second" in str(second.failure) and "maximum of 1" in str(second.failure)
    await stop_all(first)


# -- streaming semantics ---------------------------------------------------------------


class Drain(Actor):
    """Reads everything queued with read_nowait, then waits for one more with read()."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=4, overflow="block")
        self.outputs["out"] = StreamOutput("out", int)

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        while port.has_messages():
            await self.outputs["out"].send(port.read_nowait())
        await self.outputs["out"].send(await port.read())


async def test_lossless_stream_with_mid_tick_reads_delivers_everything_once_in_order(
    dispatcher: ProcessPoolDispatcher,
) -> None:
    feeder, drain, probe = Feeder(int), Drain(dispatcher=dispatcher), Probe(int)
    feeder >> drain >> probe
    for i in range(200):
        await feeder.send(i)
    await feeder.end()
    # End of stream reaches the worker's pending read(): the actor ends by itself.
    assert await asyncio.wait_for(drain.join(), 10) is LifecycleState.STOPPED
    assert probe.messages == list(range(200))
    assert drain.inputs["in"].dropped == 0
    await stop_all(probe)


async def test_a_full_dropping_input_keeps_its_policy_and_exact_counters(dispatcher: ProcessPoolDispatcher) -> None:
    class Slow(Actor):
        default_fps = None

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = StreamInput("in", int, maxsize=2)  # drop_oldest
            self.outputs["out"] = StreamOutput("out", int)

        def process(self, tick: TimedTick) -> None:  # type: ignore[override]
            time.sleep(0.2)
            message = self.inputs["in"].read_nowait()
            if message is not None:
                self.outputs["out"].send_nowait(message)

    feeder, slow, probe = Feeder(int), Slow(dispatcher=dispatcher), Probe(int)
    feeder >> slow >> probe
    await feeder.send(0)
    deadline = time.monotonic() + 10
    while slow.inputs["in"].mailbox.taken < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)  # until the worker (a fresh fork: slow on a busy machine) has taken 0
    for i in range(1, 10):  # the worker is busy with 0 while 1..9 arrive
        await feeder.send(i)
    assert await probe.wait_for(3) == [0, 8, 9]  # the overflow dropped the oldest, in the parent
    port = slow.inputs["in"]
    assert port.dropped == 7 and port.mailbox.taken == 3  # each message counted once: read or dropped
    await stop_all(feeder, slow, probe)


# -- resources ---------------------------------------------------------------------------


async def test_big_arrays_cross_through_shared_memory_not_the_pipe(dispatcher: ProcessPoolDispatcher) -> None:
    feeder, inv, probe = Feeder(VideoFrame), Invert(dispatcher=dispatcher), Probe(VideoFrame, maxsize=2)
    feeder >> inv >> probe
    pixels = np.full(HD, 7, np.uint8)
    for i in range(10):
        await feeder.send(VideoFrame(pixels, frame_number=i))
        await probe.wait_for(i + 1)
    stats = dispatcher.stats(inv)
    assert stats is not None
    assert stats.arrays_sent == 10 and stats.arrays_received == 10  # one slot copy each way per frame
    assert stats.array_bytes_copied == 10 * pixels.nbytes
    assert stats.max_message_bytes < 2_000  # what the pipe carries: descriptors, not 6 MB frames
    assert stats.slots_created <= 3  # slots are reused once the stream is warm

    small = np.full((8, 8, 3), 1, np.uint8)  # under the threshold: pickled in-band
    await feeder.send(VideoFrame(small))
    assert (await probe.wait_for(11))[-1].data[0, 0, 0] == 254
    assert stats.arrays_sent == 10
    await stop_all(feeder, inv, probe)


class PassThrough(Actor):
    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=4, overflow="block")
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        f = await self.inputs["video"].try_read()
        if f is not None:
            await self.outputs["video"].send(f)


async def test_frames_sent_back_unchanged_cost_no_copy_and_queued_ones_are_copied_early(
    dispatcher: ProcessPoolDispatcher,
) -> None:
    feeder, actor, probe = Feeder(VideoFrame), PassThrough(dispatcher=dispatcher), Probe(VideoFrame)
    feeder >> actor >> probe
    frames = [np.full(HD, i, np.uint8) for i in range(8)]
    await feeder.send(*(VideoFrame(f, frame_number=i) for i, f in enumerate(frames)))
    out = await probe.wait_for(8)
    assert [int(m.data[5, 5, 0]) for m in out] == list(range(8))
    stats = dispatcher.stats(actor)
    assert stats is not None
    assert stats.arrays_returned == 8  # the worker handed the parent's own slots back: no copy there
    assert stats.arrays_copied == 8  # one copy per frame, into the worker...
    assert stats.arrays_staged >= 1  # ...some made while the worker was busy with the frame before
    await stop_all(feeder, actor, probe)


async def test_stopping_leaves_no_process_and_no_shared_memory(dispatcher: ProcessPoolDispatcher) -> None:
    before = our_shm_names()
    feeder, inv, probe = Feeder(VideoFrame), Invert(dispatcher=dispatcher), Probe(VideoFrame)
    feeder >> inv >> probe
    for i in range(4):
        await feeder.send(VideoFrame(np.full(HD, i, np.uint8)))
    kept = await probe.wait_for(4)  # the sink keeps frames: their memory must stay valid
    pid = dispatcher.pid(inv)
    assert pid is not None and not gone(pid)
    await stop_all(feeder, inv)
    assert gone(pid)  # exited and reaped: no zombie
    assert pid not in [p.pid for p in multiprocessing.active_children()]
    assert our_shm_names() <= before  # nothing left in the file system
    assert [int(m.data[0, 0, 0]) for m in kept] == [255, 254, 253, 252]
    await stop_all(probe)


async def test_spawn_start_method_runs_importable_classes_and_explains_generated_ones() -> None:
    dispatcher = ProcessPoolDispatcher(1, start_method="spawn")
    feeder, inv, probe = Feeder(VideoFrame), Invert(dispatcher=dispatcher), Probe(VideoFrame)
    feeder >> inv >> probe
    await feeder.send(VideoFrame(np.zeros((240, 320, 3), np.uint8)))
    assert (await probe.wait_for(1, timeout=30))[0].data.min() == 255
    await stop_all(feeder, inv, probe)

    generated = generate(GENERATED, "Generated")(2, dispatcher=dispatcher)
    assert await asyncio.wait_for(generated.join(), 5) is LifecycleState.FAILED
    assert isinstance(generated.failure, TypeError)
    assert "no_such_module.Generated" in str(generated.failure) and "'fork'" in str(generated.failure)
