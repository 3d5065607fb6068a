"""Views of a running system: stats as a tree and JSON, ``tree()``, the graph as Mermaid and
SVG, PNG encoding, Jupyter reprs, and a live view -- in a real Jupyter kernel too."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamlib
from streamlib import Actor, StreamInput, StreamOutput, Supervisor, TimedTick, VideoFrame, views
from streamlib.testing import Probe

ROOT = Path(__file__).resolve().parents[1]


class Frames(Actor):
    default_fps = 200.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        pixels = np.zeros((24, 32, 3), np.uint8)
        pixels[:, :, 1] = tick.frame_number % 256
        await self.outputs["video"].send(VideoFrame.at(tick, data=pixels))


class Flaky(Actor):
    """Passes frames on; fails once on its 5th frame (a supervisor restarts it)."""

    failed_once = False

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=1)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.seen = 0

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is None:
            return
        self.seen += 1
        if self.seen == 5 and not Flaky.failed_once:
            Flaky.failed_once = True
            raise RuntimeError("flaky failure")
        await asyncio.sleep(0.01)  # slower than the source: its one-slot input drops
        await self.outputs["video"].send(frame)


async def pipeline() -> tuple[Supervisor, Frames, Flaky, Probe]:
    Flaky.failed_once = False
    app = Supervisor(name="viewapp")
    source = app.spawn(Frames, name="frames")
    flaky = app.spawn(Flaky, name="flaky")
    probe = app.spawn(Probe, VideoFrame, name="probe")
    source >> flaky >> probe
    await probe.wait_for(10)
    flaky = app.children[1]  # type: ignore[assignment] # the restarted instance
    return app, source, flaky, probe


async def test_stats_tree_json_and_text() -> None:
    app, source, flaky, _probe = await pipeline()
    assert flaky.restarts == 1
    stats = app.stats(recursive=True)
    assert [c["name"] for c in stats["children"]] == ["frames", "flaky", "probe"]
    child = stats["children"][1]
    for key in ("ticks", "restarts", "skipped_ticks", "state", "messages_in", "messages_out", "dropped", "inputs"):
        assert key in child
    assert child["restarts"] == 1 and child["dropped"] > 0
    assert child["inputs"]["video"]["capacity"] == 1 and child["inputs"]["video"]["queued"] in (0, 1)
    assert stats["children"][0]["messages_out"] > 0
    assert "children" not in source.stats()  # the flat form keeps its old keys
    for key in ("path", "class", "state", "ticks", "restarts", "skipped_ticks", "inputs", "outputs"):
        assert key in source.stats()

    data = json.loads(views.to_json(app))
    assert data["actors"][0]["path"] == "/viewapp" and data["profiling"] is False
    assert data["actors"][0]["children"][2]["messages_in"] > 0

    text = views.tree_text(app)
    lines = text.splitlines()
    assert lines[0].startswith("/viewapp (Supervisor)  running  restarts=0")
    assert lines[1].startswith("├── frames (Frames)  running")
    assert lines[2].startswith("├── flaky (Flaky)  running  restarts=1")
    assert "dropped=" in lines[2] and "queues[video:" in lines[2]
    assert lines[3].startswith("└── probe (Probe)")
    out = io.StringIO()
    streamlib.tree(app, file=out)
    assert out.getvalue().strip() == views.tree_text(app)
    assert "/viewapp" in views.tree_text()  # default: every running tree
    await app.stop()
    assert "STOPPED" not in views.tree_text(app) and "stopped" in views.tree_text(app)


async def test_graph_mermaid_and_svg() -> None:
    app, _source, _flaky, probe = await pipeline()
    g = streamlib.graph(app)
    assert len(g.nodes) == 3 and len(g.edges) == 2  # the supervisor has no box: it is a subgraph
    mermaid = g.mermaid()
    assert mermaid.startswith("flowchart LR")
    assert 'subgraph s0["/viewapp (Supervisor)"]' in mermaid
    assert "frames<br/>Frames · running" in mermaid
    assert '-->|"video (' in mermaid and 'dropped)"|' in mermaid  # drops on the edge into flaky
    assert '-->|"video → in"|' in mermaid

    svg = g.svg()
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    boxes = root.findall(f"{ns}g")
    assert sorted(b.get("data-path") for b in boxes) == ["/viewapp/flaky", "/viewapp/frames", "/viewapp/probe"]
    assert len(root.findall(f"{ns}path")) == 2
    assert "dropped" in svg and "restarts" in svg
    # left to right: source, filter, sink
    xs = {b.get("data-path"): float(b.find(f"{ns}rect").get("x")) for b in boxes}  # type: ignore[union-attr]
    assert xs["/viewapp/frames"] < xs["/viewapp/flaky"] < xs["/viewapp/probe"]
    assert g._repr_svg_().startswith("<svg")

    # from one actor: the graph follows the wiring to its neighbours
    assert {a.name for a in streamlib.graph(probe).nodes} >= {"frames", "flaky", "probe"}
    await app.stop()


def test_graph_save(tmp_path: Path) -> None:
    g = views.graph()  # whatever runs now (maybe nothing)
    assert ET.fromstring(g.save(tmp_path / "g.svg").read_text()).tag.endswith("svg")
    assert g.save(tmp_path / "g.mmd").read_text().startswith("flowchart LR")
    assert g.save(tmp_path / "g.md").read_text().startswith("```mermaid\nflowchart LR")


def decode_png(data: bytes) -> np.ndarray[Any, Any]:
    """A small PNG reader (filter type 0 only, as encode_png writes), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour, *_ = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    assert depth == 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(h, w, channels)


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_encode_png_round_trip(channels: int | None) -> None:
    rng = np.random.default_rng(channels or 0)
    shape = (17, 23) if channels is None else (17, 23, channels)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    png = views.encode_png(pixels)
    back = decode_png(png)
    assert np.array_equal(back.reshape(pixels.shape), pixels)
    cv2 = pytest.importorskip("cv2")
    if channels in (None, 1, 3):
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        expected = pixels if channels != 3 else pixels[:, :, ::-1]
        assert np.array_equal(decoded.reshape(expected.shape), expected)


