"""The C message path (``streamlib.speedups``, issue 14) against its specification, the Python
methods it replaces: same results, same counters, same ticks -- and the core tests pass on
the pure-Python path too (run here in a subprocess with ``STREAMLIB_PURE_PYTHON=1``)."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import traceback
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import eventually
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Actor, DataMessage, Mailbox, StreamInput, StreamOutput, TimedTick, speedups
from streamlib.mailbox import EMPTY
from streamlib.testing import Feeder, Probe

ROOT = Path(__file__).resolve().parent.parent
PURE = os.environ.get("STREAMLIB_PURE_PYTHON", "").strip() not in ("", "0")
CORE_TESTS = ["test_handoff.py", "test_mailbox.py", "test_ports.py", "test_core_holes.py", "test_supervision.py"]

needs_c = pytest.mark.skipif(not speedups.ACTIVE, reason=f"the C message path is not installed: {speedups.REASON}")


def test_the_c_path_is_installed_wherever_it_can_be_built() -> None:
    """A build that silently fell back to pure Python would halve the message rate unnoticed:
    with a C compiler and CPython's headers at hand, the extension must be there and active."""
    if PURE:
        assert not speedups.ACTIVE and "STREAMLIB_PURE_PYTHON" in speedups.REASON
        return
    compiler = shutil.which("cc") or shutil.which("gcc")
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if sys.implementation.name != "cpython" or compiler is None or not headers:
        # Nothing here could have built it: the pure-Python path runs and says why.
        assert speedups.ACTIVE or "not built" in speedups.REASON, speedups.REASON
        return
    assert speedups.ACTIVE, speedups.REASON
    assert set(speedups.PYTHON_METHODS) == {
        "Mailbox.put_nowait",
        "Mailbox.get_nowait",
        "ActorRuntime.woken",
        "ports.deliver",
    }


# -- the mailbox: the C methods against the Python ones, operation by operation ------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 99)),
        st.just(("get",)),
        st.just(("lend",)),
        st.just(("settle",)),
        st.just(("close",)),
    ),
    max_size=40,
)


def _books(mailbox: Mailbox) -> tuple[Any, ...]:
    s = mailbox.statistics()
    return (list(mailbox._items), s, mailbox.closed, mailbox._lent is EMPTY)


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    maxsize=st.integers(1, 4),
    overflow=st.sampled_from(["drop_oldest", "drop_newest", "block"]),
    ops=operations,
)
def test_the_c_mailbox_keeps_the_books_of_the_python_one(maxsize: int, overflow: Any, ops: list[Any]) -> None:
    py_put, py_get = speedups.PYTHON_METHODS["Mailbox.put_nowait"], speedups.PYTHON_METHODS["Mailbox.get_nowait"]
    c_box, py_box = Mailbox(maxsize, overflow), Mailbox(maxsize, overflow)
    c_woken: list[int] = []
    py_woken: list[int] = []
    c_box.waker = lambda: c_woken.append(len(c_box))
    py_box.waker = lambda: py_woken.append(len(py_box))
    lent = False
    for op in ops:
        if op[0] == "put":
            assert c_box.put_nowait(op[1]) == py_put(py_box, op[1])
        elif op[0] == "get":
            assert c_box.get_nowait() == py_get(py_box)
        elif op[0] == "lend" and not lent:
            assert c_box.lend_head() == py_box.lend_head()
            lent = c_box._lent is not EMPTY
        elif op[0] == "settle" and lent:
            c_box.settle_loan(True)
            py_box.settle_loan(True)
            lent = False
        elif op[0] == "close":
            c_box.close()
            py_box.close()
        assert _books(c_box) == _books(py_box)
        assert c_woken == py_woken


def _fan_out(policies: list[tuple[int, Any]]) -> tuple[StreamOutput, list[StreamInput]]:
    output = StreamOutput("out", int)
    inputs = [StreamInput(f"in{i}", int, maxsize=size, overflow=policy) for i, (size, policy) in enumerate(policies)]
    for port in inputs:
        output.connect(port)
    return output, inputs


