"""What the agent tools do, independent of MCP and of where the runtime is.

:class:`RuntimeAccess` is the small interface the MCP tools call: one coroutine per tool,
plain JSON-ready values in and out, :class:`~streamlib.agents.errors.ToolFailure` for every
failure. :class:`LocalRuntime` implements it for the actors of this process; a runtime in
another process (``actor://HOST:PORT``, the remote layer) implements the same methods over
its transport and the server does not change.

``LocalRuntime`` runs every operation on the runtime's event loop (by default streamlib's
background loop), so the MCP server's own loop never runs actor code, and a tool call
waits for its answer without blocking the actors.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import itertools
import linecache
import logging
import math
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

import streamlib
from streamlib import (
    Actor,
    ActorDefinitionError,
    ActorInitError,
    LifecycleState,
    StreamInput,
    StreamOutput,
    Supervisor,
    VideoFrame,
    running_actors,
)

from . import catalogue as catalogue_module
from .errors import ToolFailure, source_location
from .logs import LogBuffer
from .sandbox import SandboxDispatcher, SandboxLimits, SandboxViolation, trial_run

__all__ = ["TOOL_NAMES", "LocalRuntime", "RuntimeAccess", "Snapshot"]

log = logging.getLogger("streamlib.agents")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Snapshot:
    """The latest frame of a video output, as PNG."""

    png: bytes
    width: int
    height: int
    source_width: int
    source_height: int
    frame_number: int
    timestamp: float
    output: str

    def describe(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "width": self.width,
            "height": self.height,
            "source_width": self.source_width,
            "source_height": self.source_height,
            "frame_number": self.frame_number,
            "timestamp": self.timestamp,
            "bytes": len(self.png),
        }


TOOL_NAMES = (
    "list_actor_types",
    "define_actor",
    "spawn_actor",
    "connect",
    "disconnect",
    "get_graph",
    "get_stats",
    "snapshot",
    "set_code",
    "stop_actor",
    "restart_actor",
    "tail_logs",
)
"""The agent tools, one per :class:`RuntimeAccess` operation (the MCP server's tool names)."""


@runtime_checkable
class RuntimeAccess(Protocol):
    """The operations behind the agent tools (one per tool). Addresses: an actor by its path
    (``/pattern``, ``/app/overlay``), a port as ``PATH.PORT`` (``/pattern.video``)."""

    async def list_actor_types(self) -> list[dict[str, Any]]: ...
    async def define_actor(self, source: str, sandbox: bool = True) -> dict[str, Any]: ...
    async def spawn_actor(
        self,
        type: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        dispatcher: str | None = None,
        parent: str | None = None,
    ) -> dict[str, Any]: ...
    async def connect(self, source: str, target: str) -> dict[str, Any]: ...
    async def disconnect(self, source: str, target: str) -> dict[str, Any]: ...
    async def get_graph(self) -> dict[str, Any]: ...
    async def get_stats(self, actor: str | None = None) -> dict[str, Any]: ...
    async def snapshot(self, output: str, width: int = 640, timeout: float = 2.0) -> Snapshot: ...
    async def set_code(self, actor: str, code: str) -> dict[str, Any]: ...
    async def stop_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]: ...
    async def restart_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]: ...
    async def tail_logs(
        self, actor: str | None = None, limit: int = 50, level: str | None = None, since: int = 0
    ) -> dict[str, Any]: ...
    def close(self) -> None:
        """Release what this access holds here (the actors keep running)."""


@dataclass
class _Defined:
    """A class an agent defined: the class, its source file name, its catalogue entry."""

    cls: type[Actor]
    filename: str
    line: int
    sandboxed: bool
    entry: dict[str, Any] = field(default_factory=dict)


_counter = itertools.count(1)


