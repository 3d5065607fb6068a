"""End-to-end: 1080p30 TestPattern >> Drawing overlay >> Compositor >> FileSink (libx264, preset fast).

1. **Realtime** (``--seconds``, default 20 s of media on the source's own 30 fps clock,
   dropping queues as in a live pipeline): does it keep up? Reports frames written vs
   produced, drops on every input, clock ticks the source had to skip, and each actor's
   mean and p99 tick time (target p99 < 33 ms). "Kept realtime" means every frame was
   written, none dropped and no tick skipped.
2. **Lossless, as fast as possible** (``TestPattern(realtime=False)``, blocking queues,
   ``FileSink(lossless=True)``), the same frame count, against the equivalent ``ffmpeg``
   command run in the same script: ``lavfi`` SMPTE bars + ``drawtext`` + a moving overlaid
   shape + libx264 with
   the same preset, frame count and pixel format. Target: >= 0.8x ffmpeg's throughput.

Run: ``python benchmarks/bench_pipeline.py [--seconds 20] [--width 1920 --height 1080]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import av

from streamlib import Actor
from streamlib.actors.compose import Compositor
from streamlib.actors.draw import Drawing
from streamlib.actors.files import FileSink
from streamlib.actors.video import TestPattern
from streamlib.cli import format_summary, summary_rows, timed
from streamlib.eventloop import new_event_loop
from streamlib.mailbox import Overflow
from streamlib.observe.profiling import percentile

OVERLAY = """
w, h = ctx.width, ctx.height
box = skia.Rect.MakeXYWH(w * 0.03, h * 0.82, w * 0.5, h * 0.13)
canvas.drawRoundRect(box, 12, 12, skia.Paint(AntiAlias=True, Color=skia.Color(0, 0, 0, 160)))
canvas.drawString(f"frame {ctx.frame_number:5d}   {ctx.time:7.3f} s", box.left() + 24, box.bottom() - 40,
                  skia.Font(font.getTypeface(), h / 16), paint)
canvas.drawCircle(w / 2 + w / 4 * math.cos(ctx.time), h / 2, h / 12,
                  skia.Paint(AntiAlias=True, Color=skia.Color(255, 190, 0, 220)))
"""
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


async def pipeline(path: Path, width: int, height: int, fps: float, frames: int, lossless: bool) -> dict[str, Any]:
    overflow: Overflow = "block" if lossless else "drop_oldest"
    source = TestPattern(
        "smpte_bars", width, height, fps, frames=frames, realtime=not lossless, name="pattern", dispatcher=timed()
    )
    overlay = Drawing(OVERLAY, fps=fps, overflow=overflow, maxsize=4, name="overlay", dispatcher=timed())
    comp = Compositor(width, height, fps=None, overflow=overflow, maxsize=4, name="compositor", dispatcher=timed())
    sink = FileSink(path, preset="fast", lossless=lossless, maxsize=8, name="x264", dispatcher=timed())
    source >> overlay >> comp >> sink
    everyone: list[Actor] = [source, overlay, comp, sink]
    start = time.perf_counter()
    await sink.join()
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(a.join() for a in everyone))
    rows = summary_rows(everyone)
    return {
        "elapsed": elapsed,
        "rows": rows,
        "written": sink.frames_written,
        "produced": source.sent,
        "skipped_ticks": source.clock.skipped if source.clock is not None else 0,
        "dropped": sum(r["dropped"] for r in rows),
        "failed": [a.path for a in everyone if a.failure is not None],
        "write_ms": [1000 * t for t in sink.writer.seconds],
    }


def run_ffmpeg(path: Path, width: int, height: int, fps: float, frames: int, source: str) -> float:
    """The same job for ffmpeg: the test source, a text box with the frame number (drawtext)
    and a moving shape (an overlaid box travelling like the overlay's circle), libx264."""
    text = "frame %{n}   %{pts\\:hms}"
    font = f"fontfile={FONT}:" if Path(FONT).exists() else ""
    size = height // 6
    graph = (
        f"[0:v]drawtext={font}text='{text}':x=w*0.05:y=h*0.87:fontsize=h/16:fontcolor=white:"
        f"box=1:boxcolor=black@0.6:boxborderw=20[text];"
        f"color=c=orange@0.86:s={size}x{size}:r={fps:g},format=yuva420p[shape];"
        f"[text][shape]overlay=x='W/2+W/4*cos(t)-w/2':y='H/2-h/2':shortest=1,format=yuv420p"
    )
    cmd = [
        "ffmpeg",
        "-y",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"{source}=size={width}x{height}:rate={fps:g}",
        "-frames:v",
        str(frames),
        "-filter_complex",
        graph,
        "-c:v",
        "libx264",
        "-preset",
        "fast",
        "-crf",
        "23",
        str(path),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--ffmpeg-source", default="smptebars", help="lavfi source for the ffmpeg run (testsrc, ...)")
    parser.add_argument("--skip-realtime", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="streamlib-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    frames = round(args.seconds * args.fps)
    w, h, fps = args.width, args.height, args.fps
    print(f"{w}x{h} @ {fps:g} fps, {frames} frames; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        if not args.skip_realtime:
            rt = runner.run(pipeline(out / "realtime.mp4", w, h, fps, frames, lossless=False))
            kept = rt["written"] == frames and rt["dropped"] == 0 and rt["skipped_ticks"] == 0 and not rt["failed"]
            print(f"\n== realtime, {args.seconds:g} s on the source clock (dropping queues)")
            print(format_summary(rt["rows"]))
            worst_p99 = max(r["p99_ms"] for r in rt["rows"])
            print(
                f"produced {rt['produced']}/{frames} frames, wrote {rt['written']}, dropped {rt['dropped']}, "
                f"skipped source ticks {rt['skipped_ticks']}, took {rt['elapsed']:.1f} s"
            )
            print(
                f"FileSink writer thread (RGB->I420, x264 encode, mux) per frame: mean "
                f"{statistics.fmean(rt['write_ms']):.1f} ms, p99 {percentile(rt['write_ms'], 99):.1f} ms"
            )
            print(
                f"kept realtime with zero drops: {'YES' if kept else 'NO'}; worst per-actor p99 {worst_p99:.1f} ms "
                f"(target < 33 ms: {'met' if worst_p99 < 33 else 'missed'})"
            )

        ll = runner.run(pipeline(out / "lossless.mp4", w, h, fps, frames, lossless=True))
    print("\n== lossless, as fast as possible (blocking queues)")
    print(format_summary(ll["rows"]))
    decoded = count_frames(out / "lossless.mp4")
    ours_fps = frames / ll["elapsed"]
    print(
        f"streamlib: {frames} frames in {ll['elapsed']:.2f} s = {ours_fps:.1f} fps (file decodes to {decoded} frames)"
    )
    if shutil.which("ffmpeg") is None:
        print("ffmpeg not found: no comparison")
        return
    ff = run_ffmpeg(out / "ffmpeg.mp4", w, h, fps, frames, args.ffmpeg_source)
    ff_fps = frames / ff
    ratio = ours_fps / ff_fps
    print(
        f"ffmpeg ({args.ffmpeg_source} + drawtext + moving overlay + libx264 fast): "
        f"{frames} frames in {ff:.2f} s = {ff_fps:.1f} fps"
    )
    print(f"streamlib / ffmpeg throughput: {ratio:.2f}x (target >= 0.8x: {'met' if ratio >= 0.8 else 'missed'})")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
