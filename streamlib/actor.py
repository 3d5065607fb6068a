"""The actor: a self-starting task with mailboxes, a clock and a place in a tree.

Constructing an actor starts it -- there is no ``start()`` or ``run()``. Its life has
three parts, each running on the actor's event loop (the hooks themselves run wherever
its dispatcher puts them):

setup
    ``on_start()`` runs once, after the subclass ``__init__`` has returned.
running
    ``process(tick)`` runs once per tick. Where ticks come from:

    * **synced to upstream** -- with connected inputs, the actor ticks when a message
      arrives, and the tick carries that message's clock metadata. With several
      inputs the first to deliver *drives* the clock and the others are sampled.
    * **own clock** -- with no connected input (the *bathtub*), or once every upstream
      has been silent for ``silence_periods`` frame periods, the actor runs its own
      :class:`~streamlib.clock.SoftwareClock` at ``default_fps``; the first message to
      arrive re-syncs it. ``default_fps = None`` makes an actor purely message-driven.
    * an explicit ``clock=`` always drives the actor (a test's manual clock, PTP, ...).
teardown
    Children are stopped, then ``on_stop()`` runs, then the actor's outputs signal end
    of stream to their subscribers (unless a supervisor is about to restart it: a
    restarted actor keeps its mailboxes and connections).

An actor ends when ``stop()`` is called, when it calls ``self.stop()`` itself, when
``process`` raises (``FAILED``), or at *end of stream*: once every connected input has
ended and its mailboxes are drained, ``on_end_of_stream()`` runs, which stops the actor
by default.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import contextlib
import contextvars
import enum
import functools
import inspect
import itertools
import logging
import re
import threading
import time
from abc import ABCMeta, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar, overload

from .clock import Clock, SoftwareClock
from .current import current_actor, set_current_actor
from .dispatch import Dispatcher, resolve_dispatcher
from .errors import ActorDefinitionError, ActorInitError, EndOfStream
from .eventloop import current_loop, is_worker_loop
from .mailbox import Mailbox
from .messages import Message, TimedTick
from .ports import PortMap, StreamInput, StreamOutput, connect, disconnect
from .rendering import render
from .signals import install_sigterm_handler

__all__ = ["Actor", "ActorSpec", "Completion", "LifecycleState", "RestartPolicy", "current_actor", "running_actors"]

log = logging.getLogger("streamlib")

RestartPolicy = Literal["permanent", "transient", "temporary"]
RESTART_POLICIES = ("permanent", "transient", "temporary")

# Keyword arguments every actor accepts, whether or not its own __init__ declares them.
FRAMEWORK_OPTIONS = frozenset({"parent", "dispatcher", "name", "clock", "restart"})

_options: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_options", default=None)
_registry_lock = threading.RLock()
_roots: dict[str, Actor] = {}  # running top-level actors, by name
_root_names: dict[str, itertools.count[int]] = {}


class _Wait:
    """The run loop's signal to sleep until the doorbell rings."""

    __slots__ = ()


_WAIT = _Wait()


class LifecycleState(enum.Enum):
    """Where an actor is in its life. An actor is ``RUNNING`` from construction."""

    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class _Cause(enum.Enum):
    """Why an actor ended; a supervisor's restart decision depends on it."""

    STOP = "stopped by request"
    SELF = "stopped itself"
    END_OF_STREAM = "end of stream"
    FAILURE = "failed"
    PARENT = "parent stopped"
    RESTART = "stopped for a sibling's restart"


@dataclass(frozen=True)
class ActorSpec:
    """How an actor was built: enough to build it again (what a supervisor restarts)."""

    cls: type[Actor]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


class Completion:
    """The end of an actor's life, awaitable from any loop and waitable from any thread.

    ``await actor.stop()`` and ``await actor.join()`` return the final
    :class:`LifecycleState` once the actor and all its children have stopped and every
    ``on_stop`` has run. Synchronous code uses ``actor.stop().wait(timeout)``.
    """

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor) -> None:
        self._actor = actor

    def __await__(self) -> Generator[Any, None, LifecycleState]:
        actor = self._actor
        if not actor._core.done.done() and current_actor() is actor:
            raise RuntimeError(
                f"{actor.path} awaited its own stop()/join() from its own code, which would wait forever "
                "(it ends only after this hook returns); call self.stop() without 'await'"
            )
        return _ended(actor).__await__()

    def wait(self, timeout: float | None = None) -> LifecycleState:
        """Block this thread until the actor has stopped (never call it on the actor's loop)."""
        if asyncio._get_running_loop() is self._actor._core.loop:
            raise RuntimeError(
                f"Completion.wait() on {self._actor.path}'s own event loop would deadlock; use 'await'"
            )
        return self._actor._core.done.wait(timeout)

    def done(self) -> bool:
        return self._actor._core.done.done()

    def __repr__(self) -> str:
        return f"<Completion of {self._actor.path} done={self.done()}>"


_outcome_lock = threading.Lock()


