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

A restart whose new ``__init__`` raises is a failed restart: it counts against the restart
intensity like any failure and is retried after the backoff, until the supervisor gives up.
The old instance keeps its place (and its open mailboxes) meanwhile; when the supervisor
gives up, its end ends the child's streams, so upstream never blocks on a dead mailbox and
downstream sees end of stream. (The failed instance itself undoes what its ``__init__`` did:
children it spawned are stopped, connections it made are removed.)

Backoff (Akka's ``BackoffSupervisor``): a child that keeps failing is restarted after a
growing delay -- none for the first failure, then ``min_backoff`` doubling up to
``max_backoff``, each with ±20 % jitter so a crowd of failing children does not restart in
step. A child that ran for ``max_backoff`` without failing starts again from no delay. So a
child that crashes on every tick costs a few restarts a second, not thousands, and its
siblings keep their frame rate. ``min_backoff=0`` switches backoff off.

The protocol
------------

Nothing here is private to the core: a supervisor is an actor that overrides
:meth:`Actor.on_child_ended <streamlib.Actor.on_child_ended>`, and anyone can write
another (``tests/test_supervision.py`` has one in 40 lines). The pieces:

* ``on_child_ended(child, cause, failure)`` -- called on the parent's loop when a child
  ended, with the :class:`~streamlib.Cause` (``FAILURE``, ``STOP``, ``END_OF_STREAM`` ...).
  Return a :class:`~streamlib.ChildFate`: ``RESTART`` keeps the child's mailboxes and
  wiring for a replacement, ``END`` lets it go (downstream sees end of stream), ``DEFER``
  decides with the parent's own end.
* ``child.restart_policy`` -- ``"permanent"``, ``"transient"`` or ``"temporary"``.
* ``child.stop(cause=Cause.RESTART)`` -- stop a sibling that will be rebuilt with it.
* ``child.build_replacement()`` -- the fresh instance that adopts the ended child's ports.
* ``self.run_between_ticks(job)`` -- do the work in the supervisor's own task.
* ``await child.join()`` -- wait for an actor to end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any, ClassVar, Literal

from .actor import Actor
from .errors import RestartIntensityExceeded
from .lifecycle import Cause, ChildFate
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
        *,
        min_backoff: float = 0.02,
        max_backoff: float = 2.0,
        **kw: Any,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if max_restarts < 0 or within <= 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")
        if min_backoff < 0 or max_backoff < min_backoff:
            raise ValueError(f"need 0 <= min_backoff <= max_backoff, got {min_backoff!r}, {max_backoff!r}")
        super().__init__(**kw)
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._restart_times: deque[float] = deque()
        self._failures: dict[str, tuple[int, float]] = {}  # child name -> (quick failures in a row, last restart)

    async def process(self, tick: TimedTick) -> None:
        """A supervisor has no inputs and no clock; it is never ticked."""

    def on_restart(self, previous: Actor) -> None:
        """Restarted by our own parent: bring the old children back, in order. Each new child
        takes over the ports of the old child of the same name."""
        super().on_restart(previous)
        for child in previous.children:
            if child.restart_policy != "temporary" and child.spec is not None:
                child.spec.build(parent=self)

    def on_child_ended(self, child: Actor, cause: Cause, failure: BaseException | None) -> ChildFate:
        if self.stopping:
            return ChildFate.DEFER  # we are going down ourselves; our own fate decides the child's
        if cause is Cause.RESTART:
            return ChildFate.RESTART  # stopped by one of our restarts, which will bring it back
        if cause in (Cause.STOP, Cause.END_OF_STREAM):
            return ChildFate.END
        policy = child.restart_policy
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
            return ChildFate.END
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

            self.run_between_ticks(give_up)
            return ChildFate.DEFER
        times.append(now)
        delay = self._backoff(child.name, now)
        log.warning(
            "supervisor %s: %s %s (%s); restarting (%s, %d/%d within %g s)%s",
            self.path,
            child.path,
            cause.value,
            repr(failure) if failure is not None else "normal exit",
            self.strategy,
            len(times),
            self.max_restarts,
            self.within,
            f" in {delay * 1000:.0f} ms" if delay else "",
            exc_info=failure,
        )

        async def restart() -> None:
            await self._restart(child)

        if delay:
            self.event_loop.call_later(delay, self.run_between_ticks, restart)
        else:
            self.run_between_ticks(restart)
        return ChildFate.RESTART

    def _backoff(self, name: str, now: float) -> float:
        """The delay before this restart: none after a good run, else growing (with jitter)."""
        quick, last = self._failures.get(name, (0, -float("inf")))
        quick = quick + 1 if now - last < max(self.max_backoff, 0.5) else 0
        self._failures[name] = (quick, now)
        if not quick or not self.min_backoff:
            return 0.0
        base = min(self.max_backoff, self.min_backoff * 2.0 ** (quick - 1))
        return base * random.uniform(0.8, 1.2)

    async def _restart(self, ended: Actor) -> None:
        if self.stopping or ended not in self.children:
            return
        index = self.children.index(ended)
        if self.strategy == "one_for_all":
            group = list(self.children)
        elif self.strategy == "rest_for_one":
            group = self.children[index:]
        else:
            group = [ended]
        others = [c for c in group if c is not ended and not c.join().done()]
        for other in others:
            other.stop(cause=Cause.STOP if other.restart_policy == "temporary" else Cause.RESTART)
        if others:
            await asyncio.gather(*(other.join() for other in others))
        for old in group:
            if old.replaced_by is not None or old not in self.children:
                continue
            if old is not ended and old.restart_policy == "temporary":
                continue
            try:
                old.build_replacement()
            except Exception as exc:
                # A failed restart is a failure of the child: it counts against the intensity
                # and is retried after the backoff, or makes us give up. Meanwhile the old
                # instance keeps its place (its mailboxes stay open for the next attempt; if we
                # give up, our end ends its streams).
                self.on_child_ended(old, Cause.FAILURE, exc)  # a retry rebuilds the rest of the group too
                return

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} strategy={self.strategy} children={len(self.children)}>"
