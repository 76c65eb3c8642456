"""Traceability queries: the full history of a serial, a lot, a part number, a station.

What is printed comes from the stored evidence copy of each record (the ``payload``
field, exactly as the gateway sealed it), not from the indexed columns.
"""

from __future__ import annotations

import csv
import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from collector.inspection.records import parse_utc_us
from collector.store.base import Store, quote_ident, quote_literal
from collector.store.lineprotocol import MEASUREMENTS, TAG_KEYS

#: record fields in the order the CSV export shows them
CSV_COLUMNS = (
    "recorded_at",
    "kind",
    "serial",
    "part_number",
    "plan_revision",
    "lot",
    "work_order",
    "characteristic",
    "characteristic_name",
    "nominal",
    "lsl",
    "usl",
    "unit",
    "decimals",
    "value",
    "judged_value",
    "deviation",
    "verdict",
    "limit",
    "criticality",
    "reading_value",
    "reading_unit",
    "gauge",
    "gauge_calibration_due",
    "device",
    "channel",
    "operator",
    "site",
    "line",
    "station",
    "gateway",
    "seq",
    "id",
    "supersedes",
    "reason",
    "reason_for_test",
    "calibration_status",
    "released_by",
    "records",
    "failed",
    "missing",
    "reason_code",
    "target",
    "measurement_id",
    "nonconformance_id",
    "decision",
    "concession",
    "by",
    "event",
    "subject",
    "detail",
    "comment",
    "measured_at",
    "clock_synced",
    "raw",
    "hash",
    "prev_hash",
)


@dataclass(frozen=True)
class TraceFilter:
    serial: str | None = None
    lot: str | None = None
    work_order: str | None = None
    part_number: str | None = None
    station: str | None = None
    characteristic: str | None = None
    gauge: str | None = None
    start: str | None = None  # RFC 3339, inclusive
    end: str | None = None  # RFC 3339, exclusive

    def conditions(self) -> list[str]:
        out = []
        for key in ("serial", "lot", "work_order", "part_number", "station", "characteristic", "gauge"):
            value = getattr(self, key)
            if value is not None:
                out.append(f"{quote_ident(key)} = {quote_literal(value)}")
        if self.start is not None:
            out.append(f"time >= {parse_utc_us(_canonical_time(self.start))}u")
        if self.end is not None:
            out.append(f"time < {parse_utc_us(_canonical_time(self.end))}u")
        return out

    def empty(self) -> bool:
        return not self.conditions()


def _canonical_time(text: str) -> str:
    """Accept ``2026-11-21``, ``2026-11-21T10:00:00Z`` or with fractions; return our shape."""
    import datetime as dt

    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def query_for(flt: TraceFilter, columns: str = '"payload"') -> str:
    measurements = ", ".join(quote_ident(m) for m in sorted(set(MEASUREMENTS.values())))
    where = flt.conditions()
    q = f"SELECT {columns} FROM {measurements}"
    if where:
        q += " WHERE " + " AND ".join(where)
    return q


def trace(store: Store, flt: TraceFilter) -> list[dict[str, Any]]:
    """The matching records, oldest first (by gateway time, then sequence number)."""
    records = [json.loads(row["payload"]) for row in store.iter_query(query_for(flt)) if row.get("payload")]
    records.sort(key=lambda r: (r["recorded_at"], r["gateway"], r["seq"]))
    return records


def write_json(records: Iterable[dict[str, Any]], out: IO[str]) -> None:
    out.write("[")
    for i, r in enumerate(records):
        out.write(("," if i else "") + "\n  " + json.dumps(r, ensure_ascii=False, sort_keys=True))
    out.write("\n]\n")


def write_csv(records: Iterable[dict[str, Any]], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in CSV_COLUMNS])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    text = str(value)
    # a raw device frame keeps its control characters visible rather than breaking the row
    return text.encode("unicode_escape").decode("ascii") if any(ord(ch) < 32 for ch in text) else text


def iter_gateway_rows(store: Store, gateway: str, flt: TraceFilter) -> Iterator[dict[str, Any]]:
    """Every point of one gateway, of every record kind, in time order (which is chain order).

    InfluxQL answers a query over several measurements one series after another, so each
    measurement is streamed by its own query and the streams are merged by time.
    """
    conds = " AND ".join([f'"gateway" = {quote_literal(gateway)}', *flt.conditions()])
    streams = [
        store.iter_query(f"SELECT * FROM {quote_ident(m)} WHERE {conds}") for m in sorted(set(MEASUREMENTS.values()))
    ]
    yield from heapq.merge(*streams, key=lambda row: int(row["time"]))


def gateways(store: Store) -> list[str]:
    found: set[str] = set()
    for m in sorted(set(MEASUREMENTS.values())):
        for row in store.iter_query(f'SHOW TAG VALUES FROM {quote_ident(m)} WITH KEY = "gateway"'):
            if row.get("value"):
                found.add(str(row["value"]))
    return sorted(found)


__all__ = [
    "CSV_COLUMNS",
    "TAG_KEYS",
    "TraceFilter",
    "gateways",
    "iter_gateway_rows",
    "trace",
    "write_csv",
    "write_json",
]
