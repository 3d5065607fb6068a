"""The machinery that runs an actor: its task, its run loop, its end.

:class:`~streamlib.Actor` holds what a user subclasses (hooks and public API); everything the
runtime keeps per actor lives here, in one :class:`ActorRuntime` (``actor._core``), so a
subclass may use any attribute name it likes. Read this file like Pykka's ``_actor.py``: an
actor's life is **setup**, **running** and **teardown**, and each part says which thread
runs what.

Setup (the constructing thread, then the actor's loop)
    ``Actor.__init__`` builds the runtime and registers the actor in its tree. When the
    subclass ``__init__`` has returned, :meth:`ActorRuntime.launch` adopts the ports of the
    instance being replaced (on a restart) and creates the task on the actor's event loop.
    The task attaches the dispatcher and runs ``on_start`` where the dispatcher puts hooks.

Running (the actor's loop; ``process`` runs where the dispatcher puts it)
    :meth:`ActorRuntime.run` turns events into ticks. Where ticks come from is the
    :class:`ClockMode`: ``SYNCED`` (each message on the driving input is a tick carrying
    that message's clock metadata), ``OWN`` (the actor's own software clock at its frame
    rate: no upstream, or every upstream went silent), ``EXPLICIT`` (the ``clock=`` given
    at construction) and ``ENDING`` (every upstream ended: drain what is queued, then
    ``on_end_of_stream``). Signals -- stop, rewiring, control jobs such as a supervisor's
    restart -- come from any thread and are handled between two ticks, never dropped.
    When none is pending and a message waits on the driver, the loop takes the *fast path*:
    straight to the tick, nothing else examined. And while the actor sleeps, a message on its
    driver from the same loop may run its tick at once in the sender's turn (*hand-off*,
    :meth:`ActorRuntime.hand_off`, see :mod:`.handoff`): the task sleeps on.

Teardown (the actor's loop)
    Children are stopped, ``on_stop`` runs, the dispatcher detaches; then the parent's
    :meth:`~streamlib.Actor.on_child_ended` decides the actor's fate (a restart keeps its
    mailboxes and wiring; otherwise its outputs end their streams and its inputs close),
    and :class:`~streamlib.Completion` waiters wake.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import contextlib
import contextvars
import enum
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from .clock import Clock, SoftwareClock
from .current import current_actor, set_current_actor
from .errors import EndOfStream
from .eventloop import current_loop, existing_background_loop, is_worker_loop
from .handoff import MAX_DEPTH, READY, finish, loop_slice, tick_driver
from .lifecycle import Cause, ChildFate, LifecycleState, RestartPolicy
from .mailbox import Mailbox
from .messages import Message, TimedTick
from .signals import install_sigterm_handler, set_drain
from .threadsafe import call_soon

if TYPE_CHECKING:
    from .actor import Actor, ActorSpec
    from .ports import StreamInput

__all__ = [
    "ActorRuntime",
    "ClockMode",
    "TickFn",
    "TickInstrument",
    "ended",
    "home_loop",
    "register_root",
    "roots",
    "running_actors",
    "set_tick_instrument",
    "unregister_root",
]

log = logging.getLogger("streamlib")

CHILD_STOP_TIMEOUT = 5.0
"""How long a stopping actor waits for its children (a ``process`` stuck in a thread cannot be
interrupted) before it logs them, once, and ends without them: every wait in a shutdown is bounded."""

TickFn = Callable[[TimedTick], "Awaitable[None] | None"]
"""An actor's per-tick callable, as its dispatcher binds it."""

TickInstrument = Callable[["Actor", TickFn], TickFn]
"""Wraps an actor's per-tick callable (a profiler's timer, a tracer's span)."""

_tick_instrument: TickInstrument | None = None

registry_lock = threading.RLock()
roots: dict[str, Actor] = {}  # running top-level actors, by name (guard with registry_lock)
root_names: dict[str, itertools.count[int]] = {}


class ClockMode(enum.Enum):
    """Where an actor's ticks come from right now (see the module docstring)."""

    OWN = "own clock"
    """No upstream drives it (none connected, or all silent): its own clock at its frame
    rate ticks it; a purely message-driven actor (no frame rate) just waits."""
    SYNCED = "synced to upstream"
    """Each message on the driving input is a tick, with that message's clock metadata."""
    EXPLICIT = "explicit clock"
    """The ``clock=`` given at construction ticks it, whatever is connected."""
    ENDING = "ending"
    """Every upstream ended: ticks drain what is queued, then ``on_end_of_stream`` runs."""


_SYNCED = ClockMode.SYNCED
_clock = time.perf_counter  # the hand-off slice's clock (see .handoff)
_get_ident = threading.get_ident
_monotonic = time.monotonic
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task
_current_tasks = getattr(asyncio.tasks, "_current_tasks", None)  # loop -> the task it runs now
_running_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[object] | None] = (
    asyncio.current_task if _current_tasks is None else _current_tasks.get
)

_NO_MAILBOXES: frozenset[Mailbox] = frozenset()  # shared: each empty frozenset() costs 216 bytes


