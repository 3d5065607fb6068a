"""GPU actors on wgpu: a 3-effect chain at 1080p against the same effects on the CPU, transfer
costs, and steady-state GPU memory over 10,000 frames.

What is measured, in one run (same frames, same machine):

``GPU chain``
    ``Invert >> Grade >> GaussianBlur(sigma=2)`` as ShaderActors on ``dispatcher="gpu"``
    (4 compute passes per frame), lossless (``overflow="block"``), ``--frames`` 1920x1080
    RGB frames. Two ways: *GPU-resident* (frames uploaded beforehand, results left on the
    GPU; the clock stops when the last result has been read back, so every frame's work is
    done) and *CPU in, CPU out* (numpy frames in, numpy frames out: ``>>`` inserts one
    Upload and one Download actor).
``CPU``
    the same three effects, same maths, on numpy arrays: with OpenCV (``255 - x`` via
    ``cv2.bitwise_not``, the grade's linear part as one ``cv2.transform`` plus a gamma
    ``cv2.LUT``, ``cv2.GaussianBlur``) and in plain numpy float32; each as a plain loop in
    one thread, and the OpenCV one also as a chain of 3 actors on their own threads.
``transfers``
    a 1080p RGB upload (to the GPU and done) and download (back in a numpy array), alone.
``memory``
    ``--memory-frames`` (10,000) small frames through the CPU-in/CPU-out chain; the GPU
    objects alive (textures, buffers, bind groups, wgpu's resource memory, the texture
    pool's bytes) and the process RSS are sampled after the warm-up and at the end: they
    must not grow.

Where there is no GPU, wgpu runs on Mesa's software Vulkan driver (lavapipe, "llvmpipe"):
the "GPU" is then the same CPU cores, so expect the CPU/OpenCV baseline to win there; on a
real GPU the chain's cost is almost all transfer. The adapter used is printed.

Run: ``python benchmarks/bench_gpu.py [--frames 30] [--memory-frames 10000] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from streamlib import Actor, StreamInput, StreamOutput, ThreadPoolDispatcher, TimedTick, VideoFrame, gpu
from streamlib.testing import Feeder

W, H = 1920, 1080
GRADE = {"brightness": 0.05, "contrast": 1.2, "saturation": 0.8, "gamma": 1.1}
SIGMA = 2.0
LOSSLESS: dict[str, Any] = {"maxsize": 4, "overflow": "block"}


# ----------------------------------------------------------------------------- CPU baselines


def opencv_stages() -> list[Callable[[np.ndarray], np.ndarray]]:
    """The three effects with OpenCV, what a careful CPU implementation does: invert, the
    grade's linear part (contrast, brightness, saturation) as one 3x4 ``cv2.transform`` and
    its gamma as a ``cv2.LUT``, and OpenCV's separable gaussian blur."""
    import cv2

    c, b, s, g = GRADE["contrast"], GRADE["brightness"], GRADE["saturation"], GRADE["gamma"]
    luma = np.array([0.2126, 0.7152, 0.0722])
    sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), luma)  # rgb' = sat @ rgb
    offset = sat @ np.full(3, 255 * (0.5 - 0.5 * c + b))  # (x - 127.5) c + 127.5 + 255 b, on 0..255
    matrix = np.hstack([sat * c, offset[:, None]]).astype(np.float32)
    lut = np.clip(np.rint(255 * (np.arange(256) / 255) ** (1 / g)), 0, 255).astype(np.uint8)
    k = 2 * math.ceil(3 * SIGMA) + 1

    def invert(x: np.ndarray) -> np.ndarray:
        return cv2.bitwise_not(x)  # type: ignore[no-any-return]

    def grade(x: np.ndarray) -> np.ndarray:
        return cv2.LUT(cv2.transform(x, matrix), lut)  # type: ignore[no-any-return]

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (k, k), SIGMA, borderType=cv2.BORDER_REPLICATE)  # type: ignore[no-any-return]

    return [invert, grade, blur]


def cpu_numpy() -> Callable[[np.ndarray], np.ndarray]:
    """The same maths as the shaders, in numpy float32 (the effects' reference functions)."""
    from streamlib.actors.gpu import GaussianBlur, Grade, Invert

    def run(x: np.ndarray) -> np.ndarray:
        return GaussianBlur.reference(Grade.reference(Invert.reference(x), **GRADE), SIGMA)

    return run


