"""Each characteristic's latest values and the control limits in force, for its chart.

Fed by the live state with every record the broker delivers (a measurement is a point, a
re-measure is not; an ``spc_limits`` audit record sets the limits in force), read by the
chart page. Bounded: the last :data:`SERIES_POINTS` values of at most :data:`SERIES_KEPT`
characteristics (the one not touched for longest goes first). A chart opened before any
value arrived live is seeded from the store (:func:`.records.characteristic_history`).
"""

from __future__ import annotations

import collections
import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector.inspection.record_types import Record

Key = tuple[str, str]  # (station key site/line/station, characteristic)

SERIES_POINTS = 500
SERIES_KEPT = 300


def limits_from_record(r: Record) -> Record | None:
    """The control limits an ``spc_limits`` audit record put in force (None if it is not one)."""
    if r.get("kind") != "audit" or r.get("event") != "spc_limits":
        return None
    try:
        limits = json.loads(str(r.get("detail")))
        return {
            "characteristic": str(limits["characteristic"]),
            "centre": float(limits["centre"]),
            "sigma": float(limits["sigma"]),
            "n": int(limits["n"]),
            "provisional": bool(limits.get("provisional")),
            "record": r.get("id"),
            "at": r.get("recorded_at"),
        }
    except (ValueError, KeyError, TypeError):
        return None


def chart_point(r: Record) -> Record | None:
    """A measurement as a point of its characteristic's chart (a re-measure is not one)."""
    if r.get("kind") != "measurement" or r.get("supersedes") or r.get("judged_value") is None:
        return None
    try:
        value = float(str(r["judged_value"]))
    except ValueError:
        return None
    return {
        "value": value,
        "id": r.get("id"),
        "at": r.get("recorded_at"),
        "verdict": r.get("verdict"),
        "lsl": r.get("lsl"),
        "usl": r.get("usl"),
        "unit": r.get("unit"),
        "part_number": r.get("part_number"),
    }


class Charts:
    """The points and limits in force per (station, characteristic); safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.series: collections.OrderedDict[Key, collections.deque[Record]] = collections.OrderedDict()
        self.limits: dict[Key, Record] = {}

    def add(self, station_key: str, r: Record) -> Key | None:
        """Take a record; the characteristic whose chart it changes, if any."""
        point = chart_point(r)
        limits = limits_from_record(r) if point is None else None
        if point is None and limits is None:
            return None
        with self._lock:
            if point is not None:
                key = (station_key, str(r.get("characteristic")))
                self._series(key).append(point)
                return key
            assert limits is not None
            key = (station_key, limits["characteristic"])
            self.limits[key] = limits
            return key

    def _series(self, key: Key) -> collections.deque[Record]:
        points = self.series.get(key)
        if points is None:
            points = self.series[key] = collections.deque(maxlen=SERIES_POINTS)
            while len(self.series) > SERIES_KEPT:
                old, _ = self.series.popitem(last=False)
                self.limits.pop(old, None)
        else:
            self.series.move_to_end(key)
        return points

    def describe(self, key: Key) -> Record:
        with self._lock:
            return {"station_key": key[0], "characteristic": key[1], "n": len(self.series.get(key, ()))}

    def seed(self, station_key: str, characteristic: str, records: list[Record]) -> None:
        """Points (and limits) read back from the store, for a chart opened before any arrived live.

        Nothing is kept for a characteristic the store has no values of: a page asking for
        made-up names must not push real characteristics out.
        """
        key = (station_key, characteristic)
        points = [p for r in records if r.get("characteristic") == characteristic and (p := chart_point(r))]
        found = [x for r in records if (x := limits_from_record(r)) and x["characteristic"] == characteristic]
        if not points:
            return
        with self._lock:
            series = self._series(key)
            if series:
                return  # values arrived live meanwhile
            series.extend(points)
            if found:
                self.limits[key] = found[-1]

    def data(self, station_key: str, characteristic: str) -> tuple[list[Record], Record | None]:
        """The points of a characteristic's chart (oldest first) and the limits in force."""
        key = (station_key, characteristic)
        with self._lock:
            return list(self.series.get(key, ())), self.limits.get(key)

    def listing(self) -> list[Record]:
        """Every characteristic charted, with its number of points."""
        with self._lock:
            keys = sorted(self.series)
        return [self.describe(k) for k in keys]
