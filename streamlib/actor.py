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
import contextvars
import functools
import inspect
import itertools
import logging
import math
import re
from abc import ABCMeta, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, overload

from .clock import Clock
from .current import current_actor
from .dispatch import Dispatcher, resolve_dispatcher
from .errors import ActorDefinitionError, ActorInitError
from .lifecycle import RESTART_POLICIES, Cause, ChildFate, LifecycleState, RestartPolicy
from .messages import TimedTick
from .ports import PortMap, StreamInput, StreamOutput, connect, disconnect
from .rendering import render
from .runtime import (
    ActorRuntime,
    ClockMode,
    ended,
    home_loop,
    log_failure,
    register_root,
    registry_lock,
    root_names,
    roots,
    running_actors,
    unregister_root,
)

__all__ = [
    "Actor",
    "ActorSpec",
    "Cause",
    "ChildFate",
    "ClockMode",
    "Completion",
    "LifecycleState",
    "RestartPolicy",
    "add_stats_section",
    "current_actor",
    "running_actors",
    "runtime_address",
    "set_runtime_address",
]

log = logging.getLogger("streamlib")

# Keyword arguments every actor accepts, whether or not its own __init__ declares them.
FRAMEWORK_OPTIONS = frozenset({"parent", "dispatcher", "name", "clock", "restart", "fps"})

_UNSET: Any = object()
_options: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_options", default=None)
_stats_sections: dict[str, Callable[[Actor], Any]] = {}


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """How an actor was built: enough to build it again (what a supervisor restarts)."""

    cls: type[Actor]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, **options: Any) -> Actor:
        """Build a new actor from this spec; ``options`` (``parent=``, ``name=`` ...) override."""
        built: Actor = self.cls(*self.args, **{**self.kwargs, **self.options, **options})
        return built


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
        return ended(actor).__await__()

    def wait(self, timeout: float | None = None) -> LifecycleState:
        """Block this thread until the actor has stopped (never call it on the actor's loop)."""
        if asyncio._get_running_loop() is self._actor._core.loop:
            raise RuntimeError(f"Completion.wait() on {self._actor.path}'s own event loop would deadlock; use 'await'")
        return self._actor._core.done.wait(timeout)

    def done(self) -> bool:
        return self._actor._core.done.done()

    def __repr__(self) -> str:
        return f"<Completion of {self._actor.path} done={self.done()}>"


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
        # A dispatcher that runs actors elsewhere (a Ray node) may build a stand-in instead; also
        # when the class takes ``dispatcher`` itself (to pick a default), as ready actors do.
        chosen = options.get("dispatcher", kwargs.get("dispatcher") if "dispatcher" in declared else None)
        if chosen is not None and not internal:
            rest = {k: v for k, v in kwargs.items() if k != "dispatcher"}
            placed = resolve_dispatcher(chosen).place(cls, args, rest, {**options, "dispatcher": chosen})  # type: ignore[arg-type]
            if placed is not None:
                return placed
        spec = ActorSpec(cls, args, dict(kwargs), dict(options))  # type: ignore[arg-type]
        token = _options.set({**options, **internal, "_spec": spec})
        try:
            actor: Any = object.__new__(cls)  # type: ignore[arg-type]
            try:
                actor.__init__(*args, **kwargs)
            except ActorDefinitionError as exc:
                _abandon(actor, exc)
                raise
            except Exception as exc:
                _abandon(actor, exc)
                message = f"{cls.__qualname__}.__init__ raised {type(exc).__name__}: {exc}"
                raise _init_error_type(type(exc))(message) from exc
        finally:
            _options.reset(token)
        if not isinstance(getattr(actor, "_core", None), ActorRuntime):
            raise ActorDefinitionError(f"{cls.__qualname__}.__init__ did not call super().__init__()")
        actor._core.launch()
        return actor


_init_error_types: dict[type[BaseException], type[ActorInitError]] = {}


