"""Inputs, outputs and the ``>>`` operator that wires them.

A :class:`StreamInput` is an actor's mailbox for one kind of message; a
:class:`StreamOutput` fans each sent message out to every input connected to it.
``>>`` connects and returns its right-hand side, so ``a >> b >> c`` chains:

* ``output >> input`` connects those two ports;
* ``actor >> actor``, ``actor >> input`` and ``output >> actor`` pick the one
  type-compatible pair of ports, and raise :class:`TypeError` listing the candidates
  when there are none or several.

A connection is type-checked when it is made: an output of ``VideoFrame`` cannot feed an
input of ``AudioBuffer``. Connections may be added and removed while everything runs;
a send iterates over an immutable snapshot of the subscribers, so rewiring from another
thread never disturbs a send in flight.

Ports know their *memory space*: ``memory="cpu"`` (the default: numpy frames),
``"gpu"`` (frames whose data is a GPU texture) or ``"any"``. Connecting a CPU-only
output to a GPU-only input (or the reverse) inserts the transfer actor registered for
that direction with :func:`register_transfer` (the GPU actors register theirs), so
``camera >> gpu_effect`` just works; GPU to GPU connections pass textures by reference.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, Union, get_args

from .errors import ActorDefinitionError, EndOfStream
from .mailbox import EMPTY, Mailbox, Overflow

if TYPE_CHECKING:
    from .actor import Actor

__all__ = [
    "InputStatistics",
    "Memory",
    "PortMap",
    "StreamInput",
    "StreamOutput",
    "connect",
    "disconnect",
    "register_transfer",
]

_wiring_lock = threading.RLock()

Memory = Literal["cpu", "gpu", "any"]
MEMORY_SPACES = get_args(Memory)

# (from memory, to memory) -> factory(output, input) returning the transfer actor to insert
_transfers: dict[tuple[str, str], Callable[[Any, Any], Any]] = {}
# (output, input) -> the transfer actor inserted between them by connect()
_bridges: dict[tuple[Any, Any], Any] = {}


def register_transfer(from_memory: str, to_memory: str, factory: Callable[[Any, Any], Any] | None) -> None:
    """Make ``output >> input`` between those memory spaces insert ``factory(output, input)``.

    The factory returns a running actor with exactly one input and one output, of the
    memory spaces ``from_memory`` and ``to_memory``; connect() wires ``output >> its input``
    and ``its output >> input``, and ``output // input`` later removes and stops it.
    ``None`` unregisters."""
    for memory in (from_memory, to_memory):
        if memory not in ("cpu", "gpu"):
            raise ValueError(f"transfers go between 'cpu' and 'gpu', got {memory!r}")
    with _wiring_lock:
        if factory is None:
            _transfers.pop((from_memory, to_memory), None)
        else:
            _transfers[(from_memory, to_memory)] = factory


def _check_memory(kind: str, name: str, memory: Any) -> Memory:
    if memory not in MEMORY_SPACES:
        raise ActorDefinitionError(f"{kind} {name!r}: memory must be 'cpu', 'gpu' or 'any', got {memory!r}")
    return memory  # type: ignore[no-any-return]


class _Owner(Protocol):
    """What a port needs from the actor that owns it."""

    path: str

    def _wiring_changed(self) -> None: ...
    def _reader_should_stop(self) -> bool: ...
    def _in_hand(self, port: StreamInput) -> int: ...


def _type_name(t: Any) -> str:
    return getattr(t, "__qualname__", repr(t))


def _check_msg_type(kind: str, name: str, msg_type: Any) -> type:
    if msg_type is Any:
        return object
    if not isinstance(msg_type, type):
        raise ActorDefinitionError(
            f"{kind} {name!r}: msg_type must be a class such as VideoFrame (or object for anything), got {msg_type!r}"
        )
    return msg_type


def _compatible(out_type: type, in_type: type) -> bool:
    return in_type is object or out_type is object or issubclass(out_type, in_type)


@dataclass(frozen=True, slots=True)
class InputStatistics:
    """A frozen snapshot of one input's counters: where every message sent to it went.

    At every moment, for every overflow policy, dispatcher and way of ending::

        delivered == taken + in_hand + lost + dropped + discarded + queued

    and no counter is ever smaller than in an earlier snapshot (``in_hand`` and
    ``queued`` are levels). The mailbox alone (:class:`~streamlib.mailbox.MailboxStatistics`)
    cannot tell a message processed from one lost in a crash; the input can."""

    delivered: int
    """Messages its upstreams sent to it, each counted once (a sender blocked on a full
    ``"block"`` input is counted when it gets in or gives up, e.g. because it was stopped)."""
    taken: int
    """Messages the actor read and finished with: the tick that read them completed."""
    in_hand: int
    """Messages read by the tick running now (they become ``taken``, or ``lost`` if it crashes)."""
    lost: int
    """Messages read by a tick that then crashed: lost with it (a supervisor's restart
    rebuilds the actor, not the message)."""
    dropped: int
    """Messages the overflow policy discarded (``drop_oldest`` evictions, ``drop_newest`` refusals)."""
    discarded: int
    """Messages that never reached the actor for another reason: queued when it ended
    for good, offered after that, left over at end of stream, or whose blocked sender gave up."""
    queued: int
    capacity: int
    overflow: str
    tasks_waiting_send: int


class StreamInput:
    """A named, typed, bounded mailbox belonging to one actor.

    ``maxsize`` (default 2: realtime wants little queueing) bounds the mailbox and
    ``overflow`` says what happens when it is full (see :mod:`streamlib.mailbox`).
    Every message sent to it is accounted for: :meth:`statistics`. ``memory`` is where the
    data it accepts lives: ``"cpu"`` (default), ``"gpu"`` or ``"any"`` (see the module docstring).
    """

    __slots__ = ("_upstreams", "lost", "mailbox", "memory", "msg_type", "name", "owner", "tick_mark")

    def __init__(
        self,
        name: str,
        msg_type: Any = object,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        memory: Memory = "cpu",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ActorDefinitionError(f"a StreamInput needs a non-empty str name, got {name!r}")
        self.name = name
        self.msg_type: type = _check_msg_type("StreamInput", name, msg_type)
        self.memory: Memory = _check_memory("StreamInput", name, memory)
        self.mailbox = Mailbox(maxsize, overflow)
        self.owner: _Owner | None = None
        self._upstreams: dict[StreamOutput, bool] = {}  # output -> has it ended?
        self.lost = 0
        """Messages taken by a ``process`` call that then crashed (lost in the restart)."""
        self.tick_mark = 0
        """The mailbox's ``taken`` count when the running tick began (kept by the runtime)."""

    # -- reading (what ``process`` calls) ----------------------------------------------

    async def read(self) -> Any:
        """Wait for and return the next message.

        Raises :class:`EndOfStream` once the input can never deliver again (every
        upstream ended and the mailbox is empty) or the reading actor is stopping.
        """
        mailbox = self.mailbox
        while True:
            item = mailbox.get_nowait()
            if item is not EMPTY:
                return item
            if self.ended or (self.owner is not None and self.owner._reader_should_stop()):
                raise EndOfStream(f"{self.path} has no more messages")
            await mailbox.wait_nonempty()

    async def try_read(self) -> Any:
        """Return the next message, or ``None`` at once if the mailbox is empty."""
        item = self.mailbox.get_nowait()
        return None if item is EMPTY else item

    def read_nowait(self) -> Any:
        """``try_read`` for synchronous code (a sync ``def process`` on a thread dispatcher)."""
        item = self.mailbox.get_nowait()
        return None if item is EMPTY else item

    def has_messages(self) -> bool:
        return bool(self.mailbox._items)

    # -- state -----------------------------------------------------------------------

    @property
    def queue(self) -> Mailbox:
        """The mailbox (``qsize()``, ``empty()``, ``full()``), as seed 004 calls it."""
        return self.mailbox

    @property
    def dropped(self) -> int:
        """Messages that never reached the actor: dropped by the overflow policy, or
        discarded (its actor was gone for good, or a blocked sender gave up)."""
        mailbox = self.mailbox
        return mailbox.dropped + mailbox.discarded

    @property
    def received(self) -> int:
        """Messages accepted into the mailbox (some may have been dropped or discarded since)."""
        return self.mailbox.received

    def statistics(self) -> InputStatistics:
        """Where every message sent to this input went (see :class:`InputStatistics`)."""
        mailbox = self.mailbox
        for _ in range(100):  # a consistent read of counters that other threads may move meanwhile
            stats = mailbox.statistics()
            lost = self.lost
            in_hand = stats.in_hand + (self.owner._in_hand(self) if self.owner is not None else 0)
            if stats == mailbox.statistics() and lost == self.lost:
                break
        return InputStatistics(
            delivered=stats.delivered,
            taken=stats.taken + stats.in_hand - in_hand - lost,
            in_hand=in_hand,
            lost=lost,
            dropped=stats.dropped,
            discarded=stats.discarded,
            queued=stats.current_buffer_used,
            capacity=stats.max_buffer_size,
            overflow=stats.overflow,
            tasks_waiting_send=stats.tasks_waiting_send,
        )

    @property
    def connected(self) -> bool:
        return bool(self._upstreams)

    @property
    def upstreams(self) -> tuple[StreamOutput, ...]:
        return tuple(self._upstreams)

    @property
    def ended(self) -> bool:
        """True once it is connected and every upstream has signalled end of stream."""
        ups = self._upstreams
        return bool(ups) and all(ups.values())

    @property
    def path(self) -> str:
        owner = self.owner.path if self.owner is not None else "<unowned>"
        return f"{owner}.inputs[{self.name!r}]"

    # -- called by outputs -----------------------------------------------------------

    def _upstream_ended(self, output: StreamOutput) -> None:
        if output in self._upstreams:
            self._upstreams[output] = True
            self.mailbox.wake_readers()
            if self.owner is not None:
                self.owner._wiring_changed()

    def __rshift__(self, other: object) -> Any:
        raise TypeError(
            f"{self.path} is an input: it cannot feed anything. Write output >> input, "
            f"e.g. source.outputs['video'] >> {self.path}"
        )

    def __repr__(self) -> str:
        mb = self.mailbox
        return (
            f"<StreamInput {self.path} {_type_name(self.msg_type)} {len(mb)}/{mb.maxsize} "
            f"{mb.overflow} dropped={self.dropped} lost={self.lost} upstreams={len(self._upstreams)}>"
        )


