"""The printable part report: structure, escaping, struck-through values, verdicts, integrity.

Records come from the DFQ golden case (``tests/golden/dfq/hx4711_remeasure_invalidation``:
real sealed records of three serials) and from records built here with
``collector.inspection.records``. The page is parsed with the standard library's HTML parser, so the
checks look at elements and attributes rather than at substrings of the text.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from collector.chain import blocks
from collector.chain.keys import HmacSigner, KeyRing
from collector.evidence.checked import ANNOTATIONS, CheckedBlock
from collector.evidence.report import ReportError, check_chain, part_report_html, with_related
from collector.evidence.trace import TraceFilter, trace
from collector.evidence.verify import Finding, GatewayChain, Report
from collector.inspection import records as rec
from collector.inspection.models import Characteristic
from collector.inspection.tolerance import judge
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import lines_for_block
from collector.store.queries import BlockRef
from drivers.base import Reading
from tests.store.chains import GatewayChain as Chain

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dfq" / "hx4711_remeasure_invalidation" / "records.json"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
VOID = {"meta", "br", "img", "link", "hr", "input"}


def golden(serial: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return [r for r in records if r.get("serial") == serial]


class Page(HTMLParser):
    """Elements as (tag, attributes, text inside) and a check that every element is closed."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str], list[str]]] = []
        self.elements: list[tuple[str, dict[str, str], str]] = []
        self.data: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed elements: {[t for t, _, _ in self.stack]}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in VOID:
            self.elements.append((tag, a, ""))
        else:
            self.stack.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1][0] if self.stack else None}"
        t, a, text = self.stack.pop()
        joined = "".join(text)
        self.elements.append((t, a, joined))
        if self.stack:
            self.stack[-1][2].append(joined)

    def handle_data(self, data: str) -> None:
        self.data.append(data)
        if self.stack:
            self.stack[-1][2].append(data)

    def find(self, tag: str, **attrs: str) -> list[tuple[dict[str, str], str]]:
        return [(a, t) for tg, a, t in self.elements if tg == tag and all(a.get(k) == v for k, v in attrs.items())]

    def text(self) -> str:
        return " ".join(" ".join(self.data).split())


def row_of(page: Page, record_id: str) -> tuple[dict[str, str], str]:
    rows = page.find("tr", id=f"r-{record_id}")
    assert len(rows) == 1, f"row of {record_id}"
    return rows[0]


def test_structure_is_a_self_contained_printable_page() -> None:
    records = golden("SN-002")
    html = part_report_html(records, generated_at=NOW)
    assert html.startswith("<!DOCTYPE html>\n")
    page = Page(html)
    assert [t for _, t in page.find("h2")] == [
        "Characteristics",
        "Process capability",
        "Part verdict and release",
        "Nonconformances",
        "Signatures",
        "Integrity",
        "Review",
    ]
    assert page.find("meta", charset="utf-8")
    style = page.find("style")[0][1]
    assert "@media print" in style and "size: A4" in style
    assert 'content: "Page " counter(page) " of " counter(pages)' in style  # page x of y, printed
    # nothing to fetch: no scripts, stylesheets, images, fonts or remote addresses
    for tag in ("script", "link", "img", "iframe", "object"):
        assert not page.find(tag), tag
    assert "http:" not in html and "https:" not in html and "url(" not in html and "@import" not in html
    # every in-page link lands on a row of the page
    ids = {a["id"] for _, a, _ in page.elements if "id" in a}
    hrefs = [a["href"] for a, _ in page.find("a")]
    assert hrefs and all(h.startswith("#") and h[1:] in ids for h in hrefs)
    # the header names the part
    facts = page.text()
    for expected in ("plant-1", "line-a", "st-10", "HX-4711", "SN-002", "L-1", "WO-1", "ongoing"):
        assert expected in facts
    # one row per value: four values of three characteristics, each with limits, gauge, operator and time
    values = [r for r in records if r["kind"] == "measurement"]
    assert len(values) == 4
    for r in values:
        _, text = row_of(page, r["id"])
        for field in ("characteristic", "usl", "unit", "value", "judged_value", "gauge", "operator"):
            assert str(r[field]) in text, (r["id"], field)
        assert r["measured_at"][:10] + " " + r["measured_at"][11:19] in text
        assert r["gauge_calibration_due"] in text
    assert "Generated 2026-11-22 12:00:00 UTC" in page.text()


def test_verdicts_are_text_as_well_as_colour() -> None:
    records = golden("SN-002")
    page = Page(part_report_html(records, generated_at=NOW))
    failed = next(r for r in records if r["kind"] == "measurement" and r["verdict"] == "fail")
    passed = next(r for r in records if r["kind"] == "measurement" and r["verdict"] == "pass")
    assert ({"class": "fail"}, "FAIL") in page.find("td", **{"class": "fail"})
    assert "FAIL" in row_of(page, failed["id"])[1] and "PASS" in row_of(page, passed["id"])[1]
    badge = page.find("span", **{"class": "badge accept"})
    assert [t for _, t in badge] == ["ACCEPT"]
    text = page.text()
    assert "ACCEPT at 2026-11-21 08:00:12 UTC, released by op-117" in text
    assert ("del" in {t for t, _, x in page.elements if x == "REJECT"}) and "Earlier verdicts" in text
    # the nonconformance and what was decided on it
    assert "rework" in text and "qe-9" in text and "hone bore to size" in text and "upper" in text