class LocalRuntime:
    """:class:`RuntimeAccess` over the actors of this process.

    ``loop``: where actors are built and operated on (default: streamlib's background loop).
    ``sandbox``: the limits of the process workers that run defined classes (``None``: the
    defaults of :class:`SandboxLimits`). ``logs``: the ring buffer ``tail_logs`` reads (one is
    made and attached to the ``streamlib`` logger by default)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        sandbox: SandboxLimits | None = None,
        logs: LogBuffer | None = None,
    ) -> None:
        from streamlib.eventloop import background_loop

        self.loop = loop or background_loop()
        self.limits = sandbox or SandboxLimits()
        self.logs = logs or LogBuffer()
        self._sandbox: SandboxDispatcher | None = None
        self._defined: dict[str, _Defined] = {}
        self._ready: list[dict[str, Any]] | None = None
        self._ready_lock = threading.Lock()
        self._taps: dict[StreamOutput, Any] = {}
        self._watchers: set[concurrent.futures.Future[None]] = set()
        self._known: dict[str, Actor] = {}  # what the tools started, by path (the latest at each path)

    # -- plumbing ------------------------------------------------------------------------------

    async def _on_loop(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``fn()`` on the runtime's loop and wait for it from wherever we are."""
        if asyncio.get_running_loop() is self.loop:
            return await fn()
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(_call(fn), self.loop)
        return await asyncio.wrap_future(future)

    @property
    def sandbox(self) -> SandboxDispatcher:
        if self._sandbox is None:
            self._sandbox = SandboxDispatcher(self.limits)
        return self._sandbox

    def close(self) -> None:
        """Detach the preview taps and the log buffer (actors keep running)."""
        for tap in self._taps.values():
            tap.close()
        self._taps.clear()
        self.logs.close()

    # -- finding things ------------------------------------------------------------------------

    def _actors(self) -> Iterator[Actor]:
        """Every running actor (each tree depth first), then the actors the tools started
        that have ended since (so an agent sees what failed, and why)."""
        seen: set[str] = set()
        stack = list(reversed(running_actors()))
        while stack:
            actor = stack.pop()
            seen.add(actor.path)
            yield actor
            stack.extend(reversed(list(actor.children)))
        for path, actor in list(self._known.items()):
            if path not in seen:
                yield actor

    def find(self, path: str) -> Actor:
        """The running actor at ``path`` (``/a/b``; a bare name means a top-level actor)."""
        if not isinstance(path, str) or not path.strip():
            raise ToolFailure("invalid_argument", f"an actor path is a string such as '/pattern', got {path!r}")
        wanted = path if path.startswith("/") else "/" + path
        for actor in self._actors():
            if actor.path == wanted:
                return actor
        known = ", ".join(a.path for a in itertools.islice(self._actors(), 30)) or "none"
        raise ToolFailure("unknown_actor", f"no running actor at {wanted!r} (running: {known})", actor=wanted)

    def _port(self, address: str, direction: str) -> tuple[Actor, StreamInput | StreamOutput | None]:
        """``PATH`` -> (actor, None); ``PATH.PORT`` -> (actor, that port)."""
        try:
            return self.find(address), None
        except ToolFailure:
            path, dot, name = address.rpartition(".")
            if not dot:
                raise
        actor = self.find(path)
        ports = actor.inputs if direction == "input" else actor.outputs
        port = ports.get(name)
        if port is None:
            names = ", ".join(repr(n) for n in ports) or "none"
            raise ToolFailure(
                "unknown_port",
                f"{actor.path} ({type(actor).__name__}) has no {direction} {name!r} ({direction}s: {names})",
                actor=actor.path,
                class_name=type(actor).__name__,
                port=name,
            )
        return actor, port

    # -- the catalogue -------------------------------------------------------------------------

    def _class_for(self, type_name: str) -> tuple[type[Actor], _Defined | None]:
        defined = self._defined.get(type_name)
        if defined is not None:
            return defined.cls, defined
        for entry in self._ready_entries():
            if entry["name"] == type_name:
                if not entry.get("available", True):
                    raise ToolFailure(
                        "unknown_type", f"{type_name} is not available here: {entry.get('error')}", class_name=type_name
                    )
                module = __import__(entry["module"], fromlist=[type_name])
                cls = getattr(module, type_name)
                return cls, None
        names = [e["name"] for e in self._ready_entries()] + list(self._defined)
        raise ToolFailure(
            "unknown_type",
            f"no actor type {type_name!r}; list_actor_types names them ({', '.join(names)})",
            class_name=type_name,
        )

    def _ready_entries(self) -> list[dict[str, Any]]:
        with self._ready_lock:
            if self._ready is None:
                self._ready = catalogue_module.actor_types()
            return self._ready

    def catalogue_entries(self) -> list[dict[str, Any]]:
        """The ready and core actor types (built on first use: it imports every actor module,
        which takes seconds; a server may call this early, on a thread)."""
        return self._ready_entries()

    async def list_actor_types(self) -> list[dict[str, Any]]:
        ready = await asyncio.to_thread(self._ready_entries)
        return [*ready, *(d.entry for d in self._defined.values())]

    def _entry(self, type_name: str) -> dict[str, Any]:
        defined = self._defined.get(type_name)
        if defined is not None:
            return defined.entry
        return next(e for e in self._ready_entries() if e["name"] == type_name)

    # -- define_actor --------------------------------------------------------------------------

    async def define_actor(self, source: str, sandbox: bool = True) -> dict[str, Any]:
        """Load the actor classes of ``source``; all or nothing (see the module docstring of
        :mod:`streamlib.agents.server` for what is checked)."""
        if not isinstance(source, str) or not source.strip():
            raise ToolFailure("invalid_argument", "source must be Python source text defining Actor subclasses")
        number = next(_counter)
        filename = f"<agent-source-{number}>"
        try:
            code = compile(source, filename, "exec", dont_inherit=True)  # not this module's __future__ imports
            tree = catalogue_module.parse_source(source, filename)
        except SyntaxError as exc:
            raise ToolFailure(
                "syntax_error",
                f"{exc.msg}: the source does not compile",
                line=exc.lineno,
                column=exc.offset,
                source_line=(exc.text or "").rstrip("\n") or None,
            ) from None
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        class_lines = {n.name: n.lineno for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        module = types.ModuleType(f"agent_source_{number}", "actor classes an agent defined")
        module.__file__ = filename  # inspect finds the classes' source (in linecache) through it
        namespace = vars(module)
        namespace.update(_namespace(number))

        if sandbox:
            outcome = await asyncio.to_thread(trial_run, lambda: exec(code, _namespace(number)), self.limits, filename)
            if not outcome.ok:
                raise ToolFailure(
                    "sandbox_violation" if outcome.limit else "definition_error",
                    f"running the source's module level failed in a sandboxed trial: {outcome.exception}: "
                    f"{outcome.message}; nothing was loaded",
                    line=outcome.line,
                    column=outcome.column,
                    source_line=_line(source, outcome.line),
                )
        try:
            exec(code, namespace)
        except Exception as exc:
            line, column = source_location(exc, filename)
            raise ToolFailure(
                "definition_error",
                f"running the source raised {type(exc).__name__}: {exc}; nothing was loaded",
                line=line,
                column=column,
                source_line=_line(source, line),
            ) from None
        classes = [
            value
            for value in namespace.values()
            if isinstance(value, type) and issubclass(value, Actor) and value.__module__ == namespace["__name__"]
        ]
        if not classes:
            raise ToolFailure(
                "definition_error",
                "the source defines no Actor subclass: write 'class MyActor(Actor):' with an "
                "'async def process(self, tick)' method (Actor, StreamInput, StreamOutput, VideoFrame and np "
                "are in scope)",
            )
        ready_names = {e["name"] for e in self._ready_entries()}
        loaded: dict[str, _Defined] = {}
        sys.modules[module.__name__] = module  # inspect reads the classes' source through it
        try:
            for cls in classes:
                line = class_lines.get(cls.__name__, 1)
                if cls.__name__ in ready_names:
                    raise ToolFailure(
                        "definition_error",
                        f"{cls.__name__} is the name of a ready actor: choose another class name",
                        class_name=cls.__name__,
                        line=line,
                        source_line=_line(source, line),
                    )
                missing = sorted(getattr(cls, "__abstractmethods__", ()))
                if missing:
                    raise ToolFailure(
                        "definition_error",
                        f"{cls.__name__} does not define {', '.join(missing)}: every actor needs "
                        "'async def process(self, tick)'",
                        class_name=cls.__name__,
                        line=line,
                        source_line=_line(source, line),
                    )
                if sandbox:
                    _confine(cls, self)
                defined = _Defined(cls, filename, line, sandbox)
                dispatchers = {"default": "sandbox", "allowed": ["sandbox"]} if sandbox else None
                defined.entry = catalogue_module.describe(
                    cls, module="<defined>", origin="defined", dispatchers=dispatchers
                )
                defined.entry["sandboxed"] = sandbox
                loaded[cls.__name__] = defined
        except BaseException:
            del sys.modules[module.__name__]
            raise
        self._defined.update(loaded)
        self.logs.add(
            "info", f"defined {', '.join(loaded)} ({'sandboxed' if sandbox else 'in process'})", event="defined"
        )
        return {
            "classes": list(loaded),
            "sandboxed": sandbox,
            "limits": self.limits.describe() if sandbox else None,
            "types": [d.entry for d in loaded.values()],
        }

    # -- spawn_actor ---------------------------------------------------------------------------

    async def spawn_actor(
        self,
        type: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        dispatcher: str | None = None,
        parent: str | None = None,
    ) -> dict[str, Any]:
        cls, defined = self._class_for(type)
        entry = self._entry(type)
        params = dict(params or {})
        _validate_params(entry, params)
        allowed = entry.get("dispatchers", {}).get("allowed", [])
        if dispatcher is not None and dispatcher not in allowed:
            raise ToolFailure(
                "invalid_argument",
                f"{type} may run on dispatchers {allowed}, not {dispatcher!r}",
                class_name=type,
            )
        if name is not None and (not name or "/" in name):
            raise ToolFailure("invalid_argument", f"an actor name is non-empty and has no '/': {name!r}")
        parent_actor = self.find(parent) if parent else None
        options: dict[str, Any] = {}
        if name:
            options["name"] = name
        if dispatcher and dispatcher != "sandbox":
            options["dispatcher"] = dispatcher
        if defined is not None and defined.sandboxed:
            outcome = await asyncio.to_thread(
                trial_run, lambda: cls(**params, **options), self.limits, defined.filename
            )
            if not outcome.ok:
                raise ToolFailure(
                    "sandbox_violation" if outcome.limit else "init_error",
                    f"{type}(...) failed in a sandboxed trial: {outcome.exception}: {outcome.message}; "
                    "nothing was started",
                    class_name=type,
                    line=outcome.line,
                    column=outcome.column,
                    source_line=_line_of(defined, outcome.line),
                )

        async def build() -> Actor:
            if parent_actor is not None:
                return parent_actor.spawn(cls, **params, **options)
            return cls(**params, **options)

        try:
            actor = await self._on_loop(build)
        except ActorDefinitionError as exc:
            raise ToolFailure("definition_error", str(exc), class_name=type) from None
        except ActorInitError as exc:
            cause = exc.__cause__ or exc
            line, column = source_location(cause, defined.filename) if defined else (None, None)
            raise ToolFailure(
                "init_error",
                f"{type}(...) raised {type_name(cause)}: {cause}",
                class_name=type,
                line=line,
                column=column,
                source_line=_line_of(defined, line),
            ) from None
        except (TypeError, ValueError) as exc:
            raise ToolFailure("invalid_argument", f"{type}(...): {exc}", class_name=type) from None
        self._watch(actor)
        self.logs.add("info", f"spawned {actor.path} ({type})", actor.path, "spawned")
        return {"path": actor.path, "class": type, "dispatcher": _dispatcher_name(actor)}

    def _watch(self, actor: Actor) -> None:
        """Remember ``actor`` (the graph keeps showing it once ended) and log (as a structured
        ``failed`` event) why it failed, when it does."""
        self._known[actor.path] = actor

        async def watch() -> None:
            self._ended(actor, await actor.join())

        task = asyncio.run_coroutine_threadsafe(watch(), self.loop)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _ended(self, actor: Actor, state: LifecycleState) -> None:
        if state is LifecycleState.FAILED:
            failure = actor.failure
            reason = f"{type(failure).__name__}: {str(failure).splitlines()[0]}" if failure else "unknown"
            self.logs.add("error", f"{actor.path} ({type(actor).__name__}) failed: {reason}", actor.path, "failed")

    # -- wiring --------------------------------------------------------------------------------

    async def connect(self, source: str, target: str) -> dict[str, Any]:
        left, out = self._port(source, "output")
        right, inp = self._port(target, "input")

        async def wire() -> None:
            streamlib.connect(out if out is not None else left, inp if inp is not None else right)

        try:
            await self._on_loop(wire)
        except TypeError as exc:
            raise ToolFailure("connect_error", str(exc), actor=left.path, class_name=type(left).__name__) from None
        connections = self._connections_between(left, right)
        self.logs.add("info", f"connected {source} >> {target}", left.path, "connected")
        return {"connected": [source, target], "connections": connections}

    async def disconnect(self, source: str, target: str) -> dict[str, Any]:
        left, out = self._port(source, "output")
        right, inp = self._port(target, "input")
        before = self._connections_between(left, right)

        async def unwire() -> None:
            streamlib.disconnect(out if out is not None else left, inp if inp is not None else right)

        await self._on_loop(unwire)
        after = self._connections_between(left, right)
        self.logs.add("info", f"disconnected {source} // {target}", left.path, "disconnected")
        return {"removed": [c for c in before if c not in after], "remaining": after}

    def _connections_between(self, left: Actor, right: Actor) -> list[dict[str, str]]:
        found = []
        for out_name, out in list(left.outputs.items()):
            for port in out.subscribers:
                if port.owner is right:
                    found.append({"from": f"{left.path}.{out_name}", "to": f"{right.path}.{port.name}"})
        return found

    # -- looking ---------------------------------------------------------------------------------

    async def get_graph(self) -> dict[str, Any]:
        actors = []
        connections = []
        for actor in list(self._actors()):
            actors.append(_describe_actor(actor))
            for out_name, out in list(actor.outputs.items()):
                for port in out.subscribers:
                    owner = port.owner
                    if isinstance(owner, Actor):
                        connections.append(
                            {
                                "from": f"{actor.path}.{out_name}",
                                "to": f"{owner.path}.{port.name}",
                                "type": _type_name(out.msg_type),
                                "dropped": port.dropped,
                            }
                        )
        return {"time": time.time(), "actors": actors, "connections": connections}

    async def get_stats(self, actor: str | None = None) -> dict[str, Any]:
        from streamlib.observe import views

        if actor is None:
            return views.snapshot()
        return self.find(actor).stats(recursive=True)

    async def snapshot(self, output: str, width: int = 640, timeout: float = 2.0) -> Snapshot:
        if not isinstance(width, int) or isinstance(width, bool) or not 8 <= width <= 7680:
            raise ToolFailure("invalid_argument", f"width is a whole number of pixels from 8 to 7680, got {width!r}")
        actor, port = self._port(output, "output")
        if port is None:
            videos = [p for p in actor.outputs.values() if _is_video(p.msg_type)]
            if len(videos) != 1:
                names = ", ".join(n for n, p in actor.outputs.items() if _is_video(p.msg_type)) or "none"
                raise ToolFailure(
                    "not_supported" if not videos else "invalid_argument",
                    f"{actor.path} has {len(videos)} video outputs ({names}): name one as {actor.path}.PORT",
                    actor=actor.path,
                )
            port = videos[0]
        assert isinstance(port, StreamOutput)
        if not _is_video(port.msg_type):
            raise ToolFailure(
                "not_supported", f"{port.path} carries {_type_name(port.msg_type)}, not video frames", actor=actor.path
            )
        tap = self._tap(port)
        deadline = time.monotonic() + timeout
        frame = tap.latest()
        while frame is None:
            if time.monotonic() > deadline or actor.state is not LifecycleState.RUNNING:
                raise ToolFailure(
                    "no_frame",
                    f"no frame arrived on {actor.path}.{port.name} within {timeout:g} s (state {actor.state.value})",
                    actor=actor.path,
                    port=port.name,
                )
            await asyncio.sleep(0.01)
            frame = tap.latest()
        data = getattr(frame, "data", None)
        if not isinstance(data, np.ndarray):
            raise ToolFailure(
                "not_supported",
                f"{actor.path}.{port.name} sends frames whose pixels are not in CPU memory (a GPU output?): "
                "connect it to a Download actor and snapshot that",
                actor=actor.path,
                port=port.name,
            )
        png, w, h = await asyncio.to_thread(_encode, data, width)
        return Snapshot(
            png, w, h, data.shape[1], data.shape[0], frame.frame_number, frame.timestamp, f"{actor.path}.{port.name}"
        )

    def _tap(self, port: StreamOutput) -> Any:
        from streamlib.observe.views import PreviewTap

        for stale in [o for o in self._taps if _owner_ended(o)]:
            self._taps.pop(stale).close()
        tap = self._taps.get(port)
        if tap is None:
            tap = self._taps[port] = PreviewTap(port)
        return tap

    # -- live code -----------------------------------------------------------------------------

    async def set_code(self, actor: str, code: str) -> dict[str, Any]:
        target = self.find(actor)
        if not isinstance(code, str) or not code.strip():
            raise ToolFailure("invalid_argument", "code must be non-empty source text", actor=target.path)
        if hasattr(target, "update_shader"):
            return await self._set_shader(target, code)
        if hasattr(target, "set_code") and hasattr(target, "frames_drawn"):
            return await self._set_drawing(target, code)
        raise ToolFailure(
            "not_supported",
            f"{target.path} is a {type(target).__name__}: live code is for Drawing (Python drawing code) and "
            "ShaderActor (WGSL)",
            actor=target.path,
            class_name=type(target).__name__,
        )

    async def _set_shader(self, target: Any, code: str) -> dict[str, Any]:
        from streamlib.gpu import ShaderCompileError

        try:
            version = await self._on_loop(lambda: target.update_shader(code))
        except ShaderCompileError as exc:
            error = exc.error
            raise ToolFailure(
                "compile_error",
                f"WGSL does not compile: {error.message}; the previous shader keeps running",
                actor=target.path,
                class_name=type(target).__name__,
                line=error.line or None,
                column=error.column or None,
                source_line=error.source_line or None,
            ) from None
        self.logs.add("info", f"new WGSL for {target.path} (version {version})", target.path, "code")
        return {"actor": target.path, "applied": True, "language": "wgsl", "version": version}

    async def _set_drawing(self, target: Any, code: str, verify: float = 1.5) -> dict[str, Any]:
        """Swap the drawing code, then watch the next frames: code that fails on them is
        taken back out (the previous code is restored) and reported with its line."""
        previous = target.code
        before = target.last_error
        try:
            target.set_code(code)
        except SyntaxError as exc:
            raise ToolFailure(
                "compile_error",
                f"{exc.msg}: the drawing code does not compile; the previous code keeps running",
                actor=target.path,
                class_name=type(target).__name__,
                line=exc.lineno,
                column=exc.offset,
                source_line=(exc.text or "").rstrip("\n") or None,
            ) from None
        start = target.frames_drawn
        deadline = time.monotonic() + verify
        while target.frames_drawn < start + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        error = target.last_error
        if (
            error is not None
            and error is not before
            and error.kind == "runtime"
            and (before is None or error.source != before.source)  # not the old code's last frame
        ):
            if previous:
                target.set_code(previous)
            raise ToolFailure(
                "runtime_error",
                f"the drawing code raised {error.exception}: {error.message} on frame {error.frame_number}; "
                "the previous code was put back",
                actor=target.path,
                class_name=type(target).__name__,
                line=error.lineno,
                source_line=error.line.strip() or None,
            )
        self.logs.add("info", f"new drawing code for {target.path}", target.path, "code")
        return {
            "actor": target.path,
            "applied": True,
            "language": "python",
            "verified_frames": target.frames_drawn - start,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    async def stop_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]:
        target = self.find(actor)

        async def stop() -> LifecycleState:
            return await asyncio.wait_for(target.stop(), timeout)

        try:
            state = await self._on_loop(stop)
        except TimeoutError:
            raise ToolFailure(
                "timeout", f"{target.path} did not stop within {timeout:g} s", actor=target.path
            ) from None
        self.logs.add("info", f"stopped {target.path}: {state.value}", target.path, "stopped")
        return {"actor": target.path, "state": state.value, **_failure_of(target)}

    async def restart_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]:
        """Stop the actor, build a fresh instance from its constructor arguments under the same
        parent (a supervisor keeps supervising it), restore its connections and carry over what
        its ``on_restart`` carries (a Drawing's live code, a ShaderActor's shader)."""
        target = self.find(actor)
        path = target.path
        spec = target.spec
        if spec is None:
            raise ToolFailure("not_supported", f"{path} keeps no constructor record to rebuild from", actor=path)
        parent = target.parent
        upstream = [(out, port.name) for port in target.inputs.values() for out in port.upstreams]
        downstream = [
            (name, port)
            for name, out in target.outputs.items()
            for port in out.subscribers
            if isinstance(port.owner, Actor)
        ]

        async def restart() -> Actor:
            await asyncio.wait_for(target.stop(), timeout)
            arguments: dict[str, Any] = {**spec.kwargs, **{k: v for k, v in spec.options.items() if k != "parent"}}
            if parent is not None:
                if parent.state is not LifecycleState.RUNNING:
                    raise ToolFailure("not_supported", f"{path}: its parent {parent.path} has ended", actor=path)
                fresh = parent.spawn(spec.cls, *spec.args, **arguments)
            else:
                fresh = spec.cls(*spec.args, **arguments)
            try:
                fresh.on_restart(target)
            except Exception:
                log.exception("%s: on_restart raised; it starts with its constructor's configuration", path)
            for out, port_name in upstream:
                if port_name in fresh.inputs and not _owner_ended(out):
                    out.connect(fresh.inputs[port_name])
            for out_name, port in downstream:
                if out_name in fresh.outputs and port.owner.state is LifecycleState.RUNNING:
                    fresh.outputs[out_name].connect(port)
            return fresh

        try:
            fresh = await self._on_loop(restart)
        except TimeoutError:
            raise ToolFailure("timeout", f"{path} did not stop within {timeout:g} s", actor=path) from None
        except ActorInitError as exc:
            raise ToolFailure("init_error", f"rebuilding {path} failed: {exc}", actor=path) from None
        self._watch(fresh)
        self.logs.add("info", f"restarted {fresh.path}", fresh.path, "restarted")
        return {
            "actor": fresh.path,
            "state": fresh.state.value,
            "supervised": isinstance(parent, Supervisor),
            "connections": len(upstream) + len(downstream),
        }

    # -- logs ------------------------------------------------------------------------------------

    async def tail_logs(
        self, actor: str | None = None, limit: int = 50, level: str | None = None, since: int = 0
    ) -> dict[str, Any]:
        if level is not None and level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ToolFailure("invalid_argument", f"level is debug, info, warning, error or critical, not {level!r}")
        records = self.logs.tail(limit, actor, level, since)
        return {"records": records, "last_seq": records[-1]["seq"] if records else since}


