"""The gateway's inbox: what drivers and commands hand the processing thread, bounded in readings.

A plain ``queue.Queue(maxsize)`` counts items, but one item may be one reading (a caliper)
or a whole poll cycle of hundreds (a PLC): a bound in items is no bound in memory. This
queue counts readings. A put waits while the readings already queued plus the new ones
would exceed the capacity (an item larger than the whole capacity is let in alone, into an
empty queue, so nothing waits forever), up to a timeout; then it raises ``queue.Full`` and
the caller counts the loss.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Any

from drivers.base import Reading


def weight(item: Any) -> int:
    """Readings an item holds (an event or a command weighs 1: it takes room too)."""
    if isinstance(item, tuple):
        return max(1, len(item))
    return 1


def readings_in(item: Any) -> int:
    """Readings an item holds (what is lost if it is dropped)."""
    if isinstance(item, Reading):
        return 1
    if isinstance(item, tuple):
        return sum(isinstance(r, Reading) for r in item)
    return 0


class Inbox:
    """A FIFO bounded by the number of readings it holds. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # bounded by put(): it waits (or fails) while the readings held reach ``capacity``
        self._items: deque[tuple[Any, int]] = deque()
        self._held = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return self._held

    def put(self, item: Any, timeout: float | None = None) -> None:
        n = weight(item)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._items and self._held + n > self.capacity:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Full
                self._cond.wait(remaining)
            self._items.append((item, n))
            self._held += n
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; ``queue.Empty`` after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            item, n = self._items.popleft()
            self._held -= n
            self._cond.notify_all()
            return item

    def take(self, max_weight: int) -> list[Any]:
        """Without waiting: the oldest items, up to ``max_weight`` readings (at least one item if any)."""
        out: list[Any] = []
        with self._cond:
            taken = 0
            while self._items and (not out or taken + self._items[0][1] <= max_weight):
                item, n = self._items.popleft()
                self._held -= n
                taken += n
                out.append(item)
            if out:
                self._cond.notify_all()
        return out

    def empty(self) -> bool:
        with self._cond:
            return not self._items
