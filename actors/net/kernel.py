"""The receive hot path compiled with Numba: one call checks and copies a run of RFC 4175 packets.

At 1080p30 a receiver handles ~100,000 packets a second; Python per packet (header checks,
sequence check, slice copy) costs several microseconds, C-like code well under one. The kernel
takes a batch from ``recvmmsg`` and consumes packets while they are the common case -- RTP v2
without extensions, the current SSRC, payload type and timestamp, no marker, the next sequence
number, one sample row data header whose line, offset and length fit the frame -- copying each
payload into the frame. It stops at the first packet that is anything else, which the caller
hands to the full Python path (:meth:`FrameAssembler.push`), so the counting stays in one place.
It releases the GIL, so conversion of the previous frame runs meanwhile. Without Numba the same
function runs as plain Python (correct, slower).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["COMPILED", "fast_run"]


def _fast_run(
    rows: NDArray[np.uint8],
    lens: NDArray[np.int64],
    start: int,
    n: int,
    ts_cur: int,
    ssrc: int,
    pt: int,
    first_seq: int,
    height: int,
    stride: int,
    pgb: int,
    pgp: int,
    out: NDArray[np.uint8],
    res: NDArray[np.int64],
) -> None:
    """Consume packets ``start..`` of ``rows``; ``res`` = (count, payload bytes, max line, max pixel end)."""
    k = start
    got = 0
    max_line = -1
    max_px = 0
    expect = first_seq
    while k < n:
        r = rows[k]
        size = lens[k]
        if size < 20 or r[0] != 0x80 or (r[1] & 0x80) != 0:  # RFC 3550 §5.1: V=2, P=X=CC=0; no marker
            break
        if pt >= 0 and (r[1] & 0x7F) != pt:
            break
        if ((np.int64(r[8]) << 24) | (np.int64(r[9]) << 16) | (np.int64(r[10]) << 8) | np.int64(r[11])) != ssrc:
            break
        if ((np.int64(r[4]) << 24) | (np.int64(r[5]) << 16) | (np.int64(r[6]) << 8) | np.int64(r[7])) != ts_cur:
            break
        seq = int((np.int64(r[12]) << 24) | (np.int64(r[13]) << 16) | (np.int64(r[2]) << 8) | np.int64(r[3]))
        if seq != expect:  # RFC 4175 §4.3: extended sequence number, high half in the payload header
            break
        length = int((np.int64(r[14]) << 8) | np.int64(r[15]))
        line = int((np.int64(r[16]) << 8) | np.int64(r[17]))  # F bit set: >= 32768, fails below
        offset = int((np.int64(r[18]) << 8) | np.int64(r[19]))  # C bit set: >= 32768, fails below
        if length == 0 or length + 20 != size or line >= height or length % pgb != 0 or offset % pgp != 0:
            break
        col = offset // pgp * pgb
        if col + length > stride:
            break
        dst = line * stride + col
        out[dst : dst + length] = r[20 : 20 + length]
        got += length
        if line > max_line:
            max_line = line
        px_end = offset + length // pgb * pgp
        if px_end > max_px:
            max_px = px_end
        expect = (expect + 1) & 0xFFFFFFFF
        k += 1
    res[0] = k - start
    res[1] = got
    res[2] = max_line
    res[3] = max_px


fast_run: Callable[..., None]
try:
    import numba

    # compiled at import (and cached on disk), not on the first packet
    fast_run = numba.njit(
        "void(uint8[:, ::1], int64[::1], int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, "
        "uint8[::1], int64[::1])",
        cache=True,
        nogil=True,
        boundscheck=False,
    )(_fast_run)
    COMPILED = True
except ImportError:  # pragma: no cover - numba comes with streamlib[media]
    fast_run = _fast_run
    COMPILED = False

python_fast_run = _fast_run


def _pack_422(rgb: NDArray[np.uint8], out: NDArray[np.uint8], coef: NDArray[np.int64], depth: int) -> None:
    """RGB(A) -> YCbCr-4:2:2 pixel groups in one pass (ST 2110-20 §6.2 / RFC 4175 §4.3 byte order
    Cb Y0 Cr Y1; 8-bit: 4 octets per pair; 10-bit: 5 octets, big-endian bit fields).

    ``coef`` is the RGB -> YCbCr matrix in 2^-14 fixed point with the offsets (and rounding) in its
    last column; chroma is computed from each pixel pair's sum (the pair average)."""
    h = rgb.shape[0]
    pairs = rgb.shape[1] // 2
    top = (1 << depth) - 1
    for y in range(h):
        for p in range(pairs):
            r0 = np.int64(rgb[y, 2 * p, 0])
            g0 = np.int64(rgb[y, 2 * p, 1])
            b0 = np.int64(rgb[y, 2 * p, 2])
            r1 = np.int64(rgb[y, 2 * p + 1, 0])
            g1 = np.int64(rgb[y, 2 * p + 1, 1])
            b1 = np.int64(rgb[y, 2 * p + 1, 2])
            y0 = (coef[0, 0] * r0 + coef[0, 1] * g0 + coef[0, 2] * b0 + coef[0, 3]) >> 14
            y1 = (coef[0, 0] * r1 + coef[0, 1] * g1 + coef[0, 2] * b1 + coef[0, 3]) >> 14
            rs, gs, bs = r0 + r1, g0 + g1, b0 + b1
            cb = (coef[1, 0] * rs + coef[1, 1] * gs + coef[1, 2] * bs + 2 * coef[1, 3]) >> 15
            cr = (coef[2, 0] * rs + coef[2, 1] * gs + coef[2, 2] * bs + 2 * coef[2, 3]) >> 15
            y0 = min(max(y0, 0), top)
            y1 = min(max(y1, 0), top)
            cb = min(max(cb, 0), top)
            cr = min(max(cr, 0), top)
            if depth == 8:
                o = 4 * p
                out[y, o] = cb
                out[y, o + 1] = y0
                out[y, o + 2] = cr
                out[y, o + 3] = y1
            else:
                o = 5 * p
                out[y, o] = cb >> 2
                out[y, o + 1] = ((cb & 3) << 6) | (y0 >> 4)
                out[y, o + 2] = ((y0 & 15) << 4) | (cr >> 6)
                out[y, o + 3] = ((cr & 63) << 2) | (y1 >> 8)
                out[y, o + 4] = y1 & 255


