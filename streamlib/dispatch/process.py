"""Run each actor in a worker process of its own: ``dispatcher="process"``.

Why a process: pure-Python ``process`` code holds the GIL, so threads cannot run two
such actors at once; and native code can crash. In a worker process an actor computes
in parallel with everything else, and a crash (a segfault in a C extension,
``os._exit``) kills only the worker: the actor fails with :class:`WorkerCrashed` and a
:class:`~streamlib.supervision.Supervisor` restarts it -- the restarted instance is a
new object that attaches again and gets a fresh worker.

How it works:

* **One worker per actor, forked at attach.** ``attach`` runs after the subclass
  ``__init__``, so the forked child inherits the fully built actor: its state, and its
  class even when that class came from ``exec``/``eval`` and no module could import it.
  Where ``fork`` does not exist (or ``start_method="spawn"`` is asked for) the actor's
  state is pickled instead, which needs an importable class. ``on_start``, every
  ``process`` and ``on_stop`` then run in the worker, on a private event loop there.
* **The parent keeps the streams.** Mailboxes, wiring, overflow policies and clocks
  stay in the parent. Each tick the parent sends the tick and, for every input, the
  oldest queued message (it stays queued until the worker reports it read, so a full
  mailbox drops and blocks exactly as with any other dispatcher). Reading further, or
  waiting with ``await read()``, asks the parent mid-tick. What ``process`` sends is
  sent on by the parent through the real outputs, in order, with backpressure.
* **Frames cross through shared memory** (:mod:`.shared_memory`): no per-frame
  pickling of pixel data, and the receiving side gets zero-copy views. Big copies run
  on a thread per worker (its *courier*), never on the event loop, and ahead of time
  where a frame is already queued behind the one in process; the loop itself only
  writes and reads small messages on the pipe, so a tick costs two wakeups.

Inside the worker, ``self.inputs`` and ``self.outputs`` are stand-ins with the API
``process`` uses (``read``, ``try_read``, ``read_nowait``, ``has_messages``,
``dropped``; ``send``, ``send_nowait``) and ``self.stop()`` asks the parent to stop the
actor. Declare ports in ``__init__``, and create loop-bound resources (queues, tasks)
in ``on_start``: the worker never sees the parent's event loop. Messages that cross
must be picklable; workers are daemonic, so they cannot start processes of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..current import set_current_actor
from ..errors import ActorDefinitionError, EndOfStream
from ..eventloop import new_event_loop
from ..mailbox import EMPTY
from ..worker import JobWorker
from .base import Dispatcher
from .shared_memory import DEFAULT_THRESHOLD, ChannelStats, CopyNeeded, SharedArrayChannel, new_prefix, sweep

if TYPE_CHECKING:
    from ..actor import Actor
    from ..messages import TimedTick

__all__ = ["ProcessPoolDispatcher", "WorkerCrashed", "WorkerError"]

log = logging.getLogger("streamlib")

StartMethod = Literal["fork", "spawn"]


class WorkerCrashed(RuntimeError):
    """An actor's worker process died (its exit code is in the message): the actor fails,
    and a supervisor restarts it with a fresh worker."""


class WorkerError(RuntimeError):
    """A hook raised in the worker and its exception could not be rebuilt in the parent
    (it does not pickle, or its class takes other arguments); the message carries the
    original type, text and the worker's traceback."""


# -- the conversation between parent and worker ----------------------------------------
#
# Strictly request/reply: the parent sends one request (a tick, a hook, exit) and the
# worker answers with reports until a final one (_Done or _Failed). A _Read report asks
# the parent for a message mid-call; the parent answers it with a _Deliver.


@dataclass(slots=True)
class _Tick:
    tick: TimedTick
    heads: dict[str, Any]
    """The oldest queued message of each input that has one; it stays queued in the
    parent until a report says the worker read it."""
    queued: dict[str, int]
    """How many messages each input holds in the parent (heads included)."""
    dropped: dict[str, int]


