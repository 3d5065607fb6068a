"""PHCClock reads a PTP hardware clock through its dynamic clock id."""

from __future__ import annotations

import glob
import time

import pytest

from streamlib.clocks import PHCClock
from streamlib.clocks.phc import dynamic_clock_id

DEVICES = sorted(glob.glob("/dev/ptp*"))


def test_the_dynamic_clock_id_is_the_kernels_fd_to_clockid() -> None:
    # include/linux/posix-timers.h: #define FD_TO_CLOCKID(fd) ((~(clockid_t) (fd) << 3) | CLOCKFD)
    assert dynamic_clock_id(3) == -29 and dynamic_clock_id(0) == -5


def test_a_missing_device_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no PTP hardware clock at /dev/ptp-none"):
        PHCClock("/dev/ptp-none")


def test_a_file_that_is_not_a_phc_is_refused() -> None:
    with pytest.raises(OSError, match="is not a PTP hardware clock"):
        PHCClock("/dev/null")


@pytest.mark.skipif(not DEVICES, reason="this machine has no PTP hardware clock (/dev/ptp*)")
def test_reads_a_hardware_clock_that_advances_with_real_time() -> None:
    with PHCClock(DEVICES[0]) as clock:
        a, t0 = clock.now_ns(), time.monotonic_ns()
        time.sleep(0.2)
        b, t1 = clock.now_ns(), time.monotonic_ns()
        assert abs((b - a) - (t1 - t0)) < 0.01 * (t1 - t0)  # within 1 % of the elapsed time
        assert clock.clock_id.startswith("phc:")
