"""Where the dashboard's records come from, and what it makes of them for download.

Every place where the dashboard reads the record format or calls the evidence tools
(:mod:`collector.evidence`) is in this module, so that a change of either is met here:

- :func:`records_in_message`: the records of one live MQTT record message (sealed blocks,
  ``docs/evidence-format.md``);
- :func:`search`: the traceability search (``collector trace``);
- :data:`EXPORTS`: the downloads (JSON, CSV made safe for spreadsheets, Q-DAS DFQ);
- :func:`part_report`: the printable part report with the verification of its chain;
- :func:`stored_acknowledgements`: acknowledgements of alerts, read back from the store;
- :func:`characteristic_history`: a characteristic's values and limits records, for its chart;
- :func:`nonconformances`: the material review list, with what decided or superseded each.

The live view checks each block's hash (a line that is not a sealed block is counted as
malformed and shown nowhere) but not its signature: the dashboard shows what the broker
delivers from gateways the broker's ACL admits. What it reads back from the store (search,
downloads, the part report, earlier acknowledgements) is checked against the register of
gateways (``keys``, a :class:`~collector.chain.keys.KeyRing`) when the dashboard has one:
each record then says whether its block verified, and an acknowledgement from a block that
did not verify is not shown as one.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from collector.chain import blocks
from collector.chain.keys import KeyRing
from collector.dashboard.live import ack_from_record
from collector.dashboard.shifts import iso_us
from collector.errors import CollectorError
from collector.evidence import dfq, report, signoff, verify
from collector.evidence.trace import TraceFilter, trace, write_csv, write_json
from collector.inspection.records import parse_utc_us
from collector.store.base import Store

if TYPE_CHECKING:
    from collector.inspection.record_types import Record


def records_in_message(payload: bytes) -> tuple[list[Record], int]:
    """The records of one record message (one sealed block per line), and how many lines were not blocks."""
    records: list[Record] = []
    bad = 0
    for line in payload.splitlines():
        if not line.strip():
            continue
        try:
            records.extend(blocks.read(line.decode("utf-8")).materialise())
        except (blocks.BlockError, UnicodeDecodeError):
            bad += 1
    return records, bad


def search(store: Store, flt: TraceFilter, keys: KeyRing | None = None) -> list[Record]:
    """The records matching ``flt``, oldest first (raises StoreError when the store fails)."""
    return trace(store, flt, keys)


# -- downloads ------------------------------------------------------------------------------------

#: a cell a spreadsheet would take for a formula: OWASP's list (= + - @ tab CR)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: a plain number is never a formula: negative deviations and limits stay numbers
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a ``'`` in front when a spreadsheet would run it as a formula (CSV injection).

    Free text in records (a reason, a comment, a scanned label, a raw frame) comes from
    people and devices; opened in a spreadsheet, ``=HYPERLINK(...)`` or ``@SUM(...)`` would
    run. A plain number (``-0.012``) is left alone: it is data, and no formula.
    """
    if cell.startswith(_FORMULA_START) and not _NUMBER.match(cell):
        return "'" + cell
    return cell


def write_safe_csv(records: list[Record], out: IO[str]) -> None:
    """``collector trace``'s CSV, with every cell made safe for spreadsheets."""
    plain = io.StringIO()
    write_csv(records, plain)
    plain.seek(0)
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(plain):
        writer.writerow([spreadsheet_safe(cell) for cell in row])


def write_dfq(
    records: list[Record],
    out: IO[str],
    *,
    descriptions: Mapping[str, str] | None = None,
    zone: dt.tzinfo | None = None,
) -> None:
    """One Q-DAS DFQ file: the records must be of one part number and plan revision.

    ``descriptions`` (part number -> K1002) and ``zone`` (the site's time zone for K0004)
    come from the dashboard's configuration (:func:`dfq_export`)."""
    files = dfq.dfq_files(records, descriptions=descriptions, zone=zone)
    if not files:
        raise CollectorError("no measurement records to export as DFQ")
    if len(files) > 1:
        raise CollectorError(
            f"the records make {len(files)} DFQ files ({', '.join(files)}): narrow the search to one part number"
        )
    (text,) = files.values()
    dfq.encode_dfq(text)  # refuses, naming the line, what the file's encoding cannot carry
    out.write(text.replace("\r\n", "\n").replace("\n", "\r\n"))  # the tools expect CR LF


def dfq_export(descriptions: Mapping[str, str], zone: dt.tzinfo | None) -> ExportFormat:
    """The DFQ download with the plans' descriptions and the site's time zone."""
    return ExportFormat(
        functools.partial(write_dfq, descriptions=descriptions, zone=zone), EXPORTS["dfq"].content_type, "dfq"
    )


@dataclass(frozen=True)
class ExportFormat:
    write: Callable[[list[Record], IO[str]], None]
    content_type: str  # its charset is the encoding of the download
    extension: str