@dataclass(slots=True)
class _Hook:
    name: str


@dataclass(slots=True)
class _Deliver:
    message: Any = None
    found: bool = False
    ended: bool = False
    queued: int = 0


@dataclass(slots=True)
class _Exit:
    pass


@dataclass(slots=True)
class _Report:
    sent: list[tuple[str, Any]]
    """Messages ``process`` sent since the last report: (output name, message), in order."""
    consumed: list[str]
    """Inputs whose head the worker has read since the last report."""


@dataclass(slots=True)
class _Read(_Report):
    name: str = ""
    wait: bool = False


@dataclass(slots=True)
class _Done(_Report):
    stop: bool = False


@dataclass(slots=True)
class _Failed(_Report):
    error: bytes | None = None
    type_name: str = ""
    text: str = ""
    traceback: str = ""
    pid: int = 0


_Request = _Tick | _Hook | _Deliver | _Exit


# -- the worker side -----------------------------------------------------------------


class _LocalInput:
    """``self.inputs[name]`` inside the worker: the reading API of a StreamInput, served
    from the head the parent sent with the tick, and from the parent on demand."""

    __slots__ = ("_head", "_queued", "_worker", "dropped", "msg_type", "name")

    def __init__(self, name: str, msg_type: type, worker: _WorkerRuntime) -> None:
        self.name = name
        self.msg_type = msg_type
        self.dropped = 0
        self._worker = worker
        self._head: Any = EMPTY
        self._queued = 0  # messages in the parent's mailbox beyond the head

    def _begin(self, head: Any, queued: int, dropped: int) -> None:
        self._head = head
        self._queued = queued - (head is not EMPTY)
        self.dropped = dropped

    def read_nowait(self) -> Any:
        head = self._head
        if head is not EMPTY:
            self._head = EMPTY
            self._worker.consumed.append(self.name)
            return head
        if self._queued > 0:
            return self._worker.fetch(self, wait=False)
        return None

    async def try_read(self) -> Any:
        return self.read_nowait()

    async def read(self) -> Any:
        """The next message, waiting for one; :class:`EndOfStream` when none can come."""
        if self._head is not EMPTY or self._queued > 0:
            message = self.read_nowait()
            if message is not None:
                return message
        return self._worker.fetch(self, wait=True)

    def has_messages(self) -> bool:
        return self._head is not EMPTY or self._queued > 0

    def __repr__(self) -> str:
        return f"<worker-side input {self.name!r} of {self._worker.path}>"


class _LocalOutput:
    """``self.outputs[name]`` inside the worker: sends are collected and passed to the
    parent, which sends them through the real output."""

    __slots__ = ("_worker", "msg_type", "name", "sent")

    def __init__(self, name: str, msg_type: type, worker: _WorkerRuntime) -> None:
        self.name = name
        self.msg_type = msg_type
        self.sent = 0
        self._worker = worker

    def send_nowait(self, message: Any) -> None:
        msg_type = self.msg_type
        if msg_type is not object and not isinstance(message, msg_type):
            raise TypeError(
                f"{self._worker.path}.outputs[{self.name!r}] is declared for {msg_type.__qualname__} "
                f"but was sent a {type(message).__qualname__}"
            )
        self.sent += 1
        self._worker.outbox.append((self.name, message))

    async def send(self, message: Any) -> None:
        self.send_nowait(message)

    def __repr__(self) -> str:
        return f"<worker-side output {self.name!r} of {self._worker.path}>"


class _LocalPorts(dict[str, Any]):
    """The worker's ``self.inputs`` / ``self.outputs``: the parent owns the real ports."""

    def __setitem__(self, key: str, value: Any) -> None:
        raise ActorDefinitionError(
            f"port {key!r} added inside a worker process: actors on the process dispatcher "
            "must declare their ports in __init__"
        )


