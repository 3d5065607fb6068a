"""Opt-in profiling: where the time goes, per actor and per named section.

Off by default, and then it costs nothing per tick: an actor's run loop binds its per-tick
callable once when it starts, and only while profiling is on is that callable wrapped in a
timer. Switch it on for a whole run with the environment variable ``STREAMLIB_PROFILE=1``
(the table is then printed to stderr at exit, and ``STREAMLIB_PROFILE_JSON=path`` also writes
it as JSON), or from code::

    from streamlib import profiling
    profiling.enable()          # running actors re-bind between two ticks
    ...
    print(profiling.report())   # the table, on demand
    profiling.export_json("profile.json")

While it is on, every actor records three series, named after its path:

``/app/blur.process``
    how long each ``process`` call took, from being scheduled to completing (for an
    off-loop dispatcher this includes waiting for a worker).
``/app/blur.latency``
    end-to-end latency: when the actor finished a tick, minus the tick's timestamp. A
    synced actor's tick carries the *source frame's* timestamp (``time.monotonic()``), so
    this is the age of the frame by the time this actor is done with it.
``/app/source.lateness``
    for ticks of the actor's own clock only: how late ``process`` started after the
    tick's deadline.

and ``with profile("name", **labels):`` times any section of user code. Sections are
aggregated by name; the labels (and the actor the section ran in) are kept with each
sample in a bounded trace, :func:`events`, and in the JSON export. To split a table row
by a label, put it in the name: ``profile(f"decode {camera}")``.

Figures are seconds in the API and the JSON (``count``, ``mean``, ``max`` over every
sample; ``p50``/``p95``/``p99`` over the most recent :data:`WINDOW` samples), and
milliseconds in the printed table.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from streamlib import add_stats_section, current_actor, set_tick_instrument
from streamlib.runtime import TickFn

if TYPE_CHECKING:
    from streamlib import Actor, TimedTick

__all__ = [
    "WINDOW",
    "Series",
    "actor_summary",
    "disable",
    "enable",
    "enabled",
    "events",
    "export_json",
    "percentile",
    "profile",
    "report",
    "reset",
    "summary",
    "to_json",
]

WINDOW = 4096
"""How many recent samples of each series the percentiles are computed over."""

TRACE = 2_000
"""How many recent ``profile()`` samples :func:`events` keeps, with their labels."""

_enabled = False
_lock = threading.Lock()
_series: dict[str, Series] = {}
_events: deque[dict[str, Any]] = deque(maxlen=TRACE)
_exit_hook = False
_exit_json: str | os.PathLike[str] | None = None


class Series:
    """One named series of durations (seconds): running totals plus a window of recent samples."""

    __slots__ = ("_cached", "_lock", "count", "max", "name", "recent", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()
        self._cached: tuple[int, dict[str, float]] | None = None

    def add(self, seconds: float) -> None:
        with self._lock:
            self.count += 1
            self.total += seconds
            if seconds > self.max:
                self.max = seconds
            self.recent.append(seconds)

    def clear(self) -> None:
        with self._lock:
            self.count = 0
            self.total = 0.0
            self.max = -math.inf
            self.recent.clear()
            self._cached = None

    def summary(self) -> dict[str, float]:
        """``count``, ``mean``, ``p50``, ``p95``, ``p99``, ``max`` (seconds)."""
        cached = self._cached
        if cached is not None and cached[0] == self.count:
            return dict(cached[1])  # nothing new since: no sorting again
        with self._lock:
            count, total, top, recent = self.count, self.total, self.max, sorted(self.recent)
        if not count:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        found = {
            "count": count,
            "mean": total / count,
            "p50": percentile(recent, 50, ordered=True),
            "p95": percentile(recent, 95, ordered=True),
            "p99": percentile(recent, 99, ordered=True),
            "max": top,
        }
        self._cached = (count, found)
        return dict(found)

    def __repr__(self) -> str:
        return f"<Series {self.name} count={self.count}>"


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; 0.0 for no values. ``ordered=True``
    skips the sort when ``values`` is already sorted. The one percentile of streamlib: the
    profiler, the CLI's summary and the benchmarks all report with it."""
    if not values:
        return 0.0
    if not ordered:
        values = sorted(values)
    rank = max(math.ceil(q / 100 * len(values)) - 1, 0)
    return values[min(rank, len(values) - 1)]


def series(name: str) -> Series:
    """The series called ``name``, created on first use."""
    found = _series.get(name)
    if found is None:
        with _lock:
            found = _series.setdefault(name, Series(name))
    return found


# -- switching on and off ------------------------------------------------------------------


def enabled() -> bool:
    """Whether profiling is on."""
    return _enabled


def enable(*, report_at_exit: bool = False, json_path: str | os.PathLike[str] | None = None) -> None:
    """Switch profiling on. Running actors start timing their ticks from their next one.

    ``report_at_exit`` prints the table to stderr when the interpreter exits, and
    ``json_path`` writes the JSON export there too.
    """
    global _enabled
    _enabled = True
    if report_at_exit or json_path is not None:
        _register_exit_report(json_path)
    _rebind_all()


def disable() -> None:
    """Switch profiling off; what was recorded so far stays (see :func:`reset`)."""
    global _enabled
    _enabled = False
    _rebind_all()


def reset() -> None:
    """Forget every recorded sample (running actors keep recording into the same series)."""
    with _lock:
        found = list(_series.values())
        _events.clear()
    for s in found:
        s.clear()


def _rebind_all() -> None:
    """Set or clear the core's tick instrument: running actors re-bind between two ticks."""
    set_tick_instrument(instrument if _enabled else None)


# -- the actor hook --------------------------------------------------------------------------


