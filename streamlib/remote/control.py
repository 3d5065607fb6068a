"""The control plane: requests between runtimes over aiohttp WebSockets, apart from media.

One WebSocket per pair of runtimes (``GET /streamlib/v1/control`` on the served port).
Every WebSocket message is binary: a 4-byte big-endian length, that many bytes of UTF-8 JSON
(an object), then an optional payload that the JSON's values reference (see
:mod:`.wire`'s values: constructor arguments may hold arrays and bytes).

Handshake: the runtime speaks first, ``{"challenge": NONCE, "node": NAME, "version": 1,
"data_port": PORT, "host_id": ID, "token": true|false}``; the client answers
``{"auth": HMAC-SHA256(token, "streamlib-control\\0" + NONCE)}`` (an empty string when it has
no token); the runtime checks it with :func:`hmac.compare_digest` and answers
``{"welcome": NAME}``, or closes with code 4401 and counts a rejection.

Then the client sends requests ``{"id": N, "op": "...", ...}`` and gets ``{"id": N, "ok":
true, "result": ...}`` or ``{"id": N, "ok": false, "error": {"type": ..., "message": ...}}``;
the runtime may also push ``{"event": {...}}`` (registry changes the client watches).
Requests: ``ping``, ``describe``, ``ensure`` (get-or-create), ``stats``, ``stop``, ``connect``
and ``disconnect`` (a link from one of this runtime's outputs to another runtime's input),
``watch`` and ``list``.

Messages are bounded (:data:`MAX_CONTROL`); one that is not what this protocol says closes
its connection with a logged reason and is counted, and the runtime keeps running.

Heartbeats: a client pings every :data:`PING_INTERVAL` seconds; with no answer within
:data:`DEAD_AFTER` it declares the runtime unreachable (every call fails fast with
:class:`~.errors.ActorUnavailable`), tells its listeners, and reconnects in the background.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from . import wire
from .errors import ActorUnavailable, AuthenticationFailed, RemoteError

__all__ = [
    "DEAD_AFTER",
    "MAX_CONTROL",
    "PING_INTERVAL",
    "ControlClient",
    "ControlServer",
    "client_for",
    "decode_args",
    "encode_args",
    "network_loop",
    "sign",
    "verify",
]

log = logging.getLogger("streamlib.remote")

PATH = "/streamlib/v1/control"
MAX_CONTROL = 4 << 20
"""Largest control message either side accepts (4 MiB, arguments included)."""
PING_INTERVAL = 0.25
DEAD_AFTER = 1.25
"""Seconds without any message from a runtime after which it counts as unreachable."""
CALL_TIMEOUT = 5.0
AUTH_TIMEOUT = 5.0
_LEN = struct.Struct("!I")

# -- the process's network loop -----------------------------------------------------------------

_loop_lock = threading.Lock()
_network: asyncio.AbstractEventLoop | None = None


def network_loop() -> asyncio.AbstractEventLoop:
    """The loop (a daemon thread, started on first use) where this process's control
    connections, data links and served runtime run, apart from the actors' loop: a stub's
    synchronous call can then block any thread, an actor's loop included, without deadlock."""
    global _network
    with _loop_lock:
        if _network is None or _network.is_closed():
            from streamlib.eventloop import new_event_loop

            loop = new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="streamlib-remote", daemon=True).start()
            started.wait()
            _network = loop
        return _network


_background: set[asyncio.Future[Any]] = set()


