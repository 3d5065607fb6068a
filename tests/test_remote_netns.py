"""Two runtimes in two Linux network namespaces joined by a veth pair: nothing may rely on
loopback shortcuts (shared memory, 127.0.0.1), and a cut link (``ip link set down``) must be
survived: calls fail fast meanwhile, and the data link reconnects by itself afterwards.

Needs root and ``ip`` (iproute2); skipped, saying why, where namespaces cannot be created.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

# Runs inside namespace B: a stub of a Frames actor served in namespace A, wired to a local probe.
CLIENT = r"""
import asyncio, json, subprocess, sys, time
import streamlib, streamlib.remote
from streamlib import VideoFrame
from streamlib.testing import Probe

uri, token, cut, restore = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

async def until(pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True

async def main():
    frames = streamlib.get_actor(uri, fps=30.0, token=token)
    probe = Probe(VideoFrame)
    frames >> probe
    report = {"first": await until(lambda: len(probe.messages) >= 10, 15)}
    link = lambda: frames._endpoint.link_stats()["outputs['video']"]
    report["shm_frames"] = link()["shm_frames"]
    subprocess.run(cut, shell=True, check=True)
    cut_at = time.monotonic()
    report["detected"] = await until(lambda: not frames._client.available, 5)
    report["detected_after"] = time.monotonic() - cut_at
    t = time.monotonic()
    try:
        frames.stats()
        report["call"] = "answered"
    except streamlib.remote.ActorUnavailable as exc:
        report["call"] = "ActorUnavailable"
    report["call_seconds"] = time.monotonic() - t
    during = len(probe.messages)
    await asyncio.sleep(0.5)
    report["during"] = len(probe.messages) - during
    subprocess.run(restore, shell=True, check=True)
    seen = len(probe.messages)
    report["recovered"] = await until(lambda: len(probe.messages) >= seen + 10, 20)
    report["reconnects"] = link()["reconnects"]
    report["state"] = frames.state.value
    report["remote_sent"] = frames.stats()["messages_out"]
    print(json.dumps(report), flush=True)
    await frames.stop()

asyncio.run(main())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 ('ip') is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    tag = secrets.token_hex(3)
    ns_a, ns_b, veth_a, veth_b = f"sl-a-{tag}", f"sl-b-{tag}", f"sla{tag}", f"slb{tag}"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
    except subprocess.CalledProcessError as exc:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    try:
        _ip("link", "set", veth_a, "netns", ns_a)
        _ip("link", "set", veth_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, veth_a, "10.199.0.1/24"), (ns_b, veth_b, "10.199.0.2/24")):
            _ip("netns", "exec", ns, "ip", "addr", "add", addr, "dev", dev)
            _ip("netns", "exec", ns, "ip", "link", "set", dev, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns_a, ns_b, veth_a, veth_b
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_two_namespaces_survive_a_cut_link(namespaces: tuple[str, str, str, str], tmp_path: Path) -> None:
    ns_a, ns_b, veth_a, _ = namespaces
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    env.pop("STREAMLIB_TOKEN", None)
    command = [
        "ip",
        "netns",
        "exec",
        ns_a,
        sys.executable,
        "-m",
        "streamlib",
        "node",
        "--listen",
        "10.199.0.1:7400",
        "--name",
        "ns-a",
        "--token-file",
        str(tmp_path / "token"),
        "--import",
        "test_remote",
    ]
    with open(tmp_path / "node.log", "w") as log:  # the child keeps its own copy of the descriptor
        node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        assert "listening on actor://10.199.0.1:7400" in line, (tmp_path / "node.log").read_text()
        cut = f"ip netns exec {ns_a} ip link set {veth_a} down"
        restore = f"ip netns exec {ns_a} ip link set {veth_a} up"
        client = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns_b,
                sys.executable,
                "-c",
                CLIENT,
                "actor://10.199.0.1:7400/Frames/ns-cam",
                token,
                cut,
                restore,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        report = json.loads(client.stdout.strip().splitlines()[-1])
        assert report["first"], report
        assert report["shm_frames"] == 0  # another namespace is another host: no shared memory
        assert report["detected"] and report["detected_after"] < 2.0, report
        assert report["call"] == "ActorUnavailable" and report["call_seconds"] < 6.0, report
        assert report["during"] <= 2, report  # nothing crosses a cut link
        assert report["recovered"] and report["reconnects"] >= 1, report
        assert report["state"] == "running" and report["remote_sent"] > 0, report
    finally:
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
