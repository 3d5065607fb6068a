"""Supervision trees, after Erlang/OTP.

Defaults first: ``Supervisor()`` restarts a failed child on its own (``one_for_one``),
up to ``max_restarts=3`` times within ``within=5.0`` seconds, and every child is
``restart="permanent"`` unless spawned otherwise.

Restart policies (per child, ``sup.spawn(Cls, ..., restart=...)``):

``"permanent"``
    restarted whenever it ends by itself -- failing, or calling ``self.stop()``.
``"transient"``
    restarted only when it fails.
``"temporary"``
    never restarted.

A child stopped from outside (``child.stop()``), or one that finished because every
upstream ended (end of stream), is never restarted: that is completion, not a crash.

Strategies, when a child is to be restarted:

``"one_for_one"``
    restart that child only (independent workers).
``"one_for_all"``
    stop every other child, then restart them all in start order (children that
    only make sense together, e.g. an encoder and the muxer it feeds).
``"rest_for_one"``
    stop the children started after it, then restart it and them (a pipeline where
    each stage depends on the ones before it).

A restarted child is a fresh instance built with the same arguments, and it keeps the
old one's mailboxes and connections: upstream and downstream wiring survives, and only
the message in hand at the crash is lost (counted in the input's ``lost``).

Restart intensity: the restart that would exceed ``max_restarts`` within ``within``
seconds makes the supervisor give up: it fails with
:class:`~streamlib.errors.RestartIntensityExceeded`, stopping its children, and its own
parent decides what happens next (escalation). A supervisor restarted by its parent
re-creates its children from their specs, and they too keep their wiring.

Restarts happen one at a time in the supervisor's own task, so a child failing while
another restart is in progress simply waits its turn.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, ClassVar, Literal

from .actor import Actor, ActorSpec, _Cause, _ended
from .errors import RestartIntensityExceeded
from .messages import TimedTick

__all__ = ["Strategy", "Supervisor"]

log = logging.getLogger("streamlib")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


class Supervisor(Actor):
    """An actor whose job is to keep its children running (see the module docstring)."""

    default_fps: ClassVar[float | None] = None  # it never ticks: it only reacts to its children

    def __init__(
        self,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within: float = 5.0,
        **kw: Any,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if max_restarts < 0 or within <= 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")
        super().__init__(**kw)
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self._restart_times: deque[float] = deque()
        previous = self._core.inherit
        if isinstance(previous, Supervisor):
            # Restarted by our own parent: bring the old children back, in order. Each
            # new child takes over the ports of the old child of the same name.
            for child in previous.children:
                if child._core.restart != "temporary" and child.spec is not None:
                    self._build(child.spec)

    async def process(self, tick: TimedTick) -> None:
        """A supervisor has no inputs and no clock; it is never ticked."""

    def _build(self, spec: ActorSpec, previous: Actor | None = None) -> Actor:
        kwargs: dict[str, Any] = {**spec.kwargs, **spec.options, "parent": self}
        if previous is not None:
            kwargs["_restart_of"] = previous
        return spec.cls(*spec.args, **kwargs)

    def _child_ended(self, child: Actor, cause: _Cause, failure: BaseException | None) -> bool | None:
        core = self._core
        if core.stop_requested:
            return None  # we are going down ourselves; our own fate decides the child's
        if cause is _Cause.RESTART:
            return True  # stopped by one of our restarts, which will bring it back
        if cause in (_Cause.STOP, _Cause.END_OF_STREAM):
            return False
        policy = child._core.restart
        if not (policy == "permanent" or (policy == "transient" and failure is not None)):
            if failure is not None:
                log.error(
                    "supervisor %s: %s child %s failed and is not restarted: %r",
                    self.path,
                    policy,
                    child.path,
                    failure,
                    exc_info=failure,
                )
            return False
        now = time.monotonic()
        times = self._restart_times
        while times and now - times[0] > self.within:
            times.popleft()
        if len(times) >= self.max_restarts:
            error = RestartIntensityExceeded(
                f"supervisor {self.path} gave up: {child.path} ended ({cause.value}: {failure!r}) after "
                f"{len(times)} restarts within {self.within:g} s (max_restarts={self.max_restarts})"
            )
            error.__cause__ = failure

            async def give_up() -> None:
                raise error

            self._control(give_up)
            return None
        times.append(now)
        log.warning(
            "supervisor %s: %s %s (%s); restarting (%s, %d/%d within %g s)",
            self.path,
            child.path,
            cause.value,
            repr(failure) if failure is not None else "normal exit",
            self.strategy,
            len(times),
            self.max_restarts,
            self.within,
            exc_info=failure,
        )

        async def restart() -> None:
            await self._restart(child)

        self._control(restart)
        return True

    async def _restart(self, ended: Actor) -> None:
        import asyncio

        if self._core.stop_requested or ended not in self.children:
            return
        index = self.children.index(ended)
        if self.strategy == "one_for_all":
            group = list(self.children)
        elif self.strategy == "rest_for_one":
            group = self.children[index:]
        else:
            group = [ended]
        others = [c for c in group if c is not ended and not c._core.done.done()]
        for other in others:
            other._request_stop(_Cause.STOP if other._core.restart == "temporary" else _Cause.RESTART)
        if others:
            await asyncio.gather(*(_ended(c) for c in others))
        for old in group:
            if old._core.replaced_by is not None or old not in self.children:
                continue
            if old is not ended and old._core.restart == "temporary":
                continue
            spec = old.spec
            if spec is None:  # pragma: no cover - every actor built by ActorMeta has one
                continue
            self._build(spec, previous=old)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} strategy={self.strategy} children={len(self.children)}>"
