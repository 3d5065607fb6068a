"""Which actor's hook is running in this task or worker thread.

A context variable, set by the run loop (and by a process dispatcher's worker) around an
actor's hooks, so code deep inside ``process`` -- a child being built, a profiled section,
a log record -- knows whose work it is without being passed the actor. Kept apart from
:mod:`.actor` so the dispatchers can set it without importing the actor machinery.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .actor import Actor

__all__ = ["current_actor", "set_current_actor"]

_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("current_actor", default=None)


def current_actor() -> Actor | None:
    """The actor whose hook is running in this task or worker thread, if any."""
    return _current.get()


def set_current_actor(actor: Actor | None) -> contextvars.Token[Actor | None]:
    """Mark ``actor`` as the one running here (for this task or thread's context)."""
    return _current.set(actor)
