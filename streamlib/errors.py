"""The exceptions streamlib raises: each names the actor (by path), the port and the fix."""

from __future__ import annotations

__all__ = [
    "ActorDefinitionError",
    "ActorInitError",
    "EndOfStream",
    "RestartIntensityExceeded",
]


class EndOfStream(Exception):
    """Raised by ``await input.read()`` when the input will never deliver again.

    That is: every upstream of the input has ended and its mailbox is drained, or the
    reading actor is stopping. An actor's ``process`` may let it propagate: the run
    loop treats it as a normal end, not a failure.
    """


class ActorDefinitionError(TypeError):
    """An actor class is unusable as written (no ``process``, a port that is not a port, ...)."""


class ActorInitError(Exception):
    """An actor's ``__init__`` raised; the original exception is chained as ``__cause__``.

    When the original was a ``ValueError`` or ``TypeError`` (a bad argument), the error
    raised is also one (``except ValueError`` catches it), as validation errors should be."""


class RestartIntensityExceeded(RuntimeError):
    """A supervisor restarted its children more often than ``max_restarts`` within ``within``
    seconds, so it gave up and failed (escalating to its own parent)."""
