"""Compositor: blend results against a float64 numpy reference, layers added/removed/moved
while running, timestamp sync of layers from one clock, buffer reuse, supervision."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from streamlib import ActorInitError, LifecycleState, Supervisor, TimedTick, VideoFrame
from streamlib.actors.blend import over, words
from streamlib.actors.buffer import FramePool
from streamlib.actors.compose import Compositor, Layer, composite
from streamlib.testing import Feeder, ManualClock, Probe

rng = np.random.default_rng(7)


def reference(size: tuple[int, int], layers: list[tuple[Layer, np.ndarray]], background: Any = (0, 0, 0)) -> Any:
    """The obvious float64 implementation: per layer, clip, then out = src*a + out*(1-a)."""
    w, h = size
    out = np.empty((h, w, 3), np.float64)
    out[...] = background
    for layer, img in layers:
        ih, iw = img.shape[:2]
        x0, y0, x1, y1 = max(layer.x, 0), max(layer.y, 0), min(layer.x + iw, w), min(layer.y + ih, h)
        if x0 >= x1 or y0 >= y1:
            continue
        src = img[y0 - layer.y : y1 - layer.y, x0 - layer.x : x1 - layer.x].astype(np.float64)
        alpha = src[..., 3:4] / 255 if img.shape[2] == 4 else np.ones((*src.shape[:2], 1))
        alpha = alpha * layer.opacity
        out[y0:y1, x0:x1] = src[..., :3] * alpha + out[y0:y1, x0:x1] * (1 - alpha)
    return out


def rgba(h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 4), dtype=np.uint8)


def opaque_canvas(h: int, w: int) -> np.ndarray:
    canvas = rgba(h, w)
    canvas[..., 3] = 255
    return canvas


@pytest.mark.parametrize("opacity", [1.0, 0.7, 0.25])
def test_blend_kernel_matches_float_reference(opacity: float) -> None:
    canvas = opaque_canvas(37, 53)
    src = rgba(37, 53)
    src[0, :5, 3] = (0, 255, 1, 254, 128)
    src[5] = 0  # a fully transparent row (skipped)
    src[6, :, 3] = 255  # a fully opaque row (copied)
    before = canvas.copy()
    expected = reference((53, 37), [(Layer("d"), before[..., :3]), (Layer("s", opacity=opacity), src)])
    over(words(canvas), words(src), opacity=opacity)
    assert np.abs(canvas[..., :3] - expected).max() <= (1.0 if opacity == 1.0 else 1.5)  # opacity rounds once more
    assert (canvas[..., 3] == 255).all()  # the canvas stays opaque
    assert tuple(canvas[0, 0]) == tuple(before[0, 0]) and np.array_equal(canvas[5], before[5])  # alpha 0: untouched
    if opacity == 1.0:
        assert tuple(canvas[0, 1, :3]) == tuple(src[0, 1, :3])  # alpha 255: exactly the source
        assert np.array_equal(canvas[6, :, :3], src[6, :, :3])


def test_blend_kernel_places_and_clips_the_source() -> None:
    canvas = opaque_canvas(40, 60)
    before = canvas.copy()
    src = rgba(30, 20)
    over(words(canvas), words(src), x=50, y=-5)  # partly off the right and top edges
    visible = reference((10, 25), [(Layer("d"), before[:25, 50:, :3]), (Layer("s"), src[5:, :10])])
    assert np.abs(canvas[:25, 50:, :3] - visible).max() <= 1.0
    assert np.array_equal(canvas[25:], before[25:]) and np.array_equal(canvas[:, :50], before[:, :50])
    over(words(canvas), words(src), x=100, y=0)  # entirely off-canvas: nothing happens
    over(words(canvas), words(src), opacity=0.0)
    assert np.array_equal(canvas[:, :50], before[:, :50])


def test_blend_kernel_over_a_background_colour_never_reads_the_canvas() -> None:
    canvas = opaque_canvas(20, 30)  # garbage: must not show through
    src = rgba(20, 30)
    src[3] = 0  # a transparent row: the background colour
    src[4, :, 3] = 255  # an opaque row: the source
    over(words(canvas), words(src), background=0xFF000000 | (30 << 16) | (20 << 8) | 10)
    flat = np.empty((20, 30, 3), np.uint8)
    flat[...] = (10, 20, 30)
    expected = reference((30, 20), [(Layer("bg"), flat), (Layer("s"), src)])
    assert np.abs(canvas[..., :3] - expected).max() <= 1.0
    assert (canvas[3, :, :3] == (10, 20, 30)).all() and np.array_equal(canvas[4, :, :3], src[4, :, :3])


def test_blend_kernel_rejects_what_it_cannot_blend() -> None:
    canvas = words(opaque_canvas(8, 8))
    with pytest.raises(ValueError, match="uint32"):
        over(canvas, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="C-contiguous"):
        over(canvas, words(rgba(8, 16))[:, ::2])
    with pytest.raises(ValueError, match=r"\(h, w, 4\) uint8"):
        words(np.zeros((8, 8, 3), np.uint8))
    assert words(rgba(8, 16)[:, ::2]).flags.c_contiguous  # a strided image is copied, not refused


def test_composite_matches_reference_with_offsets_scaling_and_opacity() -> None:
    size = (160, 90)
    base = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    sprite = rgba(30, 40)
    sprite[:, :10, 3] = 0  # transparent columns
    sprite[:10, :, 3] = 255  # opaque rows
    half = rgba(90, 160)
    half[..., 3] = 200  # constant alpha everywhere
    layers = [
        (Layer("base"), base),
        (Layer("half", z=1, opacity=0.5), half),
        (Layer("sprite", z=2, x=-10, y=70), sprite),  # clipped left and bottom
        (Layer("rgb", z=3, x=150, y=5, opacity=0.6), base[:20, :20]),  # clipped right
        (Layer("gone", z=4, x=500, y=500), sprite),  # entirely off-canvas
    ]
    out = composite(size, layers, background=(9, 9, 9))
    expected = reference(size, layers, background=(9, 9, 9))
    assert out.shape == (90, 160, 3)
    assert np.abs(out - expected).max() <= 2.5  # three rounded blends stacked


def test_background_shows_where_nothing_covers() -> None:
    out = composite((20, 10), [(Layer("s", x=5, y=5), np.full((2, 2, 3), 200, np.uint8))], background=(1, 2, 3))
    assert tuple(out[0, 0]) == (1, 2, 3) and tuple(out[5, 5]) == (200, 200, 200) and tuple(out[7, 7]) == (1, 2, 3)


def vf(data: np.ndarray, n: int, clock: str = "src", fps: float = 30.0) -> VideoFrame:
    return VideoFrame(data, timestamp=100 + n / fps, frame_number=n, clock_source_id=clock, clock_rate=fps)


async def test_compositor_actor_blends_layers_and_keeps_metadata() -> None:
    comp = Compositor(32, 24, fps=None)
    base_feed, top_feed, probe = Feeder(VideoFrame), Feeder(VideoFrame), Probe(VideoFrame)
    base_feed >> comp.inputs["base"]
    top = np.zeros((10, 10, 4), np.uint8)
    top[..., 0] = 255
    top[..., 3] = 128  # half-transparent red
    top_feed >> comp.add_layer("top", x=4, y=2)
    comp >> probe
    await top_feed.send(vf(top, 0))
    await base_feed.send(vf(np.full((24, 32, 3), 100, np.uint8), 0))
    await probe.wait_for(1)
    await asyncio.sleep(0.05)
    out = probe.messages[-1]
    assert out.frame_number == 0 and out.clock_source_id == "src" and out.timestamp == 100
    assert tuple(out.data[0, 0]) == (100, 100, 100)
    red = out.data[5, 8]
    assert abs(int(red[0]) - round(255 * 128 / 255 + 100 * 127 / 255)) <= 1 and abs(int(red[1]) - 50) <= 1
    assert [layer.name for layer in comp.layers] == ["base", "top"]
    await comp.stop()


async def test_layers_added_moved_and_removed_while_running() -> None:
    clock = ManualClock(fps=30)
    comp = Compositor(40, 30, clock=clock)
    probe = Probe(VideoFrame)
    comp >> probe
    await clock.step()
    await probe.wait_for(1)
    assert (probe.messages[0].data == 0).all()  # nothing connected: background
    feed = Feeder(VideoFrame)
    port = comp.add_layer("white", x=10, y=10, z=5)
    feed >> port
    await feed.send(vf(np.full((5, 5, 3), 255, np.uint8), 0))
    await clock.step()
    await probe.wait_for(2)
    frame = probe.messages[1].data
    assert tuple(frame[12, 12]) == (255, 255, 255) and tuple(frame[0, 0]) == (0, 0, 0)
    comp.update_layer("white", x=0, y=0, opacity=0.5)
    await clock.step()
    await probe.wait_for(3)
    frame = probe.messages[2].data
    assert abs(int(frame[2, 2, 0]) - 128) <= 1 and tuple(frame[12, 12]) == (0, 0, 0)
    comp.remove_layer("white")
    assert "white" not in comp.inputs and not port.connected
    await clock.step()
    await probe.wait_for(4)
    assert (probe.messages[3].data == 0).all()
    with pytest.raises(KeyError):
        comp.remove_layer("white")
    await comp.stop()
    await feed.stop()


async def test_add_layer_from_another_thread() -> None:
    comp = Compositor(8, 8, fps=None)
    port = await asyncio.to_thread(comp.add_layer, "remote", z=3)
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    feed >> port
    comp >> probe
    await feed.send(vf(np.full((8, 8, 3), 77, np.uint8), 0))
    await probe.wait_for(1)
    assert tuple(probe.messages[0].data[4, 4]) == (77, 77, 77)
    await comp.stop()


async def test_layers_of_one_clock_are_matched_by_timestamp() -> None:
    """Two branches of one source: the compositor emits one frame per source frame and
    never mixes frame n of one branch with frame n-1 of the other."""
    comp = Compositor(8, 4, fps=None, base=None, sync_timeout=1.0)
    fast, slow, probe = Feeder(VideoFrame), Feeder(VideoFrame), Probe(VideoFrame)
    fast >> comp.add_layer("fast", z=0)
    left = comp.add_layer("slow", z=1)
    slow >> left
    comp >> probe
    half = np.zeros((4, 4, 3), np.uint8)
    for n in range(5):
        await fast.send(vf(np.full((4, 8, 3), n, np.uint8), n))
        await asyncio.sleep(0.01)  # the other branch is late
        await slow.send(vf(half + 10 * n, n))
    await probe.wait_for(5)
    await asyncio.sleep(0.05)
    frames = probe.messages
    assert [f.frame_number for f in frames] == [0, 1, 2, 3, 4]
    for n, f in enumerate(frames):
        assert f.data[0, 0, 0] == 10 * n and f.data[0, 7, 0] == n  # both layers show frame n
    await comp.stop()


async def test_own_clock_without_inputs_and_output_buffers_are_reused() -> None:
    comp = Compositor(16, 16, fps=200, background=(0, 0, 255))
    probe = Probe(VideoFrame, maxsize=1)
    comp >> probe
    await probe.wait_for(30, timeout=5)
    await comp.stop()
    assert tuple(probe.messages[0].data[3, 3]) == (0, 0, 255)
    # every frame is still referenced by probe.messages, so none was overwritten
    assert all(tuple(f.data[3, 3]) == (0, 0, 255) for f in probe.messages)
    assert len({id(f.data) for f in probe.messages}) == len(probe.messages)


async def test_rgba_output_and_a_single_opaque_layer_passes_through() -> None:
    base = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    sprite = rgba(8, 8)
    rgb = Compositor(32, 24, fps=None)
    assert rgb.render_frames({"base": VideoFrame(base)}) is base  # nothing to blend: no copy at all
    four = Compositor(32, 24, fps=None, channels=4)
    four.add_layer("sprite", z=1, x=4, y=4)
    out = four.render_frames({"base": VideoFrame(base), "sprite": VideoFrame(sprite)})
    assert out is not None and out.shape == (24, 32, 4) and (out[..., 3] == 255).all()
    expected = reference((32, 24), [(Layer("base"), base), (Layer("sprite", x=4, y=4), sprite)])
    assert np.abs(out[..., :3] - expected).max() <= 1.0
    with pytest.raises(ActorInitError, match="channels"):
        Compositor(32, 24, channels=2)
    await rgb.stop()
    await four.stop()


def test_frame_pool_reuses_only_released_arrays() -> None:
    pool = FramePool(4)
    shape = (4, 4, 3)
    held = VideoFrame(pool.get(shape))  # held downstream through a frame
    a = id(held.data)
    view = pool.get(shape)[..., :1]  # held through a numpy view
    b = id(view.base)
    c = pool.get(shape)  # held by this variable
    assert len({a, b, id(c)}) == 3 and pool.allocated == 3
    del held
    assert id(pool.get(shape)) == a  # released: reused
    del view
    assert id(pool.get(shape)) in (a, b)
    assert pool.allocated == 3 and pool.reused == 2


async def test_restart_keeps_runtime_layers() -> None:
    class Flaky(Compositor):
        crashed = False

        async def process(self, tick: TimedTick) -> None:
            if not Flaky.crashed and tick.frame_number == 1:
                Flaky.crashed = True
                raise RuntimeError("boom")
            await super().process(tick)

    sup = Supervisor()
    comp = sup.spawn(Flaky, 8, 8, fps=None)
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    feed >> comp.add_layer("extra", x=4, z=2)
    comp >> probe
    for n in range(3):
        await feed.send(vf(np.full((8, 8, 3), 50 + n, np.uint8), n))
        await asyncio.sleep(0.05)
    await probe.wait_for(2)
    new = sup.children[0]
    assert new is not comp and new.restarts == 1
    assert [(layer.name, layer.x) for layer in new.layers] == [("base", 0), ("extra", 4)]  # type: ignore[attr-defined]
    assert probe.messages[-1].frame_number == 2 and probe.messages[-1].data[0, 5, 0] == 52
    await sup.stop()


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 2), np.uint8)])
async def test_a_frame_of_the_wrong_type_fails_the_compositor_naming_the_layer(bad: np.ndarray) -> None:
    comp = Compositor(10, 10, fps=None)
    feeder = Feeder(VideoFrame)
    feeder >> comp
    await feeder.send(VideoFrame(bad))
    assert await asyncio.wait_for(comp.join(), 5) is LifecycleState.FAILED
    message = str(comp.failure)
    assert comp.path in message and "'base'" in message and str(bad.dtype) in message and "uint8" in message
    await feeder.stop()


async def test_the_first_frame_waits_for_the_base_layer() -> None:
    """A fast picture-in-picture branch delivers before the slow base branch: the first frame
    out still shows the base (issue 17: demo.mp4's frame 0 was black but for the pip)."""
    comp = Compositor(32, 24, fps=None)
    base_feed, pip_feed, probe = Feeder(VideoFrame), Feeder(VideoFrame), Probe(VideoFrame)
    base_feed >> comp.inputs["base"]
    pip_feed >> comp.add_layer("pip", z=1, x=20, y=2)
    comp >> probe
    for n in range(3):
        await pip_feed.send(vf(np.full((6, 8, 3), 200, np.uint8), n))
    await asyncio.sleep(0.3)  # the base branch is slow to start (an overlay compiling its code)
    for n in range(3):
        await base_feed.send(vf(np.full((24, 32, 3), 60, np.uint8), n))
    await probe.wait_for(1)
    first = probe.messages[0].data
    assert tuple(first[0, 0]) == (60, 60, 60) and tuple(first[4, 24]) == (200, 200, 200)
    await comp.stop()


async def test_a_base_that_never_delivers_is_waited_for_only_base_wait(caplog: pytest.LogCaptureFixture) -> None:
    comp = Compositor(16, 8, fps=None, base_wait=0.2)
    base_feed, pip_feed, probe = Feeder(VideoFrame), Feeder(VideoFrame), Probe(VideoFrame)
    base_feed >> comp.inputs["base"]
    pip_feed >> comp.add_layer("pip", z=1)
    comp >> probe
    await pip_feed.send(vf(np.full((4, 4, 3), 200, np.uint8), 0))
    (out,) = await probe.wait_for(1, timeout=5)
    assert tuple(out.data[0, 0]) == (200, 200, 200) and tuple(out.data[7, 15]) == (0, 0, 0)
    assert "layer 'base' sent no frame within 0.2 s" in caplog.text
    await comp.stop()


async def test_read_only_rgba_layers_blend() -> None:
    """Frames are read-only by convention (TestPattern sends read-only arrays): RGBA ones must blend."""
    comp = Compositor(8, 8, fps=None)
    base_feed, top_feed, probe = Feeder(VideoFrame), Feeder(VideoFrame), Probe(VideoFrame)
    base_feed >> comp.inputs["base"]
    top_feed >> comp.add_layer("top", z=1)
    comp >> probe
    top = np.zeros((8, 8, 4), np.uint8)
    top[..., 2] = 255
    top[..., 3] = 255
    top.flags.writeable = False
    await base_feed.send(vf(np.full((8, 8, 3), 10, np.uint8), 0))
    await top_feed.send(vf(top, 0))
    await probe.wait_for(1)
    await asyncio.sleep(0.05)
    assert comp.failure is None
    assert tuple(probe.messages[-1].data[3, 3]) == (0, 0, 255)
    await comp.stop()
