"""Traceability: the complete history of a serial, a lot, a work order, a station, a gauge.

Everything printed comes from blocks (``docs/evidence-format.md``), never from the columns
of record points, and every record says whether its block verified (:mod:`.checked`):

- by serial, lot or work order, the ``lookup`` index names the blocks that hold the value
  (one bucket of 4,096 is read, whatever the store holds), and the records that carry it
  are taken from those blocks;
- by part number, station, characteristic, gauge, kind or time alone, the record points
  that match name their blocks (``block_time``), and the matching records are taken from
  the blocks, the filter applied again to the records themselves;
- then, by the ids the found records have, the ``ref`` index names the blocks of the records
  that point at them: invalidations (``target``), dispositions (``nonconformance_id``),
  re-measures (``supersedes``) and nonconformances (``measurement_id``), written later and
  often without the part's context. This repeats for what those records' ids bring in.

A record point that names no block, or a block that does not exist, is never shown as a
record: it is counted in :attr:`Trace.orphans` (not evidence). A block point whose payload
is not a block is counted in :attr:`Trace.unreadable`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from collector.chain.blocks import parse_utc_us
from collector.chain.keys import KeyRing
from collector.evidence.checked import CheckedBlock, Loaded, load_blocks
from collector.store import queries
from collector.store.base import Store
from collector.store.lineprotocol import LOOKUP_FIELDS, MEASUREMENTS, RECORD_MEASUREMENTS
from collector.store.queries import BlockRef, Unreadable

if TYPE_CHECKING:  # the records' types only: the trace path does not import the domain models
    from collector.inspection.record_types import Record

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
    "raw_encoding",
    "block_hash",
    "verified",
    "verification",
)

#: the ids a record points at (the ``ref`` lookup key)
REF_FIELDS: tuple[str, ...] = LOOKUP_FIELDS["ref"]
#: rounds of "records that point at what was found": a disposition points at a
#: nonconformance that points at a measurement; deeper chains do not exist, a bound does
MAX_RELATED_ROUNDS = 8


@dataclass(frozen=True)
class TraceFilter:
    serial: str | None = None
    lot: str | None = None
    work_order: str | None = None
    part_number: str | None = None
    station: str | None = None
    characteristic: str | None = None
    gauge: str | None = None
    start: str | None = None  # RFC 3339 or a date, inclusive
    end: str | None = None  # RFC 3339 or a date, exclusive
    kind: str | None = None

    #: fields compared with the records themselves (the time range aside)
    MATCHED = ("serial", "lot", "work_order", "part_number", "station", "characteristic", "gauge", "kind")

    def start_us(self) -> int | None:
        return None if self.start is None else parse_utc_us(_canonical_time(self.start))

    def end_us(self) -> int | None:
        return None if self.end is None else parse_utc_us(_canonical_time(self.end))

    def conditions(self) -> list[str]:
        """InfluxQL conditions on record points (raises ValueError for a bad time)."""
        out = [queries.eq(k, v) for k in self.MATCHED if (v := getattr(self, k)) is not None]
        return out + queries.time_range(self.start_us(), self.end_us())

    def empty(self) -> bool:
        return not self.conditions()

    def matches(self, record: Record) -> bool:
        for k in self.MATCHED:
            wanted = getattr(self, k)
            if wanted is not None and record.get(k) != wanted:
                return False
        if self.start is None and self.end is None:
            return True
        at = parse_utc_us(str(record["recorded_at"]))
        start, end = self.start_us(), self.end_us()
        return (start is None or at >= start) and (end is None or at < end)


def _canonical_time(text: str) -> str:
    """Accept ``2026-11-21``, ``2026-11-21T10:00:00Z`` or with fractions; return our shape."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Trace:
    """What a trace found: records (each annotated), and what could not be evidence."""

    records: list[Record] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    blocks: int = 0

    @property
    def unverified(self) -> list[Record]:
        return [r for r in self.records if not r.get("verified")]

    def problems(self) -> list[str]:
        """One line per thing a reader must know: what is not evidence, what failed a check.

        A record whose block was not checked against a key directory (none given) is marked
        unverified but is not listed here: nothing was found wrong with it.
        """
        out = [f"not evidence: {u}" for u in self.unreadable]
        out += [f"not evidence: {o}" for o in self.orphans]
        by_block: dict[str, str] = {}
        for r in self.records:
            text = str(r.get("verification"))
            if text.startswith("NOT VERIFIED"):
                by_block.setdefault(str(r.get("block_hash")), f"{r.get('gateway')} seq {r.get('seq')}: {text}")
        out += [f"block of {text}" for text in by_block.values()]
        return out


