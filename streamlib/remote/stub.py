"""A stub: a local actor that stands in for an actor of another runtime.

:class:`RemoteActor` has what an actor has -- ``inputs``, ``outputs``, ``state``, ``path``,
``uri``, ``stats()``, ``stop()`` (awaitable and waitable), a ``repr`` -- and works with ``>>``
in all four forms, in both directions: ``remote >> local``, ``local >> remote``, and
``remote_a >> remote_b`` between two other runtimes (those two then link directly; nothing
passes through this process). Type checks happen at ``>>`` as they do locally, with the same
error texts; the ports are named after the remote actor's URI.

Its ports are local *proxies*: a stub input is a mailbox with the remote input's own
``maxsize`` and ``overflow`` that a :class:`~.link.PushLink` drains to the remote input; a stub
output is fed by a :class:`~.link.PullLink` from the remote output.

A stub is a real actor of this process (it appears in ``streamlib.tree()`` and the graph with
its URI) and its life follows the remote actor's: it stops when that one ends (by end of stream
when that one did), and it *fails* with :class:`~.errors.ActorUnavailable` when the remote
actor fails or its runtime is unreachable for :data:`~.control.DEAD_AFTER` seconds
(heartbeats). Under a supervisor that is a child failure like any other: the restarted stub
re-creates the actor on its runtime when it is back (waiting up to ``restart_wait`` seconds),
keeps its proxies (so local wiring survives), and its data links reconnect by themselves.

Calls never hang: ``stats()`` and the rest time out after ``call_timeout`` seconds with
:class:`~.errors.ActorUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from streamlib import Actor, Cause, Completion, StreamInput, StreamOutput, TimedTick
from streamlib.actor import runtime_address

from . import wire
from .control import CALL_TIMEOUT, ControlClient, background, client_for, encode_args, network_loop, run_sync
from .errors import ActorUnavailable, RemoteError
from .link import LinkStats, PullLink, PushLink, SendableMailbox
from .uri import ActorURI, parse_address, parse_uri

__all__ = ["RemoteActor", "get_actor", "spawn_remote"]

log = logging.getLogger("streamlib.remote")

_descriptions: dict[str, dict[str, Any]] = {}


def _type_name(t: Any) -> str:
    return getattr(t, "__qualname__", repr(t))


class _Endpoint:
    """Owns a stub's proxy ports and their links; outlives the stub's restarts."""

    def __init__(self, uri: ActorURI, client: ControlClient, shared_memory: bool, compress: str | None) -> None:
        self.compress = compress
        self.uri = uri
        self.path = str(uri)
        self.client = client
        self.shared_memory = shared_memory
        self.stub: RemoteActor | None = None
        self.push: dict[StreamInput, PushLink] = {}
        self.pull: dict[StreamOutput, PullLink] = {}
        self.remote_targets: dict[tuple[str, str, str], None] = {}  # (output, target uri, input)

    # the port-owner protocol (see streamlib.ports)
    def _wiring_changed(self) -> None:
        loop = network_loop()
        loop.call_soon_threadsafe(self._sync_push_links)

    def _reader_should_stop(self) -> bool:
        return False

    async def retarget(self, uri: ActorURI, client: ControlClient) -> None:
        """Point every link at the same actor on another runtime (a restart moved it there)."""
        links: list[PushLink | PullLink] = [*self.push.values(), *self.pull.values()]
        outputs = list(self.pull)
        self.push.clear()
        self.pull.clear()
        for link in links:
            await link.close()
        self.uri, self.path, self.client = uri, str(uri), client
        self._sync_push_links()
        for output in outputs:
            self.ensure_pull(output)

    def _source(self) -> str:
        return f"{runtime_address() or 'client'}{self.stub.path if self.stub is not None else ''}"

    def _sync_push_links(self) -> None:
        stub = self.stub
        if stub is None:
            return
        for name, port in list(stub.inputs.items()):
            if port.connected and port not in self.push and not port.mailbox.closed:
                link = PushLink(
                    port,
                    self.uri.address,
                    self.client.token,
                    self.uri.instance_id,
                    name,
                    source=self._source(),
                    shm=self.shared_memory,
                    compress=self.compress,
                )
                self.push[port] = link
                link.start()

    def ensure_pull(self, output: StreamOutput) -> None:
        """(Re)open the link feeding ``output`` with the policy its local subscribers want."""
        subscribers = output.subscribers
        if not subscribers:
            return
        blocking = any(p.mailbox.blocking for p in subscribers)
        maxsize = max(p.mailbox.maxsize for p in subscribers)
        overflow = "block" if blocking else "drop_oldest"

        def sync() -> None:
            current = self.pull.get(output)
            if current is not None and (current.maxsize, current.overflow) == (maxsize, overflow):
                return
            if current is not None:
                background(current.close())
            link = PullLink(
                output,
                self.uri.address,
                self.client.token,
                self.uri.instance_id,
                output.name,
                maxsize,
                overflow,
                source=self._source(),
                shm=self.shared_memory,
                compress=self.compress,
            )
            self.pull[output] = link
            link.start()

        network_loop().call_soon_threadsafe(sync)

    def drop_pull(self, output: StreamOutput) -> None:
        def close() -> None:
            link = self.pull.pop(output, None)
            if link is not None:
                background(link.close())

        network_loop().call_soon_threadsafe(close)

    def link_objects(self) -> dict[str, LinkStats]:
        found: dict[str, LinkStats] = {}
        for port, push in list(self.push.items()):
            found[f"inputs[{port.name!r}]"] = push.stats
        for out, pull in list(self.pull.items()):
            found[f"outputs[{out.name!r}]"] = pull.stats
        return found

    def link_stats(self) -> dict[str, Any]:
        return {name: stats.as_dict() for name, stats in self.link_objects().items()}


class RemoteOutput(StreamOutput):
    """A stub's output: local subscribers are fed by a pull link; a subscriber that is itself
    another stub's input is linked runtime to runtime (asked of this output's runtime)."""

    __slots__ = ("endpoint",)

    def __init__(self, name: str, msg_type: Any, endpoint: _Endpoint) -> None:
        super().__init__(name, msg_type)
        self.endpoint = endpoint

    def connect(self, port: StreamInput) -> StreamInput:
        owner = port.owner if isinstance(port, StreamInput) else None
        if not isinstance(owner, _Endpoint):
            super().connect(port)
            self.endpoint.ensure_pull(self)
            return port
        if not (port.msg_type is object or self.msg_type is object or issubclass(self.msg_type, port.msg_type)):
            raise TypeError(
                f"cannot connect {self.path} ({_type_name(self.msg_type)}) >> {port.path} "
                f"({_type_name(port.msg_type)}): incompatible message types"
            )
        key = (self.name, owner.path, port.name)
        if key not in self.endpoint.remote_targets:
            mailbox = port.mailbox
            self.endpoint.client.call_sync(
                "connect",
                CALL_TIMEOUT,
                target=self.endpoint.uri.instance_id,
                output=self.name,
                to=owner.path,
                input=port.name,
                maxsize=mailbox.maxsize,
                overflow=mailbox.overflow,
                token=owner.client.token,
                compress=owner.compress,
            )
            self.endpoint.remote_targets[key] = None
        return port

    def disconnect(self, port: StreamInput | None = None) -> None:
        owner = port.owner if port is not None else None
        if port is not None and isinstance(owner, _Endpoint):
            key = (self.name, owner.path, port.name)
            if self.endpoint.remote_targets.pop(key, "absent") is None:
                self.endpoint.client.call_sync(
                    "disconnect",
                    CALL_TIMEOUT,
                    target=self.endpoint.uri.instance_id,
                    output=self.name,
                    to=owner.path,
                    input=port.name,
                )
            return
        super().disconnect(port)
        if self.subscribers:
            self.endpoint.ensure_pull(self)
        else:
            self.endpoint.drop_pull(self)

    def end_of_stream(self) -> None:
        """The stub ended for good: its link closes, and local subscribers hear end of stream."""
        self.endpoint.drop_pull(self)
        super().end_of_stream()


class RemoteActor(Actor):
    """A stub for the actor at ``uri`` (see the module docstring), created there if it does not
    exist yet, with ``*args, **kwargs`` (values the wire format can carry).

    ``token`` authenticates to that runtime (default ``$STREAMLIB_TOKEN``); ``call_timeout``
    bounds every call; ``restart_wait`` is how long a restarted stub waits for the runtime to
    come back before failing again; ``shared_memory=False`` keeps frames on TCP even on one host.
    ``fail_when_unreachable`` (default: when supervised) makes a lost runtime fail the stub, so
    its supervisor's strategy applies; otherwise the stub waits, its calls raise
    :class:`ActorUnavailable` meanwhile, and its links reconnect when the runtime is back.
    Usually built by :func:`get_actor` or :func:`spawn_remote`."""

    default_fps: ClassVar[float | None] = None  # a stub never ticks: its links and heartbeats run apart

    def __init__(
        self,
        uri: str | ActorURI,
        *args: Any,
        token: str | None = None,
        call_timeout: float = CALL_TIMEOUT,
        restart_wait: float = 10.0,
        shared_memory: bool = True,
        fail_when_unreachable: bool | None = None,
        fallbacks: Sequence[str] = (),
        compress: str | None = None,
        **kwargs: Any,
    ) -> None:
        target = parse_uri(uri)
        if compress not in (None, "h264"):
            raise ValueError(f"compress must be None or 'h264', got {compress!r}")
        super().__init__()
        self._target = target
        self._args = args
        self._kwargs = kwargs
        self._timeout = call_timeout
        self._restart_wait = restart_wait
        self._fallbacks = [parse_address(a) for a in fallbacks]
        self._fail_unreachable = self.parent is not None if fail_when_unreachable is None else fail_when_unreachable
        self._client = client_for(target.address, token)
        self._stop_remote = False
        self._ended: dict[str, Any] | None = None
        self._unreachable_since: float | None = None
        description = _descriptions.get(str(target))
        if description is None:
            description = self._ensure_sync()
        self._description = description
        self._endpoint = _Endpoint(target, self._client, shared_memory, compress)
        self._endpoint.stub = self
        for name, spec in description.get("inputs", {}).items():
            port = StreamInput(
                name,
                wire.port_type(spec.get("type")),
                maxsize=int(spec.get("maxsize", 2)),
                overflow=spec.get("overflow", "drop_oldest"),
            )
            port.mailbox = SendableMailbox(port.mailbox.maxsize, port.mailbox.overflow, f"{target}.inputs[{name!r}]")
            self.inputs[name] = port
            port.owner = self._endpoint  # type: ignore[assignment]
        for name, spec in description.get("outputs", {}).items():
            out = RemoteOutput(name, wire.port_type(spec.get("type")), self._endpoint)
            self.outputs[name] = out
            out.owner = self._endpoint  # type: ignore[assignment]

    def _ensure_sync(self) -> dict[str, Any]:
        try:
            description: dict[str, Any] = run_sync(self._ensure(self._timeout), self._timeout + 0.5)
        except RemoteError as exc:
            raise LookupError(f"{self._target}: {exc}") from None
        return description

    async def _ensure(self, timeout: float) -> dict[str, Any]:
        """Get-or-create the remote actor (on the network loop)."""
        value, payload = encode_args(self._args, self._kwargs)
        description: dict[str, Any] = await self._client.call(
            "ensure",
            timeout,
            payload,
            target=self._target.instance_id,
            **{"class": self._target.class_name},
            args=value,
        )
        _descriptions[str(self._target)] = description
        return description

    # -- life ----------------------------------------------------------------------------

    def on_restart(self, previous: Actor) -> None:
        """Take over the previous stub's proxies and links (its wiring survives the restart)."""
        assert isinstance(previous, RemoteActor)
        self._endpoint = previous._endpoint
        self._endpoint.stub = self
        for port in [*self.inputs.values(), *self.outputs.values()]:
            port.owner = self._endpoint

    async def on_start(self) -> None:
        loop = network_loop()
        deadline = time.monotonic() + (self._restart_wait if self.restarts else self._timeout)
        while True:
            try:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._attach(), loop))
                return
            except ActorUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _attach(self) -> None:
        """Get-or-create the remote actor (on the network loop): on its own runtime, or (a restart
        whose runtime does not answer) on the first fallback runtime that does."""
        if not self.restarts or not self._fallbacks:
            await self._ensure(self._timeout)
        else:
            candidates = [self._target] + [
                ActorURI(host, port, self._target.class_name, self._target.instance_id)
                for host, port in self._fallbacks
                if (host, port) != (self._target.host, self._target.port)
            ]
            for i, target in enumerate(candidates):
                client = client_for(target.address, self._client.token)
                try:
                    await client.ensure_connected(min(self._timeout, 1.0))
                except ActorUnavailable:
                    if i == len(candidates) - 1:
                        raise
                    continue
                if target != self._target:
                    log.warning(
                        "%s: runtime %s does not answer; moving to %s", self.path, self._target.address, target.address
                    )
                    self._target, self._client = target, client
                    await self._endpoint.retarget(target, client)
                await self._ensure(self._timeout)
                break
        self._client.on_status(self._on_status)
        await self._client.watch(self._target.instance_id, self._on_event)
        if self.restarts:
            self._endpoint._sync_push_links()

    def _on_status(self, up: bool) -> None:
        """The runtime became (un)reachable (heartbeats; on the network loop)."""
        self._unreachable_since = None if up else time.monotonic()
        if not up and self._fail_unreachable:
            target = self._target

            async def fail() -> None:
                raise ActorUnavailable(f"{target} is unreachable: its runtime {target.address} missed its heartbeats")

            self.run_between_ticks(fail)

    def _on_event(self, event: dict[str, Any]) -> None:
        """The remote actor ended: fail with it, or end as it did (on the network loop)."""
        if event.get("kind") != "ended" or self._ended is not None:
            return
        self._ended = event
        target = self._target

        async def follow() -> None:
            if event.get("state") == "failed":
                raise ActorUnavailable(f"{target} failed on its runtime: {event.get('failure')}")
            self.stop(cause=Cause.END_OF_STREAM)  # it finished there: finish here, not to be restarted

        self.run_between_ticks(follow)

    async def process(self, tick: TimedTick) -> None:
        """Never called: a stub has no clock and its proxies are drained by its links."""

    async def on_stop(self) -> None:
        loop = network_loop()
        self._client.unwatch(self._target.instance_id, self._on_event)
        with contextlib.suppress(ValueError):
            self._client._status_listeners.remove(self._on_status)
        parent = self.parent
        if (self._stop_remote or (parent is not None and parent.stopping)) and self._ended is None:
            call = self._client.call(
                "stop", self._timeout, target=self._target.instance_id, wait=True, deadline=self._timeout
            )
            with contextlib.suppress(ActorUnavailable, RemoteError):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, loop))

    def on_end_of_stream(self) -> None:
        """A stub ends with its remote actor, not when its local upstreams end (their end of
        stream is forwarded over the link)."""

    def stop(self, *, cause: Cause | None = None) -> Completion:
        """Stop the remote actor, then this stub: ``await stub.stop()`` (or ``.wait()``) returns
        once the remote actor has stopped (or could not be reached in ``call_timeout``). A stub
        that ends for another reason (its process exits, its remote actor ended) leaves the
        remote actor alone; a supervisor's ``cause=Cause.RESTART`` stops it to build it anew."""
        if cause in (None, Cause.STOP, Cause.RESTART):
            self._stop_remote = True
        return super().stop(cause=cause)

    # -- what an actor shows ---------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The remote actor's URI."""
        return str(self._target)

    def link_objects(self) -> dict[str, LinkStats]:
        """This stub's data links' live counters, by the port they serve."""
        return self._endpoint.link_objects()

    @property
    def remote_class(self) -> str:
        return str(self._description.get("class", self._target.class_name))

    def call(self, op: str, **fields: Any) -> Any:
        """A control request about the remote actor (``"stats"``, ``"describe"`` ...), from any
        thread; raises :class:`ActorUnavailable` after ``call_timeout`` seconds."""
        if self._unreachable_since is not None and not self._client.available:
            raise ActorUnavailable(f"{self._target} is unreachable (its runtime missed its heartbeats)")
        return self._client.call_sync(op, self._timeout, target=self._target.instance_id, **fields)

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        """The remote actor's stats, with ``uri``, this stub's ``path`` and its data links
        (bytes, frames, drops, latency, reconnects); :class:`ActorUnavailable` while the runtime
        is unreachable. Once the stub has ended, its local view (``available: False``)."""
        links = self._endpoint.link_stats()
        if self.state.value == "running":
            try:
                found: dict[str, Any] = self.call("stats")
            except RemoteError as exc:
                raise ActorUnavailable(f"{self._target}: {exc}") from None
            found["remote_path"] = found.get("path")
            found.update(
                path=self.path,
                name=self.name,
                uri=self.uri,
                available=True,
                links=links,
                restarts=self.restarts,
                **{"class": f"{self.remote_class} @ {self.uri}"},
            )
            if recursive:
                found["children"] = []
            return found
        found = super().stats(recursive=recursive)
        found.update(uri=self.uri, available=False, links=links, **{"class": f"{self.remote_class} @ {self.uri}"})
        return found

    def __repr__(self) -> str:
        ins = ", ".join(
            f"{n}[{len(p.mailbox)}/{p.mailbox.maxsize} {p.mailbox.overflow}]" for n, p in self.inputs.items()
        )
        outs = ", ".join(f"{n}[→{len(p.subscribers)}]" for n, p in self.outputs.items())
        return f"<RemoteActor {self.uri} as {self.path} {self.state.name} in: {ins or '-'} out: {outs or '-'}>"

    def __floordiv__(self, other: Any) -> None:
        """``stub // other`` removes the connections, runtime-to-runtime ones included."""
        for out in self.outputs.values():
            targets = [other] if isinstance(other, StreamInput) else list(getattr(other, "inputs", {}).values())
            for port in targets:
                if isinstance(port.owner, _Endpoint) or port in out.subscribers:
                    out.disconnect(port)