def _init_error_type(original: type[BaseException]) -> type[ActorInitError]:
    """The error a failed constructor raises: an :class:`ActorInitError` that is also a
    ``ValueError``/``TypeError`` when the original was one, so validation errors are caught
    as what they are (``except ValueError``) as well as as a failed construction."""
    for kind in (ValueError, TypeError):
        if issubclass(original, kind):
            found = _init_error_types.get(kind)
            if found is None:
                found = type(f"ActorInit{kind.__name__}", (ActorInitError, kind), {"__module__": "streamlib.errors"})
                _init_error_types[kind] = found
            return found
    return ActorInitError


def _abandon(actor: Actor, error: BaseException) -> None:
    """Undo what an actor whose ``__init__`` failed had done: its registration in the tree
    (a failed restart puts the instance it was replacing back in its place, still
    restartable), the connections it made (its upstreams stop sending to it, its
    downstreams see end of stream) and the children it spawned (stopped; nobody restarts
    them). Its mailboxes close, so no sender can block on them."""
    core = getattr(actor, "_core", None)
    if not isinstance(core, ActorRuntime):
        return
    previous = core.inherit  # a failed restart: launch() never ran, so the old ports are untouched
    with registry_lock:
        parent = actor.parent
        if parent is not None and actor in parent.children:
            if previous is not None and previous.parent is parent:
                parent.children[parent.children.index(actor)] = previous
                parent._core.children_by_name[previous.name] = previous
            else:
                parent.children.remove(actor)
                if parent._core.children_by_name.get(actor.name) is actor:
                    del parent._core.children_by_name[actor.name]
        elif parent is None:
            unregister_root(actor)
    core.failure = error
    core.cause = Cause.FAILURE
    core.stop_requested = True
    core.state = LifecycleState.FAILED
    core.done.set(LifecycleState.FAILED)  # ended: a child that ends now is not restarted by it
    for port in list(actor.inputs.values()):
        for upstream in port.upstreams:
            upstream.disconnect(port)
        port.mailbox.close()
    for out in list(actor.outputs.values()):
        out.end_of_stream()
    for child in list(actor.children):
        child._core.request_stop(Cause.STOP)


_runtime_address: str | None = None


def set_runtime_address(address: str | None) -> None:
    """Record the ``HOST:PORT`` at which this process's runtime can be reached (``None``: nowhere).

    Set by whatever serves the runtime to other processes (:func:`streamlib.remote.serve`);
    :attr:`Actor.uri` is built from it. The core only keeps the value."""
    global _runtime_address
    _runtime_address = address


