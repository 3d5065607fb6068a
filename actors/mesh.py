"""A mesh (seed 003, example 7): send each frame to N workers, gather their results per frame.

``Broadcast`` copies every message of its input to each of its outputs, one per worker;
``Gather`` has one input per worker and emits, in frame order, one set per frame with every
worker's result for it. Workers can live anywhere an actor can -- this process, another runtime,
a Ray node (``dispatcher=RayDispatcher(...)``)::

    fan = Broadcast(workers=3)
    gather = Gather(workers=3, match="frame_number", timeout=0.5)
    camera >> fan
    for i, worker in enumerate(workers):
        fan.outputs[f"out{i}"] >> worker >> gather.inputs[f"in{i}"]
    gather >> sink          # DataMessage(data={"in0": result, "in1": result, "in2": result})

Gathering is :class:`streamlib.alignment.InputSync` (the input alignment of the shared-time
work) with the ``"tolerance"`` policy: a frame's set is released once every worker has answered
it, or answered a later frame (results come in frame order from each worker), or ``timeout``
seconds after its first result arrived. Sets without every result are *partial*: dropped by
default (``partial="drop"``), or emitted with ``None`` for the missing results. Its counters, per
worker: ``matched``, ``missing``, ``late`` (a result for a set already released), ``duplicate``
(a second result for one frame), ``timed_out``; in :attr:`Gather.counters` and the actor's
``stats()["sync"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from streamlib import Actor, DataMessage, StreamInput, StreamOutput, TimedTick
from streamlib.alignment import InputSync, Partial
from streamlib.mailbox import Overflow

__all__ = ["Broadcast", "Gather"]


def _names(workers: int | Sequence[str], prefix: str, what: str) -> list[str]:
    names = [f"{prefix}{i}" for i in range(workers)] if isinstance(workers, int) else [str(w) for w in workers]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{what}: workers must be a count >= 1 or distinct names, got {workers!r}")
    return names


class Broadcast(Actor):
    """Sends every message of ``in`` to each output (``out0`` ... or the names given).

    Each output is sent to in turn with the receiving input's own policy: a worker whose input
    drops when full (the default) drops alone while the others keep up; one whose input blocks
    slows the broadcast (lossless). ``msg_type`` types the ports (``>>`` checks it)."""

    default_fps = None

    def __init__(
        self,
        workers: int | Sequence[str] = 2,
        msg_type: Any = object,
        *,
        maxsize: int = 8,
        overflow: Overflow = "drop_oldest",
        **kw: Any,
    ) -> None:
        names = _names(workers, "out", "Broadcast")
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", msg_type, maxsize=maxsize, overflow=overflow)
        for name in names:
            self.outputs[name] = StreamOutput(name, msg_type)
        self.sent = 0

    async def process(self, tick: TimedTick) -> None:
        while (message := await self.inputs["in"].try_read()) is not None:
            for out in list(self.outputs.values()):
                await out.send(message)
            self.sent += 1


class Gather(Actor):
    """Collects the workers' results for one frame into one set (see the module docstring).

    ``workers``: a count (inputs ``in0`` ...) or input names. ``match``: ``"frame_number"``
    (the default: workers copy their input's frame number into their result) or
    ``"timestamp"`` (with ``tolerance`` seconds). ``timeout``: seconds a set waits for a silent
    worker after its first result. ``partial``: ``"drop"`` (emit complete sets only) or
    ``"emit"``. ``buffer``: results held per worker while waiting.

    Emits on ``out`` a :class:`~streamlib.messages.DataMessage` per set whose ``data`` maps
    each input name to its result (``None`` where missing), with the set's frame number and
    timestamp (those of its earliest result)."""

    default_fps = None

    def __init__(
        self,
        workers: int | Sequence[str] = 2,
        msg_type: Any = object,
        *,
        match: Literal["frame_number", "timestamp"] = "frame_number",
        timeout: float | None = 0.5,
        tolerance: float = 0.0,
        partial: Partial = "drop",
        buffer: int = 64,
        maxsize: int = 64,
        **kw: Any,
    ) -> None:
        names = _names(workers, "in", "Gather")
        if match not in ("frame_number", "timestamp"):
            raise ValueError(f"Gather: match must be 'frame_number' or 'timestamp', got {match!r}")
        super().__init__(**kw)
        for name in names:
            self.inputs[name] = StreamInput(name, msg_type, maxsize=maxsize, overflow="drop_oldest")
        self.outputs["out"] = StreamOutput("out", DataMessage)
        self.sync = InputSync(
            *self.inputs.values(),
            policy="tolerance",
            tolerance=tolerance,
            timeout=timeout,
            partial=partial,
            buffer=buffer,
            name="gather",
            key=match,
        )

    @property
    def counters(self) -> dict[str, Any]:
        """Sets released (``complete``, ``partial``, ``dropped``) and, per input, ``matched``,
        ``missing``, ``late``, ``duplicate``, ``timed_out``, ``overflow``."""
        return self.sync.summary()

    async def process(self, tick: TimedTick) -> None:
        for found in await self.sync.read_many():
            first = next(m for m in found.values() if m is not None)
            await self.outputs["out"].send(
                DataMessage(
                    dict(found),
                    timestamp=float(getattr(first, "timestamp", found.timestamp)),
                    frame_number=int(getattr(first, "frame_number", 0)),
                    clock_source_id=getattr(first, "clock_source_id", None),
                    clock_rate=getattr(first, "clock_rate", None),
                )
            )
