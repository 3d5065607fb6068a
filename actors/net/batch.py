"""Many datagrams per system call: ``sendmmsg(2)`` and ``recvmmsg(2)`` through ctypes (Linux).

Raw video is ~100,000 packets a second at 1080p30: one Python ``sendto``/``recv_into`` per packet
costs more than the kernel's own work. These wrappers move a whole burst per call, with the
message headers built by numpy over the packet array. Where libc lacks the calls (not Linux),
:data:`AVAILABLE` is False and the actors fall back to one call per packet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct

import numpy as np
from numpy.typing import NDArray

__all__ = ["AVAILABLE", "DatagramReceiver", "DatagramSender"]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _dtype(fields: list[tuple[str, str, int]], size: int) -> np.dtype:
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [f[1] for f in fields],
            "offsets": [f[2] for f in fields],
            "itemsize": size,
        }
    )


_IOV_DTYPE = _dtype([("base", "u8", _IOVec.base.offset), ("len", "u8", _IOVec.len.offset)], ctypes.sizeof(_IOVec))
_H = _MMsgHdr.hdr.offset
_MMSG_DTYPE = _dtype(
    [
        ("name", "u8", _H + _MsgHdr.name.offset),
        ("namelen", "u4", _H + _MsgHdr.namelen.offset),
        ("iov", "u8", _H + _MsgHdr.iov.offset),
        ("iovlen", "u8", _H + _MsgHdr.iovlen.offset),
        ("flags", "i4", _H + _MsgHdr.flags.offset),
        ("len", "u4", _MMsgHdr.len.offset),
    ],
    ctypes.sizeof(_MMsgHdr),
)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _sendmmsg = _libc.sendmmsg
    _recvmmsg = _libc.recvmmsg
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    _sendmmsg.restype = ctypes.c_int
    _recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    _recvmmsg.restype = ctypes.c_int
    AVAILABLE = ctypes.sizeof(ctypes.c_void_p) == 8
except (OSError, AttributeError):  # pragma: no cover - not Linux
    AVAILABLE = False


def _sockaddr_in(host: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


class DatagramSender:
    """Sends rows of a packet array to one IPv4 destination, ``count`` packets per system call."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._fd = sock.fileno()
        self._name = ctypes.create_string_buffer(_sockaddr_in(socket.gethostbyname(host), port), 16)
        self._msgs: NDArray[np.void] = np.zeros(0, _MMSG_DTYPE)
        self._iov: NDArray[np.void] = np.zeros(0, _IOV_DTYPE)
        self._packets: NDArray[np.uint8] | None = None
        self.errors = 0

    def load(self, packets: NDArray[np.uint8], lengths: list[int]) -> None:
        """Point the message headers at ``packets`` (kept alive until the next load)."""
        n = packets.shape[0]
        self._packets = np.ascontiguousarray(packets)
        base = self._packets.ctypes.data
        self._iov = np.zeros(n, _IOV_DTYPE)
        self._iov["base"] = base + np.arange(n, dtype=np.uint64) * np.uint64(packets.shape[1])
        self._iov["len"] = lengths
        self._msgs = np.zeros(n, _MMSG_DTYPE)
        self._msgs["name"] = ctypes.addressof(self._name)
        self._msgs["namelen"] = 16
        self._msgs["iov"] = self._iov.ctypes.data + np.arange(n, dtype=np.uint64) * np.uint64(_IOV_DTYPE.itemsize)
        self._msgs["iovlen"] = 1

    def send(self, first: int, count: int) -> None:
        """Send packets ``first .. first + count - 1``; a packet the kernel refuses is skipped and counted."""
        base = self._msgs.ctypes.data + first * _MMSG_DTYPE.itemsize
        done = 0
        while done < count:
            r = _sendmmsg(self._fd, base + done * _MMSG_DTYPE.itemsize, count - done, 0)
            if r > 0:
                done += r
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            self.errors += 1  # ENOBUFS, ECONNREFUSED...: that packet is lost, as on a real network
            done += 1


class DatagramReceiver:
    """Receives up to ``batch`` datagrams per call into a ``(batch, slot)`` array."""

    def __init__(self, sock: socket.socket, batch: int = 64, slot: int = 9216) -> None:
        self._fd = sock.fileno()
        self.buffer: NDArray[np.uint8] = np.zeros((batch, slot), np.uint8)
        self._iov = np.zeros(batch, _IOV_DTYPE)
        self._iov["base"] = self.buffer.ctypes.data + np.arange(batch, dtype=np.uint64) * np.uint64(slot)
        self._iov["len"] = slot
        self._msgs = np.zeros(batch, _MMSG_DTYPE)
        self._msgs["iov"] = self._iov.ctypes.data + np.arange(batch, dtype=np.uint64) * np.uint64(_IOV_DTYPE.itemsize)
        self._msgs["iovlen"] = 1
        self.batch = batch
        self.slot = slot

    def receive(self) -> tuple[int, NDArray[np.uint32], NDArray[np.int32]]:
        """``(count, lengths, flags)`` of the datagrams waiting now (0 if none; never blocks)."""
        n = _recvmmsg(self._fd, self._msgs.ctypes.data, self.batch, MSG_DONTWAIT, None)
        if n <= 0:
            return 0, self._msgs["len"][:0], self._msgs["flags"][:0]
        return n, self._msgs["len"][:n].copy(), self._msgs["flags"][:n].copy()