@dataclass(slots=True)
class _ActorImage:
    """An actor reduced to what a spawned worker needs: class, state and port types."""

    cls: type[Actor]
    state: dict[str, Any]
    inputs: list[tuple[str, type]]
    outputs: list[tuple[str, type]]


# Attributes of an actor that belong to the parent's runtime, never to the worker.
_RUNTIME_ATTRS = frozenset({"_core", "parent", "children", "inputs", "outputs", "dispatcher", "clock"})


@dataclass(slots=True)
class _WorkerConfig:
    prefix: str
    """Name prefix of the worker's shared memory slots (the parent sweeps it after a crash)."""
    threshold: int
    inherited: list[Connection] = field(default_factory=list)
    """Parent-side pipe ends a forked child inherited: closed at once, so that the
    death of the parent (or of another worker) reads as end-of-file where it should."""


class _WorkerRuntime:
    """The worker process's side: hosts the actor and answers the parent's requests."""

    def __init__(self, actor: Actor, channel: SharedArrayChannel, ports: _ActorImage) -> None:
        self.actor = actor
        self.channel = channel
        self.path: str = getattr(actor, "path", type(actor).__qualname__)
        self.outbox: list[tuple[str, Any]] = []
        self.consumed: list[str] = []
        self.stop_requested = False
        self.inputs = _LocalPorts({n: _LocalInput(n, t, self) for n, t in ports.inputs})
        self.outputs = _LocalPorts({n: _LocalOutput(n, t, self) for n, t in ports.outputs})
        self._loop: asyncio.AbstractEventLoop | None = None
        # Rebind the actor to the worker's ports; ``stop`` becomes a request to the parent.
        vars(actor).update(inputs=self.inputs, outputs=self.outputs, stop=self._stop)

    def _stop(self) -> None:
        self.stop_requested = True

    def serve(self) -> None:
        """Answer requests until told to exit or the parent goes away."""
        while True:
            try:
                request = self.channel.recv()
            except (EOFError, OSError):
                return
            if isinstance(request, _Tick):
                self._begin_tick(request)
                self._call(self.actor.process, request.tick)
            elif isinstance(request, _Hook):
                self._call(getattr(self.actor, request.name))
            elif isinstance(request, _Exit):
                self.channel.send(_Done([], []))
                return
            del request

    def _begin_tick(self, request: _Tick) -> None:
        heads, queued, dropped = request.heads, request.queued, request.dropped
        for name in heads.keys() - self.inputs.keys():  # a port the parent added later
            dict.__setitem__(self.inputs, name, _LocalInput(name, object, self))
        for name, port in self.inputs.items():
            port._begin(heads.pop(name, EMPTY), queued.get(name, 0), dropped.get(name, 0))

    def _call(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                loop = self._loop
                if loop is None:
                    loop = self._loop = new_event_loop()
                loop.run_until_complete(result)
        except Exception as exc:
            self._end_call()
            self._reply(self._failure(exc))
        else:
            self._end_call()
            self._reply(_Done(self._take_sent(), self._take_consumed(), self.stop_requested))
            self.stop_requested = False

    def _end_call(self) -> None:
        # Unread heads stay queued in the parent; drop ours so their slots go back.
        for port in self.inputs.values():
            port._head = EMPTY

    def _take_sent(self) -> list[tuple[str, Any]]:
        sent, self.outbox = self.outbox, []
        return sent

    def _take_consumed(self) -> list[str]:
        consumed, self.consumed = self.consumed, []
        return consumed

    def _failure(self, exc: BaseException) -> _Failed:
        text = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
        try:
            blob: bytes | None = pickle.dumps(exc, protocol=5)
        except Exception:
            blob = None
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)  # let the frames' views of slots go
        return _Failed(
            self._take_sent(), self._take_consumed(), blob, type(exc).__qualname__, str(exc), text, os.getpid()
        )

    def _reply(self, report: _Report) -> None:
        try:
            self.channel.send(report)
        except (OSError, EOFError):
            raise
        except Exception as exc:  # something process sent does not pickle
            error = TypeError(f"{self.path}: a message sent by the worker cannot be pickled to leave it: {exc!r}")
            failed = self._failure(error)
            failed.consumed = report.consumed
            self.channel.send(failed)

    def fetch(self, port: _LocalInput, wait: bool) -> Any:
        """Ask the parent for the next message of ``port`` (waiting for one if ``wait``)."""
        self._reply(_Read(self._take_sent(), self._take_consumed(), port.name, wait))
        answer = self.channel.recv()
        assert isinstance(answer, _Deliver), answer
        port._queued = answer.queued
        if answer.ended:
            raise EndOfStream(f"{self.path}.inputs[{port.name!r}] has no more messages")
        return answer.message if answer.found else None


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the user's first frame on (not this module's or the event loop's)."""
    while tb is not None and tb.tb_next is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename != __file__ and not any(part in filename for part in _PLUMBING):
            break
        tb = tb.tb_next
    return tb


