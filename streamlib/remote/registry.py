"""A runtime's receptionist: which actors it answers for, by instance id.

After Akka's receptionist: actors are *registered* under an id (their path without the
leading slash, the last part of their URI), can be *looked up*, and anyone may *subscribe*
to changes. A name disappears when its actor stops for good; when a supervisor restarts an
actor, the name moves to the fresh instance and subscribers hear ``"restarted"``.

Every running actor of the process can be looked up by its path, registered or not; the
registry adds change notifications and the list of what was published on purpose (the actors
created through :func:`streamlib.remote.get_actor`, and those :meth:`Receptionist.register`
was called for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamlib import Actor, LifecycleState, running_actors

__all__ = ["Receptionist", "RegistryEvent", "find_actor"]

log = logging.getLogger("streamlib.remote")

RESTART_GRACE = 0.5
"""Seconds to wait, after a registered actor ended, for its supervisor's replacement."""


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """A change in the registry: ``kind`` is ``"registered"``, ``"restarted"`` or ``"ended"``."""

    kind: str
    instance_id: str
    class_name: str
    state: str
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.instance_id,
            "class": self.class_name,
            "state": self.state,
            "failure": self.failure,
        }


def find_actor(path: str) -> Actor | None:
    """The running actor at ``path`` (``/a/b``) in this process's trees, or ``None``."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    found: Actor | None = next((a for a in running_actors() if a.name == parts[0]), None)
    for part in parts[1:]:
        if found is None:
            return None
        found = next((c for c in list(found.children) if c.name == part and c.state is LifecycleState.RUNNING), None)
    if found is None or found.state is not LifecycleState.RUNNING:
        return None
    return found


class Receptionist:
    """Registered actors by instance id, with change subscriptions. Thread-safe.

    ``loop`` is where watchers run (they wait for each registered actor to end)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._actors: dict[str, Actor] = {}
        self._subscribers: dict[int, Callable[[RegistryEvent], None]] = {}
        self._next = 0

    def register(self, actor: Actor) -> str:
        """Publish ``actor`` under its instance id (its path without the leading slash)."""
        instance_id = actor.path[1:]
        with self._lock:
            known = self._actors.get(instance_id)
            self._actors[instance_id] = actor
        if known is not actor:
            self._notify(RegistryEvent("registered", instance_id, type(actor).__name__, actor.state.value))
            asyncio.run_coroutine_threadsafe(self._watch(instance_id, actor), self._loop)
        return instance_id

    def lookup(self, instance_id: str) -> Actor | None:
        """The running actor with that id: registered, or anywhere in this process's trees."""
        with self._lock:
            actor = self._actors.get(instance_id)
        if actor is not None and actor.state is LifecycleState.RUNNING:
            return actor
        return find_actor("/" + instance_id)

    def names(self) -> dict[str, str]:
        """Registered ids and their class names."""
        with self._lock:
            return {k: type(a).__name__ for k, a in self._actors.items()}

    def subscribe(self, callback: Callable[[RegistryEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every change (on the receptionist's loop); returns the
        function that unsubscribes."""
        with self._lock:
            key = self._next
            self._next += 1
            self._subscribers[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    def _notify(self, event: RegistryEvent) -> None:
        with self._lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("registry subscriber %r failed on %s", callback, event)

    async def _watch(self, instance_id: str, actor: Actor) -> None:
        with contextlib.suppress(Exception):
            await actor.join()
        deadline = self._loop.time() + RESTART_GRACE
        replacement = None
        while actor.parent is not None and replacement is None and self._loop.time() < deadline:
            await asyncio.sleep(0.02)  # a supervisor builds the replacement in its own task
            candidate = find_actor(actor.path)
            replacement = candidate if candidate is not actor else None
        with self._lock:
            if self._actors.get(instance_id) is not actor:
                return  # registered again meanwhile
            if replacement is not None:
                self._actors[instance_id] = replacement
            else:
                del self._actors[instance_id]
        failure = actor.failure
        text = f"{type(failure).__name__}: {failure}" if failure is not None else None
        if replacement is not None:
            self._notify(RegistryEvent("restarted", instance_id, type(actor).__name__, actor.state.value, text))
            await self._watch(instance_id, replacement)
        else:
            self._notify(RegistryEvent("ended", instance_id, type(actor).__name__, actor.state.value, text))
