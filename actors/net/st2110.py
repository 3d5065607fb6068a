"""SMPTE ST 2110-20 video payload (RFC 4175): pixel groups, packets, and frame reassembly.

Everything per pixel is numpy (or OpenCV's ``cv2.transform``) over whole frames; Python runs
once per packet at most. Section numbers cite RFC 4175 and SMPTE ST 2110-20:2017.

Supported: progressive YCbCr-4:2:2 at 8 bits (pgroup 4 bytes / 2 pixels, byte order
Cb Y0 Cr Y1 -- GStreamer's ``UYVY``, ffmpeg's ``uyvy422``) and 10 bits (pgroup 5 bytes / 2 pixels,
the same four samples as 10-bit big-endian bit fields -- GStreamer's ``UYVP``, ffmpeg's
``bitpacked``), and RGB at 8 bits (pgroup 3 bytes / 1 pixel).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from .kernel import COMPILED, fast_run, pack_422, unpack_422
from .rtp import SequenceTracker, SourceLock, payload_bounds

__all__ = [
    "Colorimetry",
    "FrameAssembler",
    "Sampling",
    "VideoFormat",
    "VideoPacketizer",
    "from_rgb",
    "to_rgb",
]

Sampling = Literal["YCbCr-4:2:2", "RGB"]
Colorimetry = Literal["BT601", "BT709"]

# ST 2110-10 §6.3: the Standard UDP Size Limit is 1460 octets of UDP payload.
STANDARD_UDP_SIZE_LIMIT = 1460
RTP_HEADER = 12
PAYLOAD_HEADER = 2  # RFC 4175 §4.3: extended sequence number
SRD_HEADER = 6  # RFC 4175 §4.3: length, F + line number, C + offset


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """One ST 2110-20 video format: what the SDP's ``fmtp`` line describes (ST 2110-20 §7)."""

    width: int
    height: int
    sampling: Sampling = "YCbCr-4:2:2"
    depth: int = 8
    fps: float = 30.0
    colorimetry: Colorimetry = "BT709"

    def __post_init__(self) -> None:
        if (self.sampling, self.depth) not in (("YCbCr-4:2:2", 8), ("YCbCr-4:2:2", 10), ("RGB", 8)):
            raise ValueError(
                f"unsupported ST 2110-20 format {self.sampling} depth {self.depth}: "
                "use YCbCr-4:2:2 at 8 or 10 bits, or RGB at 8 bits"
            )
        if not (0 < self.width <= 32767 and 0 < self.height <= 32767):  # RFC 4175 §4.3: 15-bit fields
            raise ValueError(f"frame size {self.width}x{self.height} is outside RFC 4175's 15-bit line/offset fields")
        if self.width % self.pgroup_pixels:
            raise ValueError(f"{self.sampling} needs a width divisible by {self.pgroup_pixels}, got {self.width}")

    @property
    def pgroup_bytes(self) -> int:
        """Octets per pixel group (RFC 4175 §4.4 table; ST 2110-20 §6.2)."""
        if self.sampling == "RGB":
            return 3
        return 4 if self.depth == 8 else 5

    @property
    def pgroup_pixels(self) -> int:
        return 1 if self.sampling == "RGB" else 2

    @property
    def line_bytes(self) -> int:
        return self.width // self.pgroup_pixels * self.pgroup_bytes

    @property
    def frame_bytes(self) -> int:
        return self.line_bytes * self.height

    def resized(self, width: int, height: int) -> VideoFormat:
        return replace(self, width=width, height=height)


# ---------------------------------------------------------------- colour


def _rgb_to_ycbcr_matrix(colorimetry: str, depth: int) -> NDArray[np.float32]:
    """3x4 matrix: full-range RGB 0..255 -> narrow-range Y, Cb, Cr at ``depth`` bits (ITU-R BT.601/BT.709)."""
    kr, kb = (0.299, 0.114) if colorimetry == "BT601" else (0.2126, 0.0722)
    kg = 1.0 - kr - kb
    scale = float(1 << (depth - 8))
    y = np.array([kr, kg, kb])
    pb = (np.array([0.0, 0.0, 1.0]) - y) / (2 * (1 - kb))
    pr = (np.array([1.0, 0.0, 0.0]) - y) / (2 * (1 - kr))
    m = np.zeros((3, 4), np.float64)
    m[0, :3], m[0, 3] = y * 219 / 255 * scale, 16 * scale
    m[1, :3], m[1, 3] = pb * 224 / 255 * scale, 128 * scale
    m[2, :3], m[2, 3] = pr * 224 / 255 * scale, 128 * scale
    return m.astype(np.float32)