class _Outcome:
    """An actor's final state: set once on its loop, awaited or waited for from anywhere.

    A ``concurrent.futures.Future`` would do, but costs a Condition and an RLock per actor;
    one lock shared by all outcomes keeps ten thousand actors cheap."""

    __slots__ = ("_callbacks", "_state")

    def __init__(self) -> None:
        self._state: LifecycleState | None = None
        self._callbacks: list[Callable[[LifecycleState], None]] = []

    def done(self) -> bool:
        return self._state is not None

    def set(self, state: LifecycleState) -> None:
        with _outcome_lock:
            if self._state is not None:
                return
            self._state = state
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(state)

    def add_done_callback(self, callback: Callable[[LifecycleState], None]) -> None:
        with _outcome_lock:
            state = self._state
            if state is None:
                self._callbacks.append(callback)
                return
        callback(state)

    def wait(self, timeout: float | None = None) -> LifecycleState:
        event = threading.Event()
        self.add_done_callback(lambda _: event.set())
        if not event.wait(timeout):
            raise TimeoutError(f"not ended within {timeout} s")
        assert self._state is not None
        return self._state


async def _ended(actor: Actor) -> LifecycleState:
    """Wait for ``actor`` to end, from any loop (cancelling the wait affects nobody else)."""
    done = actor._core.done
    state = done._state
    if state is not None:
        return state
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[LifecycleState] = loop.create_future()

    def settle(state: LifecycleState) -> None:
        if not waiter.done():
            waiter.set_result(state)

    done.add_done_callback(lambda state: _call_soon(loop, settle, state))
    return await waiter


_T = TypeVar("_T")


