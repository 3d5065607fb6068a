"""Shared time: PTPClock against ptp4l, and the cost of aligning inputs by timestamp.

What is measured
    PTP (needs root and linuxptp; skipped otherwise): ptp4l as grandmaster (software
    timestamps, ``-S -4``, 8 Syncs/s) in one network namespace, a veth pair to another.
    In that one, streamlib's ``PTPClock`` for ``--seconds``: lock time, and |our time - the
    master's time| p50/p99, sampled every 10 ms (both namespaces share CLOCK_REALTIME, the
    master's clock, so the truth is known); CPU of the clock's thread in % of a core.
    Baseline, same run and same setup: ``ptp4l -s --free_running 1`` as the slave (it never
    touches the shared clock): its lock time (its first offset: a free-running servo stays
    in state s0), the |master offset| it reports (every 2 s or so), and its CPU.

    Alignment: N simulated cameras on one timeline (no jitter, no loss) into an actor that
    matches them with ``InputSync(policy="tolerance")``: added latency per set (release time
    minus the arrival of its newest member) p50/p99, and CPU per matched set (process time,
    all threads, divided by sets). Baseline, same run, interleaved: the same pipeline into an
    actor that only drains its inputs (today's sampling, no matching). For 3 inputs at 60 fps
    and 16 at 30 fps.

Run: ``python benchmarks/bench_time.py [--quick] [--seconds 30] [--skip-ptp]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import describe_tree, percentile, print_table

from streamlib import Actor, Clock, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.alignment import InputSync
from streamlib.clock import sleep_until

ROOT = Path(__file__).resolve().parents[1]
NS_M, NS_S, IF_M, IF_S = "btm", "bts", "btma", "btsb"
INTERVALS = ["--logSyncInterval", "-3", "--logAnnounceInterval", "-2", "--logMinDelayReqInterval", "-3"]

SLAVE = r"""
import json, os, sys, time
from streamlib.clocks import PTPClock
seconds = float(sys.argv[2])
clock = PTPClock(interface=sys.argv[1])
if not clock.wait_synced(30):
    print(json.dumps({"lock_time": None})); sys.exit(1)
lock = clock.lock_time
tid = clock._slave.thread.native_id
def cpu():
    fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
