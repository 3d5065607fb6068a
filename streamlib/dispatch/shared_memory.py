"""A pipe between two processes that moves big numpy arrays through shared memory.

Why: a 1080p RGB frame is 6 MB. Pickled through a pipe it is copied into the pickle,
through the kernel twice and out of the pickle again, in both directions, every frame.
Here every array of at least ``threshold`` bytes is copied *once* into a shared-memory
*slot* and replaced in the pickle by a small descriptor; the receiver maps the slot and
gets a zero-copy ``ndarray`` view of it. Everything else is pickled as usual (protocol 5).

Slots are reused, so a warm stream creates no shared memory per frame. Each end of a
:class:`SharedArrayChannel` owns the slots it *sends* from. A slot stays lent to the peer
until the peer's view of it -- and every view derived from that view -- has been garbage
collected; the peer then says so on its next message (a list of slot ids piggy-backed on
the envelope, so releasing costs no extra round trip). User code may therefore keep a
received frame as long as it likes: its slot is simply not reused meanwhile.

Names and leaks: a slot's name exists in the file system only until the peer has mapped
it (the receiver unlinks it at once); from then on the memory lives exactly as long as
some process maps it. A crash can leave only names that were never mapped, which
:meth:`SharedArrayChannel.close` and :func:`sweep` remove.
"""

from __future__ import annotations

import importlib
import io
import mmap
import os
import pickle
import secrets
import sys
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

import numpy as np

__all__ = ["DEFAULT_THRESHOLD", "ChannelStats", "CopyNeeded", "Segment", "SharedArrayChannel", "new_prefix", "sweep"]

DEFAULT_THRESHOLD = 64 * 1024
"""Arrays at least this big (in bytes) travel through shared memory; smaller ones are
cheaper to pickle in-band than to map."""

_SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory names


class _PosixShm(Protocol):
    def shm_open(self, path: str, flags: int, mode: int = 0o777) -> int: ...
    def shm_unlink(self, path: str) -> None: ...


# The C module behind multiprocessing.shared_memory (it has no type stubs, hence the Protocol).
_posixshmem = cast(_PosixShm, importlib.import_module("_posixshmem")) if os.name == "posix" else None


def new_prefix() -> str:
    """A short, unique name prefix for the slots of one channel end.

    Short because macOS limits shared memory names to 31 characters."""
    return f"sl{os.getpid():x}-{secrets.token_hex(3)}_"