def instrument(actor: Actor, run_tick: TickFn) -> TickFn:
    """Wrap an actor's per-tick callable so each tick records process time, latency, lateness.

    Only called while profiling is on (see ``Actor._bind_tick``): the plain callable runs
    untouched otherwise.
    """
    path = actor.path
    process = series(f"{path}.process")
    latency = series(f"{path}.latency")
    lateness = series(f"{path}.lateness")
    monotonic = time.monotonic

    def timed_tick(tick: TimedTick) -> Awaitable[None] | None:
        start = monotonic()
        clock = actor.clock
        if clock is not None and tick.clock_source_id == clock.clock_id:
            lateness.add(start - tick.timestamp)
        try:
            work = run_tick(tick)
        except BaseException:
            process.add(monotonic() - start)
            raise
        if work is None:
            end = monotonic()
            process.add(end - start)
            latency.add(end - tick.timestamp)
            return None
        return _finish(work, start, tick.timestamp, process, latency)

    return timed_tick


async def _finish(work: Awaitable[None], start: float, stamp: float, process: Series, latency: Series) -> None:
    try:
        await work
    finally:
        end = time.monotonic()
        process.add(end - start)
        latency.add(end - stamp)


def actor_summary(actor: Actor | str) -> dict[str, dict[str, float]]:
    """The actor's ``process``, ``latency`` and ``lateness`` summaries (only those with samples)."""
    path = actor if isinstance(actor, str) else actor.path
    found: dict[str, dict[str, float]] = {}
    for what in ("process", "latency", "lateness"):
        s = _series.get(f"{path}.{what}")
        if s is not None and s.count:
            found[what] = s.summary()
    return found


# -- user sections ---------------------------------------------------------------------------


class _Off:
    """What ``profile()`` returns while profiling is off: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_OFF = _Off()


class _Section:
    __slots__ = ("labels", "name", "start")

    def __init__(self, name: str, labels: dict[str, Any]) -> None:
        self.name = name
        self.labels = labels
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        duration = time.monotonic() - self.start
        series(self.name).add(duration)
        event: dict[str, Any] = {"name": self.name, "start": self.start, "duration": duration}
        actor = current_actor()
        if actor is not None:
            event["actor"] = actor.path
        if self.labels:
            event["labels"] = self.labels
        if kind is not None:
            event["error"] = kind.__name__
        _events.append(event)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, exc, tb)


def profile(name: str, **labels: Any) -> _Section | _Off:
    """Time a section: ``with profile("decode", camera="front"): ...`` (``async with`` works too).

    Does nothing (and costs a function call) while profiling is off."""
    if not _enabled:
        return _OFF
    return _Section(name, labels)


def events() -> list[dict[str, Any]]:
    """The most recent ``profile()`` samples (up to :data:`TRACE`): name, start, duration,
    the actor it ran in and its labels."""
    return list(_events)


# -- reports -----------------------------------------------------------------------------------


def summary() -> dict[str, dict[str, float]]:
    """Every series with samples: ``{name: {count, mean, p50, p95, p99, max}}`` (seconds)."""
    with _lock:
        found = list(_series.values())
    return {s.name: s.summary() for s in sorted(found, key=lambda s: s.name) if s.count}


def report(file: TextIO | None = None) -> str:
    """The profiling table (milliseconds), as seed 004 shows it; also written to ``file`` if given."""
    rows = summary()
    width = max([len("Operation"), *(len(name) for name in rows)]) + 2
    header = f"{'Operation':<{width}}{'Count':>8}{'Mean':>10}{'P50':>10}{'P95':>10}{'P99':>10}{'Max':>10}"
    lines = ["=== Profiling Results ===", "", header, "-" * len(header)]
    for name, s in rows.items():
        cells = "".join(f"{_ms(s[k]):>10}" for k in ("mean", "p50", "p95", "p99", "max"))
        lines.append(f"{name:<{width}}{s['count']:>8}{cells}")
    if not rows:
        hint = "" if _enabled else ": profiling is off, see streamlib.observe.profiling.enable()"
        lines.append(f"(no samples{hint})")
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if abs(seconds) >= 0.001 else f"{seconds * 1000:.3f}ms"


def to_dict() -> dict[str, Any]:
    """Everything recorded, ready for JSON: the summaries (seconds) and the recent section trace."""
    return {"enabled": _enabled, "unit": "seconds", "series": summary(), "events": events()}


def to_json(indent: int | None = 2) -> str:
    """:func:`to_dict` as JSON text."""
    return json.dumps(to_dict(), indent=indent, default=repr)


def export_json(path: str | os.PathLike[str]) -> Path:
    """Write :func:`to_json` to ``path`` and return it."""
    target = Path(path)
    target.write_text(to_json())
    return target


def _register_exit_report(json_path: str | os.PathLike[str] | None) -> None:
    global _exit_hook, _exit_json
    if json_path is not None:
        _exit_json = json_path
    if not _exit_hook:
        _exit_hook = True
        atexit.register(_report_at_exit)


def _report_at_exit() -> None:
    if _exit_json is not None:
        try:
            export_json(_exit_json)
        except OSError as exc:
            print(f"streamlib.observe.profiling: could not write {_exit_json}: {exc}", file=sys.stderr)
    if summary():
        print("\n" + report(), file=sys.stderr)


def _from_environment() -> None:
    """``STREAMLIB_PROFILE=1``: on from the start (no actor exists yet), with the exit report."""
    global _enabled
    flag = os.environ.get("STREAMLIB_PROFILE", "").strip().lower()
    if flag and flag not in ("0", "false", "no", "off"):
        _enabled = True
        _register_exit_report(os.environ.get("STREAMLIB_PROFILE_JSON") or None)


_from_environment()
_rebind_all()
add_stats_section("profile", lambda actor: actor_summary(actor) if _enabled else None)
