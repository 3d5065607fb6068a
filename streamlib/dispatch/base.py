"""The dispatcher seam: *where* an actor's code runs.

An actor's run loop (clock, mailboxes, lifecycle) always lives on its event loop; a
dispatcher decides where the user's hooks -- ``on_start``, ``process``, ``on_stop`` --
execute: on the loop itself, on a thread pool, in a worker process, on a GPU queue.
Every dispatcher goes through the same three calls, so adding one means subclassing
:class:`Dispatcher` and implementing :meth:`schedule` (see ``tests/test_dispatch.py``
for a complete user-defined dispatcher).

A dispatcher instance may be shared by many actors. :meth:`start` runs when the first
actor attaches and :meth:`stop` when the last one detaches, both on the event loop.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..actor import Actor
    from ..messages import TimedTick

__all__ = ["Dispatcher"]


class Dispatcher(ABC):
    """Runs an actor's hooks somewhere.

    Subclasses implement :meth:`schedule` and may override :meth:`call_hook`,
    :meth:`start`, :meth:`stop`, :meth:`attach` and :meth:`detach`.
    """

    interruptible: ClassVar[bool] = False
    """True if ``process`` runs on the actor's own loop, so a stop request may cancel a
    ``process`` call that is waiting on something. Off-loop dispatchers cannot cancel
    running code: a stop waits for the current call to return."""

    hands_off: bool = False
    """True if the callable of :meth:`bind` runs ``process`` on the actor's own loop and
    returns its coroutine, so a tick may be run by the code that woke the actor (see
    :mod:`streamlib.handoff`): the asyncio dispatcher's, unless built with ``hand_off=False``.
    Off-loop dispatchers leave it False."""

    def __init__(self) -> None:
        self._attached = 0

    @abstractmethod
    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        """Run ``actor.process(tick)``; return an awaitable that completes with it (or
        ``None`` if it already ran). Called on the actor's event loop, once per tick,
        never concurrently for one actor. Exceptions raised by ``process`` must
        propagate through the awaitable: they are the actor's failures."""

    def bind(self, actor: Actor) -> Callable[[TimedTick], Awaitable[None] | None]:
        """The per-tick callable the actor's run loop uses: ``schedule`` bound to ``actor``.
        Called once each time the actor starts; a dispatcher may return something faster."""
        return functools.partial(self.schedule, actor)

    def call_hook(self, actor: Actor, hook: Callable[[], Any]) -> Awaitable[None] | None:
        """Run ``on_start`` / ``on_stop``; by default on the loop, like ``process`` of
        the asyncio dispatcher. Dispatchers that move state elsewhere override it."""
        result = hook()
        return result if inspect.isawaitable(result) else None

    def place(
        self, actor_class: type[Actor], args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Actor | None:
        """Build the actor somewhere else and return what stands in for it here, or ``None``.

        Called by ``actor_class(*args, dispatcher=self, **kwargs)`` before anything is built
        (``options`` holds the framework options, ``parent`` and ``name`` included). A
        dispatcher that hosts actors in another runtime (``streamlib.cluster.RayDispatcher``)
        returns a stub of the actor it created there; the default, ``None``, builds the actor
        here as usual. The stand-in must not itself name this dispatcher."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (threads, processes, devices). Runs before the first actor."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release them. Runs after the last actor detached."""

    async def attach(self, actor: Actor) -> None:
        """An actor starts using this dispatcher (before its ``on_start``)."""
        self._attached += 1
        if self._attached == 1:
            await self.start()

    async def detach(self, actor: Actor) -> None:
        """An actor stopped using it (after its ``on_stop``)."""
        self._attached -= 1
        if self._attached == 0:
            await self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} actors={self._attached}>"