class CpuEffect(Actor):
    """One CPU effect as an actor on its own thread (the CPU pipeline's stages)."""

    default_fps = None

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], **kw: Any) -> None:
        super().__init__(dispatcher=ThreadPoolDispatcher(workers=1), **kw)
        self.fn = fn
        self.inputs["video"] = StreamInput("video", VideoFrame, **LOSSLESS)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is not None:
            await self.outputs["video"].send(frame.with_data(self.fn(frame.data)))


class Sink(Actor):
    """Counts frames and keeps only the last (any memory space)."""

    default_fps = None

    def __init__(self, memory: str = "cpu", **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame, memory=memory, **LOSSLESS)  # type: ignore[arg-type]
        self.count = 0
        self.last: VideoFrame | None = None
        self.waiter: tuple[int, asyncio.Future[None]] | None = None

    async def process(self, tick: TimedTick) -> None:
        frame = self.inputs["video"].read_nowait()
        if frame is None:
            return
        self.count += 1
        self.last = frame
        if self.waiter is not None and self.count >= self.waiter[0] and not self.waiter[1].done():
            self.waiter[1].set_result(None)

    async def wait_for(self, n: int, timeout: float = 600.0) -> None:
        if self.count < n:
            self.waiter = (n, asyncio.get_running_loop().create_future())
            await asyncio.wait_for(self.waiter[1], timeout)


async def run_chain(stages: list[Actor], frames: list[VideoFrame], sink_memory: str = "cpu") -> float:
    """Frames/s of ``feeder >> stages... >> sink``, lossless, until the last frame is done."""
    feeder, sink = Feeder(VideoFrame), Sink(sink_memory)
    chain: Any = feeder
    for stage in stages:
        chain = chain >> stage
    chain >> sink
    await feeder.send(frames[0])  # warm-up: pipelines compiled, pools filled
    await sink.wait_for(1)
    start = time.perf_counter()
    for frame in frames[1:]:
        await feeder.send(frame)
    await sink.wait_for(len(frames))
    if sink.last is not None and sink.last.is_gpu():
        await gpu.download_async(sink.last.data)  # the last frame's work is really done
    elapsed = time.perf_counter() - start
    await feeder.stop()
    await sink.join()
    for stage in stages:
        await stage.stop()
    return (len(frames) - 1) / elapsed


def gpu_chain() -> list[Actor]:
    from streamlib.actors.gpu import GaussianBlur, Grade, Invert

    return [Invert(**LOSSLESS), Grade(**GRADE, **LOSSLESS), GaussianBlur(sigma=SIGMA, **LOSSLESS)]


# ----------------------------------------------------------------------------- measurements


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def transfer_costs(reps: int) -> dict[str, float]:
    ctx = gpu.context()
    pixels = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    gpu.download(gpu.upload(pixels))  # warm
    up, down = [], []
    for _ in range(reps):
        start = time.perf_counter()
        image = gpu.upload(pixels)
        ctx.device.queue.submit([])
        tiny = gpu.upload(np.zeros((1, 1, 4), np.uint8))
        gpu.download(tiny)  # waits for the queue: the upload is on the GPU
        up.append(time.perf_counter() - start)
        start = time.perf_counter()
        back = gpu.download(image)
        down.append(time.perf_counter() - start)
        assert back.shape == pixels.shape
    mb = pixels.nbytes / 1e6
    return {
        "upload_ms": 1e3 * float(np.median(up)),
        "download_ms": 1e3 * float(np.median(down)),
        "upload_gbs": mb / 1e3 / float(np.median(up)),
        "download_gbs": mb / 1e3 / float(np.median(down)),
    }


