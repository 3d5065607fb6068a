"""OpenCV filters (Resize, ColorConvert, Blur), the lossless BufferActor, and a filter that
crashes under a supervisor."""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
import numpy as np
import pytest

from streamlib import (
    Actor,
    ActorInitError,
    DataMessage,
    LifecycleState,
    StreamOutput,
    Supervisor,
    TimedTick,
    VideoFrame,
)
from streamlib.actors.buffer import BufferActor
from streamlib.actors.filters import Blur, ColorConvert, Resize
from streamlib.actors.video import TestPattern
from streamlib.testing import Feeder, Probe

rng = np.random.default_rng(3)


async def run_filter(actor: Actor, *frames: VideoFrame) -> list[VideoFrame]:
    feed, probe = Feeder(VideoFrame), Probe(VideoFrame)
    feed >> actor >> probe
    for frame in frames:
        await feed.send(frame)
    await probe.wait_for(len(frames))
    await feed.end()
    await asyncio.wait_for(actor.join(), 5)  # end of stream reached the filter
    return probe.messages


def frame(data: np.ndarray, n: int = 0) -> VideoFrame:
    return VideoFrame(data, timestamp=5.0 + n, frame_number=n, clock_source_id="c", clock_rate=25.0)


async def test_resize_sizes_and_metadata() -> None:
    img = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    (out,) = await run_filter(Resize(width=40), frame(img, 3))
    assert out.data.shape == (20, 40, 3)  # aspect kept
    assert (out.frame_number, out.timestamp, out.clock_source_id, out.clock_rate) == (3, 8.0, "c", 25.0)
    np.testing.assert_array_equal(out.data, cv2.resize(img, (40, 20), interpolation=cv2.INTER_LINEAR))
    (out,) = await run_filter(Resize(scale=0.5, interpolation="nearest"), frame(img))
    np.testing.assert_array_equal(out.data, img[::2, ::2])
    assert Resize(height=10).target_size(80, 40) == (20, 10)
    assert Resize(30, 7).target_size(80, 40) == (30, 7)
    with pytest.raises(ActorInitError):
        Resize()


async def test_color_conversions() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200  # red
    bgr, gray, rgba = await asyncio.gather(
        run_filter(ColorConvert("RGB2BGR"), frame(img)),
        run_filter(ColorConvert("RGB->GRAY"), frame(img)),
        run_filter(ColorConvert("rgb_to_rgba"), frame(img)),
    )
    assert tuple(bgr[0].data[0, 0]) == (0, 0, 200)
    assert gray[0].data.shape == (4, 4) and gray[0].data[0, 0] == round(0.299 * 200)
    assert rgba[0].data.shape == (4, 4, 4) and tuple(rgba[0].data[0, 0]) == (200, 0, 0, 255)
    assert img[0, 0, 0] == 200  # input untouched
    with pytest.raises(ActorInitError, match="unknown conversion"):
        ColorConvert("RGB2CMYK")


async def test_blur_matches_opencv_and_smooths() -> None:
    img = np.zeros((21, 21, 3), np.uint8)
    img[10, 10] = 255
    (out,) = await run_filter(Blur(ksize=7, sigma=1.5), frame(img))
    np.testing.assert_array_equal(out.data, cv2.GaussianBlur(img, (7, 7), 1.5))
    assert out.data[10, 10, 0] < 255 and out.data[10, 12, 0] > 0
    with pytest.raises(ActorInitError, match="odd"):
        Blur(ksize=4)


async def test_filters_chain_on_a_test_pattern_until_end_of_stream() -> None:
    src = TestPattern("gradient", 64, 32, fps=200, frames=5, realtime=False)  # lossless: every frame
    probe = Probe(VideoFrame)
    lossless = {"overflow": "block"}
    src >> Resize(scale=0.5, **lossless) >> Blur(3, **lossless) >> ColorConvert("RGB2BGR", **lossless) >> probe
    await asyncio.wait_for(probe.join(), 5)
    assert len(probe.messages) == 5 and probe.messages[0].data.shape == (16, 32, 3)


