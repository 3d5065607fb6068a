"""Agents drive a live runtime through MCP, tested with the official SDK's own client.

In process (the SDK's in-memory connection to an ``MCPServer``), over stdio (a ``streamlib mcp``
subprocess) and over streamable HTTP (``streamlib mcp --http`` with a bearer token). The
end-to-end session builds TestPattern >> an agent-defined filter (first broken, then fixed)
>> Drawing >> FileSink, looks at a snapshot's pixels, rewrites the drawing code live, stops,
and reads the file back with PyAV.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mcp = pytest.importorskip("mcp", reason="the agents extra (mcp) is not installed")
cv2 = pytest.importorskip("cv2")
av = pytest.importorskip("av")
pytest.importorskip("skia")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp_types import CallToolResult, ImageContent  # noqa: E402

from streamlib.agents import TOOL_NAMES, LocalRuntime, SandboxLimits, build_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

FILTER_BROKEN = textwrap.dedent(
    """\
    class Negative(Actor):
        '''255 - value on every channel.'''

        default_fps = None

        def __init__(self, **kw):
            super().__init__(**kw)
            self.inputs['video'] = StreamInput('video', VideoFrame)
            self.outputs['video'] = StreamOutput('video', VideoFrame)

        async def process(self, tick):
            frame = await self.inputs['video'].try_read(
            if frame is not None:
                await self.outputs['video'].send(frame.with_data(255 - frame.data))
    """
)
FILTER_FIXED = FILTER_BROKEN.replace("try_read(\n", "try_read()\n")

RED_BOX = "canvas.drawRect(skia.Rect.MakeXYWH(0, 0, 96, 96), skia.Paint(Color=skia.ColorRED))\n"
BLUE_BOX = "canvas.drawRect(skia.Rect.MakeXYWH(0, 0, 96, 96), skia.Paint(Color=skia.ColorBLUE))\n"


def data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    assert result.structured_content is not None
    found: dict[str, Any] = result.structured_content["error"]
    assert json.loads(result.content[0].text)["error"] == found  # type: ignore[union-attr]
    return found


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def stats(client: Client, path: str) -> dict[str, Any]:
    return data(await client.call_tool("get_stats", {"actor": path}))


@pytest.fixture(scope="module")
def runtime() -> Any:
    found = LocalRuntime(sandbox=SandboxLimits(cpu_per_call=1.0, trial_timeout=2.0))
    # Built here, not on a warming thread: CPython 3.11's ast.parse is not safe to run in two
    # threads at once ("AST constructor recursion depth mismatch"), and the tests parse too.
    found.catalogue_entries()
    yield found
    found.close()


async def test_the_tools_are_there_with_their_names_and_schemas(runtime: LocalRuntime) -> None:
    async with Client(build_server(runtime)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(TOOL_NAMES) <= set(tools)
        assert tools["spawn_actor"].input_schema["required"] == ["type"]
        assert {"source", "target"} <= set(tools["connect"].input_schema["properties"])
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"streamlib://graph", "streamlib://metrics", "streamlib://catalogue"} <= resources


async def test_end_to_end_agent_session(runtime: LocalRuntime, tmp_path: Path) -> None:
    async with Client(build_server(runtime)) as client:
        out = tmp_path / "agent.mp4"
        types = {t["name"]: t for t in data(await client.call_tool("list_actor_types", {}))["types"]}
        assert types["FileSink"]["needs"] == ["av", "numpy", "opencv-python"]
        assert {"name": "video", "direction": "input", "type": "VideoFrame"} in types["FileSink"]["ports"]

        broken = error(await client.call_tool("define_actor", {"source": FILTER_BROKEN}))
        assert broken["kind"] == "syntax_error"
        assert broken["line"] == 12 and broken["column"] > 0
        assert "try_read(" in broken["source_line"]
        defined = data(await client.call_tool("define_actor", {"source": FILTER_FIXED}))
        assert defined["classes"] == ["Negative"] and defined["sandboxed"] is True
        negative = defined["types"][0]  # described like a ready actor, from the source the agent sent
        assert negative["summary"] == "255 - value on every channel."
        assert {"name": "video", "direction": "input", "type": "VideoFrame"} in negative["ports"]
        assert negative["dispatchers"] == {"default": "sandbox", "allowed": ["sandbox"]}

        spawn = {
            "pattern": ("TestPattern", {"pattern": "gradient", "width": 320, "height": 180, "fps": 30}),
            "negative": ("Negative", {}),
            "overlay": ("Drawing", {"draw": RED_BOX}),
            "sink": ("FileSink", {"path": str(out)}),
        }
        for name, (kind, params) in spawn.items():
            assert data(await client.call_tool("spawn_actor", {"type": kind, "name": name, "params": params}))[
                "path"
            ] == (f"/{name}")
        for left, right in (("pattern", "negative"), ("negative", "overlay")):
            data(await client.call_tool("connect", {"source": f"/{left}.video", "target": f"/{right}.video"}))

        async def overlay_synced() -> bool:
            return int((await stats(client, "/overlay"))["inputs"]["video"]["taken"]) >= 1

        # The overlay, spawned with nothing connected, starts on its own clock and canvas
        # (1280x720) once its first-tick grace is over; a file's frame size is fixed by its first
        # frame, so the sink joins once the overlay has drawn over a frame from upstream.
        await until(overlay_synced, what="the overlay draws over the negative's frames")
        data(await client.call_tool("connect", {"source": "/overlay.video", "target": "/sink.video"}))

        graph = data(await client.call_tool("get_graph", {}))
        edges = {(c["from"], c["to"]) for c in graph["connections"]}
        assert {
            ("/pattern.video", "/negative.video"),
            ("/negative.video", "/overlay.video"),
            ("/overlay.video", "/sink.video"),
        } <= edges
        assert next(a for a in graph["actors"] if a["path"] == "/negative")["dispatcher"] == "sandbox"

        async def written(n: int) -> bool:
            return int((await stats(client, "/sink"))["messages_in"]) >= n

        await until(lambda: written(10), what="10 frames reach the sink")
        shot = await client.call_tool("snapshot", {"output": "/overlay.video", "width": 160})
        meta = data(shot)
        assert (meta["width"], meta["height"], meta["source_width"]) == (160, 90, 320)
        image = next(c for c in shot.content if isinstance(c, ImageContent))
        pixels = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(image.data), np.uint8), 1), cv2.COLOR_BGR2RGB)
        assert pixels.shape == (90, 160, 3)
        assert tuple(pixels[20, 20]) == (255, 0, 0)  # the red box, drawn over the inverted gradient
        assert abs(int(pixels[80, 150, 2]) - 127) <= 2  # blue 128 inverted, outside the box

        bad = error(await client.call_tool("set_code", {"actor": "/overlay", "code": "canvas.drawRect(\n"}))
        assert bad["kind"] == "compile_error" and bad["line"] == 1
        failing = error(
            await client.call_tool("set_code", {"actor": "/overlay", "code": "x = 1\ncanvas.drawRect(ctx.widht)\n"})
        )
        assert failing["kind"] == "runtime_error" and failing["line"] == 2 and "widht" in failing["message"]
        frames_red = int((await stats(client, "/sink"))["messages_in"])
        data(await client.call_tool("set_code", {"actor": "/overlay", "code": BLUE_BOX}))
        await until(lambda: written(frames_red + 15), what="15 more frames after the new code")
        stopped = data(await client.call_tool("stop_actor", {"actor": "/sink"}))
        assert stopped["state"] == "stopped"
        for name in ("pattern", "negative", "overlay"):
            data(await client.call_tool("stop_actor", {"actor": f"/{name}"}))

        colours = []
        with av.open(str(out)) as container:
            for frame in container.decode(video=0):
                colours.append(frame.to_ndarray(format="rgb24")[30:60, 30:60].reshape(-1, 3).mean(axis=0))
        reds = [i for i, c in enumerate(colours) if c[0] > 180 and c[2] < 80]
        blues = [i for i, c in enumerate(colours) if c[2] > 180 and c[0] < 80]
        assert len(reds) >= 5 and len(blues) >= 10, (len(colours), len(reds), len(blues))
        assert max(reds) < min(blues)  # red first, then the live change to blue


async def test_bad_input_gets_a_structured_error_and_changes_nothing(runtime: LocalRuntime) -> None:
    async with Client(build_server(runtime)) as client:
        before = data(await client.call_tool("get_graph", {}))["actors"]
        unknown = error(await client.call_tool("stop_actor", {"actor": "/nobody"}))
        assert unknown["kind"] == "unknown_actor" and unknown["actor"] == "/nobody"
        wrong_type = error(await client.call_tool("spawn_actor", {"type": "TestPattern", "params": {"width": "wide"}}))
        assert wrong_type["kind"] == "invalid_argument" and "width" in wrong_type["message"]
        no_type = error(await client.call_tool("spawn_actor", {"type": "NoSuchActor"}))
        assert no_type["kind"] == "unknown_type"
        schema = error(await client.call_tool("snapshot", {"output": 5}))
        assert schema["kind"] == "invalid_argument" and schema["details"]["argument"] == "output"
        pattern = data(
            await client.call_tool("spawn_actor", {"type": "TestPattern", "params": {"width": 64, "height": 36}})
        )
        port = error(await client.call_tool("connect", {"source": f"{pattern['path']}.audio", "target": "/x"}))
        assert port["kind"] == "unknown_port" and port["port"] == "audio" and "'video'" in port["message"]
        nothing = error(await client.call_tool("define_actor", {"source": "x = 1\n"}))
        assert nothing["kind"] == "definition_error"
        raising = error(await client.call_tool("define_actor", {"source": "class A(Actor):\n    y = 1 / 0\n"}))
        assert raising["kind"] == "definition_error" and raising["line"] == 2
        data(await client.call_tool("stop_actor", {"actor": pattern["path"]}))
        after = data(await client.call_tool("get_graph", {}))["actors"]
        assert [a["path"] for a in after if a["state"] == "running"] == [
            a["path"] for a in before if a["state"] == "running"
        ]


SANDBOXED = textwrap.dedent(
    """\
    import os

    class Spin(Actor):
        default_fps = 20
        async def process(self, tick):
            while True:
                pass

    class Hog(Actor):
        default_fps = 20
        async def process(self, tick):
            self.block = np.ones(10 * 2**30, np.uint8)

    class Quit(Actor):
        default_fps = 20
        async def process(self, tick):
            os._exit(3)

    class Hoard(Actor):
        default_fps = 20
        async def process(self, tick):
            self.files = [open(os.devnull) for _ in range(1000)]
    """
)


async def test_the_sandbox_fails_a_spinning_a_hungry_an_exiting_and_a_hoarding_actor_alone(
    runtime: LocalRuntime,
) -> None:
    async with Client(build_server(runtime)) as client:
        data(await client.call_tool("define_actor", {"source": SANDBOXED}))
        bystander = data(
            await client.call_tool("spawn_actor", {"type": "TestPattern", "params": {"width": 64, "height": 36}})
        )
        for kind in ("Spin", "Hog", "Quit", "Hoard"):
            data(await client.call_tool("spawn_actor", {"type": kind, "name": kind.lower()}))

        async def all_failed() -> bool:
            actors = {a["path"]: a for a in data(await client.call_tool("get_graph", {}))["actors"]}
            return all(actors[f"/{k}"]["state"] == "failed" for k in ("spin", "hog", "quit", "hoard"))

        await until(all_failed, timeout=30, what="the three sandboxed actors fail")
        actors = {a["path"]: a for a in data(await client.call_tool("get_graph", {}))["actors"]}
        assert "exceeded its CPU time limit of 1 s per call" in actors["/spin"]["failure"]
        assert actors["/spin"]["limit"] == "cpu"
        assert "exceeded memory limit 1 GiB" in actors["/hog"]["failure"] and actors["/hog"]["limit"] == "memory"
        assert "exited with code 3" in actors["/quit"]["failure"]
        assert (
            "exceeded its open files limit" in actors["/hoard"]["failure"] and actors["/hoard"]["limit"] == "open_files"
        )
        ticks = (await stats(client, bystander["path"]))["ticks"]
        await until(lambda: _more_ticks(client, bystander["path"], ticks), what="the bystander keeps ticking")
        logs = data(await client.call_tool("tail_logs", {"actor": "/hog", "level": "error"}))["records"]
        assert any(r.get("event") == "failed" and "memory limit" in r["message"] for r in logs)
        data(await client.call_tool("stop_actor", {"actor": bystander["path"]}))


async def _more_ticks(client: Client, path: str, ticks: int) -> bool:
    return int((await stats(client, path))["ticks"]) > ticks


async def test_module_level_code_that_spins_is_refused_before_it_runs_here(runtime: LocalRuntime) -> None:
    async with Client(build_server(runtime)) as client:
        refused = error(await client.call_tool("define_actor", {"source": "while True:\n    pass\n"}))
        assert refused["kind"] == "sandbox_violation"
        # The CPU limit (2 s) stops it; on a machine too loaded to give it 2 s of CPU within the
        # trial's wall-clock bound (5 s), that bound does: refused before it runs here either way.
        message = refused["message"]
        assert "2 s" in message or "SIGXCPU" in message or "did not finish within" in message


@pytest.fixture(scope="module", autouse=True)
def http_process() -> Iterator[subprocess.Popen[str]]:
    """``streamlib mcp --http`` with a token, started with the module's first test so its
    start-up (importing the SDK, uvicorn ...) overlaps the other tests."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlib", "mcp", "--http", "127.0.0.1:0", "--token", "s3cret"],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    proc.terminate()
    proc.wait(20)


