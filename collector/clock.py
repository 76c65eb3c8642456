"""Is the system clock synchronised? Records say so, because evidence needs trustworthy time.

The kernel knows: ``adjtimex(2)`` returns ``TIME_ERROR`` while the clock is not
synchronised, whichever daemon disciplines it (systemd-timesyncd, chrony, ntpd). The
answer is cached for a while since it changes slowly and the hot path asks often.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex is 208 bytes on 64-bit Linux; only ``modes`` (first field) is written
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 204)]


def kernel_synchronised() -> bool | None:
    """True/False from the kernel; None where adjtimex is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()
        tx.modes = 0  # read only
        state = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


class SyncStatus:
    def __init__(self, ttl: float = 30.0) -> None:
        self._ttl = ttl
        self._checked = -1e9
        self._value = False

    def synchronised(self) -> bool:
        now = time.monotonic()
        if now - self._checked > self._ttl:
            self._checked = now
            self._value = bool(kernel_synchronised())
        return self._value