_PLUMBING = (os.sep + "asyncio" + os.sep, "uvloop")


def _worker_main(connection: Connection, actor: Any, config: _WorkerConfig) -> None:
    """Entry point of a worker process (``actor`` is the actor when forked, its pickled
    :class:`_ActorImage` when spawned)."""
    for inherited in config.inherited:
        with contextlib.suppress(OSError):
            inherited.close()
    # Ctrl-C reaches the whole process group: the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # a forked child must not poke the parent's event loop
    asyncio.events._set_running_loop(None)

    if isinstance(actor, bytes):
        image: _ActorImage = pickle.loads(actor)
        actor = image.cls.__new__(image.cls)
        vars(actor).update(image.state)
    else:
        image = _image_ports(actor)
    set_current_actor(actor)
    channel = SharedArrayChannel(connection, config.prefix, config.threshold)
    try:
        _WorkerRuntime(actor, channel, image).serve()
    except (EOFError, OSError):
        pass  # the parent went away mid-call: nobody is left to answer
    finally:
        channel.close()


def _image_ports(actor: Actor) -> _ActorImage:
    return _ActorImage(
        type(actor),
        {},
        [(n, p.msg_type) for n, p in actor.inputs.items()],
        [(n, p.msg_type) for n, p in actor.outputs.items()],
    )


def _pickle_image(actor: Actor) -> bytes:
    """The actor's state for a spawned worker, or a clear error saying why it cannot be."""
    image = _image_ports(actor)
    image.state = {k: v for k, v in vars(actor).items() if k not in _RUNTIME_ATTRS}
    try:
        return pickle.dumps(image, protocol=5)
    except Exception as exc:
        cls = type(actor)
        raise TypeError(
            f"cannot start {actor.path} ({cls.__module__}.{cls.__qualname__}) in a worker process with the "
            f"'spawn' start method: the actor does not pickle ({type(exc).__name__}: {exc}). Spawned workers "
            "import the class by module path and unpickle the instance's attributes; a class created by "
            "exec()/eval() or inside a function has no importable module and needs the 'fork' start method "
            "(Linux), and attributes such as locks or open files belong in on_start."
        ) from exc


# -- the parent side -----------------------------------------------------------------

_T = TypeVar("_T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any] | None", "asyncio.AbstractEventLoop | None"]


class _Courier(JobWorker):
    """The one thread that does a worker's blocking work: it forks the worker, makes
    every big copy into shared memory (ahead of time where it can), and waits for the
    process to exit -- so the event loop never blocks on any of it.

    A plain daemon thread rather than a ``ThreadPoolExecutor``: executors refuse work
    once the interpreter starts exiting -- exactly when actors on the background loop
    still need their ``on_stop`` -- and a fork from an executor thread would carry the
    executor's state into the child."""


# Forks are serialized so that no child inherits another worker's half-made pipe.
_launch_lock = threading.Lock()
_parent_ends: dict[int, Connection] = {}  # id -> every live worker's parent-side pipe end


