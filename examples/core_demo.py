"""A small, real, headless pipeline built from core actors only (numpy frames, no media).

::

    supervisor (one_for_one)
    ├── gradient   30 fps own clock: a moving RGB gradient
    ├── invert     synced to gradient: 255 - pixels
    ├── blur       synced to invert, on dispatcher="thread": a 3x3 box blur in numpy
    └── stats      synced to blur: counts frames, missed frame numbers, latency, brightness

    gradient >> invert >> blur >> stats

It runs for ``--seconds`` (default 3), stops the tree top-down (``await supervisor.stop()``
stops the children, then the supervisor), and prints a table of every actor's
``stats()``. ``--fail-at N`` makes ``invert`` raise once on frame N to show a supervised
restart: the restarted actor keeps its mailboxes and wiring, and frames keep flowing.

Run it with ``python examples/core_demo.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import numpy as np

from streamlib import Actor, StreamInput, StreamOutput, Supervisor, TimedTick, VideoFrame

# A failed child is logged (with its traceback) by its supervisor; keep the demo's output readable.
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class Gradient(Actor):
    """Generates a gradient that scrolls ``speed`` pixels per frame. Nothing is connected
    upstream, so the actor runs its own clock at ``default_fps``."""

    default_fps = 30.0

    def __init__(self, width: int = 320, height: int = 240, speed: int = 4, **kw: Any) -> None:
        super().__init__(**kw)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.speed = speed
        x = np.arange(width, dtype=np.uint16)[None, :]
        y = np.arange(height, dtype=np.uint16)[:, None]
        self._x = np.broadcast_to(x, (height, width))
        self._y = np.broadcast_to((y * 255 // max(height - 1, 1)).astype(np.uint8), (height, width))

    async def process(self, tick: TimedTick) -> None:
        shift = (self._x + tick.frame_number * self.speed) % 256
        frame = np.empty((*self._x.shape, 3), dtype=np.uint8)
        frame[..., 0] = shift
        frame[..., 1] = self._y
        frame[..., 2] = 255 - shift
        await self.outputs["video"].send(VideoFrame.at(tick, data=frame))


class Invert(Actor):
    """255 - pixels. With ``fail_at``, raises once when it sees that frame number."""

    _failed_once = False  # class-level: a restarted instance is a new object

    def __init__(self, fail_at: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at = fail_at
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is None:
            return
        if frame.frame_number == self.fail_at and not Invert._failed_once:
            Invert._failed_once = True
            raise RuntimeError(f"simulated failure on frame {frame.frame_number}")
        await self.outputs["video"].send(frame.with_data(255 - frame.data))


class Blur(Actor):
    """A 3x3 box blur. ``process`` is a plain ``def``: run with ``dispatcher="thread"``, it
    executes on a worker thread (numpy releases the GIL) and uses the ``*_nowait`` calls."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    def process(self, tick: TimedTick) -> None:  # type: ignore[override]
        frame = self.inputs["video"].read_nowait()
        if frame is None:
            return
        src = frame.data
        h, w = src.shape[:2]
        padded = np.pad(src, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.uint16)
        acc = np.zeros(src.shape, dtype=np.uint16)
        for dy in range(3):
            for dx in range(3):
                acc += padded[dy : dy + h, dx : dx + w]
        self.outputs["video"].send_nowait(frame.with_data((acc // 9).astype(np.uint8)))


class Stats(Actor):
    """A sink: counts frames, frame numbers it never saw, latency and mean brightness.
    ``default_fps = None``: it ticks only when a frame arrives."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.frames = 0
        self.missed = 0
        self.first_frame: int | None = None
        self.last_frame: int | None = None
        self.latencies: list[float] = []
        self.brightness = 0.0

    async def process(self, tick: TimedTick) -> None:
        frame = await self.inputs["video"].try_read()
        if frame is None:
            return
        # Every message carries the clock metadata of the source tick that produced it.
        self.latencies.append(time.monotonic() - frame.timestamp)
        if self.last_frame is not None and frame.frame_number > self.last_frame + 1:
            self.missed += frame.frame_number - self.last_frame - 1
        if self.first_frame is None:
            self.first_frame = frame.frame_number
        self.last_frame = frame.frame_number
        self.frames += 1
        self.brightness = float(frame.data.mean())


def table(rows: list[dict[str, Any]], seconds: float) -> str:
    header = ("actor", "class", "state", "ticks", "ticks/s", "received", "dropped", "lost", "sent", "restarts")
    lines = []
    for s in rows:
        inputs, outputs = s["inputs"].values(), s["outputs"].values()
        lines.append(
            (
                s["path"],
                s["class"],
                s["state"],
                str(s["ticks"]),
                f"{s['ticks'] / seconds:.1f}",
                str(sum(i["received"] for i in inputs)),
                str(sum(i["dropped"] for i in inputs)),
                str(sum(i["lost"] for i in inputs)),
                str(sum(o["sent"] for o in outputs)),
                str(s["restarts"]),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, lines)])


async def main(seconds: float = 3.0, fail_at: int | None = None, width: int = 320, height: int = 240) -> int:
    sup = Supervisor(strategy="one_for_one", max_restarts=3, within=5.0, name="pipeline")
    sup.spawn(Gradient, width=width, height=height, name="gradient")
    sup.spawn(Invert, fail_at=fail_at, name="invert")
    sup.spawn(Blur, dispatcher="thread", name="blur")
    stats = sup.spawn(Stats, name="stats")

    def child(name: str) -> Actor:
        # A restarted child is a new instance: look it up by name rather than keeping the old one.
        return next(c for c in sup.children if c.name == name)

    child("gradient") >> child("invert") >> child("blur") >> stats

    started = time.monotonic()
    await asyncio.sleep(seconds)
    state = await sup.stop()  # top-down: the children stop first, then the supervisor
    elapsed = time.monotonic() - started

    rows = [child(n).stats() for n in ("gradient", "invert", "blur", "stats")] + [sup.stats()]
    print(table(rows, elapsed))
    print()
    lat = np.array(stats.latencies) * 1000 if stats.latencies else np.zeros(1)
    print(
        f"{stats.frames} frames in {elapsed:.2f} s = {stats.frames / elapsed:.1f} frames/s at the sink "
        f"(source frames {stats.first_frame}..{stats.last_frame}, {stats.missed} never arrived)"
    )
    print(
        f"latency source->sink: mean {lat.mean():.2f} ms, p95 {np.percentile(lat, 95):.2f} ms, max {lat.max():.2f} ms"
    )
    print(f"mean brightness of the last frame: {stats.brightness:.1f}; supervisor ended {state.name}")
    return 0 if stats.frames > 0 else 1


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run (default 3)")
    parser.add_argument("--fail-at", type=int, default=None, metavar="N", help="make 'invert' fail once on frame N")
    parser.add_argument("--size", default="320x240", help="frame size WIDTHxHEIGHT (default 320x240)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    return asyncio.run(main(args.seconds, args.fail_at, width, height))


if __name__ == "__main__":
    sys.exit(cli())