class Segment:
    """A named block of shared memory, mapped into this process.

    Why not :class:`multiprocessing.shared_memory.SharedMemory`: its ``close()`` (also
    run from ``__del__``) raises ``BufferError`` while a numpy view of the block is
    alive, and before Python 3.13 every process that merely *attaches* registers the
    block with the resource tracker, which then unlinks it behind the owner's back.
    Here the mapping (:attr:`mmap`) is an ordinary object: numpy views keep it alive,
    and it is unmapped when the last of them goes.
    """

    __slots__ = ("mmap", "name", "size")

    def __init__(self, name: str, size: int, create: bool) -> None:
        self.name = name
        self.size = size
        if _posixshmem is None:  # Windows: a named mapping lives while a handle is open
            if sys.platform == "win32":
                self.mmap = mmap.mmap(-1, size, tagname=name)
            return
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open("/" + name, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.mmap = mmap.mmap(fd, size)  # the mapping outlives the descriptor
        except BaseException:
            if create:
                Segment.unlink(name)
            raise
        finally:
            os.close(fd)

    @staticmethod
    def unlink(name: str) -> bool:
        """Remove ``name`` (the memory stays while mapped); False if it was already gone."""
        if _posixshmem is None:
            return False
        try:
            _posixshmem.shm_unlink("/" + name)
        except FileNotFoundError:
            return False
        return True


def sweep(prefix: str, upto: int = 0) -> int:
    """Unlink every shared memory name starting with ``prefix`` (a crashed peer's
    leftovers); returns how many. Where names cannot be listed (not Linux), tries the
    slot ids ``0 .. upto + 64``."""
    if os.path.isdir(_SHM_DIR):
        names = [n for n in os.listdir(_SHM_DIR) if n.startswith(prefix)]
    else:
        names = [f"{prefix}{i:x}" for i in range(upto + 64)]
    return sum(Segment.unlink(n) for n in names)


@dataclass(slots=True)
class ChannelStats:
    """Counters of one channel end (what tests and benchmarks look at)."""

    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    """Pickled bytes written to the pipe (descriptors, not array data)."""
    bytes_received: int = 0
    max_message_bytes: int = 0
    """The biggest pickle sent or received: stays small when arrays go through slots."""
    arrays_sent: int = 0
    """Arrays that crossed as a slot descriptor (copied, staged or handed back)."""
    arrays_received: int = 0
    """Arrays received as zero-copy views of a slot."""
    arrays_copied: int = 0
    """Arrays copied into a slot (on :meth:`SharedArrayChannel.send` or ahead of it by
    :meth:`SharedArrayChannel.stage`); an array handed back costs no copy."""
    array_bytes_copied: int = 0
    arrays_staged: int = 0
    """Copies made ahead of time, off the critical path, and then used by a send."""
    arrays_handed_back: int = 0
    """Views of a peer's slot sent back to it: no copy at all."""
    arrays_returned: int = 0
    """Views of our own slots that the peer handed back (counted in ``arrays_received``)."""
    slots_created: int = 0
    slots_live: int = 0


@dataclass(slots=True)
class _Slot:
    id: int
    segment: Segment
    holders: int = 0
    """Live views of the slot: the peer's (until it reports them released) and ours."""


@dataclass(slots=True)
class _Envelope:
    """What travels on the pipe: the payload plus slot bookkeeping for the peer."""

    payload: Any
    released: list[int] = field(default_factory=list)
    """Ids of the *peer's* slots whose views died here: the peer may reuse them."""
    retired: list[int] = field(default_factory=list)
    """Ids of *our* slots we dropped: the peer should unmap them."""


# Descriptors that replace an array in the pickle.
_MINE = 0  # (_MINE, slot id, name, capacity, dtype, shape): a slot of the sender's
_YOURS = 1  # (_YOURS, slot id, dtype, shape): a slot of the receiver's, handed back


class CopyNeeded(Exception):
    """``send(..., copy=False)`` met an array it would have to copy: nothing was sent."""


class _NullFile:
    """Where :meth:`SharedArrayChannel.stage` pickles to: it only looks for arrays."""

    def write(self, data: Any) -> int:
        return 0


class _Pickler(pickle.Pickler):
    def __init__(self, file: Any, channel: SharedArrayChannel, copy: bool) -> None:
        super().__init__(file, protocol=5)
        self._channel = channel
        self._copy = copy
        self._memo: dict[int, Any] = {}  # one descriptor per array, even if it appears twice
        self.lent: list[_Slot] = []

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray or obj.nbytes < self._channel.threshold or obj.dtype.hasobject:
            return None
        key = id(obj)
        pid = self._memo.get(key)
        if pid is None:
            pid = self._memo[key] = self._channel._describe(obj, self.lent, self._copy)
        return pid


class _Finder(pickle.Pickler):
    """Walks an object the way pickling does, collecting the arrays a send would copy."""

    def __init__(self, channel: SharedArrayChannel) -> None:
        super().__init__(_NullFile(), protocol=5)
        self._threshold = channel.threshold
        self.arrays: dict[int, np.ndarray[Any, Any]] = {}

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray or obj.nbytes < self._threshold or obj.dtype.hasobject:
            return None
        self.arrays[id(obj)] = obj
        return 0


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, channel: SharedArrayChannel) -> None:
        super().__init__(io.BytesIO(data))
        self._channel = channel
        self._views: dict[tuple[int, int], np.ndarray[Any, Any]] = {}

    def persistent_load(self, pid: Any) -> Any:
        key = (pid[0], pid[1])
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._channel._view(pid)
        return view


