"""A printable inspection report for one part: the evidence of ISO 9001 8.6 on one page.

:func:`part_report_html` turns the records of one serial (what ``trace()`` returns for
it, all kinds) into one self-contained HTML page: inline CSS, no scripts, no external
fonts or images, so it opens anywhere, can be archived as a file, and prints (or "prints
to PDF") as a clean A4 landscape document.

What it shows: the part's identity and context, and whether the gateway's clock was
synchronised; every value of every characteristic with its specification, verdict, gauge
and calibration status, operator and time; values that were superseded or invalidated
struck through, with the reason and a link to the value that replaced them (nothing is
hidden: the original stays visible); the process capability of each characteristic (when
the caller gives it: :func:`collector.evidence.signoff.process_capability`); the part
verdict and who released it; nonconformances and their dispositions, open only while
really open; the signatures of the release, dispositions, re-measures and invalidations
with their meaning; refused readings; per record, whether the block that holds it
verified; and a block for the reviewer's own signature. Printed, each page says "page x
of y" (CSS ``@page`` margin boxes and the ``page``/``pages`` counters).

The records come from a trace (:func:`collector.evidence.trace.trace`), which reads them
from their blocks and checks each block: canonical text matching its hash, its stored point,
the register, and its gateway's signature (with the key directory). The page shows that
check per record (:func:`check_chain` sums it up). A part's blocks are rarely contiguous in
their gateway's chain (other parts are measured in between), so completeness is not judged
from them; a :class:`collector.evidence.verify.Report` of the gateways' whole chains, when
given, covers that and is shown beside it.

Every text taken from a record is HTML-escaped: serials, names and reasons come from
scanners and operators.

Why one module of this size: it is one page, and its sections share the escaping, time and
link helpers; most of its lines are the HTML of the sections.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.chain.keys import KeyRing
from collector.errors import CollectorError
from collector.evidence import signoff
from collector.evidence.trace import related
from collector.evidence.trace import with_related as trace_with_related
from collector.evidence.verify import Report
from collector.inspection.charts import characteristic_figures
from collector.store.base import Store
from collector.web_charts import control_chart_svg

if TYPE_CHECKING:
    from collector.inspection.record_types import Record

__all__ = [
    "ChainCheck",
    "ReportError",
    "check_chain",
    "part_report_html",
    "related_records",
    "with_related",
]


class ReportError(CollectorError):
    """The records cannot make one part's report (none, or several serials)."""


# --- integrity of the shown records ------------------------------------------------------------


@dataclass
class ChainCheck:
    """What the trace's check of each record's block says about the records shown."""

    records: int = 0
    verified: int = 0
    blocks: int = 0
    unchecked: int = 0  # records whose block was not checked against a key directory
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.unchecked == 0 and self.verified == self.records

    def summary(self) -> str:
        if self.problems:
            return f"NOT VERIFIED: {len(self.problems)} problem(s) in {self.records} records: " + "; ".join(
                self.problems
            )
        if self.unchecked:
            return (
                f"signatures not checked: {self.unchecked} of {self.records} records come from blocks that were not "
                "checked against the key directory (none given)"
            )
        return (
            f"verified: {self.records} records in {self.blocks} block(s), hashes intact, each block canonical "
            "and signed by its gateway's registered key"
        )


def _where(r: Mapping[str, Any]) -> str:
    return f"record {r.get('id')} (gateway {r.get('gateway')} seq {r.get('seq')})"


def check_chain(records: Sequence[Mapping[str, Any]]) -> ChainCheck:
    """Sum up the verification the trace marked on each record (``verified``, ``verification``).

    A record without the mark was not read from a checked block: it counts as a problem.
    """
    check = ChainCheck(records=len(records))
    blocks: set[str] = set()
    for r in records:
        blocks.add(str(r.get("block_hash")))
        text = r.get("verification")
        if r.get("verified") is True:
            check.verified += 1
        elif not isinstance(text, str):
            check.problems.append(f"{_where(r)}: not read from a checked block")
        elif text.startswith("NOT VERIFIED"):
            check.problems.append(f"{_where(r)}: {text}")
        else:
            check.unchecked += 1
    check.blocks = len(blocks)
    return check