async def test_over_streamable_http_with_a_token(http_process: subprocess.Popen[str]) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    assert http_process.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(http_process.stderr.readline), 60)
    assert "listening on" in line, line
    url = line.rsplit(" ", 1)[1].strip()
    async with httpx2.AsyncClient() as raw:
        refused = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401
    authorized = httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret"}, timeout=30)
    async with authorized, Client(streamable_http_client(url, http_client=authorized)) as client:
        made = data(
            await client.call_tool("spawn_actor", {"type": "TestPattern", "params": {"width": 64, "height": 36}})
        )
        graph = data(await client.call_tool("get_graph", {}))
        assert [a["path"] for a in graph["actors"]] == [made["path"]]


def test_a_public_address_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    from streamlib.cli import main

    assert main(["mcp", "--http", "0.0.0.0:8765"]) == 2
    err = capsys.readouterr().err
    assert "token" in err and "Traceback" not in err


async def stdio_session() -> dict[str, Any]:
    """A short session with a ``streamlib mcp`` subprocess over stdio (the SDK's stdio client)."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "streamlib", "mcp"], env=ENV)
    async with Client(params) as client:
        made = data(
            await client.call_tool("spawn_actor", {"type": "TestPattern", "params": {"width": 64, "height": 36}})
        )
        shot = data(await client.call_tool("snapshot", {"output": made["path"], "width": 32}))
        resource = await client.read_resource("streamlib://graph")
        graph = json.loads(resource.contents[0].text)  # type: ignore[union-attr]
        return {"made": made, "shot": shot, "graph": graph}


@pytest.fixture(scope="module", autouse=True)
def stdio_results() -> Iterator[concurrent.futures.Future[dict[str, Any]]]:
    """The stdio session, run on a thread from the module's first test on, so the subprocess's
    start-up overlaps the other tests; the test below waits for it and checks what it saw.

    What the stdio client imports on first use is imported here first, on this thread: pytest
    rewrites anyio's modules as it imports them (anyio is a pytest plugin), and CPython 3.11's
    AST builder keeps its recursion count in state shared by all threads, so a parse on the
    session's thread while the tests compile code on this one can fail with "AST constructor
    recursion depth mismatch" (CPython gh-106905; seen once in a full run)."""
    import anyio._core._subprocesses  # noqa: F401

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(asyncio.run, stdio_session())


