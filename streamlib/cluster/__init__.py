"""Running on a cluster: Ray places and restarts streamlib runtimes; frames flow between them.

``Cls(..., dispatcher=RayDispatcher(resources={"camera": 1}))`` builds ``Cls`` in a streamlib
runtime hosted by a Ray actor on a node with those resources (one runtime per node, reused) and
returns its stub, which wires with ``>>`` like any actor. Frames travel on streamlib's links
(:mod:`streamlib.remote`), never through Ray calls or the object store. See ``docs/cluster.md``.

Needs the optional extra ``streamlib[cluster]`` (Ray); the core never imports this package.
"""

from __future__ import annotations

from .dispatcher import PlacedActor, Placement, RayDispatcher
from .hosting import HostRecord, NoNodeAvailable, RuntimeHost, forget_hosts, hosts

__all__ = [
    "HostRecord",
    "NoNodeAvailable",
    "PlacedActor",
    "Placement",
    "RayDispatcher",
    "RuntimeHost",
    "forget_hosts",
    "hosts",
]
