"""Services: ``streamlib serve module:factory`` and ``streamlib.run(main)`` run a tree until SIGINT
or SIGTERM, then stop it top-down within a deadline -- the sink finalizes its file."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamlib.cli import load_factory, main

ROOT = Path(__file__).resolve().parents[1]

APP = '''
import asyncio
import logging
import sys
from pathlib import Path

import streamlib
from streamlib import Actor, DataMessage, StreamInput, StreamOutput, Supervisor

log = logging.getLogger("app")


class Ticker(Actor):
    default_fps = 100.0

    def __init__(self, limit=None, **kw):
        super().__init__(**kw)
        self.limit = limit
        self.count = 0  # what it sent: a clock may skip frame numbers (a pause at start-up), not messages
        self.outputs["out"] = StreamOutput("out", DataMessage)

    async def process(self, tick):
        await self.outputs["out"].send(DataMessage.at(tick, data=self.count))
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            self.stop()


class LineSink(Actor):
    """Writes one line per message between a header and a footer; the footer is its finalization."""

    def __init__(self, target, hang=False, **kw):
        super().__init__(**kw)
        self.target = Path(target)
        self.hang = hang
        self.inputs["in"] = StreamInput("in", DataMessage, maxsize=16)

    async def on_start(self):
        self.file = self.target.open("w")
        self.file.write("BEGIN\\n")
        self.file.flush()
        log.info("writing %s", self.target)

    async def process(self, tick):
        while (m := self.inputs["in"].read_nowait()) is not None:
            self.file.write(f"{m.data}\\n")
        self.file.flush()

    async def on_stop(self):
        if self.hang:
            await asyncio.sleep(60)
        self.file.write("END\\n")
        self.file.close()
        log.info("finalized %s", self.target)


def build(limit=None, hang=False):
    app = Supervisor(name="app")
    app.spawn(Ticker, limit=limit, name="ticker") >> app.spawn(LineSink, "out.txt", hang=hang, name="sink")
    return app


def finite():
    """No supervisor (it would restart the ticker): two roots that end at end of stream."""
    ticker = Ticker(limit=20, name="ticker")
    sink = LineSink("out.txt", name="sink")
    ticker >> sink
    return [ticker, sink]


def hanging():
    return build(hang=True)


class Crasher(Ticker):
    async def process(self, tick):
        await super().process(tick)
        if tick.frame_number == 30:
            raise RuntimeError("boom")


def unsupervised():
    """A plain parent (no supervisor): its crashing child is restarted by nobody."""
    app = Plain(name="app")
    app.spawn(Ticker, name="ticker") >> app.spawn(LineSink, "out.txt", name="sink")
    app.spawn(Crasher, name="crasher")
    return app


class Plain(Actor):
    default_fps = None

    async def process(self, tick):
        pass


async def built_async():
    await asyncio.sleep(0)
    return build()


if __name__ == "__main__":
    raise SystemExit(streamlib.run(build, stop_timeout=5))
'''


def command() -> list[str]:
    script = shutil.which("streamlib")
    return [script] if script else [sys.executable, "-m", "streamlib.cli"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "svcapp.py").write_text(APP)
    return tmp_path


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the service exited early ({proc.returncode}):\n{proc.communicate()[1]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{path} did not reach {n} lines:\n{proc.communicate()[1]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_on_signal_and_the_sink_finalizes(app_dir: Path, signum: signal.Signals) -> None:
    proc = start([*command(), "serve", "svcapp:build", "--stop-timeout", "5"], app_dir)
    out = app_dir / "out.txt"
    wait_for_lines(out, 10, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "BEGIN" and lines[-1] == "END"  # finalized: the footer was written
    numbers = [int(x) for x in lines[1:-1]]
    assert numbers == sorted(numbers) and len(numbers) >= 9
    assert f"{signum.name} received: stopping" in err
    assert "INFO    /app/sink app: finalized out.txt" in err  # logs carry the actor's path
    assert "serving /app" in err and "stopped in" in err


def test_run_in_a_script_and_async_factory(app_dir: Path) -> None:
    proc = start([sys.executable, "svcapp.py"], app_dir)  # streamlib.run(build) in __main__
    wait_for_lines(app_dir / "out.txt", 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (app_dir / "out.txt").read_text().endswith("END\n")

    (app_dir / "out.txt").unlink()
    proc = start([*command(), "serve", "svcapp.py:built_async"], app_dir)  # a file path, a coroutine function
    wait_for_lines(app_dir / "out.txt", 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (app_dir / "out.txt").read_text().endswith("END\n")


def test_a_finite_tree_ends_the_service_by_itself(app_dir: Path) -> None:
    proc = start([*command(), "serve", "svcapp:finite"], app_dir)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = (app_dir / "out.txt").read_text().splitlines()
    assert lines == ["BEGIN", *map(str, range(20)), "END"]  # end of stream drained the sink


def test_the_stop_deadline(app_dir: Path) -> None:
    proc = start([*command(), "serve", "svcapp:hanging", "--stop-timeout", "0.5"], app_dir)
    wait_for_lines(app_dir / "out.txt", 3, proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2, err
    assert time.monotonic() - started < 10
    assert "still running after the 0.5 s deadline: /app, /app/sink" in err


def test_bad_targets(app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(app_dir)
    assert main(["serve", "no_such_module:build"]) == 2
    assert main(["serve", "svcapp"]) == 2
    assert main(["serve", "svcapp:nothing_here"]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert callable(load_factory("svcapp:build"))
    assert callable(load_factory(str(app_dir / "svcapp.py") + ":finite"))


def test_an_unsupervised_failure_stops_the_service_with_status_1(app_dir: Path) -> None:
    proc = start([*command(), "serve", "svcapp:unsupervised", "--stop-timeout", "5"], app_dir)
    started = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert time.monotonic() - started < 25
    assert "unsupervised failure of /app/crasher: stopping the service" in err
    assert (app_dir / "out.txt").read_text().endswith("END\n")  # the rest stopped in order: the sink finalized


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once_without_a_traceback(app_dir: Path, signum: signal.Signals) -> None:
    proc = start([*command(), "serve", "svcapp:hanging", "--stop-timeout", "30"], app_dir)
    wait_for_lines(app_dir / "out.txt", 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    while "received: stopping" not in (line := proc.stderr.readline()):
        assert line, "the service exited before the second signal"
    started = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signum
    assert time.monotonic() - started < 5  # not the 30 s deadline, nor the sink's 60 s hang
    assert "received again: exiting at once" in err
    assert "Traceback" not in err and "never retrieved" not in err


# ------------------------------------------------------------------------------ memory

STALL = """
import threading
import numpy as np
from streamlib.service import release_free_memory

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6