@needs_c
@settings(max_examples=200, deadline=None)
@given(
    policies=st.lists(
        st.tuples(st.integers(1, 3), st.sampled_from(["drop_oldest", "drop_newest", "block"])), min_size=1, max_size=4
    ),
    ops=st.lists(st.one_of(st.integers(0, 99), st.integers(-4, -1)), max_size=30),
)
def test_the_c_send_offers_a_message_as_the_python_one_does(policies: list[tuple[int, Any]], ops: list[int]) -> None:
    """``deliver`` (a send up to its first wait): values >= 0 are sent, -k reads input k-1."""
    py_deliver = speedups.PYTHON_METHODS["ports.deliver"]
    c_out, c_ins = _fan_out(policies)
    py_out, py_ins = _fan_out(policies)
    for op in ops:
        if op >= 0:
            c_result, py_result = _speedups_deliver(c_out, op), py_deliver(py_out, op)
            if py_result is None:
                assert c_result is None
            else:  # (the subscribers, the first full blocking input): the send would wait there
                assert c_result is not None and c_result[0] == c_out.subscribers
                assert c_ins.index(c_result[1]) == py_ins.index(py_result[1])
                c_result[1].mailbox.give_up()  # as a cancelled send would
                py_result[1].mailbox.give_up()
        elif -op <= len(c_ins):
            assert c_ins[-op - 1].read_nowait() == py_ins[-op - 1].read_nowait()
        assert c_out.sent == py_out.sent
        assert [p.statistics() for p in c_ins] == [p.statistics() for p in py_ins]
    with pytest.raises(TypeError, match=r"outputs\['out'\].* declared for int but was sent a str"):
        _speedups_deliver(c_out, "text")


def _speedups_deliver(output: StreamOutput, message: Any) -> Any:
    from streamlib import ports

    return ports._deliver(output, message)


@needs_c
async def test_the_c_mailbox_wakes_a_waiting_reader_and_a_waiting_writer() -> None:
    box = Mailbox(1, "block")
    reader = asyncio.create_task(box.wait_nonempty())
    await asyncio.sleep(0)
    assert box.put_nowait("a") is True  # C: room
    await asyncio.wait_for(reader, 1)
    writer = asyncio.create_task(box.put("b"))  # full: waits for room
    await asyncio.sleep(0)
    assert not writer.done()
    assert box.get_nowait() == "a"  # C: takes, wakes the writer
    assert await asyncio.wait_for(writer, 1) is True
    assert box.get_nowait() == "b" and box.get_nowait() is EMPTY
    assert (box.received, box.taken) == (2, 2)


# -- the hand-off: ticks, accounting, failures and memory on the C path ------------------------------