def test_over_stdio_a_subprocess_runtime(stdio_results: concurrent.futures.Future[dict[str, Any]]) -> None:
    found = stdio_results.result(timeout=120)
    assert found["made"]["path"] == "/test_pattern"
    assert (found["shot"]["width"], found["shot"]["source_width"]) == (32, 64)
    assert [a["path"] for a in found["graph"]["actors"]] == ["/test_pattern"]


async def test_restart_rebuilds_an_actor_with_its_wiring_and_live_code(runtime: LocalRuntime) -> None:
    async with Client(build_server(runtime)) as client:
        source = data(
            await client.call_tool(
                "spawn_actor",
                {"type": "TestPattern", "name": "src", "params": {"pattern": "gradient", "width": 96, "height": 54}},
            )
        )["path"]
        overlay = data(
            await client.call_tool("spawn_actor", {"type": "Drawing", "name": "ov", "params": {"draw": RED_BOX}})
        )["path"]
        data(await client.call_tool("connect", {"source": source, "target": overlay}))
        data(await client.call_tool("set_code", {"actor": overlay, "code": BLUE_BOX}))
        restarted = data(await client.call_tool("restart_actor", {"actor": overlay}))
        assert restarted["actor"] == overlay and restarted["state"] == "running"

        async def blue() -> bool:
            shot = await client.call_tool("snapshot", {"output": overlay, "width": 96})
            if shot.is_error:
                return False
            image = next(c for c in shot.content if isinstance(c, ImageContent))
            png = np.frombuffer(base64.b64decode(image.data), np.uint8)
            return tuple(cv2.imdecode(png, 1)[10, 10]) == (255, 0, 0)  # BGR: the blue box survived

        await until(blue, what="the restarted overlay draws its live code over the source's frames")
        graph = data(await client.call_tool("get_graph", {}))
        assert (f"{source}.video", f"{overlay}.video") in {(c["from"], c["to"]) for c in graph["connections"]}
        supervisor = data(await client.call_tool("spawn_actor", {"type": "Supervisor", "name": "sup"}))["path"]
        child = data(
            await client.call_tool(
                "spawn_actor",
                {"type": "TestPattern", "name": "kid", "parent": supervisor, "params": {"width": 32, "height": 18}},
            )
        )["path"]
        assert child == "/sup/kid"
        again = data(await client.call_tool("restart_actor", {"actor": child}))
        assert again["actor"].startswith("/sup/kid") and again["state"] == "running" and again["supervised"]
        graph = data(await client.call_tool("get_graph", {}))
        assert next(a for a in graph["actors"] if a["path"] == again["actor"])["parent"] == "/sup"
        data(await client.call_tool("stop_actor", {"actor": supervisor}))
        removed = data(await client.call_tool("disconnect", {"source": source, "target": overlay}))
        assert removed["removed"] == [{"from": f"{source}.video", "to": f"{overlay}.video"}]
        assert removed["remaining"] == []
        for path in (source, overlay):
            data(await client.call_tool("stop_actor", {"actor": path}))


