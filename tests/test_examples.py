"""Every example in ``examples/`` runs headless to completion (exit code 0) within a timeout.

Examples that open a window (they use the ``Display`` actor) are skipped when there is no
screen. All run at once, as subprocesses, each in its own temporary working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 120


def needs_screen(path: Path) -> bool:
    text = path.read_text()
    return "Display(" in text or "streamlib.actors.display" in text


def screen() -> bool:
    try:
        from streamlib.actors.display import screen_available
    except ImportError:
        return False
    return bool(screen_available()[0])


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Start every runnable example at once (they mostly wait on clocks and encoders), each in its own directory."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    has_screen = screen()
    procs = {}
    for example in EXAMPLES:
        if needs_screen(example) and not has_screen:
            continue
        cwd = tmp_path_factory.mktemp(example.stem)
        procs[example.name] = subprocess.Popen(
            [sys.executable, str(example)], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_headless(example: Path, launched: dict[str, subprocess.Popen[str]]) -> None:
    if example.name not in launched:
        pytest.skip(f"{example.name} shows a window and there is no screen")
    proc = launched[example.name]
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"{example.name} did not finish within {TIMEOUT} s\n{stderr[-3000:]}")
    assert proc.returncode == 0, (
        f"{example.name} exited with {proc.returncode}\n--- stdout\n{stdout[-2000:]}\n--- stderr\n{stderr[-4000:]}"
    )
    assert stdout.strip(), f"{example.name} printed nothing about what it did"


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    for name in (
        "picture_in_picture.py",
        "transcode_with_overlay.py",
        "supervised_pipeline.py",
        "agent_generated_actor.py",
    ):
        assert name in names