try:
    import numba

    _t = numba.types
    _frames = (_t.Array(_t.uint8, 3, "C"), _t.Array(_t.uint8, 3, "C", readonly=True))  # frames are often read-only
    pack_422: Callable[..., None] = numba.njit(
        [_t.void(f, _t.Array(_t.uint8, 2, "C"), _t.Array(_t.int64, 2, "C"), _t.int64) for f in _frames],
        cache=True,
        nogil=True,
        boundscheck=False,
    )(_pack_422)
except ImportError:  # pragma: no cover
    pack_422 = _pack_422
python_pack_422 = _pack_422


def _unpack_422(packed: NDArray[np.uint8], rgb: NDArray[np.uint8], coef: NDArray[np.int64], depth: int) -> None:
    """YCbCr-4:2:2 pixel groups -> RGB in one pass; each Cb/Cr sample covers its pixel pair.

    ``coef`` is the YCbCr -> RGB matrix in 2^-14 fixed point, offsets and rounding in its last column."""
    h = rgb.shape[0]
    pairs = rgb.shape[1] // 2
    for y in range(h):
        for p in range(pairs):
            if depth == 8:
                o = 4 * p
                cb = np.int64(packed[y, o])
                y0 = np.int64(packed[y, o + 1])
                cr = np.int64(packed[y, o + 2])
                y1 = np.int64(packed[y, o + 3])
            else:
                o = 5 * p
                b0 = np.int64(packed[y, o])
                b1 = np.int64(packed[y, o + 1])
                b2 = np.int64(packed[y, o + 2])
                b3 = np.int64(packed[y, o + 3])
                b4 = np.int64(packed[y, o + 4])
                cb = (b0 << 2) | (b1 >> 6)
                y0 = ((b1 & 63) << 4) | (b2 >> 4)
                cr = ((b2 & 15) << 6) | (b3 >> 2)
                y1 = ((b3 & 3) << 8) | b4
            for k in range(2):
                yy = y0 if k == 0 else y1
                for c in range(3):
                    v = (coef[c, 0] * yy + coef[c, 1] * cb + coef[c, 2] * cr + coef[c, 3]) >> 14
                    rgb[y, 2 * p + k, c] = min(max(v, 0), 255)


try:
    import numba

    _t = numba.types
    _packed = (_t.Array(_t.uint8, 2, "C"), _t.Array(_t.uint8, 2, "C", readonly=True))  # bytes are read-only
    unpack_422: Callable[..., None] = numba.njit(
        [_t.void(f, _t.Array(_t.uint8, 3, "C"), _t.Array(_t.int64, 2, "C"), _t.int64) for f in _packed],
        cache=True,
        nogil=True,
        boundscheck=False,
    )(_unpack_422)
except ImportError:  # pragma: no cover
    unpack_422 = _unpack_422
python_unpack_422 = _unpack_422
