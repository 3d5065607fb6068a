"""The observability layer: profiling, views (tree, graph, snapshots), the live dashboard
and Prometheus metrics.

Built only on ``streamlib``'s public API: the core exposes a tick-instrument seam
(:func:`streamlib.set_tick_instrument`), a stats-section seam
(:func:`streamlib.actor.add_stats_section`) and rendering hooks (:mod:`streamlib.rendering`),
and this package plugs into them. Importing :mod:`.views` registers the notebook renderers.
The dashboard (:mod:`.dashboard`, the ``[observe]`` extra) is imported on its own.
"""

from __future__ import annotations

from . import profiling, views
from .views import graph, live, tree

__all__ = ["graph", "live", "profiling", "tree", "views"]