shape = (720, 1280, 3)
live = [np.ones(shape, np.uint8) for _ in range(6)]
def steady():  # frames made and dropped at a steady pace, a few in flight
    for _ in range(100):
        live.pop(0)
        live.append(np.ones(shape, np.uint8))
def stall():  # 20 frames pile up on another thread (a stalled sink's queue), then drain
    pile = [np.ones(shape, np.uint8) for _ in range(20)]
    del pile
steady()
before = rss()
thread = threading.Thread(target=stall)
thread.start()
thread.join()
steady()
after = rss()
released = release_free_memory()
print(released, round(after - before, 1), round(rss() - before, 1))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_free_memory_goes_back_after_a_stall() -> None:
    """A stall's frames, freed, stay resident in glibc's arena until release_free_memory()."""
    out = subprocess.run([sys.executable, "-c", STALL], capture_output=True, text=True, timeout=60, check=True)
    released, kept, after_trim = out.stdout.split()
    assert released == "True"
    assert float(kept) > 20, out.stdout  # the pile-up's 55 MB mostly stayed resident
    assert float(after_trim) < float(kept) - 20, out.stdout


async def test_serve_trims_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlib import service

    calls: list[float] = []
    monkeypatch.setattr(service, "release_free_memory", lambda: calls.append(time.monotonic()) or True)

    async def finite() -> None:
        await asyncio.sleep(0.35)

    assert await service.serve(finite, handle_signals=False, trim_every=0.1) == 0
    assert len(calls) >= 2  # every 0.1 s while main() built the (empty) tree
    count = len(calls)
    await asyncio.sleep(0.25)
    assert len(calls) == count  # and no more once the service returned
