"""Agents drive a live runtime through MCP (the Model Context Protocol).

``streamlib mcp`` serves a fresh runtime over stdio (or streamable HTTP); a program serves
its own running actors with::

    from streamlib.agents import LocalRuntime, serve_stdio
    await serve_stdio(LocalRuntime())

The pieces: :mod:`.runtime` (what each tool does, behind the small :class:`RuntimeAccess`
interface, so a remote runtime can stand in for this process's), :mod:`.server` (the MCP
tools and resources, on the official ``mcp`` SDK), :mod:`.catalogue` (actor types as JSON,
also behind ``docs/catalogue.md``), :mod:`.sandbox` (the resource fence around agent-written
actors), :mod:`.logs` (recent log records as data) and :mod:`.errors` (the one structured
error every tool returns). See ``docs/agents.md``.

The MCP SDK is imported only by :mod:`.server` (and the names below that live there).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ToolFailure
from .logs import LogBuffer
from .runtime import TOOL_NAMES, LocalRuntime, RuntimeAccess, Snapshot
from .sandbox import SandboxDispatcher, SandboxLimits, SandboxViolation

_SERVER_NAMES = ("build_server", "serve_http", "serve_stdio")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        value = getattr(importlib.import_module(".server", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamlib.agents' has no attribute {name!r}")


__all__ = [
    "TOOL_NAMES",
    "LocalRuntime",
    "LogBuffer",
    "RuntimeAccess",
    "SandboxDispatcher",
    "SandboxLimits",
    "SandboxViolation",
    "Snapshot",
    "ToolFailure",
    "build_server",
    "serve_http",
    "serve_stdio",
]
