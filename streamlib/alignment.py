"""Input alignment: synchronise a group of inputs by timestamp.

An actor with several inputs ticks when its *driving* input delivers and samples the
others (see :mod:`streamlib.actor`). That is right for a picture-in-picture, wrong for
three cameras filming one scene: there each output must be built from frames taken at
the same instant. An :class:`InputSync` owns that matching for a *sync set* of inputs,
with one of three policies, named after the frameworks users know them from:

``"default"`` (MediaPipe's ``DefaultInputStreamHandler``)
    A set for timestamp *T* is ready once every input has a message at or past *T*
    (or has ended): inputs are assumed to deliver in increasing timestamp order, so
    nothing earlier can still come. The set holds the messages stamped exactly *T*;
    an input without one is ``None``. Nothing is ever dropped and nothing times out.
``"immediate"`` (MediaPipe's ``ImmediateInputStreamHandler``)
    No synchronisation: every message is a set of its own, in arrival order.
``"tolerance"`` (GStreamer's aggregator, ROS's approximate-time filter)
    The oldest waiting message is the *pivot*; each input's message within
    ``tolerance`` seconds of it joins the set. An input is *missing* once it has shown
    a message past ``pivot + tolerance`` (or has ended), or, with ``timeout``, when
    ``timeout`` seconds have passed since the pivot arrived (GStreamer's
    ``latency``/``timeout``). A set with a missing input is *partial*: it is emitted
    with ``None`` there (``partial="emit"``) or dropped (``partial="drop"``).

An actor may hold several independent sync sets (MediaPipe's ``SyncSet``): one
``InputSync`` each, over disjoint inputs. Create them in ``__init__`` after declaring
the ports, then take matched sets in ``process``::

    class Triplets(Actor):
        def __init__(self, **kw):
            super().__init__(**kw)
            for name in ("left", "centre", "right"):
                self.inputs[name] = StreamInput(name, VideoFrame)
            self.cams = InputSync(*self.inputs.values(), policy="tolerance", tolerance=0.012)

        async def process(self, tick):
            for matched in await self.cams.read_many():   # one or more ready sets
                ...  # matched["left"] is a VideoFrame or None

``read()`` waits for the next set, ``read_many()`` waits for one and returns every set
ready by then (use it when the actor may be ticked less often than sets complete: after a
lost frame on the driving input, say), ``take()`` never waits. The sync pulls messages
out of the ports' mailboxes into its own bounded buffers (``buffer`` messages per input,
the oldest dropped and counted when full), so a waiting set never makes a mailbox overflow.

Every input's counters (``matched``, ``unmatched``, ``late``, ``timed_out``, ``missing``,
``overflow``) are in :attr:`InputSync.stats` and in the owning actor's ``stats()`` under
``"sync"``. Only the public :class:`~streamlib.ports.StreamInput` API is used.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from .actor import Actor, add_stats_section
from .errors import EndOfStream
from .ports import StreamInput

__all__ = ["InputSync", "LaneStats", "MatchedSet", "Partial", "SyncPolicy"]

SyncPolicy = Literal["default", "immediate", "tolerance"]
Partial = Literal["emit", "drop"]
_POLICIES: Final = get_args(SyncPolicy)
_PARTIALS: Final = get_args(Partial)


class MatchedSet(Mapping[str, Any]):
    """One synchronised set: input name -> message, or ``None`` where that input had none.

    Immutable. ``timestamp`` is the set's instant (for ``"tolerance"``, the pivot's);
    ``complete`` says every input is present; ``decided_at`` is the ``time.monotonic()``
    at which the sync released it (its added latency is ``decided_at`` minus the arrival
    of its newest member, ``arrived_last``).
    """

    __slots__ = ("_messages", "arrived_last", "decided_at", "timestamp")

    _messages: dict[str, Any]
    timestamp: float
    decided_at: float
    arrived_last: float

    def __init__(self, timestamp: float, messages: dict[str, Any], decided_at: float, arrived_last: float) -> None:
        object.__setattr__(self, "_messages", messages)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "decided_at", decided_at)
        object.__setattr__(self, "arrived_last", arrived_last)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a MatchedSet is immutable (tried to set {name!r})")

    def __getitem__(self, name: str) -> Any:
        return self._messages[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def complete(self) -> bool:
        """True when every input of the set has a message."""
        return all(m is not None for m in self._messages.values())

    @property
    def present(self) -> tuple[str, ...]:
        """Names of the inputs that have a message in this set."""
        return tuple(n for n, m in self._messages.items() if m is not None)

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the inputs that have none."""
        return tuple(n for n, m in self._messages.items() if m is None)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={'-' if m is None else getattr(m, 'frame_number', '?')}" for n, m in self.items())
        return f"<MatchedSet t={self.timestamp:.6f} {inner}>"


