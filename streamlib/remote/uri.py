"""Actor URIs: ``actor://HOST:PORT/ClassName/instance-id``.

``HOST:PORT`` is the address a runtime is served at (:func:`streamlib.remote.serve`, or
``streamlib node --listen HOST:PORT``). ``ClassName`` names the actor's class: a plain name
(``TestPattern``) that the runtime finds among the actor classes it has imported and the
ready actors of :mod:`streamlib.actors`, or a dotted ``module.Class`` it may import.
``instance-id`` is the actor's path in its runtime without the leading slash: a top-level
actor's name (``cam-1``), or ``app/pipeline/encoder`` for a child.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ActorURI", "parse_uri"]

SCHEME = "actor://"
_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.~+-][A-Za-z0-9_.~+@-]*$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")


@dataclass(frozen=True, slots=True)
class ActorURI:
    """A parsed actor URI. ``str()`` gives it back in canonical form."""

    host: str
    port: int
    class_name: str
    instance_id: str

    @property
    def address(self) -> str:
        """``HOST:PORT``: the runtime's address."""
        return f"{self.host}:{self.port}"

    @property
    def path(self) -> str:
        """The actor's path inside its runtime (``/`` + instance id)."""
        return "/" + self.instance_id

    @property
    def name(self) -> str:
        """The actor's own name: the last segment of its path."""
        return self.instance_id.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"{SCHEME}{self.host}:{self.port}/{self.class_name}/{self.instance_id}"


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; raises :class:`ValueError` saying what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if not 0 < port < 65536 or not _HOST.match(host):
        raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {address!r}")
    return host.strip("[]"), port


def parse_uri(uri: str | ActorURI) -> ActorURI:
    """Parse ``actor://HOST:PORT/ClassName/instance-id``.

    Raises :class:`ValueError` naming the part that is wrong, with the expected form."""
    if isinstance(uri, ActorURI):
        return uri
    form = "actor://HOST:PORT/ClassName/instance-id, e.g. actor://127.0.0.1:7400/TestPattern/cam-1"
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"not an actor URI: {uri!r}; expected {form}")
    address, _, rest = uri[len(SCHEME) :].partition("/")
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"bad address in {uri!r}: {exc}; expected {form}") from None
    class_name, _, instance_id = rest.partition("/")
    if not _CLASS.match(class_name):
        raise ValueError(f"bad class name {class_name!r} in {uri!r}; expected {form}")
    segments = instance_id.split("/")
    if not instance_id or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError(f"bad instance id {instance_id!r} in {uri!r}; expected {form}")
    return ActorURI(host, port, class_name, instance_id)