class _Worker:
    """The parent's handle on one actor's worker process."""

    def __init__(
        self,
        actor: Actor,
        process: BaseProcess,
        channel: SharedArrayChannel,
        config: _WorkerConfig,
        courier: _Courier,
    ) -> None:
        self.actor = actor
        self.process = process
        self.channel = channel
        self.config = config
        self.pid = process.pid or 0
        self.where = f"{actor.path} ({type(actor).__qualname__})"
        self.courier = courier
        self.dead = False
        """The process died (a :class:`WorkerCrashed` was raised)."""
        self.broken = False
        """A conversation was cut short in the parent: the worker may be mid-call."""
        self.open = False
        """A request is out and its final report has not come back yet."""
        self.calls = 0
        """Requests sent: ticks and hooks."""
        self.loop_io = sys.platform != "win32"
        """The loop watches the pipe itself (Windows' pipes are not selectable)."""

    async def ask(self, request: _Request, upcoming: Callable[[], list[Any]] | None = None) -> _Report:
        """Send ``request`` and wait for the worker's next report.

        The loop writes and reads the pipe itself when that cannot block it: a small
        message whose arrays are already in shared memory (staged, or handed back).
        Anything that needs a copy is sent by the courier. So a tick costs two wakeups
        (parent to worker and back), and big copies never run on the loop.

        Meanwhile the courier copies the ``upcoming()`` messages (next in line behind
        this tick's heads) into shared memory, so the next tick sends them without a
        copy: the parent's copying overlaps the worker's work instead of adding to it."""
        if self.dead:
            raise await self.courier.call(self._crashed)
        if not self.loop_io:
            return await self.courier.call(self.exchange, request, upcoming)
        try:
            self._send(request, copy=False)
        except CopyNeeded:
            await self.courier.call(self._send, request, True)
        except OSError:
            raise await self.courier.call(self._crashed) from None
        self.open = True
        if upcoming is not None:
            self.courier.post(self._stage, upcoming)
        return await self._receive()

    def _send(self, request: _Request, copy: bool) -> None:
        try:
            self.channel.send(request, copy)
        except (OSError, CopyNeeded):
            raise
        except Exception as exc:
            raise TypeError(
                f"{self.where}: a message for its worker process cannot be pickled: {exc!r}. Messages that cross "
                "to the process dispatcher must pickle (their classes importable by module path)."
            ) from exc

    def _stage(self, upcoming: Callable[[], list[Any]]) -> None:
        for message in upcoming():
            with contextlib.suppress(Exception):  # staging is an optimization only
                self.channel.stage(message)

    async def _receive(self) -> _Report:
        """Wait on the loop for the worker's next report (or its death)."""
        connection = self.channel.connection
        if not connection.poll(0):
            loop = asyncio.get_running_loop()
            ready = loop.create_future()

            def wake() -> None:
                if not ready.done():
                    ready.set_result(None)

            fds = (connection.fileno(), self.process.sentinel)
            try:
                for fd in fds:
                    loop.add_reader(fd, wake)
                await ready
            finally:
                for fd in fds:
                    loop.remove_reader(fd)
        try:
            if not connection.poll(0):  # the process ended without a word
                raise EOFError
            report: _Report = self.channel.recv()
        except (EOFError, OSError):
            raise await self.courier.call(self._crashed) from None
        if not isinstance(report, _Read):
            self.open = False
        return report

    def exchange(self, request: _Request, upcoming: Callable[[], list[Any]] | None = None) -> _Report:
        """:meth:`ask` on the courier, for loops that cannot watch file descriptors."""
        if self.dead:
            raise self._crashed()
        try:
            self._send(request, copy=True)
        except OSError as exc:
            raise self._crashed() from exc
        self.open = True
        if upcoming is not None:
            self._stage(upcoming)
        connection = self.channel.connection
        ready = multiprocessing.connection.wait([connection, self.process.sentinel])
        if connection not in ready:
            raise self._crashed()
        try:
            report: _Report = self.channel.recv()
        except (EOFError, OSError) as exc:
            raise self._crashed() from exc
        if not isinstance(report, _Read):
            self.open = False
        return report

    def _crashed(self) -> WorkerCrashed:
        self.dead = True
        self.open = False
        self.process.join(1.0)
        # join() waits on the process's sentinel, which closes with its files -- a moment before
        # the kernel makes it reapable; on a loaded machine that moment can outlast join's one
        # look, and the exit code (SIGXCPU from a sandbox's CPU limit, say) would be missed.
        deadline = time.monotonic() + 2.0
        while self.process.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.005)
        code = self.process.exitcode
        if code is None:
            how = "stopped answering"
        elif code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return WorkerCrashed(f"the worker process (pid {self.pid}) of {self.where} {how}")

    def shutdown(self, timeout: float) -> None:
        """Let the worker exit (or kill it), reap it and free its shared memory (on the
        courier)."""
        process, channel = self.process, self.channel
        if not (self.dead or self.broken or self.open):
            try:
                channel.send(_Exit())
                if channel.connection.poll(timeout):
                    channel.recv()
            except (OSError, EOFError):
                pass
        process.join(timeout if not (self.broken or self.open) else 0.1)
        if process.exitcode is None:
            process.terminate()
            process.join(1.0)
        if process.exitcode is None:
            process.kill()
            process.join()
        with _launch_lock:
            _parent_ends.pop(id(channel.connection), None)
        channel.close()
        sweep(self.config.prefix, channel.peer_max_slot_id)
        process.close()


