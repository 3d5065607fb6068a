"""Actors in a real Jupyter notebook: run through ``nbclient`` on an ``ipykernel`` kernel.

What a notebook user relies on, checked end to end:

* constructing and wiring actors in a cell returns at once (nothing blocks the kernel);
* the actors keep running on the kernel's event loop *between* cells, while no cell runs;
* a later cell sees the frames that flowed (inverted pixels), top-level ``await`` works;
* ``repr(actor)`` shows its state;
* a final cell stops everything and the stop reaches the whole pipeline.

The kernelspec is created in a temporary directory for the interpreter running the tests
(``sys.executable``), so the test never depends on which kernels the machine has installed.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

try:
    import ipykernel.kernelspec
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"ipykernel/nbclient cannot be imported ({exc}); install the 'dev' extra to run the notebook test",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "python3"

CELLS = {
    # (a) definitions only
    "define": '''\
import asyncio
import time

import numpy as np

import streamlib
from streamlib import Actor, StreamInput, StreamOutput, VideoFrame
from streamlib.testing import Probe


class Source(Actor):
    """60 fps: nothing upstream, so the actor's own clock ticks it."""

    default_fps = 60.0

    def __init__(self, value=10, **kw):
        super().__init__(**kw)
        self.value = value
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick):
        data = np.full((8, 8, 3), self.value, dtype=np.uint8)
        await self.outputs["video"].send(VideoFrame.at(tick, data=data))


class Invert(Actor):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.inputs["video"] = StreamInput("video", VideoFrame)
        self.outputs["video"] = StreamOutput("video", VideoFrame)

    async def process(self, tick):
        frame = await self.inputs["video"].try_read()
        if frame is not None:
            await self.outputs["video"].send(frame.with_data(255 - frame.data))
''',
    # (b) construct and connect: must return at once
    "construct": """\
t0 = time.perf_counter()
src = Source(value=10)
probe = Probe(VideoFrame)
src >> Invert() >> probe
print(f"construct_s={time.perf_counter() - t0:.6f}")
""",
    # run after the kernel sat idle: frames flowed while no cell was running
    "idle": """\
print(f"idle_count={len(probe.messages)}")
""",
    # (c) top-level await in a later cell
    "sleep1": """\
await asyncio.sleep(0.5)
print(f"count1={len(probe.messages)}")
print(f"pixel={int(probe.messages[-1].data[0, 0, 0])}")
""",
    "sleep2": """\
await asyncio.sleep(0.3)
print(f"count2={len(probe.messages)}")
print(f"all_inverted={all(int(m.data.max()) == 245 for m in probe.messages)}")
""",
    # (d) the repr is the cell's result
    "repr": "src",
    # (e) stop everything
    "stop": """\
state = await src.stop()
await asyncio.wait_for(probe.join(), 5)
print(f"src={state.name}")
print(f"probe={probe.state.name}")
print(f"running={[a.path for a in streamlib.running_actors()]}")
""",
}

IDLE_S = 0.5  # how long the test leaves the kernel idle between the "construct" and "idle" cells


def _stdout(cell: Any) -> str:
    return "".join(
        o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _value(text: str, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", text, re.MULTILINE)
    assert match, f"{key}= not printed; output was:\n{text}"
    return match.group(1)


def _elapsed(cell: Any) -> float:
    """Seconds between the kernel starting the cell and replying, from nbclient's timing metadata."""
    timing = cell.metadata["execution"]
    start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


@pytest.fixture
def kernel_manager(tmp_path: Path) -> KernelManager:
    return private_kernel_manager(tmp_path)


def private_kernel_manager(tmp_path: Path) -> KernelManager:
    """A manager for a ``python3`` kernel running this very interpreter, from a private kernelspec
    (also used by tests/test_docs.py to run the notebook recipes)."""
    kernels = tmp_path / "kernels"
    ipykernel.kernelspec.write_kernel_spec(kernels / KERNEL)  # its argv runs sys.executable
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    spec = ksm.get_kernel_spec(KERNEL)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve(), spec.argv
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


@pytest.mark.timeout(60)
def test_actors_run_in_a_notebook(kernel_manager: KernelManager) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"name": name}) for name, src in CELLS.items()]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        nb,
        km=kernel_manager,
        kernel_name=KERNEL,
        timeout=20,
        record_timing=True,
        resources={"metadata": {"path": str(ROOT)}},
    )
    cells = {c.metadata["name"]: c for c in nb.cells}
    started = time.monotonic()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.metadata["name"] == "idle":
                time.sleep(IDLE_S)  # the kernel is idle: no cell runs, no await in progress
            client.execute_cell(cell, index)  # raises CellExecutionError on any error
    assert time.monotonic() - started < 30

    # (b) construction returned at once: timed inside the cell and by the kernel's timestamps
    construct = _stdout(cells["construct"])
    assert float(_value(construct, "construct_s")) < 0.5, construct
    assert _elapsed(cells["construct"]) < 2.0

    # frames flowed while the kernel sat idle between cells
    idle_count = int(_value(_stdout(cells["idle"]), "idle_count"))
    assert idle_count > 0, "no frame reached the probe while the kernel was idle between cells"

    # (c) frames keep flowing across later cells, inverted
    first = _stdout(cells["sleep1"])
    second = _stdout(cells["sleep2"])
    count1, count2 = int(_value(first, "count1")), int(_value(second, "count2"))
    assert count1 > idle_count, (idle_count, count1)
    assert count2 > count1, (count1, count2)
    assert int(_value(first, "pixel")) == 255 - 10
    assert _value(second, "all_inverted") == "True"

    # (d) the repr shows the state
    results = [o for o in cells["repr"].outputs if o.get("output_type") == "execute_result"]
    assert results, cells["repr"].outputs
    shown = results[0]["data"]["text/plain"]
    assert "RUNNING" in shown and "/source" in shown, shown

    # (e) everything stopped: the source on request, the rest by end of stream
    stop = _stdout(cells["stop"])
    assert _value(stop, "src") == "STOPPED"
    assert _value(stop, "probe") == "STOPPED"
    assert _value(stop, "running") == "[]"
