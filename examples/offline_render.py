"""A plain script (no asyncio) that renders a finite clip offline and waits for it in one line.

    python examples/offline_render.py                 # 3 s into ./render.mp4
    python examples/offline_render.py --seconds 10 --out clip.mp4

A test pattern and two tones, mixed by timestamp, are written as fast as the encoder goes
(``realtime=False`` sources into blocking, lossless inputs). The MP4 is fragmented, as
FileSink writes by default, so even ``kill -9`` in the middle leaves a playable file of
what was written so far; ``streamlib.wait(sink)`` keeps the script alive until the sink has
finalized it (``await streamlib.wait(sink)`` in a coroutine or a notebook).
"""

from __future__ import annotations

import argparse
import time

import av

import streamlib
from streamlib.actors import AudioGenerator, AudioMixer, FileSink, TestPattern


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", default="render.mp4")
    args = parser.parse_args()

    start = time.monotonic()
    # The sink writes the file's header once it has seen what each stream carries: it must wait
    # for the video, which is wired after the audio may already flow (expect), and offline the
    # audio can be done before a busy machine draws the first frame (start_wait).
    sink = FileSink(args.out, lossless=True, expect=("video", "audio"), start_wait=30.0)
    mixer = AudioMixer(2, gains=[0.6, 0.4], lossless=True)
    AudioGenerator(440.0, realtime=False, duration=args.seconds) >> mixer.inputs["in0"]
    AudioGenerator(660.0, realtime=False, duration=args.seconds) >> mixer.inputs["in1"]
    mixer >> sink.inputs["audio"]
    TestPattern("smpte_bars", 640, 360, 30, burn_in=True, frames=round(args.seconds * 30), realtime=False) >> sink
    (state,) = streamlib.wait(sink, timeout=120)

    with av.open(args.out) as container:
        frames = sum(1 for _ in container.decode(video=0))
    print(f"{state.value}: wrote {args.out} ({frames} frames, fragmented MP4) in {time.monotonic() - start:.2f} s")


if __name__ == "__main__":
    main()
