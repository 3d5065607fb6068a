"""The core is the actor system only: no core module imports a layer, and core imports form no cycle.

Walks the AST of every core module, function-level imports included (``TYPE_CHECKING`` blocks,
which never run, are left out), as ``docs/architecture.md`` promises.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import streamlib

ROOT = Path(streamlib.__file__).parent
LAYERS = (
    "streamlib.actors",
    "streamlib.gpu",
    "streamlib.observe",
    "streamlib.service",
    "streamlib.cli",
    "streamlib.remote",
    "streamlib.agents",
    "streamlib.cluster",
    "streamlib.clocks",
)
CORE = sorted(
    p
    for p in [*ROOT.glob("*.py"), *ROOT.glob("dispatch/*.py")]
    if p.parent != ROOT or p.name not in ("__main__.py", "service.py", "cli.py")
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at run time (anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("streamlib")}


def test_no_core_module_imports_a_layer() -> None:
    offenders = {_module_name(p): sorted(n for n in _runtime_imports(p) if n.startswith(LAYERS)) for p in CORE}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_imports_form_no_cycle() -> None:
    modules = {_module_name(p): p for p in CORE}
    graph = {name: {m for m in _runtime_imports(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_core_package_imports_no_layer_module() -> None:
    """``import streamlib`` in a fresh interpreter loads the actor system and nothing else."""
    code = "import sys, streamlib; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('streamlib'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded and [m for m in loaded if m.startswith(LAYERS)] == []


def test_ready_actors_are_a_streamlib_subpackage_and_there_is_no_top_level_actors() -> None:
    from streamlib.actors import TestPattern

    assert TestPattern.__module__ == "streamlib.actors.video"
    code = "import importlib.util; print(importlib.util.find_spec('actors'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # what is installed, not a checkout
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env)
    assert where.stdout.strip() == "None"
