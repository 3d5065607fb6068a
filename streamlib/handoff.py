"""Hand-off: running a sleeping actor's tick in the turn of the code that woke it.

Every actor is an asyncio task, and waking a task costs a trip through the event loop's
ready queue: a future resolved, a callback queued, the task stepped. Down a chain of ten
pass-through actors that trip *is* the cost of a message. So when a message lands on the
driving input of an actor that sleeps on the same loop with nothing else pending, the
runtime runs that actor's tick right there, in the sender's turn -- like a GStreamer pad's
chain function, or a Python 3.12 eager task -- and the actor's own task never wakes.

Three things keep it honest (and a fourth, in the runtime: a hand-off happens only while the
actor sleeps with no signal pending -- any ring of its doorbell, a stop, a job, a rewiring,
ends that -- so no handed-off tick ever overtakes a signal):

* **It runs as the woken actor.** The tick runs in the actor's own context (its
  context variables, ``current_actor()``) and with its task marked as the running one, so
  ``asyncio.current_task()``, ``asyncio.timeout`` and task groups inside ``process`` see the
  actor's task, not the sender's.
* **Only until it waits.** ``process`` is stepped (by the actor's :func:`tick_driver`) until
  its first real suspension; if it suspends (a full ``"block"`` input downstream, an
  ``await asyncio.sleep``), the rest of the call is handed to the actor's own task
  (:func:`finish`), which finishes it before anything else. A failure is re-raised there
  too, so failures, restarts and message accounting take exactly the paths they take for a
  tick the task ran itself. (One difference remains: a stop that cancels the task in the
  loop turn between the hand-over and the task taking it closes the call when the actor
  ends -- ``GeneratorExit`` at its ``await`` -- instead of raising ``CancelledError`` there.)
* **Bounded.** Hand-offs nest (a tick sends, which hands off the next tick), at most
  :data:`MAX_DEPTH` deep, and a loop runs hand-offs for at most :data:`SLICE` seconds per
  turn of the loop (:class:`LoopSlice`): then wake-ups take the ready queue again, and
  timers, other actors and the network get their turn exactly as they would without it.
"""

from __future__ import annotations

import asyncio
import time
import types
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final

__all__ = ["MAX_DEPTH", "READY", "SLICE", "LoopSlice", "finish", "loop_slice", "tick_driver"]

SLICE = 0.001
"""Seconds of hand-offs a loop runs per turn before wake-ups queue again (fairness). Read each
time a slice opens, so it can be tuned (the benchmarks scale it under valgrind)."""

MAX_DEPTH: Final = 16
"""How deeply hand-offs may nest (each level is a few stack frames)."""


class LoopSlice:
    """One event loop's hand-off budget: how deep hand-offs nest now, and when this turn's
    slice of hand-off time ends. Shared by every actor of the loop, touched only on it."""

    __slots__ = ("__weakref__", "_loop", "depth", "ends", "open")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the table of budgets is keyed weakly by loop, and a value holding its key
        # would keep every loop ever used (a notebook's, each test's) alive for good.
        self._loop = weakref.ref(loop)
        self.depth = 0
        self.ends = 0.0
        self.open = False

    def open_slice(self) -> bool:
        """Open this turn's slice (the first hand-off of the turn): ``True``. The runtime checks
        ``depth`` and, while ``open``, ``perf_counter() < ends`` itself (the hot path)."""
        self.open = True
        self.ends = _clock() + SLICE
        loop = self._loop()
        if loop is not None:  # it runs on it: it is alive
            loop.call_soon(self._close)  # runs once the loop turns: the next turn gets a new slice
        return True

    def _close(self) -> None:
        self.open = False


_clock = time.perf_counter
_slices: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopSlice] = weakref.WeakKeyDictionary()


def loop_slice(loop: asyncio.AbstractEventLoop) -> LoopSlice:
    """The hand-off budget of ``loop`` (one per loop)."""
    found = _slices.get(loop)
    if found is None:
        found = _slices.setdefault(loop, LoopSlice(loop))
    return found


# -- running ticks without a coroutine per tick ------------------------------------------------

READY: Final = object()
"""What a :func:`tick_driver` yields when it has finished a tick and waits for the next."""


@types.coroutine
def tick_driver(run_tick: Callable[[Any], Awaitable[None] | None]) -> Generator[Any, Any, None]:
    """A long-lived coroutine that runs ``run_tick(tick)`` for each tick sent to it.

    ``driver.send(tick)`` returns :data:`READY` once the tick is done, or the first thing the
    tick waits on (the runtime then hands the rest to the actor's task with :func:`finish`).
    Stepping one resumable frame per tick costs less than starting ``process``'s coroutine
    from outside, which ends every tick by raising ``StopIteration``. A tick that raises ends
    the driver with it (a new one is made for the next hand-off). Prime it with ``send(None)``."""
    while True:
        tick = yield READY
        work = run_tick(tick)
        if work is not None:
            yield from work if type(work) is types.CoroutineType else work.__await__()  # type: ignore[misc]


@types.coroutine
def finish(driver: Generator[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, None]:
    """Finish, in the task that awaits this, the tick ``driver`` began elsewhere and that now
    waits on ``waiting_on``: what it waits on goes to the task, and what the task sends or
    throws back (a result, a cancellation) goes to the tick, until the driver is :data:`READY`
    -- or, for the call of ``process`` itself (which the C hand-off steps directly, see
    :mod:`streamlib.speedups`), until it returns."""
    while waiting_on is not READY:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            driver.close()
            raise
        except BaseException as exc:  # thrown in by the task, e.g. a cancellation
            try:
                waiting_on = driver.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = driver.send(sent)
            except StopIteration:
                return