def test_superseded_value_is_struck_through_and_links_to_the_newer_one() -> None:
    records = golden("SN-002")
    first, again = [r for r in records if r["kind"] == "measurement" and r["characteristic"] == "D1"]
    html = part_report_html(records, generated_at=NOW)
    page = Page(html)
    attrs, _ = row_of(page, first["id"])
    assert attrs.get("class") == "void"
    assert ({}, "12.0251") in page.find("del") and ({}, "12.025") in page.find("del")
    assert row_of(page, again["id"])[0].get("class") is None
    assert "12.0150" not in [t for _, t in page.find("del")]
    # the note under the struck row: the newer value and why
    link = [(a, t) for a, t in page.find("a") if a["href"] == f"#r-{again['id']}"]
    assert link and link[0][1] == "the value of 2026-11-21 08:00:10"
    assert f'Superseded by <a href="#r-{again["id"]}">the value of 2026-11-21 08:00:10</a>: after rework' in html
    assert f'Re-measure of <a href="#r-{first["id"]}">' in html


def test_invalidated_value_is_struck_through_with_who_and_why() -> None:
    records = golden("SN-003")
    invalidated = next(r for r in records if r["kind"] == "invalidation")["target"]
    page = Page(part_report_html(records, generated_at=NOW))
    assert row_of(page, invalidated)[0].get("class") == "void"
    assert ({}, "30.04") in page.find("del")
    assert "Invalidated by Zoë Müller at 2026-11-21 08:00:15 UTC: anvil not clean" in page.text()
    assert "patrol" in page.text()


def _part(serial: str, operator: str, reason: str) -> list[dict[str, Any]]:
    char = Characteristic(
        id="D1", name="Bore <b>", nominal=Decimal("12.000"), lower_tol=Decimal("-0.02"), upper_tol=Decimal("0.02"),
        unit="mm", decimals=3,
    )  # fmt: skip
    context: dict[str, str | None] = {"part_number": "HX-4711", "serial": serial, "operator": operator, "lot": None}
    reading = Reading("caliper-1", "01", Decimal("12.031"), "mm", b"01A+0012.031\r", 1_795_000_000_000_000_000)
    m = rec.measurement_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context=context,
        plan_revision="C",
        characteristic=char,
        judgement=judge(char, Decimal("12.031"), "mm"),
        reading=reading,
        gauge="CAL-1",
        gauge_calibration_due="2026-11-01",
        calibration_status="overdue",
        reason=reason,
    )
    nc = rec.nonconformance_record(m)
    p = rec.part_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context=context,
        plan_revision="C",
        verdict="reject",
        records=[m["id"]],
        failed=["D1"],
        missing=[],
        released_by=operator,
        reason=reason,
    )
    return sealed([m, nc, p])


def sealed(drafts: list[dict[str, Any]], gateway: str = "gw-<x>") -> list[dict[str, Any]]:
    """Each draft sealed in a block of its own (HMAC key), materialised as a trace marks them."""
    chain = Chain(gateway, Path("/nonexistent"), site="plant-1", line="line-a", signer=HmacSigner(b"k"))
    out = []
    for n, draft in enumerate(drafts, start=1):
        entry = {k: v for k, v in draft.items() if k not in blocks.MATERIALISED_KEYS}
        block = chain.seal([entry], "st-10", at_us=rec.parse_utc_us(f"2026-11-21T10:00:0{n}.000000Z"))
        out += CheckedBlock(block, BlockRef(gateway, block.recorded_us), signature="verified: test key").records()
    return out


def test_everything_from_a_record_is_escaped() -> None:
    records = _part("<script>alert(1)</script>", "O'Brien & <b>Co</b>", '"><img src=x onerror=alert(2)>')
    html = part_report_html(records, generated_at=NOW)
    page = Page(html)
    assert not page.find("script") and not page.find("img") and not page.find("b")
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "O&#x27;Brien &amp; &lt;b&gt;Co&lt;/b&gt;" in html
    text = page.text()
    assert "<script>alert(1)</script>" in text  # shown as text, exactly
    assert '"><img src=x onerror=alert(2)>' in text and "Bore <b>" in text
    assert "<title>Inspection report HX-4711 &lt;script&gt;" in html
    # an open nonconformance says so; an overdue gauge is flagged
    assert "OPEN: no disposition recorded" in text and "(overdue)" in text
    assert "REJECT" in text


