"""``dispatcher="ray"``: build an actor in a streamlib runtime hosted on a Ray node.

``Cls(*args, dispatcher=RayDispatcher(resources={"camera": 1}))`` returns a :class:`PlacedActor`
-- the remote runtimes' stub (:class:`streamlib.remote.RemoteActor`) -- for a ``Cls`` built on a
node that has those resources. Wire it with ``>>`` as any actor; frames travel on streamlib's
links between runtimes, never through Ray calls or Ray's object store.

Failure: the stub fails (so its supervisor's strategy applies) as soon as either Ray reports
the hosting actor dead (a pending call on it errors) or the runtime misses its heartbeats
(1.25 s). A restart of the stub places the actor again: on the same node if it is still there,
otherwise on another node with the resources.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from streamlib import Actor, TimedTick
from streamlib.dispatch import Dispatcher
from streamlib.remote import ActorUnavailable, RemoteActor
from streamlib.remote.control import client_for, network_loop
from streamlib.remote.uri import ActorURI

from .hosting import HostRecord, NoNodeAvailable, choose_node, host_died, host_on

__all__ = ["PlacedActor", "Placement", "RayDispatcher"]


def _class_name(cls: type[Actor]) -> str:
    """How a runtime imports ``cls``: ``module.QualName`` (a plain name for the ready actors)."""
    module = cls.__module__
    if module.startswith("streamlib.actors") or module.startswith("actors."):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(eq=False)
class Placement:
    """What a placed actor needs from the cluster, and where it is now (shared by the stub's
    restarted instances through its spec)."""

    resources: dict[str, float]
    node: str | None = None
    runtime_env: dict[str, Any] | None = None
    host: HostRecord | None = field(default=None, repr=False)

    def find_host(self) -> HostRecord:
        """A live host on a node with the resources (blocking Ray calls)."""
        moving = self.host is not None and not self.host.alive  # then nodes that just lost a host come last
        record = host_on(choose_node(self.resources, self.node, moving=moving), self.runtime_env)
        self.host = record
        return record


class PlacedActor(RemoteActor):
    """The stub of an actor placed on a Ray node (see the module docstring). Its ``stats()`` and
    ``streamlib.tree()`` name the node; ``node_id`` and ``node_ip`` say it too."""

    def __init__(self, placement: Placement, class_name: str, instance_id: str, *args: Any, **kwargs: Any) -> None:
        host = placement.host
        if host is None:
            host = placement.find_host()  # a first placement: in the caller's thread
        # A restart keeps the last address here and re-places in on_start, off the loop.
        host_, port = host.address.rsplit(":", 1)
        kwargs.setdefault("fail_when_unreachable", True)
        super().__init__(ActorURI(host_, int(port), class_name, instance_id), *args, token=host.token, **kwargs)
        self._placement = placement
        self._host = host
        host.listeners.add(self)

    @property
    def node_id(self) -> str:
        """The Ray node id of the node the actor runs on."""
        return self._host.node_id

    @property
    def node_ip(self) -> str:
        return self._host.node_ip

    def host_died(self, record: HostRecord, reason: str) -> None:
        """Ray reports the hosting actor or its node dead (from a watcher thread): fail now,
        without waiting for the missed heartbeats, so the supervisor re-places the actor."""
        if record is not self._host or not self._fail_unreachable or self.stopping:
            return
        target = self._target

        async def fail() -> None:
            raise ActorUnavailable(f"{target} is gone: {reason}")

        self.run_between_ticks(fail)

    async def on_start(self) -> None:
        if self.restarts:
            self._host.listeners.discard(self)  # this instance moves, or re-registers below
            if self._host.alive and not self._client.available:
                # Heartbeats noticed first (Ray may take seconds to declare a node dead).
                host_died(self._host, "its runtime missed its heartbeats")
            if not self._host.alive or self._placement.host is not self._host:
                await self._replace_host()
            self._host.listeners.add(self)
        await super().on_start()

    async def _replace_host(self) -> None:
        """Re-place: find a live host (maybe on another node) and point the links at it."""
        record = self._placement.host
        if record is None or not record.alive:
            record = await asyncio.to_thread(self._placement.find_host)
        host_, port = record.address.rsplit(":", 1)
        target = ActorURI(host_, int(port), self._target.class_name, self._target.instance_id)
        self._host.listeners.discard(self)
        self._host = record
        record.listeners.add(self)
        if target != self._target:
            client = client_for(target.address, record.token)
            fut = asyncio.run_coroutine_threadsafe(self._endpoint.retarget(target, client), network_loop())
            await asyncio.wrap_future(fut)
            self._target, self._client = target, client

    def on_restart(self, previous: Actor) -> None:
        super().on_restart(previous)
        assert isinstance(previous, PlacedActor)
        # The new instance was built with the previous address; on_start moves it if needed.
        self._host.listeners.discard(self)
        self._host = previous._host
        self._host.listeners.add(self)
        self._target, self._client = previous._target, previous._client

    def stats(self, *, recursive: bool = False) -> dict[str, Any]:
        found = super().stats(recursive=recursive)
        found["node"] = {"id": self.node_id, "ip": self.node_ip}
        found["class"] = f"{found.get('class', self.remote_class)} on node {self.node_ip}/{self.node_id[:8]}"
        return found

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" on node {self.node_ip}/{self.node_id[:8]}>"


class RayDispatcher(Dispatcher):
    """Places actors on Ray nodes (see the module docstring).

    ``resources``: what the node must have (``{"GPU": 1}``, ``{"camera": 1}``; matched against
    each alive node's total resources; nothing is reserved). ``node``: a preferred node (its id,
    an 8+ character id prefix, its IP or host name); the first placement goes there when it has
    the resources, a restart after it died goes to any node that has them. ``runtime_env``: the
    Ray runtime environment of a host started for this dispatcher (e.g.
    ``{"env_vars": {"PYTHONPATH": ...}}`` so the node imports your actor classes); a node that
    already hosts a runtime keeps its environment. ``address``: passed to ``ray.init`` when Ray
    is not initialised yet (``None``: Ray's default, which starts a local Ray). ``restart_wait``:
    seconds a restarted stub waits for its runtime.

    ``dispatcher="ray"`` is a shared ``RayDispatcher()`` (no resources: any node)."""

    def __init__(
        self,
        resources: Mapping[str, float] | None = None,
        node: str | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
        restart_wait: float = 20.0,
    ) -> None:
        super().__init__()
        self.resources = {str(k): float(v) for k, v in (resources or {}).items()}
        self.node = node
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.address = address
        self.restart_wait = restart_wait

    def place(
        self, actor_class: type[Actor], args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Actor:
        """Build ``actor_class(*args, **kwargs)`` on a hosted runtime; return its stub here."""
        if not ray.is_initialized():
            ray.init(address=self.address, namespace="streamlib", log_to_driver=False)
        placement = Placement(dict(self.resources), self.node, self.runtime_env)
        name = options.get("name") or _snake(actor_class.__name__)
        try:
            placement.find_host()
        except NoNodeAvailable as exc:
            raise NoNodeAvailable(
                f"cannot place {actor_class.__qualname__} {name!r}: {exc}; start a node that has them "
                "(ray start --address ... --resources '{...}') or ask RayDispatcher for fewer"
            ) from None
        instance_id = f"{name}-{secrets.token_hex(3)}"  # unique on the shared runtime
        stub_options = {k: v for k, v in options.items() if k in ("parent", "name", "restart")}
        stub_options.setdefault("name", name)
        kwargs = {**kwargs, "restart_wait": kwargs.get("restart_wait", self.restart_wait)}
        return PlacedActor(placement, _class_name(actor_class), instance_id, *args, **kwargs, **stub_options)

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        raise RuntimeError(
            f"{actor.path}: a RayDispatcher places actors on Ray nodes and never runs them here; "
            "build the actor with dispatcher=RayDispatcher(...) so it is placed"
        )

    def __repr__(self) -> str:
        return f"<RayDispatcher resources={self.resources} node={self.node!r}>"