def runtime_address() -> str | None:
    """The ``HOST:PORT`` this process's runtime is served at, or ``None`` if it is not served."""
    return _runtime_address


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

    _core: ActorRuntime

    default_fps: ClassVar[float | None] = 60.0
    """Rate of the actor's own clock when nothing upstream drives it; ``None`` means the
    actor only ever ticks on messages."""

    driving_input: ClassVar[str | None] = None
    """Name of the input that should drive the clock while it is connected and live (e.g. a
    compositor's base layer); ``None`` means the first input to deliver drives."""

    silence_periods: ClassVar[float] = 4.0
    """After this many frame periods with no message from any upstream, fall back to
    the own clock (until messages resume)."""

    first_tick_grace: ClassVar[float] = 1.0
    """A *source* built off its event loop (a plain script) that has outputs, but no
    subscriber and no connected input once ``on_start`` has run, holds its first tick until
    the first connection, for at most this many seconds: ``Source() >> Sink()`` loses no
    frame while the sink is built. ``0``: tick at once."""

    def __init__(
        self,
        parent: Actor | None = None,
        dispatcher: Dispatcher | str | None = None,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        restart: RestartPolicy | None = None,
        fps: float | None = _UNSET,
    ) -> None:
        opts = _options.get() or {}
        _options.set(None)  # consumed: actors built inside this __init__ get their own
        parent = parent if parent is not None else opts.get("parent")
        dispatcher = dispatcher if dispatcher is not None else opts.get("dispatcher")
        name = name if name is not None else opts.get("name")
        clock = clock if clock is not None else opts.get("clock")
        restart = restart if restart is not None else opts.get("restart", "permanent")
        fps = fps if fps is not _UNSET else opts.get("fps", _UNSET)
        previous: Actor | None = opts.get("_restart_of")

        if parent is not None and not isinstance(parent, Actor):
            raise TypeError(f"parent must be an Actor, got {parent!r}")
        if restart not in RESTART_POLICIES:
            raise ValueError(f"restart must be one of {RESTART_POLICIES}, got {restart!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a streamlib Clock, got {clock!r}")

        core = ActorRuntime(self, parent._core.loop if parent is not None else home_loop(), clock)
        self._core = core
        if fps is not _UNSET:
            self.own_fps = fps
        core.spec = opts.get("_spec")
        core.restart = restart
        if clock is not None:
            clock.bind(self)
        self.parent: Actor | None = parent
        self.children: list[Actor] = []
        self.inputs: PortMap = PortMap(self, StreamInput)
        self.outputs: PortMap = PortMap(self, StreamOutput)
        self.dispatcher: Dispatcher = resolve_dispatcher(dispatcher)
        self.clock: Clock | None = clock

        with registry_lock:
            if previous is not None:
                core.name = previous.name
                core.restarts = previous._core.restarts + 1
                core.inherit = previous
            else:
                siblings = parent._core.children_by_name if parent is not None else roots
                counters = parent._core.name_counters if parent is not None else root_names
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
                register_root(self)

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
        self._core.request_stop(Cause.END_OF_STREAM)

    def on_child_ended(self, child: Actor, cause: Cause, failure: BaseException | None) -> ChildFate:
        """Called when a child ended (on this actor's loop): decide its fate.

        The supervision protocol's one decision point (see :mod:`.supervision`). Return
        :attr:`ChildFate.RESTART` if a replacement will be built (with
        :meth:`build_replacement`, now or later), so the child's mailboxes and connections stay
        in place; :attr:`ChildFate.END` if it is gone for good (downstream sees end of stream);
        :attr:`ChildFate.DEFER` to settle it together with this actor's own end.

        A plain actor restarts nothing: it logs an unsupervised failure and lets the child
        go. :class:`~streamlib.Supervisor` overrides this."""
        if failure is not None:
            log_failure(child, " (unsupervised: not restarted)")
        return ChildFate.END

    # ------------------------------------------------------------------ public API

    name: _RuntimeAttribute[str] = _RuntimeAttribute(
        "the actor's name in its tree, unique among its siblings (pass name=... to the constructor)"
    )
    path: _RuntimeAttribute[str] = _RuntimeAttribute("the actor's place in its tree, e.g. /app/pipeline/encoder")
    state: _RuntimeAttribute[LifecycleState] = _RuntimeAttribute(
        "the actor's lifecycle state (a LifecycleState): RUNNING from construction, then STOPPED or FAILED"
    )

    @property
    def uri(self) -> str | None:
        """``actor://HOST:PORT/ClassName/instance-id`` (the id is the path without its leading
        slash): how other processes address this actor. ``None`` while this process's runtime is
        not served (see :func:`set_runtime_address`, set by :func:`streamlib.remote.serve`)."""
        address = _runtime_address
        if address is None:
            return None
        return f"actor://{address}/{type(self).__name__}/{self.path[1:]}"

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
        """How this actor was built (class, arguments, framework options): what a restart reuses."""
        return self._core.spec

    @property
    def restart_policy(self) -> RestartPolicy:
        """What a supervisor does when this actor ends (``restart=`` at construction)."""
        return self._core.restart

    @property
    def clock_mode(self) -> ClockMode:
        """Where this actor's ticks come from right now (see :class:`ClockMode`)."""
        return self._core.mode

    @property
    def own_fps(self) -> float | None:
        """The rate of the actor's own clock: the ``fps=`` option, else the class's
        ``default_fps`` (``None``: purely message-driven; ``math.inf``: as fast as
        downstream takes messages, for offline sources)."""
        return self._core.fps

    @own_fps.setter
    def own_fps(self, fps: float | None) -> None:
        if fps is not None and not (isinstance(fps, int | float) and (fps > 0 or math.isinf(fps))):
            raise ValueError(f"{type(self).__qualname__}: fps must be a positive number, inf or None, got {fps!r}")
        self._core.fps = None if fps is None else float(fps)
        self._core.fps_from_class = False

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (by anyone, or by the end of every input)."""
        return self._core.stop_requested

    @property
    def replaced_by(self) -> Actor | None:
        """The instance that replaced this one after a restart, if any."""
        return self._core.replaced_by

    def spawn(self, actor_class: type[_A], /, *args: Any, **kwargs: Any) -> _A:
        """Create a child actor: it runs on this actor's loop and stops when this one stops."""
        kwargs["parent"] = self
        return actor_class(*args, **kwargs)

    def stop(self, *, cause: Cause | None = None) -> Completion:
        """Request a stop. Await the result (or ``.wait()`` it) to wait until this actor and
        its children have stopped and every ``on_stop`` has run.

        ``cause`` is for supervisors: :attr:`Cause.RESTART` stops a child that will be
        rebuilt (its parent's :meth:`on_child_ended` is told so). By default the cause is
        :attr:`Cause.STOP`, or :attr:`Cause.SELF` from the actor's own code."""
        if cause is None:
            cause = Cause.SELF if current_actor() is self else Cause.STOP
        self._core.request_stop(cause)
        return Completion(self)

    def build_replacement(self) -> Actor:
        """Build a fresh instance from :attr:`spec` that takes this ended actor's place:
        same name and parent, and it adopts this instance's ports -- its mailboxes, with what
        they hold, and its connections -- so upstream and downstream never notice.

        What a supervisor calls to restart a child (after :meth:`on_child_ended` returned
        :attr:`ChildFate.RESTART`); call it on the parent's loop. The new instance's
        :meth:`on_restart` runs with this one as ``previous``. Raises ``RuntimeError`` if
        this actor is still running or was already replaced."""
        core = self._core
        if not core.done.done():
            raise RuntimeError(f"{self.path} is still running: stop it (cause=Cause.RESTART) before replacing it")
        if core.replaced_by is not None:
            raise RuntimeError(f"{self.path} was already replaced by {core.replaced_by!r}")
        spec = core.spec
        if spec is None:  # pragma: no cover - every actor built through its class has one
            raise RuntimeError(f"{self.path} has no spec to rebuild it from")
        if self.parent is not None:
            return spec.build(parent=self.parent, _restart_of=self)
        return spec.build(_restart_of=self)

    def run_between_ticks(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``await job()`` in this actor's own task, between two ticks (from any thread).

        Control work -- a supervisor's restart, a rewiring -- queues here: it never runs
        concurrently with ``process``, is never dropped, and is not delayed by full
        mailboxes. An exception from ``job`` fails the actor like one from ``process``."""
        self._core.schedule(job)

    # ------------------------------------------------------------------ ports at runtime

    def add_input(self, port: StreamInput) -> StreamInput:
        """Add an input port while the actor runs (from any thread) and return it, for ``>>``.

        Declaring ports in ``__init__`` (``self.inputs['x'] = ...``) is the usual way; this is
        for actors whose ports come and go (a compositor's layers). The port map is replaced,
        never mutated, so the run loop (which may be iterating it) is never disturbed."""
        if not isinstance(port, StreamInput):
            raise TypeError(f"{self.path}: add_input takes a StreamInput, got {port!r}")
        if port.name in self.inputs:
            raise ValueError(f"{self.path} already has an input {port.name!r}; remove_input({port.name!r}) first")
        self.inputs = self.inputs.with_port(port)
        self._core.wiring_changed()
        return port

    def remove_input(self, name: str) -> StreamInput:
        """Remove an input port while the actor runs (from any thread): its upstreams are
        disconnected from it (what it still holds is discarded) and it is returned."""
        port: StreamInput | None = self.inputs.get(name)
        if port is None:
            raise KeyError(f"{self.path} has no input {name!r}; inputs: {', '.join(self.inputs) or 'none'}")
        for upstream in port.upstreams:
            upstream.disconnect(port)
        self.inputs = self.inputs.without(name)
        self._core.wiring_changed()
        return port

    def add_output(self, port: StreamOutput) -> StreamOutput:
        """Add an output port while the actor runs (from any thread) and return it."""
        if not isinstance(port, StreamOutput):
            raise TypeError(f"{self.path}: add_output takes a StreamOutput, got {port!r}")
        if port.name in self.outputs:
            raise ValueError(f"{self.path} already has an output {port.name!r}; remove_output({port.name!r}) first")
        self.outputs = self.outputs.with_port(port)
        self._core.wiring_changed()
        return port

    def remove_output(self, name: str) -> StreamOutput:
        """Remove an output port while the actor runs: its subscribers see end of stream from it."""
        port: StreamOutput | None = self.outputs.get(name)
        if port is None:
            raise KeyError(f"{self.path} has no output {name!r}; outputs: {', '.join(self.outputs) or 'none'}")
        port.end_of_stream()
        self.outputs = self.outputs.without(name)
        self._core.wiring_changed()
        return port

    def join(self) -> Completion:
        """Wait for the actor to end, without asking it to."""
        return Completion(self)

    def tick_on(self, *ports: StreamInput) -> None:
        """Let every message arriving on ``ports`` tick this actor, not only the driving input's.

        An actor with several inputs normally ticks on its driving input and samples the
        others; a :class:`~streamlib.alignment.InputSync` calls this for its inputs, because
        a matched set may be completed by any of them. ``process`` must then take what
        arrives on these inputs every tick (the sync does), or the actor ticks again at once.
        """
        for port in ports:
            if not isinstance(port, StreamInput) or port.owner is not self:
                raise ValueError(f"{self.path}.tick_on() takes this actor's own inputs, got {port!r}")
        core = self._core
        core.tick_on = core.tick_on | {port.mailbox for port in ports}
        core.wiring_changed()

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        """Counters of this actor and its ports (a plain dict, ready for JSON).

        Always kept, at no cost beyond the counting itself: ``ticks``, ``handed_off`` (those
        of the ticks that ran in their sender's turn, see :mod:`streamlib.handoff`),
        ``restarts``, ``skipped_ticks`` (of the own clock), ``state``; messages in, out and dropped in
        total and per port, with each input's queue depth (``queued`` of ``capacity``).
        Per input, ``delivered == taken + in_hand + lost + dropped_by_policy + discarded +
        queued`` (see :class:`~streamlib.ports.InputStatistics`); ``dropped`` is
        ``dropped_by_policy + discarded``, ``received`` what entered the mailbox.
        While profiling is on, ``profile`` holds the actor's process/latency/lateness
        summaries (seconds). ``recursive=True`` adds ``children``: their stats, recursively.
        """
        core = self._core
        inputs = {}
        for n, p in list(self.inputs.items()):
            counts = p.statistics()
            inputs[n] = {
                "queued": counts.queued,
                "capacity": counts.capacity,
                "overflow": counts.overflow,
                "received": p.mailbox.received,
                "dropped": counts.dropped + counts.discarded,
                "lost": counts.lost,
                "delivered": counts.delivered,
                "taken": counts.taken,
                "in_hand": counts.in_hand,
                "dropped_by_policy": counts.dropped,
                "discarded": counts.discarded,
                "connected": p.connected,
                "ended": p.ended,
            }
        outputs = {n: {"sent": p.sent, "subscribers": len(p.subscribers)} for n, p in list(self.outputs.items())}
        found: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "class": type(self).__qualname__,
            "state": self.state.value,
            "ticks": core.ticks,
            "handed_off": core.handed_off,
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
            f"{n}[{len(p.mailbox)}/{p.mailbox.maxsize} dropped={p.dropped}]" for n, p in self.inputs.items()
        )
        outs = ", ".join(f"{n}[sent={p.sent}→{len(p.subscribers)}]" for n, p in self.outputs.items())
        extra = f" restarts={core.restarts}" if core.restarts else ""
        return (
            f"<{type(self).__qualname__} {self.path} {self.state.name} ticks={core.ticks}{extra} "
            f"in: {ins or '-'} out: {outs or '-'}>"
        )

    # ------------------------------------------------------------------ for ports.py

    def _wiring_changed(self) -> None:
        self._core.wiring_changed()

    def _reader_should_stop(self) -> bool:
        return self._core.stop_requested

    def _in_hand(self, port: StreamInput) -> int:
        return self._core.in_hand(port)


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