def _class_attribute(cls: type, name: str) -> object:
    """``inspect.getattr_static(cls, name, None)`` for a plain class attribute, at a tenth of its
    cost (it runs once per actor built): the first class of the MRO that defines it wins."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(name, _ABSENT)
        if found is not _ABSENT:
            return found
    return None


_ABSENT = object()


class _Wait:
    """The run loop's signal to sleep until the doorbell rings."""

    __slots__ = ()


_WAIT = _Wait()


class _Outcome:
    """An actor's final state: set once on its loop, awaited or waited for from anywhere.

    A ``concurrent.futures.Future`` would do, but costs a Condition and an RLock per actor;
    one lock shared by all outcomes keeps ten thousand actors cheap."""

    __slots__ = ("_callbacks", "_state")

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._state: LifecycleState | None = None
        self._callbacks: list[Callable[[LifecycleState], None]] = []

    @property
    def state(self) -> LifecycleState | None:
        return self._state

    def done(self) -> bool:
        return self._state is not None

    def set(self, state: LifecycleState) -> None:
        with self._lock:
            if self._state is not None:
                return
            self._state = state
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(state)

    def add_done_callback(self, callback: Callable[[LifecycleState], None]) -> None:
        with self._lock:
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


async def ended(actor: Actor) -> LifecycleState:
    """Wait for ``actor`` to end, from any loop (cancelling the wait affects nobody else)."""
    done = actor._core.done
    state = done.state
    if state is not None:
        return state
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[LifecycleState] = loop.create_future()

    def settle(state: LifecycleState) -> None:
        if not waiter.done():
            waiter.set_result(state)

    done.add_done_callback(lambda state: call_soon(loop, settle, state))
    return await waiter


def home_loop() -> asyncio.AbstractEventLoop:
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
    with registry_lock:
        return list(roots.values())


def register_root(actor: Actor) -> None:
    with registry_lock:
        roots[actor.name] = actor


def unregister_root(actor: Actor) -> None:
    with registry_lock:
        if roots.get(actor.name) is actor:
            del roots[actor.name]


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
            actor._core.rebind_tick()


def _partial_waker(runtime: ActorRuntime, port: StreamInput) -> Callable[[], object]:
    return functools.partial(ActorRuntime.woken, runtime, port)  # no bound method kept per waker


make_waker: Callable[[ActorRuntime, StreamInput], Callable[[], object]] = _partial_waker
"""What a sleeping actor puts on ``port``'s mailbox: calling it is ``runtime.woken(port)``.
(:mod:`.speedups` puts a C type here, whose objects the C mailbox calls directly.)"""


async def _raise(exc: BaseException) -> None:
    """Re-raise ``exc`` in the task that awaits this (a handed-off tick's failure)."""
    raise exc


def log_failure(actor: Actor, note: str) -> None:
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


