"""Remote runtimes: actor URIs, get-or-create by URI, ``>>`` across processes and hosts.

Serve a runtime (``streamlib node --listen 127.0.0.1:7400`` or :func:`serve`), then, from any
other process::

    from streamlib import get_actor
    pattern = get_actor("actor://127.0.0.1:7400/TestPattern/cam-1", width=640, height=360)
    pattern >> local_sink            # frames cross with their clock metadata

``get_actor`` returns the existing actor with that id or creates it there (get-or-create); a
URI of this process's own runtime returns the actor object itself, any other a
:class:`RemoteActor` stub with the same API. See ``docs/remote.md``.

Modules: :mod:`.uri` (the URI form), :mod:`.wire` (the versioned wire format),
:mod:`.control` (requests over aiohttp WebSockets, HMAC challenge, heartbeats),
:mod:`.link` (data links: credit flow, shared memory), :mod:`.registry` (the receptionist),
:mod:`.node` (serving a runtime, ``streamlib node``), :mod:`.stub` (the stub).
"""

from __future__ import annotations

from .errors import ActorUnavailable, AuthenticationFailed, RemoteError
from .link import LinkStats
from .node import Node, add_node_command, current_node, serve
from .registry import Receptionist, RegistryEvent
from .stub import RemoteActor, get_actor, spawn_remote
from .uri import ActorURI, parse_uri
from .wire import NotSerializable, WireError

__all__ = [
    "ActorURI",
    "ActorUnavailable",
    "AuthenticationFailed",
    "LinkStats",
    "Node",
    "NotSerializable",
    "Receptionist",
    "RegistryEvent",
    "RemoteActor",
    "RemoteError",
    "WireError",
    "add_node_command",
    "current_node",
    "get_actor",
    "parse_uri",
    "serve",
    "spawn_remote",
]