class StreamOutput:
    """A named, typed sender that fans every message out to its subscribers.

    ``memory`` is where the data it sends lives: ``"cpu"`` (default), ``"gpu"`` or ``"any"``."""

    __slots__ = ("_snapshot", "_subscribers", "memory", "msg_type", "name", "owner", "sent")

    def __init__(self, name: str, msg_type: Any = object, memory: Memory = "cpu") -> None:
        if not isinstance(name, str) or not name:
            raise ActorDefinitionError(f"a StreamOutput needs a non-empty str name, got {name!r}")
        self.name = name
        self.msg_type: type = _check_msg_type("StreamOutput", name, msg_type)
        self.memory: Memory = _check_memory("StreamOutput", name, memory)
        self._subscribers: dict[StreamInput, None] = {}  # ordered set: O(1) to add or remove
        self._snapshot: tuple[StreamInput, ...] | None = ()  # what sends iterate; None = rebuild
        self.owner: _Owner | None = None
        self.sent = 0

    @property
    def subscribers(self) -> tuple[StreamInput, ...]:
        """The connected inputs, in connection order (an immutable snapshot)."""
        snapshot = self._snapshot
        if snapshot is None:
            with _wiring_lock:
                snapshot = self._snapshot = tuple(self._subscribers)
        return snapshot

    @property
    def path(self) -> str:
        owner = self.owner.path if self.owner is not None else "<unowned>"
        return f"{owner}.outputs[{self.name!r}]"

    def _check(self, message: Any) -> None:
        raise TypeError(
            f"{self.path} is declared for {_type_name(self.msg_type)} but was sent a {_type_name(type(message))}"
        )

    async def send(self, message: Any) -> None:
        """Deliver ``message`` (by reference) to every connected input.

        Never waits on a dropping input; waits for room only on an input declared with
        ``overflow="block"``. Every dropping input gets the message before the send waits
        for any blocking one, and several full blocking inputs are waited for together,
        so a slow lossless subscriber delays no other subscriber's copy: it only paces the
        sender (backpressure), and with it how often the output sends at all.
        """
        pending = _deliver(self, message)
        if pending is not None:  # a full "block" input: serve the rest first
            await _send_past_blocking(message, *pending)

    def send_nowait(self, message: Any) -> None:
        """``send`` for synchronous code.

        On an input with ``overflow="block"`` that is full, a worker thread waits for
        room; the event loop's own thread cannot wait, so there it raises
        :class:`RuntimeError` (use ``await send()`` instead).
        """
        msg_type = self.msg_type
        if msg_type is not object and not isinstance(message, msg_type):
            self._check(message)
        self.sent += 1
        waiting: list[tuple[StreamInput, Mailbox]] = []
        for port in self.subscribers:
            mailbox = port.mailbox
            if mailbox.put_nowait(message) is None:  # a full "block" input: wait after the others
                waiting.append((port, mailbox))
        for index, (port, mailbox) in enumerate(waiting):
            loop = getattr(port.owner, "event_loop", None)
            if asyncio._get_running_loop() is not None or loop is None:
                for _, pending in waiting[index:]:
                    pending.give_up()  # counted: the message was sent to them and discarded
                raise RuntimeError(
                    f"{port.path} is full and blocks (overflow='block'); use 'await send()' from the event loop"
                )
            asyncio.run_coroutine_threadsafe(mailbox.put(message), loop).result()

    # -- wiring ----------------------------------------------------------------------

    def connect(self, port: StreamInput) -> StreamInput:
        """Connect this output to ``port`` (idempotent) and return ``port``.

        Between a CPU-only and a GPU-only port, the registered transfer actor is inserted."""
        if not isinstance(port, StreamInput):
            raise TypeError(f"{self.path} can only connect to a StreamInput, got {port!r}")
        if not _compatible(self.msg_type, port.msg_type):
            raise TypeError(
                f"cannot connect {self.path} ({_type_name(self.msg_type)}) >> {port.path} "
                f"({_type_name(port.msg_type)}): incompatible message types"
            )
        if self.memory != port.memory and self.memory != "any" and port.memory != "any":
            return self._bridge(port)
        with _wiring_lock:
            if port not in self._subscribers:
                self._subscribers[port] = None
                self._snapshot = None  # rebuilt once by the next send, not per connection
            port._upstreams[self] = False
        if port.owner is not None:
            port.owner._wiring_changed()
        if self.owner is not None:
            self.owner._wiring_changed()  # a source holding its first tick for a subscriber starts
        return port

    def disconnect(self, port: StreamInput | None = None) -> None:
        """Remove the connection to ``port``, or every connection when ``port`` is None."""
        with _wiring_lock:
            targets = tuple(self._subscribers) if port is None else (port,)
            for target in targets:
                self._subscribers.pop(target, None)
                target._upstreams.pop(self, None)
            self._snapshot = None
            # A transfer inserted by connect() goes with its connection: from this output, or
            # (this being the transfer's output) to the input it was inserted for.
            doomed = [
                (k[0], k[1], t)
                for k, t in _bridges.items()
                if (k[0] is self and (port is None or k[1] is port))
                or (k[1] in targets and any(o is self for o in t.outputs.values()))
            ]
            for upstream, target, _ in doomed:
                del _bridges[(upstream, target)]
        for target in targets:
            if target.owner is not None:
                target.owner._wiring_changed()
        for upstream, target, transfer in doomed:
            for out in transfer.outputs.values():
                out.disconnect(target)
            for inp in transfer.inputs.values():
                upstream.disconnect(inp)
            transfer.stop()

    def _bridge(self, port: StreamInput) -> StreamInput:
        """Connect across memory spaces through a transfer actor (see :func:`register_transfer`)."""
        key = (self, port)
        with _wiring_lock:
            if key in _bridges:
                return port
            factory = _transfers.get((self.memory, port.memory))
        if factory is None:
            raise TypeError(
                f"cannot connect {self.path} ({self.memory} memory) >> {port.path} ({port.memory} memory): "
                f"no {self.memory}->{port.memory} transfer is registered (import streamlib.actors.gpu, which registers "
                "the Upload/Download actors, or put a transfer actor between them)"
            )
        transfer = factory(self, port)
        (t_in,) = transfer.inputs.values()
        (t_out,) = transfer.outputs.values()
        with _wiring_lock:
            _bridges[key] = transfer
        self.connect(t_in)
        t_out.connect(port)
        return port

    def end_of_stream(self) -> None:
        """Tell every subscriber this output will send nothing more (a control signal, never dropped)."""
        for port in self.subscribers:
            port._upstream_ended(self)

    def __rshift__(self, other: Any) -> Any:
        return connect(self, other)

    def __repr__(self) -> str:
        return (
            f"<StreamOutput {self.path} {_type_name(self.msg_type)} sent={self.sent} "
            f"subscribers={len(self.subscribers)}>"
        )


