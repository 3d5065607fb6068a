"""Seeing a running system: the supervision tree, the connection graph, inline notebook views.

* :func:`tree` prints the supervision tree with each actor's state, restarts, ticks and
  drops; :func:`tree_text` returns it as a string.
* :func:`snapshot` / :func:`to_json` give every actor's :meth:`~streamlib.Actor.stats` as a
  tree (a dict, or JSON text), plus the profiling summaries while profiling is on.
* :func:`graph` returns the connection graph as a :class:`Graph`: ``.mermaid()`` text,
  ``.svg()`` drawn here without any layout library, and inline in Jupyter.
* In Jupyter, an actor renders as a table of its counters with its subtree and graph
  (``Actor._repr_html_``), a :class:`~streamlib.VideoFrame` as an image (``_repr_png_``,
  encoded by :func:`encode_png` with zlib only), and :func:`live` shows a view of a running
  pipeline that updates itself in place -- one call.

Everything here reads the counters actors keep anyway; nothing adds work to a running actor
except a preview (:class:`PreviewTap`), which adds one subscriber with a one-slot mailbox.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import math
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, StreamInput, StreamOutput, VideoFrame, running_actors
from streamlib.mailbox import EMPTY
from streamlib.rendering import register_renderer

from . import profiling

__all__ = [
    "Graph",
    "LiveView",
    "PreviewTap",
    "actor_html",
    "encode_png",
    "graph",
    "live",
    "snapshot",
    "thumbnail",
    "to_json",
    "tree",
    "tree_text",
    "video_outputs",
]


# -- collecting actors -------------------------------------------------------------------------


def _roots(roots: Sequence[Actor]) -> list[Actor]:
    return list(roots) if roots else running_actors()


def walk(roots: Sequence[Actor] = ()) -> Iterator[tuple[Actor, int]]:
    """Every actor of the trees under ``roots`` (default: every running tree), depth first,
    with its depth below its root."""
    stack = [(root, 0) for root in reversed(_roots(roots))]
    while stack:
        actor, depth = stack.pop()
        yield actor, depth
        stack.extend((child, depth + 1) for child in reversed(list(actor.children)))


def _owner(port: StreamInput | StreamOutput) -> Actor | None:
    owner = port.owner
    return owner if isinstance(owner, Actor) else None


def _connected_actors(roots: Sequence[Actor]) -> list[Actor]:
    """The actors of the trees under ``roots`` and, transitively, every actor wired to them."""
    found: dict[Actor, None] = dict.fromkeys(a for a, _ in walk(roots))
    queue = list(found)
    while queue:
        actor = queue.pop()
        neighbours: list[Actor | None] = []
        for port in list(actor.inputs.values()):
            neighbours.extend(_owner(up) for up in port.upstreams)
        for out in list(actor.outputs.values()):
            neighbours.extend(_owner(sub) for sub in out.subscribers)
        for other in neighbours:
            if other is not None and other not in found:
                found[other] = None
                queue.append(other)
    return list(found)


# -- stats as data -------------------------------------------------------------------------------


def snapshot(*roots: Actor) -> dict[str, Any]:
    """Every tree's stats (``actor.stats(recursive=True)``), with the time it was taken and,
    while profiling is on, the profiling summaries (seconds)."""
    found: dict[str, Any] = {
        "time": time.time(),
        "monotonic": time.monotonic(),
        "profiling": profiling.enabled(),
        "actors": [_stats(root, recursive=True) for root in _roots(roots)],
    }
    if profiling.enabled():
        found["profile"] = profiling.summary()
    return found


def _stats(actor: Actor, recursive: bool = False) -> dict[str, Any]:
    """``actor.stats()``, retried if the actor rewired itself while we read it from another thread."""
    for _ in range(3):
        try:
            return actor.stats(recursive=recursive)
        except RuntimeError:  # a dict changed size while we iterated it
            continue
    return actor.stats(recursive=recursive)


def to_json(*roots: Actor, indent: int | None = 2) -> str:
    """:func:`snapshot` as JSON text."""
    return json.dumps(snapshot(*roots), indent=indent, default=repr)


# -- the supervision tree as text ---------------------------------------------------------------


def _describe(stats: dict[str, Any]) -> str:
    state = stats["state"].upper() if stats["state"] == "failed" else stats["state"]
    parts = [f"{stats['name']} ({stats['class']})", state]
    parts.append(f"restarts={stats['restarts']}")
    if stats["inputs"] or stats["outputs"] or stats["ticks"]:
        parts.append(f"ticks={stats['ticks']}")
    if stats["skipped_ticks"]:
        parts.append(f"skipped={stats['skipped_ticks']}")
    if stats["inputs"]:
        parts.append(f"in={stats['messages_in']}")
        parts.append(f"dropped={stats['dropped']}")
        queues = " ".join(f"{n}:{p['queued']}/{p['capacity']}" for n, p in stats["inputs"].items())
        parts.append(f"queues[{queues}]")
    if stats["outputs"]:
        parts.append(f"out={stats['messages_out']}")
    profile = stats.get("profile") or {}
    if "process" in profile:
        parts.append(f"process p50={profile['process']['p50'] * 1e3:.2f}ms")
    if "latency" in profile:
        parts.append(f"latency p99={profile['latency']['p99'] * 1e3:.2f}ms")
    if "failure" in stats:
        parts.append(f"failure={stats['failure']!r}")
    return "  ".join(parts)


def tree_text(*roots: Actor) -> str:
    """The supervision tree under ``roots`` (default: every running tree) as text."""
    lines: list[str] = []

    def emit(stats: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        if top:
            lines.append(_describe(stats).replace(stats["name"], stats["path"], 1))
            child_prefix = ""
        else:
            lines.append(f"{prefix}{'└── ' if last else '├── '}{_describe(stats)}")
            child_prefix = prefix + ("    " if last else "│   ")
        children = stats.get("children", [])
        for i, child in enumerate(children):
            emit(child, child_prefix, i == len(children) - 1, False)

    for root in _roots(roots):
        emit(_stats(root, recursive=True), "", True, True)
    return "\n".join(lines) if lines else "(no running actors)"


def tree(*roots: Actor, file: TextIO | None = None) -> None:
    """Print the supervision tree under ``roots`` (default: every running tree): each actor's
    state, restarts, ticks, messages in and out, drops and queue depths."""
    print(tree_text(*roots), file=file if file is not None else sys.stdout)


# -- the connection graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """One connection: ``source.outputs[output] >> target.inputs[input]``."""

    source: Actor
    output: str
    target: Actor
    input: str
    msg_type: str
    dropped: int


_NODE_W, _NODE_H, _GAP_X, _GAP_Y, _MARGIN = 200, 66, 150, 26, 20
_STATE_COLOURS = {"running": "#2e7d32", "stopped": "#757575", "failed": "#c62828"}


class Graph:
    """The connections between actors, as Mermaid text or an SVG drawing (inline in Jupyter).

    Counters are read when the graph is built; build a new one (``streamlib.graph()``) to
    see fresh figures."""

    def __init__(self, roots: Sequence[Actor] = ()) -> None:
        self.roots = _roots(roots)
        self.actors = _connected_actors(self.roots)
        self.stats = {a: _stats(a) for a in self.actors}
        members = set(self.actors)
        self.edges: list[Edge] = []
        for actor in self.actors:
            for out_name, out in list(actor.outputs.items()):
                for port in out.subscribers:
                    target = _owner(port)
                    if target is None or target not in members:
                        continue  # a preview tap, or an actor outside the picture
                    self.edges.append(
                        Edge(actor, out_name, target, port.name, getattr(out.msg_type, "__name__", "?"), port.dropped)
                    )
        # Boxes are drawn for actors with ports, and for lone actors with no children.
        self.nodes = [a for a in self.actors if a.inputs or a.outputs or not a.children]
        self._ids = {a: f"n{i}" for i, a in enumerate(self.actors)}

    # -- Mermaid --------------------------------------------------------------------------

    def mermaid(self) -> str:
        """Mermaid ``flowchart`` text: supervisors as subgraphs, drops on the edges."""
        members = set(self.actors)
        nodes = set(self.nodes)
        lines = ["flowchart LR"]

        def label(actor: Actor) -> str:
            s = self.stats[actor]
            text = f"{actor.name}<br/>{s['class']} · {s['state']}"
            if s["restarts"]:
                text += f" · {s['restarts']} restarts"
            return _mermaid_text(text)

        def emit(actor: Actor, indent: str) -> None:
            ident = self._ids[actor]
            kids = [c for c in actor.children if c in members]
            if kids:
                lines.append(f'{indent}subgraph s{ident[1:]}["{_mermaid_text(actor.path)} ({type(actor).__name__})"]')
                if actor in nodes:
                    lines.append(f'{indent}    {ident}["{label(actor)}"]')
                for child in kids:
                    emit(child, indent + "    ")
                lines.append(f"{indent}end")
            elif actor in nodes:
                lines.append(f'{indent}{ident}["{label(actor)}"]')

        for actor in self.actors:
            if actor.parent is None or actor.parent not in members:
                emit(actor, "    ")
        for e in self.edges:
            text = e.output if e.output == e.input else f"{e.output} → {e.input}"
            if e.dropped:
                text += f" ({e.dropped} dropped)"
            lines.append(f'    {self._ids[e.source]} -->|"{_mermaid_text(text)}"| {self._ids[e.target]}')
        for actor in self.nodes:
            state = self.stats[actor]["state"]
            if state != "running":
                colour = _STATE_COLOURS.get(state, "#000")
                lines.append(f"    style {self._ids[actor]} stroke:{colour},stroke-width:2px")
        return "\n".join(lines)

    # -- SVG ------------------------------------------------------------------------------

    def _layout(self) -> dict[Actor, tuple[float, float]]:
        """Layers by longest path from the sources (left to right), ordered by predecessors."""
        nodes = self.nodes
        index = {a: i for i, a in enumerate(nodes)}
        links = [(e.source, e.target) for e in self.edges if e.source in index and e.target in index]
        layer = dict.fromkeys(nodes, 0)
        for _ in range(len(nodes)):
            changed = False
            for a, b in links:
                if a is not b and layer[b] < layer[a] + 1 < len(nodes):
                    layer[b] = layer[a] + 1
                    changed = True
            if not changed:
                break
        columns: dict[int, list[Actor]] = {}
        for actor in nodes:
            columns.setdefault(layer[actor], []).append(actor)
        row: dict[Actor, float] = {}
        for col in sorted(columns):
            members = columns[col]
            size = len(members)

            def weight(actor: Actor, size: int = size) -> float:
                preds = [row[a] for a, b in links if b is actor and a in row]
                return sum(preds) / len(preds) if preds else index[actor] / max(len(nodes), 1) * size

            members.sort(key=weight)
            for i, actor in enumerate(members):
                row[actor] = float(i)
        return {a: (_MARGIN + layer[a] * (_NODE_W + _GAP_X), _MARGIN + row[a] * (_NODE_H + _GAP_Y)) for a in nodes}

    def svg(self) -> str:
        """The graph as a standalone SVG document (no layout library needed)."""
        pos = self._layout()
        width = max((x for x, _ in pos.values()), default=0) + _NODE_W + 2 * _MARGIN
        height = max((y for _, y in pos.values()), default=0) + _NODE_H + 2 * _MARGIN + 30
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/>'
            "</marker></defs>",
        ]
        if not pos:
            out.append(f'<text x="{_MARGIN}" y="{_MARGIN + 14}">(no actors)</text>')
        for e in self.edges:
            if e.source not in pos or e.target not in pos:
                continue
            x1, y1 = pos[e.source]
            x2, y2 = pos[e.target]
            y1 += _NODE_H / 2 + _port_offset(list(e.source.outputs), e.output)
            y2 += _NODE_H / 2 + _port_offset(list(e.target.inputs), e.input)
            x1 += _NODE_W
            if x2 > x1:
                c1, c2 = (x1 + _GAP_X / 2, y1), (x2 - _GAP_X / 2, y2)
            else:  # a backward edge (a cycle): loop under the boxes
                c1, c2 = (x1 + _GAP_X, y1 + _NODE_H + 20), (x2 - _GAP_X, y2 + _NODE_H + 20)
            path = f"M {x1:.1f} {y1:.1f} C {c1[0]:.1f} {c1[1]:.1f}, {c2[0]:.1f} {c2[1]:.1f}, {x2:.1f} {y2:.1f}"
            colour = "#c62828" if e.dropped else "#555"
            out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5" marker-end="url(#arrow)"/>')
            mx = (x1 + 3 * c1[0] + 3 * c2[0] + x2) / 8
            my = (y1 + 3 * c1[1] + 3 * c2[1] + y2) / 8
            text = e.output if e.output == e.input else f"{e.output}→{e.input}"
            if e.dropped:
                text += f" ({e.dropped} dropped)"
            out.append(
                f'<text x="{mx:.1f}" y="{my - 4:.1f}" text-anchor="middle" font-size="10" fill="{colour}" '
                f'stroke="#fff" stroke-width="3" paint-order="stroke">'
                f"{_esc(text)}</text>"
            )
        for actor, (x, y) in pos.items():
            s = self.stats[actor]
            colour = _STATE_COLOURS.get(s["state"], "#000")
            details = f"ticks {s['ticks']}"
            if s["inputs"]:
                details += f" · in {s['messages_in']}"
            if s["outputs"]:
                details += f" · out {s['messages_out']}"
            third = f"{s['state']}"
            if s["dropped"]:
                third += f" · {s['dropped']} dropped"
            if s["restarts"]:
                third += f" · {s['restarts']} restarts"
            out.append(
                f'<g class="actor" data-path="{_esc(actor.path)}"><title>{_esc(actor.path)}</title>'
                f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="8" fill="#fafafa" '
                f'stroke="{colour}" stroke-width="2"/>'
                f'<text x="{x + 10}" y="{y + 18}" font-weight="bold">{_esc(_clip(actor.name, 26))}</text>'
                f'<text x="{x + 10}" y="{y + 34}" fill="#555">{_esc(_clip(s["class"], 30))}</text>'
                f'<text x="{x + 10}" y="{y + 49}" font-size="10">{_esc(_clip(details, 36))}</text>'
                f'<text x="{x + 10}" y="{y + 61}" font-size="10" fill="{colour}">{_esc(_clip(third, 36))}</text></g>'
            )
        out.append("</svg>")
        return "\n".join(out)

    def _repr_svg_(self) -> str:
        return self.svg()

    def save(self, path: str | Path) -> Path:
        """Write the SVG (``.svg``) or the Mermaid text (``.mmd``, ``.md``: fenced) to ``path``."""
        target = Path(path)
        if target.suffix == ".svg":
            target.write_text(self.svg())
        elif target.suffix == ".md":
            target.write_text(f"```mermaid\n{self.mermaid()}\n```\n")
        else:
            target.write_text(self.mermaid() + "\n")
        return target

    def __str__(self) -> str:
        return self.mermaid()

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} actors, {len(self.edges)} connections>"


def graph(*roots: Actor) -> Graph:
    """The connection graph of the trees under ``roots`` (default: every running tree) and of
    every actor wired to them."""
    return Graph(roots)


def _port_offset(names: list[str], name: str) -> float:
    if len(names) <= 1 or name not in names:
        return 0.0
    spread = min(12.0, (_NODE_H - 16) / (len(names) - 1))
    return (names.index(name) - (len(names) - 1) / 2) * spread


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


# -- images ----------------------------------------------------------------------------------------


def _as_uint8(pixels: Any) -> NDArray[np.uint8]:
    a: NDArray[Any] = np.asarray(pixels)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a) * (255.0 if float(np.max(a, initial=0.0)) <= 1.0 else 1.0)
    out: NDArray[np.uint8] = np.clip(a, 0, 255).astype(np.uint8)
    return out


def encode_png(pixels: Any, compression: int = 6) -> bytes:
    """Encode an image array as PNG with zlib alone: ``(h, w)`` grey, ``(h, w, 1|2|3|4)``
    grey, grey+alpha, RGB or RGBA. Floats in [0, 1] are scaled to 0-255."""
    a = _as_uint8(pixels)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"cannot encode an array of shape {np.shape(pixels)} as an image")
    h, w, c = a.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.zeros((h, w * c + 1), np.uint8)  # each row: filter type 0, then the pixels
    raw[:, 1:] = np.ascontiguousarray(a).reshape(h, w * c)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), compression))
        + chunk(b"IEND", b"")
    )


def thumbnail(pixels: Any, max_side: int = 480) -> np.ndarray[Any, Any]:
    """A view of ``pixels`` no larger than ``max_side`` on either side (every n-th pixel: no copy)."""
    a = np.asarray(pixels)
    step = max(math.ceil(max(a.shape[0], a.shape[1]) / max_side), 1)
    return a[::step, ::step] if step > 1 else a


def _frame_pixels(message: Any) -> Any | None:
    data = getattr(message, "data", None)
    if isinstance(data, np.ndarray) and data.ndim in (2, 3) and data.size:
        return data
    return None


class PreviewTap:
    """The latest message of an output, for a preview: no actor, no work until looked at.

    An unowned one-slot input (newest wins) subscribed to ``output``; :meth:`latest` peeks
    at it. The sender pays one mailbox append per message while the tap is attached."""

    def __init__(self, output: StreamOutput) -> None:
        self.output = output
        # In the output's own memory space: a preview never inserts a transfer (e.g. a GPU download).
        space: dict[str, Any] = {"memory": output.memory} if hasattr(output, "memory") else {}
        self.port = StreamInput("preview", output.msg_type, maxsize=1, **space)
        output.connect(self.port)

    def latest(self) -> Any | None:
        item = self.port.mailbox.peek()
        return None if item is EMPTY else item

    def pixels(self, max_side: int = 480) -> Any | None:
        """The latest frame's pixels, shrunk to ``max_side``, or ``None``."""
        pixels = _frame_pixels(self.latest())
        return None if pixels is None else thumbnail(pixels, max_side)

    @property
    def received(self) -> int:
        return self.port.mailbox.received

    def close(self) -> None:
        self.output.disconnect(self.port)

    def __repr__(self) -> str:
        return f"<PreviewTap on {self.output.path} received={self.received}>"


