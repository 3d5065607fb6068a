"""Shared fixtures and tiny actors for the core tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamlib import Actor, DataMessage, StreamInput, StreamOutput, TimedTick, VideoFrame


class Counter(Actor):
    """A source: sends DataMessage(0), (1), ... one per tick of its own clock; stops after ``limit``."""

    def __init__(self, fps: float = 200.0, limit: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._fps = fps
        self.limit = limit
        self.count = 0
        self.outputs["out"] = StreamOutput("out", DataMessage)

    @property
    def default_fps(self) -> float:  # type: ignore[override]
        return self._fps

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["out"].send(DataMessage.at(tick, data=self.count))
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            self.stop()


class Relay(Actor):
    """Passes DataMessages through; remembers the ticks it saw."""

    def __init__(self, maxsize: int = 2, overflow: Any = "drop_oldest", **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=maxsize, overflow=overflow)
        self.outputs["out"] = StreamOutput("out", DataMessage)
        self.seen_ticks: list[TimedTick] = []

    async def process(self, tick: TimedTick) -> None:
        self.seen_ticks.append(tick)
        msg = await self.inputs["in"].try_read()
        if msg is not None:
            await self.outputs["out"].send(msg)


class Invert(Actor):
    """Seed 004's example actor, written exactly as the issue shows it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        f = await self.inputs["video"].try_read()
        if f is not None:
            await self.outputs["video"].send(f.with_data(255 - f.data))


def frame(value: int = 10, n: int = 0, ts: float = 0.0, clock: str | None = "test-clock") -> VideoFrame:
    return VideoFrame(
        np.full((4, 6, 3), value, np.uint8), timestamp=ts, frame_number=n, clock_source_id=clock, clock_rate=30.0
    )


@pytest.fixture
def make_frame() -> Any:
    return frame


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (polling); fail after ``timeout`` seconds.

    For what *must* happen soon: a fixed sleep before the assertion fails on a loaded
    machine, where "soon" can take ten times longer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(0.005)
