"""Notebook rendering hooks: how Jupyter shows core objects, supplied by a layer.

The core defines ``_repr_html_`` / ``_repr_png_`` on :class:`~streamlib.Actor` and
:class:`~streamlib.VideoFrame` but draws nothing itself: drawing (HTML cards, PNG encoding,
graphs) is :mod:`streamlib.observe`'s job, and the core never imports a layer. A layer
registers a renderer per class and MIME type; :func:`render` finds the nearest one in the
object's class hierarchy. ``import streamlib`` inside IPython imports
:mod:`streamlib.observe.views`, which registers the standard ones, so notebooks need nothing.
With no renderer registered, Jupyter falls back to ``repr()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_renderer", "render"]

_renderers: dict[tuple[type, str], Callable[[Any], Any]] = {}


def register_renderer(cls: type, mime: str, renderer: Callable[[Any], Any]) -> None:
    """Use ``renderer(obj)`` to show instances of ``cls`` (and subclasses) as ``mime``
    (``"text/html"``, ``"image/png"``); it returns the content, or ``None`` to decline."""
    _renderers[(cls, mime)] = renderer


def render(obj: object, mime: str) -> Any:
    """The content of ``obj`` as ``mime`` from the nearest registered renderer, or ``None``."""
    for cls in type(obj).__mro__:
        renderer = _renderers.get((cls, mime))
        if renderer is not None:
            return renderer(obj)
    return None
