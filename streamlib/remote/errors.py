"""What goes wrong between runtimes, as exceptions that name the actor (by URI) and the fix."""

from __future__ import annotations

__all__ = ["ActorUnavailable", "AuthenticationFailed", "RemoteError"]


class ActorUnavailable(RuntimeError):
    """A remote actor (or its whole runtime) did not answer in time: it is restarting, its
    runtime is down or unreachable. Calls on a stub raise this instead of hanging; data links
    reconnect by themselves once the actor is back."""


class AuthenticationFailed(RuntimeError):
    """The runtime refused our token (or wanted one and we had none)."""


class RemoteError(RuntimeError):
    """The remote runtime ran the request and it failed there; ``remote_type`` is the name of
    the exception it raised (``LookupError``, ``TypeError`` ...)."""

    def __init__(self, message: str, remote_type: str = "Exception") -> None:
        super().__init__(message)
        self.remote_type = remote_type