class _RuntimeAttribute(Generic[_T]):
    """An actor attribute the runtime keeps (in the actor's ``_core``): readable, and
    assigning it raises :class:`ActorDefinitionError` at once, saying what it is -- so code
    that reuses the name for its own data (``self.state = {...}``, as generated code often
    does) fails clearly instead of quietly breaking the actor."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.__doc__ = what[0].upper() + what[1:] + "."

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, actor: None, owner: type | None = None) -> _RuntimeAttribute[_T]: ...
    @overload
    def __get__(self, actor: object, owner: type | None = None) -> _T: ...
    def __get__(self, actor: object | None, owner: type | None = None) -> _T | _RuntimeAttribute[_T]:
        if actor is None:
            return self
        return getattr(actor._core, self.name)  # type: ignore[attr-defined, no-any-return]

    def __set__(self, actor: object, value: Any) -> None:
        raise ActorDefinitionError(
            f"{type(actor).__qualname__}: {self.name!r} is {self.what}, kept by streamlib; "
            f"keep your own value in another attribute (self.data, self.counts, ...)"
        )


class _Core:
    """An actor's runtime state, kept in one object so subclasses may use any attribute name."""

    __slots__ = (
        "calm",
        "cause",
        "children_by_name",
        "clock_wait",
        "connected",
        "control",
        "deferred",
        "done",
        "doorbell",
        "drain_mark",
        "driver",
        "driver_id",
        "ending",
        "explicit_clock",
        "failure",
        "free_running",
        "in_process",
        "inherit",
        "last_fps",
        "loop",
        "name",
        "name_counters",
        "path",
        "replaced_by",
        "restart",
        "restarts",
        "run_tick",
        "silence_mark",
        "silence_timer",
        "spec",
        "state",
        "stop_requested",
        "synced",
        "task",
        "tick_mark",
        "ticked",
        "ticks",
        "wakers",
        "wiring_dirty",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[None] | None = None
        self.done = _Outcome()
        self.doorbell: asyncio.Future[None] | None = None
        self.control: deque[Callable[[], Awaitable[None]]] = deque()
        self.stop_requested = False
        self.cause: _Cause | None = None
        self.failure: BaseException | None = None
        self.explicit_clock: Clock | None = None
        self.clock_wait: asyncio.Future[TimedTick] | None = None
        self.driver: StreamInput | None = None
        self.driver_id = ""
        self.ticked = 0  # the driver's `received` count that ticks have accounted for
        self.wakers: list[tuple[Mailbox, Callable[[], None]]] = []
        self.synced = False
        self.free_running = False
        self.ending = False
        self.wiring_dirty = True
        self.calm = False  # True while no signal, rewiring or own-clock mode needs the slow path
        self.silence_timer: asyncio.TimerHandle | None = None
        self.silence_mark: tuple[int, int] = (0, 0)
        self.last_fps: float | None = None
        self.drain_mark = -1
        self.tick_mark = -1
        self.ticks = 0
        self.in_process = False
        self.restart: RestartPolicy = "permanent"
        self.restarts = 0
        self.run_tick: Callable[[TimedTick], Awaitable[None] | None] | None = None
        self.spec: ActorSpec | None = None
        self.inherit: Actor | None = None
        self.replaced_by: Actor | None = None
        self.deferred = False
        self.name = ""
        self.path = ""
        self.connected = False
        self.children_by_name: dict[str, Actor] = {}
        self.name_counters: dict[str, itertools.count[int]] = {}
        self.state = LifecycleState.RUNNING


@functools.cache
def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@functools.cache
def _declared_params(init: Callable[..., Any]) -> frozenset[str]:
    """Parameter names an ``__init__`` declares by name (not through ``**kwargs``)."""
    try:
        params = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(
        p.name for p in params if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    )


class ActorMeta(ABCMeta):
    """Builds an actor, then starts it.

    Starting from here rather than from ``Actor.__init__`` guarantees that the task
    never runs ``on_start``/``process`` before the *subclass* ``__init__`` has
    returned (and so declared its ports), whichever thread constructs the actor.
    Framework options (``parent``, ``dispatcher``, ``name``, ``clock``, ``restart``)
    reach ``Actor.__init__`` even when the subclass ``__init__`` does not forward them.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if getattr(cls, "__abstractmethods__", None):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise ActorDefinitionError(
                f"{cls.__qualname__} cannot be instantiated: it does not define {missing} "
                f"(every actor needs 'async def process(self, tick)')"
            )
        # Parameters some class between cls and Actor declares by name stay with the caller's
        # call; the rest of the framework options reach Actor.__init__ directly.
        declared = frozenset().union(
            *(_declared_params(vars(c)["__init__"]) for c in cls.__mro__ if "__init__" in vars(c) and c is not Actor)
        )
        internal = {k: kwargs.pop(k) for k in ("_restart_of",) if k in kwargs}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in FRAMEWORK_OPTIONS and k not in declared}
        spec = ActorSpec(cls, args, dict(kwargs), dict(options))  # type: ignore[arg-type]
        token = _options.set({**options, **internal, "_spec": spec})
        try:
            actor: Any = object.__new__(cls)  # type: ignore[arg-type]
            try:
                actor.__init__(*args, **kwargs)
            except ActorDefinitionError:
                _abandon(actor)
                raise
            except Exception as exc:
                _abandon(actor)
                raise ActorInitError(f"{cls.__qualname__}.__init__ raised {type(exc).__name__}: {exc}") from exc
        finally:
            _options.reset(token)
        if not isinstance(getattr(actor, "_core", None), _Core):
            raise ActorDefinitionError(f"{cls.__qualname__}.__init__ did not call super().__init__()")
        actor._launch()
        return actor


def _abandon(actor: Actor) -> None:
    """Undo the registration of an actor whose ``__init__`` failed."""
    core = getattr(actor, "_core", None)
    if not isinstance(core, _Core):
        return
    with _registry_lock:
        parent = actor.parent
        if parent is not None and actor in parent.children:
            parent.children.remove(actor)
        _roots.pop(actor.name, None)


def _home_loop() -> asyncio.AbstractEventLoop:
    """The loop for a new top-level actor: the running loop, unless that is a thread
    dispatcher's private worker loop (which only runs during a hook call): then the loop
    of the actor whose hook is building it."""
    install_sigterm_handler()  # SIGTERM stops actors gracefully, as Ctrl-C does (see .signals)
    loop = asyncio._get_running_loop()
    if loop is not None and not is_worker_loop(loop):
        return loop
    creator = current_actor()
    return creator._core.loop if creator is not None else current_loop()


def running_actors() -> list[Actor]:
    """The running top-level actors of this process (roots of their trees)."""
    with _registry_lock:
        return list(_roots.values())


TickFn = Callable[[TimedTick], "Awaitable[None] | None"]
"""An actor's per-tick callable, as its dispatcher binds it."""

TickInstrument = Callable[["Actor", TickFn], TickFn]
"""Wraps an actor's per-tick callable (a profiler's timer, a tracer's span)."""

_tick_instrument: TickInstrument | None = None
_stats_sections: dict[str, Callable[[Actor], Any]] = {}


def set_tick_instrument(instrument: TickInstrument | None) -> None:
    """Wrap every actor's per-tick callable with ``instrument(actor, run_tick)`` (``None``:
    unwrap). Running actors re-bind between two of their ticks; actors bind when they start.

    The seam :mod:`streamlib.observe.profiling` uses: with no instrument set, a tick runs the
    dispatcher's callable directly and pays nothing."""
    global _tick_instrument
    _tick_instrument = instrument
    stack = running_actors()
    while stack:
        actor = stack.pop()
        stack.extend(actor.children)
        if not actor._core.done.done():
            actor._rebind_tick()


def add_stats_section(key: str, section: Callable[[Actor], Any]) -> None:
    """Add ``key: section(actor)`` to every :meth:`Actor.stats` (omitted when it returns a falsy value)."""
    _stats_sections[key] = section


_A = TypeVar("_A", bound="Actor")


class Actor(metaclass=ActorMeta):
    """Base class of every actor. Subclasses declare ports and implement ``process``.

    ::

        class Invert(Actor):
            def __init__(self, **kw):
                super().__init__(**kw)
                self.inputs['video'] = StreamInput('video', VideoFrame)
                self.outputs['video'] = StreamOutput('video', VideoFrame)

            async def process(self, tick):
                frame = await self.inputs['video'].try_read()
                if frame is not None:
                    await self.outputs['video'].send(frame.with_data(255 - frame.data))

    Framework options, accepted by every actor: ``parent`` (set by :meth:`spawn`),
    ``dispatcher`` (a :class:`~streamlib.dispatch.Dispatcher` or ``"asyncio"``,
    ``"thread"``, ``"process"``), ``name`` (unique among siblings; defaults to the
    class name in snake case), ``clock`` (an explicit :class:`~streamlib.clock.Clock`),
    ``restart`` (``"permanent"``, ``"transient"`` or ``"temporary"``: what a
    supervisor does when this actor ends).
    """

    _core: _Core

    default_fps: ClassVar[float | None] = 60.0
    """Rate of the actor's own clock when nothing upstream drives it; ``None`` means the
    actor only ever ticks on messages."""

    driving_input: ClassVar[str | None] = None
    """Name of the input that should drive the clock while it is connected and live (e.g. a
    compositor's base layer); ``None`` means the first input to deliver drives."""

    silence_periods: ClassVar[float] = 4.0
    """After this many frame periods with no message from any upstream, fall back to
    the own clock (until messages resume)."""

    def __init__(
        self,
        parent: Actor | None = None,
        dispatcher: Dispatcher | str | None = None,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        restart: RestartPolicy | None = None,
    ) -> None:
        opts = _options.get() or {}
        _options.set(None)  # consumed: actors built inside this __init__ get their own
        parent = parent if parent is not None else opts.get("parent")
        dispatcher = dispatcher if dispatcher is not None else opts.get("dispatcher")
        name = name if name is not None else opts.get("name")
        clock = clock if clock is not None else opts.get("clock")
        restart = restart if restart is not None else opts.get("restart", "permanent")
        previous: Actor | None = opts.get("_restart_of")

        if parent is not None and not isinstance(parent, Actor):
            raise TypeError(f"parent must be an Actor, got {parent!r}")
        if restart not in RESTART_POLICIES:
            raise ValueError(f"restart must be one of {RESTART_POLICIES}, got {restart!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a streamlib Clock, got {clock!r}")

        core: _Core = _Core(parent._core.loop if parent is not None else _home_loop())
        self._core = core
        core.spec = opts.get("_spec")
        core.restart = restart
        core.explicit_clock = clock
        if clock is not None:
            clock.bind(self)
        self.parent: Actor | None = parent
        self.children: list[Actor] = []
        self.inputs: PortMap = PortMap(self, StreamInput)
        self.outputs: PortMap = PortMap(self, StreamOutput)
        self.dispatcher: Dispatcher = resolve_dispatcher(dispatcher)
        self.clock: Clock | None = clock

        with _registry_lock:
            if previous is not None:
                core.name = previous.name
                core.restarts = previous._core.restarts + 1
                core.inherit = previous
            else:
                siblings = parent._core.children_by_name if parent is not None else _roots
                counters = parent._core.name_counters if parent is not None else _root_names
                core.name = _unique_name(name or _snake(type(self).__name__), siblings, counters, bool(name))
            core.path = f"{parent.path if parent is not None else ''}/{core.name}"
            if parent is not None:
                inherited = parent._core.inherit
                if previous is None and inherited is not None:
                    # The parent is a restarted instance re-creating its children: a child
                    # with the name of an old one takes over that one's ports and wiring.
                    old = inherited._core.children_by_name.get(self.name)
                    if old is not None and type(old) is type(self):
                        core.inherit = old
                        core.restarts = old._core.restarts
                if previous is not None and previous in parent.children:
                    parent.children[parent.children.index(previous)] = self
                else:
                    parent.children.append(self)
                parent._core.children_by_name[self.name] = self
            else:
                _roots[self.name] = self

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    async def process(self, tick: TimedTick) -> None:
        """Handle one tick: read inputs, compute, send outputs.

        Runs on the actor's dispatcher, once per tick, never concurrently with itself.
        An exception here fails the actor (a supervisor may restart it)."""

    def on_restart(self, previous: Actor) -> None:
        """Called on a supervisor's restart, once this fresh instance has adopted the ports
        (mailboxes, wiring) of ``previous``, the instance it replaces, and before
        ``on_start``; on the thread that built it.

        A restart rebuilds the actor from its constructor arguments: Erlang's clean slate,
        which is what undoes a corrupted state. Override this to carry over what was
        *configured* at runtime and must survive a crash: code or shaders swapped in live,
        layer geometry, the next part number of a file. Not the state that may have caused
        the crash. The default carries nothing."""

    async def on_start(self) -> None:
        """Called once before the first tick, where the dispatcher runs ``process``.
        Open files and devices here rather than in ``__init__``, so a restarted actor
        re-opens them."""

    async def on_stop(self) -> None:
        """Called once at the end (stop, failure or end of stream), after the children
        have stopped. Release resources and finalize outputs here."""

    def on_end_of_stream(self) -> None:
        """Called when every connected input has ended and been drained. Stops the actor
        by default; override to keep running (e.g. to keep showing the last frame)."""
        self._request_stop(_Cause.END_OF_STREAM)

    # ------------------------------------------------------------------ public API

    name: _RuntimeAttribute[str] = _RuntimeAttribute(
        "the actor's name in its tree, unique among its siblings (pass name=... to the constructor)"
    )
    path: _RuntimeAttribute[str] = _RuntimeAttribute(
        "the actor's place in its tree, e.g. /app/pipeline/encoder"
    )
    state: _RuntimeAttribute[LifecycleState] = _RuntimeAttribute(
        "the actor's lifecycle state (a LifecycleState): RUNNING from construction, then STOPPED or FAILED"
    )

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this actor (and its children) run on."""
        return self._core.loop

    @property
    def restarts(self) -> int:
        """How many times a supervisor has restarted this actor."""
        return self._core.restarts

    @property
    def failure(self) -> BaseException | None:
        """The exception that failed the actor, if it is ``FAILED``."""
        return self._core.failure

    @property
    def spec(self) -> ActorSpec | None:
        return self._core.spec

    def spawn(self, actor_class: type[_A], /, *args: Any, **kwargs: Any) -> _A:
        """Create a child actor: it runs on this actor's loop and stops when this one stops."""
        kwargs["parent"] = self
        return actor_class(*args, **kwargs)

    def stop(self) -> Completion:
        """Request a stop. Await the result (or ``.wait()`` it) to wait until this actor and
        its children have stopped and every ``on_stop`` has run."""
        self._request_stop(_Cause.SELF if current_actor() is self else _Cause.STOP)
        return Completion(self)

    def join(self) -> Completion:
        """Wait for the actor to end, without asking it to."""
        return Completion(self)

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        """Counters of this actor and its ports (a plain dict, ready for JSON).

        Always kept, at no cost beyond the counting itself: ``ticks``, ``restarts``,
        ``skipped_ticks`` (of the own clock), ``state``; messages in, out and dropped in
        total and per port, with each input's queue depth (``queued`` of ``capacity``).
        While profiling is on, ``profile`` holds the actor's process/latency/lateness
        summaries (seconds). ``recursive=True`` adds ``children``: their stats, recursively.
        """
        core = self._core
        inputs = {
            n: {
                "queued": len(p.mailbox),
                "capacity": p.mailbox.maxsize,
                "overflow": p.mailbox.overflow,
                "received": p.mailbox.received,
                "dropped": p.mailbox.dropped,
                "lost": p.lost,
                "connected": p.connected,
                "ended": p.ended,
            }
            for n, p in list(self.inputs.items())
        }
        outputs = {n: {"sent": p.sent, "subscribers": len(p.subscribers)} for n, p in list(self.outputs.items())}
        found: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "class": type(self).__qualname__,
            "state": self.state.value,
            "ticks": core.ticks,
            "restarts": core.restarts,
            "skipped_ticks": self.clock.skipped if self.clock is not None else 0,
            "messages_in": sum(p["received"] for p in inputs.values()),
            "messages_out": sum(p["sent"] for p in outputs.values()),
            "dropped": sum(p["dropped"] for p in inputs.values()),
            "inputs": inputs,
            "outputs": outputs,
        }
        if core.failure is not None:
            found["failure"] = f"{type(core.failure).__name__}: {core.failure}"
        for key, section in _stats_sections.items():
            extra = section(self)
            if extra:
                found[key] = extra
        if recursive:
            found["children"] = [child.stats(recursive=True) for child in list(self.children)]
        return found

    def _repr_html_(self) -> str | None:
        """Jupyter: the actor's counters, its subtree and the graph of its connections
        (drawn by the renderer :mod:`streamlib.observe` registers; see :mod:`.rendering`)."""
        html: str | None = render(self, "text/html")
        return html

    def __rshift__(self, other: Any) -> Any:
        return connect(self, other)

    def __floordiv__(self, other: Any) -> None:
        """``a // b`` removes every connection from ``a`` to ``b``."""
        disconnect(self, other)

    def __repr__(self) -> str:
        core = self._core
        ins = ", ".join(
            f"{n}[{len(p.mailbox)}/{p.mailbox.maxsize} dropped={p.mailbox.dropped}]" for n, p in self.inputs.items()
        )
        outs = ", ".join(f"{n}[sent={p.sent}→{len(p.subscribers)}]" for n, p in self.outputs.items())
        extra = f" restarts={core.restarts}" if core.restarts else ""
        return (
            f"<{type(self).__qualname__} {self.path} {self.state.name} ticks={core.ticks}{extra} "
            f"in: {ins or '-'} out: {outs or '-'}>"
        )

    # ------------------------------------------------------------------ start

    def _launch(self) -> None:
        """Adopt the ports of the instance this one replaces, then start the task."""
        core = self._core
        old = core.inherit
        if old is not None:
            for kind in ("inputs", "outputs"):
                mine, theirs = getattr(self, kind), getattr(old, kind)
                for port_name, port in theirs.items():
                    mine[port_name] = port  # rebinds the port (mailbox, wiring) to this instance
            old._core.replaced_by = self
            # Old children that no new child took over end here, as their parent would have.
            for child in old.children:
                if child._core.replaced_by is None and child._core.deferred:
                    child._end_streams()
            core.inherit = None
            try:
                self.on_restart(old)
            except Exception:  # a restart must not fail over what it carries
                log.exception("%s: on_restart raised; starting with the constructor's configuration", core.path)
        loop = core.loop
        if asyncio._get_running_loop() is loop:
            self._create_task()
        else:
            loop.call_soon_threadsafe(self._create_task)

    def _create_task(self) -> None:
        self._core.task = self._core.loop.create_task(self._run(), name=f"actor {self.path}")

    # ------------------------------------------------------------------ signals (any thread)

    def _on_loop(self) -> bool:
        return asyncio._get_running_loop() is self._core.loop

    def _woken(self, port: StreamInput) -> None:
        """A message landed on ``port`` while the actor slept (called by the sender, any thread).

        Only a sleeping actor installs these wakers, so a busy actor's senders pay
        nothing: the run loop notices new messages by itself through the mailbox counters.
        """
        core = self._core
        if asyncio._get_running_loop() is not core.loop:
            _call_soon(core.loop, self._woken, port)
            return
        if core.driver is None and core.explicit_clock is None and self._may_drive(port):
            self._set_driver(port)
        if port is core.driver:
            port.mailbox.waker = None  # awake now: further sends need not call us
            bell = core.doorbell
            if bell is not None and not bell.done():
                bell.set_result(None)

    def _set_driver(self, port: StreamInput | None) -> None:
        """Make ``port`` the input whose arrivals tick this actor (its queue counts as new)."""
        core = self._core
        core.driver = port
        if port is not None:
            core.driver_id = port.path
            core.ticked = port.mailbox.received - len(port.mailbox._items)
            core.synced = True

    def _wiring_changed(self) -> None:
        core = self._core
        core.wiring_dirty = True
        core.calm = False
        self._ring()

    def _ring(self) -> None:
        core = self._core
        if asyncio._get_running_loop() is not core.loop:
            _call_soon(core.loop, self._ring)
            return
        bell = core.doorbell
        if bell is not None and not bell.done():
            bell.set_result(None)

    def _reader_should_stop(self) -> bool:
        return self._core.stop_requested

    def _request_stop(self, cause: _Cause) -> None:
        core = self._core
        if not self._on_loop():
            _call_soon(core.loop, self._request_stop, cause)
            return
        if core.stop_requested or core.done.done():
            return
        core.stop_requested = True
        core.calm = False
        core.cause = cause
        for port in list(self.inputs.values()):
            port.mailbox.wake_readers()
        task = core.task
        if (
            core.in_process
            and self.dispatcher.interruptible
            and task is not None
            and task is not asyncio.current_task()
        ):
            task.cancel(msg="streamlib-stop")
        self._ring()

    def _control(self, job: Callable[[], Awaitable[None]]) -> None:
        """Queue ``job`` to run in this actor's task between ticks (never dropped)."""
        core = self._core
        if not self._on_loop():
            _call_soon(core.loop, self._control, job)
            return
        core.control.append(job)
        core.calm = False
        self._ring()

    # ------------------------------------------------------------------ the run loop

    async def _run(self) -> None:
        core = self._core
        dispatcher = self.dispatcher
        set_current_actor(self)
        attached = False
        try:
            await dispatcher.attach(self)
            attached = True
            started = dispatcher.call_hook(self, self.on_start)
            if started is not None:
                await started
            poll = self._poll
            run_tick = self._bind_tick()
            loop = core.loop
            while True:
                driver = core.driver
                tick: TimedTick | _Wait | None
                if core.calm and driver is not None and driver.mailbox.received != core.ticked and driver.mailbox._items:  # noqa: E501
                    tick = self._driver_tick(driver)  # fast path: a message on the driver, nothing else to see
                elif core.control:
                    await core.control.popleft()()  # a signal job (e.g. a supervisor's restart)
                    run_tick = core.run_tick or run_tick  # a job may have re-bound it (profiling on/off)
                    continue
                else:
                    tick = poll()
                    core.calm = not (core.control or core.stop_requested or core.wiring_dirty or core.free_running)
                    if tick is _WAIT:
                        # Sleep until the doorbell rings: a message on the driver, a clock tick, a
                        # signal. Written inline (not a helper coroutine): this is the hot path.
                        bell = core.doorbell = loop.create_future()
                        wakers = core.wakers
                        driver = core.driver
                        for mailbox, waker in wakers:
                            mailbox.waker = waker
                            # A message sent from another thread may have beaten the waker.
                            if mailbox._items and (
                                driver is None or (mailbox is driver.mailbox and mailbox.received != core.ticked)
                            ):
                                waker()
                        try:
                            await bell
                        finally:
                            core.doorbell = None
                            for mailbox, _ in wakers:
                                mailbox.waker = None
                        continue
                    if tick is None:
                        break
                    assert not isinstance(tick, _Wait)
                core.ticks += 1
                work = run_tick(tick)
                if work is not None:
                    core.in_process = True
                    await work
                    core.in_process = False
        except EndOfStream:
            core.cause = core.cause or _Cause.END_OF_STREAM
        except asyncio.CancelledError:
            task = core.task
            if task is not None and task.cancelling():
                task.uncancel()
            core.cause = core.cause or _Cause.STOP
            core.stop_requested = True  # ours, or the loop shutting down: stop either way
        except Exception as exc:
            self._fail(exc)
        try:
            await self._teardown(attached)
        finally:
            self._finish()

    def _bind_tick(self) -> Callable[[TimedTick], Awaitable[None] | None]:
        """The per-tick callable of the run loop: the dispatcher's, wrapped by the tick
        instrument only while one is set -- so profiling that is off adds nothing to a tick."""
        run_tick = self.dispatcher.bind(self)
        if _tick_instrument is not None:
            run_tick = _tick_instrument(self, run_tick)
        self._core.run_tick = run_tick
        return run_tick

    def _rebind_tick(self) -> None:
        """Re-bind the per-tick callable between two ticks (profiling was switched on or off)."""

        async def rebind() -> None:
            self._bind_tick()

        self._control(rebind)

    def _fail(self, exc: BaseException) -> None:
        core = self._core
        if core.failure is None:
            core.failure = exc
            core.cause = _Cause.FAILURE
            driver = core.driver
            if core.tick_mark >= 0 and driver is not None:
                driver.lost += max(driver.mailbox.taken - core.tick_mark, 0)

    async def _teardown(self, attached: bool) -> None:
        """Stop the children, then run ``on_stop`` (each even if the other fails)."""
        self._cancel_timers()
        children = list(self.children)
        for child in children:
            child._request_stop(_Cause.PARENT)
        if children:
            await asyncio.gather(*(_ended(c) for c in children))
        try:
            stopped = self.dispatcher.call_hook(self, self.on_stop)
            if stopped is not None:
                await stopped
        except Exception as exc:
            log.error("%s: on_stop raised", self.path, exc_info=exc)
            self._fail(exc)
        finally:
            if attached:
                try:
                    await self.dispatcher.detach(self)
                except Exception as exc:
                    log.error("%s: dispatcher %r failed to detach", self.path, self.dispatcher, exc_info=exc)

    def _cancel_timers(self) -> None:
        core = self._core
        if core.silence_timer is not None:
            core.silence_timer.cancel()
            core.silence_timer = None
        if core.clock_wait is not None:
            core.clock_wait.cancel()
            core.clock_wait = None

    def _finish(self) -> None:
        """Settle the actor's fate: restarted by its supervisor, or ended for good."""
        core = self._core
        failed = core.failure is not None
        self._core.state = LifecycleState.FAILED if failed else LifecycleState.STOPPED
        cause = core.cause or _Cause.STOP
        parent = self.parent
        restarting: bool | None
        if cause is _Cause.PARENT:
            restarting = None
        elif parent is not None:
            restarting = parent._child_ended(self, cause, core.failure)
        else:
            restarting = False
            if failed:
                _log_failure(self, "")
        if restarting is None:
            core.deferred = True  # the parent settles this subtree once it knows its own fate
        elif not restarting:
            self._end_streams()
        with _registry_lock:
            if parent is None and _roots.get(self.name) is self:
                del _roots[self.name]
        core.done.set(self.state)

    def _end_streams(self) -> None:
        """This actor (and any subtree waiting on it) ends for good: tell downstream, stop
        accepting messages so no sender can block on us."""
        for port in self.outputs.values():
            port.end_of_stream()
        for port in self.inputs.values():
            port.mailbox.close()
        for child in self.children:
            if child._core.deferred and child._core.replaced_by is None:
                child._end_streams()  # it left its fate to us

    def _child_ended(self, child: Actor, cause: _Cause, failure: BaseException | None) -> bool | None:
        """A child ended. Return True if it will be restarted (its streams must not end),
        False if it is gone for good, None if its fate waits on this actor's own.

        A plain actor restarts nothing: it logs an unsupervised failure and lets the child
        go. :class:`~streamlib.supervision.Supervisor` overrides this."""
        if failure is not None:
            _log_failure(child, " (unsupervised: not restarted)")
        return False

    # ------------------------------------------------------------------ ticks

    def _poll(self) -> TimedTick | _Wait | None:
        """The next tick if one is due now, ``None`` if the actor should end, else ``_WAIT``."""
        core = self._core
        if core.stop_requested:
            return None
        if core.wiring_dirty:
            self._review_wiring()
        driver = core.driver
        if driver is not None and driver.mailbox.received != core.ticked:
            if driver.mailbox._items:
                if core.free_running:
                    self._leave_own_clock()
                return self._driver_tick(driver)
            core.ticked = driver.mailbox.received
        if core.ending:
            tick = self._drain_tick()
            if tick is not None:
                return tick
            self.on_end_of_stream()
            if core.stop_requested:
                return None
            core.ending = False  # overridden: keep running on the own clock
            core.free_running = True
            core.calm = False
        if self._on_own_clock():
            tick = self._own_clock_tick()
            if tick is not None:
                return tick
        elif core.synced and core.silence_timer is None and (self.default_fps or core.last_fps):
            self._arm_silence_timer()  # message-driven actors still switch away from a quiet driver
        return _WAIT

    def _driver_tick(self, driver: StreamInput) -> TimedTick:
        """The tick for the driving input's oldest message: that message's clock metadata."""
        core = self._core
        mailbox = driver.mailbox
        items = mailbox._items
        # One tick per arrival, but never more ticks than messages still queued.
        ticked = core.ticked + 1
        floor = mailbox.received - len(items) + 1
        core.ticked = ticked if ticked >= floor else floor
        core.tick_mark = mailbox.taken
        head = items[0]
        if isinstance(head, Message):
            core.last_fps = head.clock_rate
            return TimedTick(head.timestamp, head.frame_number, head.clock_source_id or core.driver_id, head.clock_rate)
        return TimedTick(time.monotonic(), core.ticks, core.driver_id, None)

    def _review_wiring(self) -> None:
        core = self._core
        core.wiring_dirty = False
        connected = [p for p in self.inputs.values() if p.connected]
        core.connected = bool(connected)
        driver = core.driver
        if driver is not None and (not driver.connected or driver.ended):
            self._set_driver(None)
        if connected and all(p.ended for p in connected):
            core.ending = True
        if core.connected and not core.free_running:
            self._leave_own_clock()  # a pending own-clock tick from before the connection is stale
        live = [p for p in connected if not p.ended]
        core.wakers = (
            [] if core.explicit_clock is not None else [(p.mailbox, functools.partial(self._woken, p)) for p in live]
        )
        if core.driver is None and core.explicit_clock is None:
            # Messages may already be queued (a restart inherits full mailboxes).
            for port in live:
                if port.mailbox._items and self._may_drive(port):
                    self._set_driver(port)
                    break

    def _may_drive(self, port: StreamInput) -> bool:
        """Whether ``port`` may become the driving input (see ``driving_input``)."""
        preferred = self.driving_input
        if preferred is None or port.name == preferred:
            return True
        chosen = self.inputs.get(preferred)
        return chosen is None or not chosen.connected or chosen.ended

    def _on_own_clock(self) -> bool:
        core = self._core
        if core.explicit_clock is not None:
            return True
        if not self.default_fps:
            return False
        return core.free_running or not core.connected

    def _own_clock_tick(self) -> TimedTick | None:
        """Start waiting for the own clock's next tick; return it if it is already due."""
        core = self._core
        waiting = core.clock_wait
        if waiting is None:
            clock = self.clock
            if clock is None:
                clock = self.clock = SoftwareClock(self.default_fps or 60.0, clock_id=f"clock:{self.path}")
            waiting = core.clock_wait = asyncio.ensure_future(clock.next_tick())
            waiting.add_done_callback(lambda _: self._ring())
            return None
        if not waiting.done():
            return None
        core.clock_wait = None
        core.tick_mark = -1
        return waiting.result()

    def _leave_own_clock(self) -> None:
        core = self._core
        core.free_running = False
        if core.clock_wait is not None and core.explicit_clock is None:
            core.clock_wait.cancel()
            core.clock_wait = None

    def _drain_tick(self) -> TimedTick | None:
        """Every upstream ended: tick while queued messages remain and ``process`` takes them."""
        core = self._core
        ports = [p for p in self.inputs.values() if p.mailbox._items]
        if not ports:
            return None
        taken = sum(p.mailbox.taken for p in self.inputs.values())
        if taken == core.drain_mark:  # the last tick consumed nothing: process won't drain them
            for port in ports:
                port.mailbox.clear()
            return None
        core.drain_mark = taken
        head = ports[0].mailbox.peek()
        core.tick_mark = ports[0].mailbox.taken
        if isinstance(head, Message):
            return head.tick()
        return TimedTick(time.monotonic(), core.ticks, ports[0].path, None)

    def _arm_silence_timer(self) -> None:
        core = self._core
        if core.silence_timer is not None:
            return
        fps = core.last_fps or self.default_fps or 60.0
        driver = core.driver
        core.silence_mark = (self._received_total(), driver.mailbox.received if driver is not None else -1)
        core.silence_timer = core.loop.call_later(self.silence_periods / fps, self._silence_check)

    def _received_total(self) -> int:
        return sum(p.mailbox.received for p in self.inputs.values())

    def _silence_check(self) -> None:
        core = self._core
        core.silence_timer = None
        if core.stop_requested or core.done.done():
            return
        total, driver_received = core.silence_mark
        driver = core.driver
        if self._received_total() == total:
            if self.default_fps:
                core.free_running = True  # every upstream went quiet: run on the own clock
                core.calm = False
            self._set_driver(None)
        elif driver is not None and driver.mailbox.received == driver_received:
            self._set_driver(None)  # the driver went quiet but others talk: the next to deliver drives
        self._ring()


