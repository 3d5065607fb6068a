"""Nothing lost, nothing hung: files survive kill -9 and SIGTERM, pipelines can be waited for.

The kill tests run their child processes concurrently (one interpreter each), so ten kills
cost about one child's lifetime. They use a shorter window than the issue's benchmark
(kills 1-6 s into the recording here; ``benchmarks/bench_fragmented.py`` kills 1-10 s in).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FPS = 30

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "ffprobe"], capture_output=True).returncode != 0, reason="needs ffprobe (Debian ffmpeg)"
)

# A recording as a user writes it: a 30 fps pattern into a FileSink, nothing else. Each frame
# the source sends is also logged (its media time) straight to the kernel with os.write, so
# the log survives kill -9 and says what the file should hold.
RECORDER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from streamlib.actors import FileSink, TestPattern

    path, mode = sys.argv[1], sys.argv[2]
    log = os.open(path + ".sent", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    class Logged(TestPattern):
        async def process(self, tick):
            before = self.sent
            await super().process(tick)
            if self.sent > before:
                os.write(log, b"%.4f\\n" % (tick.timestamp - (self._t0 or tick.timestamp)))

    def build():
        # faststart: the classic MP4, playable only once finalized (so only after a graceful stop)
        sink = FileSink(path, lossless=True, faststart="faststart" in sys.argv)
        Logged("moving_box", width=320, height=240, fps=30) >> sink

    if mode == "asyncio":
        async def main():  # on one loop, so no frame goes out before >> (see the first-connection test below)
            build()
            await asyncio.Event().wait()
        asyncio.run(main())
    else:  # a plain script: actors on streamlib's background loop, the main thread sleeping
        from streamlib.eventloop import background_loop
        async def build_there():  # built on their loop: no frame before >> (the first-connection test below)
            build()
        asyncio.run_coroutine_threadsafe(build_there(), background_loop()).result()
        time.sleep(120)
    """
)


