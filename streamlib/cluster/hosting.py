"""Streamlib runtimes hosted by Ray actors: one per Ray node, found by the resources it has.

Ray places and watches processes; streamlib moves the frames. A :class:`RuntimeHost` is a Ray
actor whose process serves a streamlib runtime (:func:`streamlib.remote.serve`) on its node's
address; placed actors live in that runtime and exchange frames with other runtimes over
streamlib's own links (shared memory on one host, TCP between hosts). Ray is asked only to
start a host, for its address, and to say when it died.

One host per node, named ``streamlib-runtime-<node id>`` in the Ray namespace ``streamlib``,
so every placement (and every driver) on that node reuses it. Hosts are created with
``max_restarts=0``: Ray never restarts them. Restarts belong to streamlib's supervisors, which
re-place a failed actor (possibly on another node) -- one owner of restarts, not two.
"""

from __future__ import annotations

import atexit
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

__all__ = ["HostRecord", "NoNodeAvailable", "RuntimeHost", "choose_node", "host_on", "hosts", "node_matches"]

log = logging.getLogger("streamlib.cluster")

NAMESPACE = "streamlib"
"""The Ray namespace of the hosts (named actors are looked up there)."""

HOST_START_TIMEOUT = 60.0
"""Seconds a new host may take to start (a fresh worker process imports streamlib)."""

SUSPECT_FOR = 30.0
"""Seconds a node whose host just died is tried last: Ray may still list a dead node as alive
until its health checks fail (several seconds), and a restart should go elsewhere meanwhile."""


class NoNodeAvailable(RuntimeError):
    """No alive Ray node has the resources a placement asks for."""


class RuntimeHost:
    """The body of the Ray actor that hosts a streamlib runtime (wrapped by ``ray.remote`` in
    :func:`host_on`). Runs in a Ray worker process; its constructor serves the runtime."""

    def __init__(self, name: str, token: str) -> None:
        import streamlib.remote

        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self._token = token
        self._node_id = ray.get_runtime_context().get_node_id()
        self._node = streamlib.remote.serve(host=host, port=0, name=name, token=token)
        self._ended = threading.Event()

    def where(self) -> tuple[str, str, str]:
        """``(address, token, node id)``: how a driver reaches this runtime."""
        return self._node.address, self._token, self._node_id

    def sentinel(self) -> None:
        """Never returns: a caller's pending reference resolves with an error when this actor
        (or its node) dies -- Ray's own notice of the death, without polling."""
        self._ended.wait()

    def ping(self) -> float:
        return time.time()


@dataclass(eq=False)
class HostRecord:
    """A driver's view of one host: where it serves, and the stubs that live in it."""

    node_id: str
    address: str
    token: str
    handle: Any
    alive: bool = True
    died: str | None = None
    listeners: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    @property
    def node_ip(self) -> str:
        return self.address.rpartition(":")[0]


_lock = threading.RLock()
_hosts: dict[str, HostRecord] = {}  # node id -> live host
_suspect: dict[str, float] = {}  # node id -> monotonic time its host died
_remote_class: Any = None
_stopping = threading.Event()  # set by forget_hosts(): the watcher threads return
_watchers: list[threading.Thread] = []
_at_exit = False


def hosts() -> list[HostRecord]:
    """The live hosts this driver uses."""
    with _lock:
        return [h for h in _hosts.values() if h.alive]


def node_matches(node: Mapping[str, Any], want: str) -> bool:
    """Whether the Ray node description ``node`` (from ``ray.nodes()``) is the one named
    ``want``: its node id (or a prefix of 8+ characters), its IP address or its host name."""
    node_id = str(node.get("NodeID", ""))
    return (
        (len(want) >= 8 and node_id.startswith(want))
        or want == node.get("NodeManagerAddress")
        or want == node.get("NodeManagerHostname")
        or want == node.get("NodeName")
    )


