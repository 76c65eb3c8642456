"""Impact assessment for a gauge found out of calibration (ISO 9001 7.1.5.2, IATF 16949 7.1.5.2.1).

When a gauge is found unfit, every result it measured since its last good calibration
must be reviewed. :func:`impact` lists them, grouped by part, with each value's verdict
and the part's verdict; given the error the calibration found (``offset``), it re-judges
every value and says which verdicts, and which part verdicts, would change. An accepted
part that would be rejected is suspect product.

Re-judging rules:

- ``offset`` is what the gauge read too much: ``+0.004`` means it showed 0.004 above the
  true value, so the corrected reading is ``reading - offset``. The offset is in the
  gauge's reading unit unless ``offset_unit`` names another (then it is converted
  exactly); the corrected reading is converted exactly to the characteristic's unit, as
  at measurement time.
- Each value is judged against its own record's specification snapshot (nominal, the
  absolute limits ``lsl``/``usl``, unit, decimals): the limits in force when it was
  measured, not today's plan.
- The rounding rule is not in the record. Each value is re-judged with every rule
  (half-even, half-up) that reproduces its recorded judged value and verdict from its
  recorded reading; the rules disagree only when the corrected value ends in an exact
  tie. When the candidates disagree the new verdict is ``"pass or fail"`` and the value
  is flagged, never silently decided. When neither rule reproduces the record (it was
  not judged from its reading as stored), both are tried and the value carries a note.
- A value counts for its part's verdict only if the latest part verdict rests on it
  (``records`` of the part record) and no invalidation targets it. A value re-measured
  before its part was complete belongs to the part of its re-measure (or, failing that,
  to the one part verdict recorded for its serial). Superseded and invalidated values
  are listed, with their would-be verdict, but do not change the part. A part's new
  verdict starts from the recorded one: characteristics whose counting value flips are
  added to or removed from its ``failed`` list; an incomplete part stays incomplete.
  "Rounding" and "which value counts" are reported per value, so a reviewer can see why.

Which records are read: measurement records whose ``gauge`` is the gauge and whose
``measured_at`` falls in ``[since, until)``; the re-measures, invalidations and
nonconformances that point at them (by id, whenever written); the part records of their
part numbers written since ``since``. All are read from their blocks (a trace), each block
checked against the key directory when one is given; whatever is not verified evidence is
listed as such, never silently left out.

Why one module of this size: re-judging, grouping by part and the two report forms (text and
JSON) are one assessment, whose rules are stated once, above.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Any

from pydantic import ValidationError

from collector.chain.keys import KeyRing
from collector.errors import CollectorError, SpecificationError
from collector.evidence.trace import TraceFilter, trace_evidence
from collector.inspection import units
from collector.inspection.models import Characteristic, RecordKind, Rounding, Verdict
from collector.inspection.record_types import Record
from collector.inspection.tolerance import Judgement, judge
from collector.store.base import Store

__all__ = [
    "ImpactError",
    "ImpactReport",
    "ImpactedPart",
    "ImpactedValue",
    "Rejudgement",
    "format_impact",
    "impact",
    "impact_json",
    "rejudge",
]


_EXACT = Context(prec=400, Emax=999_999, Emin=-999_999)
AMBIGUOUS = "pass or fail"


class ImpactError(CollectorError):
    """The question cannot be asked as given (a bad date, an unknown unit)."""


@dataclass(frozen=True)
class Rejudgement:
    """A value judged again after removing the gauge's error."""

    corrected_value: Decimal  # in the characteristic's unit, exact
    judged_value: Decimal | None  # None when the rounding rules disagree on it
    verdict: str  # "pass", "fail" or "pass or fail"
    limit: str | None
    roundings: tuple[str, ...]  # the rules tried: those that reproduce the record
    note: str | None = None