def _ycbcr_to_rgb_matrix(colorimetry: str, depth: int) -> NDArray[np.float32]:
    """The inverse of :func:`_rgb_to_ycbcr_matrix` as a 3x4 affine matrix."""
    fwd = _rgb_to_ycbcr_matrix(colorimetry, depth).astype(np.float64)
    inv = np.linalg.inv(fwd[:, :3])
    out = np.zeros((3, 4))
    out[:, :3] = inv
    out[:, 3] = -inv @ fwd[:, 3]
    return out.astype(np.float32)


_MATRICES: dict[tuple[str, int, bool], NDArray[np.float32]] = {}


def _matrix(colorimetry: str, depth: int, inverse: bool) -> NDArray[np.float32]:
    key = (colorimetry, depth, inverse)
    if key not in _MATRICES:
        _MATRICES[key] = (_ycbcr_to_rgb_matrix if inverse else _rgb_to_ycbcr_matrix)(colorimetry, depth)
    return _MATRICES[key]


def from_rgb(rgb: NDArray[np.uint8], fmt: VideoFormat) -> NDArray[np.uint8]:
    """Pack an RGB (or RGBA) uint8 frame into ``fmt``'s pixel groups: ``(height, line_bytes)`` uint8."""
    h, w = rgb.shape[:2]
    if (w, h) != (fmt.width, fmt.height):
        raise ValueError(f"frame is {w}x{h}, the format is {fmt.width}x{fmt.height}")
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = rgb[..., :3]
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB or RGBA frame (H, W, 3|4), got shape {rgb.shape}")
    if fmt.sampling == "RGB":
        return np.ascontiguousarray(rgb).reshape(h, w * 3)
    if COMPILED:  # one fused pass (numba), fixed point
        out = np.empty((h, fmt.line_bytes), np.uint8)
        pack_422(np.ascontiguousarray(rgb), out, _fixed_matrix(fmt.colorimetry, fmt.depth), fmt.depth)
        return out
    return _from_rgb_numpy(rgb, fmt)


_FIXED: dict[tuple[str, int], NDArray[np.int64]] = {}


def _fixed_matrix(colorimetry: str, depth: int) -> NDArray[np.int64]:
    """:func:`_rgb_to_ycbcr_matrix` in 2^-14 fixed point, rounding folded into the offsets."""
    key = (colorimetry, depth)
    if key not in _FIXED:
        m = _matrix(colorimetry, depth, inverse=False).astype(np.float64)
        fixed = np.rint(m * (1 << 14)).astype(np.int64)
        fixed[:, 3] += 1 << 13  # + 0.5: round to nearest
        _FIXED[key] = np.ascontiguousarray(fixed)
    return _FIXED[key]


