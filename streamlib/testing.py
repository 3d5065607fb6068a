"""A test kit for actors, like Akka's TestKit or dora's MockNode.

* :class:`Probe` records every message an output sends (``actor >> probe``).
* :class:`Feeder` feeds messages into an input from test code, and ends the stream.
* :class:`ManualClock` drives an actor tick by tick: ``await clock.step()`` returns once
  the actor has processed the tick, so a test needs no timing sleeps.

::

    clock = ManualClock(fps=30)
    feeder, probe = Feeder(VideoFrame), Probe(VideoFrame)
    inv = Invert(clock=clock)
    feeder >> inv >> probe
    await feeder.send(frame)
    await clock.step()                     # returns once Invert has processed the tick
    (out,) = await probe.wait_for(1)       # the probe is an actor too: wait for its delivery
    assert out.data[0, 0, 0] == 255 - frame.data[0, 0, 0]
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

from .actor import Actor, Completion
from .clock import Clock
from .mailbox import Overflow
from .messages import TimedTick
from .ports import StreamInput, StreamOutput

__all__ = ["Feeder", "ManualClock", "Probe"]


class ManualClock(Clock):
    """A clock that ticks only when the test says so.

    Give it to an actor with ``clock=``; an explicit clock always drives the actor, even
    one with connected inputs. Tick *n* has timestamp ``start + n / fps``.
    """

    def __init__(self, fps: float = 30.0, clock_id: str = "manual-clock", start: float = 0.0) -> None:
        self.fps = float(fps)
        self.clock_id = clock_id
        self.start = start
        self.skipped = 0
        self.frame_number = -1
        self._due = 0
        self._tick_wanted: asyncio.Future[None] | None = None
        self._tick_taken: asyncio.Future[None] | None = None  # the step() waiting for its tick
        self._in_hand: asyncio.Future[None] | None = None  # the step() whose tick is being processed
        self._actor: Actor | None = None

    def bind(self, actor: Actor) -> None:
        self._actor = actor

    async def next_tick(self) -> TimedTick:
        # Being asked for the next tick means the previous one has been processed.
        self._resolve_taken()
        while self._due == 0:
            self._tick_wanted = asyncio.get_running_loop().create_future()
            try:
                await self._tick_wanted
            finally:
                self._tick_wanted = None
        self._due -= 1
        self._in_hand, self._tick_taken = self._tick_taken, None
        self.frame_number += 1
        n = self.frame_number
        return TimedTick(self.start + n / self.fps, n, self.clock_id, self.fps)

    def _resolve_taken(self) -> None:
        fut, self._in_hand = self._in_hand, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def step(self, n: int = 1, timeout: float = 5.0) -> None:
        """Deliver ``n`` ticks, one at a time, each returning once ``process`` has run."""
        for _ in range(n):
            self._due += 1
            taken = self._tick_taken = asyncio.get_running_loop().create_future()
            if self._tick_wanted is not None and not self._tick_wanted.done():
                self._tick_wanted.set_result(None)
            waits: list[Any] = [taken]
            if self._actor is not None:
                waits.append(asyncio.ensure_future(self._actor.join()))
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for w in waits[1:]:
                w.cancel()
            if not done:
                raise TimeoutError(
                    f"{self.clock_id}: the actor did not take tick {self.frame_number + 1} within {timeout} s"
                )


class Probe(Actor):
    """Records every message it receives, in order, in :attr:`messages`."""

    default_fps: ClassVar[float | None] = None

    def __init__(
        self, msg_type: Any = object, maxsize: int = 10_000, overflow: Overflow = "drop_oldest", **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", msg_type, maxsize=maxsize, overflow=overflow)
        self.messages: list[Any] = []
        self.ticks_seen: list[TimedTick] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._blocked: list[tuple[int, threading.Event]] = []  # wait_for() callers with no loop
        self._blocked_lock = threading.Lock()

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        while (msg := port.read_nowait()) is not None:
            self.messages.append(msg)
            self.ticks_seen.append(tick)
        for want, fut in list(self._waiters):
            if len(self.messages) >= want and not fut.done():
                fut.set_result(None)
        if self._blocked:
            self._wake_blocked()

    async def on_stop(self) -> None:
        self._wake_blocked(everyone=True)  # no more messages will come: let them see what arrived

    def _wake_blocked(self, everyone: bool = False) -> None:
        with self._blocked_lock:
            for want, event in self._blocked:
                if everyone or len(self.messages) >= want:
                    event.set()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> Any:
        """Wait until at least ``count`` messages have arrived; return them all.

        In a coroutine (or a notebook cell): ``await probe.wait_for(10)``. With no event
        loop running in the calling thread (a plain script), it blocks and returns the
        list directly: ``probe.wait_for(10)``. Raises :class:`TimeoutError` after
        ``timeout`` seconds, or once the probe has ended with fewer messages."""
        if asyncio._get_running_loop() is None:
            return self._wait_blocking(count, timeout)
        return self._wait_async(count, timeout)

    def _wait_blocking(self, count: int, timeout: float) -> list[Any]:
        if len(self.messages) < count:
            entry = (count, threading.Event())
            with self._blocked_lock:
                self._blocked.append(entry)
            try:
                if len(self.messages) < count and not self.join().done():
                    entry[1].wait(timeout)
            finally:
                with self._blocked_lock:
                    self._blocked.remove(entry)
            if len(self.messages) < count:
                got = f"{self.path} got {len(self.messages)} of {count} messages"
                raise TimeoutError(f"{got} (it has ended)" if self.join().done() else f"{got} within {timeout} s")
        return self.messages

    async def _wait_async(self, count: int, timeout: float) -> list[Any]:
        if len(self.messages) < count:
            fut = self.event_loop.create_future()
            entry = (count, fut)
            self._waiters.append(entry)
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.path} got {len(self.messages)} of {count} messages within {timeout} s"
                ) from None
            finally:
                self._waiters.remove(entry)
        return self.messages

    @property
    def dropped(self) -> int:
        port: StreamInput = self.inputs["in"]
        return port.dropped


class Feeder(Actor):
    """Sends what the test gives it through its ``out`` output; ``end()`` ends the stream."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, msg_type: Any = object, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["out"] = StreamOutput("out", msg_type)

    async def process(self, tick: TimedTick) -> None:
        """A feeder is driven by the test, never by ticks."""

    async def send(self, *messages: Any) -> None:
        for message in messages:
            await self.outputs["out"].send(message)

    def end(self) -> Completion:
        """Stop, which signals end of stream downstream."""
        return self.stop()
