"""Mux a moving test picture and a sine tone into one MP4, then read it back with PyAV.

    python examples/audio_video_mux.py                  # 3 s into a temporary directory
    python examples/audio_video_mux.py --out out --seconds 10 --realtime

Two independent sources -- a video actor and an ``AudioGenerator`` -- feed the two inputs
of one ``FileSink``, which places both streams on the timeline from the messages' own
timestamps. By default everything runs as fast as the encoder allows (``realtime=False``
sources into ``lossless=True`` blocking inputs); ``--realtime`` paces it like a live
capture instead.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamlib import Actor, StreamOutput, TimedTick, VideoFrame
from streamlib.actors.audio import AudioGenerator
from streamlib.actors.files import FileSink


class MovingBar(Actor):
    """A white bar sweeping over a colour gradient: ``count`` frames stamped ``t0 + n / fps``."""

    def __init__(
        self, count: int, fps: float = 30.0, size: tuple[int, int] = (360, 640), realtime: bool = False, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.count, self.fps, self.realtime = count, fps, realtime
        h, w = size
        self.background = np.zeros((h, w, 3), np.uint8)
        self.background[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        self.background[..., 2] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
        self.n = 0
        self.t0 = time.monotonic()
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    @property  # type: ignore[override]
    def default_fps(self) -> float:
        return self.fps if self.realtime else math.inf

    async def process(self, tick: TimedTick) -> None:
        if self.n >= self.count:
            self.stop()  # end of stream: the sink finalizes the file
            return
        img = self.background.copy()
        x = int(self.n * 8 % img.shape[1])
        img[:, x : x + 16] = 255
        await self.outputs["video"].send(
            VideoFrame(img, timestamp=self.t0 + self.n / self.fps, frame_number=self.n, clock_rate=self.fps)
        )
        self.n += 1


async def main(out_dir: Path, seconds: float, realtime: bool) -> Path:
    path = out_dir / "audio_video.mp4"
    sink = FileSink(path, codec="h264", crf=23, lossless=not realtime)
    MovingBar(round(seconds * 30), realtime=realtime) >> sink.inputs["video"]
    AudioGenerator(440.0, sample_rate=48000, channels=2, realtime=realtime, duration=seconds) >> sink.inputs["audio"]
    start = time.monotonic()
    state = await sink.join()
    print(
        f"wrote {path} in {time.monotonic() - start:.2f} s ({state.name}): "
        f"{sink.frames_written} frames, {sink.audio_samples_written} audio samples"
    )
    return path


def describe(path: Path) -> None:
    """Decode the file back and print what is in it (streams, durations, the tone's pitch)."""
    import av

    with av.open(str(path)) as container:
        for stream in container.streams:
            duration = float(stream.duration * stream.time_base) if stream.duration else float("nan")
            print(f"  {stream.type}: {stream.codec_context.name}, {duration:.2f} s")
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    spectrum = np.abs(np.fft.rfft(samples))
    print(f"  dominant audio frequency: {np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()]:.1f} Hz")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a new temporary one)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--realtime", action="store_true", help="pace the sources like live capture")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="streamlib-mux-"))
    out.mkdir(parents=True, exist_ok=True)
    describe(asyncio.run(main(out, args.seconds, args.realtime)))