#: format name (``/trace/export?format=``) -> how it is written and served
EXPORTS: dict[str, ExportFormat] = {
    "json": ExportFormat(write_json, "application/json; charset=utf-8", "json"),
    "csv": ExportFormat(write_safe_csv, "text/csv; charset=utf-8", "csv"),
    "dfq": ExportFormat(write_dfq, "text/plain; charset=iso-8859-1", "dfq"),  # AQDEF's customary 8-bit text
}


# -- the part report --------------------------------------------------------------------------------


def part_report(store: Store, records: list[Record], keys: KeyRing | None = None) -> str:
    """The self-contained HTML report of one serial's records, with the invalidations and
    dispositions that point at them and the verification of the chain they lie in."""
    records = report.with_related(store, records, keys)
    process = signoff.process_capability(store, records, keys)
    return report.part_report_html(records, verification=verify_span(store, records, keys), process=process)


def verify_span(store: Store, records: list[Record], keys: KeyRing | None = None) -> verify.Report | None:
    """The chain verification of the gateways and time span the records lie in."""
    times = [parse_utc_us(str(r["recorded_at"])) for r in records if r.get("recorded_at")]
    if not times:
        return None
    gateways = sorted({str(r["gateway"]) for r in records if r.get("gateway")})
    span = TraceFilter(start=iso_us(min(times)), end=iso_us(max(times) + 1))
    return verify.verify(store, span, keys=keys, only=gateways or None)


# -- acknowledgements in the store ---------------------------------------------------------------------


def stored_acknowledgements(store: Store, since_us: int, keys: KeyRing | None = None) -> Iterator[tuple[str, Record]]:
    """(alert record id, acknowledgement) of every ``alert_ack`` audit record since ``since_us``,
    read from verified blocks (with ``keys``; without, from blocks whose hash holds)."""
    found = trace(store, TraceFilter(kind="audit", start=iso_us(since_us)), keys, related=False)
    for record in found:
        if keys is not None and not record.get("verified"):
            continue
        if str(record.get("verification", "")).startswith("NOT VERIFIED"):
            continue
        ack = ack_from_record(record)
        if ack is not None:
            yield ack


def _trusted(record: Record, keys: KeyRing | None) -> bool:
    """From a block that verified (with the register), or whose hash holds (without one)."""
    if keys is not None and not record.get("verified"):
        return False
    return not str(record.get("verification", "")).startswith("NOT VERIFIED")


# -- a characteristic's history, for its chart ----------------------------------------------------------


def characteristic_history(
    store: Store, station: str, characteristic: str, since_us: int, keys: KeyRing | None = None
) -> list[Record]:
    """The station's measurements of ``characteristic`` and its limits records since ``since_us``, oldest first."""
    start = iso_us(since_us)
    found = trace(
        store,
        TraceFilter(station=station, characteristic=characteristic, kind="measurement", start=start),
        keys,
        related=False,
    )
    limits = trace(store, TraceFilter(station=station, kind="audit", start=start), keys, related=False)
    wanted = [r for r in limits if r.get("event") == "spc_limits" and r.get("subject") == characteristic]
    both = [r for r in found + wanted if _trusted(r, keys)]
    return sorted(both, key=lambda r: str(r.get("recorded_at") or ""))


# -- material review: the nonconformances still to be decided -------------------------------------------


@dataclass(frozen=True)
class Nonconformance:
    record: Record
    #: the disposition that decided it, if any
    disposition: Record | None
    #: a later measurement that replaced the one that failed (a re-measure), if any
    remeasure: Record | None

    @property
    def open(self) -> bool:
        return self.disposition is None and self.remeasure is None


def nonconformances(store: Store, since_us: int, keys: KeyRing | None = None) -> list[Nonconformance]:
    """Every nonconformance since ``since_us`` from verified blocks, newest first, with what closed it.

    A nonconformance is closed by a disposition that names it, or superseded by a re-measure
    of the value it was opened for (the re-measure carries ``supersedes``: the failed value's id).
    """
    start = iso_us(since_us)
    ncs = [r for r in trace(store, TraceFilter(kind="nonconformance", start=start), keys, related=False)]
    ncs = [r for r in ncs if _trusted(r, keys)]
    if not ncs:
        return []
    decided: dict[str, Record] = {}
    for d in trace(store, TraceFilter(kind="disposition", start=start), keys, related=False):
        if _trusted(d, keys) and d.get("nonconformance_id"):
            decided.setdefault(str(d["nonconformance_id"]), d)
    replaced: dict[str, Record] = {}
    for m in trace(store, TraceFilter(kind="measurement", start=start), keys, related=False):
        if _trusted(m, keys) and m.get("supersedes"):
            replaced[str(m["supersedes"])] = m
    out = [Nonconformance(r, decided.get(str(r["id"])), replaced.get(str(r.get("measurement_id")))) for r in ncs]
    return sorted(out, key=lambda n: str(n.record.get("recorded_at") or ""), reverse=True)
