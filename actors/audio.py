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

    Each input's samples queue in a FIFO; a block is mixed once every live input has
    samples for it, so sources delivering different block sizes mix sample-accurately.
    An input that falls silent (or never delivers) is treated as silence once another
    input is more than ``max_latency`` seconds ahead, so one stalled source never stalls
    the mix. All inputs must share one sample rate; a mono input is spread over the
    others' channels. Output blocks carry the timestamp of their first sample.
    """

    default_fps: ClassVar[float | None] = 100.0  # polls stalled inputs and flushes at end of stream

    def __init__(
        self,
        inputs: int = 2,
        *,
        gains: Sequence[float] | None = None,
        max_latency: float = 0.1,
        maxsize: int = 16,
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
        self.names = [f"in{i}" for i in range(inputs)]
        for name in self.names:
            self.inputs[name] = StreamInput(name, AudioBuffer, maxsize=maxsize)
        self.outputs["audio"] = StreamOutput("audio", AudioBuffer)
        self._fifos: dict[str, deque[NDArray[np.float32]]] = {n: deque() for n in self.names}
        self._counts: dict[str, int] = dict.fromkeys(self.names, 0)
        self._head_time: dict[str, float] = {}
        self._rate: int | None = None
        self._channels = 1
        self._blocks = 0
        self._flushing = False

    def on_end_of_stream(self) -> None:
        """Every input ended: mix out what is still queued on the next tick, then stop."""
        self._flushing = True

    async def process(self, tick: TimedTick) -> None:
        for name in self.names:
            port = self.inputs[name]
            while (buf := port.read_nowait()) is not None:
                self._take(name, buf)
        if self._rate is None:
            if self._flushing:
                self.stop()
            return
        live = [n for n in self.names if self.inputs[n].connected and not self.inputs[n].ended]
        ready = min((self._counts[n] for n in live), default=0)
        longest = max(self._counts.values())
        if self._flushing or not live or longest - ready > self.max_latency * self._rate:
            ready = longest
        if ready:
            await self._emit(ready, tick)
        if self._flushing:
            self.stop()

    def _take(self, name: str, buf: AudioBuffer) -> None:
        data = np.asarray(buf.data, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if self._rate is None:
            self._rate = buf.sample_rate
        if buf.sample_rate != self._rate:
            raise ValueError(
                f"{self.path}: {name} delivers {buf.sample_rate} Hz audio but the mix runs at {self._rate} Hz; "
                "resample it first"
            )
        if data.shape[1] != 1 and self._channels not in (1, data.shape[1]):
            raise ValueError(f"{self.path}: {name} has {data.shape[1]} channels but the mix has {self._channels}")
        self._channels = max(self._channels, data.shape[1])
        if not self._counts[name]:
            self._head_time[name] = buf.timestamp
        self._fifos[name].append(data)
        self._counts[name] += data.shape[0]

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

    async def _emit(self, n: int, tick: TimedTick) -> None:
        assert self._rate is not None
        starts = [self._head_time[name] for name in self.names if self._counts[name] and name in self._head_time]
        timestamp = min(starts) if starts else tick.timestamp
        mix = np.zeros((n, self._channels), np.float32)
        for name, gain in zip(self.names, self.gains, strict=True):
            part = self._pop(name, n)
            if part.shape[0]:
                mix[: part.shape[0]] += gain * part  # a mono part broadcasts over the channels
        np.clip(mix, -1.0, 1.0, out=mix)
        block = AudioBuffer(
            data=mix,
            sample_rate=self._rate,
            timestamp=timestamp,
            clock_source_id=tick.clock_source_id,
            frame_number=self._blocks,
            clock_rate=tick.fps,
        )
        self._blocks += 1
        await self.outputs["audio"].send(block)
