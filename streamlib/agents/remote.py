"""The agent tools across the process boundary: drive a runtime served with ``streamlib node``.

A served runtime (:func:`streamlib.remote.serve`, ``streamlib node --agents``) answers one
more control request, ``agent``, with :func:`serve_agent_tools`: ``{"tool": NAME, "args":
{...}}`` runs that :class:`~.runtime.RuntimeAccess` operation on a :class:`~.runtime.LocalRuntime`
of that process and answers with its JSON result, or with ``{"failure": ToolFailure.to_dict()}``
so the structured error reaches the agent unchanged. :class:`RemoteRuntime` is the other end:
the same :class:`~.runtime.RuntimeAccess` interface, each call sent over the remote layer's
control connection (token, heartbeats, reconnection), so ``streamlib mcp --connect
actor://HOST:PORT`` serves the MCP tools of a runtime that lives in another process or on
another host, and the MCP server does not know the difference.

Why opt-in on the node (``--agents``): ``define_actor`` runs code an agent wrote. It runs
fenced (the sandbox's process and limits, as in ``streamlib mcp``), and the control plane
already needs a token anywhere but on loopback; still, a runtime offers it only when asked.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

from streamlib.remote import ActorUnavailable, RemoteError
from streamlib.remote.control import MAX_CONTROL, client_for, network_loop
from streamlib.remote.node import Node
from streamlib.remote.uri import SCHEME, parse_address
from streamlib.worker import LazySingleton, start_loop_thread

from .errors import ToolFailure
from .runtime import TOOL_NAMES, LocalRuntime, Snapshot

__all__ = ["AGENT_OP", "RemoteRuntime", "serve_agent_tools"]

AGENT_OP = "agent"
"""The control request that carries an agent tool call."""

TOOLS = frozenset(TOOL_NAMES)
"""The :class:`~.runtime.RuntimeAccess` operations a remote agent may call (nothing else of the runtime)."""

_SLOW = {"define_actor": 60.0, "spawn_actor": 60.0, "set_code": 30.0, "list_actor_types": 60.0}
"""Seconds a tool may take there before the call counts as unanswered (a sandbox trial, a
first import of OpenCV or PyAV); stop/restart/snapshot get their own timeout plus a margin."""

_T = TypeVar("_T")


def serve_agent_tools(node: Node, runtime: LocalRuntime | None = None) -> LocalRuntime:
    """Answer agent tool calls on ``node`` with ``runtime`` (default: a new :class:`LocalRuntime`
    over the node's actors); return the runtime (close it when the node closes)."""
    local = runtime or LocalRuntime(node.actor_loop)

    async def answer(request: dict[str, Any], payload: memoryview) -> Any:
        tool, args = request.get("tool"), request.get("args")
        if not isinstance(tool, str) or tool not in TOOLS or not isinstance(args, dict):
            raise ValueError(f"an agent request needs 'tool' (one of {sorted(TOOLS)}) and 'args' (an object)")
        # On a loop of their own: a tool may compute for a while (the catalogue's first build,
        # a sandbox trial), and the network loop must keep answering heartbeats meanwhile.
        work = asyncio.run_coroutine_threadsafe(run(tool, args), _tools_loop())
        return await asyncio.wrap_future(work)

    async def run(tool: str, args: dict[str, Any]) -> Any:
        method = getattr(local, tool)
        try:
            inspect.signature(method).bind(**args)
        except TypeError as exc:  # arguments the tool does not take (checked before it runs)
            return {"failure": ToolFailure("invalid_argument", f"{tool}: {exc}").to_dict()}
        try:
            result = await method(**args)
        except ToolFailure as failure:
            return {"failure": failure.to_dict()}
        if isinstance(result, Snapshot):
            png = base64.b64encode(result.png).decode("ascii")
            if len(png) > MAX_CONTROL - 64 * 1024:  # the reply must fit one control message
                too_big = f"a {result.width} px wide snapshot is {len(result.png)} bytes of PNG, more than the control "
                too_big += f"connection carries ({MAX_CONTROL >> 20} MiB): ask for a smaller width"
                return {"failure": ToolFailure("invalid_argument", too_big, actor=args.get("output")).to_dict()}
            return {"snapshot": {**result.describe(), "png": png}}
        return {"result": result}

    node.add_operation(AGENT_OP, answer)
    return local


def _start_tools_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    start_loop_thread(loop, "streamlib-agent-tools")
    return loop


_tools_loop = LazySingleton(_start_tools_loop)
"""Where a served runtime runs agent tool calls (one thread per process, made on first use)."""


def _address(target: str) -> str:
    """``actor://HOST:PORT`` (or ``HOST:PORT``) -> ``HOST:PORT``, checked."""
    text = target[len(SCHEME) :] if target.startswith(SCHEME) else target
    host, port = parse_address(text.rstrip("/"))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RemoteRuntime:
    """:class:`~.runtime.RuntimeAccess` over a runtime served in another process or host.

    ``target``: ``actor://HOST:PORT`` (what ``streamlib node --agents`` prints). ``token``:
    the node's token (default ``$STREAMLIB_TOKEN`` or ``$STREAMLIB_TOKEN_FILE``). An
    unreachable runtime is a ``timeout`` :class:`ToolFailure` naming the address, never a hang."""

    def __init__(self, target: str, token: str | None = None) -> None:
        try:
            self.address = _address(target)
        except ValueError:
            raise ValueError(
                f"a runtime is addressed as actor://HOST:PORT (e.g. actor://127.0.0.1:7400), got {target!r}"
            ) from None
        self._client = client_for(self.address, token)

    def close(self) -> None:
        """Nothing to release here: the control connection is shared by the process."""

    async def _call(self, tool: str, limit: float, /, **args: Any) -> Any:
        request = self._client.call(AGENT_OP, limit, tool=tool, args=args)
        try:
            answer = await _on_network_loop(request)
        except ActorUnavailable as exc:
            raise ToolFailure("timeout", f"{exc} (is 'streamlib node --agents' running there?)") from None
        except RemoteError as exc:
            if "unknown request" in str(exc):
                raise ToolFailure(
                    "not_supported",
                    f"runtime {self.address} does not answer agent tools: start it with 'streamlib node --agents'",
                ) from None
            raise ToolFailure("internal", f"runtime {self.address}: {exc}") from None
        if not isinstance(answer, dict):
            raise ToolFailure("internal", f"runtime {self.address} answered {tool} with {type(answer).__name__}")
        if "failure" in answer:
            raise ToolFailure(**answer["failure"])
        if "snapshot" in answer:
            shot = dict(answer["snapshot"])
            shot.pop("bytes", None)
            return Snapshot(png=base64.b64decode(shot.pop("png")), **shot)
        return answer.get("result")

    async def list_actor_types(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call("list_actor_types", _SLOW["list_actor_types"])
        return found

    async def define_actor(self, source: str, sandbox: bool = True) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("define_actor", _SLOW["define_actor"], source=source, sandbox=sandbox)
        return found

    async def spawn_actor(
        self,
        type: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        dispatcher: str | None = None,
        parent: str | None = None,
    ) -> dict[str, Any]:
        args = {"type": type, "name": name, "params": params, "dispatcher": dispatcher, "parent": parent}
        found: dict[str, Any] = await self._call("spawn_actor", _SLOW["spawn_actor"], **args)
        return found

    async def connect(self, source: str, target: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("connect", 10.0, source=source, target=target)
        return found

    async def disconnect(self, source: str, target: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("disconnect", 10.0, source=source, target=target)
        return found

    async def get_graph(self) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("get_graph", 10.0)
        return found

    async def get_stats(self, actor: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("get_stats", 10.0, actor=actor)
        return found

    async def snapshot(self, output: str, width: int = 640, timeout: float = 2.0) -> Snapshot:
        found: Snapshot = await self._call("snapshot", timeout + 10.0, output=output, width=width, timeout=timeout)
        return found

    async def set_code(self, actor: str, code: str) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("set_code", _SLOW["set_code"], actor=actor, code=code)
        return found

    async def stop_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("stop_actor", timeout + 5.0, actor=actor, timeout=timeout)
        return found

    async def restart_actor(self, actor: str, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("restart_actor", timeout + 5.0, actor=actor, timeout=timeout)
        return found

    async def tail_logs(
        self, actor: str | None = None, limit: int = 50, level: str | None = None, since: int = 0
    ) -> dict[str, Any]:
        found: dict[str, Any] = await self._call("tail_logs", 10.0, actor=actor, limit=limit, level=level, since=since)
        return found

    def __repr__(self) -> str:
        return f"<RemoteRuntime actor://{self.address}>"


async def _on_network_loop(coro: Awaitable[_T]) -> _T:
    """Await ``coro`` on the remote layer's network loop, from whichever loop we are on (the
    MCP server runs its own)."""
    loop = network_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(_wrap(coro), loop)
    return await asyncio.wrap_future(future)


async def _wrap(coro: Awaitable[_T]) -> _T:
    return await coro
