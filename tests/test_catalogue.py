"""docs/catalogue.md is generated from the actors' docstrings, and must be up to date."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_catalogue", ROOT / "docs" / "gen_catalogue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_catalogue"] = module
    spec.loader.exec_module(module)
    return module


def test_catalogue_is_up_to_date() -> None:
    generator = load_generator()
    try:
        text = generator.render()
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"an actor's library is missing ({exc}); install the 'media' extra")
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
