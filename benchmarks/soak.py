"""Soak: the demo pipeline for an hour, with a supervised actor crashing every 10 s.

720p30 ``TestPattern`` (burn-in) >> ``Drawing`` (clock text, animated ring) >> ``Compositor``
(with a picture-in-picture of the pattern) >> ``FileSink`` (fragmented H.264 MP4) and
``HLSSink`` (2 s segments), all realtime with dropping queues, as a live service runs.
The HLS playlist is a live window (``--hls-window`` segments, default 30: one minute), as a
24/7 service publishes it; ``--hls-window 0`` keeps every segment in the playlist (an event
playlist), for which FFmpeg's HLS muxer keeps a ~10 KB record per segment in memory until the
end (~18 MB an hour at 2 s segments: growth by design, not a leak). Segment files are kept
either way, so every frame written can be counted. Like a service under ``streamlib.run``, it
gives the allocator's free memory back every ``--trim-seconds`` (60; 0: never): after a stall
glibc otherwise keeps the piled-up frames' memory resident, and RSS shows the worst stall so far.
Beside it, under its own ``Supervisor``, a ``Crasher`` taps the pattern and raises every
``--crash-every`` seconds; each restart must recover (the fresh instance takes frames again).

Every ``--sample-seconds`` (default one minute) it prints one line: the process's RSS,
frames produced and written, drops on every input of the pipeline, clock ticks skipped,
restarts and recovered restarts. At the end it stops everything, counts the frames in the
MP4 and in every HLS segment with ffprobe (``-count_packets``: one packet per H.264 frame)
and prints a JSON summary. Targets (issue 17): RSS growth < 5 MB after the warm-up, 0
drops after the warm-up (the first seconds compile Numba kernels and warm skia), every
restart recovered, ffprobe's counts equal to the frames the sinks wrote.

Run: ``python benchmarks/soak.py`` (60 minutes) or ``python benchmarks/soak.py --minutes 1``
for a smoke run. ``--out DIR`` keeps the files (default: a temporary directory, removed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from streamlib import Actor, StreamInput, Supervisor, TimedTick, VideoFrame
from streamlib.actors import Compositor, Drawing, FileSink, HLSSink, Resize, TestPattern
from streamlib.cli import DEMO_DRAWING
from streamlib.service import trim_periodically


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux ``/proc``; else the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class Crasher(Actor):
    """Takes frames; raises once its instance is ``every`` seconds old. Counts instances
    that took a frame after a restart (a recovered restart)."""

    default_fps: ClassVar[float | None] = None
    recovered: ClassVar[int] = 0

    def __init__(self, every: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.every = every
        self.born = time.monotonic()
        self.frames = 0

    async def process(self, tick: TimedTick) -> None:
        if self.inputs["video"].read_nowait() is None:
            return
        self.frames += 1
        if self.frames == 1 and self.restarts:
            Crasher.recovered += 1
        if time.monotonic() - self.born >= self.every:
            raise RuntimeError(f"planned crash after {self.every:g} s")


class PlannedCrashes(logging.Filter):
    """Keeps the crasher's planned failures (one traceback every 10 s) out of the log, counted."""

    seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "planned crash" in str(record.exc_info[1]):
            PlannedCrashes.seen += 1
            return False
        return True


def drops(actors: list[Actor]) -> int:
    return sum(a.stats()["dropped"] for a in actors)


