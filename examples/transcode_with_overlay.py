"""Transcode a file with a vector overlay: ``FileSource >> Drawing >> FileSink``, lossless and as fast as possible.

With no input file given, it first makes one (3 s of SMPTE bars with burn-in, via
``TestPattern(realtime=False) >> FileSink``). Every queue blocks instead of dropping
(``realtime=False`` sources, ``overflow="block"`` inputs, ``lossless=True`` sink), so the
output has exactly the input's frames. Prints frame counts and the speed.

Run: ``python examples/transcode_with_overlay.py [INPUT] [--out DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import av

from streamlib.actors.draw import Drawing
from streamlib.actors.files import FileSink, FileSource
from streamlib.actors.video import TestPattern

OVERLAY = """
w, h = ctx.width, ctx.height
banner = skia.Rect.MakeXYWH(0, h * 0.85, w, h * 0.15)
canvas.drawRect(banner, skia.Paint(Color=skia.Color(20, 20, 120, 200)))
canvas.drawString(f"transcoded by streamlib   frame {ctx.frame_number:4d}   t={ctx.time:6.2f}s",
                  w * 0.03, h * 0.95, font, paint)
x = (ctx.time * w / 3) % w
canvas.drawCircle(x, h * 0.5, h * 0.05, skia.Paint(AntiAlias=True, Color=skia.Color(255, 80, 0, 220)))
"""


async def make_input(path: Path, seconds: float = 3.0) -> None:
    source = TestPattern("smpte_bars", 640, 360, 30, burn_in=True, frames=round(seconds * 30), realtime=False)
    sink = FileSink(path, lossless=True)
    source >> sink
    await sink.join()
    print(f"made input {path} ({sink.frames_written} frames)")


def count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def main(src: Path | None, out: Path) -> None:
    if src is None:
        src = out / "input.mp4"
        await make_input(src)
    dst = out / "output.mp4"
    start = time.perf_counter()
    source = FileSource(src, realtime=False, audio=False)
    overlay = Drawing(OVERLAY, overflow="block", maxsize=4)
    sink = FileSink(dst, lossless=True, preset="veryfast")
    source >> overlay >> sink
    await sink.join()
    elapsed = time.perf_counter() - start
    frames_in, frames_out = count(src), count(dst)
    print(
        f"transcoded {src} -> {dst}: {frames_in} frames in, {frames_out} frames out, "
        f"{elapsed:.2f} s ({frames_out / elapsed:.0f} fps), overlay errors: {overlay.error_count}"
    )
    if frames_in != frames_out:
        raise SystemExit(f"frame count mismatch: {frames_in} in, {frames_out} out")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", type=Path, default=None, help="media file (default: make one)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    args = parser.parse_args()
    outdir = args.out or Path(tempfile.mkdtemp(prefix="streamlib-transcode-"))
    outdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.input, outdir))