def deliver(output: StreamOutput, message: Any) -> tuple[tuple[StreamInput, ...], StreamInput] | None:
    """The part of :meth:`StreamOutput.send` that never waits: check the message's type, count
    it, offer it to each subscriber in order -- until a full ``"block"`` input, where the send
    must wait: then ``(the subscribers, that input)``; ``None`` when all have it. (In C where
    the extension is built: :mod:`streamlib.speedups`.)"""
    msg_type = output.msg_type
    if msg_type is not object and not isinstance(message, msg_type):
        output._check(message)
    output.sent += 1
    subscribers = output._snapshot
    if subscribers is None:
        subscribers = output.subscribers
    for port in subscribers:
        if port.mailbox.put_nowait(message) is None:
            return subscribers, port
    return None


_deliver: Callable[[StreamOutput, Any], tuple[tuple[StreamInput, ...], StreamInput] | None] = deliver
"""What ``send`` calls (:mod:`streamlib.speedups` puts the C version here)."""


async def _send_past_blocking(message: Any, subscribers: tuple[StreamInput, ...], first: StreamInput) -> None:
    """The rest of a send that met a full blocking input (``first``): offer the message to the
    subscribers after it, then wait for every full blocking one together, so that no
    subscriber's copy waits behind a slow lossless sibling."""
    waiting = [first.mailbox]
    for port in subscribers[subscribers.index(first) + 1 :]:
        if port.mailbox.put_nowait(message) is None:
            waiting.append(port.mailbox)
    if len(waiting) == 1:
        await waiting[0].put(message)
    else:
        await asyncio.gather(*(mailbox.put(message) for mailbox in waiting))