def video_outputs(*roots: Actor) -> list[StreamOutput]:
    """Every output of ``VideoFrame`` (or a subclass) among the actors :func:`graph` would show."""
    found = []
    for actor in _connected_actors(roots):
        for out in list(actor.outputs.values()):
            if isinstance(out.msg_type, type) and issubclass(out.msg_type, VideoFrame):
                found.append(out)
    return found


# -- Jupyter ---------------------------------------------------------------------------------------


_TABLE_STYLE = (
    "<style>.streamlib-stats{border-collapse:collapse;font-size:12px}"
    ".streamlib-stats td,.streamlib-stats th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}</style>"
)

INLINE_LIMIT = 200
"""Jupyter views show at most this many actors in a table, and draw no graph of more."""


def _stats_table(rows: Iterable[tuple[dict[str, Any], int]]) -> str:
    head = (
        "<tr><th style='text-align:left'>actor</th><th>class</th><th>state</th><th>ticks</th><th>in</th>"
        "<th>out</th><th>dropped</th><th>queues</th><th>restarts</th><th>skipped</th><th>p99 latency</th></tr>"
    )
    body: list[str] = []
    more = 0
    for s, depth in rows:
        if len(body) >= INLINE_LIMIT:
            more += 1
            continue
        colour = _STATE_COLOURS.get(s["state"], "#000")
        queues = " ".join(f"{_esc(n)} {p['queued']}/{p['capacity']}" for n, p in s["inputs"].items())
        latency = (s.get("profile") or {}).get("latency")
        p99 = "" if latency is None else f"{latency['p99'] * 1e3:.2f} ms"
        body.append(
            f"<tr><td style='text-align:left;padding-left:{depth * 1.2 + 0.3:.1f}em'>{_esc(s['name'])}</td>"
            f"<td>{_esc(s['class'])}</td><td style='color:{colour}'>{s['state']}</td><td>{s['ticks']}</td>"
            f"<td>{s['messages_in']}</td><td>{s['messages_out']}</td><td>{s['dropped']}</td><td>{queues}</td>"
            f"<td>{s['restarts']}</td><td>{s['skipped_ticks']}</td>"
            f"<td>{p99}</td></tr>"
        )
    if more:
        body.append(f"<tr><td colspan='11' style='text-align:left'>… and {more} more actors</td></tr>")
    return f"{_TABLE_STYLE}<table class='streamlib-stats'>{head}{''.join(body)}</table>"