def _default_start_method() -> StartMethod:
    # fork where it is safe and available: the child inherits the actor as built.
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


class ProcessPoolDispatcher(Dispatcher):
    """One worker process per actor: each actor on this dispatcher gets a process of its own
    (not a shared pool, despite the name seed 004 gave it), at most ``workers`` at a time
    (default: one per CPU core). See the module docstring."""

    interruptible: ClassVar[bool] = False

    def __init__(
        self,
        workers: int | None = None,
        *,
        start_method: StartMethod | None = None,
        shm_threshold: int = DEFAULT_THRESHOLD,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        method = start_method or _default_start_method()
        if method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"start method {method!r} is not available here")
        self.workers = workers
        self.start_method: StartMethod = method
        self.shm_threshold = shm_threshold
        self.stop_timeout = stop_timeout
        self._context: multiprocessing.context.ForkContext | multiprocessing.context.SpawnContext = (
            multiprocessing.get_context("fork") if method == "fork" else multiprocessing.get_context("spawn")
        )
        self._lock = threading.Lock()
        self._workers: dict[Actor, _Worker] = {}
        self._starting = 0

    # -- lifecycle -------------------------------------------------------------------

    async def attach(self, actor: Actor) -> None:
        with self._lock:
            if len(self._workers) + self._starting >= self.workers:
                running = ", ".join(a.path for a in self._workers) or "starting"
                raise RuntimeError(
                    f"cannot start a worker process for {actor.path} ({type(actor).__qualname__}): "
                    f"{self!r} already runs its maximum of {self.workers} ({running}). Pass a "
                    f"ProcessPoolDispatcher(workers=...) with more, or another dispatcher instance."
                )
            self._starting += 1
        registered = False
        try:
            payload: Any = actor if self.start_method == "fork" else _pickle_image(actor)
            await super().attach(actor)
            try:
                worker = await self._launch(actor, payload)
            except BaseException:
                await super().detach(actor)
                raise
            with self._lock:
                self._workers[actor] = worker
                self._starting -= 1
                registered = True
        finally:
            if not registered:
                with self._lock:
                    self._starting -= 1

    async def _launch(self, actor: Actor, payload: Any) -> _Worker:
        """Start the worker from its courier: a fork copies only the calling thread, and
        this one carries no event loop or executor into the child."""
        courier = _Courier(f"streamlib-process {actor.path}")
        started: list[_Worker] = []
        try:
            await courier.call(self._start_process, actor, payload, courier, started)
        except asyncio.CancelledError:
            courier.post(_abandon, courier, started)  # runs once the start is done
            raise
        except BaseException:
            courier.close()
            raise
        return started[0]

    def _start_process(self, actor: Actor, payload: Any, courier: _Courier, started: list[_Worker]) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        config = _WorkerConfig(new_prefix(), self.shm_threshold)
        with _launch_lock:
            if self.start_method == "fork":
                config.inherited = [parent_end, *_parent_ends.values()]
            process = self._context.Process(
                target=_worker_main,
                args=(child_end, payload, config),
                name=f"streamlib-worker {actor.path}",
                daemon=True,
            )
            try:
                process.start()
            finally:
                child_end.close()
                config.inherited = []
            _parent_ends[id(parent_end)] = parent_end
        channel = SharedArrayChannel(parent_end, threshold=self.shm_threshold)
        started.append(_Worker(actor, process, channel, config, courier))

    async def detach(self, actor: Actor) -> None:
        with self._lock:
            worker = self._workers.pop(actor, None)
        try:
            if worker is not None:
                try:
                    await worker.courier.call(worker.shutdown, self.stop_timeout)
                finally:
                    worker.courier.close()
        finally:
            await super().detach(actor)

    # -- running hooks -----------------------------------------------------------------

    def _worker(self, actor: Actor) -> _Worker:
        worker = self._workers.get(actor)
        if worker is None:
            raise RuntimeError(f"{actor.path} has no worker process on {self!r} (not attached)")
        return worker

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None]:
        return self._tick(actor, self._worker(actor), tick)

    def bind(self, actor: Actor) -> Callable[[TimedTick], Awaitable[None] | None]:
        worker = self._worker(actor)
        return lambda tick: self._tick(actor, worker, tick)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        worker = self._workers.get(actor)
        if worker is None or worker.dead or worker.broken:
            # Never started, or its state died with it: nothing is left to run the hook on.
            return None
        name = getattr(hook, "__name__", None)
        if getattr(hook, "__self__", None) is not actor or name is None:
            return super().call_hook(actor, hook)  # not one of the actor's own hooks
        return self._converse(actor, worker, _Hook(name), {})

    def _tick(self, actor: Actor, worker: _Worker, tick: TimedTick) -> Awaitable[None]:
        heads: dict[str, Any] = {}
        queued: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for name, port in actor.inputs.items():
            mailbox = port.mailbox
            count = len(mailbox)
            if count:
                heads[name] = mailbox.lend_head()  # stays queued until the worker reports it read
                queued[name] = count
            if port.dropped:
                dropped[name] = port.dropped
        upcoming = functools.partial(_upcoming, actor, list(heads.items())) if heads else None
        return self._converse(actor, worker, _Tick(tick, heads, queued, dropped), heads, upcoming)

    async def _converse(
        self,
        actor: Actor,
        worker: _Worker,
        request: _Request,
        heads: dict[str, Any],
        upcoming: Callable[[], list[Any]] | None = None,
    ) -> None:
        """Send ``request``, serve the worker's mid-call reads, pass on what it sent."""
        worker.calls += 1
        try:
            report = await worker.ask(request, upcoming)
            while True:
                _take_heads(actor, heads, report.consumed)
                outputs = actor.outputs
                for name, message in report.sent:
                    await outputs[name].send(message)
                if not isinstance(report, _Read):
                    break
                report = await worker.ask(await _fetch(actor, report))
        except WorkerCrashed:
            _take_heads(actor, heads, list(heads))  # the messages in hand are lost with the worker
            raise
        except BaseException:
            if worker.open:
                worker.broken = True
            _return_heads(actor, heads)
            raise
        _return_heads(actor, heads)
        if isinstance(report, _Failed):
            raise _rebuild(worker, report)
        if isinstance(report, _Done) and report.stop:
            actor.stop()

    # -- inspection --------------------------------------------------------------------

    def pid(self, actor: Actor) -> int | None:
        """The process id of ``actor``'s worker, or None if it has none."""
        worker = self._workers.get(actor)
        return worker.pid if worker is not None else None

    def stats(self, actor: Actor) -> ChannelStats | None:
        """A snapshot of the parent-side counters of ``actor``'s pipe (messages, bytes, arrays
        through shared memory), or None if it has no worker. A copy: it does not change as
        the counters move on."""
        worker = self._workers.get(actor)
        return dataclasses.replace(worker.channel.stats) if worker is not None else None

    def __repr__(self) -> str:
        return (
            f"<ProcessPoolDispatcher workers={self.workers} start_method={self.start_method} "
            f"running={len(self._workers)}>"
        )