def related_records(store: Store, records: Sequence[Mapping[str, Any]], keys: KeyRing | None = None) -> list[Record]:
    """Invalidations, dispositions, re-measures that point at ``records`` but lack their serial.

    A value invalidated after its part left the station's memory gets an invalidation
    record without part context, and so does a late disposition: a trace by serial finds
    them by the ids they point at (``collector.evidence.trace.related``).
    """
    return related(store, [dict(r) for r in records], keys)


def with_related(store: Store, records: Sequence[Mapping[str, Any]], keys: KeyRing | None = None) -> list[Record]:
    """``records`` and :func:`related_records`, in trace order (time, gateway, seq)."""
    return trace_with_related(store, [dict(r) for r in records], keys)


# --- the page ------------------------------------------------------------------------------------

_CSS = """
@page {
  size: A4 landscape;
  margin: 10mm 10mm 14mm;
  @bottom-left { content: "Inspection report SERIAL"; font: 8pt Arial, sans-serif; color: #444; }
  @bottom-right { content: "Page " counter(page) " of " counter(pages); font: 8pt Arial, sans-serif; color: #444; }
}
* { box-sizing: border-box; }
body { font: 9.5pt/1.35 "Helvetica Neue", Arial, "Liberation Sans", sans-serif; color: #111; margin: 16px; }
h1 { font-size: 15pt; margin: 0 0 4px; }
h2 { font-size: 11pt; margin: 14px 0 4px; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top; }
th { background: #eee; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts th { width: 8em; }
table.facts td { width: 25%; }
.muted { color: #666; font-size: 8pt; }
.pass, .accept { color: #0a6b1f; font-weight: 700; }
.fail, .reject, .problem { color: #b00020; font-weight: 700; }
.incomplete, .open { color: #8a5a00; font-weight: 700; }
.badge { display: inline-block; border: 2px solid currentColor; padding: 1px 8px; font-size: 12pt; }
tr.void td { color: #666; }
tr.void td.value del { color: #444; }
tr.note td { border-top: none; font-size: 8.5pt; color: #333; padding-left: 2em; }
.verification { border: 1px solid #999; padding: 4px 6px; margin-top: 6px; }
.verification.ok { border-color: #0a6b1f; }
.verification.bad { border-color: #b00020; }
pre { white-space: pre-wrap; margin: 4px 0; font-size: 8.5pt; }
footer { margin-top: 12px; }
.signoff { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; margin-top: 8px; }
.signoff div { border-bottom: 1px solid #111; height: 3.2em; padding-top: 2px; }
.clock-bad { color: #b00020; font-weight: 700; }
figure.chart { margin: 8px 0; max-width: 760px; break-inside: avoid; page-break-inside: avoid; }
@media print {
  body { margin: 0; font-size: 8.5pt; }
  h1 { font-size: 13pt; }
  h2 { margin-top: 8px; }
  a { color: inherit; text-decoration: none; }
  thead { display: table-header-group; }
  tr, .verification { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _e(value: object) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _css_text(text: str) -> str:
    """``text`` inside a CSS string: every character but letters and digits as a CSS escape
    (a serial comes from a scanner: no quote or brace may end the string or the rule)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\{ord(c):06x}" for c in text)


def _time(value: object) -> str:
    """``2026-11-21T10:15:30.123456Z`` as ``2026-11-21 10:15:30`` (the page says UTC)."""
    text = "" if value is None else str(value)
    if len(text) >= 19 and text[10] == "T":
        return f"{text[:10]} {text[11:19]}"
    return text


def _anchor(record_id: object) -> str:
    return "r-" + str(record_id)


def _link(record_id: str, text: object, shown: set[str]) -> str:
    """A link to a record's row when it is on the page (a dead link helps nobody on paper)."""
    if record_id in shown:
        return f'<a href="#{_e(_anchor(record_id))}">{_e(text)}</a>'
    return _e(text)


def _joined(records: Iterable[Mapping[str, Any]], key: str) -> str:
    values = list(dict.fromkeys(str(r[key]) for r in records if r.get(key) not in (None, "")))
    return ", ".join(values)


def _verdict_cell(verdict: object) -> str:
    v = str(verdict or "")
    return f'<td class="{_e(v)}">{_e(v.upper()) or "-"}</td>'


