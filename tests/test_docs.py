"""Every Python code block in README.md and docs/*.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(<!-- docs-test: top-level-await -->\s*\n)?```python\n(.*?)```", re.S)
AWAIT_WRAPPER = """
import ast, asyncio
source = {source!r}
code = compile(source, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {{"__name__": "__main__"}})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def blocks() -> list[tuple[str, bool, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, match in enumerate(FENCE.finditer(path.read_text()), 1):
            found.append((f"{path.relative_to(ROOT)}#{n}", bool(match.group(1)), match.group(2)))
    return found


@pytest.mark.parametrize(("where", "top_level_await", "source"), blocks(), ids=[b[0] for b in blocks()])
def test_doc_block_runs(where: str, top_level_await: bool, source: str) -> None:
    program = AWAIT_WRAPPER.format(source=source) if top_level_await else source
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