def _upcoming(actor: Actor, heads: list[tuple[str, Any]]) -> list[Any]:
    """The message behind each head: what the next tick will likely send (called on the
    courier while the loop keeps filling the mailboxes, so it reads them defensively)."""
    found = []
    for name, head in heads:
        items = actor.inputs[name].mailbox._items
        with contextlib.suppress(IndexError):
            found.append(items[1] if items[0] is head else items[0])
    return found


def _abandon(courier: _Courier, started: list[_Worker]) -> None:
    """Stop a worker whose attach was cancelled while it started (nobody will detach it)."""
    for worker in started:
        worker.shutdown(0.1)
    courier.close()


def _take_heads(actor: Actor, heads: dict[str, Any], names: list[str]) -> None:
    """Take the heads the worker read out of their mailboxes (the heads are lent, see
    :meth:`Mailbox.lend_head`): one the overflow evicted while the worker had it was read
    all the same, so it counts as taken, not dropped -- every message is counted exactly
    once, and no counter is ever corrected afterwards."""
    for name in names:
        head = heads.pop(name, EMPTY)
        port = actor.inputs.get(name)
        if head is not EMPTY and port is not None:
            port.mailbox.settle_loan(taken=True)


def _return_heads(actor: Actor, heads: dict[str, Any]) -> None:
    """The call ended without reading these heads: they stay queued (or, if the overflow
    evicted them meanwhile, count as dropped after all)."""
    for name in list(heads):
        port = actor.inputs.get(name)
        if port is not None:
            port.mailbox.settle_loan(taken=False)
    heads.clear()


