"""Shifts: which one a moment falls in, in the plant's time zone, and UTC timestamps.

Counts on the live page restart at each shift start (``dashboard.shift_starts``, local
times in ``dashboard.shift_timezone``); a night shift runs over midnight, and the shift
around a daylight-saving change is an hour shorter or longer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Shift:
    start: dt.datetime  # aware, UTC
    end: dt.datetime
    label: str  # "14:00–22:00"

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp() * 1_000_000)

    @property
    def end_us(self) -> int:
        return int(self.end.timestamp() * 1_000_000)

    def contains_us(self, t_us: int) -> bool:
        return self.start_us <= t_us < self.end_us

    def as_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "label": self.label}


def shift_at(now: dt.datetime, starts: Sequence[dt.time], zone: ZoneInfo | None) -> Shift:
    """The shift that ``now`` (aware) falls in; ``zone`` None is the server's local time."""
    local_now = now.astimezone(zone) if zone is not None else now.astimezone()
    day = local_now.date()
    candidates: list[dt.datetime] = []
    for d in (day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)):
        for t in starts:
            naive = dt.datetime.combine(d, t)
            aware = naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
            candidates.append(aware.astimezone(dt.UTC))
    candidates.sort()
    start = max(c for c in candidates if c <= now)
    end = min(c for c in candidates if c > now)

    def local(t: dt.datetime) -> dt.datetime:
        return t.astimezone(zone) if zone is not None else t.astimezone()

    return Shift(start, end, f"{local(start):%H:%M}–{local(end):%H:%M}")


def iso(t: dt.datetime) -> str:
    """``2026-11-21T06:00:00.000000Z``: the records' own timestamp form."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_us(t_us: int) -> str:
    return iso(dt.datetime.fromtimestamp(t_us / 1_000_000, dt.UTC))
