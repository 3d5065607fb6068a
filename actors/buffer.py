"""Buffers: :class:`BufferActor` (an explicit queue in front of a slow consumer) and
:class:`FramePool` (reusable output arrays for the video actors).

``BufferActor`` is the one place where a pipeline is allowed to queue a lot: a slow
consumer that must not lose data (an encoder, a network uploader) sits behind it, and
the buffer absorbs bursts instead of the realtime stages::

    camera >> BufferActor(capacity=120) >> FileSink("out.mp4", lossless=True)

Its input holds ``capacity`` messages (``overflow="block"`` by default, so a full buffer
makes upstream wait rather than drop; pass ``overflow="drop_oldest"`` to keep the newest
instead), and its output waits for room on downstream inputs declared with
``overflow="block"``. Message order is kept; end of stream is passed on once the buffer
has drained.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, ThreadPoolDispatcher, TimedTick
from streamlib.mailbox import EMPTY, Overflow

__all__ = ["BufferActor", "FramePool", "own_thread"]


def own_thread(dispatcher: Dispatcher | str | None) -> Dispatcher | str:
    """The dispatcher a heavy actor uses: the caller's, else a private one-thread pool.

    One thread per actor (rather than the shared ``"thread"`` pool) keeps numpy/OpenCV/skia
    work off the event loop, and a lossless stage that waits for room downstream can never
    occupy the worker its consumer needs (the shared pool has 4 workers: a chain of more
    than 4 blocking stages on it deadlocks)."""
    return dispatcher if dispatcher is not None else ThreadPoolDispatcher(workers=1)


class FramePool:
    """Output arrays that are reused once nobody downstream holds them any more.

    Messages are passed by reference, so an array sent downstream may still sit in a
    mailbox, in an encoder's queue or in a test's list: it must not be overwritten. The
    pool hands out an array only when CPython's reference count says that the pool holds
    the sole reference (a ``VideoFrame``, a numpy view, a buffer export all count), and
    allocates a new one otherwise, keeping at most ``size`` arrays.
    """

    __slots__ = ("_arrays", "allocated", "dtype", "reused", "size")

    # references held while checking: the pool's list, the loop variable, getrefcount's argument
    _FREE: ClassVar[int] = 3

    def __init__(self, size: int = 6, dtype: Any = np.uint8) -> None:
        self.size = size
        self.dtype = dtype
        self._arrays: list[NDArray[Any]] = []
        self.allocated = 0
        self.reused = 0

    def get(self, shape: tuple[int, ...]) -> NDArray[Any]:
        """An array of ``shape`` with undefined contents that nobody else references."""
        for array in self._arrays:
            if array.shape == shape and sys.getrefcount(array) <= self._FREE:
                self.reused += 1
                return array
        array = np.empty(shape, self.dtype)
        self.allocated += 1
        if len(self._arrays) >= self.size:
            # Forget a busy array of another shape first, else the oldest busy one.
            stale = next((i for i, a in enumerate(self._arrays) if a.shape != shape), 0)
            del self._arrays[stale]
        self._arrays.append(array)
        return array

    def clear(self) -> None:
        self._arrays.clear()


class BufferActor(Actor):
    """A FIFO of up to ``capacity`` messages in front of a slow consumer (see the module docstring).

    Input ``'in'``, output ``'out'``, both of ``msg_type`` (default: anything). One tick per
    arriving message; each tick forwards the oldest buffered message with ``await send``,
    which waits while a blocking downstream input is full.
    """

    default_fps: ClassVar[float | None] = None  # purely message-driven

    def __init__(self, capacity: int = 30, msg_type: Any = object, overflow: Overflow = "block", **kw: Any) -> None:
        super().__init__(**kw)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self.inputs["in"] = StreamInput("in", msg_type, maxsize=capacity, overflow=overflow)
        self.outputs["out"] = StreamOutput("out", msg_type)
        self.forwarded = 0
        self.high_water = 0

    @property
    def buffered(self) -> int:
        """How many messages wait in the buffer right now."""
        return len(self.inputs["in"].mailbox)

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        queued = len(port.mailbox)
        if queued > self.high_water:
            self.high_water = queued
        message = port.mailbox.get_nowait()  # None is a valid message here: compare with EMPTY
        if message is not EMPTY:
            await self.outputs["out"].send(message)
            self.forwarded += 1
