"""The compositing kernel: straight-alpha RGBA "over" an opaque RGBA canvas, in one pass.

A 1080p layer is two million pixels; a blend written as numpy or OpenCV calls makes a
pass over the frame per operation (extract alpha, widen, multiply, invert, multiply,
add), and the frame no longer fits in cache between passes. This kernel does the whole
blend per pixel in one pass, compiled by Numba (LLVM) into SIMD code, without the GIL
(so a compositor on its own thread runs beside the encoder and the other actors).

Pixels are handled as little-endian ``uint32`` words ``0xAABBGGRR`` and blended two
channels at a time in 16-bit lanes (``0x00BB00RR`` and ``0x00AA00GG``) as
``dst + (src - dst) * a / 256``, with alpha mapped from 0..255 onto 0..256: one multiply
per two channels, rounded, within one level of the exact ``(src * a + dst * (255 - a)) / 255``,
and exact at the ends (alpha 255 gives the source and alpha 0 the canvas, bit for bit).

A row whose alpha is 0 everywhere is skipped after reading it, and a fully opaque row
is copied, so an overlay that covers a tenth of the frame costs little more than reading
it. Everything else is blended.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import NDArray

try:
    import numba
except ImportError as exc:  # pragma: no cover - numba is a dependency of streamlib[media]
    raise ImportError("streamlib.actors.blend needs Numba: pip install numba (or streamlib[media])") from exc

__all__ = ["over", "words"]

if sys.byteorder != "little":  # pragma: no cover - every platform streamlib targets is little-endian
    raise ImportError(
        "streamlib.actors.blend reads RGBA pixels as little-endian uint32 words; this machine is big-endian"
    )

_U = np.uint32
_RB = _U(0x00FF00FF)
_HALF = _U(0x00800080)  # rounds each lane's product to nearest
_ALPHA = _U(0xFF000000)


# Compiled when this module is imported (and cached on disk), not at the first frame: a
# compile takes about a second, which would stall a live compositor's first frame.
# The source is typed read-only, which also accepts writable arrays: frames are read-only by
# the library's convention (TestPattern sends read-only arrays), so both must blend.
_PIXELS = numba.types.Array(numba.types.uint32, 2, "C")
_READ_ONLY_PIXELS = numba.types.Array(numba.types.uint32, 2, "C", readonly=True)
_INT = numba.types.int64


@numba.njit(
    numba.types.void(_PIXELS, _READ_ONLY_PIXELS, _INT, _INT, _INT, _INT, _INT, _INT, _INT, numba.types.boolean, _INT),
    cache=True,
    nogil=True,
    boundscheck=False,
)  # type: ignore[misc]
def _over(
    canvas: NDArray[np.uint32],
    src: NDArray[np.uint32],
    dx: int,
    dy: int,
    sx: int,
    sy: int,
    width: int,
    height: int,
    opacity: int,
    fill: bool,
    background: int,
) -> None:  # pragma: no cover - compiled; run by the tests through over()
    op = _U(opacity)
    bg = _U(background)
    for row in range(height):
        d = canvas[dy + row, dx : dx + width]
        s = src[sy + row, sx : sx + width]
        # Three samples settle most rows at once: one alpha strictly between 0 and 255, or
        # both 0 and 255, means a row to blend; only a row that looks uniformly transparent
        # or opaque is read in full to make sure before it is skipped or copied.
        first = s[0] >> _U(24)
        uniform = first == s[width // 2] >> _U(24) == s[width - 1] >> _U(24) and (first == _U(0) or first == _U(255))
        if uniform:
            lo = _U(0xFFFFFFFF)
            hi = _U(0)
            for i in range(width):  # (an index loop: iterating the array itself does not vectorise)
                lo = _U(lo & s[i])
                hi = _U(hi | s[i])
            if hi >> _U(24) == _U(0):
                if fill:
                    d[:] = bg
                continue  # a transparent row: the canvas shows through
            if lo >> _U(24) == _U(255) and op == _U(256):
                for i in range(width):
                    d[i] = _U(s[i] | _ALPHA)
                continue
        for i in range(width):
            # Every intermediate is cut back to uint32 (Numba computes in 64 bits otherwise,
            # and LLVM then vectorises half as wide, with slow 64-bit multiplies).
            sp = s[i]
            dp = bg if fill else d[i]
            a = _U(sp >> _U(24))
            if op != _U(256):
                a = _U(_U(_U(a * op) + _U(128)) >> _U(8))
            a = _U(a + _U(a >> _U(7)))  # 0..255 -> 0..256, so 255 gives the source exactly
            drb = _U(dp & _RB)
            dga = _U(_U(dp >> _U(8)) & _RB)
            rb = _U(_U(drb + _U(_U(_U(_U(_U(sp & _RB) - drb) * a) + _HALF) >> _U(8))) & _RB)
            ga = _U(_U(dga + _U(_U(_U(_U(_U(_U(sp >> _U(8)) & _RB) - dga) * a) + _HALF) >> _U(8))) & _RB)
            d[i] = _U(rb | _U(ga << _U(8)) | _ALPHA)


def words(rgba: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """An ``(h, w, 4)`` uint8 image as ``(h, w)`` uint32 pixels (a view when the image is
    C-contiguous, else a contiguous copy)."""
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 4) uint8 image, got shape {rgba.shape} and dtype {rgba.dtype}")
    return np.ascontiguousarray(rgba).view(np.uint32)[..., 0]


def over(
    canvas: NDArray[np.uint32],
    src: NDArray[np.uint32],
    x: int = 0,
    y: int = 0,
    opacity: float = 1.0,
    background: int | None = None,
) -> None:
    """Blend ``src`` (straight-alpha RGBA words) onto ``canvas`` (opaque RGBA words) in place,
    with ``src``'s top-left corner at canvas ``(x, y)`` (may lie partly outside) and its
    alpha times ``opacity`` (0..1). Both arrays must be C-contiguous ``(h, w)`` uint32.

    ``background`` (an RGBA word): blend over that colour instead of the canvas's pixels,
    which are then not read, only written -- the bottom layer over a plain background
    needs no pass to paint the background first. Only the part ``src`` covers is written."""
    if canvas.dtype != np.uint32 or src.dtype != np.uint32 or canvas.ndim != 2 or src.ndim != 2:
        raise ValueError("over() takes (h, w) uint32 pixel arrays (see words())")
    if not (canvas.flags.c_contiguous and src.flags.c_contiguous):
        raise ValueError("over() needs C-contiguous arrays (see words())")
    ch, cw = canvas.shape
    sh, sw = src.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, cw), min(y + sh, ch)
    level = round(min(max(opacity, 0.0), 1.0) * 256)
    if x0 >= x1 or y0 >= y1:
        return
    if level == 0 and background is None:
        return
    fill = background is not None
    _over(canvas, src, x0, y0, x0 - x, y0 - y, x1 - x0, y1 - y0, level, fill, int(background or 0) & 0xFFFFFFFF)