class ActorRuntime:
    """One actor's runtime state and the code that runs it (``actor._core``)."""

    __slots__ = (
        "actor",
        "cause",
        "children_by_name",
        "clock_wait",
        "connected",
        "context",
        "deferred",
        "done",
        "doorbell",
        "drain_mark",
        "driver",
        "driver_id",
        "explicit_clock",
        "failure",
        "first_hold",
        "fps",
        "fps_from_class",
        "handed_off",
        "handoff_port",
        "handoffs",
        "in_process",
        "inherit",
        "inline_tick",
        "jobs",
        "last_fps",
        "loop",
        "loop_thread",
        "mode",
        "name",
        "name_counters",
        "path",
        "replaced_by",
        "restart",
        "restarts",
        "run_tick",
        "sampled",
        "silence_mark",
        "silence_timer",
        "spec",
        "state",
        "stop_requested",
        "task",
        "tick_driver",
        "tick_on",
        "ticked",
        "ticks",
        "wakers",
        "wiring_dirty",
    )

    def __init__(self, actor: Actor, loop: asyncio.AbstractEventLoop, clock: Clock | None) -> None:
        self.actor = actor
        self.loop = loop
        self.task: asyncio.Task[None] | None = None
        self.context: contextvars.Context | None = None  # the task's: a hand-off runs its ticks in it
        self.done = _Outcome()
        self.state = LifecycleState.RUNNING
        # -- where ticks come from
        self.explicit_clock = clock
        self.mode = ClockMode.EXPLICIT if clock is not None else ClockMode.OWN
        declared = _class_attribute(type(actor), "default_fps")
        # A subclass may still compute its rate in a default_fps property: read it at launch.
        self.fps: float | None = declared if declared is None or isinstance(declared, int | float) else None
        self.fps_from_class = self.fps is None and declared is not None
        self.clock_wait: asyncio.Future[TimedTick] | None = None
        self.driver: StreamInput | None = None
        self.driver_id = ""  # the path of the last driving input ("" until one drove)
        self.ticked = 0  # the driver's `received` count that ticks have accounted for
        self.wakers: list[tuple[Mailbox, Callable[[], object]]] = []
        self.tick_on: frozenset[Mailbox] = _NO_MAILBOXES  # inputs whose every message ticks (Actor.tick_on)
        self.connected = False
        self.silence_timer: asyncio.TimerHandle | None = None
        self.silence_mark: tuple[int, int] = (0, 0)
        self.last_fps: float | None = None
        # -- signals: handled between ticks, never dropped
        self.doorbell: asyncio.Future[None] | None = None
        self.jobs: list[Callable[[], Awaitable[None]]] = []  # rare: a list is 10x smaller than a deque
        self.stop_requested = False
        self.wiring_dirty = True
        # -- counters and accounting
        self.drain_mark = -1
        self.ticks = 0
        self.in_process = False
        """A hook that may read inputs runs now: what it took is in hand (lost if it raises)."""
        self.sampled: tuple[StreamInput, ...] = ()  # the inputs a tick marks besides the driver
        self.run_tick: TickFn | None = None
        # -- hand-off (see .handoff): a tick run by the code that woke the sleeping actor
        self.inline_tick: TickFn | None = None  # run_tick, if ticks may be handed off
        self.tick_driver: Generator[object, object, None] | None = None  # made on the first hand-off
        self.handoff_port: StreamInput | None = None
        """While the task sleeps on its doorbell with nothing pending: the driver, whose next
        message may be handed off (``None`` otherwise; every ring clears it)."""
        self.loop_thread = 0  # the thread its loop ran on when it last went to sleep
        self.handoffs = loop_slice(loop)
        self.handed_off = 0  # ticks run by hand-off (a part of ``ticks``)
        # -- the tree and restarts
        self.cause: Cause | None = None
        self.failure: BaseException | None = None
        self.restart: RestartPolicy = "permanent"
        self.restarts = 0
        self.spec: ActorSpec | None = None
        self.inherit: Actor | None = None
        self.replaced_by: Actor | None = None
        self.deferred = False
        self.first_hold = False  # built off its loop: may hold its first tick for a subscriber
        self.name = ""
        self.path = ""
        self.children_by_name: dict[str, Actor] = {}
        self.name_counters: dict[str, itertools.count[int]] = {}

    # ------------------------------------------------------------------ setup

    def launch(self) -> None:
        """Adopt the ports of the instance this one replaces, then start the task."""
        actor = self.actor
        if self.fps_from_class:
            self.fps = actor.default_fps
        old = self.inherit
        if old is not None:
            for kind in ("inputs", "outputs"):
                mine, theirs = getattr(actor, kind), getattr(old, kind)
                for port_name, port in theirs.items():
                    mine[port_name] = port  # rebinds the port (mailbox, wiring) to this instance
            old._core.replaced_by = actor
            try:
                actor.on_restart(old)  # may rebuild children: each takes over its old namesake
            except Exception:  # a restart must not fail over what it carries
                log.exception("%s: on_restart raised; starting with the constructor's configuration", self.path)
            # Old children that no new child took over end here, as their parent would have.
            for child in old.children:
                if child._core.replaced_by is None and child._core.deferred:
                    child._core.end_streams()
            self.inherit = None
        if asyncio._get_running_loop() is self.loop:
            self.create_task()  # nothing runs it before the building code yields: ``>>`` comes first
        else:
            self.first_hold = old is None  # it may start before the statement that built it connects it
            self.loop.call_soon_threadsafe(self.create_task)

    def create_task(self) -> None:
        context = self.context = contextvars.copy_context()
        self.task = self.loop.create_task(self.run(), name=f"actor {self.path}", context=context)

    # ------------------------------------------------------------------ signals (any thread)

    def on_loop(self) -> bool:
        return asyncio._get_running_loop() is self.loop

    def woken(self, port: StreamInput) -> None:
        """A message landed on ``port`` while the actor slept (called by the sender, any thread).

        Only a sleeping actor installs these wakers, so a busy actor's senders pay
        nothing: the run loop notices new messages by itself through the mailbox counters.
        On the actor's loop, a message on the driver of an actor with nothing else pending
        is handed off (:meth:`hand_off`): its tick runs now and the task sleeps on.
        """
        loop = self.loop
        running = _running_task(loop)
        # Inside a task of this loop, on the thread it slept on: on the loop, known without
        # asyncio._get_running_loop(), which costs a getpid() system call on Python 3.11.
        if (running is None or _get_ident() != self.loop_thread) and asyncio._get_running_loop() is not loop:
            call_soon(loop, self.woken, port)
            return
        if port is self.handoff_port:
            handoffs = self.handoffs
            if (
                handoffs.depth < MAX_DEPTH
                and (_clock() < handoffs.ends if handoffs.open else handoffs.open_slice())
                and port.mailbox.received != self.ticked
                and port.mailbox._items  # a call from another thread's send comes late: it may be gone
            ):
                self.hand_off(port, running)  # its tick runs now, in this turn: the task sleeps on
                return
        if self.explicit_clock is None and (
            (self.driver is None and self.may_drive(port)) or (port.mailbox in self.tick_on and port.mailbox._items)
        ):
            self.set_driver(port)  # a tick_on() input ticks the actor on every arrival
        if port is self.driver:
            port.mailbox.waker = None  # awake now: further sends need not call us
            self.ring_here()
        elif self.silence_timer is None and self.driver is not None and self.explicit_clock is None:
            # A sampled input talks while the driver is quiet. Without a timer here, a driver whose
            # messages carry no frame rate, in an actor with no frame rate of its own, would never
            # be found silent: this input would wait forever (and a "block" sender with it).
            self.arm_silence_timer()

    def hand_off(self, port: StreamInput, running: asyncio.Task[object] | None) -> None:
        """Run the tick for the message that just landed on ``port``, the driver, now: in the
        waker's turn, as this actor -- in its context, with its task marked as the running one
        instead of ``running`` (the sender's) -- see :mod:`.handoff`. ``process`` runs until it
        returns or first waits; if it waits or raises, the task takes the rest over
        (:meth:`take_over`) and finishes or re-raises it where its own tick would have.

        The run loop's tick (:meth:`driver_tick`), simpler here: the actor slept with every
        arrival ticked, so this message is the one new arrival."""
        mailbox = port.mailbox
        self.ticked = mailbox.received
        port.tick_mark = mailbox.taken
        tick = self.tick_of(mailbox._items[0])
        if self.sampled:
            self.mark_inputs(self.sampled)
        self.ticks += 1
        self.handed_off += 1
        driver = self.tick_driver
        if driver is None:
            driver = self.tick_driver = tick_driver(self.inline_tick)  # type: ignore[arg-type]
            driver.send(None)
        self.handoff_port = None  # a message arriving meanwhile (a cycle) rings the doorbell instead
        handoffs = self.handoffs
        handoffs.depth += 1
        loop, task, bell = self.loop, self.task, self.doorbell
        if running is not None:
            _leave_task(loop, running)
        _enter_task(loop, task)  # type: ignore[arg-type]  # it sleeps in its task
        self.in_process = True
        try:
            waiting_on = self.context.run(driver.send, tick)  # type: ignore[union-attr]
            if waiting_on is READY:
                self.in_process = False
            else:
                self.take_over(finish(driver, waiting_on))
        except BaseException as exc:  # re-raised in the task: failures take their usual path
            self.tick_driver = None  # it ended with the tick
            self.handoff_failed(exc)
        finally:
            _leave_task(loop, task)  # type: ignore[arg-type]
            if running is not None:
                _enter_task(loop, running)
            handoffs.depth -= 1
            if not bell.done():  # type: ignore[union-attr]  # else rung meanwhile: awake now
                self.handoff_port = port

    def handoff_waits(self, call: Generator[object, object, object], waiting_on: object) -> None:
        """The C hand-off (:mod:`.speedups`) stepped ``process``'s ``call`` until it waited on
        ``waiting_on``: the task finishes it, as :meth:`hand_off` has it finish a driver."""
        self.take_over(finish(call, waiting_on))

    def handoff_failed(self, exc: BaseException) -> None:
        """A handed-off tick raised ``exc``: re-raised in the task, where a tick's failure goes."""
        self.take_over(_raise(exc))

    def take_over(self, rest: Awaitable[object]) -> None:
        """The task finishes a handed-off tick: ``rest`` runs first thing when it wakes."""

        async def finish_tick() -> None:
            try:
                await rest
            except BaseException:
                self.tick_driver = None  # it ended with the tick
                raise
            self.in_process = False

        self.jobs.insert(0, finish_tick)
        self.ring_here()

    def set_driver(self, port: StreamInput | None) -> None:
        """Make ``port`` the input whose arrivals tick this actor (its queue counts as new)."""
        self.driver = port
        if port is not None:
            self.driver_id = port.path
            self.ticked = port.mailbox.received - len(port.mailbox._items)
        self.sampled = tuple(p for p in self.actor.inputs.values() if p is not port)

    def mark_inputs(self, ports: tuple[StreamInput, ...] | None = None) -> None:
        """A hook that may read inputs begins: note where each mailbox's ``taken`` stands,
        so a crash knows which messages were in hand (see :class:`~streamlib.ports.InputStatistics`)."""
        for port in self.actor.inputs.values() if ports is None else ports:
            port.tick_mark = port.mailbox.taken

    def in_hand(self, port: StreamInput) -> int:
        """Messages of ``port`` taken by the hook running now."""
        return max(port.mailbox.taken - port.tick_mark, 0) if self.in_process else 0

    def wiring_changed(self) -> None:
        self.wiring_dirty = True
        self.ring()

    def ring(self) -> None:
        """Wake the run loop if it sleeps (any thread). Every wake-up goes through here, so
        hand-offs (``handoff_port``) end the moment the doorbell rings."""
        if asyncio._get_running_loop() is not self.loop:
            call_soon(self.loop, self.ring)
            return
        self.ring_here()

    def ring_here(self) -> None:
        """:meth:`ring`, called on the actor's loop."""
        self.handoff_port = None
        bell = self.doorbell
        if bell is not None and not bell.done():
            bell.set_result(None)

    def request_stop(self, cause: Cause) -> None:
        if not self.on_loop():
            call_soon(self.loop, self.request_stop, cause)
            return
        if self.stop_requested or self.done.done():
            return
        self.stop_requested = True
        self.cause = cause
        for port in list(self.actor.inputs.values()):
            port.mailbox.wake_readers()
        task = self.task
        interruptible = self.in_process and self.actor.dispatcher.interruptible
        if interruptible and task is not None and task is not asyncio.current_task():
            task.cancel(msg="streamlib-stop")
        self.ring()

    def schedule(self, job: Callable[[], Awaitable[None]]) -> None:
        """Queue ``job`` to run in this actor's task between ticks (never dropped)."""
        if not self.on_loop():
            call_soon(self.loop, self.schedule, job)
            return
        self.jobs.append(job)
        self.ring()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        actor = self.actor
        dispatcher = actor.dispatcher
        set_current_actor(actor)
        attached = False
        try:
            await dispatcher.attach(actor)
            attached = True
            self.mark_inputs()
            self.in_process = True  # a stop cancels an on_start that still waits (on the loop)
            started = dispatcher.call_hook(actor, actor.on_start)
            if started is not None:
                await started
                del started  # this frame lives as long as the actor: keep no finished coroutine
            self.in_process = False
            if self.holds_first_tick():
                await self.hold_first_tick()
            poll = self.poll
            run_tick = self.bind_tick()
            loop = self.loop
            jobs = self.jobs
            synced = ClockMode.SYNCED
            while True:
                driver = self.driver
                tick: TimedTick | _Wait | None
                if (
                    driver is not None
                    and driver.mailbox._items
                    and driver.mailbox.received != self.ticked
                    and self.mode is synced
                    and not (jobs or self.stop_requested or self.wiring_dirty)
                ):
                    tick = self.driver_tick(driver)  # fast path: a message on the driver, no signal pending
                elif jobs:
                    await jobs.pop(0)()  # a control job (e.g. a supervisor's restart)
                    run_tick = self.run_tick or run_tick  # a job may have re-bound it (profiling on/off)
                    continue
                else:
                    tick = poll()
                    if tick is _WAIT:
                        await self.sleep(loop)
                        continue
                    if tick is None:
                        break
                    assert not isinstance(tick, _Wait)
                if self.sampled:  # the driver's mark is set with its tick; the others' here
                    self.mark_inputs(self.sampled)
                self.ticks += 1
                self.in_process = True
                work = run_tick(tick)
                if work is not None:
                    await work
                self.in_process = False
        except EndOfStream:
            self.cause = self.cause or Cause.END_OF_STREAM
        except asyncio.CancelledError:
            task = self.task
            if task is not None and task.cancelling():
                task.uncancel()
            self.in_process = False  # interrupted, not crashed: what it took counts as taken
            self.cause = self.cause or Cause.STOP
            self.stop_requested = True  # ours, or the loop shutting down: stop either way
        except Exception as exc:
            self.fail(exc)
        try:
            await self.teardown(attached)
        finally:
            self.finish()

    def holds_first_tick(self) -> bool:
        """Whether this is a source nobody listens to yet (see :meth:`hold_first_tick`)."""
        actor = self.actor
        return (
            self.first_hold
            and actor.first_tick_grace > 0
            and self.explicit_clock is None
            and bool(self.fps)
            and bool(actor.outputs)
            and not self.stop_requested
            and not any(p.subscribers for p in actor.outputs.values())
            and not any(p.connected for p in actor.inputs.values())
        )

    async def hold_first_tick(self) -> None:
        """Hold a source's first tick until something is connected to it, at most
        ``first_tick_grace`` seconds: ``Source() >> Sink()`` builds the source, then the sink,
        and only then connects them, and a finite or faster-than-realtime source must not
        spend frames on the moments in between. Only an actor built off its event loop (a
        plain script, the REPL: the background loop starts it at once) holds; one built on
        its loop cannot start before the building code yields, which is after the ``>>``."""
        loop = self.loop
        deadline = loop.time() + self.actor.first_tick_grace
        while self.holds_first_tick() and not self.jobs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            bell = self.doorbell = loop.create_future()
            timer = loop.call_later(remaining, self.ring)
            try:
                await bell
            finally:
                self.doorbell = None
                timer.cancel()
        self.first_hold = False

    async def sleep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until the doorbell rings: a message on the driver, a clock tick, a signal."""
        bell = self.doorbell = loop.create_future()
        wakers = self.wakers
        driver = self.driver
        for mailbox, waker in wakers:
            mailbox.waker = waker
            # A message sent from another thread may have beaten the waker.
            if mailbox._items and (
                driver is None
                or (mailbox is driver.mailbox and mailbox.received != self.ticked)
                or mailbox in self.tick_on
            ):
                waker()
        self.loop_thread = _get_ident()
        if self.mode is _SYNCED and self.inline_tick is not None and not bell.done():
            self.handoff_port = driver  # nothing changes these while it sleeps without a ring
        try:
            await bell
        finally:
            self.handoff_port = None
            self.doorbell = None
            for mailbox, _ in wakers:
                mailbox.waker = None

    def bind_tick(self) -> TickFn:
        """The per-tick callable of the run loop: the dispatcher's, wrapped by the tick
        instrument only while one is set -- so profiling that is off adds nothing to a tick."""
        dispatcher = self.actor.dispatcher
        run_tick = dispatcher.bind(self.actor)
        if _tick_instrument is not None:
            run_tick = _tick_instrument(self.actor, run_tick)
        self.run_tick = run_tick
        # An instrument times each tick alone: nested hand-offs would count a downstream
        # actor's tick in the sender's too, so ticks are handed off only uninstrumented.
        self.inline_tick = run_tick if dispatcher.hands_off and _tick_instrument is None else None
        self.tick_driver = None  # it runs the old callable
        return run_tick

    def rebind_tick(self) -> None:
        """Re-bind the per-tick callable between two ticks (profiling was switched on or off)."""

        async def rebind() -> None:
            self.bind_tick()

        self.schedule(rebind)

    def poll(self) -> TimedTick | _Wait | None:
        """The next tick if one is due now, ``None`` if the actor should end, else ``_WAIT``."""
        if self.stop_requested:
            return None
        if self.wiring_dirty:
            self.review_wiring()
        driver = self.driver
        if driver is not None and driver.mailbox.received != self.ticked:
            if driver.mailbox._items:
                if self.mode is ClockMode.OWN:
                    self.leave_own_clock()  # a message after silence: back in sync
                return self.driver_tick(driver)
            self.ticked = driver.mailbox.received
        if self.mode is ClockMode.ENDING:
            tick = self.drain_tick()
            if tick is not None:
                return tick  # a tick, or _WAIT for the explicit clock's next one
            self.actor.on_end_of_stream()
            if self.stop_requested:
                return None
            # Overridden to keep running: on the own (or explicit) clock from now on.
            self.mode = ClockMode.EXPLICIT if self.explicit_clock is not None else ClockMode.OWN
        if self.mode is ClockMode.EXPLICIT or (self.mode is ClockMode.OWN and self.fps):
            tick = self.own_clock_tick()
            if tick is not None:
                return tick
        elif self.driver_id and self.silence_timer is None and (self.fps or self.last_fps):
            self.arm_silence_timer()  # message-driven actors still switch away from a quiet driver
        return _WAIT

    def driver_tick(self, driver: StreamInput) -> TimedTick:
        """The tick for the driving input's oldest message: that message's clock metadata."""
        mailbox = driver.mailbox
        items = mailbox._items
        # One tick per arrival, but never more ticks than messages still queued.
        ticked = self.ticked + 1
        floor = mailbox.received - len(items) + 1
        self.ticked = ticked if ticked >= floor else floor
        driver.tick_mark = mailbox.taken
        return self.tick_of(items[0])

    def tick_of(self, head: object) -> TimedTick:
        """The tick for the driver's message ``head``: its clock metadata, else now."""
        if isinstance(head, Message):
            self.last_fps = head.clock_rate
            return TimedTick(head.timestamp, head.frame_number, head.clock_source_id or self.driver_id, head.clock_rate)
        return TimedTick(_monotonic(), self.ticks, self.driver_id, None)

    def review_wiring(self) -> None:
        """Re-derive the driver, the wakers and the clock mode after ports or connections changed."""
        self.wiring_dirty = False
        connected = [p for p in self.actor.inputs.values() if p.connected]
        self.connected = bool(connected)
        driver = self.driver
        if driver is not None and (not driver.connected or driver.ended):
            self.set_driver(None)
        if connected and all(p.ended for p in connected):
            self.mode = ClockMode.ENDING
        elif self.mode is ClockMode.OWN and connected and not self.driver_id:
            self.leave_own_clock()  # newly connected: a pending own-clock tick is stale
        elif self.mode is ClockMode.SYNCED and not connected:
            self.mode = ClockMode.OWN  # the bathtub: nothing upstream any more
        self.sampled = tuple(p for p in self.actor.inputs.values() if p is not self.driver)
        live = [p for p in connected if not p.ended]
        self.wakers = [] if self.explicit_clock is not None else [(p.mailbox, make_waker(self, p)) for p in live]
        if self.driver is None and self.explicit_clock is None:
            # Messages may already be queued (a restart inherits full mailboxes).
            for port in live:
                if port.mailbox._items and self.may_drive(port):
                    self.set_driver(port)
                    break

    def may_drive(self, port: StreamInput) -> bool:
        """Whether ``port`` may become the driving input (see ``Actor.driving_input``)."""
        preferred = self.actor.driving_input
        if preferred is None or port.name == preferred:
            return True
        chosen = self.actor.inputs.get(preferred)
        return chosen is None or not chosen.connected or chosen.ended

    def own_clock_tick(self) -> TimedTick | None:
        """Start waiting for the own clock's next tick; return it if it is already due."""
        waiting = self.clock_wait
        if waiting is None:
            clock = self.actor.clock
            if clock is None:
                clock = self.actor.clock = SoftwareClock(self.fps or 60.0, clock_id=f"clock:{self.path}")
            waiting = self.clock_wait = clock.next_tick_future()
            waiting.add_done_callback(lambda _: self.ring())
            return None
        if not waiting.done():
            return None
        self.clock_wait = None
        self.mark_inputs()  # not a driver's tick: every input is sampled
        return waiting.result()

    def leave_own_clock(self) -> None:
        """Messages drive the actor (again): stop waiting for the own clock."""
        if self.mode is ClockMode.OWN:
            self.mode = ClockMode.SYNCED
        if self.clock_wait is not None and self.explicit_clock is None:
            self.clock_wait.cancel()
            self.clock_wait = None

    def drain_tick(self) -> TimedTick | _Wait | None:
        """Every upstream ended: tick while queued messages remain and ``process`` takes them.

        With an explicit clock the drain still waits for that clock's ticks (a test's
        ``ManualClock.step()``): no tick is ever made up behind its back."""
        inputs = self.actor.inputs.values()
        ports = [p for p in inputs if p.mailbox._items]
        if not ports:
            return None
        taken = sum(p.mailbox.taken for p in inputs)
        if taken == self.drain_mark:  # the last tick consumed nothing: process won't drain them
            for port in ports:
                port.mailbox.clear()
            return None
        if self.explicit_clock is not None:
            tick = self.own_clock_tick()
            if tick is None:
                return _WAIT
            self.drain_mark = taken
            return tick  # own_clock_tick marked the inputs
        self.drain_mark = taken
        self.mark_inputs()
        head = ports[0].mailbox.peek()
        if isinstance(head, Message):
            return head.tick()
        return TimedTick(time.monotonic(), self.ticks, ports[0].path, None)

    def arm_silence_timer(self) -> None:
        if self.silence_timer is not None:
            return
        fps = self.last_fps or self.fps or 60.0
        driver = self.driver
        self.silence_mark = (self.received_total(), driver.mailbox.received if driver is not None else -1)
        self.silence_timer = self.loop.call_later(self.actor.silence_periods / fps, self.silence_check)

    def received_total(self) -> int:
        return sum(p.mailbox.received for p in self.actor.inputs.values())

    def silence_check(self) -> None:
        self.silence_timer = None
        if self.stop_requested or self.done.done():
            return
        total, driver_received = self.silence_mark
        driver = self.driver
        if self.received_total() == total:
            if self.fps and self.mode is ClockMode.SYNCED:
                self.mode = ClockMode.OWN  # every upstream went quiet: run on the own clock
            self.set_driver(None)
        elif driver is not None and driver.mailbox.received == driver_received:
            self.set_driver(None)  # the driver went quiet but others talk: the next to deliver drives
        self.ring()

    # ------------------------------------------------------------------ teardown

    def fail(self, exc: BaseException) -> None:
        if self.in_process:  # what the crashing hook had taken, from every input, is lost
            self.in_process = False
            for port in self.actor.inputs.values():
                port.lost += max(port.mailbox.taken - port.tick_mark, 0)
        if self.failure is None:
            self.failure = exc
            self.cause = Cause.FAILURE

    async def teardown(self, attached: bool) -> None:
        """Stop the children, then run ``on_stop`` (each even if the other fails)."""
        actor = self.actor
        self.cancel_timers()
        children = list(actor.children)
        for child in children:
            child._core.request_stop(Cause.PARENT)
        if children:
            waiting = asyncio.gather(*(ended(c) for c in children))
            try:
                await asyncio.wait_for(asyncio.shield(waiting), CHILD_STOP_TIMEOUT)
            except TimeoutError:
                stuck = ", ".join(c.path for c in children if not c._core.done.done())
                log.warning(
                    "%s: children still running %.1f s after the stop (%s); ending without them",
                    self.path,
                    CHILD_STOP_TIMEOUT,
                    stuck,
                )
                waiting.cancel()
        try:
            stopped = actor.dispatcher.call_hook(actor, actor.on_stop)
            if stopped is not None:
                await stopped
        except Exception as exc:
            log.error("%s: on_stop raised", self.path, exc_info=exc)
            self.fail(exc)
        finally:
            if attached:
                try:
                    await actor.dispatcher.detach(actor)
                except Exception as exc:
                    log.error("%s: dispatcher %r failed to detach", self.path, actor.dispatcher, exc_info=exc)

    def cancel_timers(self) -> None:
        if self.silence_timer is not None:
            self.silence_timer.cancel()
            self.silence_timer = None
        if self.clock_wait is not None:
            self.clock_wait.cancel()
            self.clock_wait = None

    def finish(self) -> None:
        """Settle the actor's fate: restarted by its supervisor, or ended for good."""
        actor = self.actor
        driver, self.tick_driver = self.tick_driver, None
        if driver is not None:  # it holds process: let the actor go without waiting for gc
            try:
                driver.close()  # a tick still suspended in it (its task was cancelled) ends here
            except Exception:
                log.exception("%s: process raised while its unfinished tick was closed", self.path)
        # Jobs still queued never run now. Dropping them also closes a handed-off tick that the
        # task was cancelled before taking over, which the C hand-off holds only there.
        self.jobs.clear()
        failed = self.failure is not None
        self.state = LifecycleState.FAILED if failed else LifecycleState.STOPPED
        cause = self.cause or Cause.STOP
        parent = actor.parent
        fate: ChildFate
        if cause is Cause.PARENT:
            fate = ChildFate.DEFER
        elif parent is not None and parent._core.done.done():
            fate = ChildFate.END  # nobody is left to restart it (e.g. its parent's construction failed)
            if failed:
                log_failure(actor, " (its parent had ended)")
        elif parent is not None:
            fate = parent.on_child_ended(actor, cause, self.failure)
        else:
            fate = ChildFate.END
            if failed:
                log_failure(actor, "")
        if fate is not ChildFate.END:
            # The parent settles this subtree once it knows its own fate; a restart that never
            # happens (the parent ended first, or the replacement's __init__ failed and the
            # parent gave up) ends the streams then, so no upstream blocks on a dead mailbox.
            self.deferred = True
        elif fate is ChildFate.END:
            self.end_streams()
        if parent is None:
            unregister_root(actor)
        self.done.set(self.state)

    def end_streams(self) -> None:
        """This actor (and any subtree waiting on it) ends for good: tell downstream, stop
        accepting messages so no sender can block on us."""
        actor = self.actor
        for port in actor.outputs.values():
            port.end_of_stream()
        for port in actor.inputs.values():
            port.mailbox.close()
        for child in actor.children:
            if child._core.deferred and child._core.replaced_by is None:
                child._core.end_streams()  # it left its fate to us


