"""The live dashboard, loaded in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): the page shows the actor tree, its counters change, a preview image arrives over
the WebSocket, and everything fits one screen from 1280x720 up (screenshots are saved under
``artifacts/``, which git ignores). Plus the HTTP API, the MJPEG stream, the favicon and the
Prometheus ``/metrics`` endpoint, read back through prometheus_client's parser."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamlib
from streamlib import Actor, StreamInput, StreamOutput, Supervisor, TimedTick, VideoFrame, profiling
from streamlib.observe.dashboard import Dashboard, encode_preview, output_id
from streamlib.testing import Probe

aiohttp = pytest.importorskip("aiohttp", reason="the dashboard needs aiohttp: pip install 'streamlib[observe]'")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


class Moving(Actor):
    """A 160x120 frame with a white bar that moves every tick."""

    default_fps = 30.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        pixels = np.zeros((120, 160, 3), np.uint8)
        pixels[:, :, 2] = 120
        x = tick.frame_number * 4 % 160
        pixels[40:80, x : x + 20] = 255
        await self.outputs["video"].send(VideoFrame.at(tick, data=pixels))


class Lossy(Actor):
    """Slower than its source, so its one-slot input drops."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=1)

    async def process(self, tick: TimedTick) -> None:
        if await self.inputs["video"].try_read() is not None:
            await asyncio.sleep(0.05)


