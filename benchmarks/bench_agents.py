"""The agent tools over a real MCP transport: get_graph with 100 actors, snapshot of a 1080p output.

A ``streamlib mcp`` subprocess is driven over stdio by the official MCP client (what an agent's
host does). Figures, each with a baseline from the same session:

* ``get_graph`` with 100 running actors (50 TestPattern 64x36 >> 50 Blur, 50 connections):
  median round trip, against ``tail_logs(limit=1)``, a tool call that does next to nothing
  (the transport's and the SDK's own floor; the 2026 protocol has no ``ping``);
* ``snapshot`` of a 1920x1080 TestPattern output at the default width (640) and at full width:
  median round trip, against the same scaling + PNG encoding done in this process without
  MCP (what the snapshot itself must do).

Targets: ``get_graph`` <= 20 ms, ``snapshot`` (640 wide) <= 50 ms, medians.
Run: ``python benchmarks/bench_agents.py [--calls 200] [--short]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from measure import Target, describe_tree, percentile, print_table

ROOT = Path(__file__).resolve().parent.parent

TARGETS = [
    Target("get_graph_ms", "get_graph, 100 actors, stdio round trip (median)", "<", 20.0, " ms"),
    Target("snapshot_640_ms", "snapshot of a 1080p output, 640 wide, stdio (median)", "<", 50.0, " ms"),
]


async def timed(calls: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    for _ in range(3):  # warm-up
        await fn()
    found = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        found.append((time.perf_counter() - start) * 1000)
    return found


def local_encode_ms(calls: int, width: int) -> list[float]:
    """Scale + PNG-encode a 1080p gradient frame (what TestPattern('gradient') sends) here,
    without MCP: the snapshot's own work."""
    import numpy as np

    from streamlib.agents.runtime import _encode

    frame = np.empty((1080, 1920, 3), np.uint8)
    frame[:, :, 0] = np.linspace(0, 255, 1920).astype(np.uint8)[None, :]
    frame[:, :, 1] = np.linspace(0, 255, 1080).astype(np.uint8)[:, None]
    frame[:, :, 2] = 128
    found = []
    for _ in range(calls):
        start = time.perf_counter()
        _encode(frame, width)
        found.append((time.perf_counter() - start) * 1000)
    return found


async def run(calls: int) -> dict[str, float]:
    from mcp import Client, StdioServerParameters

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    params = StdioServerParameters(command=sys.executable, args=["-m", "streamlib", "mcp"], env=env)
    async with Client(params) as client:

        async def tool(tool_name: str, **arguments: Any) -> dict[str, Any]:
            result = await client.call_tool(tool_name, arguments)
            if result.is_error:
                raise RuntimeError(f"{tool_name}: {result.structured_content}")
            return result.structured_content or {}

        for i in range(50):
            await tool(
                "spawn_actor",
                type="TestPattern",
                name=f"p{i}",
                params={"pattern": "gradient", "width": 64, "height": 36, "fps": 5},
            )
            await tool("spawn_actor", type="Blur", name=f"b{i}")
            await tool("connect", source=f"/p{i}.video", target=f"/b{i}.video")
        graph = await tool("get_graph")
        assert len(graph["actors"]) == 100 and len(graph["connections"]) == 50, graph["actors"][:2]
        await tool(
            "spawn_actor",
            type="TestPattern",
            name="hd",
            params={"pattern": "gradient", "width": 1920, "height": 1080, "fps": 30},
        )

        noop = await timed(calls, lambda: tool("tail_logs", limit=1))
        graph_ms = await timed(calls, lambda: tool("get_graph"))
        shot_640 = await timed(max(calls // 4, 10), lambda: tool("snapshot", output="/hd.video", width=640))
        shot_full = await timed(max(calls // 10, 5), lambda: tool("snapshot", output="/hd.video", width=1920))
    local_640 = local_encode_ms(max(calls // 4, 10), 640)
    local_full = local_encode_ms(max(calls // 10, 5), 1920)

    rows = []
    figures: dict[str, float] = {}
    for label, key, values in (
        ("tail_logs(limit=1) (a no-op tool)", "noop_ms", noop),
        ("get_graph, 100 actors", "get_graph_ms", graph_ms),
        ("snapshot 1080p -> 640 wide", "snapshot_640_ms", shot_640),
        ("  same work here, no MCP", "local_640_ms", local_640),
        ("snapshot 1080p full width", "snapshot_full_ms", shot_full),
        ("  same work here, no MCP", "local_full_ms", local_full),
    ):
        median = statistics.median(values)
        figures[key] = median
        rows.append([label, f"{median:.2f}", f"{percentile(values, 90):.2f}", f"{min(values):.2f}", len(values)])
    print_table("Agent tools over stdio (ms)", ["call", "median", "p90", "best", "calls"], rows)
    figures["get_graph_over_noop"] = figures["get_graph_ms"] / figures["noop_ms"]
    figures["snapshot_640_over_local"] = figures["snapshot_640_ms"] / figures["local_640_ms"]
    print(
        f"\nget_graph / no-op tool: {figures['get_graph_over_noop']:.1f}x; "
        f"snapshot(640) / local encode: {figures['snapshot_640_over_local']:.1f}x"
    )
    for target in TARGETS:
        value = figures[target.key]
        print(
            f"{'PASS' if target.passed(value) else 'FAIL'} {target.description}: {value:.2f} ms (goal {target.goal()})"
        )
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per figure (default 200)")
    parser.add_argument("--short", action="store_true", help="a quick run (40 calls)")
    args = parser.parse_args(argv)
    print(describe_tree())
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return asyncio.run(run(40 if args.short else args.calls))


if __name__ == "__main__":
    main()
