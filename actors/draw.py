"""The :class:`Drawing` actor: vector graphics with skia, from a Python callable or a code string.

Code strings are how AI agents hand drawing code over::

    overlay = Drawing("canvas.drawCircle(ctx.width/2, ctx.height/2, 50 + 20*math.sin(ctx.time), paint)")
    source >> overlay >> sink                           # drawn over the incoming video
    Drawing(my_draw_fn, width=1280, height=720) >> compositor.add_layer("hud", z=10)   # RGBA layer
    overlay.set_code("canvas.drawRect(skia.Rect(10, 10, 200, 80), paint)")             # hot swap
    overlay.variables["score"] = 3                      # seen as ctx.score / score

A code string is either a body run once per frame, or a module defining
``def draw(canvas, ctx):``. It sees ``canvas`` (a ``skia.Canvas``), ``ctx`` (a
:class:`DrawContext`), ``paint`` (a fresh anti-aliased white ``skia.Paint``), ``font``
(a ``skia.Font`` sized to 1/20 of the height), ``skia``, ``math``, ``np`` and each user
variable by name. A callable is called as ``draw(canvas, ctx)``.

Robustness. Each frame is *recorded* (``skia.PictureRecorder``) and only a complete
recording is played onto the output, so an exception in user code never produces a
half-drawn frame: it is logged (once per distinct error), kept in :attr:`Drawing.last_error`
with the line number in the user's code, and the last good drawing keeps being drawn
(over the new video). :meth:`Drawing.set_code` compiles before swapping: a string that
does not compile raises :class:`SyntaxError` naming the line, and the old code keeps
running.

Output: with no ``'video'`` input connected the actor runs its own clock at ``fps`` and
emits a transparent RGBA layer (straight alpha, ``width`` x ``height``); with an input it
draws over each incoming frame and emits the same layout (RGB stays RGB). Output arrays
come from a pool and are reused once nobody downstream holds them.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import itertools
import linecache
import logging
import math
import os
import re
import sys
import tempfile
import textwrap
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.mailbox import Overflow

from .buffer import FramePool, own_thread

try:
    import skia  # type: ignore[import-not-found]
except ImportError as exc:  # pragma: no cover - exercised only without skia
    raise ImportError("streamlib.actors.draw needs skia: pip install skia-python (or streamlib[media])") from exc

cv2: Any
try:
    import cv2
except ImportError:  # pragma: no cover - numpy fallbacks below
    cv2 = None

__all__ = ["DrawContext", "DrawFunction", "Drawing", "DrawingError"]

log = logging.getLogger("streamlib.draw")

DrawFunction = Callable[[Any, "DrawContext"], Any]
_versions = itertools.count(1)
_typeface_lock = threading.Lock()
_typeface: Any = None


def default_typeface() -> Any:
    """A sans-serif ``skia.Typeface`` (looked up once)."""
    global _typeface
    with _typeface_lock:
        if _typeface is None:
            _typeface = skia.Typeface("sans-serif")
        return _typeface


# skia-python's wheels bundle fontconfig 2.13, older than the configuration of newer systems
# (Debian 12, Ubuntu 22.04+), whose 05-reset-dirs-sample.conf uses an element it does not know.
# It warns about it on stderr the first time fonts are looked up (in the middle of a progress
# bar, on every run), and fonts work regardless. Only that exact line is dropped.
_HARMLESS_FONTCONFIG = re.compile(rb'^Fontconfig warning: "[^"]*", line \d+: unknown element "reset-dirs"\r?\n?$')


def _load_fonts_quietly() -> None:
    """Look the default typeface up now, dropping the one known-harmless fontconfig warning.

    fontconfig writes to file descriptor 2 from C, so stderr is caught at that level for the
    few milliseconds of the lookup; every other line (a real error, or another thread's
    output meanwhile) is written back to stderr unchanged. A lookup that fails is left for
    the first drawing to raise, as it would without this."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to keep quiet
        saved = -1
    if saved < 0:
        with contextlib.suppress(Exception):
            default_typeface()
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            default_typeface()
        except Exception:
            pass  # raised again, with its message, where a drawing first needs the font
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        kept = [line for line in caught.read().splitlines(keepends=True) if not _HARMLESS_FONTCONFIG.match(line)]
    if kept:
        os.write(2, b"".join(kept))


_load_fonts_quietly()


@dataclass(slots=True)
class DrawContext:
    """What the drawing code knows about the frame it draws.

    ``time``: seconds since the actor's first frame; ``timestamp``: the frame's clock time
    (``time.monotonic()`` timeline); ``frame``: the incoming :class:`VideoFrame` (``None``
    in layer mode; read-only). User variables are in ``variables`` and also readable as
    attributes (``ctx.score``)."""

    time: float
    frame_number: int
    width: int
    height: int
    frame: VideoFrame | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0
    fps: float | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.variables[name]
        except KeyError:
            known = ", ".join(sorted(self.variables)) or "none"
            raise AttributeError(f"ctx has no attribute or variable {name!r} (variables: {known})") from None