async def test_set_code_on_a_shader_is_checked_and_swapped(runtime: LocalRuntime) -> None:
    gpu = pytest.importorskip("streamlib.gpu")
    try:
        gpu.context()
    except gpu.GPUUnavailableError as exc:  # pragma: no cover - only where no adapter exists at all
        pytest.skip(f"no GPU adapter: {exc}")
    wgsl = textwrap.dedent(
        """\
        @compute @workgroup_size(8, 8)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if (!inside(id)) { return; }
            textureStore(dst, vec2<i32>(id.xy), load_clamped(src, vec2<i32>(id.xy)));
        }
        """
    )
    async with Client(build_server(runtime)) as client:
        shader = data(await client.call_tool("spawn_actor", {"type": "ShaderActor", "params": {"source": wgsl}}))
        broken = error(
            await client.call_tool("set_code", {"actor": shader["path"], "code": wgsl.replace("return; }", "return }")})
        )
        assert broken["kind"] == "compile_error" and broken["line"] == 3 and broken["column"]
        swapped = data(
            await client.call_tool(
                "set_code",
                {
                    "actor": shader["path"],
                    "code": wgsl.replace("load_clamped(src, vec2<i32>(id.xy))", "vec4<f32>(1.0, 0.0, 0.0, 1.0)"),
                },
            )
        )
        assert swapped["applied"] is True and swapped["version"] >= 1
        data(await client.call_tool("stop_actor", {"actor": shader["path"]}))