class SharedArrayChannel:
    """One end of a duplex pipe carrying pickled objects, big arrays through shared memory.

    :meth:`send` and :meth:`recv` block; call each from one thread at a time.
    :meth:`stage` may run on another thread meanwhile, and views handed out by
    :meth:`recv` may be dropped anywhere: the slot bookkeeping is locked, never while
    copying.

    Two ways to copy less: a view received from the peer and sent back as is (a
    pass-through) is *handed back* -- the peer gets a view of its own slot, no copy --
    and :meth:`stage` copies an array that is about to be sent ahead of time, while
    the peer works, so that the send itself copies nothing.
    """

    def __init__(self, connection: Connection, prefix: str | None = None, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.connection = connection
        self.prefix = prefix if prefix is not None else new_prefix()
        self.threshold = max(int(threshold), 1)
        self.stats = ChannelStats()
        self.max_idle_slots = 8
        """Free slots kept for reuse; more are dropped (and the peer told to unmap them)."""
        self.max_staged = 2
        """Arrays copied ahead by :meth:`stage` and kept until sent (oldest dropped first)."""
        self._lock = threading.Lock()  # guards the slot bookkeeping below
        self._slots: dict[int, _Slot] = {}  # the slots we own
        self._idle: dict[int, list[_Slot]] = {}  # capacity -> free slots
        self._idle_count = 0
        self._next_id = 0
        self._created: list[str] = []
        self._retired: list[int] = []
        self._staged: dict[int, tuple[np.ndarray[Any, Any], _Slot]] = {}  # id(array) -> (array, its copy)
        self._mapped: dict[int, Segment] = {}  # the peer's slots we have mapped
        # Every view we handed out, by id: (a weak reference to it, whose slot, slot id).
        self._views: dict[int, tuple[weakref.ReferenceType[np.ndarray[Any, Any]], bool, int]] = {}
        # Appended by finalizers, from any thread; drained under the lock.
        self._released: deque[int] = deque()  # the peer's slots we no longer view
        self._returned: deque[int] = deque()  # our slots we no longer view
        self.peer_max_slot_id = -1

    # -- the pipe ------------------------------------------------------------------

    def send(self, payload: Any, copy: bool = True) -> None:
        """Pickle ``payload`` (arrays into slots) and write it.

        With ``copy=False`` it raises :class:`CopyNeeded` instead of copying an array
        that was neither staged nor handed back, or of writing a pickle bigger than
        ``threshold`` (which might not fit the pipe's buffer): a caller that must not
        block can pass such a send on. If pickling fails nothing is written and the
        slots it took are free again."""
        with self._lock:
            self._collect_returned()
            released = self._released
            envelope = _Envelope(payload, [released.popleft() for _ in range(len(released))], self._retired)
            buffer = io.BytesIO()
            pickler = _Pickler(buffer, self, copy)
            try:
                pickler.dump(envelope)
                if not copy and buffer.tell() > self.threshold:
                    raise CopyNeeded(f"a {buffer.tell()}-byte pickle")
            except BaseException:
                released.extendleft(reversed(envelope.released))
                for slot in pickler.lent:
                    self._drop_holder(slot)
                raise
            self._retired = []
        data = buffer.getbuffer()
        self.connection.send_bytes(data)
        stats = self.stats
        stats.messages_sent += 1
        stats.bytes_sent += len(data)
        stats.max_message_bytes = max(stats.max_message_bytes, len(data))

    def recv(self) -> Any:
        """Read and unpickle the next payload (arrays become views of slots).
        Raises :class:`EOFError` when the peer has closed its end (or died)."""
        data = self.connection.recv_bytes()
        stats = self.stats
        stats.messages_received += 1
        stats.bytes_received += len(data)
        stats.max_message_bytes = max(stats.max_message_bytes, len(data))
        with self._lock:
            envelope: _Envelope = _Unpickler(data, self).load()
            for slot_id in envelope.released:
                slot = self._slots.get(slot_id)
                if slot is not None:
                    self._drop_holder(slot)
            for slot_id in envelope.retired:
                self._mapped.pop(slot_id, None)  # unmapped once no view of it is left
            self._collect_returned()
        return envelope.payload

    def stage(self, obj: Any) -> None:
        """Copy the big arrays in ``obj`` into slots now, so that sending ``obj`` (or
        anything holding the same arrays) later copies nothing. Meant for the time the
        peer spends working; the arrays must not change until sent, which messages
        already queued for delivery never do."""
        finder = _Finder(self)
        finder.dump(obj)
        for key, array in finder.arrays.items():
            with self._lock:
                if key in self._staged or key in self._views:
                    continue
                slot = self._free_slot(array.nbytes)
                slot.holders += 1  # the staging area's
            self._fill(slot, array)
            with self._lock:
                self._count_copy(array)
                staged = self._staged
                previous = staged.pop(key, None)
                if previous is not None:
                    self._drop_holder(previous[1])
                staged[key] = (array, slot)
                while len(staged) > self.max_staged:
                    self._drop_holder(staged.pop(next(iter(staged)))[1])

    def close(self) -> None:
        """Close the pipe and forget every slot. Memory that a live view still maps stays
        valid until that view goes; names the peer never mapped are unlinked."""
        with self._lock:
            for name in self._created:
                Segment.unlink(name)
            self._created.clear()
            self._slots.clear()
            self._idle.clear()
            self._idle_count = 0
            self._staged.clear()
            self._mapped.clear()
            self.stats.slots_live = 0
        self.connection.close()

    # -- sending arrays (under the lock, but for _fill) ------------------------------

    def _describe(self, array: np.ndarray[Any, Any], lent: list[_Slot], copy: bool) -> tuple[Any, ...]:
        """The descriptor that replaces ``array``: a view handed back, a staged copy, or a
        fresh copy into a free slot."""
        stats = self.stats
        seen = self._views.get(id(array))
        if seen is not None and seen[0]() is array and array.flags.c_contiguous:
            _, mine, slot_id = seen
            if not mine:  # the peer's own slot: hand it back
                stats.arrays_sent += 1
                stats.arrays_handed_back += 1
                return (_YOURS, slot_id, array.dtype, array.shape)
            slot = self._slots.get(slot_id)
            if slot is not None:  # ours, came back and goes out again
                stats.arrays_sent += 1
                stats.arrays_handed_back += 1
                return self._lend(slot, array, lent)
        staged = self._staged.pop(id(array), None)
        if staged is not None:
            if staged[0] is array:
                stats.arrays_sent += 1
                stats.arrays_staged += 1
                staged[1].holders -= 1  # the staging area's hold passes to the peer
                return self._lend(staged[1], array, lent)
            self._drop_holder(staged[1])
        if not copy:
            raise CopyNeeded(f"a {array.nbytes}-byte array would be copied")
        slot = self._free_slot(array.nbytes)
        self._fill(slot, array)
        self._count_copy(array)
        stats.arrays_sent += 1
        return self._lend(slot, array, lent)

    def _lend(self, slot: _Slot, array: np.ndarray[Any, Any], lent: list[_Slot]) -> tuple[Any, ...]:
        slot.holders += 1  # the peer's view, until it reports it released
        lent.append(slot)
        segment = slot.segment
        return (_MINE, slot.id, segment.name, segment.size, array.dtype, array.shape)

    def _free_slot(self, nbytes: int) -> _Slot:
        """A slot with room for ``nbytes`` that nobody holds (its holder count is 0)."""
        capacity = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        free = self._idle.get(capacity)
        if free:
            self._idle_count -= 1
            return free.pop()
        return self._new_slot(capacity)

    def _fill(self, slot: _Slot, array: np.ndarray[Any, Any]) -> None:
        """The one copy of an array's bytes (the only step that may run unlocked)."""
        target: np.ndarray[Any, Any] = np.ndarray(array.shape, array.dtype, buffer=slot.segment.mmap)
        np.copyto(target, array, casting="no")
        del target

    def _count_copy(self, array: np.ndarray[Any, Any]) -> None:
        self.stats.arrays_copied += 1
        self.stats.array_bytes_copied += array.nbytes

    def _new_slot(self, capacity: int) -> _Slot:
        slot_id = self._next_id
        self._next_id += 1
        name = f"{self.prefix}{slot_id:x}"
        slot = _Slot(slot_id, Segment(name, capacity, create=True))
        self._slots[slot_id] = slot
        self._created.append(name)
        self.stats.slots_created += 1
        self.stats.slots_live = len(self._slots)
        return slot

    def _drop_holder(self, slot: _Slot) -> None:
        slot.holders -= 1
        if slot.holders > 0:
            return
        if self._idle_count >= self.max_idle_slots:
            del self._slots[slot.id]
            self._retired.append(slot.id)
            self.stats.slots_live = len(self._slots)
            return
        self._idle.setdefault(slot.segment.size, []).append(slot)
        self._idle_count += 1

    def _collect_returned(self) -> None:
        returned = self._returned
        for _ in range(len(returned)):
            slot = self._slots.get(returned.popleft())
            if slot is not None:
                self._drop_holder(slot)

    # -- receiving arrays --------------------------------------------------------------

    def _view(self, pid: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        """A zero-copy view of a slot; the slot goes back when the view dies."""
        mine = pid[0] == _YOURS
        if mine:
            _, slot_id, dtype, shape = pid
            slot = self._slots[slot_id]
            slot.holders += 1
            segment = slot.segment
            self.stats.arrays_returned += 1
        else:
            _, slot_id, name, capacity, dtype, shape = pid
            segment = self._map(slot_id, name, capacity)
        done = self._returned if mine else self._released
        view: np.ndarray[Any, Any] = np.ndarray(shape, dtype, buffer=segment.mmap)
        key = id(view)
        self._views[key] = (weakref.ref(view), mine, slot_id)
        # Derived views (slices, .view()) keep this array alive, so its death means no
        # view of the slot is left in this process.
        weakref.finalize(view, self._view_died, key, done, slot_id).atexit = False
        self.stats.arrays_received += 1
        return view

    def _map(self, slot_id: int, name: str, capacity: int) -> Segment:
        segment = self._mapped.get(slot_id)
        if segment is None:
            segment = self._mapped[slot_id] = Segment(name, capacity, create=False)
            Segment.unlink(name)  # both ends map it now: no name needs to outlive them
            self.peer_max_slot_id = max(self.peer_max_slot_id, slot_id)
        return segment

    def _view_died(self, key: int, done: deque[int], slot_id: int) -> None:
        self._views.pop(key, None)
        done.append(slot_id)