@dataclass
class ImpactedValue:
    record: Record
    status: str = "current"  # current, superseded, invalidated
    superseded_by: str | None = None
    invalidated_by: str | None = None  # the invalidation record
    invalidation_reason: str | None = None
    counts: bool = True  # the part's verdict rests on this value
    rejudged: Rejudgement | None = None
    problem: str | None = None  # why it could not be re-judged

    @property
    def change(self) -> str | None:
        """``pass->fail``, ``fail->pass``, ``pass->pass or fail`` ... or None."""
        if self.rejudged is None or self.rejudged.verdict == self.record.get("verdict"):
            return None
        return f"{self.record.get('verdict')}->{self.rejudged.verdict}"


@dataclass
class ImpactedPart:
    part_number: str | None
    serial: str | None
    lot: str | None
    work_order: str | None
    values: list[ImpactedValue] = field(default_factory=list)
    part_record: Record | None = None  # the latest verdict on the part (None: none recorded)
    new_verdict: str | None = None  # after re-judging; None without an offset or a verdict

    @property
    def verdict(self) -> str | None:
        return None if self.part_record is None else str(self.part_record.get("verdict"))

    @property
    def verdict_changes(self) -> bool:
        return self.new_verdict is not None and self.new_verdict != self.verdict

    @property
    def suspect(self) -> bool:
        """Accepted, but the corrected values would (or might) reject it."""
        return self.verdict == "accept" and self.new_verdict in ("reject", "accept or reject")


@dataclass
class ImpactReport:
    gauge: str
    since: str
    until: str | None
    offset: Decimal | None
    offset_unit: str | None
    generated_at: str
    parts: list[ImpactedPart] = field(default_factory=list)
    #: what could not be assessed: points no block holds, blocks that did not verify
    unreadable: list[str] = field(default_factory=list)

    @property
    def values(self) -> list[ImpactedValue]:
        return [v for p in self.parts for v in p.values]

    @property
    def changed_values(self) -> list[ImpactedValue]:
        return [v for v in self.values if v.change]

    @property
    def suspect_parts(self) -> list[ImpactedPart]:
        return [p for p in self.parts if p.suspect]


# --- re-judging ----------------------------------------------------------------------------------


def _characteristic(record: Record, rounding: Rounding) -> Characteristic:
    return Characteristic(
        id=str(record["characteristic"]),
        name=str(record.get("characteristic_name") or record["characteristic"]),
        nominal=_dec(record.get("nominal")),
        lsl=_dec(record.get("lsl")),
        usl=_dec(record.get("usl")),
        unit=str(record["unit"]),
        decimals=int(record["decimals"]),
        rounding=rounding,
    )


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def rejudge(record: Record, offset: Decimal, offset_unit: str | None = None) -> Rejudgement:
    """Judge ``record``'s reading minus ``offset`` against the record's own specification.

    Raises :class:`~collector.errors.SpecificationError` when the record cannot be judged
    (unit, limits) and when ``offset_unit`` does not convert to the reading's unit.
    """
    reading = Decimal(str(record["reading_value"]))
    unit = str(record["reading_unit"])
    with localcontext(_EXACT):
        shift = offset if offset_unit is None else units.convert(offset, offset_unit, unit)
        corrected = reading - shift
    try:
        chars = {r: _characteristic(record, r) for r in Rounding}
    except ValidationError as exc:
        raise SpecificationError(f"the record's specification is not valid: {exc.errors()[0]['msg']}") from None
    recorded_judged, recorded_verdict = Decimal(str(record["judged_value"])), str(record["verdict"])
    consistent = []
    for rule, char in chars.items():
        again = judge(char, reading, unit)
        if again.judged_value == recorded_judged and again.verdict.value == recorded_verdict:
            consistent.append(rule)
    note = None
    if not consistent:
        note = "the recorded judgement does not follow from the recorded reading with either rounding rule"
    tried = consistent or list(Rounding)
    outcomes: dict[Rounding, Judgement] = {r: judge(chars[r], corrected, unit) for r in tried}
    verdicts = {j.verdict.value for j in outcomes.values()}
    judged = {j.judged_value for j in outcomes.values()}
    limits = {j.limit for j in outcomes.values()}
    first = outcomes[tried[0]]
    if len(verdicts) > 1:
        note = (
            note + "; " if note else ""
        ) + "the verdict depends on the rounding rule, which the record does not name"
    return Rejudgement(
        corrected_value=first.value,
        judged_value=first.judged_value if len(judged) == 1 else None,
        verdict=first.verdict.value if len(verdicts) == 1 else AMBIGUOUS,
        limit=first.limit if len(limits) == 1 else None,
        roundings=tuple(r.value for r in tried),
        note=note,
    )


