"""A scripted agent (no language model) drives a live streamlib runtime through MCP.

It starts ``streamlib mcp`` as a subprocess and talks to it with the official MCP client
over stdio, exactly as Claude Desktop or any other MCP client would, printing every tool
call and its result:

1. ``list_actor_types``: what can be spawned, with parameters as JSON Schema;
2. ``define_actor`` with a filter that has a typo -> a structured ``syntax_error`` with its
   line and column -> the fixed source is loaded (it runs sandboxed, in a worker process);
3. ``spawn_actor`` x4 and ``connect`` x3: TestPattern >> Negative (the agent's) >> Drawing >> FileSink;
4. ``snapshot``: the latest frame as a PNG, whose pixels the agent checks;
5. ``set_code``: new drawing code, live (first a broken version, refused with its line);
6. ``stop_actor`` on the sink, which finalizes the MP4 -- then PyAV reads it back.

Run: ``python examples/agent_session.py [--out DIR]``. Against a runtime served elsewhere (the
same session, the actors living in that process): ``streamlib node --agents`` in one terminal,
then ``python examples/agent_session.py --connect actor://127.0.0.1:7400``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, ImageContent

FILTER = textwrap.dedent(
    """\
    class Negative(Actor):
        '''255 - value on every channel.'''

        default_fps = None  # ticks when a frame arrives

        def __init__(self, **kw):
            super().__init__(**kw)
            self.inputs['video'] = StreamInput('video', VideoFrame)
            self.outputs['video'] = StreamOutput('video', VideoFrame)

        async def process(self, tick):
            frame = await self.inputs['video'].try_read()
            if frame is not None:
                await self.outputs['video'].send(frame.with_data(255 - frame.data))
    """
)
TYPO = FILTER.replace("try_read()", "try_read(")  # what the "model" wrote first
RED = "canvas.drawRect(skia.Rect.MakeXYWH(0, 0, 96, 96), skia.Paint(Color=skia.ColorRED))\n"
BLUE = RED.replace("ColorRED", "ColorBLUE")


def show(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


async def call(client: Client, tool: str, **arguments: Any) -> CallToolResult:
    printable = {k: (v if not isinstance(v, str) or len(v) < 60 else v[:57] + "...") for k, v in arguments.items()}
    print(f"-> {tool}({show(printable, 200)})")
    result = await client.call_tool(tool, arguments)
    body = result.structured_content
    if result.is_error:
        print(f"   ERROR {show(body)}")
    else:
        print(f"   {show(body)}")
    return result


async def session(out: Path, connect: str | None = None) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    target = ["--connect", connect] if connect else []  # a runtime served by `streamlib node --agents`
    server = StdioServerParameters(command=sys.executable, args=["-m", "streamlib", "mcp", *target], env=env)
    async with Client(server) as client:
        types = (await call(client, "list_actor_types")).structured_content or {}
        print(f"   ({len(types['types'])} actor types)")

        broken = await call(client, "define_actor", source=TYPO)
        error = (broken.structured_content or {})["error"]
        print(f"   the agent reads: {error['kind']} at line {error['line']}, column {error['column']}; fixing it")
        await call(client, "define_actor", source=FILTER)

        movie = out / "agent_session.mp4"
        await call(
            client,
            "spawn_actor",
            type="TestPattern",
            name="pattern",
            params={"pattern": "gradient", "width": 320, "height": 180, "fps": 30},
        )
        await call(client, "spawn_actor", type="Negative", name="negative")
        await call(client, "spawn_actor", type="Drawing", name="overlay", params={"draw": RED})
        await call(client, "spawn_actor", type="FileSink", name="sink", params={"path": str(movie)})
        for left, right in (("pattern", "negative"), ("negative", "overlay"), ("overlay", "sink")):
            await call(client, "connect", source=f"/{left}.video", target=f"/{right}.video")

        await wait_for_frames(client, 15)
        shot = await call(client, "snapshot", output="/overlay.video", width=160)
        image = next(c for c in shot.content if isinstance(c, ImageContent))
        png = base64.b64decode(image.data)
        (out / "snapshot.png").write_bytes(png)
        pixels = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        print(
            f"   the agent looks: box {tuple(int(v) for v in pixels[20, 20])}, "
            f"background blue {int(pixels[80, 150, 2])} (128 inverted)"
        )

        await call(client, "set_code", actor="/overlay", code="canvas.drawRect(ctx.widht)\n")
        sent = await wait_for_frames(client, 0)
        await call(client, "set_code", actor="/overlay", code=BLUE)
        await wait_for_frames(client, sent + 20)
        await call(client, "stop_actor", actor="/sink")
        await call(client, "get_graph")
        logs = await call(client, "tail_logs", limit=5)
        print(f"   ({len((logs.structured_content or {})['records'])} recent log records)")

    red = blue = 0
    with av.open(str(movie)) as container:
        for frame in container.decode(video=0):
            r, _, b = frame.to_ndarray(format="rgb24")[30:60, 30:60].reshape(-1, 3).mean(axis=0)
            red += r > 180 and b < 80
            blue += b > 180 and r < 80
    print(f"wrote {movie}: {red} frames with the red box, then {blue} with the blue one (the live change)")
    if not red or not blue:
        raise SystemExit("the file does not show the live change")


async def wait_for_frames(client: Client, count: int) -> int:
    """Poll get_stats until the sink has taken ``count`` frames; return how many it has."""
    for _ in range(600):
        result = await client.call_tool("get_stats", {"actor": "/sink"})
        taken = int((result.structured_content or {}).get("messages_in", 0))
        if taken >= count:
            return taken
        await asyncio.sleep(0.1)
    raise SystemExit(f"the sink did not receive {count} frames")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument(
        "--connect", metavar="actor://HOST:PORT", help="drive the runtime that 'streamlib node --agents' serves there"
    )
    args = parser.parse_args()
    outdir = args.out or Path(tempfile.mkdtemp(prefix="streamlib-agent-session-"))
    outdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(session(outdir.resolve(), args.connect))
