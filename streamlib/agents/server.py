"""The MCP server: streamlib's agent tools and resources on the official ``mcp`` SDK.

:func:`build_server` makes an :class:`mcp.server.mcpserver.MCPServer` whose tools call a
:class:`~streamlib.agents.runtime.RuntimeAccess` -- this process's actors
(:class:`~streamlib.agents.runtime.LocalRuntime`) by default. :func:`serve_stdio` and
:func:`serve_http` run it (``streamlib mcp`` does, see :mod:`streamlib.agents.cli`).

Every tool answers with JSON in ``structuredContent`` (and the same JSON as text). A failure
is an ``isError`` result whose ``structuredContent`` is ``{"error": {"kind", "message", ...}}``
(:class:`~streamlib.agents.errors.ToolFailure`): never a traceback, and nothing changed.
Arguments that do not match a tool's input schema get the same shape (kind
``invalid_argument``), through a middleware on the SDK's own validation error.

Resources: ``streamlib://graph`` (actors, ports, connections, states: ``get_graph``),
``streamlib://metrics`` (every actor's counters: ``get_stats``), ``streamlib://catalogue``
(``list_actor_types``), all ``application/json``.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

import streamlib
from streamlib.listening import is_loopback, token_matches

from .errors import ToolFailure
from .runtime import TOOL_NAMES, LocalRuntime, RuntimeAccess

__all__ = ["TOOL_NAMES", "build_server", "serve_http", "serve_stdio"]

log = logging.getLogger("streamlib.agents")

INSTRUCTIONS = """\
streamlib runs realtime streams (video, audio, data) as actors wired output >> input.
Start with list_actor_types (each type's parameters as JSON Schema, its ports and message types),
spawn_actor to start one (it runs at once), connect 'PATH.PORT' to 'PATH.PORT' (or two actor paths
when one pair of ports fits), get_graph to see everything, snapshot to look at a video output.
define_actor loads Actor classes you write (they run in a resource-limited worker process);
set_code changes a Drawing's Python drawing code or a ShaderActor's WGSL while it runs.
Every failure is {"error": {"kind", "message", "line", "column", ...}}: fix and retry; nothing
changed when a tool failed."""

_JSON_TEXT_LIMIT = 200_000


def _ok(value: Any) -> CallToolResult:
    text = json.dumps(value, default=repr)
    return CallToolResult(
        content=[TextContent(type="text", text=text if len(text) <= _JSON_TEXT_LIMIT else text[:_JSON_TEXT_LIMIT])],
        structured_content=value if isinstance(value, dict) else {"result": value},
    )


def _error(error: dict[str, Any]) -> CallToolResult:
    payload = {"error": error}
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(payload, default=repr))],
        structured_content=payload,
        is_error=True,
    )


async def _answer(tool: str, call: Callable[[], Awaitable[Any]]) -> CallToolResult:
    """Run one tool call: its value, or its failure as data (an unexpected exception is
    logged here with its traceback and reaches the agent as ``internal``, type and text only)."""
    try:
        return _ok(await call())
    except ToolFailure as failure:
        log.debug("tool %s failed: %s", tool, failure)
        return _error(failure.to_dict())
    except Exception as exc:
        log.exception("tool %s: unexpected %s", tool, type(exc).__name__)
        return _error({"kind": "internal", "message": f"{tool}: {type(exc).__name__}: {exc}"})


async def structured_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: a ``tools/call`` error the SDK produced itself (arguments that fail the
    input schema, an unknown tool) becomes the same ``{"error": {...}}`` as the tools' own."""
    result = await call_next(ctx)
    if ctx.method != "tools/call":
        return result
    if isinstance(result, CallToolResult):
        if not result.is_error or result.structured_content is not None:
            return result  # ours: already structured (and not serialized twice)
        result = result.model_dump(by_alias=True, exclude_none=True, mode="json")
    if not isinstance(result, dict) or not result.get("isError") or result.get("structuredContent") is not None:
        return result
    text = " ".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
    error = _argument_error(text)
    payload = {"error": error}
    return {**result, "content": [{"type": "text", "text": json.dumps(payload)}], "structuredContent": payload}


def _argument_error(text: str) -> dict[str, Any]:
    """The SDK's validation text (pydantic's) as a structured ``invalid_argument``."""
    lines = [line for line in text.splitlines() if line.strip() and "errors.pydantic.dev" not in line]
    error: dict[str, Any] = {"kind": "invalid_argument", "message": " ".join(x.strip() for x in lines) or text}
    if len(lines) >= 3 and "validation error" in lines[0]:
        argument, problem = lines[1].strip(), lines[2].strip()
        problem = problem.split(" [type=")[0]
        error["message"] = f"argument {argument!r}: {problem}"
        error["details"] = {"argument": argument}
    elif "Unknown tool" in text:
        error["message"] = f"{text.strip()}; the tools are: {', '.join(TOOL_NAMES)}"
    return error


class StaticTokenVerifier:
    """The bearer token ``streamlib mcp --http`` requires (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if token_matches(token, self._token):
            return AccessToken(token=token, client_id="streamlib-agent", scopes=[])
        return None


def build_server(
    runtime: RuntimeAccess | None = None,
    *,
    token: str | None = None,
    public_url: str = "http://127.0.0.1",
) -> MCPServer[Any]:
    """The MCP server for ``runtime`` (default: a :class:`LocalRuntime` of this process).

    ``token``: require ``Authorization: Bearer TOKEN`` on the HTTP transport (the SDK's
    bearer middleware); ``public_url`` is the address it names as the token issuer."""
    access: RuntimeAccess = runtime if runtime is not None else LocalRuntime()
    auth: dict[str, Any] = {}
    if token:
        auth = {
            "token_verifier": StaticTokenVerifier(token),
            "auth": AuthSettings(issuer_url=public_url, resource_server_url=None),  # type: ignore[arg-type]
        }
    server: MCPServer[Any] = MCPServer(
        "streamlib",
        title="streamlib runtime",
        instructions=INSTRUCTIONS,
        version=streamlib.__version__,
        log_level="WARNING",
        middleware=[structured_errors],
        **auth,
    )
    _add_tools(server, access)
    _add_resources(server, access)
    return server


Path = Annotated[str, Field(description="an actor path such as '/pattern' (see get_graph)")]
PortAddress = Annotated[
    str, Field(description="'PATH.PORT' (e.g. '/pattern.video'), or an actor path when one pair of ports fits")
]
_READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)


def _add_tools(server: MCPServer[Any], runtime: RuntimeAccess) -> None:
    @server.tool(annotations=_READ_ONLY)
    async def list_actor_types() -> CallToolResult:
        """Every actor type that can be spawned: the ready-made ones and those define_actor loaded.

        Each has: summary and doc, parameters (JSON Schema with defaults; 'x-json': false marks a
        Python-only parameter), ports (name, direction, message type), clock, dispatchers
        ({default, allowed}), needs (pip packages)."""

        async def call() -> Any:
            return {"types": await runtime.list_actor_types()}

        return await _answer("list_actor_types", call)

    @server.tool()
    async def define_actor(
        source: Annotated[
            str,
            Field(
                description="Python source of one or more classes subclassing Actor. In scope: Actor, "
                "StreamInput, StreamOutput, VideoFrame, AudioBuffer, DataMessage, TimedTick, np, math. "
                "Declare ports in __init__ (self.inputs['video'] = StreamInput('video', VideoFrame)), "
                "implement 'async def process(self, tick)'."
            ),
        ],
        sandbox: Annotated[
            bool, Field(description="run instances in a resource-limited worker process (default true)")
        ] = True,
    ) -> CallToolResult:
        """Load actor classes from Python source; returns the class names now spawnable.

        All or nothing: a syntax error (with line and column), an exception while running the
        module, or a class without process() loads nothing. Sandboxed classes run in a worker
        process with memory, CPU-time and open-file limits."""
        return await _answer("define_actor", lambda: runtime.define_actor(source, sandbox))

    @server.tool()
    async def spawn_actor(
        type: Annotated[str, Field(description="an actor type from list_actor_types, e.g. 'TestPattern'")],
        name: Annotated[str | None, Field(description="its name (default: the class name in snake case)")] = None,
        params: Annotated[
            dict[str, Any] | None, Field(description="constructor parameters, checked against the type's schema")
        ] = None,
        dispatcher: Annotated[str | None, Field(description="one of the type's allowed dispatchers")] = None,
        parent: Annotated[str | None, Field(description="path of the parent/supervisor actor")] = None,
    ) -> CallToolResult:
        """Start an actor (it runs at once); returns its path."""
        return await _answer("spawn_actor", lambda: runtime.spawn_actor(type, name, params, dispatcher, parent))

    @server.tool()
    async def connect(source: PortAddress, target: PortAddress) -> CallToolResult:
        """Connect an output to an input (types are checked): source is the sending side."""
        return await _answer("connect", lambda: runtime.connect(source, target))

    @server.tool()
    async def disconnect(source: PortAddress, target: PortAddress) -> CallToolResult:
        """Remove the connections from source (an actor or output) to target (an actor or input)."""
        return await _answer("disconnect", lambda: runtime.disconnect(source, target))

    @server.tool(annotations=_READ_ONLY)
    async def get_graph() -> CallToolResult:
        """Every actor (path, class, state, dispatcher, failure) with its ports and counters, and every connection."""
        return await _answer("get_graph", runtime.get_graph)

    @server.tool(annotations=_READ_ONLY)
    async def get_stats(
        actor: Annotated[str | None, Field(description="an actor path; default: every actor")] = None,
    ) -> CallToolResult:
        """Counters: ticks, messages in/out, drops, queue depths, restarts (and profiling summaries when on)."""
        return await _answer("get_stats", lambda: runtime.get_stats(actor))

    @server.tool(annotations=_READ_ONLY)
    async def snapshot(
        output: Annotated[str, Field(description="'PATH.PORT' of a video output, or an actor with one video output")],
        width: Annotated[
            int, Field(ge=8, le=7680, description="width of the image; aspect kept, never enlarged")
        ] = 640,
    ) -> CallToolResult:
        """The latest frame on a video output, as a PNG image (plus its size and frame number)."""
        try:
            shot = await runtime.snapshot(output, width)
        except ToolFailure as failure:
            return _error(failure.to_dict())
        except Exception as exc:
            log.exception("tool snapshot: unexpected %s", type(exc).__name__)
            return _error({"kind": "internal", "message": f"snapshot: {type(exc).__name__}: {exc}"})
        meta = shot.describe()
        return CallToolResult(
            content=[
                ImageContent(type="image", data=base64.b64encode(shot.png).decode(), mime_type="image/png"),
                TextContent(type="text", text=json.dumps(meta)),
            ],
            structured_content=meta,
        )

    @server.tool()
    async def set_code(
        actor: Path,
        code: Annotated[str, Field(description="Python drawing code (Drawing) or WGSL (ShaderActor)")],
    ) -> CallToolResult:
        """Replace a Drawing's drawing code or a ShaderActor's WGSL while it runs.

        Code that does not compile, or drawing code that fails on the next frames, is refused
        with its line and column, and the previous code keeps running."""
        return await _answer("set_code", lambda: runtime.set_code(actor, code))

    @server.tool()
    async def stop_actor(actor: Path) -> CallToolResult:
        """Stop an actor and its children (sinks finalize their files); returns its final state."""
        return await _answer("stop_actor", lambda: runtime.stop_actor(actor))

    @server.tool()
    async def restart_actor(actor: Path) -> CallToolResult:
        """Restart an actor: a fresh instance from its constructor arguments, same parent and connections,
        live code kept."""
        return await _answer("restart_actor", lambda: runtime.restart_actor(actor))

    @server.tool(annotations=_READ_ONLY)
    async def tail_logs(
        actor: Annotated[str | None, Field(description="only records of this actor path and its subtree")] = None,
        limit: Annotated[int, Field(ge=1, le=2000)] = 50,
        level: Annotated[str | None, Field(description="debug, info, warning, error or critical")] = None,
        since: Annotated[int, Field(ge=0, description="only records after this sequence number")] = 0,
    ) -> CallToolResult:
        """Recent structured log records (seq, time, level, logger, message, actor, exception), oldest first."""
        return await _answer("tail_logs", lambda: runtime.tail_logs(actor, limit, level, since))


def _add_resources(server: MCPServer[Any], runtime: RuntimeAccess) -> None:
    @server.resource(
        "streamlib://graph",
        name="graph",
        mime_type="application/json",
        description="actors, ports, connections and states (as get_graph)",
    )
    async def graph() -> str:
        return json.dumps(await runtime.get_graph(), default=repr)

    @server.resource(
        "streamlib://metrics",
        name="metrics",
        mime_type="application/json",
        description="every actor's counters (as get_stats)",
    )
    async def metrics() -> str:
        return json.dumps(await runtime.get_stats(), default=repr)

    @server.resource(
        "streamlib://catalogue",
        name="catalogue",
        mime_type="application/json",
        description="every actor type (as list_actor_types)",
    )
    async def catalogue() -> str:
        return json.dumps({"types": await runtime.list_actor_types()}, default=repr)


# -- running it -----------------------------------------------------------------------------------


async def serve_stdio(runtime: RuntimeAccess | None = None) -> None:
    """Serve over this process's stdin/stdout until the client closes them."""
    await build_server(runtime).run_stdio_async()


async def serve_http(
    runtime: RuntimeAccess | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until cancelled.

    A non-loopback ``host`` requires ``token`` (clients send ``Authorization: Bearer TOKEN``).
    ``on_ready(url)`` is called once the socket listens (with the real port when ``port=0``)."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ValueError(
            f"listening on {host} reaches beyond this machine: give a token (--token or STREAMLIB_MCP_TOKEN) "
            "that clients send as 'Authorization: Bearer TOKEN'"
        )
    server = build_server(runtime, token=token, public_url=f"http://{_url_host(host)}:{port or 80}")
    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    web = uvicorn.Server(config)

    import asyncio

    serving = asyncio.ensure_future(web.serve())
    while not web.started:
        if serving.done():
            serving.result()  # raises why it could not start (the port is taken ...)
            return
        await asyncio.sleep(0.02)
    bound = web.servers[0].sockets[0].getsockname()[1] if web.servers else port
    url = f"http://{_url_host(host)}:{bound}/mcp"
    if on_ready is not None:
        on_ready(url)
    else:
        print(f"streamlib mcp: listening on {url}", file=sys.stderr, flush=True)
    try:
        await serving
    finally:
        web.should_exit = True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