def test_the_docs_page_names_every_tool_and_argument() -> None:
    from mcp.server.mcpserver import MCPServer

    text = (ROOT / "docs" / "agents.md").read_text()
    server: MCPServer[Any] = build_server(LocalRuntime())
    for tool in asyncio.run(server.list_tools()):
        assert f"| `{tool.name}` |" in text, tool.name
        for argument in tool.input_schema.get("properties", {}):
            row = text.split(f"| `{tool.name}` |", 1)[1].split("\n", 1)[0]
            assert f"`{argument}`" in row, (tool.name, argument)


async def test_a_served_runtime_answers_the_tools_only_when_asked() -> None:
    """In process: a node without the agent tools says how to get them; with them, the tools
    see (and build) the node's actors, and a tool's structured failure crosses unchanged."""
    from streamlib.agents import ToolFailure
    from streamlib.agents.remote import RemoteRuntime, serve_agent_tools
    from streamlib.remote import serve

    node = await asyncio.to_thread(serve, "127.0.0.1", 0, "agents-here")
    tools = None
    try:
        remote = RemoteRuntime(f"actor://{node.address}")
        with pytest.raises(ToolFailure) as refused:
            await remote.get_graph()
        assert refused.value.kind == "not_supported" and "--agents" in refused.value.message
        tools = serve_agent_tools(node)
        made = await remote.spawn_actor("TestPattern", name="seen", params={"width": 48, "height": 32})
        assert made["path"] == "/seen" and node.lookup("seen") is not None
        graph = await remote.get_graph()
        assert "/seen" in [a["path"] for a in graph["actors"]]
        shot = await remote.snapshot("/seen", width=24)
        assert (shot.width, shot.source_width, shot.png[:4]) == (24, 48, b"\x89PNG")
        with pytest.MonkeyPatch.context() as patch:  # a reply that would not fit one control message
            patch.setattr("streamlib.agents.remote.MAX_CONTROL", 64 * 1024 + 100)
            with pytest.raises(ToolFailure) as too_big:
                await remote.snapshot("/seen", width=48)
        assert too_big.value.kind == "invalid_argument" and "smaller width" in too_big.value.message
        # What a client other than RemoteRuntime might send: checked before anything runs.
        from streamlib.remote import RemoteError
        from streamlib.remote.control import client_for, network_loop

        async def raw(**fields: Any) -> Any:
            call = client_for(node.address).call("agent", 10.0, **fields)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, network_loop()))

        bogus = await raw(tool="get_stats", args={"bogus": 1})
        assert bogus["failure"]["kind"] == "invalid_argument" and "bogus" in bogus["failure"]["message"]
        with pytest.raises(RemoteError, match="get_stats"):
            await raw(tool="__init__", args={})
        with pytest.raises(ToolFailure) as missing:
            await remote.stop_actor("/nobody")
        assert missing.value.kind == "unknown_actor" and "/seen" in missing.value.message
        assert (await remote.stop_actor("/seen"))["state"] in ("stopped", "finished")
    finally:
        if tools is not None:
            tools.close()
        await asyncio.to_thread(node.close)


