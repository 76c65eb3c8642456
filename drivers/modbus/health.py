"""What the driver counts and how it tells people: fault streaks, silent slaves, overruns.

Everything here is bounded in what it writes: every fault is counted, but a streak of the
same fault from the same slave is one event and one log line when it starts, and one log
line with its count when it ends (the next sound answer from that slave). An overrun streak
of a poll task is one event when it starts and one log line with its count when the task
meets its rate again (or once a minute while it does not).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from drivers.backoff import Backoff, BackoffDelays
from drivers.base import EventKind
from drivers.modbus.link import FaultKind

log = logging.getLogger("drivers.modbus")

#: the counter each link fault is counted in
FAULT_COUNTERS: Final[dict[str, str]] = {
    "crc": "crc_errors",
    "foreign": "foreign_answers",
    "late": "late_replies",
    "malformed": "malformed_answers",
}
_FAULT_NAMES: Final[dict[str, str]] = {
    "crc": "checksum error",
    "foreign": "foreign answer",
    "late": "late reply",
    "malformed": "malformed answer",
}

#: a long overrun streak still gets its line this often (seconds)
OVERRUN_REPORT_EVERY: Final = 60.0

Emit = Callable[[EventKind, str, bytes], None]


@dataclass(slots=True)
class _Streak:
    count: int
    since: float
    label: str


class FaultStreaks:
    """Counts link faults per device; one event and one warning per (slave, fault) streak."""

    def __init__(self, device: str, emit: Emit, counters: dict[str, int]) -> None:
        self.device = device
        self._emit = emit
        self._counters = counters
        for name in FAULT_COUNTERS.values():
            counters.setdefault(name, 0)
        self._open: dict[tuple[int | None, str], _Streak] = {}

    def fault(self, kind: FaultKind, unit: int | None, label: str, detail: str, raw: bytes, now: float) -> None:
        counter = FAULT_COUNTERS[kind]
        self._counters[counter] += 1
        streak = self._open.get((unit, kind))
        if streak is not None:
            streak.count += 1
            log.debug("%s: %s: %s: %s", self.device, label, _FAULT_NAMES[kind], detail)
            return
        self._open[(unit, kind)] = _Streak(1, now, label)
        text = f"{label}: {_FAULT_NAMES[kind]}: {detail}"
        log.warning("%s: %s (further ones counted in %s until it answers soundly)", self.device, text, counter)
        self._emit(EventKind.BAD_FRAME, text, raw)

    def sound(self, unit: int, now: float) -> None:
        """A sound answer from ``unit``: its streaks (and the bus's) are over."""
        if not self._open:
            return
        for key in [k for k in self._open if k[0] in (unit, None)]:
            streak = self._open.pop(key)
            name = _FAULT_NAMES[key[1]]
            log.info(
                "%s: %s: %d %s(s) in %.1f s; answering soundly again",
                self.device,
                streak.label,
                streak.count,
                name,
                now - streak.since,
            )


@dataclass(slots=True)
class SilentSlave:
    """A slave's answering state: silent slaves are only probed, with a back-off."""

    label: str
    down: bool = False
    down_since: float = 0.0
    retry_at: float = 0.0
    delays: BackoffDelays | None = None
    probes: int = 0
    #: bus seconds this slave's failing requests (timeouts, garbled answers, probes) took
    charged: float = 0.0

    def reset(self) -> None:
        self.down = False
        self.delays = None
        self.retry_at = 0.0

    def went_silent(self, now: float, backoff: Backoff, rng: random.Random) -> tuple[bool, float]:
        """Record a silent request; returns (first of the outage, seconds until the next probe)."""
        first = not self.down
        if first:
            self.down = True
            self.down_since = now
            self.probes = 0
            self.delays = backoff.delays(rng)
        else:
            self.probes += 1
        assert self.delays is not None
        delay = next(self.delays)
        self.retry_at = now + delay
        return first, delay

    def came_back(self, now: float) -> float:
        """The slave answered again; returns how long it was silent."""
        silent_for = now - self.down_since
        self.reset()
        return silent_for


@dataclass(slots=True)
class OverrunStreak:
    """The overruns of one poll task, reported once per streak."""

    where: str  # device and slave
    task: str
    interval: float
    count: int = 0
    total: int = 0
    since: float = 0.0
    last: float = 0.0
    worst: float = 0.0
    reported: float = 0.0
    causes: dict[str, int] = field(default_factory=dict)

    @property
    def quiet(self) -> float:
        """On time for this long ends a streak: a second, or five intervals of a slow task."""
        return max(1.0, 5 * self.interval)

    def late(self, now: float, lateness: float, cause: str) -> bool:
        """Count one overrun; True when it starts a streak (the caller emits the event)."""
        self.total += 1
        self.causes[cause] = self.causes.get(cause, 0) + 1
        first = self.count == 0
        if first:
            self.since = self.reported = now
            self.worst = 0.0
        self.count += 1
        self.last = now
        self.worst = max(self.worst, lateness)
        if not first and now - self.reported >= OVERRUN_REPORT_EVERY:
            self._log(now, "still running")
            self.reported = now
        return first

    def on_time(self, now: float) -> None:
        if self.count and now - self.last >= self.quiet:
            self.close(now)

    def close(self, now: float) -> None:
        if self.count:
            self._log(now, "over")
            self.count = 0
            self.causes = {}

    def _log(self, now: float, state: str) -> None:
        causes = ", ".join(f"{n} {c}" for c, n in sorted(self.causes.items()))
        log.warning(
            "%s %s: overrun streak %s: %d poll(s) late over %.1f s (worst %.1f ms past the next slot; %s); %d in all",
            self.where,
            self.task,
            state,
            self.count,
            self.last - self.since,
            self.worst * 1e3,
            causes,
            self.total,
        )
