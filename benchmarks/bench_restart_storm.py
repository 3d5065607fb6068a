"""A restart storm beside a bystander: does one crashing actor starve its neighbours?

What is measured
    A bystander actor ticks on its own 60 fps clock and counts its ticks. On the same event
    loop, a supervised child raises on every tick of its own 60 fps clock, under a generous
    ``max_restarts`` (100,000 within 1 s), so the supervisor never gives up. Three phases run
    one after the other in one process, each ``--seconds`` long:

    * ``alone``: the bystander only (the baseline: what this machine gives a 60 fps actor);
    * ``storm, backoff``: the crashing child under ``Supervisor()``'s default backoff
      (20 ms doubling to 2 s, with jitter);
    * ``storm, no backoff``: the same with ``min_backoff=0`` (a restart as soon as it fails:
      how it behaved before the backoff existed).

    For each: the bystander's frame rate, the restarts per second, and the process's CPU
    time per wall second.

Why
    Issue 17, item 8: a crash loop restarted ~10,000 times a second, took 65 % of a core and
    dropped a 60 fps bystander to 40 fps. Target: during a storm the bystander keeps
    >= 58 fps (or, on a loaded machine, within 2 fps of its ``alone`` figure).

Run: ``python benchmarks/bench_restart_storm.py [--seconds 3] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from streamlib import Actor, Supervisor, TimedTick


class Bystander(Actor):
    default_fps = 60.0

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.n = 0

    async def process(self, tick: TimedTick) -> None:
        self.n += 1


class CrashEveryTick(Actor):
    default_fps = 60.0

    async def process(self, tick: TimedTick) -> None:
        raise RuntimeError("crash")


async def phase(seconds: float, storm: bool, min_backoff: float) -> tuple[float, float, float]:
    """Bystander fps, restarts per second, CPU seconds per wall second."""
    sup = None
    if storm:
        sup = Supervisor(max_restarts=100_000, within=1.0, min_backoff=min_backoff)
        sup.spawn(CrashEveryTick)
    bystander = Bystander()
    await asyncio.sleep(0.3)  # settle
    n0, r0 = bystander.n, sup.children[0].restarts if sup else 0
    wall0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    fps = (bystander.n - n0) / wall
    restarts = ((sup.children[0].restarts - r0) / wall) if sup else 0.0
    await bystander.stop()
    if sup is not None:
        await sup.stop()
    return fps, restarts, cpu / wall


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 s phases)")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    logging.getLogger("streamlib").setLevel(logging.CRITICAL)  # the storm logs every restart
    rows = [
        ("alone", *await phase(seconds, False, 0.0)),
        ("storm, backoff (default)", *await phase(seconds, True, 0.02)),
        ("storm, no backoff", *await phase(seconds, True, 0.0)),
    ]
    print(f"# bench_restart_storm: {seconds:g} s per phase, bystander at 60 fps on the same loop\n")
    print("| phase                    | bystander fps | restarts/s | CPU s per s |")
    print("|--------------------------|---------------|------------|-------------|")
    for name, fps, restarts, cpu in rows:
        print(f"| {name:<24} | {fps:13.1f} | {restarts:10.1f} | {cpu:11.2f} |")
    alone, storm = rows[0][1], rows[1][1]
    verdict = "met" if storm >= min(58.0, alone - 2.0) else "MISSED"
    print(f"\ntarget: bystander >= 58 fps (or within 2 fps of alone) during the storm with backoff: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
