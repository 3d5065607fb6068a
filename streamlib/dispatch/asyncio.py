"""The default dispatcher: ``process`` runs on the actor's own event loop.

Thousands of actors share one loop cheaply, as long as no ``process`` holds the loop
for long. The :class:`LoopWatchdog` watches for exactly that: a daemon thread checks a
heartbeat the loop posts every few milliseconds; when it stalls past the threshold,
the watchdog looks up which actor's task is running and warns once for that actor,
naming it and suggesting ``dispatcher="thread"``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

from .base import Dispatcher

if TYPE_CHECKING:
    from ..actor import Actor
    from ..messages import TimedTick

__all__ = ["AsyncioDispatcher", "BlockingWarning", "LoopWatchdog"]

log = logging.getLogger("streamlib")


class BlockingWarning(RuntimeWarning):
    """An actor's ``process`` held its event loop longer than the blocking threshold."""


class AsyncioDispatcher(Dispatcher):
    """Run ``process`` directly on the actor's event loop (the default).

    ``hand_off`` (default True): a message to an idle actor of this dispatcher, sent from its
    own loop, runs the actor's tick at once in the sender's turn (see :mod:`streamlib.handoff`).
    ``False`` makes every tick of its actors wait for their task's turn on the loop, as a
    plain asyncio task would: for a baseline, or to order ticks strictly by the loop's queue.
    ``blocking_threshold``: seconds a ``process`` may hold the loop before a
    :class:`BlockingWarning` (default 0.1, or ``STREAMLIB_BLOCKING_THRESHOLD``)."""

    interruptible: ClassVar[bool] = True

    def __init__(self, blocking_threshold: float | None = None, *, hand_off: bool = True) -> None:
        super().__init__()
        self.hands_off = hand_off
        env = os.environ.get("STREAMLIB_BLOCKING_THRESHOLD")
        self.blocking_threshold = blocking_threshold if blocking_threshold is not None else float(env) if env else 0.1

    def schedule(self, actor: Actor, tick: TimedTick) -> Awaitable[None] | None:
        # Returning process's own coroutine (instead of awaiting it here) keeps the
        # default path free of an extra coroutine frame per tick.
        return actor.process(tick)

    def bind(self, actor: Actor) -> Callable[[TimedTick], Awaitable[None] | None]:
        return actor.process  # the tick loop calls process directly: no frame in between

    async def attach(self, actor: Actor) -> None:
        await super().attach(actor)
        if self.blocking_threshold > 0:
            LoopWatchdog.for_loop(asyncio.get_running_loop(), self.blocking_threshold).watch(actor)

    async def detach(self, actor: Actor) -> None:
        LoopWatchdog.unwatch(asyncio.get_running_loop())
        await super().detach(actor)


class LoopWatchdog:
    """Detects an event loop held by one actor's synchronous code.

    One per loop: a daemon thread samples which task the loop is running every
    ``threshold / 4`` seconds. A task seen running continuously for longer than
    ``threshold`` has held the loop that long (a task that yields is replaced by other
    work or by idleness between samples), so its actor is warned about -- once. A busy
    loop of many short steps never looks like that, so it raises no false alarm. The
    thread needs the GIL only briefly, and a loop blocked in ``time.sleep`` or numpy
    releases it, so detection works for the usual culprits.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWatchdog]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.threshold = threshold
        self._actors: weakref.WeakKeyDictionary[asyncio.Task[None], Actor] = weakref.WeakKeyDictionary()
        self._warned: weakref.WeakSet[Actor] = weakref.WeakSet()
        self._loop_ref = weakref.ref(loop)
        threading.Thread(target=self._watch, name="streamlib-watchdog", daemon=True).start()

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop, threshold: float) -> LoopWatchdog:
        with cls._lock:
            dog = cls._by_loop.get(loop)
            if dog is None:
                dog = cls._by_loop[loop] = cls(loop, threshold)
            dog.threshold = min(dog.threshold, threshold)
            return dog

    @classmethod
    def unwatch(cls, loop: asyncio.AbstractEventLoop) -> None:
        """Forget the current task's actor (it is detaching). The entry must go: its value, the
        actor, holds its weak key, the actor's task, alive -- and with it the actor and its loop."""
        dog = cls._by_loop.get(loop)
        task = asyncio.current_task()
        if dog is not None and task is not None:
            dog._actors.pop(task, None)

    def watch(self, actor: Actor) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._actors[task] = actor

    def _watch(self) -> None:
        # Nothing is held across the sleep but weak references: the task seen last would hold
        # its actor (and the loop) alive until the thread next woke up and saw the loop closed.
        running: weakref.ref[asyncio.Task[object]] | None = None
        since = time.monotonic()
        while True:
            time.sleep(max(self.threshold / 4, 0.002))
            loop = self._loop_ref()
            if loop is None or loop.is_closed():
                return
            task = asyncio.current_task(loop) if loop.is_running() else None
            del loop
            now = time.monotonic()
            if task is None or running is None or running() is not task:
                running, since = (weakref.ref(task) if task is not None else None), now
                del task
                continue
            actor = self._actors.get(task)  # type: ignore[arg-type]
            del task
            if actor is not None and now - since > self.threshold and actor not in self._warned:
                self._warned.add(actor)
                try:
                    self.report(actor, now - since)
                except Exception:  # e.g. warnings turned into errors: the watchdog must not die
                    log.exception("blocking detected in %s", actor.path)
            del actor

    def report(self, actor: Actor, stalled: float) -> None:
        message = (
            f"actor {actor.path} ({type(actor).__qualname__}) held its event loop for over "
            f"{stalled * 1000:.0f} ms (threshold {self.threshold * 1000:.0f} ms), stalling every "
            f'actor on that loop; run it with dispatcher="thread" (or "process")'
        )
        warnings.warn(message, BlockingWarning, stacklevel=1)