def test_intact_records_say_verified() -> None:
    records = golden("SN-002")
    check = check_chain(records)
    assert check.ok and check.records == 8 and check.verified == 8 and check.blocks == 8
    page = Page(part_report_html(records, generated_at=NOW))
    box = page.find("div", id="verification")
    assert box and "verified: 8 records in 8 block(s), hashes intact, each block canonical" in box[0][1]
    # per record: the values table and the integrity table say it
    m = next(r for r in records if r["kind"] == "measurement")
    assert row_of(page, m["id"])[1].endswith("verified")
    checks = [t for a, t in page.find("td", **{"class": "pass"}) if t.startswith("verified: signed with key hmac")]
    assert len(checks) == 8


def test_a_record_whose_block_did_not_verify_is_named() -> None:
    records = copy.deepcopy(golden("SN-002"))
    forged = next(r for r in records if r["kind"] == "measurement" and r["verdict"] == "fail")
    forged["verified"], forged["verification"] = False, "NOT VERIFIED: FORGED signature: signature does not match key x"
    html = part_report_html(records, generated_at=NOW)
    page = Page(html)
    box = page.find("div", id="verification")[0]
    assert box[0]["class"] == "verification bad"
    assert "NOT VERIFIED: 1 problem(s) in 8 records" in box[1]
    assert f"record {forged['id']} (gateway gw-a seq 5): NOT VERIFIED: FORGED signature" in box[1]
    assert row_of(page, forged["id"])[1].endswith("NOT VERIFIED")
    assert "verified: 8 records" not in page.text()


def test_records_not_read_from_checked_blocks_are_problems_and_unchecked_ones_say_so() -> None:
    records = [{k: v for k, v in r.items() if k not in ("verified", "verification")} for r in golden("SN-002")]
    check = check_chain(records)
    assert not check.ok and len(check.problems) == 8 and "not read from a checked block" in check.problems[0]
    unchecked = [dict(r, verified=False, verification="not checked (no key directory)") for r in records]
    check = check_chain(unchecked)
    assert not check.ok and not check.problems and check.unchecked == 8
    text = Page(part_report_html(unchecked, generated_at=NOW)).text()
    assert "signatures not checked: 8 of 8 records" in text and "not checked" in text


def test_a_store_verification_is_shown_beside_the_page_check() -> None:
    records = golden("SN-001")
    bad = Report(
        chains=[GatewayChain("gw-a", records=18, first_seq=1, last_seq=18)],
        findings=[Finding("gw-a", "GAP", 19, "records 19..20 missing <between>")],
    )
    text = Page(part_report_html(records, verification=bad, generated_at=NOW)).text()
    assert "Store verification: 1 problem(s)." in text and "records 19..20 missing <between>" in text
    assert "gateway gw-a: 18 record(s) in 0 block(s), seq 1..18" in text
    assert "signatures not checked (no key directory)" in text
    good = Report(chains=[GatewayChain("gw-a", records=18, first_seq=1, last_seq=18)])
    assert "Store verification: intact." in Page(part_report_html(records, verification=good)).text()
    page = Page(part_report_html(records, verification="RESULT: intact <ok>"))
    assert [t for _, t in page.find("pre")] == ["RESULT: intact <ok>"]


def test_refuses_what_is_not_one_part() -> None:
    with pytest.raises(ReportError, match="no records"):
        part_report_html([])
    with pytest.raises(ReportError, match="SN-001, SN-002"):
        part_report_html(golden("SN-001") + golden("SN-002"))


def test_related_records_without_the_serial_are_fetched(v1_store: InfluxV1Store, tmp_path: Path) -> None:
    records = _part("SN-9", "op-1", "first try")
    m = records[0]
    # invalidated after the part left the station's memory: the record has no part context
    late = rec.invalidation_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context={},
        target=m["id"],
        characteristic=None,
        by="qe-9",
        reason="wrong fixture",
    )
    chain = Chain("gw-1", tmp_path, site="plant-1", line="line-a")
    for draft in (*records, late):
        entry = {k: v for k, v in draft.items() if k not in (*blocks.MATERIALISED_KEYS, *ANNOTATIONS)}
        v1_store.write_lines(lines_for_block(chain.seal([entry], "st-10")))
    keys = KeyRing.load(tmp_path)

    traced = trace(v1_store, TraceFilter(serial="SN-9"), keys, related=False)
    assert [r["kind"] for r in traced] == ["measurement", "nonconformance", "part"]
    full = with_related(v1_store, traced, keys)
    assert [r["kind"] for r in full] == ["measurement", "nonconformance", "part", "invalidation"]
    assert trace(v1_store, TraceFilter(serial="SN-9"), keys) == full  # a trace includes them itself
    page = Page(part_report_html(full, generated_at=NOW))
    assert row_of(page, m["id"])[0].get("class") == "void"
    assert "Invalidated by qe-9" in page.text() and "wrong fixture" in page.text()
    assert "verified: 4 records in 4 block(s)" in page.text()
