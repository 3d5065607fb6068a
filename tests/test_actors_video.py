"""TestPattern: pixel values, frame counts, clock metadata, burn-in, speed, supervision."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streamlib import Supervisor, VideoFrame
from streamlib.actors.video import PATTERNS, SMPTE_COLORS, TestPattern, smpte_bars
from streamlib.testing import ManualClock, Probe


def test_smpte_bars_pixel_values() -> None:
    w, h = 700, 480
    img = smpte_bars(w, h)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    top = ["gray", "yellow", "cyan", "green", "magenta", "red", "blue"]
    for i, name in enumerate(top):
        x = int((i + 0.5) * w / 7)
        assert tuple(img[h // 3, x]) == SMPTE_COLORS[name], name
    assert tuple(img[h // 3, 50]) == (191, 191, 191)
    assert tuple(img[h // 3, 150]) == (191, 191, 0)
    # castellations (between 2/3 and 3/4 of the height): blue, black, magenta, ...
    y_mid = int(h * 0.71)
    assert tuple(img[y_mid, 50]) == (0, 0, 191)
    assert tuple(img[y_mid, 150]) == (0, 0, 0)
    assert tuple(img[y_mid, 250]) == (191, 0, 191)
    # bottom row: -I, white, +Q, black (each 5/28 of the width), then PLUGE
    y_low = int(h * 0.9)
    assert tuple(img[y_low, 60]) == SMPTE_COLORS["minus_i"]
    assert tuple(img[y_low, 185]) == (255, 255, 255)
    assert tuple(img[y_low, 310]) == SMPTE_COLORS["plus_q"]
    assert tuple(img[y_low, 435]) == (0, 0, 0)
    assert tuple(img[y_low, int(w * (20 + 4 / 3 * 2.5) / 28)]) == SMPTE_COLORS["pluge_plus"]


async def test_frames_n_then_end_of_stream_with_metadata() -> None:
    tp = TestPattern("smpte_bars", 64, 48, fps=200, frames=7)
    probe = Probe(VideoFrame)
    tp >> probe
    await asyncio.wait_for(probe.join(), 5)  # the source ends, the probe follows: end of stream
    frames = probe.messages
    assert len(frames) == 7
    assert all(f.data.shape == (48, 64, 3) and f.data.dtype == np.uint8 for f in frames)
    numbers = [f.frame_number for f in frames]
    stamps = [f.timestamp for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == 7
    assert stamps == sorted(stamps)
    assert {f.clock_source_id for f in frames} == {tp.clock.clock_id}  # type: ignore[union-attr]
    assert all(f.clock_rate == 200 for f in frames)
    assert tp.stats()["outputs"]["video"]["sent"] == 7


async def test_static_patterns_are_shared_read_only_arrays() -> None:
    for pattern in ("smpte_bars", "gradient", "checkerboard"):
        tp = TestPattern(pattern, 32, 24, fps=300, frames=3)  # type: ignore[arg-type]
        probe = Probe(VideoFrame)
        tp >> probe
        await probe.join()
        a, b = probe.messages[0].data, probe.messages[1].data
        assert a is b and not a.flags.writeable
    grad = TestPattern("gradient", 256, 256).render(0)
    assert grad[0, 0, 0] == 0 and grad[0, 255, 0] == 255 and grad[255, 0, 1] == 255 and grad[10, 10, 2] == 128
    board = TestPattern("checkerboard", 64, 64, square=8).render(0)
    assert board[0, 0, 0] == 235 and board[0, 8, 0] == 16 and board[8, 8, 0] == 235


async def test_moving_box_moves_and_noise_varies() -> None:
    tp = TestPattern("moving_box", 160, 120)
    f0, f1 = tp.render(0), tp.render(10)
    assert f0[0, 0, 0] == 255 and f0[f0.shape[0] - 1, 0, 0] == 40  # box starts top-left on grey
    assert not np.array_equal(f0, f1)
    assert (f1 == 255).all(axis=2).sum() == tp._box**2  # exactly one box of white pixels
    noise = TestPattern("noise", 160, 120)
    n0, n1 = noise.render(0), noise.render(1)
    assert n0.shape == (120, 160, 3) and not np.array_equal(n0, n1)
    assert 100 < n0.mean() < 155  # uniform bytes
    await tp.stop()
    await noise.stop()


async def test_manual_clock_drives_frame_numbers() -> None:
    clock = ManualClock(fps=25)
    tp = TestPattern("gradient", 16, 16, clock=clock)
    probe = Probe(VideoFrame)
    tp >> probe
    await clock.step(3)
    await probe.wait_for(3)
    assert [f.frame_number for f in probe.messages] == [0, 1, 2]
    assert [f.timestamp for f in probe.messages] == pytest.approx([0, 0.04, 0.08])
    await tp.stop()


async def test_burn_in_marks_only_the_corner() -> None:
    clock = ManualClock(fps=30)
    tp = TestPattern("smpte_bars", 640, 360, burn_in=True, clock=clock)
    probe = Probe(VideoFrame)
    tp >> probe
    await clock.step(2)
    await probe.wait_for(2)
    bars = smpte_bars(640, 360)
    a, b = probe.messages[0].data, probe.messages[1].data
    assert not np.array_equal(a[:40, :300], bars[:40, :300])  # text box drawn top-left
    np.testing.assert_array_equal(a[100:], bars[100:])  # rest untouched
    assert not np.array_equal(a[:40, :300], b[:40, :300])  # the frame number changes
    assert a.flags.writeable  # a fresh copy, not the shared pattern
    await tp.stop()


async def test_not_realtime_is_fast_with_synthetic_timeline() -> None:
    tp = TestPattern("smpte_bars", 32, 24, fps=30, frames=90, realtime=False)
    probe = Probe(VideoFrame, maxsize=1000, overflow="block")
    tp >> probe
    start = time.monotonic()
    await asyncio.wait_for(probe.join(), 10)
    assert time.monotonic() - start < 2.0  # 3 s of media, produced much faster than realtime
    frames = probe.messages
    assert [f.frame_number for f in frames] == list(range(90))
    assert np.allclose(np.diff([f.timestamp for f in frames]), 1 / 30)
    assert all(f.clock_rate == 30 for f in frames)


@pytest.mark.parametrize("pattern", PATTERNS)
async def test_1080p_frame_costs_well_under_5ms(pattern: str) -> None:
    tp = TestPattern(pattern, 1920, 1080, burn_in=True)  # type: ignore[arg-type]
    tp.frame_data(0, 0.0)  # warm up
    times = []
    for i in range(30):  # what process() computes per frame: the pattern plus the burn-in
        start = time.perf_counter()
        tp.frame_data(i, i / 30)
        times.append(time.perf_counter() - start)
    await tp.stop()
    median = sorted(times)[len(times) // 2]  # the median: the test machine is shared, outliers are its noise
    assert median < 0.005, f"{pattern}: {median * 1000:.2f} ms per 1080p frame with burn-in"


def test_bad_arguments() -> None:
    from streamlib import ActorInitError

    with pytest.raises(ActorInitError, match="unknown pattern"):
        TestPattern("plaid")  # type: ignore[arg-type]
    with pytest.raises(ActorInitError, match="fps"):
        TestPattern(fps=0)


async def test_restarted_by_supervisor_keeps_wiring() -> None:
    sup = Supervisor(max_restarts=5)
    tp = sup.spawn(TestPattern, "gradient", 16, 16, fps=200, frames=3)
    probe = Probe(VideoFrame)
    tp >> probe
    # "permanent" (the default) restarts a child that stops by itself: each run sends 3 frames
    await probe.wait_for(6, timeout=5)
    assert sup.children[0].restarts >= 1
    await sup.stop()
