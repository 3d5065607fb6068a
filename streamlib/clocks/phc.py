"""A PTP hardware clock (PHC): the clock on a network card that ``ptp4l`` disciplines.

Linux exposes each PHC as a character device (``/dev/ptp0``); opening it yields a
*dynamic clock id* that ``clock_gettime`` accepts: ``((~fd) << 3) | 3`` (``FD_TO_CLOCKID``
in the kernel's ``posix-timers.h``, ``CLOCKFD`` = 3). :class:`PHCClock` reads it that way,
through ``time.clock_gettime_ns``, and ticks on it like every :class:`TimelineClock`.
Reading needs read access to the device; nothing here adjusts it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .timeline import TimelineClock

__all__ = ["PHCClock"]

CLOCKFD = 3


def dynamic_clock_id(fd: int) -> int:
    """The clock id of an open ``/dev/ptp*`` file descriptor (the kernel's ``FD_TO_CLOCKID``)."""
    return ((~fd) << 3) | CLOCKFD


class PHCClock(TimelineClock):
    """The time of the hardware clock at ``device`` (``/dev/ptp0``), in nanoseconds.

    Its timescale is whatever disciplines it: TAI when ``ptp4l`` runs on it with a PTP
    grandmaster. Its clock id is ``phc:<clock name>:<device>`` (the name from sysfs).
    """

    def __init__(self, device: str = "/dev/ptp0", fps: float = 30.0) -> None:
        super().__init__(fps)
        self.device = device
        try:
            self._fd = os.open(device, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"PHCClock: no PTP hardware clock at {device} (this machine has "
                f"{', '.join(sorted(str(p) for p in Path('/dev').glob('ptp*'))) or 'none'}); "
                "PHCs come with NICs that timestamp in hardware (ethtool -T <interface>)"
            ) from None
        except PermissionError:
            raise PermissionError(f"PHCClock: cannot read {device}: give this user read access to it") from None
        self._clock = dynamic_clock_id(self._fd)
        try:
            time.clock_gettime_ns(self._clock)
        except OSError as exc:
            os.close(self._fd)
            raise OSError(f"PHCClock: {device} is not a PTP hardware clock ({exc})") from None
        name = Path("/sys/class/ptp", Path(device).name, "clock_name")
        self.name = name.read_text().strip() if name.exists() else Path(device).name
        self.clock_id = f"phc:{self.name}:{device}"

    def now_ns(self) -> int:
        """The hardware clock's time in nanoseconds."""
        return time.clock_gettime_ns(self._clock)

    def now(self) -> float:
        return self.now_ns() / 1e9

    def close(self) -> None:
        """Close the device (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> PHCClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<PHCClock {self.device} ({self.name}) {self.fps:g} fps>"
