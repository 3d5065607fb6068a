"""The Pykka side of the comparisons: a thread per actor, ``tell`` from one to the next.

Shared by ``bench_chain``, ``bench_fanout`` and ``bench_peers``, so the peer is written once
and measured the same way everywhere. Pykka's mailboxes are unbounded (nothing to configure).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka
from measure import Sample, Stopwatch

__all__ = ["Count", "Forward", "chain"]


class Forward(pykka.ThreadingActor):
    """Tells every message to the next actor."""

    def __init__(self, following: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.following = following

    def on_receive(self, message: Any) -> None:
        self.following.tell(message)


class Count(pykka.ThreadingActor):
    """Counts messages and sets ``done`` after the ``total``-th."""

    def __init__(self, total: int, done: threading.Event) -> None:
        super().__init__()
        self.total, self.done, self.count = total, done, 0

    def on_receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.total:
            self.done.set()


def chain(n: int, stages: int, make: Callable[[int], Any] = int) -> Sample:
    """Time ``n`` messages (``make(i)``) told through ``stages`` forwarding actors into a
    counting one (``stages + 1`` hops, as streamlib's source >> stages >> sink)."""
    done = threading.Event()
    refs: list[pykka.ActorRef[Any]] = [Count.start(n, done)]
    for _ in range(stages):
        refs.append(Forward.start(refs[-1]))
    first = refs[-1]
    watch = Stopwatch()
    for i in range(n):
        first.tell(make(i))
    if not done.wait(timeout=600):
        raise TimeoutError("the Pykka chain did not deliver every message")
    sample = watch.read()
    for ref in reversed(refs):
        ref.stop()
    return sample
