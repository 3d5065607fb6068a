"""Measurement kit shared by the benchmarks: samples, paired ratios, percentiles, targets, tables.

The machine these benchmarks run on is shared and noisy, so no benchmark reports a bare
duration as its result. Each figure is a *ratio* between streamlib and a baseline measured
in the same process, in runs interleaved with streamlib's (baseline, streamlib, streamlib,
baseline, ...), so that a slow moment of the machine hits both sides of a pair. Each
comparison is repeated; the median ratio is the figure and the best ratio shows what the
code can do when the machine leaves it alone. Wall-clock time is reported next to CPU time
(``time.process_time``, all threads of the process), which other processes disturb less.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import uvloop

from streamlib.observe.profiling import percentile  # the one percentile streamlib reports with

__all__ = [
    "LOOP_RUNNERS",
    "Sample",
    "Stopwatch",
    "Target",
    "describe_tree",
    "fresh_heap",
    "percentile",
    "print_table",
    "ratio_stats",
]

LOOP_RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run,  # asyncio's default (selector) event loop
    "uvloop": uvloop.run,
}
"""How to run a coroutine on each event loop type the benchmarks compare."""


class Sample(NamedTuple):
    """Wall-clock and CPU seconds spent on one measured run."""

    wall: float
    cpu: float

    def per(self, n: int) -> Sample:
        """This sample divided by ``n`` (e.g. seconds per message)."""
        return Sample(self.wall / n, self.cpu / n)


class Stopwatch:
    """Measures wall-clock (``perf_counter``) and CPU (``process_time``) time together."""

    __slots__ = ("_cpu0", "_wall0")

    def __init__(self) -> None:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def read(self) -> Sample:
        return Sample(time.perf_counter() - self._wall0, time.process_time() - self._cpu0)


def fresh_heap() -> None:
    """Collect garbage, then move every surviving object out of the collector's sight.

    Called before each measured run, so that the cyclic GC passes a run triggers traverse
    only that run's objects, not what earlier runs left behind (or leaked): otherwise the
    later of two runs that allocate a lot pays for the first one."""
    gc.collect()
    gc.freeze()


def ratio_stats(ratios: Sequence[float]) -> tuple[float, float]:
    """``(median, best)`` of speed ratios where higher is better."""
    return statistics.median(ratios), max(ratios)


@dataclass(frozen=True)
class Target:
    """A performance target: figure ``key`` of a benchmark's result must satisfy ``op threshold``."""

    key: str
    description: str
    op: Literal[">=", "<"]
    threshold: float
    unit: str = ""

    def passed(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value < self.threshold

    def goal(self) -> str:
        value = f"{self.threshold:.1f}" if self.unit == "x" else f"{self.threshold:g}"
        return f"{self.op} {value}{self.unit}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a markdown table (numbers already formatted by the caller)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def describe_tree() -> str:
    """Which streamlib was measured: the git commit, whether its files had local edits, the
    Python and the message path (C or pure Python)."""
    import streamlib

    tree = _which_tree(Path(streamlib.__file__).resolve().parent)
    return f"{tree}; Python {sys.version.split()[0]}; {message_path()}"


def _which_tree(package: Path) -> str:
    root = Path(__file__).resolve().parent.parent
    if package != root / "streamlib":
        return f"streamlib from {package} (not this checkout)"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "streamlib"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "streamlib (no git)"
    edits = f", {len(dirty.splitlines())} file(s) in streamlib/ edited since" if dirty else ""
    return f"streamlib @ {head}{edits}"


def message_path() -> str:
    """Which message path ran: the C one (``streamlib.speedups``) or pure Python, and why."""
    from streamlib import speedups

    return "C message path" if speedups.ACTIVE else f"pure-Python message path ({speedups.REASON})"
