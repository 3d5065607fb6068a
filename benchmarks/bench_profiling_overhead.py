"""What profiling costs: off (the default) against no profiling code at all, and on.

What is measured
    The core chain of ``bench_chain.py`` -- ``n`` ints through source >> 10 pass-through
    stages >> sink, every input ``maxsize=2, overflow="block"`` -- run by three builds of
    streamlib in one process, interleaved:

    * ``baseline``: this tree's streamlib with the profiling hook taken out of the runtime
      (``ActorRuntime.bind_tick`` never wraps the dispatcher's callable nor asks whether an
      instrument is set, and the run loop does not re-read its per-tick callable after
      control jobs);
    * ``off``: streamlib as it is, profiling off (the default);
    * ``on``: streamlib as it is, ``profiling.enable()``d.

    Both are frozen copies of ``streamlib/`` taken when the benchmark starts (imported as
    ``streamlib_baseline`` and ``streamlib_current``), so edits to the tree during a run
    cannot favour one side.

    Everything else being the same code, ``off`` against ``baseline`` is the cost of having
    profiling available; ``on`` against ``off`` is the cost of using it. ``--callgrind``
    adds the deterministic figure: CPU instructions per message of ``baseline`` and ``off``
    under valgrind (the difference between a 1,000- and a 3,000-message run, so start-up
    cancels out) -- wall-clock ratios on a shared machine cannot resolve 1 %, instruction
    counts can.

    Also reported: what one ``with profile("x"):`` costs while profiling is off, in
    nanoseconds and as a share of one message's trip through one stage.

Target
    Off, profiling costs < 1 % on the chain (the callgrind figure when measured, else the
    median CPU-time overhead).

Run: ``python benchmarks/bench_profiling_overhead.py [--quick] [--n 20000] [--reps 7] [--callgrind]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from bench_chain import VALGRIND_SLOWDOWN
from measure import LOOP_RUNNERS, Sample, Stopwatch, Target, describe_tree, print_table

ROOT = Path(__file__).resolve().parent.parent
STAGES = 10

TARGETS = [
    Target("profiling_off_overhead_pct", "profiling off vs no profiling code: chain overhead", "<", 1.0, " %"),
]

# The profiling hook in ActorRuntime (runtime.py): bind_tick wraps the per-tick callable in the
# instrument while one is set (and then hands no tick off), and the run loop re-reads the
# callable after control jobs. The baseline has neither; hand-off works in both.
HOOKED = "runtime.py"
STRIP = [
    (r"\n[ \t]*if _tick_instrument is not None:\n[ \t]*run_tick = _tick_instrument\(self\.actor, run_tick\)", ""),
    (r" and _tick_instrument is None", ""),
    (r"\n[ \t]*run_tick = self\.run_tick or run_tick[^\n]*", ""),
]


_SNAPSHOT: Path | None = None


def snapshot(where: str | None = None) -> Path:
    """Two frozen copies of this tree's streamlib/: ``streamlib_current`` as it is, and
    ``streamlib_baseline`` without the profiling hook. Every run of every mode (callgrind's
    subprocesses too, given ``where``) imports these, so edits made to the tree while the
    benchmark runs cannot creep into one side of the comparison."""
    global _SNAPSHOT
    if where is not None:
        _SNAPSHOT = Path(where)
    if _SNAPSHOT is None:
        root = Path(tempfile.mkdtemp(prefix="streamlib-profiling-bench-"))
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "streamlib", root / "streamlib_current", ignore=ignore)
        shutil.copytree(root / "streamlib_current", root / "streamlib_baseline", ignore=ignore)
        actor = root / "streamlib_baseline" / HOOKED
        source = actor.read_text()
        for pattern, replacement in STRIP:
            source, count = re.subn(pattern, replacement, source)
            if count != 1:
                raise RuntimeError(
                    f"bench_profiling_overhead: {pattern!r} matched {count} times in streamlib/{HOOKED}; "
                    "the profiling hook changed, update STRIP"
                )
        actor.write_text(source)
        _SNAPSHOT = root
    if str(_SNAPSHOT) not in sys.path:
        sys.path.insert(0, str(_SNAPSHOT))
    return _SNAPSHOT


def package(mode: str) -> ModuleType:
    """The streamlib copy a mode runs: ``baseline`` the one without the hook, else the current one."""
    snapshot()
    return importlib.import_module("streamlib_baseline" if mode == "baseline" else "streamlib_current")


def chain_classes(lib: ModuleType) -> tuple[type, type, type]:
    """bench_chain's source, stage and sink, built on the given streamlib package."""

    class Source(lib.Actor):  # type: ignore[name-defined,misc]
        def __init__(self, n: int, go: asyncio.Event, **kw: Any) -> None:
            super().__init__(**kw)
            self.n = n
            self.go = go
            self.outputs["out"] = lib.StreamOutput("out", int)

        async def on_start(self) -> None:
            await self.go.wait()

        async def process(self, tick: Any) -> None:
            out = self.outputs["out"]
            for i in range(self.n):
                await out.send(i)
            self.stop()

    class Stage(lib.Actor):  # type: ignore[name-defined,misc]
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = lib.StreamInput("in", int, maxsize=2, overflow="block")
            self.outputs["out"] = lib.StreamOutput("out", int)

        async def process(self, tick: Any) -> None:
            m = await self.inputs["in"].try_read()
            if m is not None:
                await self.outputs["out"].send(m)

    class Sink(lib.Actor):  # type: ignore[name-defined,misc]
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.inputs["in"] = lib.StreamInput("in", int, maxsize=2, overflow="block")
            self.count = 0

        async def process(self, tick: Any) -> None:
            port = self.inputs["in"]
            while port.read_nowait() is not None:
                self.count += 1

    return Source, Stage, Sink