# ---------------------------------------------------------------------- interpreter exit


_exit_hook_pid = os.getpid()
_exit_hook_ran = False


EXIT_STOP_TIMEOUT = 5.0
"""How long interpreter exit waits, in all, for the actors on the background loop to stop."""


def _stop_all_at_exit(timeout: float | None = None) -> None:
    """At interpreter exit, stop the actors on the background loop so sinks can finalize.

    Runs once per process (it is registered twice, below) and never in a forked child, which
    inherits a copy of this process's actors but none of the threads that run them. The wait
    is bounded by ``timeout`` in total, and each actor that did not stop is logged once."""
    global _exit_hook_ran
    if _exit_hook_ran or os.getpid() != _exit_hook_pid:
        return
    _exit_hook_ran = True
    loop = existing_background_loop()
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    timeout = EXIT_STOP_TIMEOUT if timeout is None else timeout
    roots = [a for a in running_actors() if a._core.loop is loop]
    sources = _stop_sources(roots)
    deadline = time.monotonic() + timeout
    drained = time.monotonic() + timeout / 2
    for actor in roots:
        if actor not in sources:
            with contextlib.suppress(TimeoutError):
                actor._core.done.wait(max(drained - time.monotonic(), 0))
            actor._core.request_stop(Cause.STOP)
    for actor in roots:
        try:
            actor._core.done.wait(max(deadline - time.monotonic(), 0))
        except TimeoutError:
            log.warning("%s did not stop within %.1f s of interpreter exit", actor.path, timeout)


