"""An actor's life as values: its state, why it ended, and what its parent decided.

These are the words of the supervision protocol (see :mod:`.supervision`): a parent is told
*that* a child ended and the :class:`Cause`, and answers with a :class:`ChildFate`. Kept in
their own module so the actor, its runtime and any supervisor can share them without
importing each other.
"""

from __future__ import annotations

import enum
from typing import Literal

__all__ = ["RESTART_POLICIES", "Cause", "ChildFate", "LifecycleState", "RestartPolicy"]

RestartPolicy = Literal["permanent", "transient", "temporary"]
"""What a supervisor does when the actor ends (Erlang's child restart types):
``permanent`` is always restarted, ``transient`` only after a failure, ``temporary`` never."""

RESTART_POLICIES: tuple[RestartPolicy, ...] = ("permanent", "transient", "temporary")


class LifecycleState(enum.Enum):
    """Where an actor is in its life. An actor is ``RUNNING`` from construction."""

    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class Cause(enum.Enum):
    """Why an actor ended; a supervisor's restart decision depends on it."""

    STOP = "stopped by request"
    """Someone called ``actor.stop()``: a normal end, never restarted."""
    SELF = "stopped itself"
    """The actor called ``self.stop()`` from its own code: a normal end."""
    END_OF_STREAM = "end of stream"
    """Every input ended and was drained: a normal end, never restarted."""
    FAILURE = "failed"
    """A hook raised; ``actor.failure`` holds the exception."""
    PARENT = "parent stopped"
    """Its parent is stopping: the child's fate is decided with the parent's."""
    RESTART = "stopped for a sibling's restart"
    """A supervisor stopped it to restart it with a sibling (``one_for_all``, ``rest_for_one``)."""


class ChildFate(enum.Enum):
    """A parent's answer when a child ends (:meth:`Actor.on_child_ended`)."""

    RESTART = "restart"
    """A replacement will be built (:meth:`Actor.build_replacement`): the child's mailboxes
    stay open and its connections stay in place, so upstream keeps sending and downstream
    never sees end of stream."""
    END = "end"
    """Gone for good: its outputs signal end of stream and its mailboxes close."""
    DEFER = "defer"
    """Decided together with the parent's own fate (the parent is stopping or restarting)."""
