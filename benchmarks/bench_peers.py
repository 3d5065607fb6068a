"""streamlib against its peers on the same work, in one command and one report.

The work
    ``messages``: ``n`` small messages through a source, 10 pass-through stages and a
    counting sink, every stage bounded to 2 queued messages (lossless: the sender waits
    for room). ``video``: the same with 640x360 RGB frames made by the source (a fresh
    zeroed buffer each, passed by reference through the stages).

The peers
    * **streamlib**: ``source >> stage >> ... >> sink``, inputs ``maxsize=2,
      overflow="block"``, on uvloop (what ``bench_chain.py`` measures);
    * **asyncio.Queue**: the chain written by hand as tasks between ``asyncio.Queue(2)``s,
      on the same loop -- the code a user would otherwise write;
    * **Pykka**: ``pykka.ThreadingActor`` stages (a thread each) that ``tell`` the next
      (unbounded mailboxes: Pykka has no bounded ones);
    * **GStreamer** (where ``gst-launch-1.0`` is installed): ``fakesrc`` / ``videotestsrc``
      ``! queue max-size-buffers=2 ! identity`` ten times ``! fakesink`` -- each ``queue``
      is a thread and a bounded buffer, the closest GStreamer has to an actor with a
      mailbox. Its time is the difference between a large and a small run of the whole
      ``gst-launch-1.0`` process, so process start-up cancels out; CPU time is the child's.

Every figure is a ratio to streamlib measured in the same process and the same round
(rounds interleave the implementations): *peer time / streamlib time*, so above 1 streamlib
is faster. The report is a Markdown table (printed, and written with a PNG chart and the
raw figures as JSON to ``--out``, default ``benchmarks/results/``).

Run: ``python benchmarks/bench_peers.py [--quick] [--n 20000] [--reps 3] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from measure import Sample, Stopwatch, describe_tree, print_table

from streamlib import Actor, BlockingWarning, StreamInput, StreamOutput, TimedTick

# The source sends its whole run from one process() call, on purpose: no warning for that.
warnings.simplefilter("ignore", BlockingWarning)

STAGES = 10
END = object()
VIDEO_SHAPE = (360, 640, 3)

WORKS: dict[str, Callable[[int], Any]] = {
    "messages": lambda i: i,
    "video": lambda i: np.zeros(VIDEO_SHAPE, np.uint8),
}
"""Each work: what the source makes for message ``i``."""


# -- streamlib ----------------------------------------------------------------------------------


class Source(Actor):
    def __init__(self, n: int, make: Callable[[int], Any], go: asyncio.Event, **kw: Any) -> None:
        super().__init__(**kw)
        self.n, self.make, self.go = n, make, go
        self.outputs["out"] = StreamOutput("out")

    async def on_start(self) -> None:
        await self.go.wait()

    async def process(self, tick: TimedTick) -> None:
        out, make = self.outputs["out"], self.make
        for i in range(self.n):
            await out.send(make(i))
        self.stop()


class Stage(Actor):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", maxsize=2, overflow="block")
        self.outputs["out"] = StreamOutput("out")

    async def process(self, tick: TimedTick) -> None:
        m = await self.inputs["in"].try_read()
        if m is not None:
            await self.outputs["out"].send(m)


class Sink(Actor):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", maxsize=2, overflow="block")
        self.count = 0

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["in"]
        while port.read_nowait() is not None:
            self.count += 1


async def streamlib_chain(n: int, make: Callable[[int], Any]) -> Sample:
    go = asyncio.Event()
    upstream: Actor = Source(n, make, go)
    for _ in range(STAGES):
        upstream = upstream >> Stage()
    sink = upstream >> Sink()
    await asyncio.sleep(0.02)
    watch = Stopwatch()
    go.set()
    await sink.join()
    sample = watch.read()
    assert sink.count == n, (sink.count, n)
    return sample


# -- asyncio.Queue ----------------------------------------------------------------------------


async def queue_chain(n: int, make: Callable[[int], Any]) -> Sample:
    go = asyncio.Event()
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(2) for _ in range(STAGES + 1)]
    count = 0

    async def source() -> None:
        await go.wait()
        for i in range(n):
            await queues[0].put(make(i))
        await queues[0].put(END)

    async def stage(inp: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        while True:
            m = await inp.get()
            await out.put(m)
            if m is END:
                return

    async def sink() -> None:
        nonlocal count
        while await queues[-1].get() is not END:
            count += 1

    tasks = [asyncio.create_task(source())]
    tasks += [asyncio.create_task(stage(queues[i], queues[i + 1])) for i in range(STAGES)]
    last = asyncio.create_task(sink())
    await asyncio.sleep(0.02)
    watch = Stopwatch()
    go.set()
    await last
    sample = watch.read()
    await asyncio.gather(*tasks)
    assert count == n
    return sample


# -- Pykka ------------------------------------------------------------------------------------------


def pykka_chain(n: int, make: Callable[[int], Any]) -> Sample:
    import pykka_peers  # only where Pykka is installed

    return pykka_peers.chain(n, STAGES, make)


# -- GStreamer --------------------------------------------------------------------------------------


def gst_pipeline(work: str, n: int) -> list[str]:
    if work == "messages":
        source = ["fakesrc", f"num-buffers={n}"]
    else:
        h, w, _ = VIDEO_SHAPE
        caps = f"video/x-raw,format=RGB,width={w},height={h}"
        source = ["videotestsrc", f"num-buffers={n}", "pattern=black", "!", caps]
    stage = ["!", "queue", "max-size-buffers=2", "max-size-bytes=0", "max-size-time=0", "!", "identity"]
    return ["gst-launch-1.0", "-q", *source, *(stage * STAGES), "!", "fakesink", "sync=false"]


def gst_run(work: str, n: int) -> Sample:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    watch = Stopwatch()
    done = subprocess.run(gst_pipeline(work, n), capture_output=True, text=True, timeout=600)
    wall = watch.read().wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"gst-launch-1.0 failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu)


def gst_chain(work: str, n: int) -> Sample:
    """``n`` buffers' worth of time: a run of ``n + small`` minus a run of ``small`` (start-up cancels)."""
    small = max(n // 10, 100)
    base = gst_run(work, small)
    full = gst_run(work, n + small)
    return Sample(max(full.wall - base.wall, 1e-9), max(full.cpu - base.cpu, 1e-9))


def gst_available() -> bool:
    if shutil.which("gst-launch-1.0") is None:
        return False
    try:
        gst_run("messages", 10)
        gst_run("video", 2)
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return False
    return True


# -- the report ---------------------------------------------------------------------------------------


def run_loop(coro: Coroutine[Any, Any, Sample]) -> Sample:
    result: Sample = uvloop.run(coro)
    return result


def run_one(name: str, work: str, count: int, make: Callable[[int], Any]) -> Sample:
    if name == "streamlib":
        return run_loop(streamlib_chain(count, make))
    if name == "asyncio.Queue":
        return run_loop(queue_chain(count, make))
    if name == "Pykka":
        return pykka_chain(count, make)
    return gst_chain(work, count)


def measure(works: list[str], n: int, reps: int, peers: list[str]) -> dict[str, dict[str, list[Sample]]]:
    """``{work: {implementation: [samples]}}``, rounds interleaved."""
    found: dict[str, dict[str, list[Sample]]] = {w: {p: [] for p in ["streamlib", *peers]} for w in works}
    for work in works:
        make = WORKS[work]
        count = n if work == "messages" else max(n // 4, 500)
        for rep in range(reps):
            order = ["streamlib", *peers] if rep % 2 == 0 else [*peers, "streamlib"]
            for name in order:
                found[work][name].append(run_one(name, work, count, make).per(count))
    return found


def ratios(samples: dict[str, list[Sample]], peer: str, key: str) -> list[float]:
    return [getattr(p, key) / getattr(s, key) for p, s in zip(samples[peer], samples["streamlib"], strict=True)]


def chart(results: dict[str, dict[str, list[Sample]]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib is not installed: no chart; pip install matplotlib)")
        return None
    works = list(results)
    fig, axes = plt.subplots(1, len(works), figsize=(5.5 * len(works), 3.2), squeeze=False)
    colours = {"streamlib": "#1565c0", "asyncio.Queue": "#90a4ae", "Pykka": "#ef6c00", "GStreamer": "#2e7d32"}
    for ax, work in zip(axes[0], works, strict=True):
        names = list(results[work])
        cpu = [statistics.median(s.cpu for s in results[work][name]) * 1e6 for name in names]
        wall = [statistics.median(s.wall for s in results[work][name]) * 1e6 for name in names]
        y = np.arange(len(names))
        ax.barh(y - 0.2, wall, 0.4, label="wall", color=[colours.get(n, "#777") for n in names])
        ax.barh(y + 0.2, cpu, 0.4, label="CPU", color=[colours.get(n, "#777") for n in names], alpha=0.45)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("µs per message, 11 hops (solid: wall, light: CPU; lower is better)")
        ax.set_title(f"{work}: source >> {STAGES} stages >> sink")
        for i, (w, c) in enumerate(zip(wall, cpu, strict=True)):
            ax.text(max(w, c), i, f" {w:.0f} / {c:.0f}", va="center", fontsize=8)
        ax.margins(x=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per run (video: n / 4)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (n=3000, 2 rounds)")
    parser.add_argument("--works", default="messages,video", help="comma-separated: messages,video")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="report folder")
    parser.add_argument("--no-gstreamer", action="store_true")
    parser.add_argument("--no-pykka", action="store_true")
    args = parser.parse_args(argv)
    n, reps = (3000, 2) if args.quick else (args.n, args.reps)
    works = [w.strip() for w in args.works.split(",") if w.strip()]

    peers = ["asyncio.Queue"]
    notes = []
    if not args.no_pykka:
        try:
            import pykka  # noqa: F401
        except ImportError:
            notes.append("Pykka is not installed (pip install pykka): left out.")
        else:
            peers.append("Pykka")
    if not args.no_gstreamer:
        if gst_available():
            peers.append("GStreamer")
        else:
            notes.append(
                "gst-launch-1.0 (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base) is not "
                "installed or its elements are missing: GStreamer left out."
            )
    where = describe_tree()
    print(
        f"# bench_peers: n={n} (video: {max(n // 4, 500)}), {STAGES} stages, {reps} rounds ({where}; "
        f"{os.cpu_count()} CPUs)"
    )
    results = measure(works, n, reps, peers)

    figures: dict[str, float] = {}
    rows: list[list[object]] = []
    for work in works:
        ours = results[work]["streamlib"]
        ours_wall = statistics.median(s.wall for s in ours) * 1e6
        ours_cpu = statistics.median(s.cpu for s in ours) * 1e6
        rows.append([work, "streamlib", f"{ours_wall:.1f}", f"{ours_cpu:.1f}", "1.00x", "1.00x"])
        figures[f"{work}_streamlib_us_wall"] = ours_wall
        for peer in peers:
            theirs = results[work][peer]
            wall_ratio = statistics.median(ratios(results[work], peer, "wall"))
            cpu_ratio = statistics.median(ratios(results[work], peer, "cpu"))
            key = peer.lower().replace(".", "_")
            figures[f"{work}_{key}_wall_ratio"] = wall_ratio
            figures[f"{work}_{key}_cpu_ratio"] = cpu_ratio
            rows.append(
                [
                    work,
                    peer,
                    f"{statistics.median(s.wall for s in theirs) * 1e6:.1f}",
                    f"{statistics.median(s.cpu for s in theirs) * 1e6:.1f}",
                    f"{wall_ratio:.2f}x",
                    f"{cpu_ratio:.2f}x",
                ]
            )
    headers = ["work", "implementation", "wall µs/msg", "CPU µs/msg", "ratio wall", "ratio CPU"]
    title = "streamlib vs peers (ratio = peer time / streamlib time; > 1: streamlib faster; medians)"
    print_table(title, headers, rows)
    for note in notes:
        print(f"\n{note}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    table = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    table += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    png = chart(results, out / "peers.png")
    report = [
        "# streamlib vs peers",
        "",
        f"{where}; {os.cpu_count()} CPUs; n={n} messages (video: {max(n // 4, 500)} frames of "
        f"{VIDEO_SHAPE[1]}x{VIDEO_SHAPE[0]} RGB), {STAGES} stages, {reps} interleaved rounds.",
        "",
        *table,
        "",
        "Ratio = peer time / streamlib time, per round, median: above 1, streamlib is faster.",
        *notes,
        "",
    ]
    if png is not None:
        report += [f"![chart]({png.name})", ""]
    (out / "peers.md").write_text("\n".join(report))
    (out / "peers.json").write_text(
        json.dumps(
            {
                "n": n,
                "reps": reps,
                "tree": where,
                "figures": figures,
                "samples": {w: {p: [s._asdict() for s in v] for p, v in r.items()} for w, r in results.items()},
            },
            indent=2,
        )
    )
    print(f"\nwrote {out / 'peers.md'}" + (f", {png}" if png else "") + f", {out / 'peers.json'}")
    return figures


if __name__ == "__main__":
    main()
