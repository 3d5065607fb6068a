"""Write an HLS stream (playlist + MPEG-TS segments) from a test picture and a tone.

    python examples/hls_output.py                        # 6 s into a temporary directory
    python examples/hls_output.py --out www --seconds 30 --segment 2 --window 5 --realtime
    # then serve it: python -m http.server -d www, and open http://localhost:8000/stream.m3u8

``--window N`` keeps a live sliding playlist of N segments (older ones are deleted);
without it the playlist keeps every segment (an event playlist that becomes VOD at the
end). Stopping early (Ctrl-C) still leaves a valid playlist ending in ``#EXT-X-ENDLIST``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from streamlib.actors.audio import AudioGenerator
from streamlib.actors.files import HLSSink

try:  # run as a script: the sibling example is importable
    from audio_video_mux import MovingBar
except ImportError:  # imported as examples.hls_output
    from examples.audio_video_mux import MovingBar


async def main(out_dir: Path, seconds: float, segment: float, window: int, realtime: bool) -> None:
    playlist = out_dir / "stream.m3u8"
    sink = HLSSink(
        playlist, segment_seconds=segment, playlist_size=window, delete_segments=bool(window), lossless=not realtime
    )
    MovingBar(round(seconds * 30), realtime=realtime) >> sink.inputs["video"]
    AudioGenerator(660.0, realtime=realtime, duration=seconds) >> sink.inputs["audio"]
    start = time.monotonic()
    await sink.join()
    segments = sink.segments()
    print(
        f"wrote {playlist} in {time.monotonic() - start:.2f} s: {sink.frames_written} frames, "
        f"{len(segments)} segments listed"
    )
    for path in segments:
        print(f"  {path.name}: {path.stat().st_size} bytes")
    print(playlist.read_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a new temporary one)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--segment", type=float, default=2.0, help="segment length in seconds")
    parser.add_argument("--window", type=int, default=0, help="segments kept in a live playlist (0: all)")
    parser.add_argument("--realtime", action="store_true", help="pace the sources like live capture")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="streamlib-hls-"))
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out, args.seconds, args.segment, args.window, args.realtime))
