"""Network media: ST 2110-20 loopback throughput, pacing and loss; H.264 glass-to-glass latency.

Figures (each next to ffmpeg doing the same in the same run where a peer exists):

* 720p30 YCbCr-4:2:2 10-bit, streamlib -> streamlib over loopback: received fps, packet loss,
  sender and receiver CPU (each side in its own process; CPU = process time / wall time).
* 1080p30 4:2:2 8-bit, streamlib -> streamlib: fps and loss, plus the sender's measured
  burst size and ST 2110-21 figures computed from its per-packet send times: CMAX (network
  compatibility model, drain at beta = 1.1 times the mean rate) and VRX (virtual receiver buffer,
  drained at the ideal rate TRS = TR_ACTIVE / N), against the narrow and wide limits.
* Baseline: ffmpeg -> ffmpeg, 1080p30 8-bit raw RTP (``-reorder_queue_size 0 -buffer_size 4194304``),
  frames, missed packets and CPU of each side.
* RTP H.264 640x360@30 (PyAV, low-latency x264): glass-to-glass latency, from a frame's creation
  timestamp to its decoded arrival at the receiver (frames identified by a code painted into them).

    python benchmarks/bench_net.py            # 60 s per raw run (the issue's figure)
    python benchmarks/bench_net.py --short    # 5 s per run: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlib import Actor, StreamInput, StreamOutput, TimedTick, VideoFrame  # noqa: E402

TARGETS = {"720p10_loss": 0, "1080p8_fps": 29.97, "1080p8_loss_pct": 0.1, "h264_latency_ms": 40.0}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1]) & ~1


# ---------------------------------------------------------------- ST 2110-21 models


def cmax(times: np.ndarray, frame_period: float, beta: float = 1.1) -> int:
    """Peak of the network compatibility model's bucket (ST 2110-21 §6.2): packets arrive at their send
    times and drain one every TDRAIN = frame_period / N / beta while the bucket is non-empty."""
    n = len(times)
    drain = frame_period / n / beta
    level, peak, last = 0.0, 0, float(times[0])
    for t in times:
        level = max(level - (t - last) / drain, 0.0) + 1
        last = t
        peak = max(peak, math.ceil(level - 1e-9))
    return peak


def vrx(times: np.ndarray, frame_period: float, active: float = 1080 / 1125) -> int:
    """Peak fill of the virtual receiver buffer (ST 2110-21 §7): drained at TRS = TR_ACTIVE / N from the
    latest start that never underruns (the receiver's best case for this sender)."""
    n = len(times)
    trs = frame_period * active / n
    k = np.arange(n)
    start = float(np.max(times - k * trs))
    drained = np.where(times >= start, np.floor((times - start) / trs) + 1, 0)
    return int(np.max(k + 1 - drained))


def limits(n: int, period: float) -> dict[str, float]:
    return {
        "narrow_cmax": max(4, n / (43200 * period)),
        "wide_cmax": max(16, n / (21600 * period)),
        "narrow_vrx": max(8, n / (27000 * period)),
        "wide_vrx": max(720, n / (300 * period)),
    }


# ---------------------------------------------------------------- roles (child processes)


class Count(Actor):
    """Counts frames and remembers arrival times (no frame kept)."""

    default_fps = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", VideoFrame, maxsize=8)
        self.arrivals: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        while self.inputs["in"].read_nowait() is not None:
            self.arrivals.append(time.monotonic())


async def role_receive(args: argparse.Namespace) -> dict[str, Any]:
    from streamlib.actors import RTPReceiveActor

    rx = RTPReceiveActor(args.port, width=args.width, height=args.height, depth=args.depth, fps=30)
    count = Count()
    rx >> count
    print("ready", flush=True)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.seconds + 3)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    net = rx.stats()["network"]
    await rx.stop()
    await count.stop()
    a = np.array(count.arrivals)
    steady = a[(a > a[0] + 1) & (a < a[-1] - 1)] if len(a) > 10 else a
    fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    return {"frames": len(a), "fps": fps, "cpu": cpu / wall, **net}