def choose_node(resources: Mapping[str, float], prefer: str | None = None, *, moving: bool = False) -> str:
    """The node id of an alive node whose total resources cover ``resources``.

    Order of preference: the node named ``prefer``; nodes that already host a runtime (reuse);
    the rest. ``moving`` (a restart after the host died): nodes whose host died in the last
    :data:`SUSPECT_FOR` seconds come last, whatever else they are."""
    now = time.monotonic()
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    candidates = [n for n in alive if all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in resources.items())]
    if not candidates:
        raise NoNodeAvailable(
            f"no alive Ray node has the resources {dict(resources)}; the alive nodes have "
            f"{[n.get('Resources') for n in alive]}"
        )
    with _lock:
        used = {h.node_id for h in _hosts.values() if h.alive}
        suspect = {n for n, t in _suspect.items() if now - t < SUSPECT_FOR} if moving else set()

    def rank(node: Mapping[str, Any]) -> tuple[bool, bool, bool]:
        node_id = str(node["NodeID"])
        return (
            node_id in suspect,
            not (prefer is not None and node_matches(node, prefer)),
            node_id not in used,
        )

    return str(min(candidates, key=rank)["NodeID"])


def host_on(node_id: str, runtime_env: Mapping[str, Any] | None = None) -> HostRecord:
    """The host on ``node_id``: this driver's record of it, the named Ray actor another driver
    started there, or a new one (blocking Ray calls: call it off any event loop)."""
    global _remote_class
    with _lock:
        found = _hosts.get(node_id)
        if found is not None and found.alive:
            return found
        if _remote_class is None:
            _remote_class = ray.remote(RuntimeHost)
        name = f"streamlib-runtime-{node_id[:16]}"
        handle = _remote_class.options(
            name=name,
            namespace=NAMESPACE,
            get_if_exists=True,
            max_restarts=0,  # streamlib's supervisors own restarts (see the module docstring)
            max_concurrency=4,  # the sentinel call waits in one thread; the others answer
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            runtime_env=dict(runtime_env) if runtime_env else None,
        ).remote(name, secrets.token_hex(16))
        address, token, actual = ray.get(handle.where.remote(), timeout=HOST_START_TIMEOUT)
        record = HostRecord(actual, address, token, handle)
        _hosts[node_id] = record
    sentinel = handle.sentinel.remote()
    watcher = threading.Thread(target=_watch, args=(record, sentinel), name=f"streamlib-ray-watch-{name}", daemon=True)
    global _at_exit
    with _lock:
        _watchers.append(watcher)
        if not _at_exit:
            atexit.register(forget_hosts)  # after ray.init's own registration: runs before it
            _at_exit = True
    watcher.start()
    log.info("streamlib runtime hosted on Ray node %s at %s", node_id[:12], address)
    return record


def _watch(record: HostRecord, sentinel: Any) -> None:
    """Wait (in a thread) for Ray to report the host dead, then tell its listeners.

    Polls with ``ray.wait`` so :func:`forget_hosts` can end it before ``ray.shutdown()``: a
    thread still inside a Ray call after the shutdown makes Ray end the whole process."""
    stopping = _stopping
    try:
        while True:
            if stopping.is_set() or not ray.is_initialized():
                return
            ready, _ = ray.wait([sentinel], timeout=0.25)
            if ready:
                break
        ray.get(sentinel)
        reason = "its Ray actor returned"  # pragma: no cover - the sentinel never returns
    except BaseException as exc:  # any failure of the reference: the host is gone
        if stopping.is_set() or not ray.is_initialized() or isinstance(exc, SystemExit):
            return  # this driver is leaving Ray: nothing to report
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    host_died(record, f"Ray reports its hosting actor dead ({reason})")


def host_died(record: HostRecord, reason: str) -> None:
    """Forget ``record`` (the next placement starts a new host) and tell each listener."""
    with _lock:
        if not record.alive:
            return
        record.alive = False
        record.died = reason
        if _hosts.get(record.node_id) is record:
            del _hosts[record.node_id]
        _suspect[record.node_id] = time.monotonic()
        listeners: list[Callable[[HostRecord, str], None]] = [s.host_died for s in list(record.listeners)]
    log.warning("streamlib runtime on Ray node %s at %s is gone: %s", record.node_id[:12], record.address, reason)
    for notify in listeners:
        try:
            notify(record, reason)
        except Exception:
            log.exception("while telling a stub that its host died")


def forget_hosts() -> None:
    """Stop watching the hosts and drop every record: call it before ``ray.shutdown()`` (it is
    registered to run at exit before Ray's own shutdown). The hosts themselves end with the
    driver that started them."""
    global _stopping
    with _lock:
        stopping, _stopping = _stopping, threading.Event()
        watchers = list(_watchers)
        _watchers.clear()
        _hosts.clear()
        _suspect.clear()
    stopping.set()
    for thread in watchers:
        thread.join(timeout=2.0)