def part_report_html(
    records: Sequence[Mapping[str, Any]],
    *,
    verification: Report | str | None = None,
    generated_at: dt.datetime | None = None,
    process: signoff.Process | None = None,
) -> str:
    """The report page for the records of one serial (``trace()`` output, all kinds).

    ``verification`` is a :class:`collector.evidence.verify.Report` (or its formatted text) from a
    store verification covering these records; the page always adds its own check of the
    records shown. ``process``: capability and values per characteristic and the scope they
    cover (:func:`collector.evidence.signoff.process_capability`); without, the page says none
    were computed. Raises :class:`ReportError` for no records or several serials.
    """
    if not records:
        raise ReportError("no records to report")
    serials = sorted({str(r["serial"]) for r in records if r.get("serial") not in (None, "")})
    if len(serials) > 1:
        raise ReportError(f"a part report is for one serial; the records have {', '.join(serials)}")
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_kind.setdefault(str(r.get("kind")), []).append(r)
    measurements = by_kind.get("measurement", [])
    parts = by_kind.get("part", [])
    context = [r for r in records if r.get("kind") in ("measurement", "part")] or list(records)
    now = (generated_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    serial = serials[0] if serials else ""
    latest_part = _latest(parts)

    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Inspection report {_e(_joined(context, 'part_number'))} {_e(serial)}</title>",
        f"<style>{_CSS.replace('SERIAL', _css_text(serial))}</style>",
        "</head>",
        "<body>",
        "<header>",
        "<h1>Inspection report</h1>",
    ]
    if latest_part is not None:
        verdict = str(latest_part.get("verdict"))
        out.append(f'<p>Part verdict: <span class="badge {_e(verdict)}">{_e(verdict.upper())}</span></p>')
    else:
        out.append('<p>Part verdict: <span class="badge incomplete">NONE RECORDED</span></p>')
    facts = [
        ("Site", _joined(context, "site")),
        ("Line", _joined(context, "line")),
        ("Station", _joined(context, "station")),
        ("Part number", _joined(context, "part_number")),
        ("Plan revision", _joined(context, "plan_revision")),
        ("Serial", serial),
        ("Lot", _joined(context, "lot")),
        ("Work order", _joined(context, "work_order")),
        ("Reason for test", _joined(context, "reason_for_test")),
    ]
    clock = signoff.clock_state(records)
    out.append('<table class="facts">')
    for i in range(0, len(facts), 3):  # three per row: the header stays short on a landscape page
        out.append("<tr>" + "".join(f"<th>{_e(k)}</th><td>{_e(v) or '-'}</td>" for k, v in facts[i : i + 3]) + "</tr>")
    clock_css = "pass" if clock.synced else "clock-bad"
    out.append(f'<tr><th>Gateway clock</th><td colspan="5" class="{clock_css}" id="clock">{_e(clock.text)}</td></tr>')
    out.append("</table>")
    out.append("</header>")

    out.extend(_values_section(measurements, by_kind.get("invalidation", [])))
    order = list(dict.fromkeys(str(m.get("characteristic")) for m in measurements))
    out.extend(_capability_section(order, process, measurements))
    out.extend(_part_section(parts, latest_part))
    shown = {str(r.get("id")) for r in records}
    out.extend(_nonconformance_section(by_kind.get("nonconformance", []), records, shown))
    out.extend(_signature_section(records))
    out.extend(_refusal_section(by_kind.get("refusal", [])))
    out.extend(_audit_section(by_kind.get("audit", [])))
    out.extend(_verification_section(records, verification))
    out.extend(_reviewer_block())
    out.append(
        f'<footer class="muted">Inspection report {_e(serial)}. All times are UTC. Generated '
        f"{_e(now.strftime('%Y-%m-%d %H:%M:%S'))} UTC from "
        f"{len(records)} record(s). Superseded and invalidated values stay on record and are shown struck "
        "through.</footer>"
    )
    out.extend(["</body>", "</html>"])
    return "\n".join(out) + "\n"