async def memory_check(n: int, size: tuple[int, int]) -> dict[str, Any]:
    ctx = gpu.context()
    w, h = size
    rng = np.random.default_rng(3)
    sources = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
    feeder, sink = Feeder(VideoFrame), Sink("cpu")
    stages = gpu_chain()
    chain: Any = feeder
    for stage in stages:
        chain = chain >> stage
    chain >> sink
    warm = min(1000, n // 10)
    samples: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for i in range(n):
        await feeder.send(VideoFrame(sources[i % 4], frame_number=i, timestamp=i / 30))
        if i + 1 in (warm, n):
            await sink.wait_for(i + 1)
            await asyncio.sleep(0.05)
            samples["warm" if i + 1 == warm else "end"] = {**ctx.memory(), "rss_mb": rss_mb()}
    elapsed = time.perf_counter() - start
    await feeder.stop()
    await sink.join()
    for stage in stages:
        await stage.stop()
    return {"frames": n, "fps": n / elapsed, "size": f"{w}x{h}", **samples}


# ----------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> int:
    from streamlib.actors.gpu import TransferWarning

    warnings.simplefilter("ignore", TransferWarning)  # the costs are measured and printed below
    ctx = gpu.context()
    print(f"adapter: {ctx.name} (chosen by {ctx.chosen_by}); {os.cpu_count()} CPU cores")
    rng = np.random.default_rng(0)
    base = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(4)]
    frames = [VideoFrame(base[i % 4], frame_number=i, timestamp=i / 30) for i in range(args.frames + 1)]

    rows: list[tuple[str, float]] = []
    # GPU-resident: frames already on the GPU, results left there
    resident = [f.with_data(gpu.upload(f.data)) for f in frames]
    rows.append(
        (
            "GPU chain, GPU-resident (llvmpipe: the GPU is these CPU cores)",
            await run_chain(gpu_chain(), resident, sink_memory="gpu"),
        )
    )
    del resident
    rows.append(
        ("GPU chain, CPU in -> upload -> 3 effects -> download -> CPU out", await run_chain(gpu_chain(), frames))
    )

    invert, grade, blur = opencv_stages()
    start = time.perf_counter()
    for f in frames[1:]:
        blur(grade(invert(f.data)))
    rows.append(("CPU, OpenCV, plain loop (one thread)", args.frames / (time.perf_counter() - start)))
    rows.append(
        (
            "CPU, OpenCV, 3 actors on their own threads",
            await run_chain([CpuEffect(invert), CpuEffect(grade), CpuEffect(blur)], frames),
        )
    )
    slow = frames[1 : 1 + max(3, args.frames // 5)]
    numpy_fn = cpu_numpy()
    start = time.perf_counter()
    for f in slow:
        numpy_fn(f.data)
    rows.append(("CPU, numpy float32 (the shaders' maths), plain loop", len(slow) / (time.perf_counter() - start)))

    print(f"\n3 effects (invert, grade, gaussian blur sigma={SIGMA}) on {W}x{H} RGB frames, {args.frames} frames")
    print(f"{'pipeline':<66} {'frames/s':>9}")
    for name, fps in rows:
        print(f"{name:<66} {fps:>9.2f}")

    costs = await asyncio.to_thread(transfer_costs, args.transfer_reps)  # blocking calls: off the loop
    print(f"\ntransfers of one {W}x{H} RGB frame (median of {args.transfer_reps}; convert_on_cpu={ctx.convert_on_cpu})")
    print(f"  upload   {costs['upload_ms']:7.2f} ms  ({costs['upload_gbs']:.2f} GB/s)")
    print(f"  download {costs['download_ms']:7.2f} ms  ({costs['download_gbs']:.2f} GB/s)")

    w, h = (int(v) for v in args.memory_size.split("x"))
    mem = await memory_check(args.memory_frames, (w, h))
    print(
        f"\nsteady-state memory: {mem['frames']} frames of {mem['size']} through upload >> 3 effects >> download "
        f"({mem['fps']:.0f} frames/s)"
    )
    keys = ["allocated", "live_bytes", "textures", "buffers", "bind_groups", "resource_mem", "pipelines", "rss_mb"]
    print(f"{'':<14}" + "".join(f"{k:>14}" for k in keys))
    for label in ("warm", "end"):
        print(f"{label:<14}" + "".join(f"{mem[label][k]:>14.6g}" for k in keys))
    grew = [k for k in keys[:-1] if mem["end"][k] > mem["warm"][k]]
    rss_growth = mem["end"]["rss_mb"] - mem["warm"]["rss_mb"]
    ok = not grew and rss_growth < 50
    print(
        f"GPU memory growth after warm-up: {', '.join(grew) or 'none'}; RSS {rss_growth:+.1f} MB -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="1080p frames per pipeline (default 30)")
    parser.add_argument("--memory-frames", type=int, default=10_000, help="frames for the memory check")
    parser.add_argument("--memory-size", default="160x90", help="frame size for the memory check (WxH)")
    parser.add_argument("--transfer-reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 6 frames, 500 for memory")
    options = parser.parse_args()
    if options.quick:
        options.frames, options.memory_frames, options.transfer_reps = 6, 500, 3
    import uvloop

    sys.exit(uvloop.run(main(options)))