_CLASSES: dict[str, tuple[type, type, type]] = {}


def classes(lib: ModuleType) -> tuple[type, type, type]:
    if lib.__name__ not in _CLASSES:
        _CLASSES[lib.__name__] = chain_classes(lib)
    return _CLASSES[lib.__name__]


async def chain(lib: ModuleType, n: int) -> Sample:
    source_cls, stage_cls, sink_cls = classes(lib)
    go = asyncio.Event()
    upstream = source_cls(n, go)
    for _ in range(STAGES):
        upstream = upstream >> stage_cls()
    sink = upstream >> sink_cls()
    await asyncio.sleep(0.02)
    watch = Stopwatch()
    go.set()
    await sink.join()
    sample = watch.read()
    if sink.count != n:
        raise AssertionError(f"the chain lost messages: {sink.count} of {n}")
    return sample


def run_mode(mode: str, n: int, loop: str) -> Sample:
    lib = package(mode)
    if mode == "on":
        lib.profiling.enable()
    try:
        sample: Sample = LOOP_RUNNERS[loop](chain(lib, n))
        return sample
    finally:
        if mode == "on":
            lib.profiling.disable()
            lib.profiling.reset()


def callgrind_count(mode: str, n: int) -> int:
    """Instructions callgrind counts for one run of ``mode``'s chain with ``n`` messages."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--single",
        mode,
        "--n",
        str(n),
        "--snapshot",
        str(snapshot()),
    ]
    # Same dict layouts in every run, and no watchdog thread, whose wake-ups follow the wall clock.
    env = {**os.environ, "PYTHONHASHSEED": "0", "STREAMLIB_BLOCKING_THRESHOLD": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"callgrind run of {mode} failed:\n{done.stderr[-2000:]}")
    return int(match.group(1))


def callgrind_per_message(
    modes: tuple[str, ...] = ("baseline", "off"), reps: int = 3, small: int = 1000, large: int = 3000
) -> dict[str, tuple[float, float, float]]:
    """Per mode: instructions per message as ``(median, lowest, highest)`` over ``reps`` pairs of
    runs, each ``(count(large) - count(small)) / (large - small)`` so start-up cancels out.

    Even so a run's count moves by a few million instructions from one run to the next (object
    addresses, and so hashing and memory layout, differ), about 1 % of the per-message figure
    at these sizes: hence the repetitions, run two at a time."""
    jobs = [(mode, n) for _ in range(reps) for mode in modes for n in (small, large)]
    with ThreadPoolExecutor(max(min(os.cpu_count() or 1, 4), 1)) as pool:
        counts = list(pool.map(lambda job: callgrind_count(*job), jobs))
    found: dict[str, tuple[float, float, float]] = {}
    for mode in modes:
        runs = [c for (m, _), c in zip(jobs, counts, strict=True) if m == mode]  # small, large, small, ...
        per = [(runs[2 * rep + 1] - runs[2 * rep]) / (large - small) for rep in range(reps)]
        found[mode] = (statistics.median(per), min(per), max(per))
    return found


def disabled_profile_ns() -> float:
    """Nanoseconds per ``with profile("x"):`` while profiling is off."""
    from streamlib.observe.profiling import profile

    def body() -> None:
        with profile("section", frame=1):
            pass

    def empty() -> None:
        pass

    runs = 200_000
    with_section = min(timeit.repeat(body, number=runs, repeat=5)) / runs
    bare = min(timeit.repeat(empty, number=runs, repeat=5)) / runs
    return (with_section - bare) * 1e9


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--loop", choices=sorted(LOOP_RUNNERS), default="uvloop")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (n=4000, 3 reps)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per message (slow)")
    parser.add_argument("--callgrind-reps", type=int, default=3, help="pairs of callgrind runs per build")
    parser.add_argument("--single", choices=("baseline", "off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, reps = (4000, 3) if args.quick else (args.n, args.reps)

    if args.single:  # one run for callgrind: asyncio's loop, message-driven stages
        snapshot(args.snapshot)
        lib = package(args.single)
        lib.handoff.SLICE *= VALGRIND_SLOWDOWN  # hand-off's wall-clock slice, as natively (see bench_chain)
        for cls in classes(lib)[1:]:
            cls.default_fps = None
        if args.single == "on":
            lib.profiling.enable()
        asyncio.run(chain(lib, n))
        return {}

    print(f"# bench_profiling_overhead: {n} messages, {STAGES} stages, {reps} rounds, {args.loop} ({describe_tree()})")
    snapshot()
    modes = ["baseline", "off", "on"]
    samples: dict[str, list[Sample]] = {m: [] for m in modes}
    for _ in range(1):  # warm up imports and caches
        for mode in modes:
            run_mode(mode, min(n, 2000), args.loop)
    for rep in range(reps):
        order = modes if rep % 2 == 0 else modes[::-1]
        for mode in order:
            samples[mode].append(run_mode(mode, n, args.loop))

    figures: dict[str, float] = {}
    rows: list[list[object]] = []
    for mode in modes:
        wall = statistics.median(s.wall for s in samples[mode]) / n * 1e6
        cpu = statistics.median(s.cpu for s in samples[mode]) / n * 1e6
        figures[f"us_per_msg_{mode}_cpu"] = cpu
        rows.append([mode, f"{wall:.2f}", f"{cpu:.2f}", f"{cpu / (STAGES + 1):.3f}"])
    print_table("Cost per message, median", ["build", "wall us/msg", "CPU us/msg", "CPU us/hop"], rows)

    def overhead(a: str, b: str, key: str) -> tuple[float, float]:
        pct = [(getattr(x, key) / getattr(y, key) - 1) * 100 for x, y in zip(samples[a], samples[b], strict=True)]
        return statistics.median(pct), min(pct)

    ratio_rows: list[list[object]] = []
    for a, b, label in (
        ("off", "baseline", "profiling off vs no profiling code"),
        ("on", "off", "profiling on vs off"),
    ):
        for key, clock in (("cpu", "CPU"), ("wall", "wall")):
            median, best = overhead(a, b, key)
            figures[f"profiling_{a}_vs_{b}_{key}_pct_median"] = median
            ratio_rows.append([label, clock, f"{median:+.1f} %", f"{best:+.1f} %"])
    print_table("Overhead (per-round pairs; + means slower)", ["comparison", "clock", "median", "best"], ratio_rows)
    figures["profiling_off_overhead_pct"] = max(figures["profiling_off_vs_baseline_cpu_pct_median"], 0.0)

    ns = disabled_profile_ns()
    hop_ns = figures["us_per_msg_off_cpu"] * 1000 / (STAGES + 1)
    figures["disabled_profile_section_ns"] = ns
    print_table(
        "A `with profile(...)` section while profiling is off",
        ["cost per section", "one hop of the chain", "share of a hop"],
        [[f"{ns:.0f} ns", f"{hop_ns:.0f} ns", f"{ns / hop_ns * 100:.1f} %"]],
    )

    if args.callgrind:
        if shutil.which("valgrind") is None:
            print("\n(valgrind is not installed: no instruction counts)")
        else:
            ir = callgrind_per_message(reps=args.callgrind_reps)
            base_ir, off_ir = ir["baseline"][0], ir["off"][0]
            pct = (off_ir / base_ir - 1) * 100
            figures["callgrind_ir_per_msg_baseline"] = base_ir
            figures["callgrind_ir_per_msg_off"] = off_ir
            figures["callgrind_off_overhead_pct"] = pct
            figures["profiling_off_overhead_pct"] = max(pct, 0.0)
            print_table(
                f"Instructions per message (callgrind, asyncio loop, message-driven stages; "
                f"{args.callgrind_reps} pairs of runs each)",
                ["build", "median", "range"],
                [
                    ["no profiling code", f"{base_ir:,.0f}", f"{ir['baseline'][1]:,.0f} - {ir['baseline'][2]:,.0f}"],
                    ["profiling off", f"{off_ir:,.0f}", f"{ir['off'][1]:,.0f} - {ir['off'][2]:,.0f}"],
                    ["overhead", f"{pct:+.2f} %", ""],
                ],
            )
    target = TARGETS[0]
    value = figures[target.key]
    verdict = "PASS" if target.passed(value) else "FAIL"
    print(f"\n{target.description}: {value:.2f} % ({verdict}, target {target.goal()})")
    return figures


if __name__ == "__main__":
    main()