class Stage(Actor):
    """Forwards plain ints (not Messages: the C path builds their ticks itself)."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, fail_at: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", int, maxsize=2, overflow="block")
        self.outputs["out"] = StreamOutput("out", int)
        self.fail_at = fail_at
        self.ticks_seen: list[TimedTick] = []
        self.tasks_seen: list[asyncio.Task[Any] | None] = []

    async def process(self, tick: TimedTick) -> None:
        value = await self.inputs["in"].try_read()
        if value is None:
            return
        self.ticks_seen.append(tick)
        self.tasks_seen.append(asyncio.current_task())
        if value == self.fail_at:
            raise ValueError(f"stage fails at {value}")
        await self.outputs["out"].send(value)


async def _paced(feeder: Feeder, values: range) -> None:
    for value in values:
        await feeder.send(value)
        await asyncio.sleep(0.002)  # the stage falls asleep: the next message is handed off


async def test_handed_off_ticks_of_plain_messages_are_those_the_run_loop_would_make() -> None:
    feeder = Feeder(int)
    stage = Stage()
    probe = Probe(int)
    feeder >> stage >> probe
    await asyncio.sleep(0.05)
    before = time.monotonic()
    await _paced(feeder, range(20))
    await probe.wait_for(20)
    after = time.monotonic()
    stats = stage.stats()
    assert stats["handed_off"] >= 15, stats  # (the first message may wake the task)
    assert probe.messages == list(range(20))
    frames = [t.frame_number for t in stage.ticks_seen]
    assert frames == list(range(frames[0], frames[0] + 20))  # the tick count, one per message
    assert {t.clock_source_id for t in stage.ticks_seen} == {stage.inputs["in"].path}
    assert {t.fps for t in stage.ticks_seen} == {None}
    stamps = [t.timestamp for t in stage.ticks_seen]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after  # time.monotonic()
    assert set(stage.tasks_seen) == {stage._core.task}  # it ran as its own task
    stage.stop()
    await stage.join()


class MessageStage(Actor):
    default_fps: ClassVar[float | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=2, overflow="block")
        self.ticks_seen: list[TimedTick] = []

    async def process(self, tick: TimedTick) -> None:
        if await self.inputs["in"].try_read() is not None:
            self.ticks_seen.append(tick)


async def test_handed_off_ticks_of_messages_carry_their_clock_metadata() -> None:
    feeder = Feeder(DataMessage)
    stage = MessageStage()
    feeder >> stage
    await asyncio.sleep(0.05)
    sent = [
        DataMessage(i, timestamp=100.0 + i, frame_number=7 * i, clock_source_id="cam", clock_rate=25.0)
        for i in range(8)
    ]
    sent.append(DataMessage(8, timestamp=200.0, frame_number=99))  # no clock source of its own
    for message in sent:
        await feeder.send(message)
        await asyncio.sleep(0.002)
    await eventually(lambda: len(stage.ticks_seen) == len(sent))
    assert stage.stats()["handed_off"] >= len(sent) - 2
    assert stage.ticks_seen[:-1] == [m.tick() for m in sent[:-1]]
    assert stage.ticks_seen[-1] == TimedTick(200.0, 99, stage.inputs["in"].path, None)  # the driver names it
    assert stage._core.last_fps is None  # the last message's rate, as the run loop keeps it
    stage.stop()
    await stage.join()


async def test_a_failure_in_a_handed_off_tick_keeps_its_traceback_and_its_books() -> None:
    feeder = Feeder(int)
    stage = Stage(fail_at=3)
    probe = Probe(int)
    feeder >> stage >> probe
    await asyncio.sleep(0.05)
    await _paced(feeder, range(6))
    await eventually(lambda: stage._core.done.done())
    failure = stage._core.failure
    assert isinstance(failure, ValueError) and "fails at 3" in str(failure)
    frames = [frame.name for frame in traceback.extract_tb(failure.__traceback__)]
    assert "process" in frames  # raised where it was raised, not in the runtime
    stats = stage.inputs["in"].statistics()
    assert stats.lost == 1 and probe.messages == [0, 1, 2]
    accounted = stats.taken + stats.in_hand + stats.lost + stats.dropped + stats.discarded + stats.queued
    assert stats.delivered == 6 == accounted  # every message accounted for


async def test_an_actor_woken_by_the_c_path_is_freed_when_it_ends() -> None:
    """A waker holds its actor's runtime and the runtime its wakers: the cycle must be collectable."""
    feeder = Feeder(int)
    stage = Stage()
    feeder >> stage
    await asyncio.sleep(0.05)
    await _paced(feeder, range(3))
    gone = weakref.ref(stage)
    stage.stop()
    await stage.join()
    feeder.stop()
    await feeder.join()
    del stage, feeder
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0.01)
    assert gone() is None


# -- the pure-Python path: the core tests once more, without the extension ---------------------------


@pytest.mark.skipif(PURE, reason="this run is the pure-Python one already")
def test_the_core_tests_pass_on_the_pure_python_path() -> None:
    env = dict(os.environ, STREAMLIB_PURE_PYTHON="1")
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-x"]
    command += [str(ROOT / "tests" / name) for name in CORE_TESTS]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
