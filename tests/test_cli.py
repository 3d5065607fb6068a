"""The ``streamlib`` console script: ``streamlib demo`` writes files PyAV decodes, with every frame."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from streamlib import VideoFrame
from streamlib.actors.filters import Blur
from streamlib.actors.video import TestPattern
from streamlib.cli import TimingDispatcher, build_parser, main, percentile, summary_rows
from streamlib.testing import Probe

ROOT = Path(__file__).resolve().parents[1]


def command() -> list[str]:
    script = shutil.which("streamlib")
    return [script] if script else [sys.executable, "-m", "streamlib.cli"]


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return len(frames), (frames[0].width, frames[0].height)


def test_demo_writes_mp4_and_hls_with_every_frame(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [*command(), "demo", "--seconds", "2", "--width", "320", "--height", "240", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert count_frames(out / "demo.mp4") == (60, (320, 240))  # 2 s at 30 fps, none lost
    assert count_frames(out / "hls" / "stream.m3u8")[0] == 60
    assert "#EXT-X-ENDLIST" in (out / "hls" / "stream.m3u8").read_text()
    text = result.stdout
    for actor in ("pattern", "overlay", "pip", "compositor", "mp4", "hls"):
        assert actor in text
    assert "p99 ms" in text and f"wrote {out / 'demo.mp4'}" in text
    assert "100.0%" in result.stderr  # the progress bar reached the end


def test_demo_without_hls_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--seconds", "0.5", "--width", "96", "--height", "64", "--fps", "20",
                 "--out", str(tmp_path), "--no-hls", "--quiet", "--pattern", "moving_box"])
    assert code == 0
    assert count_frames(tmp_path / "demo.mp4") == (10, (96, 64))
    assert not (tmp_path / "hls").exists()
    captured = capsys.readouterr()
    assert "compositor" in captured.out and "%" not in captured.err  # --quiet: no progress bar


def test_parser_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.seconds, args.width, args.height, args.fps) == (5.0, 1280, 720, 30.0)
    assert main(["demo", "--seconds", "0"]) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


async def test_timing_dispatcher_records_each_tick() -> None:
    src = TestPattern("gradient", 32, 32, fps=200, frames=5, dispatcher=TimingDispatcher("asyncio"))
    blur = Blur(3, dispatcher=TimingDispatcher("thread"))
    probe = Probe(VideoFrame)
    src >> blur >> probe
    await asyncio.wait_for(probe.join(), 5)
    assert len(src.dispatcher.durations) == 5 and len(blur.dispatcher.durations) == 5  # type: ignore[attr-defined]
    row = {r["actor"]: r for r in summary_rows([src, blur])}[blur.name]
    assert row["class"] == "Blur" and row["in"] == 5 and row["out"] == 5 and row["dropped"] == 0
    assert 0 < row["mean_ms"] <= row["p99_ms"] + 1e-9
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 99) == 0.0
