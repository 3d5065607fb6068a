"""A bounded mailbox with an explicit overflow policy and exact counters.

Realtime streams lose value with age, so a full mailbox makes room instead of making
the sender wait. Which message goes is a per-input choice:

``"drop_oldest"`` (default)
    The oldest queued message is discarded and the new one appended: newest data wins.
``"drop_newest"``
    The new message is discarded: what is queued is kept.
``"block"``
    The sender waits for room (backpressure). Use it for lossless offline work,
    e.g. transcoding a file as fast as the encoder accepts.

Every discarded message is counted in :attr:`Mailbox.dropped`; nothing is ever lost
silently. A mailbox may be written from any thread (actors on a thread dispatcher
send from worker threads); waiters are always woken on their own event loop.

Control signals (stop, end of stream) never travel through a mailbox: they are flags
on the owning port and actor, so a full mailbox can never drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from .threadsafe import settle_threadsafe

__all__ = ["EMPTY", "Mailbox", "MailboxStatistics", "Overflow", "wake"]

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES: Final = get_args(Overflow)


class _Empty:
    """Sentinel returned by :meth:`Mailbox.get_nowait` when nothing is queued (``None`` is a valid message)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Final = _Empty()


def wake(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` from any thread, on the loop that owns it."""
    settle_threadsafe(fut)


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of a mailbox, in the spirit of Trio's ``MemoryChannelStatistics``."""

    current_buffer_used: int
    max_buffer_size: int
    overflow: str
    received: int
    """Messages accepted into the mailbox."""
    taken: int
    """Messages read out of it."""
    dropped: int
    """Messages discarded by the overflow policy, or offered after the mailbox was closed."""
    tasks_waiting_send: int
    tasks_waiting_receive: int


class Mailbox:
    """A FIFO of at most ``maxsize`` messages with an overflow policy.

    ``put_nowait`` never waits; with ``overflow="block"`` and no room it returns
    ``False`` and the caller awaits :meth:`put`. A *closed* mailbox (its reader is
    gone for good) accepts nothing: offers are counted as dropped and blocked senders
    are released, so a dead consumer can never stall its producers.

    Thread safety without a lock: every mutation is a single ``deque`` operation, which
    CPython performs atomically (``deque(maxlen=n).append`` even discards the oldest
    item in the same step). A lock would cost more than the rest of a hop between two
    actors on this path, which is the hottest in the library.
    """

    __slots__ = (
        "_getters",
        "_items",
        "_putters",
        "blocking",
        "closed",
        "dropped",
        "maxsize",
        "overflow",
        "received",
        "taken",
        "waker",
    )

    def __init__(self, maxsize: int = 2, overflow: Overflow = "drop_oldest") -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, got {overflow!r}"
            )
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self.blocking = overflow == "block"
        # drop_oldest: the deque itself discards the oldest item when full.
        self._items: deque[Any] = deque(maxlen=maxsize if overflow == "drop_oldest" else None)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self.received = 0
        self.taken = 0
        self.dropped = 0
        self.waker: Callable[[], None] | None = None
        """Set by the reading actor while it sleeps; called after each accepted message."""

    # -- writing -----------------------------------------------------------------

    def put_nowait(self, item: Any) -> bool:
        """Offer ``item``. Returns ``True`` if it was queued.

        On a full dropping mailbox this always succeeds for ``drop_oldest`` (the
        oldest is discarded) and fails for ``drop_newest``; both count a drop. On a
        full blocking mailbox it returns ``False`` and counts nothing.
        """
        items = self._items
        if len(items) >= self.maxsize or self.closed:
            if self.closed:
                self.dropped += 1
                return False
            if self.blocking:
                return False
            self.dropped += 1
            if self.overflow == "drop_newest":
                return False
        items.append(item)
        self.received += 1
        if self._getters:
            self._wake_one(self._getters)
        waker = self.waker
        if waker is not None:
            waker()
        return True

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
        try:
            fut = waiters.popleft()
        except IndexError:  # another thread took it
            return
        wake(fut)

    async def put(self, item: Any) -> bool:
        """Queue ``item``, waiting for room if the policy is ``"block"``.

        Returns ``False`` only if the item was dropped (dropping policy, or closed).
        """
        while self.blocking and not self.closed and len(self._items) >= self.maxsize:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            if len(self._items) < self.maxsize:  # room was made before we queued: don't sleep
                waiter.set_result(None)
            try:
                await waiter
            except BaseException:
                try:
                    self._putters.remove(waiter)
                except ValueError:  # it was woken: pass the wake on
                    if self._putters:
                        self._wake_one(self._putters)
                raise
        return self.put_nowait(item)

    # -- reading -----------------------------------------------------------------

    def get_nowait(self) -> Any:
        """Take the oldest message, or return :data:`EMPTY`."""
        try:
            item = self._items.popleft()
        except IndexError:
            return EMPTY
        self.taken += 1
        if self._putters:
            self._wake_one(self._putters)
        return item

    def peek(self) -> Any:
        """The oldest message without taking it, or :data:`EMPTY`."""
        try:
            return self._items[0]
        except IndexError:
            return EMPTY

    async def wait_nonempty(self) -> None:
        """Return once a message is queued or :meth:`wake_readers` is called."""
        if self._items:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._getters.append(waiter)
        if self._items:  # a message landed before we queued: don't sleep
            waiter.set_result(None)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._getters.remove(waiter)

    def wake_readers(self) -> None:
        """Wake every task in :meth:`wait_nonempty` so it can re-check why it waits."""
        while self._getters:
            self._wake_one(self._getters)

    def _wake_all_senders(self) -> None:
        while self._putters:
            self._wake_one(self._putters)

    def clear(self) -> int:
        """Discard everything queued, counting it as dropped; returns how many."""
        n = 0
        while True:
            try:
                self._items.popleft()
            except IndexError:
                break
            n += 1
        self.dropped += n
        self._wake_all_senders()
        return n

    def close(self) -> None:
        """Accept nothing more and release blocked senders (the reader is gone for good)."""
        self.closed = True
        self._wake_all_senders()
        self.wake_readers()

    # -- inspection --------------------------------------------------------------

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def __len__(self) -> int:
        return len(self._items)

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            current_buffer_used=len(self._items),
            max_buffer_size=self.maxsize,
            overflow=self.overflow,
            received=self.received,
            taken=self.taken,
            dropped=self.dropped,
            tasks_waiting_send=len(self._putters),
            tasks_waiting_receive=len(self._getters),
        )

    def __repr__(self) -> str:
        return f"<Mailbox {len(self._items)}/{self.maxsize} {self.overflow} dropped={self.dropped}>"
