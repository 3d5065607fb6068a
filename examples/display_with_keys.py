"""Show a webcam (or a video file) in a window and print the keys and clicks it receives.

    python examples/display_with_keys.py                   # webcam 0, else a generated 4 s clip
    python examples/display_with_keys.py clip.mp4 --loop   # a file
    python examples/display_with_keys.py 1 --seconds 10    # webcam 1, for 10 s

Press q or Esc (or close the window) to quit; a file or the generated clip also ends by
itself at its end (unless looped), so the example finishes unattended under Xvfb too.
Without a screen (no DISPLAY, e.g. over SSH or in CI) it says so and exits cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from streamlib import Actor, ActorInitError, KeyEvent, MouseEvent, StreamInput, TimedTick
from streamlib.actors.display import Display, screen_available  # OpenCV before PyAV (see actors.display)
from streamlib.actors.files import FileSink, FileSource

try:
    from audio_video_mux import MovingBar
except ImportError:
    from examples.audio_video_mux import MovingBar

QUIT_KEYS = (ord("q"), 27)


class PrintEvents(Actor):
    """Prints every key and mouse event; stops the display on q / Esc."""

    default_fps: ClassVar[float | None] = None

    def __init__(self, display: Display, **kw: Any) -> None:
        super().__init__(**kw)
        self.display = display
        self.inputs["keys"] = StreamInput("keys", KeyEvent, maxsize=64)
        self.inputs["mouse"] = StreamInput("mouse", MouseEvent, maxsize=64)

    async def process(self, tick: TimedTick) -> None:
        while (key := self.inputs["keys"].read_nowait()) is not None:
            printable = chr(key.key) if 32 <= key.key < 127 else f"code {key.key}"
            print(f"key {printable!r} (frame {key.frame_number})", flush=True)
            if key.key in QUIT_KEYS:
                self.display.stop()
        while (click := self.inputs["mouse"].read_nowait()) is not None:
            print(f"mouse button {click.button} at ({click.x}, {click.y})", flush=True)


async def sample_clip() -> Path:
    """A 4 s clip to show when there is no camera and no file."""
    path = Path(tempfile.mkdtemp(prefix="streamlib-display-")) / "sample.mp4"
    sink = FileSink(path, lossless=True)
    MovingBar(120) >> sink
    await sink.join()
    return path


async def open_source(spec: str | None, loop: bool) -> Actor:
    if spec is not None and not spec.isdigit():
        print(f"showing {spec}{' (looped)' if loop else ''}")
        return FileSource(spec, loop=loop, audio=False)
    from streamlib.actors.capture import Camera

    try:
        camera = Camera(int(spec or 0))
        print(f"showing camera {camera.source} at {camera.fps:g} fps ({camera.width}x{camera.height})")
        return camera
    except ActorInitError as exc:
        if spec is not None:
            raise
        print(f"no camera ({exc.__cause__}); showing a generated clip instead")
        return FileSource(await sample_clip(), loop=loop, audio=False)


async def run(spec: str | None, loop: bool = False, seconds: float | None = None) -> int:
    ok, why = screen_available()
    if not ok:
        print(f"display_with_keys: {why}. Nothing to show; exiting.", file=sys.stderr)
        return 0
    source = await open_source(spec, loop)
    display = Display("streamlib: press q to quit")
    printer = PrintEvents(display)
    source >> display
    display.outputs["keyboard"] >> printer.inputs["keys"]
    display.outputs["mouse"] >> printer.inputs["mouse"]
    print("press keys in the window; q or Esc quits", flush=True)
    try:
        await asyncio.wait_for(display.join(), seconds)
    except TimeoutError:
        print(f"{seconds:g} s are up")
        await display.stop()
    await source.stop()
    await printer.stop()
    print(f"shown {display.frames_shown} frames")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=None, help="a camera index or a video file")
    parser.add_argument("--loop", action="store_true", help="play a file (or the generated clip) in a loop")
    parser.add_argument("--seconds", type=float, default=None, help="quit after this long")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.source, args.loop, args.seconds)))
