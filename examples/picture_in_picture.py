"""Picture-in-picture: two sources composited, the inset framed by a Drawing and moved while it runs.

::

    bars (TestPattern 1280x720) ─────────────────────────────> compositor "main" (z=0)
    box  (TestPattern 320x180) ──> frame (Drawing: border + label) ──> "pip" (z=1) ──> FileSink pip.mp4

Every second the inset jumps to the next corner (``compositor.update_layer``). Headless;
writes ``pip.mp4`` to ``--out`` (default: a new temporary directory) and prints what it did.

Run: ``python examples/picture_in_picture.py [--seconds 3] [--out DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from streamlib.actors.compose import Compositor
from streamlib.actors.draw import Drawing
from streamlib.actors.files import FileSink
from streamlib.actors.video import TestPattern

BORDER = """
edge = skia.Paint(AntiAlias=True, Style=skia.Paint.kStroke_Style, StrokeWidth=6, Color=skia.Color(255, 200, 0))
canvas.drawRect(skia.Rect.MakeWH(ctx.width, ctx.height).makeInset(3, 3), edge)
canvas.drawString(f"PiP  {ctx.time:4.1f} s", 12, ctx.height - 12, skia.Font(font.getTypeface(), 20), paint)
"""


async def main(seconds: float, out: Path) -> None:
    width, height, fps = 1280, 720, 30
    frames = round(seconds * fps)
    bars = TestPattern("smpte_bars", width, height, fps, frames=frames, burn_in=True)
    box = TestPattern("moving_box", 320, 180, fps, frames=frames)
    comp = Compositor(width, height, fps=None, base=None)
    bars >> comp.add_layer("main", z=0)
    box >> Drawing(BORDER) >> comp.add_layer("pip", z=1, x=width - 340, y=20, opacity=0.95)
    sink = FileSink(out / "pip.mp4")
    comp >> sink

    corners = [(20, 20), (20, height - 200), (width - 340, height - 200), (width - 340, 20)]
    moved = 0
    finished = asyncio.ensure_future(sink.join())  # the sink ends after the sources' end of stream
    while not finished.done():
        await asyncio.wait([finished], timeout=1.0)
        if not finished.done():
            x, y = corners[moved % 4]
            comp.update_layer("pip", x=x, y=y)
            moved += 1
    stats = comp.stats()
    print(
        f"composited {stats['outputs']['video']['sent']} frames of {width}x{height} "
        f"(main + 320x180 inset, moved {moved} times); dropped on the way: "
        f"{sum(p['dropped'] for p in stats['inputs'].values())}"
    )
    print(f"wrote {out / 'pip.mp4'} ({sink.frames_written} frames)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    outdir = args.out or Path(tempfile.mkdtemp(prefix="streamlib-pip-"))
    outdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.seconds, outdir))