def _unique_name(base: str, siblings: dict[str, Any], counters: dict[str, itertools.count[int]], explicit: bool) -> str:
    if "/" in base:
        raise ValueError(f"actor names cannot contain '/': {base!r}")
    if base not in siblings and base not in counters:
        counters[base] = itertools.count(2)
        return base
    if explicit and base not in siblings:
        return base
    counter = counters.setdefault(base, itertools.count(2))
    while True:
        candidate = f"{base}-{next(counter)}"
        if candidate not in siblings:
            return candidate


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: the actor is gone with it
        loop.call_soon_threadsafe(fn, *args)


def _log_failure(actor: Actor, note: str) -> None:
    exc = actor._core.failure
    log.error(
        "actor %s (%s) failed%s: %s: %s",
        actor.path,
        type(actor).__qualname__,
        note,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


def _stop_all_at_exit(timeout: float = 5.0) -> None:
    """At interpreter exit, stop the actors on the background loop so sinks can finalize."""
    from .eventloop import _background

    loop = _background
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    roots = [a for a in running_actors() if a._core.loop is loop]
    for actor in roots:
        actor._request_stop(_Cause.STOP)
    deadline = time.monotonic() + timeout
    for actor in roots:
        try:
            actor._core.done.wait(max(deadline - time.monotonic(), 0))
        except Exception:
            log.warning("%s did not stop within %.1f s of interpreter exit", actor.path, timeout)


# Registered with threading as well as atexit: threading's exit hooks run before atexit's,
# in reverse order of registration, and concurrent.futures joins its worker threads (and
# refuses new work) from one it registered on import, above. Ours, registered later, runs
# first, so actors on a thread dispatcher can still run on_stop (sinks finalize) at exit.
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_stop_all_at_exit)
atexit.register(_stop_all_at_exit)  # fallback; a second call finds no actor left