# --- reading the store ---------------------------------------------------------------------------


def _utc(text: str, what: str) -> str:
    """``2026-11-21`` or any ISO 8601 time (naive means UTC) as the records' timestamp shape."""
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ImpactError(f"{what} {text!r} is not a date or an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _evidence(store: Store, flt: TraceFilter, keys: KeyRing | None, report: ImpactReport) -> list[Record]:
    """The records that match, from their blocks, with what is not evidence noted in the report."""
    found = trace_evidence(store, flt, keys)
    for p in found.problems():
        if p not in report.unreadable:  # cannot be assessed, and must not vanish from an assessment either
            report.unreadable.append(p)
    return found.records


def impact(  # noqa: C901 - one pass classifying each value (invalidated, superseded, on a part report): the rules an auditor reads together
    store: Store,
    gauge: str,
    since: str,
    offset: Decimal | None = None,
    until: str | None = None,
    *,
    offset_unit: str | None = None,
    now: dt.datetime | None = None,
    keys: KeyRing | None = None,
) -> ImpactReport:
    """Every value ``gauge`` measured in ``[since, until)``, by part, and what ``offset`` changes.

    ``keys`` (the key directory) lets every record's block be verified; a record that is not
    verified evidence, or a point no block holds, is named in :attr:`ImpactReport.unreadable`.
    """
    since_c = _utc(since, "since")
    until_c = None if until is None else _utc(until, "until")
    if offset is not None:
        if not offset.is_finite():
            raise ImpactError(f"offset {offset} is not a finite number")
        if offset_unit is not None and not units.known(offset_unit):
            raise ImpactError(f"unknown offset unit {offset_unit!r}")
    generated = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = ImpactReport(gauge, since_c, until_c, offset, offset_unit, generated)

    # recorded_at (the point's time) is never before measured_at, so a time bound on the
    # point finds every value measured since; the exact window is applied to measured_at.
    # The trace brings the records that point at these values: re-measures (by any gauge),
    # invalidations, nonconformances and dispositions, found by the ids they point at.
    traced = _evidence(store, TraceFilter(gauge=gauge, kind="measurement", start=since_c), keys, report)
    found = [
        r
        for r in traced
        if r.get("kind") == RecordKind.MEASUREMENT
        and r.get("gauge") == gauge
        and str(r.get("measured_at")) >= since_c
        and (until_c is None or str(r.get("measured_at")) < until_c)
    ]
    if not found:
        return report
    remeasures = [r for r in traced if r.get("kind") == RecordKind.MEASUREMENT and r.get("supersedes")]
    superseded_by = {str(r["supersedes"]): str(r["id"]) for r in remeasures}
    invalidations = {
        str(r["target"]): r for r in traced if r.get("kind") == RecordKind.INVALIDATION and r.get("target")
    }
    part_records: list[Record] = []
    for part_number in sorted({str(r.get("part_number")) for r in found}):
        flt = TraceFilter(part_number=part_number, kind="part", start=since_c)
        part_records.extend(r for r in _evidence(store, flt, keys, report) if r.get("kind") == RecordKind.PART)

    latest = _latest_part_records(part_records)
    # ids the latest verdict of each part rests on (an earlier verdict's ids no longer count)
    rests_on = {str(rid) for p in part_records if p is latest[str(p["id"])] for rid in p.get("records") or ()}
    verdict_of: dict[str, Record] = {}  # measurement id -> the latest part record of its part
    for p in part_records:
        for rid in p.get("records") or ():
            verdict_of.setdefault(str(rid), latest[str(p["id"])])
    by_serial: dict[tuple[str, str], set[str]] = {}
    for p in latest.values():
        if p.get("serial"):
            by_serial.setdefault((str(p.get("part_number")), str(p["serial"])), set()).add(str(p["id"]))

    groups: dict[tuple[object, ...], ImpactedPart] = {}
    for r in sorted(found, key=lambda r: (str(r.get("measured_at")), str(r.get("gateway")), int(r.get("seq", 0)))):
        rid = str(r["id"])
        value = ImpactedValue(record=r)
        if rid in invalidations:
            inv = invalidations[rid]
            value.status, value.invalidated_by, value.invalidation_reason = (
                "invalidated",
                str(inv["id"]),
                inv.get("reason"),
            )
        if rid in superseded_by:
            value.superseded_by = superseded_by[rid]
            if value.status == "current":
                value.status = "superseded"
        part = _part_of(rid, r, verdict_of, superseded_by, by_serial, latest)
        # a void value changes nothing even where a verdict still names it (not yet re-measured)
        value.counts = value.status != "invalidated" and (
            rid in rests_on if part is not None else value.status == "current"
        )
        if offset is not None:
            _check_offset_unit(offset_unit, r)
            try:
                value.rejudged = rejudge(r, offset, offset_unit)
            except (SpecificationError, KeyError, ValueError, InvalidOperation) as exc:
                value.problem = f"cannot be re-judged: {exc}"
        key: tuple[object, ...] = (
            ("part", str(part["id"]))
            if part is not None
            else ("context", r.get("part_number"), r.get("serial"), r.get("lot"))
        )
        if key not in groups:
            groups[key] = ImpactedPart(
                part_number=r.get("part_number"),
                serial=r.get("serial"),
                lot=r.get("lot"),
                work_order=r.get("work_order"),
                part_record=part,
            )
        groups[key].values.append(value)
    report.parts = list(groups.values())
    if offset is not None:
        for impacted in report.parts:
            impacted.new_verdict = _new_verdict(impacted)
    return report


def _check_offset_unit(offset_unit: str | None, record: Record) -> None:
    # a wrong unit is the question's fault, not the record's: stop rather than note it per value
    unit = str(record.get("reading_unit"))
    if offset_unit is not None and units.known(unit) and units.dimension(unit) != units.dimension(offset_unit):
        raise ImpactError(
            f"offset unit {offset_unit} ({units.dimension(offset_unit)}) does not apply to record "
            f"{record.get('id')}, read in {unit} ({units.dimension(unit)})"
        )


def _latest_part_records(part_records: list[Record]) -> dict[str, Record]:
    """Each part record's id -> the latest record of its ``supersedes`` chain."""
    by_id = {str(p["id"]): p for p in part_records}
    successor = {str(p["supersedes"]): str(p["id"]) for p in part_records if p.get("supersedes")}
    out: dict[str, Record] = {}
    for pid in by_id:
        seen = {pid}
        cur = pid
        while cur in successor and successor[cur] in by_id and successor[cur] not in seen:
            cur = successor[cur]
            seen.add(cur)
        out[pid] = by_id[cur]
    return out


def _part_of(
    rid: str,
    record: Record,
    verdict_of: dict[str, Record],
    superseded_by: dict[str, str],
    by_serial: dict[tuple[str, str], set[str]],
    latest: dict[str, Record],
) -> Record | None:
    """The latest part record of the part a measurement belongs to, if one was written."""
    cur, seen = rid, set()
    # a value re-measured before its part was complete is in no part record; its
    # re-measure (or the re-measure's re-measure) is
    while cur not in seen:
        if cur in verdict_of:
            return verdict_of[cur]
        seen.add(cur)
        if cur not in superseded_by:
            break
        cur = superseded_by[cur]
    if record.get("serial"):
        candidates = by_serial.get((str(record.get("part_number")), str(record["serial"])), set())
        if len(candidates) == 1:
            return latest[next(iter(candidates))]
    return None


def _new_verdict(part: ImpactedPart) -> str | None:
    p = part.part_record
    if p is None:
        return None
    if p.get("verdict") == "incomplete":
        return "incomplete"
    failed = {str(c) for c in p.get("failed") or ()}
    unsure: set[str] = set()
    for v in part.values:
        if not v.counts or v.rejudged is None:
            continue
        char = str(v.record.get("characteristic"))
        if v.rejudged.verdict == Verdict.FAIL:
            failed.add(char)
        elif v.rejudged.verdict == Verdict.PASS:
            failed.discard(char)
        else:
            failed.discard(char)
            unsure.add(char)
    if failed:
        return "reject"
    return "accept or reject" if unsure else "accept"


# --- presenting ----------------------------------------------------------------------------------


def _s(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _signed(d: Decimal) -> str:
    return format(d, "+f")


def _headline(report: ImpactReport) -> list[str]:
    lines = [
        f"Impact assessment for gauge {report.gauge} (ISO 9001 7.1.5.2)",
        f"Values measured from {report.since} to {report.until or 'now'} (UTC, by measured_at); "
        f"generated {report.generated_at}",
    ]
    if report.offset is None:
        lines.append("No offset given: verdicts are listed as recorded, nothing is re-judged.")
    else:
        unit = report.offset_unit or "the gauge's reading unit"
        lines.append(
            f"Offset {_signed(report.offset)} ({unit}): the gauge read this much too high; "
            "corrected = reading - offset."
        )
        lines.append(
            "Rounding: not recorded in the records; each value is re-judged with the rule(s) "
            "(half_even, half_up) that reproduce its recorded judged value; where they disagree the "
            f"verdict is '{AMBIGUOUS}'."
        )
    if report.unreadable:
        lines.append(
            f"WARNING: {len(report.unreadable)} stored item(s) are not verified evidence and could not be "
            "assessed (run collector verify): " + "; ".join(report.unreadable)
        )
    n_values, n_parts = len(report.values), len(report.parts)
    lines.append(f"{n_values} value(s) on {n_parts} part(s).")
    if report.offset is not None:
        changes: dict[str, int] = {}
        for v in report.changed_values:
            changes[str(v.change)] = changes.get(str(v.change), 0) + 1
        shown = ", ".join(f"{n} {c}" for c, n in sorted(changes.items())) or "none"
        lines.append(f"Verdicts that change: {shown}.")
        moved = [p for p in report.parts if p.verdict_changes]
        lines.append(
            f"Part verdicts that change: {len(moved)}; suspect product (accepted, would be rejected): "
            f"{len(report.suspect_parts)}."
        )
    return lines


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_impact(report: ImpactReport) -> str:
    """A plain-text report for people: the summary, then one table per part."""
    out = _headline(report)
    rejudging = report.offset is not None
    for p in report.parts:
        out.append("")
        who = ""
        if p.part_record is not None:
            who = f" (released by {_s(p.part_record.get('released_by'))}, {_s(p.part_record.get('recorded_at'))})"
        verdict = f"part verdict: {p.verdict or 'none recorded'}{who}"
        if rejudging and p.new_verdict is not None:
            verdict += f" -> would be {p.new_verdict}" if p.verdict_changes else " -> unchanged"
        flag = "  ** SUSPECT PRODUCT **" if p.suspect else ""
        out.append(
            f"Part {_s(p.part_number)} serial {_s(p.serial)} lot {_s(p.lot)} work order {_s(p.work_order)}: "
            f"{verdict}{flag}"
        )
        head = [
            "measured at (UTC)",
            "station",
            "char.",
            "value",
            "judged",
            "LSL",
            "USL",
            "verdict",
            "cal. due",
            "status",
        ]
        if rejudging:
            head += ["corrected", "judged'", "verdict'", "change"]
        rows = [head]
        notes = []
        for v in p.values:
            r = v.record
            status = v.status + ("" if v.counts else " (not counted)") if v.status == "current" else v.status
            row = [
                _s(r.get("measured_at")),
                _s(r.get("station")),
                _s(r.get("characteristic")),
                f"{_s(r.get('value'))} {_s(r.get('unit'))}",
                _s(r.get("judged_value")),
                _s(r.get("lsl")),
                _s(r.get("usl")),
                _s(r.get("verdict")),
                _s(r.get("gauge_calibration_due")),
                status,
            ]
            if rejudging:
                j = v.rejudged
                row += (
                    [_s(j.corrected_value), _s(j.judged_value), j.verdict, _s(v.change)]
                    if j is not None
                    else ["-", "-", "-", "-"]
                )
            rows.append(row)
            if v.superseded_by:
                notes.append(f"{r.get('id')}: superseded by {v.superseded_by}")
            if v.invalidated_by:
                notes.append(f"{r.get('id')}: invalidated by {v.invalidated_by}: {_s(v.invalidation_reason)}")
            if v.problem:
                notes.append(f"{r.get('id')}: {v.problem}")
            if v.rejudged is not None and v.rejudged.note:
                notes.append(f"{r.get('id')}: {v.rejudged.note}")
        out.extend(_table(rows))
        out.extend(f"  note: {n}" for n in notes)
    if not report.parts:
        out.append("")
        out.append(f"Gauge {report.gauge} measured nothing in this period.")
    return "\n".join(out) + "\n"


def impact_json(report: ImpactReport) -> dict[str, Any]:
    """The report as JSON-ready data (decimals as strings, exact)."""

    def value(v: ImpactedValue) -> dict[str, Any]:
        r = v.record
        j = v.rejudged
        return {
            "id": r.get("id"),
            "gateway": r.get("gateway"),
            "seq": r.get("seq"),
            "verified": r.get("verified"),
            "measured_at": r.get("measured_at"),
            "station": r.get("station"),
            "characteristic": r.get("characteristic"),
            "unit": r.get("unit"),
            "lsl": r.get("lsl"),
            "usl": r.get("usl"),
            "decimals": r.get("decimals"),
            "reading_value": r.get("reading_value"),
            "reading_unit": r.get("reading_unit"),
            "value": r.get("value"),
            "judged_value": r.get("judged_value"),
            "verdict": r.get("verdict"),
            "gauge_calibration_due": r.get("gauge_calibration_due"),
            "calibration_status": r.get("calibration_status"),
            "operator": r.get("operator"),
            "status": v.status,
            "superseded_by": v.superseded_by,
            "invalidated_by": v.invalidated_by,
            "invalidation_reason": v.invalidation_reason,
            "counts_for_part": v.counts,
            "rejudged": None
            if j is None
            else {
                "corrected_value": format(j.corrected_value, "f"),
                "judged_value": None if j.judged_value is None else format(j.judged_value, "f"),
                "verdict": j.verdict,
                "limit": j.limit,
                "roundings": list(j.roundings),
                "note": j.note,
            },
            "change": v.change,
            "problem": v.problem,
        }

    return {
        "gauge": report.gauge,
        "since": report.since,
        "until": report.until,
        "offset": None if report.offset is None else format(report.offset, "f"),
        "offset_unit": report.offset_unit,
        "generated_at": report.generated_at,
        "rounding": "not recorded: re-judged with the rules that reproduce each recorded judged value",
        "unreadable": list(report.unreadable),
        "summary": {
            "values": len(report.values),
            "parts": len(report.parts),
            "changed_values": len(report.changed_values),
            "changed_parts": sum(1 for p in report.parts if p.verdict_changes),
            "suspect_parts": len(report.suspect_parts),
        },
        "parts": [
            {
                "part_number": p.part_number,
                "serial": p.serial,
                "lot": p.lot,
                "work_order": p.work_order,
                "part_record": None if p.part_record is None else p.part_record.get("id"),
                "verdict": p.verdict,
                "released_by": None if p.part_record is None else p.part_record.get("released_by"),
                "new_verdict": p.new_verdict,
                "verdict_changes": p.verdict_changes,
                "suspect": p.suspect,
                "values": [value(v) for v in p.values],
            }
            for p in report.parts
        ],
    }