@dataclass(frozen=True, slots=True)
class DrawingError:
    """A failure of user drawing code: where it happened in *the user's* code."""

    kind: Literal["syntax", "runtime"]
    exception: str  # the exception type name
    message: str
    lineno: int | None
    line: str  # the offending source line, when known
    source: str  # the code's filename (``<drawing:...>`` for code strings)
    frame_number: int | None = None
    traceback: str = ""

    def __str__(self) -> str:
        where = f"line {self.lineno}" if self.lineno is not None else "unknown line"
        text = f" ({self.line.strip()})" if self.line.strip() else ""
        return f"{self.exception} at {where} of {self.source}: {self.message}{text}"


class _Program:
    """One version of the user's drawing code, compiled."""

    __slots__ = ("code", "filename", "fn", "source")

    def __init__(self, fn: DrawFunction | None, code: CodeType | None, filename: str, source: str) -> None:
        self.fn = fn
        self.code = code
        self.filename = filename
        self.source = source


def _base_namespace() -> dict[str, Any]:
    return {"__builtins__": builtins, "math": math, "np": np, "skia": skia}


def _compile(draw: DrawFunction | str, owner: str) -> _Program:
    """Compile a code string (raising SyntaxError) or wrap a callable."""
    if callable(draw):
        code = getattr(draw, "__code__", None)
        filename = code.co_filename if code is not None else repr(draw)
        return _Program(draw, None, filename, "")
    if not isinstance(draw, str):
        raise TypeError(f"draw must be a callable draw(canvas, ctx) or a code string, got {type(draw).__name__}")
    source = textwrap.dedent(draw)  # line numbers stay those of the string as given
    if not source.endswith("\n"):
        source += "\n"
    filename = f"<drawing:{owner}:v{next(_versions)}>"
    code_obj = compile(source, filename, "exec")  # SyntaxError names the line
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show lines
    tree = ast.parse(source, filename)
    defines_draw = any(isinstance(n, ast.FunctionDef) and n.name == "draw" for n in tree.body)
    if defines_draw:
        namespace = _base_namespace()
        exec(code_obj, namespace)
        fn = namespace["draw"]
        if not callable(fn):
            raise TypeError(f"{filename}: 'draw' is not a function")
        return _Program(fn, None, filename, source)
    return _Program(None, code_obj, filename, source)