class PortMap(dict[str, Any]):
    """``actor.inputs`` / ``actor.outputs``: a dict that binds each port to its actor.

    Assigning a port here is how an actor declares it (``self.inputs['video'] =
    StreamInput('video', VideoFrame)``); assigning anything else is a definition error.
    """

    __slots__ = ("_kind", "_owner")

    def __init__(self, owner: _Owner, kind: type) -> None:
        super().__init__()
        self._owner = owner
        self._kind = kind

    def __setitem__(self, key: str, port: Any) -> None:
        self._bind(key, port)
        self._owner._wiring_changed()

    def with_port(self, port: StreamInput | StreamOutput) -> PortMap:
        """A new map with ``port`` added under its name (this map is left as it is: the
        runtime may be iterating it). The caller swaps it in, then tells the runtime."""
        found = self._copy()
        found._bind(port.name, port)
        return found

    def without(self, name: str) -> PortMap:
        """A new map without ``name`` (this map is left as it is)."""
        return self._copy(skip=name)

    def _bind(self, key: str, port: Any) -> None:
        if not isinstance(port, self._kind):
            what = "inputs" if self._kind is StreamInput else "outputs"
            raise ActorDefinitionError(
                f"{type(self._owner).__qualname__}: {what}[{key!r}] must be a {self._kind.__name__}, got {port!r}"
            )
        port.owner = self._owner  # type: ignore[attr-defined]
        super().__setitem__(key, port)

    def _copy(self, skip: str | None = None) -> PortMap:
        found = PortMap(self._owner, self._kind)
        for key, port in self.items():
            if key != skip:
                dict.__setitem__(found, key, port)
        return found


