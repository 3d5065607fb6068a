"""What the network-media tests share: free UDP ports, peer processes (ffmpeg, GStreamer) that
never outlive a test, and the SMPTE bars every interop test checks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Iterator

import numpy as np

# Bar centres (top two thirds): grey, yellow, cyan, green, magenta, red, blue at 75 %
BARS_75 = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
BARS_100 = [tuple(255 if c else 0 for c in bar) for bar in BARS_75]  # GStreamer's videotestsrc pattern=smpte


def free_port() -> int:
    """An even UDP port whose neighbour is free too (RTP peers use port + 1 for RTCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port % 2 or port > 65000:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free UDP port pair")


@contextlib.contextmanager
def peer(args: list[str], stdout: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    """Run a peer program for the length of a ``with`` block (killed if still running)."""
    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def read_exactly(proc: subprocess.Popen[bytes], size: int, timeout: float = 20.0) -> bytes:
    """``size`` bytes of a peer's standard output (fewer if it ended), within ``timeout``."""
    assert proc.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(proc.stdout.read, size), timeout)


def ffmpeg_bars(width: int, height: int, frames: int, codec: list[str], *output: str) -> list[str]:
    """ffmpeg sending ``frames`` of its SMPTE bars at 30 fps, encoded with ``codec``, to ``output``."""
    source = ["-re", "-f", "lavfi", "-i", f"smptebars=size={width}x{height}:rate=30", "-frames:v", str(frames)]
    return ["ffmpeg", "-v", "error", *source, *codec, *output]


def bar_colours(rgb: np.ndarray) -> list[tuple[int, int, int]]:
    """Each bar's centre pixel, a third of the way down."""
    h, w = rgb.shape[:2]
    y = h // 3
    return [tuple(int(c) for c in rgb[y, int((i + 0.5) * w / 7)]) for i in range(7)]


def assert_bars(rgb: np.ndarray, expected: list[tuple[int, int, int]], tol: int) -> None:
    got = bar_colours(rgb)
    worst = max(abs(g - e) for gb, eb in zip(got, expected, strict=True) for g, e in zip(gb, eb, strict=True))
    assert worst <= tol, f"bar colours {got} differ from {expected} by {worst} > {tol}"