def test_connect_wants_a_runtime_address(capsys: pytest.CaptureFixture[str]) -> None:
    from streamlib.cli import main

    assert main(["mcp", "--connect", "edge:port"]) == 2
    err = capsys.readouterr().err
    assert "actor://HOST:PORT" in err and "'edge:port'" in err and "Traceback" not in err


def test_mcp_connect_drives_a_runtime_in_another_process(tmp_path: Path) -> None:
    """``streamlib mcp --connect`` (stdio, the SDK's client) drives a ``streamlib node --agents``
    subprocess with a token: what the agent builds lives in the node, and outlives the MCP session."""
    token_file = tmp_path / "token"
    token_file.write_text("n0de-s3cret\n")
    env = {k: v for k, v in ENV.items() if not k.startswith("STREAMLIB_TOKEN")}
    NODE = [sys.executable, "-m", "streamlib", "node", "--listen", "127.0.0.1:0", "--agents"]
    node = subprocess.Popen(
        [*NODE, "--token-file", str(token_file), "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert "listening on actor://" in line, line
        address = line.split("actor://")[1].split()[0]

        async def session() -> dict[str, Any]:
            args = ["-m", "streamlib", "mcp", "--connect", f"actor://{address}"]
            refused = StdioServerParameters(command=sys.executable, args=args, env=env)
            async with Client(refused) as client:  # no token: the node refuses, the tool says why
                failed = error(await client.call_tool("get_graph", {}))
            params = StdioServerParameters(
                command=sys.executable, args=[*args, "--node-token-file", str(token_file)], env=env
            )
            async with Client(params) as client:
                data(await client.call_tool("define_actor", {"source": FILTER_FIXED}))
                made = data(
                    await client.call_tool(
                        "spawn_actor", {"type": "TestPattern", "name": "cam", "params": {"width": 64, "height": 36}}
                    )
                )
                negative = data(await client.call_tool("spawn_actor", {"type": "Negative", "name": "neg"}))
                data(await client.call_tool("connect", {"source": made["path"], "target": negative["path"]}))
                shot = await client.call_tool("snapshot", {"output": "/neg", "width": 32})
                image = next(c for c in shot.content if isinstance(c, ImageContent))
                graph = data(await client.call_tool("get_graph", {}))
            return {"failed": failed, "graph": graph, "png": base64.b64decode(image.data)}

        found = asyncio.run(session())
        assert "token" in found["failed"]["message"], found["failed"]
        assert {"/cam", "/neg"} <= {a["path"] for a in found["graph"]["actors"]}
        pixels = cv2.imdecode(np.frombuffer(found["png"], np.uint8), cv2.IMREAD_COLOR)
        assert pixels is not None and pixels.shape[1] == 32
        # The node, asked on its own control plane after the MCP session ended: both still run.
        import streamlib

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STREAMLIB_TOKEN", "n0de-s3cret")
            stub = streamlib.get_actor(f"actor://{address}/Negative/neg")
            try:
                before = stub.stats()["ticks"]
                time.sleep(0.5)
                assert stub.stats()["ticks"] > before
            finally:
                stub.stop().wait(10)
    finally:
        node.terminate()
        node.wait(20)


def test_tail_logs_filters_by_actor_subtree_level_and_sequence() -> None:
    import logging

    from streamlib.agents import LogBuffer

    logs = LogBuffer(capacity=3, logger="streamlib.test_logs")
    logger = logging.getLogger("streamlib.test_logs")
    try:
        logger.warning("%s: drawing code failed", "/app/overlay")  # the path from the first argument
        logger.error("boom", extra={"actor": "/app"})
        logs.add("info", "spawned /other", "/other", "spawned")
        logs.add("info", "spawned /app/sink", "/app/sink", "spawned")
        assert [r["actor"] for r in logs.tail()] == ["/app", "/other", "/app/sink"]  # capacity 3: oldest gone
        assert [r["actor"] for r in logs.tail(actor="/app")] == ["/app", "/app/sink"]
        assert [r["message"] for r in logs.tail(level="error")] == ["boom"]
        last = logs.tail()[-1]["seq"]
        assert logs.tail(since=last - 1) == [logs.tail()[-1]] and logs.tail(since=last) == []
        assert logs.tail(limit=1)[0]["event"] == "spawned"
    finally:
        logs.close()
