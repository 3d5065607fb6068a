"""Clocks beyond the software clock: shared time for several machines and devices.

* :class:`PTPClock` -- the time of a PTP (IEEE 1588-2008) grandmaster, learnt as a
  slave-only ordinary clock over UDP/IPv4; a :class:`streamlib.Clock` that ticks on it.
* :class:`PHCClock` -- a PTP hardware clock (``/dev/ptp0``) read directly.

Both only read time: neither adjusts the system clock. See ``docs/time.md``.
"""

from __future__ import annotations

from .phc import PHCClock
from .ptp import AnnounceData, PTPClock, PTPError, ts_refclk
from .timeline import TimelineClock

__all__ = ["AnnounceData", "PHCClock", "PTPClock", "PTPError", "TimelineClock", "ts_refclk"]
