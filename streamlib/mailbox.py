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

Nothing is ever lost silently. Every message offered is counted once in ``delivered``
and ends in exactly one place: ``taken`` (read out), ``dropped`` (by the overflow
policy), ``discarded`` (the mailbox closed or was cleared, or its blocked sender gave
up), or still queued. So at every moment, as in Trio's memory channels::

    delivered == taken + dropped + discarded + in_hand + queued

and no counter ever decreases (``queued`` and ``in_hand`` are levels; ``in_hand`` is
non-zero only for a head a dispatcher lent out, see :meth:`Mailbox.lend_head`).
:meth:`Mailbox.statistics` returns a frozen snapshot. A mailbox may be written from any
thread (actors on a thread dispatcher send from worker threads); waiters are always
woken on their own event loop.

Control signals (stop, end of stream) never travel through a mailbox: they are flags
on the owning port and actor, so a full mailbox can never drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


_making_waiters = threading.Lock()


def wake(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` from any thread, on the loop that owns it."""
    settle_threadsafe(fut)


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A frozen snapshot of a mailbox, in the spirit of Trio's ``MemoryChannelStatistics``.

    ``delivered == taken + dropped + discarded + in_hand + current_buffer_used`` holds in
    every snapshot, and no counter is ever smaller than in an earlier snapshot."""

    current_buffer_used: int
    """Messages queued now."""
    max_buffer_size: int
    overflow: str
    delivered: int
    """Messages its senders offered, each counted once whatever became of it. A sender
    waiting for room on a ``"block"`` mailbox is counted when it gets in or gives up."""
    received: int
    """Messages accepted into the queue: ``delivered`` minus those refused at the door
    (``drop_newest`` refusals, offers after closing, blocked senders that gave up)."""
    taken: int
    """Messages read out of it."""
    dropped: int
    """Messages the overflow policy discarded: evicted by ``drop_oldest``, refused by ``drop_newest``."""
    discarded: int
    """Messages that never reached the reader for another reason: offered after the mailbox
    closed, still queued when it closed or was cleared, or whose blocked sender gave up."""
    in_hand: int
    """A lent head (:meth:`Mailbox.lend_head`) that the overflow evicted meanwhile: its
    borrower still holds it, and it becomes ``taken`` or ``dropped`` when the loan settles."""
    tasks_waiting_send: int
    tasks_waiting_receive: int


class Mailbox:
    """A FIFO of at most ``maxsize`` messages with an overflow policy.

    ``put_nowait`` never waits; with ``overflow="block"`` and no room it returns
    ``False`` and the caller awaits :meth:`put`. A *closed* mailbox (its reader is
    gone for good) accepts nothing: what it held and every later offer are counted as
    discarded, and blocked senders are released, so a dead consumer can never stall
    its producers.

    Thread safety without a lock: every mutation is a single ``deque`` operation, which
    CPython performs atomically (``deque(maxlen=n).append`` even discards the oldest
    item in the same step). A lock would cost more than the rest of a hop between two
    actors on this path, which is the hottest in the library.
    """

    __slots__ = (
        "_getters",
        "_items",
        "_lent",
        "_lent_evicted",
        "_putters",
        "blocking",
        "closed",
        "discarded",
        "dropped",
        "maxsize",
        "overflow",
        "received",
        "refused",
        "taken",
        "waker",
    )

    def __init__(self, maxsize: int = 2, overflow: Overflow = "drop_oldest") -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ValueError(f"maxsize must be an int >= 1, got {maxsize!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, got {overflow!r}")
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self.blocking = overflow == "block"
        # drop_oldest: the deque itself discards the oldest item when full.
        self._items: deque[Any] = deque(maxlen=maxsize if overflow == "drop_oldest" else None)
        # Waiter queues are made on first use: most mailboxes never have a waiting reader or
        # writer, and an empty deque costs 600 bytes (10,000 idle actors, 12 MB).
        self._getters: deque[asyncio.Future[None]] | None = None
        self._putters: deque[asyncio.Future[None]] | None = None
        self._lent: Any = EMPTY
        self._lent_evicted = False
        self.closed = False
        self.received = 0
        self.refused = 0  # offers not queued: drop_newest refusals, after closing, given up
        self.taken = 0
        self.dropped = 0
        self.discarded = 0
        self.waker: Callable[[], object] | None = None
        """Set by the reading actor while it sleeps; called after each accepted message."""

    # -- writing -----------------------------------------------------------------

    def put_nowait(self, item: Any) -> bool | None:
        """Offer ``item``: ``True`` if it was queued, ``False`` if it was not (counted as
        dropped or discarded), ``None`` if it is *pending*.

        On a full dropping mailbox this always succeeds for ``drop_oldest`` (the
        oldest is discarded) and fails for ``drop_newest``; both count a drop. On a
        closed mailbox it fails and counts the message as discarded. On a full blocking
        mailbox the offer is pending and nothing is counted yet: the sender then either
        waits for room with :meth:`put` or abandons it with :meth:`give_up` (both falsy
        results keep ``if not put_nowait(...)`` working).
        """
        items = self._items
        if len(items) >= self.maxsize or self.closed:
            if self.closed:
                self.refused += 1
                self.discarded += 1
                return False
            if self.blocking:
                return None
            if self.overflow == "drop_newest":
                self.refused += 1
                self.dropped += 1
                return False
            if self._lent is not EMPTY and items and items[0] is self._lent:
                self._lent_evicted = True  # its borrower holds it: the loan settles its count
            else:
                self.dropped += 1
        items.append(item)
        self.received += 1
        if self._getters:
            self._wake_one(self._getters)
        waker = self.waker
        if waker is not None:
            waker()
        return True

    def _make_putters(self) -> deque[asyncio.Future[None]]:
        # Senders on two loops may come at once: made under a lock, so no waiter is lost.
        with _making_waiters:
            if self._putters is None:
                self._putters = deque()
            return self._putters

    def _make_getters(self) -> deque[asyncio.Future[None]]:
        with _making_waiters:
            if self._getters is None:
                self._getters = deque()
            return self._getters

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
        try:
            fut = waiters.popleft()
        except IndexError:  # another thread took it
            return
        wake(fut)

    async def put(self, item: Any) -> bool:
        """Queue ``item``, waiting for room if the policy is ``"block"``.

        Returns ``False`` only if the item was not queued (dropping policy, or closed).
        A sender cancelled while it waits (its actor was stopped) gives the message up:
        it is counted as delivered and discarded, never missing from the counts.
        """
        while True:
            accepted = self.put_nowait(item)
            if accepted is not None:
                return accepted
            waiter = asyncio.get_running_loop().create_future()
            putters = self._putters
            if putters is None:
                putters = self._make_putters()
            putters.append(waiter)
            if self.closed or len(self._items) < self.maxsize:  # room was made before we queued: don't sleep
                waiter.set_result(None)
            try:
                await waiter
            except BaseException:
                try:
                    putters.remove(waiter)
                except ValueError:  # it was woken: pass the wake on
                    if self._putters:
                        self._wake_one(self._putters)
                self.give_up()
                raise

    def give_up(self) -> None:
        """Abandon an offer that :meth:`put_nowait` left pending on a full ``"block"``
        mailbox: its sender stopped waiting. Counted as delivered and discarded."""
        self.refused += 1
        self.discarded += 1

    def refuse(self, n: int = 1, *, dropped: bool) -> None:
        """Count ``n`` messages offered to this mailbox that never entered it: ``dropped`` by
        an overflow policy applied elsewhere (the sending side of a network link applies the
        input's policy there), else discarded (e.g. refused for their type). The books balance."""
        self.refused += n
        if dropped:
            self.dropped += n
        else:
            self.discarded += n

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
        getters = self._getters
        if getters is None:
            getters = self._make_getters()
        getters.append(waiter)
        if self._items:  # a message landed before we queued: don't sleep
            waiter.set_result(None)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                getters.remove(waiter)

    def wake_readers(self) -> None:
        """Wake every task in :meth:`wait_nonempty` so it can re-check why it waits."""
        while self._getters:
            self._wake_one(self._getters)

    def _wake_all_senders(self) -> None:
        while self._putters:
            self._wake_one(self._putters)

    def clear(self) -> int:
        """Discard everything queued, counting it as discarded; returns how many."""
        n = 0
        while True:
            try:
                self._items.popleft()
            except IndexError:
                break
            n += 1
        self.discarded += n
        self._wake_all_senders()
        return n

    def close(self) -> None:
        """Accept nothing more, discard what is queued and release blocked senders (the
        reader is gone for good)."""
        self.closed = True
        self.clear()
        self.wake_readers()

    # -- lending the head ------------------------------------------------------------

    def lend_head(self) -> Any:
        """The oldest message, lent to a reader that decides later whether it took it
        (:meth:`settle_loan`); :data:`EMPTY` if none is queued. One loan at a time.

        For a dispatcher that shows the head to a worker process before taking it: the
        head stays queued, so the overflow policy works as usual; if it evicts the lent
        head, the eviction is not counted yet (the borrower may still read it): the loan
        decides whether it was taken or dropped."""
        head = self.peek()
        self._lent = head
        self._lent_evicted = False
        return head

    def settle_loan(self, taken: bool) -> None:
        """End the loan of :meth:`lend_head`. ``taken``: the borrower read the message
        (it leaves the queue, or was already evicted from it, and counts as taken).
        Otherwise it stays queued, or, if evicted meanwhile, counts as dropped."""
        head, evicted = self._lent, self._lent_evicted
        self._lent, self._lent_evicted = EMPTY, False
        if head is EMPTY:
            return
        if evicted:
            if taken:
                self.taken += 1
            else:
                self.dropped += 1
        elif taken and self.peek() is head:
            self.get_nowait()

    # -- inspection --------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Messages offered, each counted once: those queued plus those refused at the door
        (kept as a sum so the hot path counts one thing per message, not two)."""
        return self.received + self.refused

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def __len__(self) -> int:
        return len(self._items)

    def statistics(self) -> MailboxStatistics:
        """A frozen snapshot of the counters (see :class:`MailboxStatistics`)."""
        return MailboxStatistics(
            current_buffer_used=len(self._items),
            max_buffer_size=self.maxsize,
            overflow=self.overflow,
            delivered=self.received + self.refused,
            received=self.received,
            taken=self.taken,
            dropped=self.dropped,
            discarded=self.discarded,
            in_hand=int(self._lent_evicted),
            tasks_waiting_send=len(self._putters or ()),
            tasks_waiting_receive=len(self._getters or ()),
        )

    def __repr__(self) -> str:
        return (
            f"<Mailbox {len(self._items)}/{self.maxsize} {self.overflow} delivered={self.delivered} "
            f"taken={self.taken} dropped={self.dropped} discarded={self.discarded}>"
        )