def _latest(parts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    superseded = {str(p.get("supersedes")) for p in parts if p.get("supersedes")}
    current = [p for p in parts if str(p.get("id")) not in superseded]
    return current[-1] if current else (parts[-1] if parts else None)


def _values_section(measurements: Sequence[Mapping[str, Any]], invalidations: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["<section>", "<h2>Characteristics</h2>"]
    if not measurements:
        out.extend(["<p>No values recorded.</p>", "</section>"])
        return out
    ids = {str(m.get("id")) for m in measurements}
    newer = {str(m["supersedes"]): m for m in measurements if m.get("supersedes")}
    voided = {str(i.get("target")): i for i in invalidations if i.get("target")}
    order = list(dict.fromkeys(str(m.get("characteristic")) for m in measurements))
    out.append("<table>")
    out.append(
        "<thead><tr><th>Characteristic</th><th>Nominal</th><th>LSL</th><th>USL</th><th>Unit</th>"
        "<th>Value</th><th>Judged</th><th>Verdict</th><th>Gauge</th><th>Calibration</th><th>Operator</th>"
        "<th>Measured (UTC)</th><th>Evidence</th></tr></thead>"
    )
    out.append("<tbody>")
    for cid in order:
        for m in (m for m in measurements if str(m.get("characteristic")) == cid):
            mid = str(m.get("id"))
            replaced = newer.get(mid)
            invalidation = voided.get(mid)
            void = replaced is not None or invalidation is not None
            value, judged = _e(m.get("value")), _e(m.get("judged_value"))
            if void:
                value, judged = f"<del>{value}</del>", f"<del>{judged}</del>"
            calibration = _e(m.get("gauge_calibration_due")) or "-"
            if m.get("calibration_status"):
                status = str(m["calibration_status"])
                css = "fail" if status == "overdue" else ""
                calibration += f' <span class="{css}">({_e(status.replace("_", " "))})</span>'
            row_class = ' class="void"' if void else ""
            out.append(
                f'<tr id="{_e(_anchor(mid))}"{row_class}>'
                f'<td>{_e(cid)} <span class="muted">{_e(m.get("characteristic_name"))}</span></td>'
                f'<td class="num">{_e(m.get("nominal")) or "-"}</td>'
                f'<td class="num">{_e(m.get("lsl")) or "-"}</td>'
                f'<td class="num">{_e(m.get("usl")) or "-"}</td>'
                f"<td>{_e(m.get('unit'))}</td>"
                f'<td class="num value">{value}</td>'
                f'<td class="num value">{judged}</td>'
                + _verdict_cell(m.get("verdict"))
                + f"<td>{_e(m.get('gauge')) or '-'}</td>"
                f"<td>{calibration}</td>"
                f"<td>{_e(m.get('operator')) or '-'}</td>"
                f'<td>{_e(_time(m.get("measured_at")))}<br><span class="muted">'
                f"{_e(m.get('gateway'))} #{_e(m.get('seq'))}</span></td>" + _evidence_cell(m) + "</tr>"
            )
            notes = []
            if m.get("supersedes"):
                earlier = str(m["supersedes"])
                notes.append(
                    f"Re-measure of {_link(earlier, earlier, ids)}: {_e(m.get('reason')) or 'no reason recorded'}"
                )
            if invalidation is not None:
                notes.append(
                    f"Invalidated by {_e(invalidation.get('by'))} at {_e(_time(invalidation.get('recorded_at')))} "
                    f"UTC: {_e(invalidation.get('reason'))}"
                )
            if replaced is not None:
                rid = str(replaced.get("id"))
                notes.append(
                    f'Superseded by <a href="#{_e(_anchor(rid))}">the value of '
                    f"{_e(_time(replaced.get('measured_at')))}</a>: "
                    + (_e(replaced.get("reason")) or "no reason recorded")
                )
            elif invalidation is not None:
                notes.append("Not re-measured: this characteristic has no valid value from this record.")
            if notes:
                out.append(f'<tr class="note"><td colspan="13">{"<br>".join(notes)}</td></tr>')
    out.extend(["</tbody>", "</table>", "</section>"])
    return out


def _part_section(parts: Sequence[Mapping[str, Any]], latest: Mapping[str, Any] | None) -> list[str]:
    out = ["<section>", "<h2>Part verdict and release</h2>"]
    if latest is None:
        out.extend(["<p>No part verdict recorded: the inspection is not complete.</p>", "</section>"])
        return out
    verdict = str(latest.get("verdict"))
    released = latest.get("released_by")
    text = (
        f'<p><span class="{_e(verdict)}">{_e(verdict.upper())}</span>'
        f" at {_e(_time(latest.get('recorded_at')))} UTC, "
        + (f"released by <strong>{_e(released)}</strong>" if released else "not released")
        + "."
    )
    if latest.get("failed"):
        text += f" Failed: {_e(', '.join(str(c) for c in latest['failed']))}."
    if latest.get("missing"):
        text += f" Not measured: {_e(', '.join(str(c) for c in latest['missing']))}."
    if latest.get("reason"):
        text += f" Reason: {_e(latest['reason'])}."
    out.append(text + f' <span class="muted">record {_e(latest.get("id"))}</span></p>')
    earlier = [p for p in parts if p is not latest]
    if earlier:
        out.append("<p>Earlier verdicts, superseded after a re-measure:</p><ul>")
        for p in earlier:
            out.append(
                f"<li><del>{_e(str(p.get('verdict')).upper())}</del> at {_e(_time(p.get('recorded_at')))} UTC"
                f" (released by {_e(p.get('released_by')) or '-'}) "
                f'<span class="muted">record {_e(p.get("id"))}</span></li>'
            )
        out.append("</ul>")
    out.append("</section>")
    return out


def _nonconformance_section(
    ncs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], shown: set[str]
) -> list[str]:
    out = ["<section>", "<h2>Nonconformances</h2>"]
    if not ncs:
        out.extend(["<p>None.</p>", "</section>"])
        return out
    states = {str(nc.get("id")): signoff.nonconformance_state(nc, records) for nc in ncs}
    still_open = sum(1 for s in states.values() if s.open)
    out.append(f'<p id="open-items">Open items: <strong>{still_open}</strong> of {len(ncs)}.</p>')
    decided: dict[str, list[Mapping[str, Any]]] = {}
    for d in (r for r in records if r.get("kind") == "disposition"):
        decided.setdefault(str(d.get("nonconformance_id")), []).append(d)
    out.append("<table>")
    out.append(
        "<thead><tr><th>Opened (UTC)</th><th>Characteristic</th><th>Judged value</th><th>Limits</th>"
        "<th>Limit violated</th><th>Decision</th><th>Concession</th><th>Decided by</th><th>Comment</th>"
        "<th>Decided (UTC)</th></tr></thead><tbody>"
    )
    for nc in ncs:
        limits = f"{_e(nc.get('lsl')) or '-'} .. {_e(nc.get('usl')) or '-'} {_e(nc.get('unit'))}"
        measurement = str(nc.get("measurement_id"))
        head = (
            f"<td>{_e(_time(nc.get('recorded_at')))}</td>"
            f"<td>{_link(measurement, nc.get('characteristic'), shown)}</td>"
            f'<td class="num">{_e(nc.get("judged_value"))}</td><td>{limits}</td><td>{_e(nc.get("limit")) or "-"}</td>'
        )
        ds = decided.get(str(nc.get("id")), [])
        if not ds:
            state = states[str(nc.get("id"))]
            css = "open" if state.open else "muted"
            out.append(f'<tr class="nc">{head}<td class="{css}" colspan="5">{_e(state.text)}</td></tr>')
        for d in ds:
            out.append(
                f"<tr>{head}<td>{_e(str(d.get('decision')).replace('_', ' '))}</td>"
                f"<td>{_e(d.get('concession')) or '-'}</td><td>{_e(d.get('by'))}</td>"
                f"<td>{_e(d.get('comment')) or '-'}</td><td>{_e(_time(d.get('recorded_at')))}</td></tr>"
            )
    out.extend(["</tbody></table>", "</section>"])
    return out


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _capability_section(
    order: Sequence[str], process: signoff.Process | None, measurements: Sequence[Mapping[str, Any]]
) -> list[str]:
    out = ["<section>", "<h2>Process capability</h2>"]
    if process is None:
        out.extend(["<p>Not computed for this report (no process values were given).</p>", "</section>"])
        return out
    figures, scope = process.capability, process.scope
    out.append(f'<p class="muted">From the {_e(scope)}.</p>')
    out.append('<table id="capability">')
    out.append(
        "<thead><tr><th>Characteristic</th><th>n</th><th>Mean</th><th>&sigma; within</th><th>&sigma; overall</th>"
        "<th>Cp</th><th>Cpk</th><th>Pp</th><th>Ppk</th><th>Note</th></tr></thead><tbody>"
    )
    for cid in order:
        fig = figures.get(cid, "not computed")
        if isinstance(fig, str):
            out.append(f'<tr data-characteristic="{_e(cid)}"><td>{_e(cid)}</td><td colspan="9">{_e(fig)}</td></tr>')
            continue
        note = f"rests on few values (under {signoff.RELIABLE_VALUES})" if fig.n < signoff.RELIABLE_VALUES else ""
        out.append(
            f'<tr data-characteristic="{_e(cid)}"><td>{_e(cid)}</td><td class="num">{fig.n}</td>'
            f'<td class="num">{fig.mean:.6g}</td><td class="num">{fig.sigma_within:.4g}</td>'
            f'<td class="num">{fig.sigma_overall:.4g}</td>'
            + "".join(f'<td class="num">{_figure(v)}</td>' for v in (fig.cp, fig.cpk, fig.pp, fig.ppk))
            + f"<td>{_e(note)}</td></tr>"
        )
    out.append("</tbody></table>")
    out.extend(_charts(order, process, measurements))
    out.append("</section>")
    return out


def _charts(order: Sequence[str], process: signoff.Process, measurements: Sequence[Mapping[str, Any]]) -> list[str]:
    """The control chart of each characteristic over the window (the dashboard's drawing)."""
    out = []
    for cid in order:
        values = process.values.get(cid) or []
        if len(values) < 2:
            continue
        spec = next(m for m in measurements if str(m.get("characteristic")) == cid)
        figures = characteristic_figures(
            values, lsl=_float(spec.get("lsl")), usl=_float(spec.get("usl")), target=_float(spec.get("nominal"))
        )
        if figures.chart is not None:
            svg = control_chart_svg(figures.chart, title=f"{cid} {spec.get('characteristic_name') or ''}".strip())
            out.append(f'<figure class="chart" data-characteristic="{_e(cid)}">{svg}</figure>')
    return out


def _float(value: object) -> float | None:
    return None if value in (None, "") else float(str(value))


def _signature_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    signed = signoff.signatures(records)
    out = ["<section>", "<h2>Signatures</h2>"]
    if not signed:
        out.extend(["<p>No signed acts on this part's records.</p>", "</section>"])
        return out
    out.append('<table id="signatures">')
    out.append(
        "<thead><tr><th>Act</th><th>What</th><th>Signed by</th><th>Name</th><th>Meaning</th><th>Method</th>"
        "<th>Signed (UTC)</th><th>Record</th></tr></thead><tbody>"
    )
    for s in signed:
        who = _e(s.signed_by) if s.signed else '<span class="open">NOT SIGNED</span>'
        out.append(
            f'<tr data-act="{_e(s.act)}"><td>{_e(s.act)}</td><td>{_e(s.detail)}</td><td>{who}</td>'
            f"<td>{_e(s.signer_name) or '-'}</td><td>{_e(s.meaning) or '-'}</td><td>{_e(s.method) or '-'}</td>"
            f'<td>{_e(_time(s.at))}</td><td class="muted">{_e(s.record_id)}</td></tr>'
        )
    out.extend(["</tbody></table>", "</section>"])
    return out


def _reviewer_block() -> list[str]:
    """Room for the reviewer's own signature on paper (the records' signatures are above)."""
    return [
        '<section class="review">',
        "<h2>Review</h2>",
        '<div class="signoff"><div>Reviewed by (name)</div><div>Date</div><div>Signature</div></div>',
        "</section>",
    ]


def _refusal_section(refusals: Sequence[Mapping[str, Any]]) -> list[str]:
    if not refusals:
        return []
    out = ["<section>", "<h2>Readings refused</h2>", "<table>"]
    out.append(
        "<thead><tr><th>Time (UTC)</th><th>Device</th><th>Gauge</th><th>Characteristic</th><th>Reading</th>"
        "<th>Reason</th></tr></thead><tbody>"
    )
    for r in refusals:
        reading = f"{_e(r.get('reading_value')) or '-'} {_e(r.get('reading_unit'))}"
        out.append(
            f"<tr><td>{_e(_time(r.get('measured_at')))}</td><td>{_e(r.get('device'))}</td>"
            f"<td>{_e(r.get('gauge')) or '-'}</td><td>{_e(r.get('characteristic')) or '-'}</td>"
            f'<td class="num">{reading}</td><td>{_e(r.get("reason_code"))}: {_e(r.get("reason"))}</td></tr>'
        )
    out.extend(["</tbody></table>", "</section>"])
    return out


def _audit_section(audits: Sequence[Mapping[str, Any]]) -> list[str]:
    if not audits:
        return []
    out = ["<section>", "<h2>Audit trail</h2>", "<table>"]
    out.append("<thead><tr><th>Time (UTC)</th><th>Event</th><th>By</th><th>Subject</th><th>Detail</th></tr></thead>")
    out.append("<tbody>")
    for a in audits:
        out.append(
            f"<tr><td>{_e(_time(a.get('recorded_at')))}</td><td>{_e(a.get('event'))}</td>"
            f"<td>{_e(a.get('by')) or '-'}</td><td>{_e(a.get('subject')) or '-'}</td>"
            f"<td>{_e(a.get('detail'))}</td></tr>"
        )
    out.extend(["</tbody></table>", "</section>"])
    return out


def _evidence_state(r: Mapping[str, Any]) -> tuple[str, str]:
    """(css class, short text) of a record's verification mark."""
    if r.get("verified") is True:
        return "pass", "verified"
    text = r.get("verification")
    if isinstance(text, str) and not text.startswith("NOT VERIFIED"):
        return "open", "not checked"
    return "problem", "NOT VERIFIED"


def _evidence_cell(r: Mapping[str, Any]) -> str:
    css, text = _evidence_state(r)
    return f'<td class="{css}" title="{_e(r.get("verification"))}">{_e(text)}</td>'


def _verification_section(records: Sequence[Mapping[str, Any]], verification: Report | str | None) -> list[str]:
    check = check_chain(records)
    out = ["<section>", "<h2>Integrity</h2>"]
    css = "ok" if check.ok else "bad"
    out.append(f'<div class="verification {css}" id="verification">')
    if check.ok:
        out.append(f'<p class="pass">{_e(check.summary())}.</p>')
    elif check.problems:
        out.append(f'<p class="problem">NOT VERIFIED: {len(check.problems)} problem(s) in {check.records} records:</p>')
        out.append("<ul>" + "".join(f"<li>{_e(p)}</li>" for p in check.problems) + "</ul>")
    else:
        out.append(f'<p class="open">{_e(check.summary())}.</p>')
    out.append(
        '<p class="muted">Each record was read from the block its gateway sealed: the block\'s text is canonical '
        "JSON matching its SHA-256 hash, agrees with its stored point, and is signed by a key the register holds "
        "for its gateway. The records of one part are not contiguous in their gateway's chain, so gaps are found "
        "only by verifying the whole chain (<code>collector verify</code>).</p>"
    )
    out.append("<table>")
    out.append(
        "<thead><tr><th>Recorded (UTC)</th><th>Record</th><th>Gateway #seq</th><th>Block</th><th>Check</th>"
        "</tr></thead>"
    )
    out.append("<tbody>")
    for r in records:
        css, _ = _evidence_state(r)
        out.append(
            f"<tr><td>{_e(_time(r.get('recorded_at')))}</td><td>{_e(r.get('kind'))} "
            f'<span class="muted">{_e(r.get("id"))}</span></td><td>{_e(r.get("gateway"))} #{_e(r.get("seq"))}</td>'
            f"<td><code>{_e(str(r.get('block_hash') or '-')[:16])}</code></td>"
            f'<td class="{css}">{_e(r.get("verification") or "not read from a checked block")}</td></tr>'
        )
    out.extend(["</tbody>", "</table>"])
    out.append("</div>")
    if isinstance(verification, Report):
        css = "ok" if verification.ok else "bad"
        out.append(f'<div class="verification {css}">')
        if verification.ok:
            out.append('<p class="pass">Store verification: intact.</p>')
        else:
            out.append(f'<p class="problem">Store verification: {len(verification.errors)} problem(s).</p>')
        items = [
            f"gateway {c.gateway}: {c.records} record(s) in {c.blocks} block(s), seq {c.first_seq}..{c.last_seq}"
            for c in verification.chains
        ]
        items.append(
            "signatures checked against the key directory"
            if verification.signatures_checked
            else "signatures not checked (no key directory)"
        )
        items += [str(f) for f in verification.findings]
        if items:
            out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
        out.append("</div>")
    elif verification is not None:
        out.append(f'<div class="verification"><p>Store verification:</p><pre>{_e(verification)}</pre></div>')
    out.append("</section>")
    return out
