"""Impact assessment of an out-of-calibration gauge, against a real InfluxDB, on a data set
whose answer was worked out by hand.

The data set (one gateway, station st-10, part number HX-4711 rev C): gauge CAL-1 measures
the bore D1 (12.000 +/-0.020 mm, so 11.980..12.020, 3 decimals, half-even); gauge CAL-2
measures the length L1 (30.00 +/-0.05 mm). With CAL-1 found reading 0.010 mm too high, the
corrected D1 value is the reading - 0.010:

======  ======  =============================  ==================  =====================
serial  day     D1 by CAL-1 (verdict)          corrected           part verdict
======  ======  =============================  ==================  =====================
SN0     11-17   12.000 pass                    (before since)      accept
SN1     11-18   12.005 pass                    11.995 pass         accept, unchanged
SN2     11-18   11.985 pass                    11.975 FAIL         accept -> reject: SUSPECT
SN3     11-19   12.025 fail                    12.015 pass         reject -> accept
SN4     11-19   11.988 pass (L1 30.07 fails)   11.978 FAIL         reject, unchanged
SN5     11-20   11.982 pass, re-measured by    11.972 FAIL (does   accept, unchanged
                CAL-2 before the part ended    not count)
SN6     11-20   12.0305 fail (judged 12.030),  12.0205 -> 12.020   accept (second verdict),
                invalidated, re-measured       pass (not counted);  unchanged
                12.012 pass                    12.002 pass
SN7     11-21   11.990 pass                    (after until)       accept
======  ======  =============================  ==================  =====================

So, from 2026-11-18 until 2026-11-21: 7 values on 6 parts; 3 pass->fail, 2 fail->pass;
part verdicts change for SN2 (suspect product) and SN3.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import pytest

from collector.chain import blocks
from collector.chain.keys import KeyRing
from collector.evidence.impact import AMBIGUOUS, ImpactError, ImpactReport, format_impact, impact, impact_json, rejudge
from collector.inspection import records as rec
from collector.inspection.models import Characteristic, Criticality, Rounding
from collector.inspection.tolerance import judge
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import lines_for_block
from drivers.base import Reading
from tests.store.chains import GatewayChain

D1 = Characteristic(
    id="D1",
    name="Bore diameter",
    nominal=Decimal("12.000"),
    lower_tol=Decimal("-0.020"),
    upper_tol=Decimal("0.020"),
    unit="mm",
    decimals=3,
    criticality=Criticality.CRITICAL,
)
L1 = Characteristic(
    id="L1", name="Overall length", nominal=Decimal("30.00"), lower_tol=Decimal("-0.05"), upper_tol=Decimal("0.05"),
    unit="mm", decimals=2,
)  # fmt: skip


class Site(TypedDict):
    site: str
    line: str
    station: str


SITE = Site(site="plant-1", line="line-a", station="st-10")


class Chain:
    """Records of one gateway, each sealed in a block of its own, one second apart from :meth:`at`."""

    def __init__(self, keydir: Path, gateway: str = "gw-1") -> None:
        self.chain = GatewayChain(gateway, keydir, site=SITE["site"], line=SITE["line"])
        self.us = 0
        self.lines: list[str] = []
        self.records: list[dict[str, Any]] = []

    def at(self, when: str) -> None:
        self.us = max(self.us, rec.parse_utc_us(when))

    def add(self, draft: dict[str, Any]) -> dict[str, Any]:
        self.us += 1_000_000
        entry = {k: v for k, v in draft.items() if k not in blocks.MATERIALISED_KEYS}
        block = self.chain.seal([entry], SITE["station"], at_us=self.us)
        self.lines.extend(lines_for_block(block))
        [record] = block.materialise()
        self.records.append(record)
        return record

    def measure(
        self, char: Characteristic, value: str, serial: str, gauge: str, supersedes: str | None = None
    ) -> dict[str, Any]:
        reading = Reading("dev-" + gauge, "01", Decimal(value), "mm", value.encode(), (self.us + 500_000) * 1000)
        return self.add(
            rec.measurement_record(
                **SITE,
                context=ctx(serial),
                plan_revision="C",
                characteristic=char,
                judgement=judge(char, Decimal(value), "mm"),
                reading=reading,
                gauge=gauge,
                gauge_calibration_due="2027-01-31",
                calibration_status="valid",
                supersedes=supersedes,
                reason=None if supersedes is None else "re-measure",
            )
        )

    def part(
        self, serial: str, verdict: str, ids: list[str], failed: list[str], supersedes: str | None = None
    ) -> dict[str, Any]:
        draft = rec.part_record(
            **SITE,
            context=ctx(serial),
            plan_revision="C",
            verdict=verdict,
            records=ids,
            failed=failed,
            missing=[],
            released_by="op-1",
        )
        draft["supersedes"] = supersedes
        return self.add(draft)


def ctx(serial: str) -> dict[str, str | None]:
    lot = "L-1" if serial in ("SN0", "SN1", "SN2", "SN3") else "L-2"
    return {"part_number": "HX-4711", "serial": serial, "lot": lot, "work_order": "WO-7", "operator": "op-1"}


def simple_part(c: Chain, serial: str, d1: str, l1: str) -> None:
    a, b = c.measure(D1, d1, serial, "CAL-1"), c.measure(L1, l1, serial, "CAL-2")
    failed = [r["characteristic"] for r in (a, b) if r["verdict"] == "fail"]
    c.part(serial, "reject" if failed else "accept", [a["id"], b["id"]], failed)


def build(keydir: Path) -> Chain:
    c = Chain(keydir)
    c.at("2026-11-17T09:00:00.000000Z")
    simple_part(c, "SN0", "12.000", "30.00")
    c.at("2026-11-18T09:00:00.000000Z")
    simple_part(c, "SN1", "12.005", "30.01")
    simple_part(c, "SN2", "11.985", "30.00")
    c.at("2026-11-19T09:00:00.000000Z")
    d1 = c.measure(D1, "12.025", "SN3", "CAL-1")
    c.add(rec.nonconformance_record(d1))
    l1 = c.measure(L1, "30.02", "SN3", "CAL-2")
    c.part("SN3", "reject", [d1["id"], l1["id"]], ["D1"])
    simple_part(c, "SN4", "11.988", "30.07")
    c.at("2026-11-20T09:00:00.000000Z")
    first = c.measure(D1, "11.982", "SN5", "CAL-1")
    again = c.measure(D1, "12.001", "SN5", "CAL-2", supersedes=first["id"])
    l1 = c.measure(L1, "30.00", "SN5", "CAL-2")
    c.part("SN5", "accept", [again["id"], l1["id"]], [])
    first = c.measure(D1, "12.0305", "SN6", "CAL-1")
    l1 = c.measure(L1, "29.96", "SN6", "CAL-2")
    verdict = c.part("SN6", "reject", [first["id"], l1["id"]], ["D1"])
    c.add(
        rec.invalidation_record(
            **SITE, context=ctx("SN6"), target=first["id"], characteristic="D1", by="qe-9", reason="gauge slipped"
        )
    )
    again = c.measure(D1, "12.012", "SN6", "CAL-1", supersedes=first["id"])
    c.part("SN6", "accept", [again["id"], l1["id"]], [], supersedes=verdict["id"])
    c.at("2026-11-21T09:00:00.000000Z")
    simple_part(c, "SN7", "11.990", "30.00")
    return c


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def store(v1_store: InfluxV1Store, keydir: Path) -> InfluxV1Store:
    v1_store.write_lines(build(keydir).lines)
    return v1_store


def by_serial(report: ImpactReport) -> dict[str | None, Any]:
    return {p.serial: p for p in report.parts}


def test_lists_every_value_the_gauge_measured_since_the_date(store: InfluxV1Store) -> None:
    report = impact(store, "CAL-1", "2026-11-18")
    assert [p.serial for p in report.parts] == ["SN1", "SN2", "SN3", "SN4", "SN5", "SN6", "SN7"]
    assert all(v.record["gauge"] == "CAL-1" for v in report.values)
    parts = by_serial(report)
    assert [v.record["value"] for v in parts["SN6"].values] == ["12.0305", "12.012"]
    assert [v.status for v in parts["SN6"].values] == ["invalidated", "current"]
    assert parts["SN6"].values[0].invalidation_reason == "gauge slipped"
    assert parts["SN6"].verdict == "accept"  # the later verdict, after the re-measure
    assert parts["SN5"].values[0].status == "superseded" and not parts["SN5"].values[0].counts
    assert parts["SN5"].verdict == "accept"  # found through the re-measure by CAL-2
    assert parts["SN3"].verdict == "reject" and parts["SN3"].lot == "L-1"
    # without an offset nothing is re-judged
    assert all(v.rejudged is None and v.change is None for v in report.values)
    assert all(p.new_verdict is None and not p.suspect for p in report.parts)
    text = format_impact(report)
    assert "No offset given" in text and "8 value(s) on 7 part(s)" in text


def test_offset_changes_exactly_the_values_worked_out_by_hand(store: InfluxV1Store) -> None:
    report = impact(store, "CAL-1", "2026-11-18T00:00:00Z", Decimal("0.010"), until="2026-11-21")
    parts = by_serial(report)
    assert list(parts) == ["SN1", "SN2", "SN3", "SN4", "SN5", "SN6"]
    assert len(report.values) == 7
    changes = {(v.record["serial"], v.record["value"]): v.change for v in report.values}
    assert changes == {
        ("SN1", "12.005"): None,
        ("SN2", "11.985"): "pass->fail",
        ("SN3", "12.025"): "fail->pass",
        ("SN4", "11.988"): "pass->fail",
        ("SN5", "11.982"): "pass->fail",
        ("SN6", "12.0305"): "fail->pass",
        ("SN6", "12.012"): None,
    }
    corrected = {v.record["value"]: v.rejudged.judged_value for v in report.values if v.rejudged}
    assert corrected["11.985"] == Decimal("11.975") and corrected["12.0305"] == Decimal("12.020")
    sn6 = parts["SN6"].values[0].rejudged
    assert sn6 is not None and sn6.roundings == ("half_even",)  # half-up would not give the recorded 12.030
    verdicts = {s: (p.verdict, p.new_verdict) for s, p in parts.items()}
    assert verdicts == {
        "SN1": ("accept", "accept"),
        "SN2": ("accept", "reject"),
        "SN3": ("reject", "accept"),
        "SN4": ("reject", "reject"),
        "SN5": ("accept", "accept"),
        "SN6": ("accept", "accept"),
    }
    assert [p.serial for p in report.suspect_parts] == ["SN2"]
    assert [p.serial for p in report.parts if p.verdict_changes] == ["SN2", "SN3"]

    text = format_impact(report)
    assert "Offset +0.010" in text and "corrected = reading - offset" in text
    assert "Verdicts that change: 2 fail->pass, 3 pass->fail." in text
    suspect_lines = [line for line in text.splitlines() if "SUSPECT" in line]
    assert len(suspect_lines) == 1 and "serial SN2" in suspect_lines[0]
    assert "part verdict: accept (released by op-1" in suspect_lines[0] and "-> would be reject" in suspect_lines[0]
    assert "Rounding: not recorded" in text

    doc = impact_json(report)
    json.dumps(doc)  # JSON-ready as it is
    assert doc["summary"] == {"values": 7, "parts": 6, "changed_values": 5, "changed_parts": 2, "suspect_parts": 1}
    sn2 = next(p for p in doc["parts"] if p["serial"] == "SN2")
    assert sn2["suspect"] and sn2["values"][0]["rejudged"]["corrected_value"] == "11.975"
    assert doc["offset"] == "0.010" and doc["until"] == "2026-11-21T00:00:00.000000Z"


def test_negative_offset_and_offset_in_another_unit(store: InfluxV1Store) -> None:
    # reading 0.010 too low: only SN6's counting value 12.012 -> 12.022 leaves the tolerance
    report = impact(store, "CAL-1", "2026-11-18", Decimal("-0.010"), until="2026-11-21")
    assert [(v.record["serial"], v.change) for v in report.changed_values] == [("SN6", "pass->fail")]
    assert [p.serial for p in report.suspect_parts] == ["SN6"]
    # 10 µm is 0.010 mm
    in_um = impact(store, "CAL-1", "2026-11-18", Decimal("10"), until="2026-11-21", offset_unit="um")
    in_mm = impact(store, "CAL-1", "2026-11-18", Decimal("0.010"), until="2026-11-21")
    assert [v.change for v in in_um.values] == [v.change for v in in_mm.values]
    with pytest.raises(ImpactError, match="does not apply"):
        impact(store, "CAL-1", "2026-11-18", Decimal("1"), offset_unit="g")


def test_time_window_and_other_gauges(store: InfluxV1Store) -> None:
    one_day = impact(store, "CAL-1", "2026-11-19", until="2026-11-20")
    assert [p.serial for p in one_day.parts] == ["SN3", "SN4"]
    cal2 = impact(store, "CAL-2", "2026-11-20T00:00:00+00:00", until="2026-11-21")
    assert [(p.serial, len(p.values)) for p in cal2.parts] == [("SN5", 2), ("SN6", 1)]
    nothing = impact(store, "CAL-9", "2026-01-01", Decimal("0.1"))
    assert nothing.parts == [] and "measured nothing" in format_impact(nothing)
    with pytest.raises(ImpactError, match="not a date"):
        impact(store, "CAL-1", "18.11.2026")


def _record(char: Characteristic, value: str) -> dict[str, Any]:
    reading = Reading("d", "01", Decimal(value), "mm", b"", 1_795_000_000_000_000_000)
    return rec.measurement_record(
        **SITE,
        context=ctx("SN-X"),
        plan_revision="C",
        characteristic=char,
        judgement=judge(char, Decimal(value), "mm"),
        reading=reading,
        gauge="G",
        gauge_calibration_due=None,
    )


def test_a_verdict_that_depends_on_the_unrecorded_rounding_rule_is_flagged() -> None:
    record = _record(D1, "12.021")  # both rules give 12.021: neither can be ruled out
    j = rejudge(record, Decimal("0.0005"))  # 12.0205: half-even 12.020 pass, half-up 12.021 fail
    assert j.verdict == AMBIGUOUS and j.judged_value is None and j.roundings == ("half_even", "half_up")
    assert j.note is not None and "rounding rule" in j.note


def test_the_rounding_rule_is_recovered_from_the_record() -> None:
    half_up = D1.model_copy(update={"rounding": Rounding.HALF_UP})
    record = _record(half_up, "12.0205")  # judged 12.021 (fail) only under half-up
    assert record["judged_value"] == "12.021"
    j = rejudge(record, Decimal("0"))
    assert j.roundings == ("half_up",) and j.verdict == "fail" and j.note is None
    tampered = dict(record, judged_value="12.019", verdict="pass")
    assert "does not follow" in str(rejudge(tampered, Decimal("0")).note)


def test_a_point_that_is_not_evidence_is_reported_not_dropped(store: InfluxV1Store, keydir: Path) -> None:
    when = rec.parse_utc_us("2026-11-19T12:00:00.000000Z")
    store.write_lines([f'inspection,gateway=gw-9 seq=1i,gauge="CAL-1" {when}'])
    report = impact(store, "CAL-1", "2026-11-18", Decimal("0.010"), until="2026-11-21", keys=KeyRing.load(keydir))
    assert report.unreadable == [f"not evidence: inspection point at {when} µs (gateway gw-9, seq 1) names no block"]
    assert len(report.values) == 7  # the evidence is all still there
    assert all(v.record["verified"] for v in report.values)
    assert "WARNING: 1 stored item(s) are not verified evidence" in format_impact(report)
    assert impact_json(report)["unreadable"] == report.unreadable


def test_a_value_whose_block_does_not_verify_is_named(store: InfluxV1Store, keydir: Path, tmp_path: Path) -> None:
    stranger = Chain(tmp_path / "elsewhere", gateway="gw-1")  # another key under the same gateway id
    stranger.at("2026-11-19T12:00:00.000000Z")
    stranger.chain.next_seq = 1000
    stranger.measure(D1, "12.001", "SN9", "CAL-1")
    store.write_lines(stranger.lines)
    report = impact(store, "CAL-1", "2026-11-18", keys=KeyRing.load(keydir))
    assert len(report.unreadable) == 1 and "FORGED" in report.unreadable[0] and "seq 1000" in report.unreadable[0]