def ffprobe_packets(path: Path) -> int | None:
    """Video packets in a file or an HLS playlist (one per frame for H.264), by ffprobe."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets"),
            *("-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        return int(out.stdout.strip().splitlines()[0].strip(","))
    except (ValueError, IndexError):
        print(f"ffprobe {path}: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return None


async def soak(args: argparse.Namespace, outdir: Path) -> dict[str, Any]:
    w, h, fps = args.width, args.height, args.fps
    pattern = TestPattern("smpte_bars", w, h, fps, burn_in=True, name="pattern")
    overlay = Drawing(DEMO_DRAWING, fps=fps, name="overlay")
    pip = Resize(scale=0.25, name="pip")
    comp = Compositor(w, h, fps=None, base=None, name="compositor")
    margin = max(w // 40, 2)
    pattern >> overlay >> comp.add_layer("main", z=0)
    pattern >> pip >> comp.add_layer("pip", z=1, x=w - w // 4 - margin, y=margin, opacity=0.9)
    (outdir / "hls").mkdir(exist_ok=True)
    mp4 = FileSink(outdir / "soak.mp4", name="mp4")
    hls = HLSSink(outdir / "hls" / "stream.m3u8", segment_seconds=2.0, playlist_size=args.hls_window, name="hls")
    comp >> mp4
    comp >> hls
    crash_sup = Supervisor(name="crashy", max_restarts=3, within=5.0)
    crasher = crash_sup.spawn(Crasher, every=args.crash_every, name="crasher")
    pattern >> crasher
    pipeline = [pattern, overlay, pip, comp, mp4, hls]
    # As streamlib.run does for a service: give the allocator's free memory back now and then
    # (after a stall, glibc keeps the piled-up frames' memory resident otherwise).
    trimming = asyncio.ensure_future(trim_periodically(args.trim_seconds)) if args.trim_seconds > 0 else None

    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start + args.sample_seconds
    print("minute  rss_MB  produced  mp4  hls  drops  skipped  restarts  recovered", flush=True)
    while time.monotonic() < end:
        await asyncio.sleep(max(min(next_sample, end) - time.monotonic(), 0))
        if time.monotonic() < next_sample - 0.01:
            continue
        next_sample += args.sample_seconds
        restarts = crash_sup.children[0].restarts if crash_sup.children else -1
        sample = {
            "minute": round((time.monotonic() - start) / 60, 2),
            "rss_mb": round(rss_mb(), 1),
            "produced": pattern.sent,
            "mp4_written": mp4.frames_written,
            "hls_written": hls.frames_written,
            "drops": drops(pipeline),
            "skipped_ticks": pattern.clock.skipped if pattern.clock is not None else 0,
            "restarts": restarts,
            "recovered": Crasher.recovered,
        }
        samples.append(sample)
        print(
            f"{sample['minute']:6.2f}  {sample['rss_mb']:6.1f}  {sample['produced']:8d}  {sample['mp4_written']:6d}"
            f"  {sample['hls_written']:6d}  {sample['drops']:5d}  {sample['skipped_ticks']:7d}"
            f"  {restarts:8d}  {Crasher.recovered:9d}",
            flush=True,
        )
        if crash_sup.state.value != "running":
            print(f"the crash supervisor ended: {crash_sup.failure!r}", flush=True)
            break
    restarts = crash_sup.children[0].restarts if crash_sup.children else -1
    if trimming is not None:
        trimming.cancel()
    await pattern.stop()
    await asyncio.wait_for(asyncio.gather(mp4.join(), hls.join()), 60)
    await crash_sup.stop()
    mp4_count = ffprobe_packets(outdir / "soak.mp4")
    counts = [ffprobe_packets(segment) for segment in sorted((outdir / "hls").glob("*.ts"))]
    hls_count = None if None in counts else sum(c for c in counts if c is not None)
    warm = [s for s in samples if s["minute"] >= args.warmup_minutes] or samples
    stats = {a.name: a.stats() for a in pipeline}
    return {
        "minutes": args.minutes,
        "size": f"{w}x{h}@{fps:g}",
        "rss_mb_first": samples[0]["rss_mb"] if samples else None,
        "rss_mb_after_warmup": warm[0]["rss_mb"] if warm else None,
        "rss_mb_last": samples[-1]["rss_mb"] if samples else None,
        "rss_growth_after_warmup_mb": round(warm[-1]["rss_mb"] - warm[0]["rss_mb"], 1) if warm else None,
        "drops_after_warmup": warm[-1]["drops"] - warm[0]["drops"] if warm else None,
        "skipped_after_warmup": warm[-1]["skipped_ticks"] - warm[0]["skipped_ticks"] if warm else None,
        "produced": pattern.sent,
        "composited": comp.outputs["video"].sent,
        "mp4_written": mp4.frames_written,
        "hls_written": hls.frames_written,
        "mp4_ffprobe_frames": mp4_count,
        "hls_ffprobe_frames": hls_count,
        "drops": {name: s["dropped"] for name, s in stats.items()},
        "skipped_ticks": pattern.clock.skipped if pattern.clock is not None else 0,
        "restarts": restarts,
        "recovered": Crasher.recovered,
        "planned_crash_logs": PlannedCrashes.seen,
        "failures": {a.path: repr(a.failure) for a in pipeline if a.failure is not None},
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="RSS/drops sample period (default 60)")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="RSS growth is measured after this")
    parser.add_argument("--crash-every", type=float, default=10.0, help="seconds between the crasher's crashes")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--trim-seconds", type=float, default=60.0, help="release free memory this often (0: never)")
    parser.add_argument("--hls-window", type=int, default=30, help="HLS playlist size in segments (0: all)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the files here (default: a temporary dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(PlannedCrashes())
    outdir = args.out or Path(tempfile.mkdtemp(prefix="streamlib-soak-"))
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(soak(args, outdir))
    finally:
        if args.out is None:
            shutil.rmtree(outdir, ignore_errors=True)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    ok = (
        result["drops_after_warmup"] == 0
        and result["recovered"] >= result["restarts"] - 1  # the last restart may not have had a frame yet
        and result["mp4_ffprobe_frames"] == result["mp4_written"]
        and result["hls_ffprobe_frames"] == result["hls_written"]
        and not result["failures"]
    )
    print("soak:", "OK" if ok else "MISSED a target (see above)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
