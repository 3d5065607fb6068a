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
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

import numpy as np

__all__ = ["DEFAULT_THRESHOLD", "ChannelStats", "Segment", "SharedArrayChannel", "new_prefix", "sweep"]

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
    return f"sl{os.getpid():x}{secrets.token_hex(3)}_"


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
    """Arrays copied into a slot and lent to the peer."""
    arrays_received: int = 0
    """Arrays received as zero-copy views of a peer's slot."""
    array_bytes_sent: int = 0
    slots_created: int = 0
    slots_live: int = 0


@dataclass(slots=True)
class _Slot:
    id: int
    segment: Segment
    lent: bool = False


@dataclass(slots=True)
class _Envelope:
    """What travels on the pipe: the payload plus slot bookkeeping for the peer."""

    payload: Any
    released: list[int] = field(default_factory=list)
    """Ids of the *peer's* slots whose views died here: the peer may reuse them."""
    retired: list[int] = field(default_factory=list)
    """Ids of *our* slots we dropped: the peer should unmap them."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, channel: SharedArrayChannel) -> None:
        super().__init__(file, protocol=5)
        self._channel = channel
        self._memo: dict[int, tuple[Any, ...]] = {}  # one slot per array, even if sent twice
        self.lent: list[_Slot] = []

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray or obj.nbytes < self._channel.threshold or obj.dtype.hasobject:
            return None
        pid = self._memo.get(id(obj))
        if pid is None:
            pid = self._memo[id(obj)] = self._channel._lend(obj, self.lent)
        return pid


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, channel: SharedArrayChannel) -> None:
        super().__init__(io.BytesIO(data))
        self._channel = channel
        self._views: dict[int, np.ndarray[Any, Any]] = {}

    def persistent_load(self, pid: Any) -> Any:
        view = self._views.get(pid[0])
        if view is None:
            view = self._views[pid[0]] = self._channel._borrow(pid)
        return view


class SharedArrayChannel:
    """One end of a duplex pipe carrying pickled objects, big arrays through shared memory.

    Blocking and not thread-safe: use each end from one thread at a time. Views handed
    out by :meth:`recv` may be dropped from any thread.
    """

    def __init__(self, connection: Connection, prefix: str | None = None, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.connection = connection
        self.prefix = prefix if prefix is not None else new_prefix()
        self.threshold = max(int(threshold), 1)
        self.stats = ChannelStats()
        self.max_idle_slots = 8
        """Free slots kept for reuse; more are dropped (and the peer told to unmap them)."""
        # Sending side: the slots we own.
        self._slots: dict[int, _Slot] = {}
        self._idle: dict[int, list[_Slot]] = {}  # capacity -> free slots
        self._idle_count = 0
        self._next_id = 0
        self._created: list[str] = []
        self._retired: list[int] = []
        # Receiving side: the peer's slots we have mapped.
        self._mapped: dict[int, Segment] = {}
        self._released: deque[int] = deque()  # appended by finalizers, from any thread
        self.peer_max_slot_id = -1

    # -- the pipe ------------------------------------------------------------------

    def send(self, payload: Any) -> None:
        """Pickle ``payload`` (arrays into slots) and write it. If pickling fails nothing
        is written and the slots it took are free again."""
        released = self._released
        envelope = _Envelope(payload, [released.popleft() for _ in range(len(released))], self._retired)
        buffer = io.BytesIO()
        pickler = _Pickler(buffer, self)
        try:
            pickler.dump(envelope)
        except BaseException:
            released.extend(envelope.released)
            for slot in pickler.lent:
                self._give_back(slot)
            raise
        self._retired = []
        data = buffer.getbuffer()
        self.connection.send_bytes(data)
        stats = self.stats
        stats.messages_sent += 1
        stats.bytes_sent += len(data)
        stats.max_message_bytes = max(stats.max_message_bytes, len(data))

    def recv(self) -> Any:
        """Read and unpickle the next payload (arrays become views of the peer's slots).
        Raises :class:`EOFError` when the peer has closed its end (or died)."""
        data = self.connection.recv_bytes()
        stats = self.stats
        stats.messages_received += 1
        stats.bytes_received += len(data)
        stats.max_message_bytes = max(stats.max_message_bytes, len(data))
        envelope: _Envelope = _Unpickler(data, self).load()
        for slot_id in envelope.released:
            slot = self._slots.get(slot_id)
            if slot is not None:
                self._give_back(slot)
        for slot_id in envelope.retired:
            self._mapped.pop(slot_id, None)  # unmapped once no view of it is left
        return envelope.payload

    def close(self) -> None:
        """Close the pipe and forget every slot. Memory that a live view still maps stays
        valid until that view goes; names the peer never mapped are unlinked."""
        for name in self._created:
            Segment.unlink(name)
        self._created.clear()
        self._slots.clear()
        self._idle.clear()
        self._idle_count = 0
        self._mapped.clear()
        self.stats.slots_live = 0
        self.connection.close()

    # -- slots we lend ---------------------------------------------------------------

    def _lend(self, array: np.ndarray[Any, Any], lent: list[_Slot]) -> tuple[Any, ...]:
        """Copy ``array`` into a free slot and return the descriptor that replaces it."""
        nbytes = array.nbytes
        capacity = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        free = self._idle.get(capacity)
        if free:
            slot = free.pop()
            self._idle_count -= 1
        else:
            slot = self._new_slot(capacity)
        slot.lent = True
        lent.append(slot)
        target: np.ndarray[Any, Any] = np.ndarray(array.shape, array.dtype, buffer=slot.segment.mmap)
        np.copyto(target, array, casting="no")
        del target
        stats = self.stats
        stats.arrays_sent += 1
        stats.array_bytes_sent += nbytes
        return (slot.id, slot.segment.name, capacity, array.dtype, array.shape)

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

    def _give_back(self, slot: _Slot) -> None:
        slot.lent = False
        if self._idle_count >= self.max_idle_slots:
            del self._slots[slot.id]
            self._retired.append(slot.id)
            self.stats.slots_live = len(self._slots)
            return
        self._idle.setdefault(slot.segment.size, []).append(slot)
        self._idle_count += 1

    # -- slots we borrow ---------------------------------------------------------------

    def _borrow(self, pid: tuple[Any, ...]) -> np.ndarray[Any, Any]:
        """A zero-copy view of the peer's slot; the slot goes back when the view dies."""
        slot_id, name, capacity, dtype, shape = pid
        segment = self._mapped.get(slot_id)
        if segment is None:
            segment = self._mapped[slot_id] = Segment(name, capacity, create=False)
            Segment.unlink(name)  # both ends map it now: no name needs to outlive them
            self.peer_max_slot_id = max(self.peer_max_slot_id, slot_id)
        view: np.ndarray[Any, Any] = np.ndarray(shape, dtype, buffer=segment.mmap)
        # Derived views (slices, .view()) keep this array alive, so its death means no
        # view of the slot is left in this process.
        weakref.finalize(view, self._released.append, slot_id).atexit = False
        self.stats.arrays_received += 1
        return view
