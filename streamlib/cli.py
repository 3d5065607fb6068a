"""The ``streamlib`` console script.

``streamlib demo`` runs a complete headless pipeline for a few seconds::

    pattern (TestPattern, burn-in) ──> overlay (Drawing: clock text, animated ring) ──> main ┐
                                   └─> pip (Resize 1/4) ─────────────────────────────> pip ─┤ compositor
                                                                      FileSink demo.mp4 <───┤
                                                                   HLSSink hls/stream.m3u8 <┘

shows a progress bar on stderr, and prints a per-actor summary (frames in/out, drops,
mean and p99 tick time) and the output paths. By default the run is *lossless*: every
queue blocks instead of dropping, so the files hold exactly ``seconds * fps`` frames even
on a slow machine (the source's clock skips ticks instead); ``--live`` uses realtime
dropping queues and shows what a slow stage drops.

``streamlib serve module:factory`` runs the supervision tree ``factory()`` builds as a
service, until SIGINT or SIGTERM, then stops it top-down within a deadline so sinks finalize
(see :mod:`streamlib.service`); ``--dashboard PORT`` adds the live dashboard.

Every mistake a user can make on the command line (an output folder that cannot be written,
an odd frame size, a target that does not import, a missing optional library) ends in one
line on stderr naming the problem and the fix, and exit status 2 (:class:`UsageError`);
tracebacks are kept for bugs.

A subcommand is a subparser with ``set_defaults(run=handler)``, where ``handler(args)``
returns the exit status: register more in :func:`build_parser`.

Per-actor timing uses :class:`TimingDispatcher`, a dispatcher that wraps another one and
records how long each ``process`` call takes from being scheduled to completing (for a
thread dispatcher that includes a wait for a free worker, and any wait for room on a
blocking downstream input inside ``process``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import streamlib
from streamlib import Actor, Dispatcher, ThreadPoolDispatcher
from streamlib.dispatch import resolve_dispatcher
from streamlib.eventloop import new_event_loop
from streamlib.listening import ListenRefused
from streamlib.mailbox import Overflow
from streamlib.observe.profiling import percentile

if TYPE_CHECKING:
    from streamlib import TimedTick

__all__ = ["DEMO_DRAWING", "TimingDispatcher", "UsageError", "main", "percentile", "summary_rows"]


class UsageError(Exception):
    """A mistake on the command line: :func:`main` prints the message (which names the problem
    and the fix) as one line and exits with status 2, without a traceback."""


class TimingDispatcher(Dispatcher):
    """Wraps a dispatcher and records each ``process`` call's duration in :attr:`durations` (seconds).

    Use one per actor: ``Blur(dispatcher=TimingDispatcher(ThreadPoolDispatcher(1)))``.
    """

    def __init__(self, inner: Dispatcher | str | None = None, keep: int = 1_000_000) -> None:
        super().__init__()
        self.inner = resolve_dispatcher(inner)
        self.interruptible = self.inner.interruptible  # type: ignore[misc]
        self.keep = keep
        self.durations: list[float] = []

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        start = time.perf_counter()
        work = self.inner.schedule(actor, tick)
        if work is None:
            self._record(time.perf_counter() - start)
            return None
        return self._timed(work, start)

    async def _timed(self, work: Awaitable[None], start: float) -> None:
        try:
            await work
        finally:
            self._record(time.perf_counter() - start)

    def _record(self, seconds: float) -> None:
        if len(self.durations) < self.keep:
            self.durations.append(seconds)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        return self.inner.call_hook(actor, hook)

    async def attach(self, actor: Actor) -> None:
        await self.inner.attach(actor)

    async def detach(self, actor: Actor) -> None:
        await self.inner.detach(actor)

    def __repr__(self) -> str:
        return f"<TimingDispatcher over {self.inner!r} calls={len(self.durations)}>"


def timed(workers: int = 1) -> TimingDispatcher:
    """A timing dispatcher over a private pool of ``workers`` threads."""
    return TimingDispatcher(ThreadPoolDispatcher(workers=workers))


def summary_rows(actors: Sequence[Actor]) -> list[dict[str, Any]]:
    """One row per actor: frames in/out, drops, ticks and tick time (mean, p99, in ms)."""
    rows = []
    for actor in actors:
        stats = actor.stats()
        durations = actor.dispatcher.durations if isinstance(actor.dispatcher, TimingDispatcher) else []
        rows.append(
            {
                "actor": actor.name,
                "class": type(actor).__name__,
                "in": sum(p["received"] for p in stats["inputs"].values()),
                "out": sum(p["sent"] for p in stats["outputs"].values()),
                "dropped": sum(p["dropped"] for p in stats["inputs"].values()),
                "ticks": stats["ticks"],
                "skipped_ticks": stats["skipped_ticks"],
                "mean_ms": 1000 * sum(durations) / len(durations) if durations else float("nan"),
                "p99_ms": 1000 * percentile(durations, 99),
                "state": stats["state"],
            }
        )
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    header = f"{'actor':<12} {'class':<12} {'in':>6} {'out':>6} {'dropped':>7} {'mean ms':>8} {'p99 ms':>8}  state"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['actor']:<12} {r['class']:<12} {r['in']:>6} {r['out']:>6} {r['dropped']:>7} "
            f"{r['mean_ms']:>8.2f} {r['p99_ms']:>8.2f}  {r['state']}"
        )
    return "\n".join(lines)


class Progress:
    """A plain-text progress bar on a stream (``\\r``-redrawn on a terminal, one line per update otherwise)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.stream = stream = stream or sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self._last_line = 0.0

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last_line < 1.0 and done < self.total:
            return
        self._last_line = now
        frac = min(done / self.total, 1.0)
        filled = round(frac * self.width)
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {frac * 100:5.1f}%  {done}/{self.total} frames  {elapsed:5.1f} s  {rate:5.1f} fps  {note}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# Drawn over the video by the demo's Drawing actor: a wall clock, the stream time and a ring
# that orbits the centre, as a code string (the way an agent would hand it over).
DEMO_DRAWING = """
import datetime
w, h = ctx.width, ctx.height
box = skia.Rect.MakeXYWH(w * 0.03, h * 0.78, w * 0.42, h * 0.17)
canvas.drawRoundRect(box, h * 0.02, h * 0.02, skia.Paint(AntiAlias=True, Color=skia.Color(0, 0, 0, 170)))
clock = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
canvas.drawString(clock, box.left() + h * 0.02, box.top() + h * 0.075, font, paint)
small = skia.Font(font.getTypeface(), font.getSize() * 0.6)
canvas.drawString(f"stream {ctx.time:7.3f} s   frame {ctx.frame_number}", box.left() + h * 0.02,
                  box.top() + h * 0.14, small, paint)
r = min(w, h) * 0.25
cx, cy = w / 2 + r * math.cos(ctx.time * 2), h / 2 + r * math.sin(ctx.time * 2)
ring = skia.Paint(AntiAlias=True, Style=skia.Paint.kStroke_Style, StrokeWidth=max(h / 120, 2),
                  Color=skia.Color(255, 200, 0))
canvas.drawCircle(cx, cy, min(w, h) * (0.06 + 0.02 * math.sin(ctx.time * 5)), ring)
"""


