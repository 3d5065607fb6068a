"""Audio actors: :class:`AudioGenerator` (sine, white noise) and :class:`AudioMixer`.

Audio travels as :class:`~streamlib.AudioBuffer` blocks of float32 ``(samples,
channels)`` in [-1, 1]. File audio in and out goes through
:class:`~streamlib.actors.files.FileSource` and :class:`~streamlib.actors.files.FileSink`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from streamlib import Actor, AudioBuffer, StreamInput, StreamOutput, TimedTick

__all__ = ["AudioGenerator", "AudioMixer"]

Waveform = Literal["sine", "noise"]


class AudioGenerator(Actor):
    """A test tone: a sine at ``frequency`` Hz, or white noise, ``amplitude`` peak.

    Emits blocks of ``block_size`` samples on its own clock at ``sample_rate /
    block_size`` ticks per second, so it produces audio in real time. The waveform is
    continuous across blocks (the phase comes from a running sample count, never from
    the clock), so a tick the clock had to skip does not click. ``realtime=False``
    generates as fast as downstream accepts (for offline renders into blocking inputs),
    stamping blocks with the sample clock: ``t0 + samples_so_far / sample_rate``.
    ``duration`` (seconds) stops the generator, ending the stream, after that much audio.
    """

    def __init__(
        self,
        frequency: float = 440.0,
        *,
        waveform: Waveform = "sine",
        amplitude: float = 0.5,
        sample_rate: int = 48000,
        channels: int = 2,
        block_size: int = 1024,
        realtime: bool = True,
        duration: float | None = None,
        seed: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if waveform not in ("sine", "noise"):
            raise ValueError(f"{self.path}: waveform must be 'sine' or 'noise', got {waveform!r}")
        if sample_rate <= 0 or channels <= 0 or block_size <= 0:
            raise ValueError(f"{self.path}: sample_rate, channels and block_size must be > 0")
        if waveform == "sine" and not 0 <= frequency < sample_rate / 2:
            raise ValueError(f"{self.path}: a {frequency} Hz sine cannot be sampled at {sample_rate} Hz (Nyquist)")
        self.frequency = float(frequency)
        self.waveform: Waveform = waveform
        self.amplitude = float(amplitude)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_size = int(block_size)
        self.realtime = realtime
        # One tick per block in real time; unbounded otherwise.
        self.own_fps = self.sample_rate / self.block_size if realtime else math.inf
        self.duration = duration
        self._rng = np.random.default_rng(seed)
        self._t0: float | None = None
        self.samples_generated = 0
        self.outputs["audio"] = StreamOutput("audio", AudioBuffer)

    def _block(self, n: int) -> NDArray[np.float32]:
        if self.waveform == "sine":
            k = np.arange(self.samples_generated, self.samples_generated + n, dtype=np.float64)
            mono = self.amplitude * np.sin(2.0 * np.pi * self.frequency * k / self.sample_rate)
        else:
            mono = self.amplitude * self._rng.uniform(-1.0, 1.0, n)
        return np.repeat(mono.astype(np.float32)[:, None], self.channels, axis=1)

    async def process(self, tick: TimedTick) -> None:
        n = self.block_size
        if self.duration is not None:
            n = min(n, round(self.duration * self.sample_rate) - self.samples_generated)
            if n <= 0:
                self.stop()
                return
        if self.realtime:
            timestamp = tick.timestamp
        else:
            if self._t0 is None:
                self._t0 = time.monotonic()
            timestamp = self._t0 + self.samples_generated / self.sample_rate
        data = self._block(n)
        block = AudioBuffer(
            data=data,
            sample_rate=self.sample_rate,
            timestamp=timestamp,
            clock_source_id=tick.clock_source_id,
            frame_number=tick.frame_number,
            clock_rate=self.sample_rate / self.block_size,
        )
        self.samples_generated += n
        await self.outputs["audio"].send(block)


class AudioMixer(Actor):
    """Sums ``inputs`` audio streams (``'in0'``, ``'in1'``, ...) with ``gains``, clipping to [-1, 1].

    Mixing by time. Each input's samples are placed on the timeline by their blocks'
    timestamps: a block that follows the previous one within jitter (half a block, at
    least 10 ms) joins it end to end, so sources delivering different block sizes mix
    sample-accurately; a later block leaves a gap that mixes as silence; an earlier one
    overlaps, and the overlap is dropped and counted in :attr:`late_samples`. The mix
    starts at the earliest input's first sample, and each output block carries the
    timestamp of its first sample. All inputs must share one sample rate; a mono input
    is spread over the others' channels.

    Realtime (default): inputs keep the newest ``maxsize`` blocks (``drop_oldest``), and a
    stretch of time is mixed once every live input has covered it -- or, when one input
    stalls, once another is more than ``max_latency`` seconds ahead: the stalled one then
    counts as silence (what it sends later than the mix is dropped, counted), so one
    stalled source never stalls the mix and the output lags by at most ``max_latency``.

    ``lossless=True``, for offline renders (``realtime=False`` sources): blocking inputs,
    and the mix waits for every live input however far behind it is in wall-clock time,
    so nothing is dropped and every source lands at its own timestamps. (An input that
    runs more than ``buffer_seconds`` ahead of the others waits in its mailbox, which
    holds its source back.)
    """

    default_fps: ClassVar[float | None] = 100.0  # polls stalled inputs and flushes at end of stream

    def __init__(
        self,
        inputs: int = 2,
        *,
        gains: Sequence[float] | None = None,
        max_latency: float = 0.1,
        maxsize: int = 16,
        lossless: bool = False,
        buffer_seconds: float = 10.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if inputs < 1:
            raise ValueError(f"{self.path}: inputs must be >= 1, got {inputs!r}")
        gains = list(gains) if gains is not None else [1.0] * inputs
        if len(gains) != inputs:
            raise ValueError(f"{self.path}: {inputs} inputs but {len(gains)} gains")
        self.gains = [float(g) for g in gains]
        self.max_latency = max_latency
        self.lossless = lossless
        self.buffer_seconds = buffer_seconds
        self.names = [f"in{i}" for i in range(inputs)]
        for name in self.names:
            self.inputs[name] = StreamInput(
                name, AudioBuffer, maxsize=maxsize, overflow="block" if lossless else "drop_oldest"
            )
        self.outputs["audio"] = StreamOutput("audio", AudioBuffer)
        self._fifos: dict[str, deque[NDArray[np.float32]]] = {n: deque() for n in self.names}
        self._counts: dict[str, int] = dict.fromkeys(self.names, 0)
        self._head_time: dict[str, float] = {}  # time of each input's first queued sample
        self._end_time: dict[str, float] = {}  # time just after each input's last sample so far
        self._next: float | None = None  # time of the next output sample
        self._rate: int | None = None
        self._channels = 1
        self._blocks = 0
        self._flushing = False
        self.late_samples = 0  # input samples dropped because the mix had passed their time
        self.samples_out = 0

    def on_end_of_stream(self) -> None:
        """Every input ended: mix out what is still queued on the next tick, then stop."""
        self._flushing = True

    async def process(self, tick: TimedTick) -> None:
        for name in self.names:
            port = self.inputs[name]
            while not self._full(name) and (buf := port.read_nowait()) is not None:
                self._take(name, buf)
        if self._rate is None:
            if self._flushing:
                self.stop()
            return
        until = self._mixable_until()
        if until is not None:
            await self._emit_until(until, tick)
        if self._flushing:
            self.stop()

    def _full(self, name: str) -> bool:
        return self._rate is not None and self._counts[name] >= self.buffer_seconds * self._rate

    def _mixable_until(self) -> float | None:
        """Up to which time the mix can be made now (None: not yet)."""
        queued = [n for n in self.names if self._counts[n]]
        if not queued:
            return None
        latest = max(self._end_time[n] for n in queued)
        live = [n for n in self.names if self.inputs[n].connected and not self.inputs[n].ended]
        if self._flushing or not live:
            return latest
        if all(n in self._end_time for n in live):
            covered = min(self._end_time[n] for n in live)
            if self.lossless or latest - covered <= self.max_latency:
                return covered
        elif self.lossless:
            return None  # a live input has not shown where its stream starts yet
        return latest - self.max_latency  # a stalled input: mix without it, max_latency behind

    def _take(self, name: str, buf: AudioBuffer) -> None:
        data = np.asarray(buf.data, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if self._rate is None:
            self._rate = buf.sample_rate
        rate = self._rate
        if buf.sample_rate != rate:
            raise ValueError(
                f"{self.path}: {name} delivers {buf.sample_rate} Hz audio but the mix runs at {rate} Hz; "
                "resample it first"
            )
        if data.shape[1] != 1 and self._channels not in (1, data.shape[1]):
            raise ValueError(f"{self.path}: {name} has {data.shape[1]} channels but the mix has {self._channels}")
        self._channels = max(self._channels, data.shape[1])
        start = buf.timestamp
        end = self._end_time.get(name)
        if end is not None:
            jitter = max(data.shape[0] / 2, rate / 100) / rate
            gap = start - end
            if gap > jitter:  # blocks missing (dropped upstream, a pause): silence until this one
                self._queue(name, np.zeros((round(gap * rate), data.shape[1]), np.float32), end)
            elif gap < -jitter:  # overlaps what this input already sent: drop the overlap
                skip = min(round(-gap * rate), data.shape[0])
                self.late_samples += skip
                data = data[skip:]
            start = self._end_time[name]
        self._queue(name, data, start)

    def _queue(self, name: str, data: NDArray[np.float32], start: float) -> None:
        assert self._rate is not None
        if not data.shape[0]:
            self._end_time.setdefault(name, start)
            return
        if not self._counts[name]:
            self._head_time[name] = start
        self._fifos[name].append(data)
        self._counts[name] += data.shape[0]
        self._end_time[name] = start + data.shape[0] / self._rate

    def _pop(self, name: str, n: int) -> NDArray[np.float32]:
        """Up to ``n`` samples from ``name``'s FIFO (fewer if it has fewer)."""
        fifo, parts, want = self._fifos[name], [], n
        while want and fifo:
            head = fifo[0]
            if head.shape[0] <= want:
                parts.append(fifo.popleft())
                want -= head.shape[0]
            else:
                parts.append(head[:want])
                fifo[0] = head[want:]
                want = 0
        taken = n - want
        self._counts[name] -= taken
        if name in self._head_time and self._rate:
            self._head_time[name] += taken / self._rate
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)

    async def _emit_until(self, until: float, tick: TimedTick) -> None:
        rate = self._rate
        assert rate is not None
        if self._next is None:
            self._next = min(self._head_time[n] for n in self.names if self._counts[n])
        start = self._next
        n = round((until - start) * rate)
        if n <= 0:
            return
        mix = np.zeros((n, self._channels), np.float32)
        for name, gain in zip(self.names, self.gains, strict=True):
            if not self._counts[name]:
                continue
            offset = round((self._head_time[name] - start) * rate)
            if offset < 0:  # samples whose time the mix has passed (a stalled input catching up)
                self.late_samples += self._pop(name, -offset).shape[0]
                offset = 0
            if offset < n and self._counts[name]:
                part = self._pop(name, n - offset)
                mix[offset : offset + part.shape[0]] += gain * part  # a mono part broadcasts over the channels
        np.clip(mix, -1.0, 1.0, out=mix)
        self._next = start + n / rate
        block = AudioBuffer(
            data=mix,
            sample_rate=rate,
            timestamp=start,
            clock_source_id=tick.clock_source_id,
            frame_number=self._blocks,
            clock_rate=tick.fps,
        )
        self._blocks += 1
        self.samples_out += n
        await self.outputs["audio"].send(block)
