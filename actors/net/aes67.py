"""SMPTE ST 2110-30 / AES67 audio payload (RFC 3190 L24, RFC 3551 L16): packing and reassembly.

Samples travel as big-endian signed integers, interleaved by channel (RFC 3190 §4, RFC 3551
§4.5.11); one packet holds ``ptime`` of audio (ST 2110-30 §6.2.1: 1 ms at 48 kHz = 48 samples per
channel, the AES67 default). Conversion is numpy over whole blocks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .rtp import SequenceTracker, SourceLock, payload_bounds

__all__ = ["AudioAssembler", "AudioFormat", "pack_samples", "unpack_samples"]

Encoding = Literal["L16", "L24"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: Encoding = "L24"
    sample_rate: int = 48000
    channels: int = 2
    ptime_ms: float = 1.0

    def __post_init__(self) -> None:
        if self.encoding not in ("L16", "L24"):
            raise ValueError(f"audio encoding must be 'L16' or 'L24', got {self.encoding!r}")
        if not 1 <= self.channels <= 64:
            raise ValueError(f"channels must be 1..64, got {self.channels}")
        if self.sample_rate not in (44100, 48000, 96000):
            raise ValueError(f"ST 2110-30 sample rates are 48000 or 96000 (44100 tolerated), got {self.sample_rate}")

    @property
    def sample_bytes(self) -> int:
        return 2 if self.encoding == "L16" else 3

    @property
    def samples_per_packet(self) -> int:
        return round(self.sample_rate * self.ptime_ms / 1000)


def pack_samples(samples: NDArray[np.float32], encoding: Encoding) -> bytes:
    """float32 ``(n, channels)`` in [-1, 1] -> interleaved big-endian L16/L24 bytes."""
    if encoding == "L16":
        ints = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(">i2")
        return bytes(ints.tobytes())
    ints32 = np.clip(np.rint(samples.astype(np.float64) * 8388608.0), -8388608, 8388607).astype(">i4")
    return ints32.view(np.uint8).reshape(-1, 4)[:, 1:].tobytes()


def unpack_samples(payload: bytes | memoryview, channels: int, encoding: Encoding) -> NDArray[np.float32]:
    """Interleaved big-endian L16/L24 bytes -> float32 ``(n, channels)``."""
    if encoding == "L16":
        ints = np.frombuffer(payload, ">i2")
        n = len(ints) // channels
        return (ints[: n * channels].astype(np.float32) / 32768.0).reshape(n, channels)
    raw = np.frombuffer(payload, np.uint8)
    n = len(raw) // (3 * channels)
    b = raw[: n * 3 * channels].reshape(-1, 3).astype(np.int32)
    ints = (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]
    ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    return (ints.astype(np.float32) / 8388608.0).reshape(n, channels)


BlockCallback = Callable[[NDArray[np.float32], int], None]
_RTP = struct.Struct("!BBHII")


class AudioAssembler:
    """Turns L16/L24 packets into blocks of ``block`` samples, concealing gaps with silence.

    Samples are placed by RTP timestamp, so a lost packet becomes ``samples_per_packet`` samples of
    silence (``samples_concealed``) and a late one is dropped (counted as reordered) once its block
    has gone; a timestamp jump of more than a second restarts the timeline. ``on_block(samples,
    rtp_timestamp_of_first_sample)`` receives each finished block.
    """

    def __init__(
        self, fmt: AudioFormat, payload_type: int | None = None, on_block: BlockCallback | None = None, block: int = 480
    ) -> None:
        self.fmt = fmt
        self.payload_type = payload_type
        self.on_block = on_block
        self.block = block
        self.seq = SequenceTracker(bits=16)
        self.source = SourceLock()
        self._lost_before = 0
        self.packets_received = 0
        self.packets_malformed = 0
        self.packets_foreign = 0
        self.late = 0
        self.samples_concealed = 0
        self.blocks = 0
        self._start: int | None = None  # RTP timestamp of the block being filled
        self._buf = np.zeros((block, fmt.channels), np.float32)
        self._filled = np.zeros(block, bool)
        self._extent = 0

    @property
    def ssrc(self) -> int | None:
        return self.source.ssrc

    @property
    def packets_lost(self) -> int:
        return self.seq.total_lost + self._lost_before

    @property
    def packets_reordered(self) -> int:
        return self.seq.reordered + self.late

    def push(self, packet: bytes | bytearray | memoryview, length: int | None = None) -> None:
        n = len(packet) if length is None else length
        self.packets_received += 1
        bounds = payload_bounds(packet, n)
        if bounds is None:
            self.packets_malformed += 1
            return
        pos, end = bounds
        _, b1, seq, ts, ssrc = _RTP.unpack_from(packet, 0)
        frame_bytes = self.fmt.sample_bytes * self.fmt.channels
        if pos >= end or (end - pos) % frame_bytes or (end - pos) // frame_bytes > 4 * self.block:
            self.packets_malformed += 1
            return
        if self.payload_type is not None and (b1 & 0x7F) != self.payload_type:
            self.packets_foreign += 1
            return
        if ssrc != self.source.ssrc:
            verdict = self.source.check(ssrc)
            if verdict == SourceLock.FOREIGN:
                self.packets_foreign += 1
                return
            if verdict == SourceLock.SWITCHED:  # a new sender: a new timeline
                self._lost_before += self.seq.total_lost
                self.seq = SequenceTracker(bits=16)
                self._flush()
                self._start = None
        if not self.seq.update(seq):
            return
        samples = unpack_samples(memoryview(packet)[pos:end], self.fmt.channels, self.fmt.encoding)
        self._place(ts, samples)

    def _place(self, ts: int, samples: NDArray[np.float32]) -> None:
        if self._start is None:
            self._start = ts
        rel = (ts - self._start) & 0xFFFFFFFF
        if rel >= 1 << 31:  # before the block being filled: its block has gone
            self.late += 1
            return
        if rel > self.fmt.sample_rate:  # a jump of more than a second: restart the timeline there
            self._flush()
            self._start, rel = ts, 0
        while samples.shape[0]:
            if rel >= self.block:
                self._flush()
                rel -= self.block
                continue
            take = min(self.block - rel, samples.shape[0])
            self._buf[rel : rel + take] = samples[:take]
            self._filled[rel : rel + take] = True
            self._extent = max(self._extent, rel + take)
            samples, rel = samples[take:], rel + take
            if rel >= self.block:
                self._flush()
                rel -= self.block

    def _flush(self) -> None:
        if self._start is None:
            return
        missing = int(self.block - np.count_nonzero(self._filled))
        self.samples_concealed += missing
        self._buf[~self._filled] = 0.0
        out, start = self._buf.copy(), self._start
        self._buf[:] = 0.0
        self._filled[:] = False
        self._start = (self._start + self.block) & 0xFFFFFFFF
        self._extent = 0
        self.blocks += 1
        if self.on_block is not None:
            self.on_block(out, start)
