"""The ``streamlib`` console script: ``streamlib demo`` writes files PyAV decodes, with every frame;
every user error is one line naming the problem and the fix, with exit status 2."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import av
import pytest

import streamlib
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
    assert text.startswith(f"streamlib demo: writing {out / 'demo.mp4'} and {out / 'hls' / 'stream.m3u8'}")
    assert "100.0%" in result.stderr  # the progress bar reached the end
    noise = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert noise == [], noise  # a quiet run: nothing but the progress bar (no Fontconfig warning)


def test_demo_without_hls_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "demo",
            "--seconds",
            "0.5",
            "--width",
            "96",
            "--height",
            "64",
            "--fps",
            "20",
            "--out",
            str(tmp_path),
            "--no-hls",
            "--quiet",
            "--pattern",
            "moving_box",
        ]
    )
    assert code == 0
    assert count_frames(tmp_path / "demo.mp4") == (10, (96, 64))
    assert not (tmp_path / "hls").exists()
    captured = capsys.readouterr()
    assert "compositor" in captured.out and "%" not in captured.err  # --quiet: no progress bar


def test_parser_defaults_are_shown_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.seconds, args.width, args.height, args.fps) == (5.0, 1280, 720, 30.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in [
        ("--seconds", "5.0"),
        ("--width", "1280"),
        ("--height", "720"),
        ("--fps", "30.0"),
        ("--out", "./streamlib-demo"),
    ]:
        assert re.search(rf"{option} \S+ [^-]*\(default: {re.escape(default)}\)", shown), (option, shown)


def test_version_from_the_script_and_python_m() -> None:
    for cmd in (command(), [sys.executable, "-m", "streamlib"]):
        done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0 and done.stdout.strip() == f"streamlib {streamlib.__version__}", (cmd, done)


def one_line_usage_error(code: int, err: str, command_name: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith(f"streamlib {command_name}: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "problem", "fix"),
    [
        (["demo", "--out", "/etc/passwd"], "--out /etc/passwd is a file, not a folder", "pass a folder you can write"),
        (["demo", "--out", "/proc/nope"], "--out /proc/nope: cannot write there", "pass a folder you can write"),
        (["demo", "--width", "101", "--height", "77"], "101x77 is odd", "use --width 102 --height 78"),
        (["demo", "--width", "8"], "too small", ">= 16"),
        (["demo", "--seconds", "0"], "--seconds must be > 0", "e.g. --seconds 5"),
        (["demo", "--fps", "-1"], "--fps must be in", "e.g. --fps 30"),
        (["serve", "nosuch.py:main"], "no such file", "check the path"),
        (["serve", "nosuch_module_xyz:main"], "no module named 'nosuch_module_xyz'", "run from the folder"),
        (["serve", "json:nosuch"], "json has no 'nosuch'", "name a function"),
        (["serve", "json:__doc__"], "is a str, not a function", "name the function"),
        (["serve", "json"], "expected MODULE:FACTORY", "e.g. app.py:main"),
    ],
)
def test_user_errors_are_one_line_with_the_fix(
    argv: list[str],
    problem: str,
    fix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written here either
    line = one_line_usage_error(main(argv), capsys.readouterr().err, argv[0])
    assert problem in line and fix in line, line
    assert list(tmp_path.iterdir()) == []


def test_dashboard_port_in_use_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("aiohttp")
    app = tmp_path / "app.py"
    app.write_text("def build():\n    return None\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_usage_error(
            main(["serve", f"{app}:build", "--dashboard", str(port)]), capsys.readouterr().err, "serve"
        )
    assert f"cannot listen on 127.0.0.1:{port}" in line and "pick another port" in line


def test_demo_without_the_media_extra(tmp_path: Path) -> None:
    """A fresh interpreter in which PyAV cannot be imported, as without ``pip install streamlib[media]``."""
    blocked = "import sys; sys.modules['av'] = None; from streamlib.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "demo", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    line = one_line_usage_error(done.returncode, done.stderr, "demo")
    assert "'av' does not import" in line and "pip install 'streamlib[media]'" in line
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_default_output_folder_is_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["streamlib-demo/demo.mp4", "streamlib-demo/hls/stream0.ts", "artifacts/dashboard-1280x720.png"]
    done = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == paths, "streamlib-demo/ and artifacts/ must be in .gitignore"


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
