"""Drawing: drawn pixel colours, code strings and callables, variables, overlay mode, error
recovery with the user's line number, hot code swap, syntax errors."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skia  # type: ignore[import-not-found]

from streamlib import ActorInitError, LifecycleState, Supervisor, TimedTick, VideoFrame
from streamlib.actors.draw import DrawContext, Drawing, DrawingError
from streamlib.actors.video import TestPattern, smpte_bars
from streamlib.testing import Feeder, ManualClock, Probe

RED_DOT = """
paint.setColor(skia.ColorRED)
canvas.drawCircle(ctx.width / 2, ctx.height / 2, 10, paint)
"""


async def drawn(code: Any, n: int = 1, **kw: Any) -> tuple[Drawing, ManualClock, Probe]:
    clock = ManualClock(fps=30)
    drawing = Drawing(code, 64, 48, clock=clock, **kw)
    probe = Probe(VideoFrame)
    drawing >> probe
    await clock.step(n)
    await probe.wait_for(n)
    return drawing, clock, probe


async def test_code_string_draws_a_layer() -> None:
    drawing, _, probe = await drawn(RED_DOT)
    layer = probe.messages[0].data
    assert layer.shape == (48, 64, 4) and layer.dtype == np.uint8
    assert tuple(layer[24, 32]) == (255, 0, 0, 255)  # inside the dot: opaque red
    assert tuple(layer[0, 0]) == (0, 0, 0, 0)  # outside: transparent
    rim = layer[(layer[..., 3] > 0) & (layer[..., 3] < 255)]  # anti-aliased edge: partial alpha ...
    assert len(rim) > 0 and (rim[:, 0] == 255).all()  # ... with straight (unpremultiplied) colour
    assert drawing.last_error is None and drawing.frames_drawn == 1
    await drawing.stop()


async def test_the_seed_example_animates_with_time() -> None:
    code = "canvas.drawCircle(ctx.width/2, ctx.height/2, 5 + 4*math.sin(ctx.time * 20), paint)"
    drawing, _, probe = await drawn(code, n=3)
    areas = [int((f.data[..., 3] > 0).sum()) for f in probe.messages]
    assert len(set(areas)) == 3  # the radius changes frame to frame
    assert [f.frame_number for f in probe.messages] == [0, 1, 2]
    await drawing.stop()


async def test_callable_with_variables_updated_at_runtime() -> None:
    seen: list[DrawContext] = []

    def draw(canvas: Any, ctx: DrawContext) -> None:
        import skia  # type: ignore[import-not-found]

        seen.append(ctx)
        canvas.drawRect(skia.Rect(0, 0, ctx.width, ctx.height), skia.Paint(Color=ctx.color))

    import skia  # type: ignore[import-not-found]

    drawing, clock, probe = await drawn(draw, variables={"color": skia.ColorGREEN})
    assert tuple(probe.messages[0].data[10, 10]) == (0, 255, 0, 255)
    drawing.variables["color"] = skia.ColorBLUE
    await clock.step()
    await probe.wait_for(2)
    assert tuple(probe.messages[1].data[10, 10]) == (0, 0, 255, 255)
    assert seen[1].time == pytest.approx(1 / 30) and seen[1].frame_number == 1
    assert seen[0].width == 64 and seen[0].height == 48 and seen[0].frame is None
    with pytest.raises(AttributeError, match="color"):
        _ = seen[0].colour
    await drawing.stop()


async def test_module_defining_draw_and_variables_as_names() -> None:
    code = """
    SIZE = 6

    def draw(canvas, ctx):
        canvas.drawRect(skia.Rect(0, 0, SIZE, SIZE), skia.Paint(Color=skia.Color(*ctx.rgb)))
    """
    drawing, _, probe = await drawn(code, variables={"rgb": (10, 20, 30)})
    layer = probe.messages[0].data
    assert tuple(layer[2, 2]) == (10, 20, 30, 255) and layer[10, 10, 3] == 0
    drawing.set_code("canvas.drawRect(skia.Rect(0, 0, 4, 4), skia.Paint(Color=skia.Color(*rgb)))")
    await drawing.stop()


async def test_draws_over_incoming_video_keeping_layout_and_metadata() -> None:
    source = TestPattern("smpte_bars", 140, 60, fps=100, frames=3)
    drawing = Drawing("canvas.drawRect(skia.Rect(0, 0, 10, 10), paint)")
    probe = Probe(VideoFrame)
    source >> drawing >> probe
    await probe.join()
    assert len(probe.messages) == 3
    bars = smpte_bars(140, 60)
    for frame in probe.messages:
        assert frame.data.shape == (60, 140, 3)  # RGB in, RGB out
        assert tuple(frame.data[5, 5]) == (255, 255, 255)  # the white square
        np.testing.assert_array_equal(frame.data[20:], bars[20:])  # the rest is the video
        assert frame.clock_source_id == source.clock.clock_id  # type: ignore[union-attr]
    assert [f.frame_number for f in probe.messages] == sorted(f.frame_number for f in probe.messages)


async def test_only_the_drawn_part_of_an_rgb_frame_changes() -> None:
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    drawing = Drawing("canvas.drawRect(skia.Rect(30, 20, 50, 30), skia.Paint(Color=skia.Color(255, 0, 0, 128)))")
    feed >> drawing >> probe
    rgb = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    grey = rgb[..., 0].copy()
    await feed.send(VideoFrame(rgb, 1.0, 1, "x", 30.0))
    await feed.send(VideoFrame(grey, 2.0, 2, "x", 30.0))
    await probe.wait_for(2)
    for out, expect in ((probe.messages[0].data, rgb), (probe.messages[1].data, np.repeat(grey[..., None], 3, 2))):
        assert out.shape == (48, 64, 3)
        outside = np.ones((48, 64), bool)
        outside[20:30, 30:50] = False
        np.testing.assert_array_equal(out[outside], expect[outside])  # above, below, left, right: untouched
        blended = expect[20:30, 30:50].astype(int) * 127 // 255 + np.array([128, 0, 0])
        assert np.abs(out[20:30, 30:50].astype(int) - blended).max() <= 2  # half-transparent red over the video
    await drawing.stop()


async def test_draws_over_rgba_frames() -> None:
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    drawing = Drawing(RED_DOT)
    feed >> drawing >> probe
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 255
    await feed.send(VideoFrame(rgba, 1.0, 7, "x", 30.0))
    await probe.wait_for(1)
    out = probe.messages[0]
    assert out.frame_number == 7 and out.data.shape == (48, 64, 4)
    assert tuple(out.data[24, 32]) == (255, 0, 0, 255) and tuple(out.data[0, 0]) == (0, 255, 0, 255)
    assert rgba[24, 32, 0] == 0  # the input was not modified
    await drawing.stop()


async def test_runtime_error_reports_line_and_last_good_output_keeps_flowing(caplog: Any) -> None:
    drawing, clock, probe = await drawn(RED_DOT)
    bad = "paint.setColor(skia.ColorBLUE)\ncanvas.drawCircle(0, 0, 30, paint)\nx = ctx.missing_variable\n"
    drawing.set_code(bad)
    with caplog.at_level(logging.WARNING, logger="streamlib.draw"):
        await clock.step(3)
        await probe.wait_for(4)
    error = drawing.last_error
    assert isinstance(error, DrawingError)
    assert error.kind == "runtime" and error.exception == "AttributeError" and error.lineno == 3
    assert "missing_variable" in error.line and "line 3" in str(error)
    assert drawing.error_count == 3
    assert sum("drawing code failed" in r.message for r in caplog.records) == 1  # logged once, not per frame
    for frame in probe.messages[1:]:  # still the last good drawing (the red dot), not a half-drawn blue one
        assert tuple(frame.data[24, 32]) == (255, 0, 0, 255) and frame.data[0, 0, 3] == 0
    assert drawing.stats()["state"] == "running"
    drawing.set_code(RED_DOT.replace("ColorRED", "ColorYELLOW"))  # fixed code takes over
    await clock.step()
    await probe.wait_for(5)
    assert tuple(probe.messages[4].data[24, 32]) == (255, 255, 0, 255)
    await drawing.stop()


async def test_error_in_a_callable_names_its_line_in_this_file() -> None:
    def draw(canvas: Any, ctx: DrawContext) -> None:
        raise ValueError("nope")

    line = inspect.getsourcelines(draw)[1] + 1
    drawing, _, probe = await drawn(draw)
    assert drawing.last_error is not None and drawing.last_error.lineno == line
    assert drawing.last_error.source == __file__
    assert probe.messages[0].data[..., 3].max() == 0  # no good drawing yet: an empty layer
    await drawing.stop()


async def test_syntax_error_is_rejected_and_old_code_keeps_running() -> None:
    drawing, clock, probe = await drawn(RED_DOT)
    with pytest.raises(SyntaxError) as info:
        drawing.set_code("canvas.drawCircle(1, 1, 1, paint)\nif True\n    pass\n")
    assert info.value.lineno == 2
    error = drawing.last_error
    assert error is not None and error.kind == "syntax" and error.lineno == 2 and "if True" in error.line
    await clock.step()
    await probe.wait_for(2)
    assert tuple(probe.messages[1].data[24, 32]) == (255, 0, 0, 255)  # the old code still draws
    assert drawing.code == RED_DOT
    await drawing.stop()


def test_syntax_error_at_construction() -> None:
    with pytest.raises(ActorInitError, match="SyntaxError"):
        Drawing("canvas.drawCircle(1, 1,")


async def test_a_restart_keeps_the_code_and_variables_set_at_runtime() -> None:
    sup = Supervisor(max_restarts=3)
    drawing = sup.spawn(Drawing, "canvas.drawRect(skia.Rect(0, 0, 4, 4), paint)")
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    feed >> drawing >> probe
    green = np.zeros((48, 64, 3), np.uint8)
    green[..., 1] = 255
    drawing.set_code("paint.setColor(colour)\ncanvas.drawCircle(ctx.width / 2, ctx.height / 2, 10, paint)")
    drawing.set_variables(colour=skia.ColorBLUE)

    async def crash(tick: TimedTick) -> None:
        raise RuntimeError("boom")

    drawing.process = crash  # type: ignore[method-assign]
    for n in range(100):
        await feed.send(VideoFrame(green, n / 30, n, "x", 30.0))
        await asyncio.sleep(0.02)
        if probe.messages:
            break
    restarted = sup.children[0]
    assert restarted is not drawing and restarted.restarts == 1
    assert tuple(probe.messages[-1].data[24, 32]) == (0, 0, 255)  # the runtime code, with its variable
    assert tuple(probe.messages[-1].data[0, 0]) == (0, 255, 0)  # not the constructor's white square
    for actor in (feed, sup, probe):
        await actor.stop()


async def test_a_frame_of_the_wrong_type_fails_the_drawing_clearly() -> None:
    feed = Feeder(VideoFrame)
    drawing = Drawing(RED_DOT)
    feed >> drawing
    await feed.send(VideoFrame(np.zeros((48, 64, 3), np.float32), 1.0, 3, "x", 30.0))
    assert await asyncio.wait_for(drawing.join(), 5) is LifecycleState.FAILED
    assert drawing.path in str(drawing.failure) and "float32" in str(drawing.failure)
    await feed.stop()


async def test_on_error_fires_once_per_distinct_error_with_a_count() -> None:
    seen: list[DrawingError] = []
    drawing, clock, probe = await drawn(RED_DOT, on_error=seen.append)
    drawing.set_code("x = ctx.missing_variable\n")  # fails on every frame
    await clock.step(5)
    await probe.wait_for(6)
    assert drawing.error_count == 5 and len(seen) == 1 and seen[0].exception == "AttributeError"
    drawing.set_code("x = 1 / 0\n")  # a different error: reported once more
    await clock.step(3)
    await probe.wait_for(9)
    assert [e.exception for e in seen] == ["AttributeError", "ZeroDivisionError"]
    assert [(e.exception, n) for e, n in drawing.errors] == [("AttributeError", 5), ("ZeroDivisionError", 3)]
    assert drawing.errors[0][0] is seen[0]
    await drawing.stop()


def test_fontconfig_reset_dirs_warning_is_dropped_and_other_warnings_kept(tmp_path: Path) -> None:
    """skia's bundled fontconfig warns about Debian 12's reset-dirs element on every run; a
    configuration that is really wrong must still be reported."""
    import subprocess
    import sys

    config = tmp_path / "fonts.conf"
    config.write_text(
        '<?xml version="1.0"?>\n<fontconfig>\n<include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        "<bogus-element/>\n</fontconfig>\n"
    )
    env = {**os.environ, "FONTCONFIG_FILE": str(config)}
    plain = "import skia; skia.Typeface('sans-serif')"
    ours = "import streamlib.actors.draw"
    run = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        for code in (plain, ours)
    ]
    assert 'unknown element "bogus-element"' in run[0].stderr  # what fontconfig says without us
    assert 'unknown element "bogus-element"' in run[1].stderr  # a real problem still shows
    if 'unknown element "reset-dirs"' not in run[0].stderr:
        pytest.skip("this system's fontconfig files do not trigger the reset-dirs warning")
    assert "reset-dirs" not in run[1].stderr, run[1].stderr