class Pass(Actor):
    """Forwards each frame."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        if (frame := await self.inputs["video"].try_read()) is not None:
            await self.outputs["video"].send(frame)


class Mix(Actor):
    """Two video inputs, like a compositor; forwards the main one."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["main"] = StreamInput("main", VideoFrame)
        self.inputs["pip"] = StreamInput("pip", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        await self.inputs["pip"].try_read()
        if (frame := await self.inputs["main"].try_read()) is not None:
            await self.outputs["video"].send(frame)


@pytest.fixture
async def running() -> AsyncIterator[tuple[Supervisor, Dashboard]]:
    profiling.enable()
    app = Supervisor(name="dash")
    source = app.spawn(Moving, name="camera")
    source >> app.spawn(Probe, VideoFrame, maxsize=4, name="recorder")
    source >> app.spawn(Lossy, name="slow")
    board = streamlib.dashboard(app, port=0, interval=0.2)  # this tree only: other tests' actors may run
    try:
        yield app, board
    finally:
        board.stop()
        await app.stop()
        profiling.disable()
        profiling.reset()


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def test_binds_to_localhost_by_default(running: tuple[Supervisor, Dashboard]) -> None:
    _, board = running
    assert board.host == "127.0.0.1" and board.url == f"http://127.0.0.1:{board.port}/"
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in addresses - {"127.0.0.1"}:
        with pytest.raises(OSError), socket.create_connection((address, board.port), timeout=1):
            pass


async def test_http_api_mjpeg_and_prometheus(running: tuple[Supervisor, Dashboard]) -> None:
    _app, board = running
    await asyncio.sleep(0.5)
    status, _, body = await get(board.url + "api/metrics")
    data = json.loads(body)
    assert status == 200 and data["profiling"] is True
    rows = {r["path"]: r for r in data["actors"]}
    assert rows["/dash/camera"]["out"] > 0 and rows["/dash/slow"]["dropped"] > 0
    assert rows["/dash/recorder"]["latency_p99_ms"] > 0
    assert data["video_outputs"] == [{"id": "/dash/camera:video", "actor": "/dash/camera", "output": "video"}]

    status, _, body = await get(board.url + "api/tree")
    assert body.decode().startswith("/dash (Supervisor)")
    status, headers, body = await get(board.url + "api/graph.svg")
    assert headers["Content-Type"].startswith("image/svg+xml") and b"camera" in body
    status, _, body = await get(board.url + "api/graph.mmd")
    assert body.startswith(b"flowchart LR")
    status, headers, body = await get(board.url + "preview.png?output=/dash/camera:video")
    assert status == 200 and body.startswith(b"\x89PNG")
    status, _, _ = await get(board.url + "preview.png?output=/nowhere:video")
    assert status == 404

    # MJPEG: a multipart stream of complete images
    async with aiohttp.ClientSession() as session, session.get(board.url + "stream.mjpg") as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        parts: list[bytes] = []
        buffer = b""
        while len(parts) < 2:
            buffer += await asyncio.wait_for(response.content.readany(), 5)
            while b"--frame\r\n" in buffer[1:]:
                part, _, buffer = buffer.partition(b"\r\n--frame\r\n")
                parts.append(part)
        header, _, image = parts[1].partition(b"\r\n\r\n")
        assert b"Content-Type: image/" in header
        length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert len(image) == length and image[:2] in (b"\xff\xd8", b"\x89P")  # JPEG or PNG

    status, headers, body = await get(board.url + "metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    check_prometheus_text(body.decode())


def check_prometheus_text(text: str) -> None:
    """What a Prometheus server reads, through prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in families.values() for s in family.samples
    }
    assert samples[("streamlib_actor_ticks_total", (("actor", "/dash/camera"), ("class", "Moving")))] > 0
    assert samples[("streamlib_actor_dropped_total", (("actor", "/dash/slow"), ("class", "Lossy")))] > 0
    assert samples[("streamlib_actor_state", (("actor", "/dash/slow"), ("class", "Lossy"), ("state", "running")))] == 1
    assert samples[("streamlib_output_sent_total", (("actor", "/dash/camera"), ("output", "video")))] > 0
    assert samples[("streamlib_actor_restarts_total", (("actor", "/dash/camera"), ("class", "Moving")))] == 0
    # Queue gauges say their unit.
    slow_input = (("actor", "/dash/slow"), ("input", "video"))
    assert families["streamlib_input_queued_messages"].type == "gauge"
    assert 0 <= samples[("streamlib_input_queued_messages", slow_input)] <= 1
    assert samples[("streamlib_input_capacity_messages", slow_input)] == 1
    # Durations: a summary in seconds, actor and operation as separate labels.
    durations = families["streamlib_profile_seconds"]
    assert durations.type == "summary"
    for actor, operation in [("/dash/camera", "process"), ("/dash/camera", "lateness"), ("/dash/recorder", "latency")]:
        where = {"actor": actor, "operation": operation}
        found = {
            s.labels.get("quantile", s.name): s.value
            for s in durations.samples
            if {k: v for k, v in s.labels.items() if k != "quantile"} == where
        }
        assert set(found) == {"0.5", "0.95", "0.99", "streamlib_profile_seconds_count", "streamlib_profile_seconds_sum"}
        assert 0 <= found["0.5"] <= found["0.95"] <= found["0.99"] < 5, (where, found)
        count, total = found["streamlib_profile_seconds_count"], found["streamlib_profile_seconds_sum"]
        assert count > 0 and 0 < total / count < 5, (where, found)
    slow_latency = samples[
        ("streamlib_profile_seconds", (("actor", "/dash/slow"), ("operation", "latency"), ("quantile", "0.5")))
    ]
    assert slow_latency >= 0.04  # its process() sleeps 50 ms: seconds, not milliseconds
    assert not any(
        "." in s.labels.get("actor", "") or "/" in s.labels.get("operation", "") for s in durations.samples
    )  # nothing packs the actor into the operation any more
    assert families["streamlib_profile_max_seconds"].type == "gauge"


async def test_favicon_is_an_icon(running: tuple[Supervisor, Dashboard]) -> None:
    _, board = running
    status, headers, body = await get(board.url + "favicon.ico")
    assert status == 200 and headers["Content-Type"] == "image/x-icon"
    assert body[:4] == b"\x00\x00\x01\x00" and int.from_bytes(body[4:6], "little") == 1  # ICONDIR, one image
    size, offset = int.from_bytes(body[14:18], "little"), int.from_bytes(body[18:22], "little")
    assert body[offset : offset + 8] == b"\x89PNG\r\n\x1a\n" and offset + size == len(body)


async def test_encode_preview_and_output_ids() -> None:
    body, mime = encode_preview(np.zeros((8, 8, 3), np.uint8))
    assert mime in ("image/jpeg", "image/png") and len(body) > 20
    moving = Moving(name="ids")
    assert output_id(moving.outputs["video"]) == "/ids:video"
    await moving.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is absent (apt-get install chromium)")
@pytest.mark.timeout(60)
async def test_page_in_headless_chromium(running: tuple[Supervisor, Dashboard]) -> None:
    from playwright.async_api import async_playwright

    _app, board = running
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(board.url)
            assert await page.title() == "streamlib dashboard"
            # The tree arrives over the WebSocket: one row per actor, indented under the supervisor.
            await page.wait_for_function("document.querySelectorAll('#actors tbody tr').length === 4", timeout=10_000)
            paths = await page.eval_on_selector_all("#actors tbody tr", "rows => rows.map(r => r.dataset.path)")
            assert paths == ["/dash", "/dash/camera", "/dash/recorder", "/dash/slow"]
            ticks = "Number(document.querySelector('tr[data-path=\"/dash/camera\"] td.ticks').textContent)"
            first = await page.evaluate(ticks)
            await page.wait_for_function(f"{ticks} > {first + 5}", timeout=10_000)  # the counters move
            await page.wait_for_function(
                "Number(document.querySelector('tr[data-path=\"/dash/slow\"] td.dropped').textContent) > 0",
                timeout=10_000,
            )
            # A preview image arrives, decoded by the browser, and keeps being replaced.
            await page.wait_for_function(
                "Number(document.getElementById('preview').dataset.frames) >= 3 && "
                "document.getElementById('preview').naturalWidth === 160",
                timeout=10_000,
            )
            assert await page.eval_on_selector("#output", "s => s.value") == "/dash/camera:video"
            # The graph is drawn, and the latency plot has data (profiling is on).
            await page.wait_for_selector("#graph svg g.actor", timeout=10_000)
            assert "Latency" in await page.inner_text("#plot-title")
            assert "profiling on" in await page.inner_text("#profiling")
        finally:
            await browser.close()


# What must be on screen, with its bounding box; checked against the viewport in the browser.
ON_SCREEN = """() => {
  const box = e => { const r = e.getBoundingClientRect();
                     return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width}; };
  const scroller = document.querySelector("#actors-box .scroll");
  return {
    rows: Array.from(document.querySelectorAll("#actors tbody tr")).map(r => [r.dataset.path, box(r)]),
    nodes: Array.from(document.querySelectorAll("#graph svg g.actor")).map(g => [g.textContent, box(g)]),
    preview: box(document.getElementById("preview")),
    tableClipped: scroller.scrollWidth > scroller.clientWidth + 1 || scroller.scrollHeight > scroller.clientHeight + 1,
    page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
    viewport: [innerWidth, innerHeight],
    axes: JSON.parse(document.getElementById("plot").dataset.axes || "null"),
  };
}"""


@pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is absent (apt-get install chromium)")
@pytest.mark.timeout(90)
async def test_page_fits_the_screen_at_720p_and_1080p() -> None:
    """A demo-sized tree (7 actors, fan-out and fan-in): every actor row, every graph node and the
    preview lie inside the viewport, with no scrolling, at 1280x720 and 1920x1080."""
    from playwright.async_api import async_playwright

    profiling.enable()
    app = Supervisor(name="app")
    pattern = app.spawn(Moving, name="pattern")
    comp = app.spawn(Mix, name="compositor")
    pattern >> app.spawn(Pass, name="overlay") >> comp.inputs["main"]
    pattern >> app.spawn(Pass, name="pip") >> comp.inputs["pip"]
    comp >> app.spawn(Probe, VideoFrame, name="mp4")
    comp >> app.spawn(Lossy, name="hls")
    board = streamlib.dashboard(app, port=0, interval=0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    failed_requests: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for width, height in [(1280, 720), (1920, 1080)]:
                    page = await browser.new_page(viewport={"width": width, "height": height})
                    page.on("response", lambda r: failed_requests.append(r.url) if r.status >= 400 else None)
                    await page.goto(board.url)
                    await page.wait_for_function(
                        "document.querySelectorAll('#actors tbody tr').length === 7 && "
                        "document.querySelectorAll('#graph svg g.actor').length === 6 && "
                        "document.getElementById('preview').naturalWidth === 160 && "
                        "document.getElementById('plot').dataset.axes !== undefined",
                        timeout=15_000,
                    )
                    shown = await page.evaluate(ON_SCREEN)
                    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}x{height}.png"))
                    await page.close()
                    assert shown["viewport"] == [width, height]
                    assert shown["page"] == [width, height], "the page scrolls"
                    assert not shown["tableClipped"], "the actors table scrolls inside its box"
                    boxes = [*shown["rows"], *shown["nodes"], ["preview", shown["preview"]]]
                    assert len(boxes) == 7 + 6 + 1
                    for what, b in boxes:
                        inside = b["left"] >= 0 and b["top"] >= 0 and b["right"] <= width and b["bottom"] <= height
                        assert inside and b["width"] > 0, f"{what} is outside the {width}x{height} viewport: {b}"
                    for what, b in shown["nodes"]:
                        assert b["width"] >= 80, f"graph node {what} is drawn too small to read: {b}"
                    # The plot has a time axis and labelled values (latency in ms: profiling is on).
                    axes = shown["axes"]
                    assert axes["unit"] == "ms" and axes["x"][0] == "now" and "−10 s" in axes["x"], axes
                    assert len(axes["y"]) >= 3, axes
            finally:
                await browser.close()
    finally:
        board.stop()
        await app.stop()
        profiling.disable()
        profiling.reset()
    assert failed_requests == [], failed_requests  # no 404 (the favicon included)


def test_the_dashboard_refuses_a_public_address_without_a_token() -> None:
    from streamlib.listening import ListenRefused

    with pytest.raises(ListenRefused, match="without a token"):
        streamlib.dashboard(port=0, host="0.0.0.0")


def test_with_a_token_every_request_must_carry_it() -> None:
    import urllib.error
    import urllib.request

    board = streamlib.dashboard(port=0, host="0.0.0.0", token="s3cret")
    try:
        url = f"http://127.0.0.1:{board.port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, timeout=5)
        right = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(right, timeout=5) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{board.port}/?token=s3cret", timeout=5) as page:
            assert page.status == 200 and "streamlib_dashboard_token" in page.headers.get("Set-Cookie", "")
        assert board.refused == 2
    finally:
        board.stop()
