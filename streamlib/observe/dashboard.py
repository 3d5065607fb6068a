"""A live dashboard in the browser, and a Prometheus ``/metrics`` endpoint.

``streamlib.dashboard(port=8765)`` serves, on its own thread and event loop (so neither
serving nor encoding previews ever stalls an actor), bound to 127.0.0.1 unless told
otherwise:

``/``
    the page: the actor tree with live counters (ticks per second, messages, drops, queue
    depths, restarts, skipped ticks; process time and latency while profiling is on), a
    plot of latency (or tick rate) over time, the connection graph, and a live preview of
    any video output.
``/ws``
    a WebSocket: metrics as JSON every ``interval`` seconds; send ``{"preview": id}`` to
    also receive that output's frames as binary JPEG (PNG without OpenCV) messages.
``/stream.mjpg?output=id``
    the same preview as an MJPEG stream (``multipart/x-mixed-replace``), for an ``<img>``
    tag or a video player; ``/preview.png?output=id`` is one frame.
``/api/metrics``, ``/api/tree``, ``/api/graph.svg``, ``/api/graph.mmd``, ``/api/profile``
    the same data as JSON, text, SVG, Mermaid and the profiling export.
``/favicon.ico``
    the tab's icon.
``/metrics``
    every per-actor figure in the Prometheus text format (prometheus-client), for
    long-running services; :func:`prometheus_collector` plugs the same figures into a
    registry of your own.

Output ids look like ``/app/source:video`` (the actor's path, a colon, the output's name).
A preview subscribes a :class:`~streamlib.observe.views.PreviewTap` to that output the first time
it is asked for, and keeps it until the dashboard stops.

aiohttp and prometheus-client come with ``pip install streamlib[observe]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import webbrowser
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from streamlib import Actor, StreamOutput
from streamlib.listening import check_listen_address, token_matches

from . import profiling
from .views import PreviewTap, _connected_actors, _flatten, _roots, _stats, encode_png, graph, tree_text, video_outputs

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Dashboard", "dashboard", "encode_preview", "output_id", "prometheus_collector", "rows", "split_operation"]

_EXTRA = "pip install 'streamlib[observe]'"


def _require_aiohttp() -> Any:
    try:
        from aiohttp import web
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"streamlib.observe.dashboard needs aiohttp: {_EXTRA}") from exc
    return web


# -- data for the page -------------------------------------------------------------------------


def output_id(output: StreamOutput) -> str:
    """``/path/of/actor:output`` -- how the dashboard names an output."""
    owner = output.owner
    return f"{owner.path if owner is not None else '?'}:{output.name}"


def rows(roots: Sequence[Actor] = ()) -> list[dict[str, Any]]:
    """One flat row per actor (depth first), the figures the page shows."""
    found = []
    for root in _roots(roots):
        for s, depth in _flatten(_stats(root, recursive=True)):
            profile = s.get("profile") or {}
            row = {
                "path": s["path"],
                "name": s["name"],
                "class": s["class"],
                "state": s["state"],
                "depth": depth,
                "ticks": s["ticks"],
                "in": s["messages_in"],
                "out": s["messages_out"],
                "dropped": s["dropped"],
                "restarts": s["restarts"],
                "skipped": s["skipped_ticks"],
                "queues": {n: [p["queued"], p["capacity"]] for n, p in s["inputs"].items()},
            }
            for what in ("process", "latency", "lateness"):
                if what in profile:
                    row[f"{what}_p50_ms"] = profile[what]["p50"] * 1e3
                    row[f"{what}_p99_ms"] = profile[what]["p99"] * 1e3
            if "failure" in s:
                row["failure"] = s["failure"]
            found.append(row)
    return found


def metrics(roots: Sequence[Actor] = ()) -> dict[str, Any]:
    """What ``/api/metrics`` and the WebSocket send."""
    return {
        "time": time.time(),
        "profiling": profiling.enabled(),
        "actors": rows(roots),
        "video_outputs": [
            {"id": output_id(o), "actor": o.owner.path if o.owner else "?", "output": o.name}
            for o in video_outputs(*roots)
        ],
    }


def encode_preview(pixels: Any, quality: int = 80) -> tuple[bytes, str]:
    """Encode a frame for the browser: JPEG through OpenCV when it is installed, else PNG."""
    try:
        import cv2
    except ImportError:
        return encode_png(pixels, 1), "image/png"
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        pixels = pixels[:, :, 2::-1]  # RGB(A) -> BGR, as OpenCV expects
    ok, buffer = cv2.imencode(".jpg", pixels, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        return encode_png(pixels, 1), "image/png"
    return bytes(buffer), "image/jpeg"


def favicon(size: int = 32) -> bytes:
    """The dashboard's icon as an ``.ico`` file: three coloured streams on the header's colour.

    An ICO may hold a PNG image (since Windows Vista; every current browser reads it): a
    6-byte ICONDIR and one 16-byte ICONDIRENTRY, then the PNG."""
    import struct

    import numpy as np

    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[...] = (0x26, 0x32, 0x38, 255)
    unit = size // 8
    for row, colour in enumerate([(0x42, 0xA5, 0xF5), (0x66, 0xBB, 0x6A), (0xFF, 0xA7, 0x26)]):
        top = unit * (1 + 2 * row) + unit // 2
        pixels[top : top + unit, unit : size - unit * (2 - row), :3] = colour
    png = encode_png(pixels)
    header = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 = icon, one image
    entry = struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


# -- Prometheus ----------------------------------------------------------------------------------


ACTOR_OPERATIONS = ("process", "latency", "lateness")
"""The per-actor profiling series (see :mod:`streamlib.observe.profiling`), named ``<path>.<operation>``."""

QUANTILES = (0.5, 0.95, 0.99)


def split_operation(series: str) -> tuple[str, str]:
    """``"/app/comp.latency"`` -> ``("/app/comp", "latency")``; a ``profile("name")`` section -> ``("", "name")``.

    Profiling names an actor's series after its path; Prometheus wants the actor and the
    operation as separate labels, so a query can select either."""
    path, dot, what = series.rpartition(".")
    if dot and path.startswith("/") and what in ACTOR_OPERATIONS:
        return path, what
    return "", series


class _Collector:
    """A prometheus-client collector that reads the actors' counters at each scrape.

    Metric names follow Prometheus' conventions: a unit suffix (``_seconds``, ``_messages``),
    ``_total`` on counters, and durations as a *summary* (``quantile`` 0.5/0.95/0.99 over the
    most recent :data:`~streamlib.observe.profiling.WINDOW` samples, ``_sum``/``_count`` over all)."""

    def __init__(self, roots: Sequence[Actor]) -> None:
        self.roots = list(roots)

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the metric names depend on what is running

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        labels = ["actor", "class"]
        counters = {
            "ticks": CounterMetricFamily("streamlib_actor_ticks", "Ticks processed (current instance)", labels=labels),
            "restarts": CounterMetricFamily("streamlib_actor_restarts", "Restarts by a supervisor", labels=labels),
            "skipped_ticks": CounterMetricFamily(
                "streamlib_actor_skipped_ticks", "Own-clock ticks skipped because the actor was late", labels=labels
            ),
            "messages_in": CounterMetricFamily("streamlib_actor_messages_in", "Messages received", labels=labels),
            "messages_out": CounterMetricFamily("streamlib_actor_messages_out", "Messages sent", labels=labels),
            "dropped": CounterMetricFamily("streamlib_actor_dropped", "Messages dropped by full inputs", labels=labels),
        }
        state = GaugeMetricFamily("streamlib_actor_state", "1 for the actor's current state", labels=[*labels, "state"])
        queued = GaugeMetricFamily(
            "streamlib_input_queued_messages", "Messages waiting in the input's mailbox", labels=["actor", "input"]
        )
        capacity = GaugeMetricFamily(
            "streamlib_input_capacity_messages",
            "How many messages the input's mailbox holds",
            labels=["actor", "input"],
        )
        in_dropped = CounterMetricFamily("streamlib_input_dropped", "Messages dropped", labels=["actor", "input"])
        received = CounterMetricFamily("streamlib_input_received", "Messages received", labels=["actor", "input"])
        sent = CounterMetricFamily("streamlib_output_sent", "Messages sent", labels=["actor", "output"])
        durations = SummaryMetricFamily(
            "streamlib_profile_seconds",
            "While profiling is on: how long each operation took (process: one process() call; latency: "
            "tick timestamp to the end of processing; lateness: own-clock tick start after its deadline; "
            'otherwise a profile() section, with actor="")',
            labels=["actor", "operation"],
        )
        longest = GaugeMetricFamily(
            "streamlib_profile_max_seconds",
            "The longest sample of each profiled operation",
            labels=["actor", "operation"],
        )
        for root in _roots(self.roots):
            for s, _ in _flatten(_stats(root, recursive=True)):
                who = [s["path"], s["class"]]
                for key, family in counters.items():
                    family.add_metric(who, s[key])
                for value in ("running", "stopped", "failed"):
                    state.add_metric([*who, value], 1.0 if s["state"] == value else 0.0)
                for name, p in s["inputs"].items():
                    queued.add_metric([s["path"], name], p["queued"])
                    capacity.add_metric([s["path"], name], p["capacity"])
                    in_dropped.add_metric([s["path"], name], p["dropped"])
                    received.add_metric([s["path"], name], p["received"])
                for name, p in s["outputs"].items():
                    sent.add_metric([s["path"], name], p["sent"])
        for series, summary in profiling.summary().items():
            actor, operation = split_operation(series)
            where = {"actor": actor, "operation": operation}
            for q in QUANTILES:  # SummaryMetricFamily.add_metric writes only _count and _sum
                durations.add_sample(durations.name, {**where, "quantile": str(q)}, summary[f"p{round(q * 100)}"])
            durations.add_metric([actor, operation], int(summary["count"]), summary["mean"] * summary["count"])
            longest.add_metric([actor, operation], summary["max"])
        yield from counters.values()
        yield from (state, queued, capacity, in_dropped, received, sent, durations, longest)


def prometheus_collector(*roots: Actor) -> Any:
    """A prometheus-client collector of every per-actor figure (default: every running tree).

    ``prometheus_client.REGISTRY.register(prometheus_collector())`` adds them to the default
    registry, e.g. for ``prometheus_client.start_http_server``."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"Prometheus metrics need prometheus-client: {_EXTRA}") from exc
    return _Collector(roots)


