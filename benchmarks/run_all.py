"""Run every streamlib benchmark of this folder and print one table: target, figure, PASS/FAIL.

Each benchmark module has a ``main(argv)`` that prints its own tables and returns its
figures, and a ``TARGETS`` list saying which figure must meet which goal. This script runs
them in turn in one process (each figure is still a ratio to, or a comparison with, a
baseline measured in the same run) and checks the targets.

Run: ``python benchmarks/run_all.py [--quick] [--callgrind] [--only chain,spawn,jitter,fanout]``.
Exit status 1 if a target failed and ``--strict`` was given, else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import ModuleType

import bench_chain
import bench_clock_jitter
import bench_fanout
import bench_spawn
from measure import Target, describe_tree, print_table

BENCHMARKS: dict[str, ModuleType] = {
    "chain": bench_chain,
    "spawn": bench_spawn,
    "jitter": bench_clock_jitter,
    "fanout": bench_fanout,
}


def _format(target: Target, value: float) -> str:
    unit = target.unit.strip()
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3g} {unit}".rstrip()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the selected benchmarks, print the summary table, return every figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short smoke runs of every benchmark")
    parser.add_argument("--callgrind", action="store_true", help="add bench_chain's instruction counts (slow)")
    names = ",".join(BENCHMARKS)
    parser.add_argument("--only", default=names, help=f"comma-separated subset of: {names}")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any target fails")
    args = parser.parse_args(argv)

    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    figures: dict[str, float] = {}
    rows: list[list[object]] = []
    failed = 0
    started = time.perf_counter()
    for name in selected:
        module = BENCHMARKS[name]
        bench_argv = ["--quick"] if args.quick else []
        if name == "chain" and args.callgrind:
            bench_argv.append("--callgrind")
        run: Callable[[list[str]], dict[str, float]] = module.main
        result = run(bench_argv)
        figures.update(result)
        targets: list[Target] = module.TARGETS
        for target in targets:
            if target.key not in result:
                rows.append([name, target.description, target.goal(), "not measured", "-"])
                continue
            ok = target.passed(result[target.key])
            failed += not ok
            measured = _format(target, result[target.key])
            rows.append([name, target.description, target.goal(), measured, "PASS" if ok else "FAIL"])
        if "callgrind_ratio" in result:
            rows.append(
                [
                    name,
                    "chain: instructions/msg, asyncio.Queue / streamlib (callgrind)",
                    "(info)",
                    f"{result['callgrind_ratio']:.2f}x",
                    "-",
                ]
            )

    print(f"\n# Summary ({describe_tree()}; {time.perf_counter() - started:.0f} s{', quick' if args.quick else ''})")
    print_table("Targets", ["benchmark", "target", "goal", "measured (median)", "result"], rows)
    print(f"\n{failed} of {sum(1 for r in rows if r[4] != '-')} targets failed.")
    if args.strict and failed:
        sys.exit(1)
    return figures


if __name__ == "__main__":
    main()
