"""Every Python code block in README.md and docs/*.md runs as written.

A block after ``<!-- docs-test: top-level-await -->`` runs with top-level ``await``. Blocks after
``<!-- docs-test: notebook shows=MIME,... -->`` are notebook cells: those of one page run in
order as the cells of one notebook, on a real kernel (nbclient), and each must *show* what it
promises, e.g. ``shows=text/html`` for an actor's table, ``image/svg+xml`` for a graph,
``image/png`` for a frame (only a cell's last expression or a ``display()`` call shows)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(?:<!-- docs-test: ([^>]*?) -->\s*\n)?```python\n(.*?)```", re.S)
AWAIT_WRAPPER = """
import ast, asyncio
source = {source!r}
code = compile(source, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {{"__name__": "__main__"}})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def blocks() -> list[tuple[str, bool, str]]:
    """``(where, top_level_await, source)`` for every block run as a script (not notebook cells)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, match in enumerate(FENCE.finditer(path.read_text()), 1):
            mode = match.group(1) or ""
            if not mode.startswith("notebook"):
                found.append((f"{path.relative_to(ROOT)}#{n}", mode == "top-level-await", match.group(2)))
    return found


def notebooks() -> dict[str, list[tuple[str, list[str], str]]]:
    """Per page, its notebook cells in order: ``(where, MIME types it must show, source)``."""
    found: dict[str, list[tuple[str, list[str], str]]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        page = str(path.relative_to(ROOT))
        for n, match in enumerate(FENCE.finditer(path.read_text()), 1):
            mode = match.group(1) or ""
            if mode.startswith("notebook"):
                shows = re.search(r"shows=(\S+)", mode)
                found.setdefault(page, []).append(
                    (f"{page}#{n}", shows.group(1).split(",") if shows else [], match.group(2))
                )
    return found


@pytest.mark.parametrize(("where", "top_level_await", "source"), blocks(), ids=[b[0] for b in blocks()])
def test_doc_block_runs(where: str, top_level_await: bool, source: str) -> None:
    program = AWAIT_WRAPPER.format(source=source) if top_level_await else source
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"


def shown(cell: Any) -> dict[str, str]:
    """What a cell displayed: MIME type -> content, from its display_data and execute_result outputs."""
    found: dict[str, str] = {}
    for output in cell.outputs:
        if output.get("output_type") in ("display_data", "execute_result"):
            found.update(output.get("data", {}))
    return found


PROMISES = {  # what each MIME type's content must hold to count as shown
    "text/html": lambda content: "<table" in content or "<svg" in content,
    "image/svg+xml": lambda content: "<svg" in content and "</svg>" in content,
    "image/png": lambda content: base64.b64decode(content)[:8] == b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("page", sorted(notebooks()))
def test_notebook_recipe_runs_as_cells_and_shows_what_it_promises(page: str, tmp_path: Path) -> None:
    pytest.importorskip("nbclient", reason="the notebook recipes need the 'dev' extra (nbclient, ipykernel)")
    import nbformat
    from nbclient import NotebookClient
    from test_notebook import KERNEL, private_kernel_manager

    cells = notebooks()[page]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for _, _, source in cells]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    client = NotebookClient(
        nb,
        km=private_kernel_manager(tmp_path),
        kernel_name=KERNEL,
        timeout=30,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    for (where, promised, _), cell in zip(cells, nb.cells, strict=True):
        outputs = shown(cell)
        for mime in promised:
            assert mime in outputs, f"{where} promises {mime} but shows {sorted(outputs) or 'nothing'}"
            assert PROMISES[mime](outputs[mime]), f"{where}: its {mime} output is not what it promises"