@dataclass(frozen=True, slots=True)
class LaneStats:
    """Counters of one input of a sync set (a snapshot)."""

    received: int
    """Messages pulled from the input's mailbox."""
    matched: int
    """Messages delivered in a complete set."""
    unmatched: int
    """Messages delivered in a partial set, or dropped with it (``partial="drop"``)."""
    late: int
    """Messages discarded because their set was already released (or out of timestamp order)."""
    timed_out: int
    """Sets released without this input because ``timeout`` expired while it had nothing."""
    missing: int
    """Sets released without this input, for any reason."""
    overflow: int
    """Messages dropped, oldest first, because the sync's buffer for this input was full."""
    buffered: int
    """Messages waiting in the sync's buffer now."""


@dataclass(slots=True, eq=False)
class _Lane:
    port: StreamInput
    name: str
    items: deque[tuple[float, float, Any]] = field(default_factory=deque)  # (timestamp, arrival, message)
    last_ts: float = -math.inf  # newest timestamp pulled: the lane can deliver nothing at or before it
    floor: float = -math.inf  # messages at or before this belong to sets already released
    ended: bool = False
    waiter: asyncio.Task[Any] | None = None
    received: int = 0
    matched: int = 0
    unmatched: int = 0
    late: int = 0
    timed_out: int = 0
    missing: int = 0
    overflow: int = 0


_owned: weakref.WeakKeyDictionary[Actor, list[InputSync]] = weakref.WeakKeyDictionary()