def get_actor(uri: str | ActorURI, *args: Any, **kwargs: Any) -> Actor:
    """The actor at ``uri``, created on its runtime with ``*args, **kwargs`` if it does not
    exist yet (get-or-create). For this process's own address, the actor object itself;
    otherwise a :class:`RemoteActor` stub (``token=``, ``call_timeout=``, ``shared_memory=``
    configure it)."""
    target = parse_uri(uri)
    if target.address == runtime_address():
        return _local_actor(target, args, kwargs)
    kwargs.setdefault("name", target.name)
    return RemoteActor(target, *args, **kwargs)


def _local_actor(target: ActorURI, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Actor:
    from .node import current_node, resolve_actor_class
    from .registry import find_actor

    node = current_node()
    found = node.lookup(target.instance_id) if node is not None else find_actor(target.path)
    if found is None:
        cls = resolve_actor_class(target.class_name)
        parent_path, _, name = target.instance_id.rpartition("/")
        parent = find_actor("/" + parent_path) if parent_path else None
        if parent_path and parent is None:
            raise LookupError(f"no running actor /{parent_path} to be the parent of {target}")
        found = parent.spawn(cls, *args, name=name, **kwargs) if parent is not None else cls(*args, name=name, **kwargs)
    if node is not None:
        node.receptionist.register(found)
    return found


def spawn_remote(parent: Actor, uri: str | ActorURI, *args: Any, **kwargs: Any) -> RemoteActor:
    """A supervised remote child: ``parent.spawn(RemoteActor, uri, ...)``. When the remote actor
    fails or its runtime stops answering heartbeats, the stub fails and ``parent``'s strategy
    applies; a restart re-creates the actor on its runtime once that is back."""
    target = parse_uri(uri)
    kwargs.setdefault("name", target.name)
    return parent.spawn(RemoteActor, target, *args, **kwargs)


__all__ += ["LinkStats"]