# -- ``>>`` between anything -----------------------------------------------------------

_Endpoint = Union["Actor", StreamInput, StreamOutput]
_R = TypeVar("_R")


def _describe(ports: list[tuple[StreamOutput, StreamInput]]) -> str:
    return "; ".join(f"{o.path} ({_type_name(o.msg_type)}) >> {i.path} ({_type_name(i.msg_type)})" for o, i in ports)


def connect(left: Any, right: _R) -> _R:
    """Connect ``left >> right`` and return ``right`` (what every ``>>`` does)."""
    if isinstance(left, StreamInput):
        left.__rshift__(right)
    if isinstance(left, StreamOutput):
        outputs = [left]
        left_name = left.path
    elif hasattr(left, "outputs") and isinstance(left.outputs, PortMap):
        outputs = list(left.outputs.values())
        left_name = left.path
    else:
        raise TypeError(f"cannot connect {left!r} >> ...: the left side must be an actor or an output")

    target: Any = right
    if isinstance(target, StreamInput):
        inputs = [target]
        right_name = target.path
    elif hasattr(target, "inputs") and isinstance(target.inputs, PortMap):
        inputs = list(target.inputs.values())
        right_name = target.path
    elif isinstance(target, StreamOutput):
        raise TypeError(f"{target.path} is an output: the right side of >> must be an actor or an input")
    else:
        raise TypeError(f"cannot connect {left_name} >> {right!r}: the right side must be an actor or an input")

    if len(outputs) == 1 and len(inputs) == 1:
        outputs[0].connect(inputs[0])  # raises a TypeError naming both ends on a type mismatch
        return right
    candidates = [(o, i) for o in outputs for i in inputs if _compatible(o.msg_type, i.msg_type)]
    if len(candidates) == 1:
        candidates[0][0].connect(candidates[0][1])
        return right
    if not candidates:
        outs = ", ".join(f"{o.path} ({_type_name(o.msg_type)})" for o in outputs) or "no outputs"
        ins = ", ".join(f"{i.path} ({_type_name(i.msg_type)})" for i in inputs) or "no inputs"
        raise TypeError(
            f"cannot connect {left_name} >> {right_name}: no type-compatible pair of ports "
            f"(outputs: {outs}; inputs: {ins})"
        )
    raise TypeError(
        f"cannot connect {left_name} >> {right_name}: {len(candidates)} type-compatible pairs, "
        f"name the ports: {_describe(candidates)}"
    )


def disconnect(left: Any, right: Any) -> None:
    """Undo every connection from ``left`` (an actor or output) to ``right`` (an actor or input)."""
    outputs = [left] if isinstance(left, StreamOutput) else list(left.outputs.values())
    inputs = [right] if isinstance(right, StreamInput) else list(right.inputs.values())
    for out in outputs:
        for port in inputs:
            if port in out.subscribers or (out, port) in _bridges:
                out.disconnect(port)
