"""Serving a runtime: make this process's actors reachable from other processes and hosts.

:func:`serve` starts, in the current process, a control port (aiohttp WebSockets, see
:mod:`.control`) and a data port (:mod:`.link`), and returns the :class:`Node`. From then on
``actor.uri`` of every actor here is ``actor://HOST:PORT/ClassName/instance-id`` and other
runtimes can look actors up, create them (:func:`streamlib.remote.get_actor`), stop them,
read their stats and wire them with ``>>``. ``streamlib node --listen HOST:PORT`` runs the
same as a program.

Security: a node listens on 127.0.0.1 unless told otherwise, and refuses to listen anywhere
else without a token. With a token, every control and data connection must answer an HMAC
challenge; wrong or missing tokens are refused and counted (``node.counters``), as is every
malformed message, and none of them can stop the runtime.

Clusters build on this: :func:`serve` is the one function that starts a served runtime in
the current process and returns its address (``node.address``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import streamlib
from streamlib import Actor, StreamInput
from streamlib.actor import set_runtime_address
from streamlib.eventloop import background_loop
from streamlib.listening import check_listen_address

from . import wire
from .control import ControlServer, ServerConnection, background, decode_args, network_loop
from .link import DataServer, LinkStats, PortOwner, PushLink, SendableMailbox, host_id
from .registry import Receptionist, RegistryEvent
from .uri import parse_address, parse_uri

__all__ = ["Node", "add_node_command", "describe_actor", "resolve_actor_class", "serve"]

log = logging.getLogger("streamlib.remote")

_current: Node | None = None


def current_node() -> Node | None:
    """The runtime this process serves, if any."""
    return _current


async def _joined(actor: Actor) -> None:
    await actor.join()


def describe_actor(actor: Actor) -> dict[str, Any]:
    """What a stub needs to stand in for ``actor``: its names, class, state and ports."""
    return {
        "id": actor.path[1:],
        "path": actor.path,
        "class": type(actor).__name__,
        "qualname": f"{type(actor).__module__}.{type(actor).__qualname__}",
        "uri": actor.uri,
        "state": actor.state.value,
        "inputs": {
            name: {
                "type": wire.describe_type(port.msg_type),
                "maxsize": port.mailbox.maxsize,
                "overflow": port.mailbox.overflow,
                "memory": port.memory,
            }
            for name, port in list(actor.inputs.items())
        },
        "outputs": {
            name: {"type": wire.describe_type(port.msg_type), "memory": port.memory}
            for name, port in list(actor.outputs.items())
        },
    }


def _all_actor_classes() -> list[type[Actor]]:
    found: list[type[Actor]] = []
    stack: list[type[Actor]] = [Actor]  # type: ignore[type-abstract]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def resolve_actor_class(name: str) -> type[Actor]:
    """The actor class a URI names: ``module.Class`` (imported), or a plain class name among the
    actor classes this process has imported and the ready actors of :mod:`streamlib.actors`."""
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        try:
            found: Any = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise LookupError(f"cannot import actor class {name!r}: {exc}") from None
    else:
        matches = [c for c in _all_actor_classes() if c.__name__ == name and not c.__name__.startswith("_")]
        if not matches:
            from streamlib import actors

            if name in getattr(actors, "__all__", ()):
                matches = [getattr(actors, name)]
        if len(matches) > 1:
            names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in matches))
            raise LookupError(f"actor class {name!r} is ambiguous here ({names}): name it with its module")
        if not matches:
            raise LookupError(
                f"this runtime knows no actor class {name!r}: name it module.Class so it can be imported, or "
                "start the runtime with --import MODULE"
            )
        found = matches[0]
    if not (isinstance(found, type) and issubclass(found, Actor)):
        raise LookupError(f"{name!r} is not an actor class")
    return found


class Node:
    """A served runtime (see the module docstring). Build it with :func:`serve`."""

    def __init__(
        self,
        name: str,
        token: str | None,
        actor_loop: asyncio.AbstractEventLoop,
        allow_shm: bool = True,
        max_payload: int = wire.MAX_PAYLOAD,
    ) -> None:
        self.name = name
        self.token = token
        self.actor_loop = actor_loop
        self.loop = network_loop()
        self.allow_shm = allow_shm
        self.max_payload = max_payload
        self.counters: dict[str, int] = {"auth_rejected": 0, "malformed": 0, "control_connections": 0}
        self.receptionist = Receptionist(self.loop)
        self.data = DataServer(self, host_id())
        self.outgoing: dict[tuple[str, str, str, str], tuple[StreamInput, PushLink]] = {}
        self.host = ""
        self.port = 0
        self.data_port = 0
        self.address = ""
        self._runner: web.AppRunner | None = None
        self.control: ControlServer | None = None

    # -- life ---------------------------------------------------------------------------

    async def _start(self, host: str, port: int, data_port: int, advertise: str | None) -> None:
        self.data_port = await self.data.start(host, data_port)
        self.control = ControlServer(
            {
                "ping": self._ping,
                "describe": self._describe,
                "ensure": self._ensure,
                "stats": self._stats,
                "stop": self._stop,
                "connect": self._connect,
                "disconnect": self._disconnect,
                "watch": self._watch,
                "list": self._list,
                "node": self._node_stats,
            },
            self.token,
            {"node": self.name, "version": wire.VERSION, "data_port": self.data_port, "host_id": self.data.host_id},
            self.counters,
        )
        app = web.Application(client_max_size=1 << 20)
        self.control.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self.host = advertise or (host if host not in ("0.0.0.0", "::", "") else socket.gethostname())
        self.address = f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def close(self) -> None:
        """Stop serving (the actors keep running in this process)."""
        global _current
        future = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
        with contextlib.suppress(Exception):
            future.result(5.0)
        if _current is self:
            _current = None
            set_runtime_address(None)

    async def _close(self) -> None:
        for _, link in list(self.outgoing.values()):
            await link.close()
        await self.data.close()
        if self.control is not None:
            closing = [conn.ws.close(code=1001, message=b"runtime closing") for conn in self.control.connections]
            if closing:
                await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=0.5)
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Node {self.name} actor://{self.address} data_port={self.data_port}>"

    def add_operation(self, op: str, handler: Callable[[dict[str, Any], memoryview], Awaitable[Any]]) -> None:
        """Answer the control request ``op`` with ``await handler(request, payload)`` (on the
        network loop; its JSON-ready result is the reply, an exception an error reply naming
        its type). How a layer above offers more than the built-in requests -- the agent tools
        (:func:`streamlib.agents.remote.serve_agent_tools`) -- without this layer knowing it."""
        if self.control is None:
            raise RuntimeError("the node is not serving yet")
        if op in self.control.handlers:
            raise ValueError(f"this runtime already answers {op!r}")

        async def answer(request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
            return await handler(request, payload)

        self.control.handlers[op] = answer

    # -- what the control plane asks ---------------------------------------------------

    def lookup(self, instance_id: str) -> Actor | None:
        return self.receptionist.lookup(instance_id)

    def _actor(self, request: dict[str, Any]) -> Actor:
        instance_id = request.get("target")
        if not isinstance(instance_id, str) or not instance_id:
            raise wire.WireError("the request needs a 'target' instance id")
        actor = self.lookup(instance_id)
        if actor is None:
            raise LookupError(f"no running actor {instance_id!r} on runtime {self.name} ({self.address})")
        return actor

    async def _ping(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        return None

    async def _describe(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        return describe_actor(self._actor(request))

    async def _stats(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        actor = self._actor(request)
        found = actor.stats(recursive=bool(request.get("recursive")))
        found["uri"] = actor.uri
        return found

    async def _list(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        return self.receptionist.names()

    async def _node_stats(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        return self.stats()

    def link_objects(self) -> dict[str, LinkStats]:
        """Every data link this runtime serves or opened, by a readable name."""
        links = {f"link {k} ({v.peer})": v for k, v in list(self.data.links.items())}
        for (path, out, target, inp), (_, link) in list(self.outgoing.items()):
            links[f"/{path}.outputs[{out!r}] >> {target}.inputs[{inp!r}]"] = link.stats
        return links

    def stats(self) -> dict[str, Any]:
        """The runtime's counters (refused tokens, malformed input) and its links."""
        links = {name: stats.as_dict() for name, stats in self.link_objects().items()}
        return {
            "name": self.name,
            "address": self.address,
            "data_port": self.data_port,
            **self.counters,
            "links": links,
        }

    async def _ensure(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        """Get-or-create: the actor with that id, else a new one of that class with those arguments."""
        class_name, instance_id = request.get("class"), request.get("target")
        if not isinstance(class_name, str) or not isinstance(instance_id, str) or not instance_id:
            raise wire.WireError("ensure needs 'class' and 'target'")
        parse_uri(f"actor://{self.address}/{class_name}/{instance_id}")  # validates both
        existing = self.lookup(instance_id)
        if existing is not None and existing.stopping:  # on its way out: wait, then create afresh
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.ensure_future(_joined(existing)), 5.0)
            existing = self.lookup(instance_id)
        if existing is not None:
            kind = type(existing)
            if class_name not in (kind.__name__, f"{kind.__module__}.{kind.__qualname__}"):
                raise LookupError(
                    f"{existing.path} on runtime {self.name} is a {kind.__name__}, not a {class_name}: "
                    f"its URI is {existing.uri}"
                )
            return {**describe_actor(existing), "created": False}
        cls = resolve_actor_class(class_name)
        args, kwargs = decode_args(request.get("args", {}), payload)
        parent_path, _, name = instance_id.rpartition("/")

        async def make() -> Actor:
            parent = self.lookup(parent_path) if parent_path else None
            if parent_path and parent is None:
                raise LookupError(f"no running actor {parent_path!r} to be the parent of {instance_id!r}")
            existing = self.lookup(instance_id)  # created meanwhile by another request
            if existing is not None:
                return existing
            if parent is not None:
                return parent.spawn(cls, *args, name=name, **kwargs)
            return cls(*args, name=name, **kwargs)

        actor = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), self.actor_loop))
        if actor.path[1:] != instance_id:
            actor.stop()
            raise LookupError(f"the name {instance_id!r} is taken on runtime {self.name}")
        self.receptionist.register(actor)
        return {**describe_actor(actor), "created": True}

    async def _stop(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        actor = self._actor(request)
        completion = actor.stop()
        if request.get("wait"):
            timeout = request.get("deadline", 10.0)
            if not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
                raise wire.WireError("bad timeout")
            await asyncio.wait_for(completion, float(timeout))  # type: ignore[arg-type]
        return {"state": actor.state.value}

    async def _watch(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        instance_id = request.get("target")
        if not isinstance(instance_id, str):
            raise wire.WireError("watch needs a 'target'")

        def forward(event: RegistryEvent) -> None:
            if event.instance_id == instance_id:
                background(conn.push(event.as_dict()))

        conn.cleanups.append(self.receptionist.subscribe(forward))
        actor = self.lookup(instance_id)
        if actor is not None:
            self.receptionist.register(actor)  # watched: its end must be announced
            return {"state": actor.state.value}
        return {"state": "absent"}

    async def _connect(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        """``this runtime's output >> another runtime's input`` (or one of ours)."""
        actor = self._actor(request)
        out_name, target_uri, in_name = request.get("output"), request.get("to"), request.get("input")
        maxsize, overflow = request.get("maxsize"), request.get("overflow")
        if not (isinstance(out_name, str) and isinstance(target_uri, str) and isinstance(in_name, str)):
            raise wire.WireError("connect needs 'output', 'to' and 'input'")
        output = actor.outputs.get(out_name)
        if output is None:
            raise LookupError(f"{actor.path} has no output {out_name!r} (it has {sorted(actor.outputs)})")
        target = parse_uri(target_uri)
        if target.address == self.address:
            local = self.lookup(target.instance_id)
            if local is None or in_name not in local.inputs:
                raise LookupError(f"no input {in_name!r} on {target_uri}")
            output >> local.inputs[in_name]
            return {"local": True}
        if (
            type(maxsize) is not int
            or not 0 < maxsize <= 1 << 16
            or overflow not in ("drop_oldest", "drop_newest", "block")
        ):
            raise wire.WireError("connect to another runtime needs the input's maxsize and overflow")
        key = (actor.path[1:], out_name, str(target), in_name)
        if key in self.outgoing:
            return {"local": False}
        token = request.get("token")
        endpoint = PortOwner(str(target))
        proxy = StreamInput(in_name, object, maxsize=maxsize, overflow=overflow)
        proxy.mailbox = SendableMailbox(maxsize, overflow, f"{target}.inputs[{in_name!r}]")
        proxy.owner = endpoint  # type: ignore[assignment]
        link = PushLink(
            proxy,
            target.address,
            token if isinstance(token, str) else self.token,
            target.instance_id,
            in_name,
            source=str(actor.uri),
            max_payload=self.max_payload,
            shm=self.allow_shm,
            compress="h264" if request.get("compress") == "h264" else None,
        )
        self.outgoing[key] = (proxy, link)
        output.connect(proxy)
        link.start()
        return {"local": False}

    async def _disconnect(self, request: dict[str, Any], payload: memoryview, conn: ServerConnection) -> Any:
        actor = self._actor(request)
        out_name, target_uri, in_name = request.get("output"), request.get("to"), request.get("input")
        if not (isinstance(out_name, str) and isinstance(target_uri, str) and isinstance(in_name, str)):
            raise wire.WireError("disconnect needs 'output', 'to' and 'input'")
        target = parse_uri(target_uri)
        output = actor.outputs.get(out_name)
        if output is None:
            raise LookupError(f"{actor.path} has no output {out_name!r}")
        if target.address == self.address:
            local = self.lookup(target.instance_id)
            if local is not None and in_name in local.inputs:
                output.disconnect(local.inputs[in_name])
            return None
        found = self.outgoing.pop((actor.path[1:], out_name, str(target), in_name), None)
        if found is not None:
            proxy, _ = found
            output.disconnect(proxy)
            proxy.mailbox.close()  # the sender says BYE once the queue is drained
        return None


def serve(
    host: str = "127.0.0.1",
    port: int = 7400,
    name: str | None = None,
    token: str | None = None,
    *,
    data_port: int = 0,
    advertise: str | None = None,
    shared_memory: bool = True,
    max_payload: int = wire.MAX_PAYLOAD,
) -> Node:
    """Serve this process's runtime at ``host:port`` and return the :class:`Node`.

    ``port=0`` picks a free port (``node.address`` says which). ``data_port`` is where links
    connect (default: a free port, announced to peers on the control connection). ``advertise``
    is the host other runtimes should use when ``host`` is a wildcard. Any ``host`` but a
    loopback address needs a ``token`` (:class:`streamlib.listening.ListenRefused` otherwise).
    ``shared_memory=False`` sends every frame over TCP even
    to a runtime on the same host. One served runtime per process."""
    global _current
    check_listen_address(host, token, f"runtime {name or socket.gethostname()}")
    if _current is not None:
        raise RuntimeError(f"this process already serves its runtime at {_current.address}; close() it first")
    running = asyncio._get_running_loop()
    actor_loop = running if running is not None else background_loop()
    node = Node(name or socket.gethostname(), token, actor_loop, shared_memory, max_payload)
    asyncio.run_coroutine_threadsafe(node._start(host, port, data_port, advertise), node.loop).result(10.0)
    _current = node
    set_runtime_address(node.address)
    log.info("runtime %s served at actor://%s (data port %d)", node.name, node.address, node.data_port)
    return node


# -- the ``streamlib node`` command -------------------------------------------------------------


def add_node_command(subparsers: Any) -> None:
    """Add ``streamlib node --listen HOST:PORT [--name N] [--token-file F]`` to the CLI."""
    node = subparsers.add_parser(
        "node",
        help="serve a runtime that other processes and hosts can address (actor://HOST:PORT/...)",
        description="Serve a streamlib runtime until SIGINT/SIGTERM. Peers create and reach its actors with "
        "streamlib.get_actor('actor://HOST:PORT/ClassName/instance-id').",
    )
    node.add_argument(
        "--listen",
        default="127.0.0.1:7400",
        metavar="HOST:PORT",
        help="control address (default 127.0.0.1:7400; port 0 picks one)",
    )
    node.add_argument("--name", help="the runtime's name (default: the host name)")
    node.add_argument("--token-file", type=Path, help="file whose first line is the shared token")
    node.add_argument("--data-port", type=int, default=0, help="data link port (default: any free port)")
    node.add_argument("--advertise", help="host to announce when listening on a wildcard address")
    node.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so its actor classes can be created by name (repeatable)",
    )
    node.add_argument("--no-shared-memory", action="store_true", help="send every frame over TCP")
    node.add_argument(
        "--agents",
        action="store_true",
        help="also answer the agent tools, so 'streamlib mcp --connect actor://HOST:PORT' can drive this runtime "
        "(agent-defined actors run sandboxed)",
    )
    node.add_argument("--log-level", default="INFO")
    node.set_defaults(run=run_node)


def run_node(args: argparse.Namespace) -> int:
    """``streamlib node``: serve until SIGINT or SIGTERM, then stop every actor."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_address(args.listen.replace(":0", ":1") if args.listen.endswith(":0") else args.listen)
        port = 0 if args.listen.endswith(":0") else port
        token = args.token_file.read_text().splitlines()[0].strip() if args.token_file else None
        for module in args.imports:
            importlib.import_module(module)
        node = serve(
            host,
            port,
            args.name,
            token,
            data_port=args.data_port,
            advertise=args.advertise,
            shared_memory=not args.no_shared_memory,
        )
    except (ValueError, OSError, ImportError, IndexError) as exc:
        print(f"streamlib node: {exc}", file=sys.stderr)
        return 2
    tools = None
    if args.agents:
        from streamlib.agents.remote import serve_agent_tools  # the layer above, only when asked

        tools = serve_agent_tools(node)
    print(f"streamlib node {node.name} listening on actor://{node.address} (data port {node.data_port})", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.1):
        pass
    for actor in streamlib.running_actors():
        actor.stop()
    for actor in streamlib.running_actors():
        with contextlib.suppress(Exception):
            actor.join().wait(5.0)
    if tools is not None:
        tools.close()
    node.close()
    return 0