def _error_from(exc: BaseException, program: _Program, frame_number: int | None) -> DrawingError:
    if isinstance(exc, SyntaxError):
        return DrawingError(
            "syntax",
            type(exc).__name__,
            exc.msg or str(exc),
            exc.lineno,
            exc.text or "",
            exc.filename or program.filename,
            frame_number,
            "".join(traceback.format_exception_only(type(exc), exc)),
        )
    lineno: int | None = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:  # the deepest frame that runs the user's code
        if tb.tb_frame.f_code.co_filename == program.filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    line = linecache.getline(program.filename, lineno) if lineno is not None else ""
    return DrawingError(
        "runtime",
        type(exc).__name__,
        str(exc),
        lineno,
        line,
        program.filename,
        frame_number,
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


class Drawing(Actor):
    """Draws with skia from ``draw`` (a callable ``draw(canvas, ctx)`` or a code string); see the module docstring.

    ``width``/``height``: the layer size when no video input is connected (default
    1280x720). ``fps``: the own clock's rate in that case. ``variables``: initial user
    variables (the live dict is :attr:`variables`). ``on_error``: called with each new
    :class:`DrawingError` (on the actor's worker thread, or on the caller's for ``set_code``).
    """

    def __init__(
        self,
        draw: DrawFunction | str,
        width: int | None = None,
        height: int | None = None,
        *,
        fps: float = 30.0,
        variables: dict[str, Any] | None = None,
        on_error: Callable[[DrawingError], Any] | None = None,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=own_thread(dispatcher), **kw)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.width = int(width or 1280)
        self.height = int(height or 720)
        self.fps = self.own_fps = float(fps)
        self.variables: dict[str, Any] = dict(variables or {})
        self.on_error = on_error
        self.inputs["video"] = StreamInput("video", VideoFrame, maxsize=maxsize, overflow=overflow)
        self.outputs["video"] = StreamOutput("video", VideoFrame)
        self.last_error: DrawingError | None = None
        self.error_count = 0
        self.frames_drawn = 0
        self._program = _compile(draw, self.name)  # a SyntaxError here fails construction
        self._picture: Any = None  # the last complete recording
        self._picture_size: tuple[int, int] | None = None
        self._errors: dict[tuple[str, str, int | None, str, str], tuple[DrawingError, int]] = {}
        self._t0: float | None = None
        self._pool = FramePool(6)
        self._work: NDArray[np.uint8] | None = None
        self._work_surface: Any = None

    # -- code and variables (any thread) --------------------------------------------------

    def set_code(self, draw: DrawFunction | str) -> None:
        """Swap in new drawing code (a code string or a callable), effective from the next frame.

        A string that does not compile is rejected: :class:`SyntaxError` is raised (and
        recorded in :attr:`last_error`) and the current code keeps running."""
        try:
            program = _compile(draw, self.name)
        except SyntaxError as exc:
            placeholder = _Program(None, None, exc.filename or "<drawing>", draw if isinstance(draw, str) else "")
            self._report(_error_from(exc, placeholder, None))
            raise
        self._program = program

    @property
    def code(self) -> str | DrawFunction:
        """The code that runs now (the source string, or the callable)."""
        program = self._program
        return program.source if program.fn is None or program.source else program.fn  # type: ignore[return-value]

    def set_variables(self, **values: Any) -> None:
        """Update user variables (seen from the next frame)."""
        self.variables.update(values)

    def on_restart(self, previous: Actor) -> None:
        """Keep the code and variables set at runtime (an agent's latest drawing survives a
        crash elsewhere in the actor; errors in the drawing code itself never crash it)."""
        if isinstance(previous, Drawing):
            self._program = previous._program
            self.variables = dict(previous.variables)

    # -- drawing -----------------------------------------------------------------------------

    @property
    def errors(self) -> list[tuple[DrawingError, int]]:
        """Each distinct error so far (its first occurrence) with how many times it happened,
        oldest first. ``on_error`` hears of each distinct error once (same code version,
        exception, line and message), not on every frame a persistent bug fails; this has
        the counts it could not know yet."""
        return list(self._errors.values())

    def _report(self, error: DrawingError) -> None:
        self.last_error = error
        self.error_count += 1
        signature = (error.kind, error.exception, error.lineno, error.message, error.source)
        seen = self._errors.get(signature)
        if seen is not None:  # the same error again (a persistent bug fails every frame): count it only
            self._errors[signature] = (seen[0], seen[1] + 1)
            return
        self._errors[signature] = (error, 1)
        log.warning("%s: drawing code failed: %s", self.path, error)
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                log.exception("%s: on_error callback raised", self.path)

    def record(self, ctx: DrawContext) -> Any:
        """Run the user's code on a recording canvas; return the ``skia.Picture``, or
        ``None`` (after reporting) if the code raised."""
        program = self._program
        recorder = skia.PictureRecorder()
        # An R-tree makes the picture's cullRect() the bounds of what was drawn, so drawing
        # over RGB video converts only that part of the frame (see draw_over).
        canvas = recorder.beginRecording(skia.Rect.MakeWH(ctx.width, ctx.height), skia.RTreeFactory()())
        try:
            if program.fn is not None:
                program.fn(canvas, ctx)
            else:
                assert program.code is not None
                namespace = _base_namespace()
                namespace.update(ctx.variables)
                namespace.update(
                    canvas=canvas,
                    ctx=ctx,
                    paint=skia.Paint(AntiAlias=True, Color=skia.ColorWHITE),
                    font=skia.Font(default_typeface(), max(ctx.height / 20, 8)),
                )
                exec(program.code, namespace)
        except Exception as exc:
            recorder.finishRecordingAsPicture()
            self._report(_error_from(exc, program, ctx.frame_number))
            return None
        return recorder.finishRecordingAsPicture()

    def _context(self, tick: TimedTick, frame: VideoFrame | None, width: int, height: int) -> DrawContext:
        if self._t0 is None:
            self._t0 = tick.timestamp
        return DrawContext(
            time=tick.timestamp - self._t0,
            frame_number=tick.frame_number,
            width=width,
            height=height,
            frame=frame,
            variables=dict(self.variables),
            timestamp=tick.timestamp,
            fps=tick.fps,
        )

    def _current_picture(self, ctx: DrawContext) -> Any:
        picture = self.record(ctx)
        if picture is not None:
            self._picture = picture
            self._picture_size = (ctx.width, ctx.height)
            return picture
        return self._picture  # the last good drawing keeps flowing

    def draw_layer(self, ctx: DrawContext) -> NDArray[np.uint8]:
        """A transparent RGBA layer with the drawing (a pooled array)."""
        out = self._pool.get((ctx.height, ctx.width, 4))
        surface = skia.Surface(out, colorType=skia.kRGBA_8888_ColorType, alphaType=skia.kUnpremul_AlphaType)
        canvas = surface.getCanvas()
        canvas.clear(skia.ColorTRANSPARENT)
        picture = self._current_picture(ctx)
        if picture is not None:
            canvas.drawPicture(picture)
        del canvas, surface  # the surface must not outlive the array
        return out

    def draw_over(self, ctx: DrawContext, data: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The incoming frame with the drawing on top, in the frame's layout (pooled array)."""
        h, w = data.shape[:2]
        picture = self._current_picture(ctx)
        if data.ndim == 3 and data.shape[2] == 4:
            out = self._pool.get(data.shape)
            np.copyto(out, data)
            if picture is not None:
                surface = skia.Surface(out, colorType=skia.kRGBA_8888_ColorType, alphaType=skia.kUnpremul_AlphaType)
                surface.getCanvas().drawPicture(picture)
                del surface
            return out
        if picture is None:
            return data  # nothing to draw yet: pass the frame through untouched
        work = self._work
        if work is None or work.shape[:2] != (h, w):
            work = self._work = np.empty((h, w, 4), np.uint8)
            self._work_surface = skia.Surface(
                work, colorType=skia.kRGBA_8888_ColorType, alphaType=skia.kPremul_AlphaType
            )
        out = self._pool.get((h, w, 3))
        if data.ndim == 2 or data.shape[2] == 1:
            _to_rgba(data, work)  # grey: drawn over in colour, so RGB out
            _to_rgb(work, out)
            data = out
        # Skia draws on RGBA: convert only the part the drawing covers, there and back;
        # the rest of the frame is copied as it is.
        bounds = picture.cullRect().roundOut()
        x0, y0 = max(bounds.left(), 0), max(bounds.top(), 0)
        x1, y1 = min(bounds.right(), w), min(bounds.bottom(), h)
        if x0 >= x1 or y0 >= y1:
            if out is not data:
                np.copyto(out, data)
            return out
        if out is not data:
            for rows, cols in (
                (slice(0, y0), slice(None)),
                (slice(y1, h), slice(None)),
                (slice(y0, y1), slice(0, x0)),
                (slice(y0, y1), slice(x1, w)),
            ):
                np.copyto(out[rows, cols], data[rows, cols])
        _to_rgba(data[y0:y1, x0:x1], work[y0:y1, x0:x1])
        canvas = self._work_surface.getCanvas()
        canvas.save()
        canvas.clipRect(skia.Rect.MakeLTRB(x0, y0, x1, y1))
        canvas.drawPicture(picture)
        canvas.restore()
        _to_rgb(work[y0:y1, x0:x1], out[y0:y1, x0:x1])
        return out

    async def process(self, tick: TimedTick) -> None:
        port = self.inputs["video"]
        frame = port.read_nowait()
        if frame is None:
            if port.connected:
                return  # upstream went quiet: nothing to draw over
            data = self.draw_layer(self._context(tick, None, self.width, self.height))
            out = VideoFrame.at(tick, data=data)
        else:
            data = frame.data
            if data.dtype != np.uint8 or not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (1, 3, 4))):
                raise ValueError(
                    f"{self.path}: video frame {frame.frame_number} has shape {data.shape} and dtype {data.dtype}; "
                    f"Drawing draws over uint8 frames: (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA"
                )
            ctx = self._context(tick, frame, frame.width, frame.height)
            out = frame.with_data(self.draw_over(ctx, data))
        self.frames_drawn += 1
        await self.outputs["video"].send(out)

    async def on_stop(self) -> None:
        repeated = [(error, count) for error, count in self._errors.values() if count > 1]
        for error, count in repeated:  # logged once when it first happened: now say how often
            log.warning("%s: drawing code failed %d times in all: %s", self.path, count, error)
        self._work_surface = None
        self._work = None
        self._pool.clear()


def _to_rgba(src: NDArray[np.uint8], dst: NDArray[np.uint8]) -> None:
    gray = src.ndim == 2 or src.shape[2] == 1
    if cv2 is not None:
        cv2.cvtColor(src, cv2.COLOR_GRAY2RGBA if gray else cv2.COLOR_RGB2RGBA, dst=dst)
        return
    dst[..., :3] = src.reshape(src.shape[0], src.shape[1], -1)  # pragma: no cover
    dst[..., 3] = 255  # pragma: no cover


def _to_rgb(src: NDArray[np.uint8], dst: NDArray[np.uint8]) -> None:
    if cv2 is not None:
        cv2.cvtColor(src, cv2.COLOR_RGBA2RGB, dst=dst)
        return
    np.copyto(dst, src[..., :3])  # pragma: no cover
