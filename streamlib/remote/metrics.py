"""Prometheus metrics of every data link of this process (stubs' links and the served runtime's).

``prometheus_client.REGISTRY.register(link_collector())`` adds, per link (labels: ``actor``, the
stub's path or the runtime's name; ``link``, the port it feeds or drains; ``direction``):
``streamlib_link_frames``, ``streamlib_link_bytes``, ``streamlib_link_dropped``,
``streamlib_link_reconnects`` (counters) and ``streamlib_link_latency_ms`` (gauge: the smoothed
delivery round trip). The per-actor figures come from :mod:`streamlib.observe.dashboard`'s
collector, which sees stubs as the actors they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streamlib import Actor, running_actors

from .link import LinkStats
from .node import current_node
from .stub import RemoteActor

__all__ = ["link_collector", "link_stats"]


def link_stats() -> list[tuple[str, str, LinkStats]]:
    """``(owner, link, stats)`` for every link of this process, right now."""
    found: list[tuple[str, str, LinkStats]] = []
    stack: list[Actor] = running_actors()
    while stack:
        actor = stack.pop()
        stack.extend(actor.children)
        if isinstance(actor, RemoteActor):
            found.extend((actor.path, name, stats) for name, stats in actor.link_objects().items())
    node = current_node()
    if node is not None:
        found.extend((node.name, name, stats) for name, stats in node.link_objects().items())
    return found


class _LinkCollector:
    def describe(self) -> list[Any]:
        return []  # unchecked: which links exist changes while running

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["actor", "link", "direction"]
        families = {
            "frames": CounterMetricFamily("streamlib_link_frames", "Messages carried by a data link", labels=labels),
            "bytes": CounterMetricFamily("streamlib_link_bytes", "Bytes carried by a data link", labels=labels),
            "dropped": CounterMetricFamily(
                "streamlib_link_dropped", "Messages the sending queue dropped (receiving input's policy)", labels=labels
            ),
            "reconnects": CounterMetricFamily("streamlib_link_reconnects", "Reconnections", labels=labels),
        }
        latency = GaugeMetricFamily("streamlib_link_latency_ms", "Smoothed delivery round trip", labels=labels)
        for owner, name, stats in link_stats():
            who = [owner, name, stats.direction]
            for key, family in families.items():
                family.add_metric(who, getattr(stats, key))
            if stats.latency_ms is not None:
                latency.add_metric(who, stats.latency_ms)
        yield from families.values()
        yield latency


def link_collector() -> Any:
    """A prometheus-client collector of every data link of this process (see the module docstring)."""
    return _LinkCollector()