def _stop_sources(roots: list[Actor]) -> list[Actor]:
    """A graceful stop begins with the sources: the trees with no connected input stop, and
    what they already sent drains downstream, whose actors end by end of stream (sinks write
    every frame, then finalize). Returns the trees stopped (all of them if none is a source)."""
    sources = [a for a in roots if not any(port.connected for port in a.inputs.values())] or roots
    for actor in sources:
        actor._core.request_stop(Cause.STOP)
    return sources


async def drain_loop(loop: asyncio.AbstractEventLoop, timeout: float | None = None) -> None:
    """Stop the actors of ``loop`` sources first (see :func:`_stop_sources`), give the rest half
    of ``timeout`` to end by end of stream, then stop what is left: SIGTERM's graceful path
    under ``asyncio.run`` (then the loop exits as on Ctrl-C)."""
    timeout = EXIT_STOP_TIMEOUT if timeout is None else timeout
    roots = [a for a in running_actors() if a._core.loop is loop]
    _stop_sources(roots)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ended(a) for a in roots)), timeout / 2)
    for actor in roots:
        actor._core.request_stop(Cause.STOP)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ended(a) for a in roots)), timeout / 2)


def _forget_parent_world() -> None:
    """In a forked child (a process dispatcher's worker): the parent's actors, and its exit
    hook, are not ours (their threads and loops did not survive the fork)."""
    global _exit_hook_pid
    _exit_hook_pid = -1
    reinit = getattr(registry_lock, "_at_fork_reinit", None)
    if reinit is not None:  # another thread may have held it at the fork: the copy is free
        reinit()
    roots.clear()
    root_names.clear()


os.register_at_fork(after_in_child=_forget_parent_world)
set_drain(drain_loop)

# Registered with threading as well as atexit: threading's exit hooks run before atexit's,
# in reverse order of registration, and concurrent.futures joins its worker threads (and
# refuses new work) from one it registered on import, above. Ours, registered later, runs
# first, so actors on a thread dispatcher can still run on_stop (sinks finalize) at exit.
# The atexit registration is the fallback where threading has no such hook; the hook runs once.
if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_stop_all_at_exit)
atexit.register(_stop_all_at_exit)
