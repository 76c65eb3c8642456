"""Sign-in throttling: slow a password guesser down, never lock a person out.

What it must withstand, and how:

- **Guessing one user's password.** Failures are counted per (user, source) over a window.
  Past a few free ones, every further attempt for that pair waits before its password is
  checked (1 s, doubling per failure, at most ``max_delay``), and only one attempt per pair
  is under way at a time (a second one meanwhile is answered "busy" unchecked): the rate of
  guesses for one user from one source is at most one per ``max_delay``.
- **Spraying one password over many names.** Every failure also counts per source; past a
  larger allowance the source's attempts wait as well, whichever name they try.
- **Locking a user out.** A delay is all a failure ever causes: the password of a waiting
  attempt is checked when its turn comes, and the right one signs in (and clears that
  pair's failures). A guesser at another address has his own pair and source and never
  touches the user's. One sharing the user's address (the same NAT, or a proxy that is not
  in ``trusted_proxies``) can slow the user's sign-in down and, by keeping an attempt for
  the same name under way, answer it "busy" -- unless the user's browser signed in
  successfully before: its *device* cookie (see :mod:`collector.dashboard.auth`) gives its
  attempts a key of their own, which only failures made with that very cookie slow down
  (the device-cookie defence of OWASP's authentication cheat sheet).
- **Flooding with attempts.** A waiting attempt holds a thread, so attempts under way are
  bounded too: per source (``max_waiting_per_source``) and overall (``max_waiting``); past
  either, an attempt is answered "busy" unchecked. Attempts with a device cookie are
  counted apart, per user (``max_waiting_per_device_user``), so a flood cannot keep a
  known browser out either.
- **Flooding the tables.** Names that are not users are kept in a table of their own, so
  inventing names cannot push out what is kept for real users; they are treated exactly like
  users otherwise (same allowance, same delays, one attempt at a time), so neither the
  answer's timing nor a "busy" tells whether a name exists. Each table is bounded (least
  recently used entries go first); losing an entry only forgets someone's failures, which
  never locks anyone out. IPv6 sources count per /64, the block one host usually has.
"""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def source_of(address: str) -> str:
    """The throttle's source for a client address: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Entry:
    failures: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))
    busy: bool = False  # an attempt on this key waits or is being checked
    waiting: int = 0  # attempts under way from this source (source entries only)

    @property
    def in_use(self) -> bool:
        return self.busy or self.waiting > 0


class _Table:
    """Entries by key, at most ``limit`` of them; the least recently used goes first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def get(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= self.limit:
                oldest = next((k for k, e in self._entries.items() if not e.in_use), None)
                if oldest is None:  # every one is under way: the bound is a bound all the same
                    oldest = next(iter(self._entries))
                del self._entries[oldest]
            entry = self._entries[key] = _Entry()
        else:
            self._entries.move_to_end(key)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Attempt:
    """One sign-in attempt admitted by the throttle: wait ``delay`` seconds, then check."""

    delay: float
    failures: int  # recent failures on the attempt's own key (user and source, or device)
    _own: _Entry
    _source: _Entry | None
    _device_user: str | None


class Throttle:
    """The counts behind the delays; thread-safe. ``clock`` is monotonic seconds."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        window: float = 900.0,
        free_per_user: int = 5,
        free_per_source: int = 20,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        max_sources: int = 4096,
        max_sources_per_user: int = 1024,
        max_devices: int = 4096,
        max_waiting: int = 64,
        max_waiting_per_source: int = 8,
        max_waiting_per_device_user: int = 4,
    ) -> None:
        self.clock = clock
        self.window = window
        self.free_per_user = free_per_user
        self.free_per_source = free_per_source
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._sources = _Table(max_sources)
        self._unknown = _Table(max_sources)  # (source, name) of names that are no user
        self._per_user: dict[str, _Table] = {}
        self._max_sources_per_user = max_sources_per_user
        self._devices = _Table(max_devices)
        self.max_waiting = max_waiting
        self.max_waiting_per_source = max_waiting_per_source
        self.max_waiting_per_device_user = max_waiting_per_device_user
        self._waiting = 0  # attempts under way without a device cookie
        self._device_waiting: dict[str, int] = {}  # per configured user

    def begin(self, source: str, name: str, *, known: bool, device: str | None = None) -> Attempt | None:
        """Admit an attempt (None: one for the same key is under way: answer "busy").

        ``known``: ``name`` is a configured user (its state is kept apart from invented
        names'); ``device``: the id of a valid device cookie for that user.
        """
        now = self.clock()
        with self._lock:
            wide: _Entry | None
            if device is not None:
                if self._device_waiting.get(name, 0) >= self.max_waiting_per_device_user:
                    return None
                own, wide = self._devices.get(device), None
            else:
                if self._waiting >= self.max_waiting:
                    return None
                wide = self._sources.get(source)
                if wide.waiting >= self.max_waiting_per_source:
                    return None
                if known:
                    own = self._per_user.setdefault(name, _Table(self._max_sources_per_user)).get(source)
                else:  # user names are at most 64 characters: longer ones need no more room
                    own = self._unknown.get(f"{source}|{name[:64]}")
            if own.busy:
                return None
            own.busy = True
            if wide is None:
                self._device_waiting[name] = self._device_waiting.get(name, 0) + 1
            else:
                wide.waiting += 1
                self._waiting += 1
            failures = self._recent(own, now)
            delay = self._delay(failures, self.free_per_user)
            if wide is not None:
                delay = max(delay, self._delay(self._recent(wide, now), self.free_per_source))
            return Attempt(delay, failures, own, wide, name if wide is None else None)

    def end(self, attempt: Attempt, *, ok: bool) -> int:
        """The attempt's outcome; the failures now counted on its own key."""
        now = self.clock()
        with self._lock:
            attempt._own.busy = False
            if attempt._source is not None:
                attempt._source.waiting -= 1
                self._waiting -= 1
            if attempt._device_user is not None:
                left = self._device_waiting.get(attempt._device_user, 1) - 1
                if left > 0:
                    self._device_waiting[attempt._device_user] = left
                else:
                    self._device_waiting.pop(attempt._device_user, None)
            if ok:
                attempt._own.failures.clear()
                return 0
            attempt._own.failures.append(now)
            if attempt._source is not None:
                attempt._source.failures.append(now)
            return len(attempt._own.failures)

    def _recent(self, entry: _Entry, now: float) -> int:
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        return len(entry.failures)

    def _delay(self, failures: int, free: int) -> float:
        if failures < free:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2 ** min(failures - free, 30)))

    def sizes(self) -> dict[str, int]:
        """How many entries each table holds (for tests and the curious)."""
        with self._lock:
            return {
                "sources": len(self._sources),
                "unknown": len(self._unknown),
                "users": sum(len(t) for t in self._per_user.values()),
                "devices": len(self._devices),
            }