def _flatten(stats: dict[str, Any], depth: int = 0) -> Iterator[tuple[dict[str, Any], int]]:
    yield stats, depth
    for child in stats.get("children", []):
        yield from _flatten(child, depth + 1)


def actor_html(actor: Actor) -> str:
    """An actor as HTML: its subtree's counters, its ports, and the graph of its connections."""
    s = _stats(actor, recursive=True)
    parts = [
        f"<div class='streamlib-actor'><b>{_esc(actor.path)}</b> <code>{_esc(s['class'])}</code> "
        f"<span style='color:{_STATE_COLOURS.get(s['state'], '#000')}'>{s['state']}</span>",
        _stats_table(_flatten(s)),
    ]
    ports = [
        f"in <code>{_esc(n)}</code>: {p['queued']}/{p['capacity']} queued, {p['received']} received, "
        f"{p['dropped']} dropped"
        for n, p in s["inputs"].items()
    ]
    ports += [f"out <code>{_esc(n)}</code>: {p['sent']} sent to {p['subscribers']}" for n, p in s["outputs"].items()]
    if ports:
        parts.append("<br>".join(ports))
    if "failure" in s:
        parts.append(f"<div style='color:#c62828'>{_esc(s['failure'])}</div>")
    g = Graph([actor])
    if (g.edges or len(g.nodes) > 1) and len(g.nodes) <= INLINE_LIMIT:
        parts.append(g.svg())
    parts.append("</div>")
    return "\n".join(parts)