def _from_rgb_numpy(rgb: NDArray[np.uint8], fmt: VideoFormat) -> NDArray[np.uint8]:
    """The same conversion with numpy and OpenCV (no numba)."""
    h, w = rgb.shape[:2]
    m = _matrix(fmt.colorimetry, fmt.depth, inverse=False)
    # Chroma is linear in RGB, so averaging each pixel pair first (INTER_AREA halves the width)
    # halves the chroma work; the pair average is what ffmpeg's swscale does by default.
    rgb = np.ascontiguousarray(rgb)
    avg = cv2.resize(rgb, (w // 2, h), interpolation=cv2.INTER_AREA)
    if fmt.depth == 8:
        y = cv2.transform(rgb, m[0:1])  # (h, w) uint8, rounded and saturated
        c = cv2.transform(avg, m[1:3])  # (h, w/2, 2)
        out = np.empty((h, w // 2, 4), np.uint8)
        out[..., 0] = c[..., 0]
        out[..., 2] = c[..., 1]
        out[..., 1::2] = y.reshape(h, w // 2, 2)
        return out.reshape(h, w * 2)
    y10: NDArray[np.uint16] = np.asarray(cv2.transform(rgb.astype(np.uint16), m[0:1]), np.uint16)
    y10 = y10.reshape(h, w // 2, 2)
    c10: NDArray[np.uint16] = np.asarray(cv2.transform(avg.astype(np.uint16), m[1:3]), np.uint16)
    cb, y0, cr, y1 = c10[..., 0], y10[..., 0], c10[..., 1], y10[..., 1]
    # pgroup (ST 2110-20 §6.2.2, RFC 4175 §4.3): Cb' Y0' Cr' Y1', 10 bits each, most significant bit first
    out = np.empty((h, w // 2, 5), np.uint8)
    out[..., 0] = cb >> 2
    out[..., 1] = ((cb & 3) << 6) | (y0 >> 4)
    out[..., 2] = ((y0 & 15) << 4) | (cr >> 6)
    out[..., 3] = ((cr & 63) << 2) | (y1 >> 8)
    out[..., 4] = y1 & 255
    return out.reshape(h, w // 2 * 5)


def to_rgb(packed: NDArray[np.uint8], fmt: VideoFormat) -> NDArray[np.uint8]:
    """Unpack ``(height, line_bytes)`` (or flat) pgroup bytes to an RGB uint8 ``(height, width, 3)`` frame.

    Chroma is upsampled by repetition (each Cb/Cr sample covers its two pixels)."""
    h, w = fmt.height, fmt.width
    if fmt.sampling == "RGB":
        return packed.reshape(h, w, 3).copy()
    if COMPILED:  # one fused pass (numba), fixed point
        rgb = np.empty((h, w, 3), np.uint8)
        unpack_422(
            np.ascontiguousarray(packed.reshape(h, fmt.line_bytes)),
            rgb,
            _fixed_inverse(fmt.colorimetry, fmt.depth),
            fmt.depth,
        )
        return rgb
    return _to_rgb_numpy(packed, fmt)


def _fixed_inverse(colorimetry: str, depth: int) -> NDArray[np.int64]:
    """:func:`_ycbcr_to_rgb_matrix` in 2^-14 fixed point, rounding folded into the offsets."""
    key = (colorimetry, -depth)
    if key not in _FIXED:
        m = _matrix(colorimetry, depth, inverse=True).astype(np.float64)
        fixed = np.rint(m * (1 << 14)).astype(np.int64)
        fixed[:, 3] += 1 << 13
        _FIXED[key] = np.ascontiguousarray(fixed)
    return _FIXED[key]


def _to_rgb_numpy(packed: NDArray[np.uint8], fmt: VideoFormat) -> NDArray[np.uint8]:
    """The same conversion with numpy and OpenCV (no numba)."""
    h, w = fmt.height, fmt.width
    m = _matrix(fmt.colorimetry, fmt.depth, inverse=True)
    if fmt.depth == 8:
        g = packed.reshape(h, w // 2, 4)
        ycc = np.empty((h, w // 2, 2, 3), np.uint8)
        ycc[:, :, :, 0] = g[:, :, 1::2]
        ycc[:, :, :, 1] = g[:, :, 0, None]
        ycc[:, :, :, 2] = g[:, :, 2, None]
        return np.asarray(cv2.transform(ycc.reshape(h, w, 3), m), np.uint8)
    g5 = packed.reshape(h, w // 2, 5).astype(np.uint16)
    ycc16 = np.empty((h, w // 2, 2, 3), np.uint16)
    ycc16[:, :, 0, 0] = ((g5[..., 1] & 63) << 4) | (g5[..., 2] >> 4)
    ycc16[:, :, 1, 0] = ((g5[..., 3] & 3) << 8) | g5[..., 4]
    ycc16[:, :, :, 1] = ((g5[..., 0] << 2) | (g5[..., 1] >> 6))[..., None]
    ycc16[:, :, :, 2] = (((g5[..., 2] & 15) << 6) | (g5[..., 3] >> 2))[..., None]
    rgb16 = cv2.transform(ycc16.reshape(h, w, 3), m)  # uint16: rounded, negatives saturated to 0
    return np.minimum(rgb16, 255).astype(np.uint8)


# ---------------------------------------------------------------- sending

_HEADER_DTYPE = np.dtype(
    [
        ("vpxcc", "u1"),
        ("mpt", "u1"),
        ("seq", ">u2"),
        ("ts", ">u4"),
        ("ssrc", ">u4"),
        ("ext_seq", ">u2"),
        ("length", ">u2"),
        ("line", ">u2"),
        ("offset", ">u2"),
    ]
)


class VideoPacketizer:
    """Cuts packed frames into RFC 4175 packets: one sample row data (SRD) per packet, never across lines.

    Each line is split into ``ceil(line_bytes / max_payload)`` near-equal, pgroup-aligned segments,
    so every packet fits ST 2110-10's Standard UDP Size Limit (1460 octets) and the packing is
    ST 2110-20's General Packing Mode (``PM=2110GPM``). Headers for a whole frame are built in one
    numpy operation; the result is one ``(packets, 20 + segment)`` array plus each packet's length.
    """

    def __init__(
        self, fmt: VideoFormat, payload_type: int, ssrc: int, udp_size_limit: int = STANDARD_UDP_SIZE_LIMIT
    ) -> None:
        self.fmt = fmt
        self.payload_type = payload_type
        self.ssrc = ssrc
        room = udp_size_limit - RTP_HEADER - PAYLOAD_HEADER - SRD_HEADER
        pgb, pgp = fmt.pgroup_bytes, fmt.pgroup_pixels
        groups = fmt.width // pgp
        nseg = -(-fmt.line_bytes // (room // pgb * pgb))
        per = -(-groups // nseg)
        self.segments = [(i * per, min(per, groups - i * per)) for i in range(nseg) if i * per < groups]
        self.per_line = len(self.segments)
        self.packets_per_frame = self.per_line * fmt.height
        self.max_segment = per * pgb
        n = self.packets_per_frame
        hdr = np.zeros(n, _HEADER_DTYPE)
        hdr["vpxcc"] = 0x80
        hdr["ssrc"] = ssrc
        line = np.repeat(np.arange(fmt.height, dtype=np.uint16), self.per_line)
        hdr["line"] = line  # F bit 0: progressive
        offsets = np.array([g * pgp for g, _ in self.segments], np.uint16)
        lengths = np.array([c * pgb for _, c in self.segments], np.uint16)
        hdr["offset"] = np.tile(offsets, fmt.height)  # C bit 0: one SRD per packet
        hdr["length"] = np.tile(lengths, fmt.height)
        self._template = hdr
        self.lengths = (20 + hdr["length"].astype(np.int64)).tolist()

    def packetize(self, packed: NDArray[np.uint8], rtp_timestamp: int) -> tuple[NDArray[np.uint8], list[int]]:
        """All packets of one frame (the last carries the marker bit, ST 2110-20 §6.1.1 / RFC 4175 §4.1)."""
        n = self.packets_per_frame
        fmt = self.fmt
        hdr = self._template.copy()
        # sequence numbers (RTP octets 2-3, extended at 12-13) are stamped when sent: rtp.stamp_sequence
        hdr["ts"] = rtp_timestamp & 0xFFFFFFFF
        hdr["mpt"] = self.payload_type
        hdr["mpt"][-1] |= 0x80
        out = np.empty((n, 20 + self.max_segment), np.uint8)
        out[:, :20] = hdr.view(np.uint8).reshape(n, 20)
        lines = packed.reshape(fmt.height, fmt.line_bytes)
        pgb = fmt.pgroup_bytes
        for j, (first, count) in enumerate(self.segments):
            start = first * pgb
            out[j :: self.per_line, 20 : 20 + count * pgb] = lines[:, start : start + count * pgb]
        return out, self.lengths


# ---------------------------------------------------------------- receiving

_RTP = struct.Struct("!BBHII")
_SRD = struct.Struct("!HHH")

FrameCallback = Callable[[bytes, int, bool, VideoFormat], None]


class FrameAssembler:
    """Reassembles RFC 4175 packets into packed frames, counting everything a hostile network does.

    :meth:`push` takes one datagram; a finished frame goes to ``on_frame(packed, rtp_timestamp,
    complete, fmt)``. A frame ends at its marker bit, or when a packet with a newer timestamp
    arrives first. *Incomplete-frame policy*: ``"drop"`` (default) discards a frame that lacks any
    byte; ``"conceal"`` emits it, its missing lines holding what the previous frames left in the
    assembly buffer (the last picture, for a still camera). Late packets of the frame just
    finished are counted as reordered and dropped.

    *Resolution changes*: RFC 4175 packets do not carry the frame size, so the assembler watches
    each frame's extent (last line, last pixel) and byte count; when a marker closes a frame whose
    bytes exactly cover a rectangle other than the current format (and within ``max_pixels``), the
    format switches to it (``format_changes``) and the following frames decode at the new size.
    Memory is one assembly buffer of at most ``max_pixels`` plus what the callback keeps.
    """

    def __init__(
        self,
        fmt: VideoFormat,
        payload_type: int | None = None,
        on_frame: FrameCallback | None = None,
        policy: Literal["drop", "conceal"] = "drop",
        max_pixels: int = 4096 * 2160,
    ) -> None:
        self.payload_type = payload_type
        self.on_frame = on_frame
        self.policy = policy
        self.max_pixels = max_pixels
        self.seq = SequenceTracker(bits=32, max_dropout=1 << 16, max_misorder=4096)
        self.source = SourceLock()
        self._lost_before = 0  # losses counted under earlier sources
        self.packets_received = 0
        self.packets_malformed = 0
        self.packets_foreign = 0  # other payload type or SSRC
        self.frames_complete = 0
        self.frames_incomplete = 0
        self.format_changes = 0
        self.late = 0
        self._res = np.zeros(4, np.int64)
        self._kernel = fast_run
        self._set_format(fmt)
        self._ts: int | None = None
        self._last_ts: int | None = None
        self._got = 0
        self._extent_line = -1
        self._extent_px = 0

    def _set_format(self, fmt: VideoFormat) -> None:
        self.fmt = fmt
        self._pgb, self._pgp = fmt.pgroup_bytes, fmt.pgroup_pixels
        self._stride = fmt.line_bytes
        self._frame_bytes = fmt.frame_bytes
        self._buf = bytearray(self._frame_bytes)
        self._view = memoryview(self._buf)
        self._np = np.frombuffer(self._buf, np.uint8)  # the same memory, for the compiled kernel

    @property
    def ssrc(self) -> int | None:
        return self.source.ssrc

    @property
    def packets_lost(self) -> int:
        return self.seq.total_lost + self._lost_before

    @property
    def packets_reordered(self) -> int:
        return self.seq.reordered + self.late

    @property
    def packets_duplicate(self) -> int:
        return self.seq.duplicates

    def push(self, packet: bytes | bytearray | memoryview, length: int | None = None) -> None:
        """Handle one datagram (``length`` bytes of ``packet``). Never raises for bad input: it counts it."""
        n = len(packet) if length is None else length
        self.packets_received += 1
        bounds = payload_bounds(packet, n)
        if bounds is None or bounds[0] + 8 > bounds[1]:  # RFC 4175's header and one SRD at least
            self.packets_malformed += 1
            return
        pos, end = bounds
        _, b1, seq16, ts, ssrc = _RTP.unpack_from(packet, 0)
        pt = b1 & 0x7F
        if self.payload_type is not None and pt != self.payload_type:
            self.packets_foreign += 1
            return
        if ssrc != self.source.ssrc:
            verdict = self.source.check(ssrc)
            if verdict == SourceLock.FOREIGN:
                self.packets_foreign += 1
                return
            if verdict == SourceLock.SWITCHED:  # a new sender: start over with it
                self._lost_before += self.seq.total_lost
                self.seq = SequenceTracker(bits=32, max_dropout=1 << 16, max_misorder=4096)
                self._ts = self._last_ts = None
                self._got, self._extent_line, self._extent_px = 0, -1, 0
        # RFC 4175 §4.3: the payload header, then SRD headers while C is set
        ext = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
        srds = []
        while True:
            if pos + 6 > end:
                self.packets_malformed += 1
                return
            length_, line_f, off_c = _SRD.unpack_from(packet, pos)
            pos += 6
            srds.append((length_, line_f, off_c & 0x7FFF))
            if not off_c & 0x8000:
                break
        data_end = pos + sum(s[0] for s in srds)
        if data_end > end or len(srds) > 64:
            self.packets_malformed += 1
            return
        pgb, pgp, stride = self._pgb, self._pgp, self._stride
        for length_, line_f, offset in srds:
            if line_f & 0x8000 or length_ % pgb or offset % pgp:  # field 2 (interlace) is unsupported
                self.packets_malformed += 1
                return
        if not self.seq.update((ext << 16) | seq16):
            return
        if ts != self._ts:
            if ts == self._last_ts:  # a straggler of the frame just finished
                self.late += 1
                return
            if self._ts is not None:
                self._finish(complete=False)
            self._ts = ts
        for length_, line_f, offset in srds:
            line = line_f
            if line > self._extent_line:
                self._extent_line = line
            px_end = offset + length_ // pgb * pgp
            if px_end > self._extent_px:
                self._extent_px = px_end
            dst = line * stride + offset // pgp * pgb
            if px_end * pgb // pgp > stride or line >= self.fmt.height:
                self._got += length_  # counted toward a possible new format, not written
                pos += length_
                continue
            self._view[dst : dst + length_] = packet[pos : pos + length_]
            self._got += length_
            pos += length_
        if b1 & 0x80:
            self._finish(complete=True)

    def push_batch(self, rows: NDArray[np.uint8], lengths: NDArray[np.uint32], truncated: NDArray[np.bool_]) -> None:
        """Handle a batch of datagrams (``rows[i, :lengths[i]]``, as ``recvmmsg`` fills them).

        Runs of the common case go through the compiled kernel (:mod:`.kernel`: checks and copies,
        no Python per packet); any other packet (a frame's first or last, anything odd) goes through
        :meth:`push`, so the counting is the same whichever path a packet takes."""
        n = rows.shape[0]
        slot = rows.shape[1]
        flat = rows.reshape(-1).data.cast("B")
        lens = lengths.astype(np.int64)
        res = self._res
        pt = self.payload_type if self.payload_type is not None else -1
        i = 0
        while i < n:
            seq = self.seq
            highest = seq.highest
            if self._ts is not None and self.source.ssrc is not None and highest is not None and not truncated[i]:
                first = (highest + 1) & 0xFFFFFFFF
                self._kernel(
                    rows,
                    lens,
                    i,
                    n,
                    self._ts,
                    self.source.ssrc,
                    pt,
                    first,
                    self.fmt.height,
                    self._stride,
                    self._pgb,
                    self._pgp,
                    self._np,
                    res,
                )
                count = int(res[0])
                if count:
                    seq.accept_run(first, count)
                    self.packets_received += count
                    self._got += int(res[1])
                    self._extent_line = max(self._extent_line, int(res[2]))
                    self._extent_px = max(self._extent_px, int(res[3]))
                    i += count
                    continue
            if truncated[i]:
                self.packets_received += 1
                self.packets_malformed += 1
            else:
                self.push(flat[i * slot : i * slot + int(lens[i])], int(lens[i]))
            i += 1

    def _finish(self, complete: bool) -> None:
        """Close the current frame; ``complete`` says a marker closed it (it may still lack bytes)."""
        got, ts = self._got, self._ts
        lines, px = self._extent_line + 1, self._extent_px
        self._got, self._extent_line, self._extent_px = 0, -1, 0
        self._last_ts, self._ts = ts, None
        if ts is None:
            return
        fmt = self.fmt
        resized = complete and (px, lines) != (fmt.width, fmt.height) and 0 < px * lines <= self.max_pixels
        if resized and px % fmt.pgroup_pixels == 0 and got == px // fmt.pgroup_pixels * fmt.pgroup_bytes * lines:
            self._set_format(fmt.resized(px, lines))
            self.format_changes += 1
            self.frames_incomplete += 1  # this frame's out-of-range part was not kept
            return
        whole = complete and got == self._frame_bytes
        if whole:
            self.frames_complete += 1
        else:
            self.frames_incomplete += 1
            if self.policy == "drop":
                return
        if self.on_frame is not None:
            self.on_frame(bytes(self._buf), ts, whole, fmt)