def test_encode_png_floats_and_bad_shapes() -> None:
    ones = decode_png(views.encode_png(np.ones((2, 2, 3), np.float32)))
    assert (ones == 255).all()
    with pytest.raises(ValueError):
        views.encode_png(np.zeros((2, 2, 5), np.uint8))
    assert views.thumbnail(np.zeros((1000, 2000, 3), np.uint8), 500).shape == (250, 500, 3)


def test_video_frame_and_actor_reprs() -> None:
    frame = VideoFrame(np.full((4, 6, 3), 200, np.uint8))
    assert (decode_png(frame._repr_png_()) == 200).all()


async def test_actor_html_and_live_view(capsys: pytest.CaptureFixture[str]) -> None:
    app, source, flaky, _probe = await pipeline()
    page = app._repr_html_()
    assert "<table" in page and "/viewapp" in page and "<svg" in page and "flaky" in page
    assert "<svg" not in Probe(VideoFrame)._repr_html_()  # alone: nothing to draw

    view = streamlib.live(app, interval=0.05, preview=source)  # no IPython kernel here: prints the tree
    assert view.running
    for _ in range(200):  # ~0.15 s on a quiet machine
        if view.updates >= 3:
            break
        await asyncio.sleep(0.05)
    assert view.updates >= 3
    html = view.html()
    assert "streamlib-preview" in html and "data:image/png;base64," in html
    view.stop()
    assert not view.running
    assert source.outputs["video"].subscribers == (flaky.inputs["video"],)  # the preview tap is gone
    printed = capsys.readouterr().out
    assert printed.count("/viewapp (Supervisor)") >= 3
    await app.stop()


# -- a real Jupyter kernel ----------------------------------------------------------------------

NOTEBOOK = [
    """\
import asyncio
import numpy as np
import streamlib
from streamlib import Actor, StreamOutput, VideoFrame
from streamlib.testing import Probe

class Frames(Actor):
    default_fps = 100.0
    def __init__(self, **kw):
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
    async def process(self, tick):
        await self.outputs["video"].send(VideoFrame.at(tick, data=np.full((16, 16, 3), 90, np.uint8)))

source = Frames(name="nb_source")
probe = Probe(VideoFrame, name="nb_probe")
source >> probe
view = streamlib.live(source, probe, interval=0.1, preview=source)
# nbclient applies a display's updates only while the cell that made it runs (a browser
# front end applies them whenever they come), so this cell waits here.
await asyncio.sleep(0.8)
""",
    "print(f'updates={view.updates}')",
    "source",
    "probe.messages[-1]",
    "streamlib.graph(source)",
    "view.stop()\nawait source.stop()\nawait probe.stop()",
]


@pytest.mark.timeout(60)
def test_live_view_and_reprs_in_a_kernel(tmp_path: Path) -> None:
    try:
        import ipykernel.kernelspec
        import nbformat
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager
        from nbclient import NotebookClient
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"ipykernel/nbclient cannot be imported ({exc}); install the 'dev' extra")
    kernels = tmp_path / "kernels"
    ipykernel.kernelspec.write_kernel_spec(kernels / "python3")
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK]
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=20, resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    live, sleep, actor, frame, graph, _ = nb.cells

    # The live view is one display, updated in place (nbclient applies update_display_data).
    (shown,) = [o for o in live.outputs if o["output_type"] == "display_data"]
    updates = int(sleep.outputs[0]["text"].split("=")[1])
    assert updates >= 3
    html = shown["data"]["text/html"]
    assert "nb_source" in html and "nb_probe" in html and "<svg" in html and "streamlib-preview" in html
    assert "update 0<" not in html  # redrawn in place since it was first shown

    (result,) = [o for o in actor.outputs if o["output_type"] == "execute_result"]
    assert "<table" in result["data"]["text/html"] and "/nb_source" in result["data"]["text/html"]
    (result,) = [o for o in frame.outputs if o["output_type"] == "execute_result"]
    import base64

    assert (decode_png(base64.b64decode(result["data"]["image/png"])) == 90).all()
    (result,) = [o for o in graph.outputs if o["output_type"] == "execute_result"]
    assert "image/svg+xml" in result["data"] and "nb_probe" in result["data"]["image/svg+xml"]
    assert sys.executable  # the kernelspec runs this interpreter