class Producer(Actor):
    """Sends 0..n-1 as fast as downstream takes them."""

    default_fps = float("inf")

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.n, self.i = n, 0
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick: TimedTick) -> None:
        await self.outputs["out"].send(DataMessage.at(tick, data=self.i))
        self.i += 1
        if self.i >= self.n:
            self.stop()


async def test_buffer_actor_feeds_a_slow_consumer_losslessly() -> None:
    producer = Producer(60)
    buffer = BufferActor(capacity=20)
    slow = Probe(DataMessage, maxsize=2, overflow="block")

    original = slow.process

    async def slow_process(tick: TimedTick) -> None:
        await asyncio.sleep(0.002)  # a slow consumer
        await original(tick)

    slow.process = slow_process  # type: ignore[method-assign]
    producer >> buffer >> slow
    await asyncio.wait_for(slow.join(), 10)
    assert [m.data for m in slow.messages] == list(range(60))  # all of them, in order
    stats = buffer.stats()
    assert stats["inputs"]["in"]["dropped"] == 0 and slow.dropped == 0
    assert buffer.forwarded == 60 and 1 < buffer.high_water <= 20  # it did buffer


async def test_buffer_actor_drop_oldest_option() -> None:
    buffer = BufferActor(capacity=3, overflow="drop_oldest")
    assert buffer.inputs["in"].mailbox.maxsize == 3 and buffer.inputs["in"].mailbox.overflow == "drop_oldest"
    await buffer.stop()
    with pytest.raises(ActorInitError):
        BufferActor(capacity=0)


class Crashy(Blur):
    """A blur that crashes on every 4th frame it sees."""

    seen = 0

    def apply(self, data: np.ndarray) -> np.ndarray:
        Crashy.seen += 1
        if Crashy.seen % 4 == 0:
            raise RuntimeError(f"crash #{Crashy.seen // 4}")
        return super().apply(data)


async def test_crashing_filter_is_restarted_and_the_pipeline_survives() -> None:
    sup = Supervisor(max_restarts=10, within=5)
    src = TestPattern("checkerboard", 32, 32, fps=100, frames=12)
    blur = sup.spawn(Crashy, 3, restart="permanent", overflow="block", maxsize=4)  # lossless but for crashes
    probe = Probe(VideoFrame)
    src >> blur >> probe
    await asyncio.wait_for(src.join(), 5)
    await asyncio.sleep(0.2)
    restarts = sup.children[0].restarts
    assert restarts == 3  # frames 4, 8 and 12 crashed it
    assert len(probe.messages) == 12 - 3  # every other frame went through the restarted instances
    assert sup.children[0].inputs["video"].lost == 3  # the frames in hand at each crash
    await sup.stop()


async def test_a_frame_opencv_cannot_take_fails_the_filter_naming_the_frame() -> None:
    feeder, convert = Feeder(VideoFrame), ColorConvert("rgb2gray")
    feeder >> convert
    await feeder.send(VideoFrame(np.zeros((8, 8, 2), np.uint8), frame_number=4))
    assert await asyncio.wait_for(convert.join(), 5) is LifecycleState.FAILED
    message = str(convert.failure)
    assert message.startswith(f"{convert.path}: cannot process video frame 4 of shape (8, 8, 2)")
    assert "channels" in message
    await feeder.stop()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(64, np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
async def test_a_frame_that_is_not_an_image_fails_resize_naming_actor_port_and_shape(bad: np.ndarray) -> None:
    feeder, resize = Feeder(VideoFrame), Resize(width=4)
    feeder >> resize
    await feeder.send(VideoFrame(bad, frame_number=2))
    assert await asyncio.wait_for(resize.join(), 5) is LifecycleState.FAILED
    message = str(resize.failure)
    assert message.startswith(f"{resize.path}: input 'video' got frame 2 of shape {bad.shape}")
    assert "Resize takes images" in message
    await feeder.stop()
