"""The messages actors exchange, and the clock tick that drives them.

Every message carries *clock metadata*: the timestamp and frame number of the tick
that produced it, the id of the clock that tick came from, and that clock's rate.
A downstream actor syncs to its upstream by reading exactly these four fields, so
keeping them on every message is what keeps a pipeline aligned to its source frame.

Messages are passed by reference between actors of one process (zero copies), so
treat a received message as read-only and build a new one with :meth:`Message.with_data`
or :meth:`Message.at` instead of mutating it: a fan-out sends the same object to
every subscriber.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from .rendering import render

__all__ = [
    "AudioBuffer",
    "DataMessage",
    "KeyEvent",
    "Message",
    "MouseEvent",
    "TimedTick",
    "VideoFrame",
]


@dataclass(slots=True)
class TimedTick:
    """One tick of an actor's clock: *when* to process, and *which frame* this is.

    ``timestamp`` is in seconds on ``time.monotonic()``'s timeline (shared by every
    thread and process of a machine), so end-to-end latency is ``now - timestamp``.
    For an actor synced to its upstream, all four fields are copied from the upstream
    message that caused the tick.
    """

    timestamp: float
    frame_number: int
    clock_source_id: str | None = None
    fps: float | None = None

    @property
    def clock_source(self) -> str | None:
        """Alias of ``clock_source_id`` (the name seed 004's examples use)."""
        return self.clock_source_id

    @property
    def clock_rate(self) -> float | None:
        """Alias of ``fps`` (the name the messages use)."""
        return self.fps


class Message:
    """Base of the built-in messages: the clock metadata and helpers to carry it on.

    Subclasses are slotted dataclasses that declare the four metadata fields
    themselves (so their positional order matches seed 004). Any object can be sent
    through a port; only subclasses of ``Message`` get the fast metadata path.
    """

    __slots__ = ()

    timestamp: float
    frame_number: int
    clock_source_id: str | None
    clock_rate: float | None

    @classmethod
    def at(cls, tick: TimedTick, /, **fields: Any) -> Self:
        """Build a message stamped with ``tick``'s clock metadata.

        ``VideoFrame.at(tick, data=pixels)`` is the usual way for an actor to emit a
        message that stays aligned with the frame that produced it.
        """
        return cls(  # type: ignore[call-arg]
            timestamp=tick.timestamp,
            frame_number=tick.frame_number,
            clock_source_id=tick.clock_source_id,
            clock_rate=tick.fps,
            **fields,
        )

    def with_data(self, data: Any) -> Self:
        """A copy of this message with new ``data`` and the same clock metadata."""
        return dataclasses.replace(self, data=data)  # type: ignore[type-var]

    def tick(self) -> TimedTick:
        """The clock tick this message was produced on."""
        return TimedTick(self.timestamp, self.frame_number, self.clock_source_id, self.clock_rate)


@dataclass(slots=True, eq=False)
class VideoFrame(Message):
    """A video frame: ``data`` is an ``(height, width, channels)`` uint8 array (RGB or RGBA).

    RGBA alpha is straight (not premultiplied): the colour channels hold the full colour
    and alpha says how much of it covers what lies below, as compositors expect.

    A *GPU frame*'s ``data`` is a :class:`streamlib.gpu.GPUImage` (a texture with the same
    ``shape``) instead: see :meth:`is_gpu` and ``docs/gpu.md``.
    """

    data: NDArray[np.uint8]
    timestamp: float = 0.0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.data.ndim == 2 else int(self.data.shape[2])

    def is_gpu(self) -> bool:
        """True if ``data`` is a GPU texture (a :class:`streamlib.gpu.GPUImage`), not a numpy array."""
        return getattr(self.data, "memory", None) == "gpu"

    def _repr_png_(self) -> bytes | None:
        """Jupyter shows a frame as its image (the PNG renderer :mod:`streamlib.observe`
        registers); a GPU frame as its text (showing it would mean a download)."""
        if self.is_gpu():
            return None
        png: bytes | None = render(self, "image/png")
        return png


@dataclass(slots=True, eq=False)
class AudioBuffer(Message):
    """A block of audio: ``data`` is ``(samples, channels)`` float32 in [-1, 1]."""

    data: NDArray[np.float32]
    sample_rate: int
    timestamp: float = 0.0
    clock_source_id: str | None = None
    frame_number: int = 0
    clock_rate: float | None = None

    @property
    def channels(self) -> int:
        return 1 if self.data.ndim == 1 else int(self.data.shape[1])

    @property
    def samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def duration(self) -> float:
        """Length of the block in seconds."""
        return self.samples / self.sample_rate


@dataclass(slots=True)
class KeyEvent(Message):
    """A key press (``key`` as OpenCV's ``waitKey`` reports it)."""

    key: int
    timestamp: float = 0.0
    modifiers: int = 0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None


@dataclass(slots=True)
class MouseEvent(Message):
    """A mouse event at pixel ``(x, y)``; ``button`` 0 means movement only."""

    x: int
    y: int
    button: int
    timestamp: float = 0.0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None


@dataclass(slots=True)
class DataMessage(Message):
    """Arbitrary data (bytes, a dict, an array) with clock metadata."""

    data: Any
    timestamp: float = 0.0
    frame_number: int = 0
    clock_source_id: str | None = None
    clock_rate: float | None = None