# -- the server ------------------------------------------------------------------------------------


_TOKEN_COOKIE = "streamlib_dashboard_token"


class Dashboard:
    """A running dashboard server (see the module docstring). Stop it with :meth:`stop`."""

    def __init__(
        self,
        roots: Sequence[Actor] = (),
        port: int = 8765,
        host: str = "127.0.0.1",
        interval: float = 0.5,
        preview_fps: float = 10.0,
        token: str | None = None,
    ) -> None:
        _require_aiohttp()
        check_listen_address(host, token, "the dashboard")
        self.roots = list(roots)
        self.host = host
        self.token = token
        self.interval = interval
        self.preview_fps = preview_fps
        self.port = port
        self._taps: dict[str, PreviewTap] = {}
        self._taps_lock = threading.Lock()
        self._closing = False
        self.refused = 0  # requests without the right token
        self._sockets: set[Any] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._registry: Any = None
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="streamlib-dashboard", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    # -- life -----------------------------------------------------------------------------

    async def _start(self) -> None:
        from aiohttp import web

        app = web.Application(middlewares=[self._authenticate] if self.token else [])
        app.router.add_get("/", self._page)
        app.router.add_get("/api/metrics", self._metrics)
        app.router.add_get("/api/tree", self._tree)
        app.router.add_get("/api/graph.svg", self._graph_svg)
        app.router.add_get("/api/graph.mmd", self._graph_mermaid)
        app.router.add_get("/api/profile", self._profile)
        app.router.add_get("/preview.png", self._preview)
        app.router.add_get("/stream.mjpg", self._mjpeg)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/metrics", self._prometheus)
        app.router.add_get("/favicon.ico", self._favicon)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]  # port=0 picks a free one

    @staticmethod
    def _given_token(request: Any) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return str(header[7:])
        found = request.query.get("token") or request.cookies.get(_TOKEN_COOKIE)
        return str(found) if found is not None else None

    @property
    def _authenticate(self) -> Any:
        """aiohttp middleware: every request proves the token (``?token=`` once in a browser,
        which sets a cookie; ``Authorization: Bearer`` for Prometheus and scripts)."""
        from aiohttp import web

        @web.middleware
        async def authenticate(request: Any, handler: Any) -> Any:
            given = self._given_token(request)
            if not token_matches(given, self.token):
                self.refused += 1
                return web.Response(status=401, text="streamlib dashboard: a valid token is required\n")
            response = await handler(request)
            if request.query.get("token") and isinstance(response, web.Response):
                response.set_cookie(_TOKEN_COOKIE, str(given), httponly=True, samesite="Strict")
            return response

        return authenticate

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and detach every preview tap."""
        if self._closing:
            return
        self._closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        with self._taps_lock:
            for tap in self._taps.values():
                tap.close()
            self._taps.clear()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def open(self) -> None:
        """Open the page in the default web browser."""
        webbrowser.open(self.url)

    def _repr_html_(self) -> str:
        return f"<a href='{self.url}' target='_blank'>streamlib dashboard: {self.url}</a>"

    def __repr__(self) -> str:
        return f"<Dashboard {self.url} {'stopped' if self._closing else 'running'}>"

    # -- previews -------------------------------------------------------------------------

    def _find_output(self, ident: str | None) -> StreamOutput | None:
        outputs = video_outputs(*self.roots)
        if not ident:
            return outputs[0] if outputs else None
        for out in outputs:
            if output_id(out) == ident:
                return out
        path, _, name = ident.rpartition(":")
        for actor in _connected_actors(self.roots):
            if actor.path == path and name in actor.outputs:
                found: StreamOutput = actor.outputs[name]
                return found
        return None

    def tap(self, ident: str | None) -> PreviewTap | None:
        """The preview tap on output ``ident`` (default: the first video output), attached on first use."""
        output = self._find_output(ident)
        if output is None:
            return None
        key = output_id(output)
        with self._taps_lock:
            tap = self._taps.get(key)
            if tap is None or tap.output is not output:
                tap = self._taps[key] = PreviewTap(output)
            return tap

    # -- handlers -------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        page = _PAGE.replace("__INTERVAL_MS__", str(int(self.interval * 1000)))
        return web.Response(text=page, content_type="text/html")

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(body=favicon(), content_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(metrics(self.roots), dumps=lambda o: json.dumps(o, default=repr))

    async def _tree(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(text=tree_text(*self.roots))

    async def _graph_svg(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(text=graph(*self.roots).svg(), content_type="image/svg+xml")

    async def _graph_mermaid(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(text=graph(*self.roots).mermaid())

    async def _profile(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(profiling.to_dict(), dumps=lambda o: json.dumps(o, default=repr))

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        tap = self.tap(request.query.get("output"))
        if tap is None:
            raise web.HTTPNotFound(text="no such video output")
        deadline = time.monotonic() + 2.0
        while (pixels := tap.pixels()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # a fresh tap: wait for the next frame
        if pixels is None:
            return web.Response(status=204)
        return web.Response(body=encode_png(pixels, 1), content_type="image/png")

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        tap = self.tap(request.query.get("output"))
        if tap is None:
            raise web.HTTPNotFound(text="no such video output")
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"})
        await response.prepare(request)
        last: Any = None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not self._closing:
                message = tap.latest()
                pixels = tap.pixels()
                if message is not None and message is not last and pixels is not None:
                    last = message
                    body, mime = await loop.run_in_executor(None, encode_preview, pixels)
                    await response.write(
                        f"--frame\r\nContent-Type: {mime}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                        + b"\r\n"
                    )
                await asyncio.sleep(1 / self.preview_fps)
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        ws = web.WebSocketResponse(heartbeat=20)
        await ws.prepare(request)
        self._sockets.add(ws)
        selected: list[str | None] = [None]  # the output the client previews, if any

        async def reader() -> None:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    with contextlib.suppress(ValueError, AttributeError):
                        selected[0] = json.loads(msg.data).get("preview")

        reading = asyncio.ensure_future(reader())
        loop = asyncio.get_running_loop()
        last_frame: Any = None
        chosen: str | None = None
        tap: PreviewTap | None = None
        next_metrics = 0.0
        step = min(self.interval, 1 / self.preview_fps)
        try:
            while not ws.closed and not reading.done() and not self._closing:
                now = time.monotonic()
                if now >= next_metrics:
                    next_metrics = now + self.interval
                    data = await loop.run_in_executor(None, metrics, self.roots)
                    await ws.send_str(json.dumps({"type": "metrics", **data}, default=repr))
                if selected[0] != chosen:  # look the output up only when the choice changes
                    chosen = selected[0]
                    tap = self.tap(chosen) if chosen else None
                if tap is not None:
                    message = tap.latest()
                    if message is not None and message is not last_frame:
                        last_frame = message
                        pixels = tap.pixels()
                        if pixels is not None:
                            body, _ = await loop.run_in_executor(None, encode_preview, pixels)
                            await ws.send_bytes(body)
                await asyncio.sleep(step)
        except (ConnectionError, RuntimeError):
            pass  # the browser went away
        finally:
            reading.cancel()
            self._sockets.discard(ws)
        return ws

    async def _prometheus(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise web.HTTPNotImplemented(text=f"/metrics needs prometheus-client: {_EXTRA}") from exc
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Collector(self.roots))
            self._registry = registry
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def dashboard(
    *roots: Actor,
    port: int = 8765,
    host: str = "127.0.0.1",
    interval: float = 0.5,
    preview_fps: float = 10.0,
    open_browser: bool = False,
    token: str | None = None,
) -> Dashboard:
    """Serve the live dashboard for ``roots`` (default: every running tree) and return it.

    It runs on its own thread, so it works the same from a script, a service or a notebook;
    ``port=0`` picks a free port (see ``.url``). Bound to 127.0.0.1 unless ``host`` says
    otherwise; any other address needs a ``token`` (every request must then carry it:
    ``?token=`` once in a browser, ``Authorization: Bearer`` for Prometheus), else
    :class:`~streamlib.listening.ListenRefused` is raised."""
    board = Dashboard(roots, port=port, host=host, interval=interval, preview_fps=preview_fps, token=token)
    if open_browser:
        board.open()
    return board


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamlib dashboard</title>
<link rel="icon" href="favicon.ico">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#263238;color:#fff;padding:6px 14px;display:flex;gap:16px;align-items:baseline;height:34px}
header h1{font-size:17px;margin:0} header span{font-size:13px;opacity:.8}
/* One screen from 1280x720 up: the actors across the top; below, the graph over the plot on the
   left and the preview on the right, sharing the rest of the height. Narrower windows reflow to
   one column (and scroll). */
main{display:grid;gap:8px;padding:8px;grid-template-columns:minmax(0,1.7fr) minmax(0,1fr);
  grid-template-rows:auto minmax(0,1.1fr) minmax(0,1fr);
  grid-template-areas:"actors actors" "graph preview" "plot preview"}
@media (min-height:560px) and (min-width:1000px){main{height:calc(100vh - 34px)}}
@media (max-width:999px){main{grid-template-columns:minmax(0,1fr);grid-template-rows:auto 300px 300px 260px;
  grid-template-areas:"actors" "graph" "preview" "plot"}}
section{background:#fff;border-radius:6px;padding:8px 10px;box-shadow:0 1px 2px #0002;min-height:0;min-width:0;
  display:flex;flex-direction:column}
#actors-box{grid-area:actors;max-height:48vh} #graph-box{grid-area:graph} #plot-box{grid-area:plot}
#preview-box{grid-area:preview}
h2{font-size:13px;margin:0 0 6px;display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
.scroll{overflow:auto;min-height:0}
table{border-collapse:collapse;font-size:12px;width:100%}
th{position:sticky;top:0;background:#fff;font-weight:600}
th,td{padding:2px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
td.state-running{color:#2e7d32} td.state-stopped{color:#757575} td.state-failed{color:#c62828;font-weight:bold}
td.warn{color:#c62828}
#graph{flex:1;min-height:0;display:flex} #graph svg{width:100%;height:100%}
.fill{flex:1;min-height:0;position:relative}
#plot{position:absolute;inset:0;width:100%;height:100%}
#preview{position:absolute;inset:0;width:100%;height:100%;object-fit:contain;background:#111}
#legend{font-size:11px;max-height:3.2em;overflow:auto} #legend span{display:inline-block;margin-right:10px}
select{max-width:60%;font-size:12px}
</style></head>
<body>
<header><h1>streamlib</h1><span id="status">connecting…</span><span id="profiling"></span></header>
<main>
<section id="actors-box"><h2>Actors</h2><div class="scroll">
<table id="actors"><thead><tr><th>actor</th><th>class</th><th>state</th><th>ticks</th><th>ticks/s</th>
<th>in</th><th>out</th><th>dropped</th><th>queues</th><th>restarts</th><th>skipped</th>
<th>process p50</th><th>latency p99</th></tr></thead><tbody></tbody></table></div></section>
<section id="graph-box"><h2>Connections</h2><div id="graph"></div></section>
<section id="plot-box"><h2 id="plot-title">Tick rate (ticks/s)</h2><div class="fill"><canvas id="plot"></canvas></div>
<div id="legend"></div></section>
<section id="preview-box"><h2>Preview
<select id="output"><option value="">(no video output)</option></select>
<a id="mjpeg" href="#" target="_blank">MJPEG</a></h2>
<div class="fill"><img id="preview" alt="no frame yet" data-frames="0"></div></section>
</main>
<script>
"use strict";
const interval = __INTERVAL_MS__;
const history = {};           // path -> [{t, rate, latency}]
let previous = {};            // path -> {t, ticks}
let selected = null, ws = null, frames = 0, lastGraph = 0, lastTime = 0, profilingOn = false;
const SPAN = 120 * interval / 1000;   // seconds of history on the plot
const colours = ["#1565c0","#2e7d32","#c62828","#6a1b9a","#ef6c00","#00838f","#ad1457","#4e342e","#37474f","#9e9d24"];
function fmt(ms){ return ms === undefined ? "" : (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + " ms"; }
function esc(s){ return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c])); }
function render(data){
  document.getElementById("status").textContent =
    "live · " + new Date(data.time * 1000).toLocaleTimeString() + " · " + data.actors.length + " actors";
  document.getElementById("profiling").textContent =
    data.profiling ? "profiling on" : "profiling off (STREAMLIB_PROFILE=1 for latency)";
  const body = document.querySelector("#actors tbody");
  const rows = [];
  for (const a of data.actors) {
    const prev = previous[a.path];
    let rate = 0;
    if (prev && data.time > prev.t) rate = Math.max(0, (a.ticks - prev.ticks) / (data.time - prev.t));
    previous[a.path] = {t: data.time, ticks: a.ticks};
    (history[a.path] = history[a.path] || []).push({t: data.time, rate: rate, latency: a.latency_p99_ms});
    if (history[a.path].length > 120) history[a.path].shift();
    const queues = Object.entries(a.queues).map(([n, q]) => esc(n) + " " + q[0] + "/" + q[1]).join(" ");
    rows.push('<tr data-path="' + esc(a.path) + '">' +
      '<td style="padding-left:' + (0.4 + a.depth * 1.2) + 'em" title="' + esc(a.path) + '">' + esc(a.name) + '</td>' +
      '<td>' + esc(a.class) + '</td><td class="state-' + a.state + '">' + a.state + '</td>' +
      '<td class="ticks">' + a.ticks + '</td><td class="rate">' + rate.toFixed(1) + '</td>' +
      '<td class="in">' + a.in + '</td><td class="out">' + a.out + '</td>' +
      '<td class="dropped' + (a.dropped ? ' warn' : '') + '">' + a.dropped + '</td><td>' + queues + '</td>' +
      '<td class="restarts' + (a.restarts ? ' warn' : '') + '">' + a.restarts + '</td><td>' + a.skipped + '</td>' +
      '<td>' + fmt(a.process_p50_ms) + '</td><td>' + fmt(a.latency_p99_ms) + '</td></tr>');
  }
  body.innerHTML = rows.join("");
  lastTime = data.time;
  plot(data.profiling);
  const select = document.getElementById("output");
  const ids = data.video_outputs.map(o => o.id);
  const have = Array.from(select.options).map(o => o.value).filter(v => v);
  if (ids.join("|") !== have.join("|")) {
    select.innerHTML = ids.length ? ids.map(i => '<option value="' + esc(i) + '">' + esc(i) + '</option>').join("")
                                  : '<option value="">(no video output)</option>';
    if (selected && ids.includes(selected)) select.value = selected;
    choose(select.value || null);
  }
  if (Date.now() - lastGraph > 2000) { lastGraph = Date.now(); refreshGraph(); }
}
function niceStep(max){
  const raw = max / 4, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}
function plot(latency){
  profilingOn = latency;
  const canvas = document.getElementById("plot"), ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1, W = canvas.clientWidth, H = canvas.clientHeight;
  if (!W || !H) return;
  if (canvas.width !== Math.round(W * ratio) || canvas.height !== Math.round(H * ratio)) {
    canvas.width = Math.round(W * ratio); canvas.height = Math.round(H * ratio);
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const key = latency ? "latency" : "rate", unit = latency ? "ms" : "ticks/s";
  document.getElementById("plot-title").textContent =
    latency ? "Latency p99 (ms) since the source frame, over time" : "Tick rate (ticks/s) over time";
  ctx.clearRect(0, 0, W, H);
  let max = 0;
  for (const h of Object.values(history)) for (const p of h) if ((p[key] || 0) > max) max = p[key];
  const step = niceStep(max > 0 ? max : 1), top = Math.max(step * Math.ceil((max || 1) / step), step);
  const left = 46, right = 8, up = 14, bottom = 20, pw = W - left - right, ph = H - up - bottom;
  const x = t => left + pw - (lastTime - t) / SPAN * pw, y = v => up + ph - (v / top) * ph;
  const xLabels = [], yLabels = [];
  ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  ctx.strokeStyle = "#e4e4e4"; ctx.fillStyle = "#555"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (let v = 0; v <= top + step / 2; v += step) {          // y axis: gridlines and values
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(left + pw, y(v)); ctx.stroke();
    const label = v >= 100 ? v.toFixed(0) : String(+v.toPrecision(3));
    ctx.fillText(label, left - 4, y(v)); yLabels.push(label);
  }
  ctx.save(); ctx.translate(10, up + ph / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
  ctx.fillText(unit, 0, 0); ctx.restore();
  ctx.textAlign = "center"; ctx.textBaseline = "top";        // x axis: seconds before now
  const tick = SPAN > 90 ? 30 : SPAN > 40 ? 15 : SPAN > 20 ? 5 : 2;
  for (let s = 0; s <= SPAN + 1e-9; s += tick) {
    const px = left + pw - s / SPAN * pw;
    ctx.beginPath(); ctx.moveTo(px, up); ctx.lineTo(px, up + ph); ctx.stroke();
    const label = s === 0 ? "now" : "−" + s + " s";
    ctx.fillText(label, Math.max(px, left + 12), up + ph + 4); xLabels.push(label);
  }
  ctx.strokeStyle = "#999"; ctx.strokeRect(left, up, pw, ph);
  canvas.dataset.axes = JSON.stringify({unit: unit, x: xLabels, y: yLabels});  // what was drawn, for tests
  const legend = [];
  Object.entries(history).forEach(([path, h], i) => {
    if (!h.some(p => p[key] > 0)) return;
    const colour = colours[i % colours.length];
    ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.beginPath();
    let started = false;
    for (const p of h) {
      if (lastTime - p.t > SPAN) continue;
      const px = x(p.t), py = y(p[key] || 0);
      started ? ctx.lineTo(px, py) : ctx.moveTo(px, py); started = true;
    }
    ctx.stroke();
    legend.push('<span style="color:' + colour + '">■ ' + esc(path) + '</span>');
  });
  document.getElementById("legend").innerHTML = legend.join("");
}
window.addEventListener("resize", () => plot(profilingOn));
function refreshGraph(){
  fetch("api/graph.svg").then(r => r.text()).then(svg => { document.getElementById("graph").innerHTML = svg; })
    .catch(() => {});
}
function choose(id){
  selected = id;
  document.getElementById("mjpeg").href = id ? "stream.mjpg?output=" + encodeURIComponent(id) : "#";
  if (ws && ws.readyState === 1) ws.send(JSON.stringify({preview: id}));
}
document.getElementById("output").addEventListener("change", e => choose(e.target.value || null));
function connect(){
  const base = location.pathname.replace(/[^/]*$/, "");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "ws";
  ws = new WebSocket(url);
  ws.binaryType = "blob";
  ws.onopen = () => { if (selected) ws.send(JSON.stringify({preview: selected})); };
  ws.onmessage = ev => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "metrics") render(msg);
      return;
    }
    const img = document.getElementById("preview"), old = img.src;
    img.src = URL.createObjectURL(ev.data);
    img.dataset.frames = String(++frames);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  };
  ws.onclose = () => {
    document.getElementById("status").textContent = "disconnected, retrying…";
    setTimeout(connect, 1000);
  };
}
connect();
</script></body></html>
"""
