"""The actor catalogue: one JSON source (read from the code) behind docs/catalogue.md,
``streamlib catalogue --json`` and the agents' ``list_actor_types``."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_catalogue", ROOT / "docs" / "gen_catalogue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_catalogue"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entries() -> dict[str, dict[str, Any]]:
    from streamlib.agents.catalogue import catalogue

    found = {e["name"]: e for e in catalogue()["actors"]}
    missing = [e["error"] for e in found.values() if not e.get("available", True)]
    if missing:  # pragma: no cover - depends on the environment
        pytest.skip(f"an actor's library is missing ({missing[0]}); install the 'media' and 'gpu' extras")
    return found


def test_catalogue_is_up_to_date(entries: dict[str, dict[str, Any]]) -> None:
    text = load_generator().render()
    committed = (ROOT / "docs" / "catalogue.md").read_text()
    assert committed == text, "docs/catalogue.md is out of date: run python docs/gen_catalogue.py"


def test_catalogue_covers_every_actor() -> None:
    from streamlib import Actor, actors

    text = (ROOT / "docs" / "catalogue.md").read_text()
    for name in actors.__all__:
        value = getattr(actors, name)
        if isinstance(value, type) and issubclass(value, Actor):
            assert f"\n## {name}\n" in text, name
    for name in ("Supervisor", "Probe", "Feeder"):
        assert f"\n## {name}\n" in text
    assert "| `video` | output | `VideoFrame` |" in text  # ports found in the sources


def test_port_types_are_public_names_even_where_a_module_aliases_them(entries: dict[str, dict[str, Any]]) -> None:
    # actors/files.py imports VideoFrame under another name: the catalogue still says VideoFrame.
    assert {"name": "video", "direction": "input", "type": "VideoFrame"} in entries["FileSink"]["ports"]
    assert {"name": "video", "direction": "output", "type": "VideoFrame"} in entries["FileSource"]["ports"]
    text = (ROOT / "docs" / "catalogue.md").read_text()
    assert "`Frame`" not in text


def test_needs_come_from_the_imports(entries: dict[str, dict[str, Any]]) -> None:
    assert entries["FileSink"]["needs"] == ["av", "numpy", "opencv-python"]
    assert "skia-python" in entries["Drawing"]["needs"] and "opencv-python" in entries["Drawing"]["optional_needs"]
    assert "numba" in entries["Compositor"]["needs"]  # actors/blend.py, imported by compose.py
    assert "wgpu" in entries["ShaderActor"]["needs"]
    assert entries["Supervisor"]["needs"] == []  # the core needs nothing beyond streamlib's own dependencies
    text = (ROOT / "docs" / "catalogue.md").read_text()
    file_sink = text.split("\n## FileSink\n", 1)[1].split("\n## ", 1)[0]
    assert "needs `av`, `numpy`, `opencv-python`" in file_sink


def test_parameters_are_json_schema_with_defaults(entries: dict[str, dict[str, Any]]) -> None:
    schema = entries["TestPattern"]["parameters"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["width"] == {"type": "integer", "default": 1280}
    assert "gradient" in props["pattern"]["enum"] and props["pattern"]["default"] == "smpte_bars"
    assert props["frames"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    drawing = entries["Drawing"]["parameters"]
    assert drawing["required"] == ["draw"] and drawing["properties"]["draw"] == {"type": "string"}
    assert drawing["properties"]["on_error"]["x-json"] is False  # a callable: Python only
    assert "dispatcher" not in props and "kw" not in props
    assert entries["ShaderActor"]["dispatchers"] == {"default": "gpu", "allowed": ["gpu"]}


def test_streamlib_catalogue_json_prints_the_same_data(entries: dict[str, dict[str, Any]]) -> None:
    from streamlib.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["catalogue", "--json"]) == 0
    printed = json.loads(out.getvalue())
    assert {e["name"]: e for e in printed["actors"]} == json.loads(json.dumps(entries))
