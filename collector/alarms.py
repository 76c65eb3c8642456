"""Bounded log lines for repeated faults: one line per kind of fault per interval.

A fault that repeats (a full queue, a refused write, a recorder refusing blocks) must be
loud, but not one line per occurrence: the first occurrence is logged at once, later ones
within the interval are counted, and the next line says how many it speaks for. The
counters in the daemons' statistics and metrics say the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Throttle:
    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, n: int = 1) -> int | None:
        """None: stay quiet (``n`` is counted); otherwise how many events this line speaks for."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, float("-inf")):
                self._held[key] = self._held.get(key, 0) + n
                return None
            self._next[key] = now + self.interval
            return n + self._held.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: str, message: str, *args: object, n: int = 1) -> bool:
        """Log ``message`` unless a line of the same ``key`` went out within the interval.

        The message may use ``{n}`` for how many events the line speaks for. True when logged.
        """
        said = self.allow(key, n)
        if said is None:
            return False
        logger.log(level, message.replace("{n}", str(said)), *args)
        return True