async def run_demo(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo pipeline (arguments as :func:`build_parser` makes them; checked by :func:`demo_command`)."""
    from streamlib.actors import Compositor, Drawing, FileSink, HLSSink, Resize, TestPattern

    out = out or sys.stdout
    err = err or sys.stderr
    width, height, fps = args.width, args.height, args.fps
    frames = max(round(args.seconds * fps), 1)
    outdir = output_folder(args.out, hls=not args.no_hls)
    lossless = not args.live
    overflow: Overflow = "block" if lossless else "drop_oldest"
    maxsize = 4

    pattern = TestPattern(
        args.pattern, width, height, fps, burn_in=True, frames=frames, name="pattern", dispatcher=timed()
    )
    overlay = Drawing(DEMO_DRAWING, fps=fps, overflow=overflow, maxsize=maxsize, name="overlay", dispatcher=timed())
    pip = Resize(scale=0.25, overflow=overflow, maxsize=maxsize, name="pip", dispatcher=timed())
    comp = Compositor(
        width, height, fps=None, base=None, overflow=overflow, maxsize=maxsize, name="compositor", dispatcher=timed()
    )
    margin = max(width // 40, 2)
    pattern >> overlay >> comp.add_layer("main", z=0)
    pattern >> pip >> comp.add_layer("pip", z=1, x=width - width // 4 - margin, y=margin, opacity=0.9)
    mp4 = outdir / "demo.mp4"
    sinks: list[Actor] = [FileSink(mp4, lossless=lossless, name="mp4", dispatcher=timed())]
    paths = [mp4]
    if not args.no_hls:
        playlist = outdir / "hls" / "stream.m3u8"
        sinks.append(HLSSink(playlist, lossless=lossless, segment_seconds=1.0, name="hls", dispatcher=timed()))
        paths.append(playlist)
    for sink in sinks:
        comp >> sink
    everyone: list[Actor] = [pattern, overlay, pip, comp, *sinks]
    print(
        f"streamlib demo: writing {' and '.join(str(p) for p in paths)} (--out FOLDER to change)", file=out, flush=True
    )

    progress = Progress(frames, err, enabled=not args.quiet)
    done = asyncio.gather(*(asyncio.ensure_future(s.join()) for s in sinks))
    try:
        while not done.done():
            progress.update(comp.outputs["video"].sent, f"{'lossless' if lossless else 'live'}")
            await asyncio.wait([done], timeout=0.25)
    except asyncio.CancelledError:
        for actor in everyone:
            actor.stop()
        await asyncio.gather(*(a.join() for a in everyone))
        raise
    progress.update(comp.outputs["video"].sent, "done")
    progress.finish()
    await asyncio.gather(*(a.join() for a in everyone))

    rows = summary_rows(everyone)
    print(
        f"{width}x{height} @ {fps:g} fps, {frames} frames, "
        f"{'lossless (blocking queues)' if lossless else 'live (dropping queues)'}",
        file=out,
    )
    print(format_summary(rows), file=out)
    print("tick time: from scheduling process() to its end, incl. waits for a worker or for room downstream", file=out)
    failed = [a for a in everyone if a.failure is not None]
    for actor in failed:
        print(f"FAILED {actor.path}: {actor.failure!r}", file=out)
    for path in paths:
        print(f"wrote {path}", file=out)
    return 1 if failed else 0


def output_folder(out: str, hls: bool = True) -> Path:
    """The demo's output folder, created (with ``hls/`` inside when ``hls``) and checked writable.

    Raises :class:`UsageError` naming the folder, the reason and the fix, before any actor starts."""
    folder = Path(out).expanduser()
    fix = "pass a folder you can write to, e.g. --out streamlib-demo (created if missing)"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if hls:
            (folder / "hls").mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # writable? (root passes os.access even on /proc)
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"--out {out}: cannot write there ({reason}): {fix}") from None
    return folder.resolve()


def check_demo_args(args: argparse.Namespace) -> None:
    """Refuse values the demo cannot honour, naming the option and a value that works."""
    if not args.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds:g}: e.g. --seconds 5")
    if not 0 < args.fps <= 1000:
        raise UsageError(f"--fps must be in (0, 1000], got {args.fps:g}: e.g. --fps 30")
    if args.width < 16 or args.height < 16:
        raise UsageError(f"the frame size {args.width}x{args.height} is too small: --width and --height must be >= 16")
    if args.width % 2 or args.height % 2:
        even_w, even_h = args.width + args.width % 2, args.height + args.height % 2
        raise UsageError(
            f"the frame size {args.width}x{args.height} is odd, and H.264 (4:2:0) needs even sizes: "
            f"use --width {even_w} --height {even_h}"
        )


def demo_command(args: argparse.Namespace) -> int:
    """``streamlib demo``: check the arguments and the libraries, then run :func:`run_demo`."""
    check_demo_args(args)
    try:
        import streamlib.actors as actors

        for name in ("Compositor", "Drawing", "FileSink", "HLSSink", "Resize", "TestPattern"):
            getattr(actors, name)
    except ImportError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
        missing = cause.name or str(cause)
        raise UsageError(
            f"needs the media libraries (PyAV, OpenCV, skia-python) and {missing!r} does not import: "
            "pip install 'streamlib[media]'"
        ) from None
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        try:
            return runner.run(run_demo(args))
        except KeyboardInterrupt:
            print("\ninterrupted: files were finalized up to here", file=sys.stderr)
            return 130


def build_parser() -> argparse.ArgumentParser:
    """The ``streamlib`` command line: one subparser per command, each with ``set_defaults(run=handler)``."""
    parser = argparse.ArgumentParser(prog="streamlib", description="streamlib: realtime streams as actors")
    parser.add_argument("--version", action="version", version=f"streamlib {streamlib.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(commands)
    add_serve_parser(commands)
    from streamlib.agents.cli import add_agent_commands  # `streamlib mcp`, `streamlib catalogue`
    from streamlib.remote.node import add_node_command  # `streamlib node`

    add_agent_commands(commands)
    add_node_command(commands)
    return parser


def add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a headless demo pipeline and write MP4 + HLS",
        description="Run TestPattern >> Drawing >> Compositor (with a picture-in-picture) >> FileSink + HLSSink "
        "for a few seconds, with a progress bar and a per-actor summary.",
    )
    demo.add_argument("--seconds", type=float, default=5.0, help="length of the stream (default: %(default)s)")
    demo.add_argument("--width", type=int, default=1280, help="frame width in pixels, even (default: %(default)s)")
    demo.add_argument("--height", type=int, default=720, help="frame height in pixels, even (default: %(default)s)")
    demo.add_argument("--fps", type=float, default=30.0, help="frames per second (default: %(default)s)")
    demo.add_argument(
        "--pattern",
        default="smpte_bars",
        help="the test pattern (default: %(default)s)",
        choices=["smpte_bars", "gradient", "checkerboard", "moving_box", "noise"],
    )
    demo.add_argument(
        "--out",
        default="streamlib-demo",
        metavar="FOLDER",
        help="output folder, created if missing: FOLDER/demo.mp4 and FOLDER/hls/stream.m3u8 (default: ./%(default)s)",
    )
    demo.add_argument("--no-hls", action="store_true", help="write only the MP4")
    demo.add_argument("--live", action="store_true", help="realtime dropping queues instead of lossless ones")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=demo_command)


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a supervision tree until SIGINT/SIGTERM, then stop it cleanly",
        description="Import MODULE (a dotted name, or a path to a .py file), call FACTORY() to build the "
        "tree (it returns the root actor, several actors, or None), run it until SIGINT or SIGTERM, then stop "
        "it top-down within --stop-timeout seconds so sinks finalize.",
    )
    serve.add_argument("target", metavar="MODULE:FACTORY", help="e.g. myapp.pipeline:build or app.py:main")
    serve.add_argument(
        "--stop-timeout", type=float, default=10.0, help="seconds to wait for the stop (default: %(default)s)"
    )
    serve.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    serve.add_argument("--dashboard", type=int, metavar="PORT", help="also serve the live dashboard on PORT (0: any)")
    serve.add_argument("--host", default="127.0.0.1", help="the dashboard's address (default: %(default)s)")
    serve.add_argument(
        "--token-file", metavar="FILE", help="the dashboard's token (required for a --host other than 127.0.0.1)"
    )
    serve.add_argument("--profile", action="store_true", help="profile, and print the table at exit")
    serve.set_defaults(run=run_serve)


def load_factory(target: str) -> Callable[[], Any]:
    """``module:factory`` (or ``path/to/file.py:factory``) -> the factory, imported.

    The current directory is importable, as with ``python -m``. A target that cannot be found
    raises :class:`UsageError`; an exception raised by the module's own code propagates (a bug
    in it, whose traceback helps)."""
    import importlib
    import importlib.util

    module_name, sep, attr = target.partition(":")
    example = "e.g. app.py:main or mypackage.pipeline:build"
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:FACTORY, got {target!r}: {example}")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise UsageError(f"no such file: {path}: check the path ({example})")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a spec
            raise UsageError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                raise UsageError(
                    f"no module named {exc.name!r}: run from the folder that holds it, or give a file ({example})"
                ) from None
            raise UsageError(f"importing {module_name} failed: {exc}: pip install the missing package") from None
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"{module_name} has no {attr!r}: name a function that builds the tree ({example})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UsageError(f"{target} is a {type(factory).__name__}, not a function: name the function that builds it")
    return factory  # type: ignore[no-any-return]


def run_serve(args: argparse.Namespace) -> int:
    """``streamlib serve``: load the factory, optionally serve the dashboard, run until a signal."""
    from streamlib.observe import profiling
    from streamlib.service import configure_logging, run

    try:
        factory = load_factory(args.target)
    except UsageError as exc:
        raise UsageError(f"cannot load {args.target}: {exc}") from None
    configure_logging(args.log_level.upper())
    if args.profile:
        profiling.enable(report_at_exit=True)
    board = None
    if args.dashboard is not None:
        try:
            from streamlib.observe.dashboard import dashboard

            token = Path(args.token_file).read_text().strip() if args.token_file else None
            board = dashboard(port=args.dashboard, host=args.host, token=token)
        except ListenRefused as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:
            raise UsageError(f"--dashboard needs aiohttp: pip install 'streamlib[observe]' ({exc})") from None
        except OSError as exc:
            raise UsageError(
                f"--dashboard {args.dashboard}: cannot listen on {args.host}:{args.dashboard} "
                f"({exc.strerror or exc}): pick another port (0 picks a free one)"
            ) from None
        print(f"streamlib serve: dashboard at {board.url}", file=sys.stderr)
    try:
        return run(factory, stop_timeout=args.stop_timeout, log_level=None)
    finally:
        if board is not None:
            board.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage error, after one line on stderr)."""
    args = build_parser().parse_args(argv)
    run = args.run  # every command, the layers' too (mcp, catalogue, node), sets its handler
    try:
        status = int(run(args))
    except UsageError as exc:
        print(f"streamlib {args.command}: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