def background(coro: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``coro`` as a task of its own, kept referenced until it ends (an unreferenced task
    may be garbage collected mid-flight)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def run_sync(coro: Awaitable[Any], timeout: float) -> Any:
    """Run ``coro`` on the network loop and wait for it from this (other) thread."""
    loop = network_loop()
    if asyncio._get_running_loop() is loop:
        raise RuntimeError("a synchronous remote call on streamlib's network loop would deadlock; await it instead")
    future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise ActorUnavailable(f"no answer within {timeout:g} s") from None


# -- authentication ---------------------------------------------------------------------------


def sign(token: str | None, nonce: str, purpose: str) -> str:
    """The HMAC-SHA256 proof of ``token`` for one challenge (hex); ``""`` without a token."""
    if not token:
        return ""
    return hmac.new(token.encode(), f"streamlib-{purpose}\0{nonce}".encode(), hashlib.sha256).hexdigest()


def verify(token: str | None, nonce: str, purpose: str, proof: Any) -> bool:
    """Whether ``proof`` answers the challenge (constant-time). Always true without a token."""
    if not token:
        return True
    if not isinstance(proof, str) or not proof.isascii():
        return False
    return hmac.compare_digest(sign(token, nonce, purpose), proof)


# -- framing -----------------------------------------------------------------------------------


def pack(message: dict[str, Any], payload: list[Any] | None = None) -> bytes:
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([_LEN.pack(len(body)), body, *(bytes(memoryview(p)) for p in payload or ())])


def unpack(data: Any) -> tuple[dict[str, Any], memoryview]:
    """A control message, or :class:`~.wire.WireError`."""
    if not isinstance(data, (bytes, bytearray)):
        raise wire.WireError(f"control messages are binary, got {type(data).__name__}")
    if len(data) < 4:
        raise wire.WireError("control message shorter than its length prefix")
    (size,) = _LEN.unpack_from(data)
    if size > len(data) - 4:
        raise wire.WireError(f"control message claims {size} bytes of JSON, has {len(data) - 4}")
    message = wire.parse_meta(bytes(data[4 : 4 + size]))
    return message, memoryview(data)[4 + size :]


def encode_args(args: Any, kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
    """Constructor arguments as a wire value (see :mod:`.wire`) and its payload."""
    out = wire._Out()
    value = {
        "args": wire._encode_value(list(args), out, "argument"),
        "kwargs": wire._encode_value(dict(kwargs), out, "keyword argument"),
    }
    return value, out.buffers


def decode_args(value: Any, payload: memoryview) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(value, dict):
        raise wire.WireError("arguments must be an object")
    args = wire._decode_value(value.get("args", []), payload)
    kwargs = wire._decode_value(value.get("kwargs", {}), payload)
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise wire.WireError("args must be a list and kwargs an object with string keys")
    return args, kwargs


# -- server ------------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any], memoryview, "ServerConnection"], Awaitable[Any]]


class ServerConnection:
    """One authenticated client of a :class:`ControlServer`."""

    def __init__(self, ws: web.WebSocketResponse, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self.cleanups: list[Callable[[], None]] = []

    async def push(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(pack({"event": event}))


class ControlServer:
    """Answers control requests with ``handlers[op]`` (on the network loop)."""

    def __init__(
        self, handlers: dict[str, Handler], token: str | None, hello: dict[str, Any], counters: dict[str, int]
    ) -> None:
        self.handlers = handlers
        self.token = token
        self.hello = hello
        self.counters = counters
        self.connections: set[ServerConnection] = set()
        self.quick: frozenset[str] = frozenset({"ping", "stats", "describe", "list", "node"})
        """Requests that never wait on anything: answered inline, in order."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.handle)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def _refuse(self, ws: web.WebSocketResponse, peer: str, counter: str, reason: str) -> web.WebSocketResponse:
        self._count(counter)
        log.warning("control connection from %s closed: %s", peer, reason)
        await ws.close(code=4401 if counter == "auth_rejected" else 4400, message=reason[:120].encode())
        return ws

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_CONTROL, compress=False, autoping=True)
        await ws.prepare(request)
        peer = str(request.remote)
        nonce = secrets.token_hex(16)
        await ws.send_bytes(pack({**self.hello, "challenge": nonce, "token": bool(self.token)}))
        try:
            msg = await ws.receive(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            return await self._refuse(ws, peer, "auth_rejected", "no answer to the challenge")
        if msg.type != aiohttp.WSMsgType.BINARY:
            return await self._refuse(ws, peer, "malformed", f"expected the challenge's answer, got {msg.type.name}")
        try:
            answer, _ = unpack(msg.data)
        except wire.WireError as exc:
            return await self._refuse(ws, peer, "malformed", f"bad answer to the challenge: {exc}")
        if not verify(self.token, nonce, "control", answer.get("auth")):
            return await self._refuse(ws, peer, "auth_rejected", "wrong or missing token")
        await ws.send_bytes(pack({"welcome": self.hello.get("node")}))
        self._count("control_connections")
        conn = ServerConnection(ws, peer)
        self.connections.add(conn)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    await self._refuse(ws, peer, "malformed", f"unexpected {msg.type.name} message")
                    break
                try:
                    request_msg, payload = unpack(msg.data)
                    ident, op = request_msg.get("id"), request_msg.get("op")
                    if type(ident) is not int or not isinstance(op, str):
                        raise wire.WireError("a request needs an integer 'id' and a string 'op'")
                except wire.WireError as exc:
                    await self._refuse(ws, peer, "malformed", str(exc))
                    break
                if op in self.quick:  # answered at once, in order: no task per request
                    await self._answer(conn, ident, op, request_msg, payload)
                    continue
                task = asyncio.ensure_future(self._answer(conn, ident, op, request_msg, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            self.connections.discard(conn)
            for task in tasks:
                task.cancel()
            for cleanup in conn.cleanups:
                cleanup()
        return ws

    async def _answer(
        self, conn: ServerConnection, ident: int, op: str, request: dict[str, Any], payload: memoryview
    ) -> None:
        handler = self.handlers.get(op)
        reply: dict[str, Any]
        try:
            if handler is None:
                raise LookupError(f"unknown request {op!r}; this runtime answers {sorted(self.handlers)}")
            reply = {"id": ident, "ok": True, "result": await handler(request, payload, conn)}
        except wire.WireError as exc:
            self._count("malformed")
            log.warning("control request %r from %s was malformed: %s", op, conn.peer, exc)
            reply = {"id": ident, "ok": False, "error": {"type": "WireError", "message": str(exc)}}
        except Exception as exc:
            reply = {"id": ident, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
        if conn.ws.closed:
            return
        try:
            data = pack(reply)
        except (TypeError, ValueError) as exc:  # a result JSON cannot hold
            data = pack({"id": ident, "ok": False, "error": {"type": "TypeError", "message": str(exc)}})
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.send_bytes(data)


# -- client ------------------------------------------------------------------------------------

_clients: dict[tuple[str, str | None], ControlClient] = {}
_clients_lock = threading.Lock()


def default_token() -> str | None:
    """``$STREAMLIB_TOKEN``, or the first line of ``$STREAMLIB_TOKEN_FILE``."""
    token = os.environ.get("STREAMLIB_TOKEN")
    if token:
        return token
    path = os.environ.get("STREAMLIB_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip() or None
    return None


def client_for(address: str, token: str | None = None) -> ControlClient:
    """The shared control connection of this process to the runtime at ``address``."""
    token = token if token is not None else default_token()
    key = (address, token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.closed:
            client = _clients[key] = ControlClient(address, token)
        return client


class ControlClient:
    """This process's control connection to one runtime (lives on :func:`network_loop`).

    Connects on first use and again after a loss; every call has a timeout and raises
    :class:`~.errors.ActorUnavailable` instead of hanging while the runtime is unreachable."""

    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        self.token = token
        self.loop = network_loop()
        self.closed = False
        self.hello: dict[str, Any] = {}
        self.stats = {"calls": 0, "reconnects": 0, "heartbeats_missed": 0}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connecting: asyncio.Future[None] | None = None
        self._last_heard = 0.0
        self._down_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watches: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._status_listeners: list[Callable[[bool], None]] = []
        self._ever_connected = False

    # -- state -------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Connected, and heard from within :data:`DEAD_AFTER` seconds."""
        return self._ws is not None and not self._ws.closed and time.monotonic() - self._last_heard < DEAD_AFTER

    def on_status(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(up)`` (on the network loop) when the runtime becomes (un)reachable."""
        self._status_listeners.append(listener)

    def _set_status(self, up: bool) -> None:
        for listener in list(self._status_listeners):
            try:
                listener(up)
            except Exception:
                log.exception("status listener of %s failed", self.address)

    # -- connection --------------------------------------------------------------------

    async def ensure_connected(self, timeout: float) -> None:
        if self.available:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            await asyncio.wait_for(asyncio.shield(self._connecting), timeout)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise ActorUnavailable(f"runtime {self.address} is unreachable: {type(exc).__name__}: {exc}") from None

    async def _connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        await self._drop_connection()
        ws = await self._session.ws_connect(
            f"http://{self.address}{PATH}", max_msg_size=MAX_CONTROL, autoping=True, compress=0
        )
        try:
            first = await ws.receive(timeout=AUTH_TIMEOUT)
            if first.type != aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"runtime {self.address} sent no challenge ({first.type.name})")
            hello, _ = unpack(first.data)
            await ws.send_bytes(pack({"auth": sign(self.token, str(hello.get("challenge")), "control")}))
            answer = await ws.receive(timeout=AUTH_TIMEOUT)
            if answer.type != aiohttp.WSMsgType.BINARY:
                code = ws.close_code
                if code == 4401:
                    raise AuthenticationFailed(
                        f"runtime {self.address} refused our token"
                        + ("" if self.token else " (it wants one: pass token=... or set STREAMLIB_TOKEN)")
                    )
                raise ConnectionError(f"runtime {self.address} closed the handshake (code {code})")
        except BaseException:
            await ws.close()
            raise
        self.hello = hello
        self._ws = ws
        self._last_heard = time.monotonic()
        if self._ever_connected:
            self.stats["reconnects"] += 1
        self._ever_connected = True
        self._down_since = None
        self._tasks = [asyncio.ensure_future(self._read(ws)), asyncio.ensure_future(self._heartbeat(ws))]
        for instance_id in list(self._watches):
            background(self._send_watch(instance_id))
        self._set_status(True)

    async def _drop_connection(self) -> None:
        ws, self._ws = self._ws, None
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._tasks = []
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 0.5)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ActorUnavailable(f"runtime {self.address} connection lost"))
        self._pending.clear()

    async def _lost(self, ws: aiohttp.ClientWebSocketResponse, why: str) -> None:
        if self._ws is not ws:
            return
        watched = any(self._watches.values()) or bool(self._status_listeners)
        # Nobody follows this runtime any more (every stub of it ended): no need to say it or
        # to reconnect now; the next call connects again.
        log.log(
            logging.WARNING if watched else logging.DEBUG,
            "runtime %s is unreachable (%s)%s",
            self.address,
            why,
            "; reconnecting" if watched else "",
        )
        self._down_since = time.monotonic()
        await self._drop_connection()
        self._set_status(False)
        if not self.closed and watched:
            background(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closed and not self.available:
            try:
                await self.ensure_connected(2.0)
                return
            except AuthenticationFailed:
                log.error("runtime %s now refuses our token; not reconnecting", self.address)
                return
            except ActorUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                self._last_heard = time.monotonic()
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    message, _ = unpack(msg.data)
                except wire.WireError as exc:
                    log.warning("runtime %s sent a malformed message: %s", self.address, exc)
                    continue
                event = message.get("event")
                if isinstance(event, dict):
                    for callback in list(self._watches.get(str(event.get("id")), ())):
                        callback(event)
                    continue
                fut = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result(message)
        except Exception as exc:  # the connection broke under us
            log.debug("control reader of %s ended: %r", self.address, exc)
        await self._lost(ws, "connection closed")

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while self._ws is ws and not ws.closed:
            await asyncio.sleep(PING_INTERVAL)
            if time.monotonic() - self._last_heard > DEAD_AFTER:
                self.stats["heartbeats_missed"] += 1
                await self._lost(ws, f"no answer for {DEAD_AFTER:g} s")
                return
            background(self._ping(ws))

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await self._request(ws, {"op": "ping"}, None, DEAD_AFTER)

    # -- requests ----------------------------------------------------------------------

    async def _request(
        self, ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any], payload: list[Any] | None, timeout: float
    ) -> dict[str, Any]:
        ident = next(self._ids)
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pending[ident] = fut
        try:
            await ws.send_bytes(pack({**message, "id": ident}, payload))
            reply: dict[str, Any] = await asyncio.wait_for(fut, timeout)
            return reply
        finally:
            self._pending.pop(ident, None)

    async def call(
        self, op: str, timeout: float = CALL_TIMEOUT, payload: list[Any] | None = None, **fields: Any
    ) -> Any:
        """Send a request and return its result; raises :class:`ActorUnavailable` (no answer in
        ``timeout``), :class:`AuthenticationFailed` or :class:`RemoteError`."""
        if self.closed:
            raise ActorUnavailable(f"the connection to runtime {self.address} was closed")
        deadline = time.monotonic() + timeout
        await self.ensure_connected(timeout)
        ws = self._ws
        if ws is None:
            raise ActorUnavailable(f"runtime {self.address} is unreachable")
        self.stats["calls"] += 1
        try:
            reply = await self._request(ws, {"op": op, **fields}, payload, max(deadline - time.monotonic(), 0.01))
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            raise ActorUnavailable(
                f"runtime {self.address} did not answer {op!r} within {timeout:g} s ({type(exc).__name__})"
            ) from None
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise RemoteError(f"{error.get('type', 'Error')}: {error.get('message', '')}", str(error.get("type")))

    def call_sync(self, op: str, timeout: float = CALL_TIMEOUT, **fields: Any) -> Any:
        """:meth:`call` from any thread but the network loop's."""
        return run_sync(self.call(op, timeout, **fields), timeout + 0.5)

    async def watch(self, instance_id: str, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event)`` for the runtime's registry events about ``instance_id``
        (kept across reconnections)."""
        self._watches.setdefault(instance_id, []).append(callback)
        await self._send_watch(instance_id)

    def unwatch(self, instance_id: str, callback: Callable[[dict[str, Any]], None]) -> None:
        callbacks = self._watches.get(instance_id, [])
        if callback in callbacks:
            callbacks.remove(callback)

    async def _send_watch(self, instance_id: str) -> None:
        try:
            result = await self.call("watch", 2.0, target=instance_id)
        except (ActorUnavailable, RemoteError):
            return
        if isinstance(result, dict) and result.get("state") == "absent":
            # Watched, but gone: the runtime restarted without it, or it ended while we were away.
            event = {
                "kind": "ended",
                "id": instance_id,
                "state": "failed",
                "failure": f"ActorUnavailable: runtime {self.address} no longer has it",
            }
            for callback in list(self._watches.get(instance_id, ())):
                callback(event)

    async def close(self) -> None:
        self.closed = True
        await self._drop_connection()
        if self._session is not None:
            await self._session.close()
