"""The mailbox: overflow policies, exact drop counts, blocking, closing, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streamlib.mailbox import EMPTY, Mailbox


def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    mb = Mailbox(2)
    for i in range(5):
        assert mb.put_nowait(i)
    assert [mb.get_nowait(), mb.get_nowait()] == [3, 4]
    assert mb.get_nowait() is EMPTY
    assert (mb.received, mb.dropped, mb.taken) == (5, 3, 2)


def test_drop_newest_keeps_what_is_queued() -> None:
    mb = Mailbox(2, "drop_newest")
    results = [mb.put_nowait(i) for i in range(4)]
    assert results == [True, True, False, False]
    assert [mb.get_nowait(), mb.get_nowait()] == [0, 1]
    assert mb.dropped == 2


def test_none_is_a_valid_message() -> None:
    mb = Mailbox(2)
    mb.put_nowait(None)
    assert mb.get_nowait() is None
    assert mb.get_nowait() is EMPTY


async def test_block_makes_the_sender_wait_for_room_and_drops_nothing() -> None:
    mb = Mailbox(1, "block")
    assert mb.put_nowait("a")
    assert not mb.put_nowait("b")  # full: refused, not dropped
    assert mb.dropped == 0
    sender = asyncio.create_task(mb.put("b"))
    await asyncio.sleep(0.01)
    assert not sender.done()
    assert mb.statistics().tasks_waiting_send == 1
    assert mb.get_nowait() == "a"
    assert await asyncio.wait_for(sender, 1)
    assert mb.get_nowait() == "b"
    assert mb.dropped == 0


async def test_closing_releases_blocked_senders_and_counts_what_never_arrives_as_discarded() -> None:
    mb = Mailbox(1, "block")
    mb.put_nowait(1)
    sender = asyncio.create_task(mb.put(2))
    await asyncio.sleep(0.01)
    mb.close()
    assert await asyncio.wait_for(sender, 1) is False
    assert not mb.put_nowait(3)
    # the queued message, the blocked one and the late one: none was dropped by the policy
    assert (mb.delivered, mb.discarded, mb.dropped, len(mb)) == (3, 3, 0, 0)


async def test_wait_nonempty_wakes_on_a_put_from_another_thread() -> None:
    mb = Mailbox(2)
    waiter = asyncio.create_task(mb.wait_nonempty())
    await asyncio.sleep(0.01)
    threading.Thread(target=mb.put_nowait, args=("x",)).start()
    await asyncio.wait_for(waiter, 1)
    assert mb.get_nowait() == "x"


def test_every_message_from_many_threads_is_received_or_counted_as_dropped() -> None:
    mb = Mailbox(8)
    per_thread, threads = 5000, 4

    def produce() -> None:
        for i in range(per_thread):
            mb.put_nowait(i)

    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert mb.received == per_thread * threads
    assert mb.dropped == mb.received - len(mb)


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True])
def test_bad_maxsize_is_rejected(maxsize: object) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Mailbox(maxsize)  # type: ignore[arg-type]


def test_bad_overflow_is_rejected_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="drop_oldest"):
        Mailbox(2, "newest")  # type: ignore[arg-type]


def test_statistics_is_a_frozen_snapshot() -> None:
    mb = Mailbox(3, "drop_newest")
    mb.put_nowait(1)
    stats = mb.statistics()
    mb.put_nowait(2)
    assert stats.current_buffer_used == 1 and stats.max_buffer_size == 3 and stats.overflow == "drop_newest"
    with pytest.raises(AttributeError):
        stats.dropped = 5  # type: ignore[misc]