class InputSync:
    """Matches messages of ``inputs`` by timestamp (see the module docstring for the policies).

    ``tolerance`` (seconds, ``"tolerance"`` only): how far apart members of one set may
    be; keep it under half a frame period so that neighbouring frames cannot both match.
    ``timeout`` (seconds or ``None``): how long a set may wait for a silent input after its
    pivot arrived; ``None`` waits until the input shows a later message or ends.
    ``partial``: ``"emit"`` partial sets (``None`` for the missing) or ``"drop"`` them.
    ``buffer``: messages held per input while they wait. ``name``: the set's key in stats.

    Messages must carry a ``timestamp`` (every :class:`~streamlib.messages.Message` does),
    except under ``"immediate"``. An ``InputSync`` is used from its actor's event loop only.
    """

    name: str
    """The set's key in the actor's ``stats()["sync"]`` (``sync0``, ``sync1`` ... by default)."""

    def __init__(
        self,
        *inputs: StreamInput,
        policy: SyncPolicy = "default",
        tolerance: float = 0.0,
        timeout: float | None = None,
        partial: Partial = "emit",
        buffer: int = 64,
        name: str | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("an InputSync needs at least one StreamInput")
        for port in inputs:
            if not isinstance(port, StreamInput):
                raise TypeError(f"InputSync takes StreamInputs (e.g. self.inputs['a']), got {port!r}")
        names = [p.name for p in inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"InputSync: inputs must have distinct names, got {names}")
        if policy not in _POLICIES:
            raise ValueError(f"InputSync: policy must be one of {', '.join(map(repr, _POLICIES))}, got {policy!r}")
        if partial not in _PARTIALS:
            raise ValueError(f"InputSync: partial must be 'emit' or 'drop', got {partial!r}")
        if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
            raise ValueError(f"InputSync: tolerance must be seconds >= 0, got {tolerance!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"InputSync: timeout must be seconds > 0 or None, got {timeout!r}")
        if not (isinstance(buffer, int) and buffer >= 1):
            raise ValueError(f"InputSync: buffer must be an int >= 1, got {buffer!r}")
        owners = list({id(p.owner): p.owner for p in inputs if isinstance(p.owner, Actor)}.values())
        for owner in owners:
            for other in _owned.get(owner, ()):
                shared = sorted(lane.name for lane in other._lanes.values() if any(lane.port is p for p in inputs))
                if shared:
                    raise ValueError(
                        f"{owner.path}: inputs {shared} already belong to sync set {other.name!r}; "
                        "the sync sets of one actor must be disjoint"
                    )
        self.policy: SyncPolicy = policy
        self.tolerance = float(tolerance)
        self.timeout = timeout
        self.partial: Partial = partial
        self.buffer = buffer
        self.names: tuple[str, ...] = tuple(names)
        self._lanes: dict[str, _Lane] = {p.name: _Lane(p, p.name) for p in inputs}
        self._ready: deque[MatchedSet] = deque()
        self.sets = 0
        """Sets released (complete or partial, emitted or dropped)."""
        self.complete_sets = 0
        self.partial_sets = 0
        self.dropped_sets = 0
        self.name = name or "sync"
        for owner in owners:
            found = _owned.setdefault(owner, [])
            self.name = name or f"sync{len(found)}"
            found.append(self)
            # A set may be completed by any of its inputs, not only the actor's driving one.
            owner.tick_on(*(p for p in inputs if p.owner is owner))

    # -- reading -------------------------------------------------------------------------

    def take(self) -> MatchedSet | None:
        """The next ready set, or ``None`` at once if none is ready (never waits)."""
        if not self._ready:
            self._pull()
            self._match(time.monotonic())
        return self._ready.popleft() if self._ready else None

    async def read(self) -> MatchedSet:
        """Wait for and return the next set.

        Raises :class:`~streamlib.errors.EndOfStream` once every input has ended and
        every buffered message has been released, or when the reading actor stops.
        """
        while True:
            found = self.take()
            if found is not None:
                self._cancel_waiters()
                return found
            await self._wait()

    async def read_many(self) -> tuple[MatchedSet, ...]:
        """Wait for the next set, then return it with every other set ready by now."""
        first = await self.read()
        rest = []
        while (more := self.take()) is not None:
            rest.append(more)
        return (first, *rest)

    @property
    def stats(self) -> dict[str, LaneStats]:
        """Per-input counters (see :class:`LaneStats`)."""
        return {
            n: LaneStats(
                lane.received,
                lane.matched,
                lane.unmatched,
                lane.late,
                lane.timed_out,
                lane.missing,
                lane.overflow,
                len(lane.items),
            )
            for n, lane in self._lanes.items()
        }

    def summary(self) -> dict[str, Any]:
        """The counters as a plain dict (what the actor's ``stats()["sync"]`` shows)."""
        return {
            "policy": self.policy,
            "tolerance": self.tolerance,
            "timeout": self.timeout,
            "sets": self.sets,
            "complete": self.complete_sets,
            "partial": self.partial_sets,
            "dropped": self.dropped_sets,
            "inputs": {n: {k: getattr(s, k) for k in LaneStats.__slots__} for n, s in self.stats.items()},
        }

    # -- pulling messages out of the mailboxes -------------------------------------------

    def _pull(self) -> None:
        now = time.monotonic()
        for lane in self._lanes.values():
            port = lane.port
            while port.has_messages():
                self._accept(lane, port.read_nowait(), now)
            if not lane.ended and port.ended and not port.has_messages():
                lane.ended = True

    def _accept(self, lane: _Lane, message: Any, now: float) -> None:
        """Count ``message`` (just taken from ``lane``'s mailbox) into the lane's buffer."""
        lane.received += 1
        if self.policy == "immediate":
            self._release_alone(lane, message, now)
            return
        ts = getattr(message, "timestamp", None)
        if not isinstance(ts, (int, float)):
            raise TypeError(
                f"{lane.port.path}: InputSync(policy={self.policy!r}) matches messages by their timestamp, "
                f"but got a {type(message).__qualname__} without one; send streamlib Messages "
                "(VideoFrame.at(tick, ...)) or use policy='immediate'"
            )
        if ts <= lane.last_ts or ts <= lane.floor:
            lane.late += 1  # out of order, or its set is gone: it can match nothing now
            return
        lane.last_ts = ts
        if len(lane.items) >= self.buffer:
            lane.items.popleft()
            lane.overflow += 1
        lane.items.append((ts, now, message))

    # -- matching ------------------------------------------------------------------------

    def _match(self, now: float) -> None:
        """Release every set that is decided now."""
        if self.policy == "immediate":
            return
        lanes = self._lanes.values()
        while True:
            heads = [lane.items[0][0] for lane in lanes if lane.items]
            if not heads:
                return
            pivot = min(heads)
            if self.policy == "default":
                if not self._default_ready(pivot):
                    return
                members = {lane.name for lane in lanes if lane.items and lane.items[0][0] == pivot}
                self._emit(pivot, members, timed_out=())
            else:
                if not self._tolerance_set(pivot, now):
                    return

    def _default_ready(self, pivot: float) -> bool:
        # Every lane has something at or past the pivot, or can never deliver before it.
        return all(lane.items or lane.ended or lane.last_ts >= pivot for lane in self._lanes.values())

    def _tolerance_set(self, pivot: float, now: float) -> bool:
        """Release the set around ``pivot`` if it is decided; return whether it was."""
        horizon = pivot + self.tolerance
        members: set[str] = set()
        undecided: list[_Lane] = []
        pivot_arrival = math.inf
        for lane in self._lanes.values():
            if lane.items:
                ts, arrival = lane.items[0][0], lane.items[0][1]
                if ts <= horizon:
                    members.add(lane.name)
                    if ts == pivot:
                        pivot_arrival = min(pivot_arrival, arrival)
                continue  # a head past the horizon: missing, and nothing closer can come
            if lane.ended or lane.last_ts > horizon:
                continue
            undecided.append(lane)
        timed_out: tuple[_Lane, ...] = ()
        if undecided:
            if self.timeout is None or now < pivot_arrival + self.timeout:
                return False
            timed_out = tuple(undecided)
        self._emit(pivot, members, timed_out)
        return True

    def _emit(self, pivot: float, members: set[str], timed_out: tuple[_Lane, ...]) -> None:
        messages: dict[str, Any] = {}
        arrived_last = -math.inf
        complete = len(members) == len(self._lanes)
        floor = pivot + self.tolerance if self.policy == "tolerance" else pivot
        for lane in self._lanes.values():
            if lane.name in members:
                _, arrival, message = lane.items.popleft()
                messages[lane.name] = message
                arrived_last = max(arrived_last, arrival)
                if complete:
                    lane.matched += 1
                else:
                    lane.unmatched += 1
            else:
                messages[lane.name] = None
                lane.missing += 1
            if self.policy == "tolerance":
                lane.floor = max(lane.floor, floor)
        for lane in timed_out:
            lane.timed_out += 1
        self.sets += 1
        if complete:
            self.complete_sets += 1
        else:
            self.partial_sets += 1
            if self.partial == "drop":
                self.dropped_sets += 1
                return
        self._ready.append(MatchedSet(pivot, messages, time.monotonic(), arrived_last))

    def _release_alone(self, lane: _Lane, message: Any, now: float) -> None:
        """An ``"immediate"`` set: this message, the other inputs ``None``."""
        messages: dict[str, Any] = dict.fromkeys(self.names)
        messages[lane.name] = message
        complete = len(self.names) == 1
        lane.matched += complete
        lane.unmatched += not complete
        for other in self._lanes.values():
            other.missing += other is not lane
        self.sets += 1
        self.complete_sets += complete
        self.partial_sets += not complete
        self._ready.append(MatchedSet(getattr(message, "timestamp", now), messages, now, now))

    # -- waiting -------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        """When the oldest waiting set times out (``"tolerance"`` with a ``timeout`` only)."""
        if self.policy != "tolerance" or self.timeout is None:
            return None
        heads = [lane.items[0] for lane in self._lanes.values() if lane.items]
        if not heads:
            return None
        pivot = min(h[0] for h in heads)
        return min(h[1] for h in heads if h[0] == pivot) + self.timeout

    async def _wait(self) -> None:
        """Wait until a message arrives on any live input, an input ends, or the oldest set times out.

        Each live input gets a task in ``port.read()`` -- the public way to sleep on a
        mailbox, which also raises EndOfStream when the input ends or the actor stops.
        The tasks live only while ``read()`` runs: on every exit the pending ones are
        cancelled (a task that has not finished has taken no message)."""
        live = [lane for lane in self._lanes.values() if not lane.ended]
        if not live:
            raise EndOfStream(f"every input of sync set {self.name!r} ({', '.join(self.names)}) has ended")
        try:
            for lane in live:
                if lane.waiter is None:
                    lane.waiter = asyncio.ensure_future(lane.port.read())
            deadline = self._deadline()
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            waiters = [lane.waiter for lane in live if lane.waiter is not None]
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._cancel_waiters()
            raise
        stopping = False
        now = time.monotonic()
        for lane in live:
            task = lane.waiter
            if task is None or not task.done():
                continue
            lane.waiter = None
            try:
                message = task.result()
            except EndOfStream:
                if lane.port.ended:
                    lane.ended = True
                else:
                    stopping = True
                continue
            self._accept(lane, message, now)
        if stopping:
            self._cancel_waiters()
            raise EndOfStream(f"the actor reading sync set {self.name!r} is stopping")

    def _cancel_waiters(self) -> None:
        now = time.monotonic()
        for lane in self._lanes.values():
            task = lane.waiter
            if task is None:
                continue
            lane.waiter = None
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                if task.exception() is None:
                    self._accept(lane, task.result(), now)  # finished just now: keep its message
                elif lane.port.ended:
                    lane.ended = True

    def close(self) -> None:
        """Stop using these inputs (idempotent): pending waits are cancelled and the set leaves
        its actor's stats, so a new sync set may take the same inputs (e.g. when a layer is
        added). Buffered messages are dropped with the sync; its inputs keep ticking the actor."""
        self._cancel_waiters()
        for owner, found in list(_owned.items()):
            if self in found:
                found.remove(self)
                if not found:
                    del _owned[owner]

    def __repr__(self) -> str:
        return (
            f"<InputSync {self.name} {self.policy} inputs={list(self.names)} sets={self.sets} "
            f"partial={self.partial_sets} ready={len(self._ready)}>"
        )


def _sync_section(actor: Actor) -> dict[str, Any] | None:
    found = _owned.get(actor)
    if not found:
        return None
    return {sync.name: sync.summary() for sync in found}


add_stats_section("sync", _sync_section)