def ffprobe_frames(path: Path) -> tuple[int, list[float], str]:
    """(return code, presentation times of every decoded video frame, stderr) from ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "json", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        return out.returncode, [], out.stderr
    frames = json.loads(out.stdout).get("frames", [])
    return 0, [float(f["pts_time"]) for f in frames if "pts_time" in f], out.stderr


def sent_times(path: Path) -> list[float]:
    log = Path(str(path) + ".sent")
    return [float(line) for line in log.read_text().split()] if log.exists() else []


def record_and_kill(
    paths: list[Path], delays: list[float], sig: int, args: list[list[str]], script: str = RECORDER
) -> list[int]:
    """Start one recorder per path at once (``args``: its command line after the path); send
    ``sig`` to each ``delay`` seconds after its first frame; return the exit codes."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(p), *a], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        for p, a in zip(paths, args, strict=True)
    ]
    started: dict[int, float] = {}
    killed: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(killed) < len(procs) and time.monotonic() < deadline:
            now = time.monotonic()
            for i, (proc, path) in enumerate(zip(procs, paths, strict=True)):
                if i in killed:
                    continue
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise AssertionError(f"recorder {path.name} exited early: {err}")
                if i not in started and sent_times(path):
                    started[i] = now
                if i in started and now - started[i] >= delays[i]:
                    proc.send_signal(sig)
                    killed.add(i)
            time.sleep(0.01)
        return [proc.wait(timeout=90) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_files_survive_kill_9_at_ten_random_moments(tmp_path: Path) -> None:
    """7 MP4 and 3 MKV recordings killed with SIGKILL 1-6 s in: each decodes with ffprobe and
    holds every frame the source sent except at most the last 1.5 s."""
    rng = random.Random(17)
    paths = [tmp_path / f"kill{i}.{'mp4' if i < 7 else 'mkv'}" for i in range(10)]
    delays = [rng.uniform(1.0, 6.0) for _ in paths]
    codes = record_and_kill(paths, delays, signal.SIGKILL, [["asyncio"]] * len(paths))
    assert codes == [-signal.SIGKILL] * len(paths)
    report = []
    for path, delay in zip(paths, delays, strict=True):
        rc, times, err = ffprobe_frames(path)
        sent = sent_times(path)
        assert rc == 0 and times, f"{path.name} killed {delay:.2f} s in does not decode: {err}"
        must_keep = [t for t in sent if t <= sent[-1] - 1.5]
        report.append(f"{path.name}: killed at {delay:.2f} s, sent {len(sent)}, kept {len(times)}")
        assert len(times) >= len(must_keep), "\n".join(report)
        assert max(times) >= sent[-1] - 1.5 - 1.0 / FPS, "\n".join(report)


def test_sigterm_stops_gracefully_in_plain_and_asyncio_scripts(tmp_path: Path) -> None:
    """20 recordings (10 plain scripts, 10 under asyncio.run) of classic faststart MP4s, which
    are readable only if the sink finalized: SIGTERM 0.5-2 s in, every file plays, exit 143."""
    rng = random.Random(143)
    modes = ["plain", "asyncio"] * 10
    paths = [tmp_path / f"term{i}-{mode}.mp4" for i, mode in enumerate(modes)]
    delays = [rng.uniform(0.5, 2.0) for _ in paths]
    codes = record_and_kill(paths, delays, signal.SIGTERM, [[mode, "faststart"] for mode in modes])
    playable, report = [], []
    for path in paths:
        rc, times, err = ffprobe_frames(path)
        sent = sent_times(path)
        report.append(f"{path.name}: ffprobe rc {rc}, sent {len(sent)}, kept {len(times)} {err.strip()[-80:]}")
        # Every frame the sink was sent is written (it drains its inputs at stop), but for one
        # the source may have sent while the stop was already under way.
        if rc == 0 and len(times) >= len(sent) - 1:
            playable.append(path.name)
    assert codes == [143] * len(paths)
    assert len(playable) == len(paths), "\n".join(report)


USER_HANDLER = textwrap.dedent(
    """
    import os, signal, sys, time
    def mine(signum, frame):
        print("user handler", flush=True)
        os._exit(7)
    signal.signal(signal.SIGTERM, mine)
    from streamlib.actors import TestPattern
    from streamlib.testing import Probe
    TestPattern("gradient", width=32, height=24) >> Probe()
    assert signal.getsignal(signal.SIGTERM) is mine
    print("ready", flush=True)
    # Python runs handlers in the main thread; short sleeps let it run one promptly even where the
    # kernel hands the process's signal to another thread (which does not interrupt a long sleep).
    for _ in range(600):
        time.sleep(0.1)
    """
)


def test_a_user_sigterm_handler_is_never_replaced() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", USER_HANDLER],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        # A fresh process starts with no signal blocked; the test runner's own worker process may
        # carry a blocked SIGTERM from a library an earlier test loaded, which a child inherits.
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the user's handler did not run; the child's threads:\n{_signal_masks(proc.pid)}")
    finally:
        proc.kill()
    assert proc.returncode == 7 and "user handler" in out


def _signal_masks(pid: int) -> str:
    """Each thread's blocked and pending signals, to say where a signal went (diagnostics only)."""
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        status = (task / "status").read_text().splitlines()
        wanted = [line for line in status if line.startswith(("Name", "SigBlk", "SigPnd", "ShdPnd", "SigCgt"))]
        lines.append(f"{task.name}: " + " ".join(w.replace("\t", " ") for w in wanted))
    return "\n".join(lines)


# --------------------------------------------------------------------------------- waiting

WAIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import streamlib
    from streamlib.actors import FileSink, TestPattern
    from streamlib.testing import Probe

    probe = Probe()
    TestPattern("gradient", width=64, height=48, frames=30) >> probe
    frames = probe.wait_for(5)                      # no event loop: blocks, returns the list
    sink = FileSink(sys.argv[1])
    TestPattern("gradient", width=64, height=48, frames=20, realtime=False) >> sink
    print(len(frames) >= 5, streamlib.wait(sink, timeout=30), flush=True)
    """
)


def test_a_plain_script_waits_for_its_pipeline_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "q.mp4"
    out = subprocess.run(
        [sys.executable, "-c", WAIT_SCRIPT, str(path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "True [<LifecycleState.STOPPED: 'stopped'>]", out.stderr
    rc, times, err = ffprobe_frames(path)
    assert rc == 0 and len(times) >= 1, err


async def test_wait_is_awaited_where_a_loop_runs_and_names_what_still_runs() -> None:
    import streamlib
    from streamlib.actors import TestPattern
    from streamlib.testing import Probe

    probe = Probe()
    source = TestPattern("gradient", width=32, height=24, frames=5)
    source >> probe
    assert await streamlib.wait([source, probe], timeout=10) == [streamlib.LifecycleState.STOPPED] * 2
    assert len(await probe.wait_for(5)) == 5
    endless = Probe()
    TestPattern("gradient", width=32, height=24) >> endless
    with pytest.raises(TimeoutError, match=endless.path):
        await streamlib.wait(endless, timeout=0.2)
    await endless.stop()


def test_probe_wait_for_blocks_with_no_loop_and_fails_clearly() -> None:
    from streamlib.actors import TestPattern
    from streamlib.testing import Probe

    probe = Probe()
    TestPattern("gradient", width=32, height=24, frames=3) >> probe
    with pytest.raises(TimeoutError, match="got 3 of 10 messages"):
        probe.wait_for(10, timeout=10)  # the stream ends after 3: it says so rather than waiting 10 s
    assert len(probe.wait_for(3)) == 3


def test_a_finite_source_loses_no_frame_before_its_connection_in_a_plain_script() -> None:
    import streamlib
    from streamlib.actors import TestPattern
    from streamlib.testing import Probe

    class SlowProbe(Probe):  # a sink whose construction takes a moment, as opening a device can
        def __init__(self, source: TestPattern, **kw: object) -> None:
            super().__init__(**kw)
            deadline = time.monotonic() + 0.5
            while source.sent < 3 and time.monotonic() < deadline:  # long enough for frames to go out
                time.sleep(0.005)

    # No running loop here: the actors run on streamlib's background loop, as in a plain script.
    # Not realtime: a loaded machine makes a realtime clock skip (and count) late ticks, which is
    # not what this test is about; a non-realtime source must deliver every frame. The sink takes
    # until the source has sent 3 frames (or 0.5 s) to build: the source must hold them back.
    source = TestPattern("gradient", width=32, height=24, fps=60, frames=30, realtime=False)
    probe = SlowProbe(source)
    source >> probe
    streamlib.wait(probe, timeout=30)
    assert [f.frame_number for f in probe.messages] == list(range(30))