async def role_send(args: argparse.Namespace) -> dict[str, Any]:
    from streamlib.actors import RTPSendActor, TestPattern

    tx = RTPSendActor(
        "127.0.0.1", args.port, depth=args.depth, width=args.width, height=args.height, fps=30, record_pacing=True
    )
    frames = round(args.seconds * 30)
    cpu0, t0 = time.process_time(), time.monotonic()
    TestPattern(width=args.width, height=args.height, fps=30, frames=frames) >> tx
    await tx.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    times = list(tx.pacer.send_times)[5:]  # past the start-up frames
    c = max((cmax(t, 1 / 30) for t in times), default=0)
    v = max((vrx(t, 1 / 30) for t in times), default=0)
    n = tx._packetizer.packets_per_frame if tx._packetizer else 0
    return {
        "cpu": cpu / wall,
        "cmax": c,
        "vrx": v,
        "packets_per_frame": n,
        **limits(n, 1 / 30),
        **tx.stats()["network"],
    }


def run_pair(width: int, height: int, depth: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    common = [
        "--port",
        str(port),
        "--width",
        str(width),
        "--height",
        str(height),
        "--depth",
        str(depth),
        "--seconds",
        str(seconds),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rx = subprocess.Popen(
        [sys.executable, __file__, "--role", "receive", *common], stdout=subprocess.PIPE, text=True, env=env
    )
    assert rx.stdout is not None
    rx.stdout.readline()  # "ready"
    tx = subprocess.run(
        [sys.executable, __file__, "--role", "send", *common], capture_output=True, text=True, env=env, check=True
    )
    out, _ = rx.communicate(timeout=seconds + 60)
    send = json.loads(tx.stdout.strip().splitlines()[-1])
    recv = json.loads(out.strip().splitlines()[-1])
    sent = send["packets_sent"]
    return {"send": send, "receive": recv, "loss_pct": 100 * recv["packets_lost"] / max(sent, 1)}


def ffmpeg_pair(seconds: float) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sdp = Path(tmp) / "ff.sdp"
        tx = subprocess.Popen(
            [
                "ffmpeg",
                "-v",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "smptebars=size=1920x1080:rate=30",
                "-t",
                str(seconds),
                "-pix_fmt",
                "uyvy422",
                "-c:v",
                "rawvideo",
                "-f",
                "rtp",
                "-sdp_file",
                str(sdp),
                f"rtp://127.0.0.1:{port}",
            ],
            stderr=subprocess.PIPE,
        )
        while not (sdp.exists() and "fmtp" in sdp.read_text()):
            time.sleep(0.01)
        rx = subprocess.Popen(
            [
                "ffmpeg",
                "-protocol_whitelist",
                "file,udp,rtp",
                "-reorder_queue_size",
                "0",
                "-buffer_size",
                "4194304",
                "-i",
                str(sdp),
                "-f",
                "null",
                "-",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        t0 = time.monotonic()
        _, _tx_status, tx_usage = os.wait4(tx.pid, 0)
        tx_wall = time.monotonic() - t0
        time.sleep(1.0)
        rx.terminate()
        _, _, rx_usage = os.wait4(rx.pid, 0)
        rx_wall = time.monotonic() - t0
        err = rx.stderr.read() if rx.stderr else ""
    frames = [int(f) for f in re.findall(r"frame=\s*(\d+)", err)]
    missed = sum(int(m) for m in re.findall(r"missed (\d+) packets", err))
    return {
        "frames": frames[-1] if frames else 0,
        "expected": round(seconds * 30),
        "missed_packets": missed,
        "send_cpu": (tx_usage.ru_utime + tx_usage.ru_stime) / tx_wall,
        "receive_cpu": (rx_usage.ru_utime + rx_usage.ru_stime) / rx_wall,
    }


# ---------------------------------------------------------------- H.264 latency

BITS, BLOCK = 12, 32


class Stamp(Actor):
    """Paints the frame number (12 bits, black/white 32x32 blocks) and remembers when the frame was made."""

    default_fps = None

    def __init__(self, made: dict[int, float], **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", VideoFrame)
        self.outputs["out"] = StreamOutput("out", VideoFrame)
        self.made = made
        self.n = 0

    async def process(self, tick: TimedTick) -> None:
        f = await self.inputs["in"].try_read()
        if f is None:
            return
        img = f.data.copy()
        code = self.n % (1 << BITS)
        for b in range(BITS):
            img[:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if code >> b & 1 else 0
        self.made[code] = f.timestamp
        self.n += 1
        await self.outputs["out"].send(f.with_data(img))


class Latency(Actor):
    default_fps = None

    def __init__(self, made: dict[int, float], **kw: Any) -> None:
        super().__init__(**kw)
        self.inputs["in"] = StreamInput("in", VideoFrame, maxsize=8)
        self.made = made
        self.samples: list[float] = []

    async def process(self, tick: TimedTick) -> None:
        while (f := self.inputs["in"].read_nowait()) is not None:
            now = time.monotonic()
            row = f.data[BLOCK // 2, ::BLOCK, 1][:BITS]
            code = sum(1 << b for b in range(BITS) if row[b] > 128)
            if code in self.made:
                self.samples.append(now - self.made[code])


async def h264_latency(seconds: float) -> dict[str, Any]:
    from streamlib.actors import H264RTPReceiveActor, H264RTPSendActor, TestPattern

    port = free_port()
    made: dict[int, float] = {}
    tx = H264RTPSendActor("127.0.0.1", port, width=640, height=360)
    rx = H264RTPReceiveActor(tx.sdp())
    lat = Latency(made)
    rx >> lat
    await asyncio.to_thread(rx.opened.wait, 10)
    src = TestPattern("moving_box", width=640, height=360, fps=30, frames=round(seconds * 30))
    src >> Stamp(made) >> tx
    await tx.join()
    await asyncio.sleep(0.5)
    await rx.stop()
    await lat.stop()
    s = sorted(lat.samples[10:])
    return {
        "frames": len(lat.samples),
        "median_ms": 1000 * statistics.median(s) if s else float("nan"),
        "p90_ms": 1000 * s[int(0.9 * len(s))] if s else float("nan"),
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="5 s runs (smoke)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--role", choices=("send", "receive"))
    parser.add_argument("--port", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--depth", type=int)
    args = parser.parse_args(argv)
    if args.role:
        result = asyncio.run(role_send(args) if args.role == "send" else role_receive(args))
        print(json.dumps(result), flush=True)
        return result
    seconds = args.seconds or (5.0 if args.short else 60.0)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {seconds:g} s per raw run")
    results: dict[str, Any] = {}
    r720 = run_pair(1280, 720, 10, seconds)
    results["720p10"] = r720
    print(
        f"720p30 10-bit streamlib->streamlib: {r720['receive']['fps']:.2f} fps, "
        f"{r720['receive']['packets_lost']} packets lost of {r720['send']['packets_sent']}, "
        f"frames incomplete {r720['receive']['frames_incomplete']}, sender CPU {100 * r720['send']['cpu']:.0f} %, "
        f"receiver CPU {100 * r720['receive']['cpu']:.0f} % of a core"
    )
    r1080 = run_pair(1920, 1080, 8, seconds)
    results["1080p8"] = r1080
    s = r1080["send"]
    print(
        f"1080p30 8-bit streamlib->streamlib: {r1080['receive']['fps']:.2f} fps, loss {r1080['loss_pct']:.3f} %, "
        f"sender CPU {100 * s['cpu']:.0f} %, receiver CPU {100 * r1080['receive']['cpu']:.0f} %, "
        f"sender frames dropped {s['frames_dropped']}"
    )
    print(
        f"  pacing: {s['packets_per_frame']} packets/frame, largest burst {s['max_burst']}, "
        f"CMAX {s['cmax']} (narrow <= {s['narrow_cmax']:.0f}, wide <= {s['wide_cmax']:.0f}), "
        f"VRX {s['vrx']} (narrow <= {s['narrow_vrx']:.0f}, wide <= {s['wide_vrx']:.0f})"
    )
    ff = ffmpeg_pair(seconds)
    results["ffmpeg_1080p8"] = ff
    print(
        f"baseline ffmpeg->ffmpeg 1080p30 8-bit: {ff['frames']} of {ff['expected']} frames, "
        f"{ff['missed_packets']} packets missed, sender CPU {100 * ff['send_cpu']:.0f} %, "
        f"receiver CPU {100 * ff['receive_cpu']:.0f} %"
    )
    lat = asyncio.run(h264_latency(min(seconds, 10.0)))
    results["h264"] = lat
    print(
        f"RTP H.264 640x360@30 glass-to-glass: median {lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms "
        f"over {lat['frames']} frames"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return results


if __name__ == "__main__":
    main()