# -- helpers -----------------------------------------------------------------------------------------


async def _call(fn: Callable[[], Awaitable[_T]]) -> _T:
    return await fn()


def _namespace(number: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {name: getattr(streamlib, name) for name in streamlib.__all__}
    namespace.update(np=np, math=math, streamlib=streamlib, __name__=f"agent_source_{number}")
    return namespace


def _confine(cls: type[Actor], runtime: LocalRuntime) -> None:
    """Make every instance of ``cls`` run on the runtime's sandbox, whatever dispatcher its
    own ``__init__`` passes (set after ``__init__`` returns, before the actor starts). A class
    without an ``__init__`` of its own gets one that wraps the inherited one."""
    original = cls.__init__  # type: ignore[misc]

    def __init__(self: Actor, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.dispatcher = runtime.sandbox

    __init__.__wrapped__ = original  # type: ignore[attr-defined]  # the signature stays the user's
    __init__.__streamlib_confined__ = True  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = __init__  # type: ignore[method-assign]


def _validate_params(entry: dict[str, Any], params: dict[str, Any]) -> None:
    import jsonschema  # type: ignore[import-untyped]  # a dependency of the mcp SDK

    schema = entry.get("parameters", {"type": "object"})
    properties = schema.get("properties", {})
    for key in params:
        if properties.get(key, {}).get("x-json") is False:
            raise ToolFailure(
                "invalid_argument",
                f"{entry['name']}: parameter {key!r} takes a Python object ({properties[key].get('x-python-type')}): "
                "it cannot be given over JSON",
                class_name=entry["name"],
            )
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "params"
        raise ToolFailure(
            "invalid_argument",
            f"{entry['name']}: {where}: {first.message}",
            class_name=entry["name"],
            details={"parameter": where, "schema": first.schema if isinstance(first.schema, dict) else None},
        )


def _line(source: str, line: int | None) -> str | None:
    if not line:
        return None
    lines = source.splitlines()
    return lines[line - 1].rstrip() if 0 < line <= len(lines) else None


def _line_of(defined: _Defined | None, line: int | None) -> str | None:
    if defined is None or not line:
        return None
    return linecache.getline(defined.filename, line).rstrip() or None


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", repr(t))


def _is_video(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, VideoFrame)


def _owner_ended(port: StreamOutput) -> bool:
    owner = port.owner
    return not isinstance(owner, Actor) or owner.state is not LifecycleState.RUNNING


def _dispatcher_name(actor: Actor) -> str:
    dispatcher = actor.dispatcher
    if isinstance(dispatcher, SandboxDispatcher):
        return "sandbox"
    return type(dispatcher).__name__


def _failure_of(actor: Actor) -> dict[str, Any]:
    failure = actor.failure
    if failure is None:
        return {}
    found: dict[str, Any] = {"failure": f"{type(failure).__name__}: {str(failure).splitlines()[0]}"}
    if isinstance(failure, SandboxViolation):
        found["limit"] = failure.limit
    return found


def _describe_actor(actor: Actor) -> dict[str, Any]:
    """One actor for ``get_graph``: its counters (``Actor.stats``, read once), each port with
    its message type, queue figures and peers."""
    counters = actor.stats()
    port_counters: dict[str, Any] = counters.get("inputs", {})
    inputs = {}
    for name, port in list(actor.inputs.items()):
        figures = port_counters.get(name, {})
        inputs[name] = {
            "type": _type_name(port.msg_type),
            **{key: figures[key] for key in _INPUT_FIGURES if key in figures},
            "from": [_peer(up) for up in port.upstreams],
        }
    outputs = {}
    for name, out in list(actor.outputs.items()):
        outputs[name] = {
            "type": _type_name(out.msg_type),
            "sent": out.sent,
            "to": [f"{p.owner.path}.{p.name}" for p in out.subscribers if isinstance(p.owner, Actor)],
        }
    parent = actor.parent
    return {
        "path": actor.path,
        "class": type(actor).__name__,
        "state": actor.state.value,
        "parent": parent.path if parent is not None else None,
        "dispatcher": _dispatcher_name(actor),
        "restarts": actor.restarts,
        "stats": {key: counters[key] for key in _GRAPH_STATS if key in counters},
        "inputs": inputs,
        "outputs": outputs,
        **_failure_of(actor),
    }


def _peer(output: StreamOutput) -> str:
    owner = output.owner
    return f"{owner.path}.{output.name}" if isinstance(owner, Actor) else output.path


_INPUT_FIGURES = ("queued", "capacity", "received", "dropped")
_GRAPH_STATS = ("ticks", "skipped_ticks", "messages_in", "messages_out", "dropped", "profile")


def _encode(data: np.ndarray, width: int) -> tuple[bytes, int, int]:
    """Scale ``data`` to ``width`` (aspect kept; never up) and encode it as PNG."""
    from streamlib.observe.views import encode_png

    h, w = data.shape[:2]
    if width < w:
        height = max(round(h * width / w), 1)
        try:
            import cv2

            scaled = cv2.resize(np.ascontiguousarray(data), (width, height), interpolation=cv2.INTER_AREA)
        except ImportError:  # pragma: no cover - nearest neighbour without OpenCV
            rows = (np.arange(height) * h // height)[:, None]
            cols = (np.arange(width) * w // width)[None, :]
            scaled = data[rows, cols]
    else:
        scaled = data
    return encode_png(scaled, compression=1), scaled.shape[1], scaled.shape[0]