async def _fetch(actor: Actor, read: _Read) -> _Deliver:
    """Answer a worker's mid-call read with the input's next message."""
    port = actor.inputs[read.name]
    mailbox = port.mailbox
    if read.wait:
        try:
            message = await port.read()
        except EndOfStream:
            return _Deliver(ended=True)
        return _Deliver(message, True, False, len(mailbox))
    item = mailbox.get_nowait()
    if item is EMPTY:
        return _Deliver()
    return _Deliver(item, True, False, len(mailbox))


def _rebuild(worker: _Worker, failed: _Failed) -> BaseException:
    """The worker's exception, raised in the parent: the original type where it pickles
    and takes a message, its text naming the actor and carrying the worker's traceback."""
    original: BaseException | None = None
    if failed.error is not None:
        with contextlib.suppress(Exception):
            original = pickle.loads(failed.error)
    if isinstance(original, EndOfStream):
        return original  # a normal end, not a failure
    message = (
        f"{worker.where} raised {failed.type_name}: {failed.text} "
        f"(in its worker process, pid {failed.pid})\n\nWorker traceback:\n{failed.traceback.rstrip()}"
    )
    if original is not None:
        try:
            rebuilt = type(original)(message)
        except Exception:
            pass
        else:
            if type(rebuilt) is type(original):
                with contextlib.suppress(Exception):
                    vars(rebuilt).update(vars(original))
                return rebuilt
    return WorkerError(message)
