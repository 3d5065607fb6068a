"""``streamlib mcp`` and ``streamlib catalogue``: the agents layer's commands.

``streamlib mcp`` serves a fresh runtime in this process to one MCP client: over stdio by
default (what Claude Desktop and most clients launch), or over streamable HTTP with
``--http 127.0.0.1:PORT`` (any other address needs ``--token`` or ``STREAMLIB_MCP_TOKEN``).
When the client goes away, every actor is stopped so sinks finalize their files. With
``--connect actor://HOST:PORT`` it serves the tools of a runtime that ``streamlib node
--agents`` serves elsewhere instead (that runtime's actors keep running when the client goes).
``streamlib catalogue --json`` prints the actor catalogue that ``list_actor_types`` returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_agent_commands", "run_catalogue", "run_mcp"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.I)


def parse_size(text: str) -> int:
    """``1GiB``, ``512M``, ``2147483648`` -> bytes (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 512MiB)")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit[0]]
    return int(number * scale)


def add_agent_commands(commands: Any) -> None:
    """Register ``mcp`` and ``catalogue`` on the ``streamlib`` command's subparsers; each
    sets ``run`` (called with the parsed arguments, returns the exit status), as every ``streamlib`` command does."""
    mcp = commands.add_parser(
        "mcp",
        help="serve a live runtime to an AI agent over MCP (stdio, or --http)",
        description="Serve a fresh streamlib runtime to one MCP client: stdio by default, streamable HTTP with "
        "--http. Agents list actor types, define their own actor classes (sandboxed), spawn, wire, "
        "look (snapshots) and rewrite drawing code and shaders live. See docs/agents.md.",
    )
    mcp.add_argument(
        "--http", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio"
    )
    mcp.add_argument(
        "--token", help="bearer token HTTP clients must send (required off loopback; default: $STREAMLIB_MCP_TOKEN)"
    )
    mcp.add_argument(
        "--connect",
        metavar="actor://HOST:PORT",
        help="drive the runtime served at that address by 'streamlib node --agents' instead of a fresh one here "
        "(its sandbox limits apply there)",
    )
    mcp.add_argument(
        "--node-token-file",
        type=Path,
        metavar="FILE",
        help="with --connect: file whose first line is the node's token (default: $STREAMLIB_TOKEN or "
        "$STREAMLIB_TOKEN_FILE)",
    )
    mcp.add_argument(
        "--memory",
        type=parse_size,
        default="1GiB",
        help="sandbox: address space a defined actor's worker may add (default 1GiB)",
    )
    mcp.add_argument(
        "--cpu-per-call", type=float, default=2.0, help="sandbox: CPU seconds one process() call may use (default 2)"
    )
    mcp.add_argument(
        "--open-files", type=int, default=64, help="sandbox: files a defined actor's worker may open (default 64)"
    )
    mcp.add_argument("--log-level", default="WARNING", help="log level on stderr (default WARNING)")
    mcp.set_defaults(run=run_mcp)

    catalogue = commands.add_parser("catalogue", help="print the actor catalogue (every ready actor type)")
    catalogue.add_argument("--json", action="store_true", help="the JSON that the MCP tool list_actor_types returns")
    catalogue.set_defaults(run=run_catalogue)


def run_catalogue(args: argparse.Namespace) -> int:
    from .catalogue import catalogue

    data = catalogue()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max(len(a["name"]) for a in data["actors"])
    for entry in data["actors"]:
        text = entry.get("summary") if entry.get("available", True) else f"(unavailable: {entry.get('error')})"
        print(f"{entry['name']:<{width}}  {text}")
    return 0


def run_mcp(args: argparse.Namespace) -> int:
    try:
        import anyio
        import mcp  # noqa: F401
    except ImportError:
        print("streamlib mcp: the MCP SDK is not installed: pip install 'streamlib[agents]'", file=sys.stderr)
        return 2
    from .runtime import LocalRuntime, RuntimeAccess

    runtime: RuntimeAccess
    if args.connect:
        from .remote import RemoteRuntime

        try:
            node_token = args.node_token_file.read_text().splitlines()[0].strip() if args.node_token_file else None
            runtime = RemoteRuntime(args.connect, node_token)
        except (ValueError, OSError, IndexError) as exc:
            print(f"streamlib mcp: {exc}", file=sys.stderr)
            return 2
    if args.memory < (16 << 20) or args.cpu_per_call <= 0 or args.open_files < 1:
        print("streamlib mcp: --memory must be at least 16MiB, --cpu-per-call > 0, --open-files >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    from streamlib.listening import is_loopback

    from .sandbox import SandboxLimits
    from .server import serve_http, serve_stdio

    token = args.token or os.environ.get("STREAMLIB_MCP_TOKEN") or None
    host, port = "", 0
    if args.http:
        host, sep, port_text = args.http.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            print(f"streamlib mcp: --http wants HOST:PORT such as 127.0.0.1:8765, got {args.http!r}", file=sys.stderr)
            return 2
        port = int(port_text)
        if not is_loopback(host) and not token:
            print(
                f"streamlib mcp: --http {args.http} listens beyond this machine: give a token with --token or "
                "STREAMLIB_MCP_TOKEN (clients send 'Authorization: Bearer TOKEN'), or listen on 127.0.0.1",
                file=sys.stderr,
            )
            return 2
    if not args.connect:
        limits = SandboxLimits(memory=args.memory, cpu_per_call=args.cpu_per_call, open_files=args.open_files)
        runtime = LocalRuntime(sandbox=limits)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated server still stops its actors (files finalize)
    try:
        if args.http:
            anyio.run(lambda: serve_http(runtime, host=host, port=port, token=token))
        else:
            anyio.run(serve_stdio, runtime)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"streamlib mcp: cannot serve: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.connect:  # a remote runtime's actors are its own: they keep running
            _stop_everything()
        runtime.close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_everything(timeout: float = 10.0) -> None:
    """Stop every running actor (sinks write their trailers) before the process exits."""
    import time

    from streamlib import running_actors

    roots = running_actors()
    completions = [actor.stop() for actor in roots]
    deadline = time.monotonic() + timeout
    for actor, completion in zip(roots, completions, strict=True):
        try:
            completion.wait(max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            print(f"streamlib mcp: {actor.path} did not stop within {timeout:g} s", file=sys.stderr)