def _png_data_uri(pixels: Any, max_side: int = 480) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(thumbnail(pixels, max_side), 1)).decode()


class LiveView:
    """A view of running actors that redraws itself every ``interval`` seconds.

    In Jupyter it is one output cell, updated in place (tree of counters, graph, and the
    latest frame of ``preview``); elsewhere it prints the tree. Stop it with :meth:`stop`
    (it also stops by itself after ``duration`` seconds, or once every actor has ended).
    """

    def __init__(
        self,
        roots: Sequence[Actor] = (),
        interval: float = 0.5,
        preview: Actor | StreamOutput | None = None,
        duration: float | None = None,
        graph: bool = True,
    ) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.show_graph = graph
        self.updates = 0
        self._deadline = None if duration is None else time.monotonic() + duration
        self._tap: PreviewTap | None = None
        if preview is not None:
            output = (
                preview
                if isinstance(preview, StreamOutput)
                else next((o for o in video_outputs(preview) if o.owner is preview), None)
            )
            if output is None:
                raise ValueError(f"{preview!r} has no VideoFrame output to preview")
            self._tap = PreviewTap(output)
        self._handle: Any = None
        self._stopped = threading.Event()
        shell: Any = None
        try:
            import IPython
            import IPython.display
        except ImportError:
            pass
        else:
            shell = IPython.get_ipython()  # type: ignore[attr-defined,no-untyped-call]
        if shell is not None:
            self._html: Any = IPython.display.HTML  # type: ignore[attr-defined]
            self._handle = IPython.display.display(self._html(self.html()), display_id=True)  # type: ignore[no-untyped-call]
        else:
            print(self.text(), flush=True)
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._thread = threading.Thread(target=self._run_thread, name="streamlib-live", daemon=True)
            self._thread.start()
        else:
            self._task = loop.create_task(self._run_task())

    def text(self) -> str:
        return tree_text(*self.roots)

    def html(self) -> str:
        rows = [row for root in _roots(self.roots) for row in _flatten(_stats(root, recursive=True))]
        parts = [
            f"<div class='streamlib-live'><small>streamlib · {time.strftime('%H:%M:%S')} · "
            f"update {self.updates}</small>",
            _stats_table(rows),
        ]
        if self.show_graph:
            g = Graph(self.roots)
            if len(g.nodes) <= INLINE_LIMIT:
                parts.append(g.svg())
        if self._tap is not None:
            pixels = self._tap.pixels()
            if pixels is not None:
                parts.append(f"<div><img class='streamlib-preview' src='{_png_data_uri(pixels)}'/></div>")
        parts.append("</div>")
        return "\n".join(parts)

    def update(self) -> None:
        """Redraw now."""
        self.updates += 1
        if self._handle is not None:
            self._handle.update(self._html(self.html()))
        else:
            print(self.text(), flush=True)

    def _finished(self) -> bool:
        if self._stopped.is_set():
            return True
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return True
        watched = _roots(self.roots)
        return bool(self.roots) and all(a.join().done() for a in watched)

    async def _run_task(self) -> None:
        while not self._finished():
            await asyncio.sleep(self.interval)
            self.update()
        self._close()

    def _run_thread(self) -> None:
        while not self._finished():
            if self._stopped.wait(self.interval):
                break
            self.update()
        self._close()

    def _close(self) -> None:
        if self._tap is not None:
            self._tap.close()
            self._tap = None

    def stop(self) -> None:
        """Stop updating (the last drawing stays)."""
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()
        self._close()

    @property
    def running(self) -> bool:
        return not self._stopped.is_set() and (
            (self._task is not None and not self._task.done()) or (self._thread is not None and self._thread.is_alive())
        )

    def __repr__(self) -> str:
        return f"<LiveView of {len(_roots(self.roots))} tree(s), {self.updates} updates>"


def live(
    *roots: Actor,
    interval: float = 0.5,
    preview: Actor | StreamOutput | None = None,
    duration: float | None = None,
    graph: bool = True,
) -> LiveView:
    """Show running actors (default: every tree), redrawn every ``interval`` seconds: in Jupyter
    an output that updates in place, with the graph and a preview of ``preview``'s video."""
    return LiveView(roots, interval=interval, preview=preview, duration=duration, graph=graph)


register_renderer(Actor, "text/html", actor_html)
register_renderer(VideoFrame, "image/png", lambda frame: encode_png(frame.data))