errors, c0, t0 = [], cpu(), time.monotonic()
while time.monotonic() - t0 < seconds:
    best = None
    for _ in range(5):
        a = time.time_ns(); ours = clock.utc_ns(); b = time.time_ns()
        if best is None or b - a < best[1]:
            best = (ours - (a + b) // 2, b - a)
    errors.append(best[0])
    time.sleep(0.01)
print(json.dumps({"lock_time": lock, "errors": errors, "cpu": (cpu() - c0) / (time.monotonic() - t0),
                  "path_delay": clock.path_delay, "stats": clock.stats()}))
"""


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def namespaces_up() -> str | None:
    for ns in (NS_M, NS_S):
        sh("ip", "netns", "delete", ns)
    steps = [
        ["ip", "netns", "add", NS_M],
        ["ip", "netns", "add", NS_S],
        ["ip", "link", "add", IF_M, "type", "veth", "peer", "name", IF_S],
        ["ip", "link", "set", IF_M, "netns", NS_M],
        ["ip", "link", "set", IF_S, "netns", NS_S],
        ["ip", "-n", NS_M, "addr", "add", "10.232.0.1/24", "dev", IF_M],
        ["ip", "-n", NS_S, "addr", "add", "10.232.0.2/24", "dev", IF_S],
        ["ip", "-n", NS_M, "link", "set", IF_M, "up"],
        ["ip", "-n", NS_S, "link", "set", IF_S, "up"],
        ["ip", "-n", NS_M, "route", "add", "224.0.0.0/4", "dev", IF_M],
        ["ip", "-n", NS_S, "route", "add", "224.0.0.0/4", "dev", IF_S],
    ]
    for step in steps:
        done = sh(*step)
        if done.returncode != 0:
            return f"{' '.join(step)}: {done.stderr.strip()}"
    return None


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ptp(seconds: float) -> dict[str, Any] | str:
    if shutil.which("ptp4l") is None:
        return "ptp4l not installed"
    why = namespaces_up()
    if why is not None:
        return f"no network namespaces ({why})"
    log = Path("/tmp/bench_time_ptp4l_master.log")
    master = subprocess.Popen(
        ["ip", "netns", "exec", NS_M, "ptp4l", "-i", IF_M, "-S", "-4", "-m", "--priority1", "100", *INTERVALS],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while "assuming the grand master role" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                return "ptp4l did not become grandmaster"
            time.sleep(0.05)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        ours = subprocess.run(
            ["ip", "netns", "exec", NS_S, sys.executable, "-c", SLAVE, IF_S, str(seconds)],
            capture_output=True,
            text=True,
            env=env,
            timeout=seconds + 60,
        )
        result: dict[str, Any] = {"ours": json.loads(ours.stdout.strip().splitlines()[-1])}
        # Baseline: ptp4l as a free-running slave in the same namespace, same duration.
        started = time.monotonic()
        # stdbuf: ptp4l's stdout is a pipe here, which stdio would otherwise buffer in blocks.
        slave_cmd = ["ptp4l", "-i", IF_S, "-S", "-4", "-s", "-m", "--free_running", "1", "--summary_interval", "-3"]
        slave = subprocess.Popen(
            ["ip", "netns", "exec", NS_S, "stdbuf", "-oL", *slave_cmd, *INTERVALS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert slave.stdout is not None
        offsets: list[int] = []
        lock = None
        cpu0 = None
        t_lock = 0.0
        for line in slave.stdout:
            # A free-running ptp4l never leaves servo state s0; its first offset is its lock.
            found = re.search(r"master offset\s+(-?\d+) s(\d)", line)
            if found:
                if lock is None:
                    lock, cpu0, t_lock = time.monotonic() - started, proc_cpu(slave.pid), time.monotonic()
                offsets.append(int(found.group(1)))
            if (lock is not None and time.monotonic() - t_lock >= seconds) or time.monotonic() - started > seconds + 60:
                break
        cpu = (proc_cpu(slave.pid) - cpu0) / (time.monotonic() - t_lock) if cpu0 is not None else float("nan")
        slave.terminate()
        slave.wait(timeout=10)
        result["ptp4l"] = {"lock_time": lock, "errors": offsets, "cpu": cpu}
        return result
    finally:
        master.terminate()
        master.wait(timeout=10)
        for ns in (NS_M, NS_S):
            sh("ip", "netns", "delete", ns)


# -- alignment ----------------------------------------------------------------------------


class Timeline(Clock):
    def __init__(self, epoch: float, fps: float) -> None:
        self.epoch, self.fps, self.clock_id, self._n = epoch, fps, "bench-timeline", 0

    async def next_tick(self) -> TimedTick:
        due = self.epoch + self._n / self.fps
        await sleep_until(due)
        self._n += 1
        return TimedTick(due, self._n - 1, self.clock_id, self.fps)


class Camera(Actor):
    def __init__(self, frame: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.frame = frame
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["video"].send(VideoFrame.at(tick, data=self.frame))


class Aligned(Actor):
    default_fps = None

    def __init__(self, n: int, fps: float, **kw: Any) -> None:
        super().__init__(**kw)
        for i in range(n):
            self.inputs[f"cam{i}"] = StreamInput(f"cam{i}", VideoFrame)
        self.sync = InputSync(*self.inputs.values(), policy="tolerance", tolerance=0.25 / fps)
        self.latencies: list[float] = []
        self.sets = 0

    async def process(self, tick: TimedTick) -> None:
        for matched in await self.sync.read_many():
            self.sets += 1
            self.latencies.append(matched.decided_at - matched.arrived_last)


class Drain(Actor):
    """The baseline: reads whatever its inputs hold on each tick (no matching)."""

    default_fps = None

    def __init__(self, n: int, fps: float, **kw: Any) -> None:
        super().__init__(**kw)
        for i in range(n):
            self.inputs[f"cam{i}"] = StreamInput(f"cam{i}", VideoFrame)
        self.messages = 0

    async def process(self, tick: TimedTick) -> None:
        for port in self.inputs.values():
            while port.read_nowait() is not None:
                self.messages += 1

    @property
    def sets(self) -> float:
        return self.messages / len(self.inputs)


async def run_alignment(kind: type[Actor], n: int, fps: float, seconds: float) -> dict[str, float]:
    import numpy as np

    frame = np.zeros((4, 4, 3), np.uint8)
    sink: Any = kind(n, fps)
    epoch = time.monotonic() + 0.1
    cams = [Camera(frame, clock=Timeline(epoch, fps)) for _ in range(n)]
    for i, cam in enumerate(cams):
        cam.outputs["video"] >> sink.inputs[f"cam{i}"]
    await asyncio.sleep(0.5)  # warm up
    sets0, cpu0, wall0 = sink.sets, time.process_time(), time.monotonic()
    lat0 = len(getattr(sink, "latencies", []))
    await asyncio.sleep(seconds)
    sets, cpu, wall = sink.sets - sets0, time.process_time() - cpu0, time.monotonic() - wall0
    lat = getattr(sink, "latencies", [])[lat0:]
    for cam in cams:
        await cam.stop()
    await sink.stop()
    return {
        "sets": sets,
        "cpu_per_set_us": 1e6 * cpu / max(sets, 1),
        "cpu_pct": 100 * cpu / wall,
        "lat_p50_us": 1e6 * percentile(lat, 50) if lat else float("nan"),
        "lat_p99_us": 1e6 * percentile(lat, 99) if lat else float("nan"),
    }


def bench_alignment(seconds: float, reps: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for n, fps in ((3, 60.0), (16, 30.0)):
        ours: list[dict[str, float]] = []
        base: list[dict[str, float]] = []
        for rep in range(reps):
            order = (Aligned, Drain) if rep % 2 == 0 else (Drain, Aligned)
            for kind in order:
                found = asyncio.run(run_alignment(kind, n, fps, seconds))
                (ours if kind is Aligned else base).append(found)

        def med(runs: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        added = med(ours, "cpu_per_set_us") - med(base, "cpu_per_set_us")
        rows.append(
            [
                f"{n} inputs @ {fps:g} fps",
                f"{med(ours, 'sets') / seconds:.1f}/s",
                f"{med(ours, 'lat_p50_us'):.0f} / {med(ours, 'lat_p99_us'):.0f} us",
                f"{med(ours, 'cpu_per_set_us'):.0f} us ({med(ours, 'cpu_pct'):.1f} %)",
                f"{med(base, 'cpu_per_set_us'):.0f} us ({med(base, 'cpu_pct'):.1f} %)",
                f"{added:+.0f} us",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s PTP window, 2 s alignment runs, 1 rep")
    parser.add_argument("--seconds", type=float, default=30.0, help="PTP measurement window after lock")
    parser.add_argument("--skip-ptp", action="store_true")
    args = parser.parse_args(argv)
    ptp_seconds = 10.0 if args.quick else args.seconds
    align_seconds, reps = (2.0, 1) if args.quick else (5.0, 3)
    print(f"bench_time: {describe_tree()}; load average {os.getloadavg()[0]:.1f}")
    figures: dict[str, Any] = {}
    if not args.skip_ptp:
        found = bench_ptp(ptp_seconds)
        if isinstance(found, str):
            print(f"\nPTP skipped: {found}")
        else:
            rows = []
            for name, data in (("streamlib PTPClock", found["ours"]), ("ptp4l -s --free_running 1", found["ptp4l"])):
                errors = [abs(e) for e in data.get("errors", [])]
                lock = data.get("lock_time")
                rows.append(
                    [
                        name,
                        "-" if lock is None else f"{lock:.2f} s",
                        f"{percentile(errors, 50) / 1e3:.1f} us" if errors else "-",
                        f"{percentile(errors, 99) / 1e3:.1f} us" if errors else "-",
                        len(errors),
                        f"{100 * data.get('cpu', float('nan')):.2f} %",
                    ]
                )
                figures[name] = rows[-1]
            print_table(
                f"PTP in two namespaces over veth, {ptp_seconds:g} s after lock (error vs the master's CLOCK_REALTIME)",
                ["slave", "lock time", "|error| p50", "|error| p99", "samples", "CPU (1 core)"],
                rows,
            )
            ours = found["ours"]
            print(f"\nPTPClock path delay {1e6 * (ours.get('path_delay') or 0):.1f} us; counters {ours.get('stats')}")
            print("(ptp4l's figure is its own per-Sync offset measurement; ours is sampled externally every 10 ms)")
    rows = bench_alignment(align_seconds, reps)
    print_table(
        f"InputSync(policy='tolerance') vs a draining actor, {align_seconds:g} s x {reps} interleaved",
        ["case", "sets", "added latency p50 / p99", "CPU per set (load)", "baseline CPU per set", "alignment cost"],
        rows,
    )
    figures["alignment"] = rows
    return figures


if __name__ == "__main__":
    main()
