"""Compositor cost: 4 layers of 1080p RGBA blended into one frame, on one core.

Target: < 8 ms per frame. Baseline, measured in the same run: the naive numpy blend, float64
over the full frame for every layer (``out = src * a + out * (1 - a)``).

Three layer sets, each 4 x 1920x1080 RGBA, with *new frame objects every iteration* (so
no per-frame cache helps, as in a live stream where every layer delivers a new frame):

``typical``
    an opaque video (alpha 255), a graphics overlay drawn with skia (lower third, logo:
    mostly transparent, anti-aliased edges), a picture-in-picture inset (a 480x270 video
    with rounded, anti-aliased corners on an otherwise transparent 1080p layer) and a
    full-frame 25 % tint (one alpha value everywhere).
``gradient``
    the same, with the tint replaced by a vignette: alpha varying per pixel over the
    whole frame, so the whole frame takes the per-pixel blend once.
``worst``
    4 layers of random per-pixel alpha everywhere: every pixel of every layer takes the
    per-pixel blend.

Wall time is what a frame costs on this (shared) machine; CPU time (``thread_time``)
is the same work without the time the process spent descheduled by other load.
The process is pinned to one CPU and OpenCV to one thread. Run:
``python benchmarks/bench_compositor.py [--frames 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from streamlib import VideoFrame
from streamlib.actors.compose import Compositor

W, H = 1920, 1080


def naive(layers: list[np.ndarray]) -> np.ndarray:
    """The same-run baseline: float64, full frame, every layer."""
    out = np.zeros((H, W, 3), np.float64)
    for layer in layers:
        a = layer[..., 3:4] / 255.0
        out = layer[..., :3] * a + out * (1.0 - a)
    return out.astype(np.uint8)


def _video(rng: np.random.Generator) -> np.ndarray:
    video = np.empty((H, W, 4), np.uint8)
    video[..., :3] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    video[..., 3] = 255
    return video


def _graphics(variant: int) -> np.ndarray:
    import skia  # type: ignore[import-not-found]

    graphics = np.zeros((H, W, 4), np.uint8)
    surface = skia.Surface(graphics, colorType=skia.kRGBA_8888_ColorType, alphaType=skia.kUnpremul_AlphaType)
    canvas = surface.getCanvas()
    canvas.drawRoundRect(
        skia.Rect.MakeXYWH(80, 820, 1100, 160), 24, 24, skia.Paint(AntiAlias=True, Color=skia.Color(10, 30, 120, 200))
    )
    canvas.drawString(
        f"Breaking news {variant}",
        120,
        920,
        skia.Font(skia.Typeface("sans-serif"), 72),
        skia.Paint(AntiAlias=True, Color=skia.ColorWHITE),
    )
    canvas.drawCircle(1700 + variant, 150, 90, skia.Paint(AntiAlias=True, Color=skia.Color(255, 60, 0, 230)))
    del canvas, surface
    return graphics


def _pip(rng: np.random.Generator) -> np.ndarray:
    import skia

    layer = np.zeros((H, W, 4), np.uint8)
    surface = skia.Surface(layer, colorType=skia.kRGBA_8888_ColorType, alphaType=skia.kUnpremul_AlphaType)
    inset = np.empty((270, 480, 4), np.uint8)
    inset[..., :3] = rng.integers(0, 256, (270, 480, 3), dtype=np.uint8)
    inset[..., 3] = 255
    image = skia.Image.fromarray(inset, colorType=skia.kRGBA_8888_ColorType)
    canvas = surface.getCanvas()
    canvas.clipRRect(skia.RRect.MakeRectXY(skia.Rect.MakeXYWH(1380, 740, 480, 270), 20, 20), doAntiAlias=True)
    canvas.drawImage(image, 1380, 740)
    del canvas, surface
    return layer


def typical_layers(rng: np.random.Generator, variant: int) -> list[np.ndarray]:
    tint = np.empty((H, W, 4), np.uint8)
    tint[...] = (255, 180, 0, 64)
    return [_video(rng), _graphics(variant), _pip(rng), tint]


def gradient_layers(rng: np.random.Generator, variant: int) -> list[np.ndarray]:
    y, x = np.ogrid[-1 : 1 : H * 1j, -1 : 1 : W * 1j]
    vignette = np.zeros((H, W, 4), np.uint8)
    vignette[..., 3] = (np.clip((x * x + y * y) * 0.6, 0, 1) * 255).astype(np.uint8)
    return [*typical_layers(rng, variant)[:3], vignette]


def worst_layers(rng: np.random.Generator, variant: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (H, W, 4), dtype=np.uint8) for _ in range(4)]


def timed(fn: Callable[[int], Any], n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of ``n`` calls (after one warm-up call)."""
    fn(0)
    wall, cpu = [], []
    for i in range(n):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn(i)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def run(frames: int, naive_frames: int, channels: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    names = ["video", "graphics", "pip", "top"]
    comp = Compositor(W, H, fps=None, base=None, channels=channels)
    for z, name in enumerate(names):
        comp.add_layer(name, z=z)
    results: dict[str, Any] = {}
    print(
        f"{'layers':9s} {'compositor wall':>16s} {'(CPU)':>9s} {'naive f64 wall':>15s} {'(CPU)':>9s} "
        f"{'speed-up':>9s} {'max |diff|':>10s}"
    )
    for scenario, make in (("typical", typical_layers), ("gradient", gradient_layers), ("worst", worst_layers)):
        versions = [make(rng, v) for v in range(2)]  # alternate two sets, each time as new frame objects

        def ours(i: int, versions: list[list[np.ndarray]] = versions) -> np.ndarray | None:
            layers = versions[i % 2]
            return comp.render_frames({n: VideoFrame(d, frame_number=i) for n, d in zip(names, layers, strict=True)})

        def baseline(i: int, versions: list[list[np.ndarray]] = versions) -> np.ndarray:
            return naive(versions[i % 2])

        wall, cpu = timed(ours, frames)
        base_wall, base_cpu = timed(baseline, naive_frames)
        out = ours(0)
        assert out is not None
        error = int(np.abs(out[..., :3].astype(np.int16) - naive(versions[0]).astype(np.int16)).max())
        speedup = statistics.median(base_cpu) / statistics.median(cpu)
        results[scenario] = {
            "wall_ms": ms(wall),
            "cpu_ms": ms(cpu),
            "naive_wall_ms": ms(base_wall),
            "naive_cpu_ms": ms(base_cpu),
            "speedup": speedup,
            "max_error": error,
        }
        print(
            f"{scenario:9s} {ms(wall):13.2f} ms {ms(cpu):6.2f} ms {ms(base_wall):12.1f} ms {ms(base_cpu):6.1f} ms "
            f"{speedup:8.1f}x {error:10d}"
        )
    await comp.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--naive-frames", type=int, default=6)
    parser.add_argument(
        "--channels",
        type=int,
        default=4,
        choices=(3, 4),
        help="the compositor's output: 4 = RGBA (the blend itself), 3 = RGB (one conversion more)",
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    print(
        f"4 layers of {W}x{H} RGBA into {'RGBA' if args.channels == 4 else 'RGB'}, one core "
        f"(load average now: {os.getloadavg()[0]:.2f})"
    )
    results = asyncio.run(run(args.frames, args.naive_frames, args.channels))
    print("target < 8 ms per frame (4 x 1080p RGBA, one core), medians:")
    for scenario, r in results.items():
        verdict = "MET" if r["cpu_ms"] < 8 else "MISSED"
        print(f"  {scenario:9s} {r['cpu_ms']:6.2f} ms CPU ({r['wall_ms']:.2f} ms wall) -> {verdict}")


if __name__ == "__main__":
    main()
