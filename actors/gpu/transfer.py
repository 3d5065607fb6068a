"""Upload and Download: the actors that move frames between CPU and GPU memory.

``>>`` inserts them by itself between a CPU-only output and a GPU-only input (and the
reverse): importing this module registers them with
:func:`streamlib.ports.register_transfer`. An inserted transfer is a sibling of the
downstream actor (so it lives in the same supervision tree), takes that input's mailbox
size and overflow policy, and after its first few frames warns once
(:class:`TransferWarning`) with what a transfer measurably costs per frame.
``output // input`` removes it again.

They can also be placed by hand: ``camera >> Upload() >> effect``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from typing import Any, ClassVar

from streamlib import Actor, Dispatcher, StreamInput, StreamOutput, TimedTick, VideoFrame
from streamlib.gpu import GPUContext, readback_thread, upload
from streamlib.mailbox import Overflow
from streamlib.ports import register_transfer

from .shader import gpu_dispatcher

__all__ = ["Download", "TransferWarning", "Upload"]

log = logging.getLogger("streamlib.gpu")


class TransferWarning(UserWarning):
    """A CPU↔GPU transfer was inserted automatically; the message says what it costs."""


_warned: dict[str, int] = {}  # transfer path -> id of the input it warned for
_warned_lock = threading.Lock()


class _Transfer(Actor):
    direction: ClassVar[str] = ""
    warn_after: ClassVar[int] = 5
    """Frames measured (after a first, warm-up one) before an inserted transfer's one warning."""
    default_fps: ClassVar[float | None] = None
    gpu: GPUContext

    def __init__(
        self,
        maxsize: int = 2,
        overflow: Overflow = "drop_oldest",
        *,
        between: str | None = None,
        dispatcher: Dispatcher | str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dispatcher=gpu_dispatcher(dispatcher), **kw)
        src, dst = self.direction.split("->")
        self.inputs["video"] = StreamInput(
            "video",
            VideoFrame,
            maxsize=maxsize,
            overflow=overflow,
            memory=src,  # type: ignore[arg-type]
        )
        self.outputs["video"] = StreamOutput("video", VideoFrame, memory=dst)  # type: ignore[arg-type]
        self.between = between
        """``"output path >> input path"`` when ``>>`` inserted this transfer, else None."""
        self.transfers = 0
        self.bytes = 0
        self.cpu_seconds = 0.0
        """CPU time spent converting and copying (the first, warm-up transfer excluded)."""
        self.latency_seconds = 0.0
        """Wall time from start to finished transfer, waiting for the GPU included (first excluded)."""

    @property
    def mean_ms(self) -> float:
        """Mean CPU cost of one transfer, in milliseconds (the first, warm-up one excluded)."""
        measured = self.transfers - 1
        return 1000.0 * self.cpu_seconds / measured if measured > 0 else 0.0

    @property
    def mean_latency_ms(self) -> float:
        measured = self.transfers - 1
        return 1000.0 * self.latency_seconds / measured if measured > 0 else 0.0

    def _account(self, cpu: float, latency: float, frame: VideoFrame) -> None:
        self.transfers += 1
        self.bytes += frame.width * frame.height * frame.channels
        if self.transfers > 1:
            self.cpu_seconds += cpu
            self.latency_seconds += latency
        if self.between is None or self.transfers != self.warn_after + 1:
            return
        port = id(self.inputs["video"])  # a restarted transfer keeps its ports: it warned already
        with _warned_lock:
            if _warned.get(self.path) == port:
                return
            _warned[self.path] = port
        if self.direction == "cpu->gpu":
            cost = f"costs {self.mean_ms:.2f} ms of CPU per"
            what = "CPU->GPU upload"
        else:
            cost = f"costs {self.mean_ms:.2f} ms of CPU ({self.mean_latency_ms:.2f} ms latency, GPU wait included) per"
            what = "GPU->CPU download"
        text = (
            f"{self.path}: automatically inserted {what} for {self.between} {cost} "
            f"{frame.width}x{frame.height}x{frame.channels} frame (mean of {self.transfers - 1}); "
            "keep neighbouring actors in one memory space to avoid it"
        )
        log.warning("%s", text)
        warnings.warn(TransferWarning(text), stacklevel=1)


class Upload(_Transfer):
    """CPU frames in (``memory="cpu"``), the same frames on the GPU out (``memory="gpu"``)."""

    direction = "cpu->gpu"

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is None:
            return
        if not frame.is_gpu():
            start = time.perf_counter()
            image = upload(frame.data, ctx=self.gpu)
            spent = time.perf_counter() - start
            self._account(spent, spent, frame)
            frame = frame.with_data(image)
        await self.outputs["video"].send(frame)


class Download(_Transfer):
    """GPU frames in (``memory="gpu"``), the same frames as numpy arrays out (``memory="cpu"``).

    The wait for the GPU happens on a readback thread (see :func:`streamlib.gpu.download_async`):
    neither the actors' loop nor the GPU thread is held meanwhile."""

    direction = "gpu->cpu"

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is None:
            return
        if frame.is_gpu():
            start = time.perf_counter()
            job = self.gpu.start_download(frame.data)
            pixels = await asyncio.wrap_future(readback_thread().submit(job.finish))
            self._account(job.encode_s + job.copy_s, time.perf_counter() - start, frame)
            frame = frame.with_data(pixels)
        await self.outputs["video"].send(frame)


def _inserter(cls: type[_Transfer]) -> Any:
    def insert(output: StreamOutput, port: StreamInput) -> _Transfer:
        owner = port.owner
        parent = owner.parent if isinstance(owner, Actor) else None
        transfer = cls(
            port.mailbox.maxsize,
            port.mailbox.overflow,
            between=f"{output.path} >> {port.path}",
            parent=parent,
        )
        log.info("inserted %s between %s and %s", transfer.path, output.path, port.path)
        return transfer

    return insert


register_transfer("cpu", "gpu", _inserter(Upload))
register_transfer("gpu", "cpu", _inserter(Download))