class _Collector:
    """Blocks read so far and the records taken from them (each record once)."""

    def __init__(self, store: Store, keys: KeyRing | None, result: Trace) -> None:
        self.store, self.keys, self.result = store, keys, result
        self.blocks: dict[BlockRef, CheckedBlock] = {}
        self.seen: set[BlockRef] = set()
        self.records: dict[tuple[str, int, str], Record] = {}
        self.materialised: dict[BlockRef, list[Record]] = {}

    def load(self, refs: Iterable[BlockRef], where: str) -> list[BlockRef]:
        new = set(refs) - self.seen
        self.seen |= new
        if not new:
            return []
        loaded: Loaded = load_blocks(self.store, new, self.keys)
        self.result.unreadable += loaded.unreadable
        self.result.orphans += [
            f"{where} names a block of gateway {r.gateway} at {r.time} µs that is not stored" for r in loaded.missing
        ]
        self.blocks.update(loaded.blocks)
        for ref, checked in loaded.blocks.items():
            self.materialised[ref] = checked.records()
        return list(loaded.blocks)

    def take(self, record: Record) -> bool:
        key = (str(record["gateway"]), int(record["seq"]), str(record.get("block_hash")))
        if key in self.records:
            return False
        self.records[key] = record
        return True


def trace_evidence(store: Store, flt: TraceFilter, keys: KeyRing | None = None, *, related: bool = True) -> Trace:
    """The records that match ``flt``, from their blocks, oldest first (and their later history)."""
    result = Trace()
    c = _Collector(store, keys, result)
    start, end = flt.start_us(), flt.end_us()
    indexed = next(((k, v) for k in ("serial", "lot", "work_order") if (v := getattr(flt, k)) is not None), None)
    if indexed is not None:
        key, value = indexed
        refs = queries.lookup(store, key, [value])[value]
        found = c.load(refs, f"the lookup index for {key} {value!r}")
    else:
        measurements = sorted({MEASUREMENTS.get(flt.kind, "event")}) if flt.kind else list(RECORD_MEASUREMENTS)
        # a kind with a measurement of its own is selected by the measurement alone, so that a
        # point there without (or with another) kind tag is still seen, and reported
        own = flt.kind is not None and MEASUREMENTS.get(flt.kind, "event") != "event"
        conds = [
            queries.eq(k, v) for k in flt.MATCHED if (v := getattr(flt, k)) is not None and not (own and k == "kind")
        ]
        refs = set()
        for ref, row in queries.record_refs(store, conds, measurements, start, end):
            if ref is None:
                gateway = row.get("gateway") or "(none)"
                result.orphans.append(
                    f"{row.get('measurement')} point at {row.get('time')} µs (gateway {gateway}, "
                    f"seq {row.get('seq')}) names no block"
                )
            else:
                refs.add(ref)
        found = c.load(refs, "a record point")
    for ref in found:
        for record in c.materialised[ref]:
            if flt.matches(record):
                c.take(record)
    if related:
        _add_related(c)
    result.blocks = len(c.blocks)
    result.records = sorted(c.records.values(), key=_order)
    return result


def _add_related(c: _Collector) -> None:
    """Records that point at the ids found, and at theirs, from the ``ref`` index."""
    asked: set[str] = set()
    for _ in range(MAX_RELATED_ROUNDS):
        ids = {str(r["id"]) for r in c.records.values() if r.get("id")} - asked
        if not ids:
            return
        asked |= ids
        refs: set[BlockRef] = set()
        for places in queries.lookup(c.store, "ref", ids).values():
            refs |= places
        c.load(refs, "the ref lookup index")
        # the new blocks, and blocks already read whose other records may point here
        for records in c.materialised.values():
            for record in records:
                if any(record.get(f) in asked for f in REF_FIELDS):
                    c.take(record)


def related(store: Store, records: Iterable[Record], keys: KeyRing | None = None) -> list[Record]:
    """The records that point at ``records`` (and at those, ...), from the ``ref`` index."""
    c = _Collector(store, keys, Trace())
    given = [dict(r) for r in records]
    for r in given:
        c.take(r)
    before = set(c.records)
    have = {str(r.get("id")) for r in given}
    _add_related(c)
    return [r for k, r in c.records.items() if k not in before and str(r.get("id")) not in have]


def with_related(store: Store, records: Iterable[Record], keys: KeyRing | None = None) -> list[Record]:
    """``records`` and :func:`related`, in trace order (time, gateway, seq)."""
    given = [dict(r) for r in records]
    return sorted(given + related(store, given, keys), key=_order)


def _order(r: Record) -> tuple[str, str, int]:
    return (str(r.get("recorded_at")), str(r.get("gateway")), int(r.get("seq") or 0))


def trace(store: Store, flt: TraceFilter, keys: KeyRing | None = None, *, related: bool = True) -> list[Record]:
    """The matching records, oldest first, each with ``verified`` and ``verification``."""
    return trace_evidence(store, flt, keys, related=related).records


def write_json(records: Iterable[Record], out: IO[str]) -> None:
    out.write("[")
    for i, r in enumerate(records):
        out.write(("," if i else "") + "\n  " + json.dumps(r, ensure_ascii=False, sort_keys=True))
    out.write("\n]\n")


def write_csv(records: Iterable[Record], out: IO[str]) -> None:
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


__all__ = [
    "CSV_COLUMNS",
    "Trace",
    "TraceFilter",
    "related",
    "trace",
    "trace_evidence",
    "with_related",
    "write_csv",
    "write_json",
]
