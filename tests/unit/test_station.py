"""The station: plan order, part numbering, scanned labels, refusals, the draft record, people."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collector import config as config_mod
from collector.config import CalibrationPolicy, Config
from collector.gateway.intake import PeopleRules
from collector.gateway.journal import Journal
from collector.inspection.models import RECORDS_ADAPTER, InspectionRecord
from collector.inspection.records import format_utc_us
from collector.inspection.station import CommandError, CommandRefused, Outcome, Refusal, ScanError, Station
from collector.people.accounts import hash_password
from collector.people.register import Signature
from drivers.base import Reading, ReadingStatus

D = Decimal
AT_NS = 1_795_000_000_123_456_789

CONFIG = r"""
gauges:
  - {id: CAL-0042, type: caliper, calibration_due: 2027-06-30}
  - {id: MIC-0007, type: micrometer, calibration_due: 2026-12-31}
plans:
  - part_number: HX-4711
    revision: C
    characteristics:
      - {id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3}
      - {id: L1, name: Length, nominal: 45.00, lower_tol: -0.05, upper_tol: 0.05, unit: mm, decimals: 2}
      - {id: T1, name: Flange, nominal: 6.350, lower_tol: -0.010, upper_tol: 0.030, unit: mm, decimals: 3}
stations:
  - id: st-10
    plan: HX-4711
    part:
      part_number: HX-4711
      serial: "SN-{n:05d}"
      lot: L2026-1121
      work_order: WO-88123
      operator: op-117
      first_number: FIRST
    scan_pattern: '(?P<part_number>[A-Z]{2}-\d{4})\|(?P<serial>SN-\d{5})\|(?P<lot>L[\w-]+)'
    devices:
      - {id: caliper-1, driver: mitutoyo, gauge: CAL-0042, port: /dev/null}
      - {id: mic-1, driver: mitutoyo, gauge: MIC-0007, port: /dev/null}
      - {id: loose-1, driver: mitutoyo, port: /dev/null}
  - id: st-20
    plan: HX-4711
    require_operator: false
    devices:
      - {id: ind-1, driver: mitutoyo, port: /dev/null}
"""


def load(first_number: int = 1) -> Config:
    return config_mod.parse(CONFIG.replace("FIRST", str(first_number)), "session.yaml")


TODAY = dt.date(2026, 11, 21)  # the clock is the one thing tests fake
LENIENT = CalibrationPolicy(require_registered_gauge=False)


def station(
    cfg: Config | None = None,
    index: int = 0,
    saved_state: str | None = None,
    calibration: CalibrationPolicy = LENIENT,
    today: dt.date = TODAY,
) -> Station:
    cfg = cfg or load()
    st = cfg.stations[index]
    return Station(
        st,
        {p.part_number: p for p in cfg.plans},
        {g.id: g for g in cfg.gauges},
        site="plant-1",
        line="line-a",
        saved_state=saved_state,
        calibration=calibration,
        today=lambda: today,
    )


def reading(
    value: str | None = "12.001",
    device: str = "caliper-1",
    unit: str | None = "mm",
    status: ReadingStatus = ReadingStatus.OK,
    error: str | None = None,
    n: int = 0,
) -> Reading:
    raw = b"01A+" + (value or "").encode() + b"\r"
    return Reading(
        device=device,
        channel="01",
        value=None if value is None else D(value),
        unit=unit,
        raw=raw,
        timestamp_ns=AT_NS + n * 1_000_000,
        status=status,
        error=error,
    )


def record(result: dict[str, Any] | Refusal | Outcome) -> dict[str, Any]:
    """The measurement record a reading produced (failing the test on a refusal)."""
    if isinstance(result, Outcome):
        assert result.refusal is None, result.refusal
        (measurement,) = [d for d in result.drafts if d["kind"] == "measurement"]
        return measurement
    assert isinstance(result, dict), result
    return result


def refusal(result: Outcome) -> Refusal:
    assert result.refusal is not None, result
    return result.refusal


# one value per characteristic of a part, in plan order
PART = ["12.001", "45.01", "6.360"]


def measure_part(s: Station, values: list[str] = PART) -> list[dict[str, Any]]:
    return [record(s.handle(reading(v, n=i))) for i, v in enumerate(values)]


# -- plan order and part numbering ---------------------------------------------------------
def test_readings_fill_the_plan_in_order_and_wrap_to_the_next_part() -> None:
    s = station()
    assert (s.next_characteristic, s.context["serial"]) == ("D1", "SN-00001")
    recs = measure_part(s)
    assert [r["characteristic"] for r in recs] == ["D1", "L1", "T1"]
    assert [r["serial"] for r in recs] == ["SN-00001"] * 3
    assert [r["judged_value"] for r in recs] == ["12.001", "45.01", "6.360"]
    assert [r["verdict"] for r in recs] == ["pass"] * 3
    assert (s.next_characteristic, s.context["serial"], s.number) == ("D1", "SN-00002", 2)
    nxt = record(s.handle(reading("12.030")))
    assert (nxt["characteristic"], nxt["serial"], nxt["verdict"], nxt["limit"]) == ("D1", "SN-00002", "fail", "upper")
    assert s.next_characteristic == "L1"


def test_a_failed_characteristic_still_advances() -> None:
    # the record is the evidence; re-measuring is a new record, not a retry of the slot
    s = station()
    r = record(s.handle(reading("99.999")))
    assert r["verdict"] == "fail"
    assert s.next_characteristic == "L1"


def test_serial_numbering_starts_at_first_number_and_advances_per_part() -> None:
    s = station(load(first_number=100))
    serials = [r["serial"] for _ in range(3) for r in measure_part(s)]
    assert serials == ["SN-00100"] * 3 + ["SN-00101"] * 3 + ["SN-00102"] * 3
    assert s.context["serial"] == "SN-00103"


def test_context_fields_on_every_record() -> None:
    s = station()
    r = record(s.handle(reading()))
    assert {k: r[k] for k in ("part_number", "serial", "lot", "work_order", "operator")} == {
        "part_number": "HX-4711",
        "serial": "SN-00001",
        "lot": "L2026-1121",
        "work_order": "WO-88123",
        "operator": "op-117",
    }


def test_station_without_part_settings() -> None:
    s = station(index=1)
    r = record(s.handle(reading(device="ind-1")))
    assert (r["part_number"], r["serial"], r["lot"], r["station"]) == ("HX-4711", None, None, "st-20")


# -- state that survives a restart ---------------------------------------------------------
def test_state_restores_numbering_and_position() -> None:
    cfg = load()
    s = station(cfg)
    measure_part(s)
    s.handle(reading("12.002"))
    saved = s.state()
    assert json.loads(saved)["number"] == 2 and json.loads(saved)["next"] == 1

    again = station(cfg, saved_state=saved)
    assert (again.number, again.next_characteristic, again.context["serial"]) == (2, "L1", "SN-00002")
    recs = [record(again.handle(reading(v))) for v in ("45.00", "6.350", "12.000")]
    assert [(r["characteristic"], r["serial"]) for r in recs] == [
        ("L1", "SN-00002"),
        ("T1", "SN-00002"),
        ("D1", "SN-00003"),
    ]


def test_state_restores_scanned_lot_and_operator() -> None:
    cfg = load()
    s = station(cfg)
    s.scan("HX-4711|SN-00500|L-77")
    s.context["operator"] = "op-200"
    again = station(cfg, saved_state=s.state())
    assert (again.context["lot"], again.context["operator"]) == ("L-77", "op-200")


def test_saved_position_beyond_a_shorter_plan_wraps() -> None:
    saved = json.dumps({"number": 7, "next": 4, "context": {"part_number": "HX-4711"}})
    s = station(saved_state=saved)
    assert (s.number, s.next_characteristic, s.context["serial"]) == (7, "L1", "SN-00007")


def test_restart_mid_part_keeps_the_scanned_serial() -> None:
    cfg = load()
    s = station(cfg)
    s.scan("HX-4711|SN-12345|L-9")
    first = record(s.handle(reading("12.001")))
    assert first["serial"] == "SN-12345"
    again = station(cfg, saved_state=s.state())
    second = record(again.handle(reading("45.00")))
    assert (second["characteristic"], second["serial"]) == ("L1", "SN-12345")


# -- scanned labels -----------------------------------------------------------------------
def test_scan_sets_serial_and_lot_and_restarts_the_plan() -> None:
    s = station()
    s.handle(reading("12.001"))
    assert s.next_characteristic == "L1"
    found = s.scan("HX-4711|SN-12345|L2026-9\r\n")  # scanners send a terminator
    assert found.message == "lot L2026-9, part_number HX-4711, serial SN-12345"
    assert (s.context["part_number"], s.context["serial"], s.context["lot"]) == ("HX-4711", "SN-12345", "L2026-9")
    # the part in progress (one value measured) was abandoned: recorded as incomplete
    (incomplete,) = found.drafts
    assert (incomplete["kind"], incomplete["verdict"], incomplete["missing"]) == ("part", "incomplete", ["L1", "T1"])
    assert s.next_characteristic == "D1"
    r = record(s.handle(reading("12.002")))
    assert (r["characteristic"], r["serial"], r["lot"]) == ("D1", "SN-12345", "L2026-9")
    assert (r["work_order"], r["operator"]) == ("WO-88123", "op-117")  # not on the label: kept


def test_scanned_serial_is_not_overwritten_by_the_template() -> None:
    s = station()
    s.scan("HX-4711|SN-12345|L1")
    recs = measure_part(s)
    assert {r["serial"] for r in recs} == {"SN-12345"}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("HX-9999|SN-12345|L1", "no inspection plan for part number 'HX-9999'"),
        ("HX-4711|12345|L1", "does not match the label format"),
        ("HX-4711|SN-12345|L1 trailing", "does not match the label format"),
        ("", "does not match the label format"),
    ],
)
def test_bad_scan_raises_and_changes_nothing(code: str, message: str) -> None:
    s = station()
    s.handle(reading("12.001"))
    before = (dict(s.context), s.next_index, s.number)
    with pytest.raises(ScanError, match=message):
        s.scan(code)
    assert (dict(s.context), s.next_index, s.number) == before


def test_apply_label_keeps_only_context_fields() -> None:
    s = station()
    s.handle(reading("12.001"))
    found = s.apply_label({"serial": "SN-77777", "colour": "red", "lot": ""})
    assert found.message == "serial SN-77777"
    assert s.context["serial"] == "SN-77777" and s.context["lot"] == "L2026-1121"
    assert (s.context["serial"], s.context["lot"], s.next_characteristic) == ("SN-77777", "L2026-1121", "D1")
    assert "colour" not in s.context


def test_label_without_context_fields_raises() -> None:
    s = station()
    with pytest.raises(ScanError, match="carries none of"):
        s.apply_label({"colour": "red", "serial": ""})
    assert s.context["serial"] == "SN-00001"


def test_scan_without_pattern_raises() -> None:
    s = station(index=1)
    with pytest.raises(ScanError, match="no scan pattern"):
        s.scan("HX-4711|SN-12345|L1")


# -- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rdg", "reason"),
    [
        (reading("12.001", status=ReadingStatus.UNSTABLE), "unstable"),
        (reading(None, status=ReadingStatus.ERROR, error="overflow"), "reading is error: overflow"),
        (reading("12.001", status=ReadingStatus.ERROR, error="E01"), "reading is error: E01"),
        (reading(None), "reading is ok"),  # OK without a value is no reading either
        (reading("12.001", device="ind-1"), "not bound to this station"),
        (reading("12.001", device="ghost"), "not bound to this station"),
        (reading("12.001", unit=None), "has no unit"),
        (reading("12.001", unit="g"), "cannot convert"),
    ],
    ids=["unstable", "error", "error-with-value", "ok-without-value", "other-station", "unknown", "no-unit", "grams"],
)
def test_refusals_never_become_records(rdg: Reading, reason: str) -> None:
    s = station()
    result = refusal(s.handle(rdg))
    assert (result.station, result.device) == ("st-10", rdg.device)
    assert reason in result.reason
    # the slot is not used up
    assert (s.next_characteristic, s.number) == ("D1", 1)
    assert record(s.handle(reading("12.001")))["characteristic"] == "D1"


def test_absurd_value_is_a_refusal_or_a_record_never_an_exception() -> None:
    s = station()
    result = s.handle(reading("1E+30"))
    assert isinstance(result, Outcome)


# -- the draft record ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "gauge", "due"),
    [("caliper-1", "CAL-0042", "2027-06-30"), ("mic-1", "MIC-0007", "2026-12-31"), ("loose-1", None, None)],
)
def test_draft_carries_gauge_and_its_calibration_due_date(device: str, gauge: str | None, due: str | None) -> None:
    r = record(station().handle(reading("12.001", device=device)))
    assert (r["device"], r["gauge"], r["gauge_calibration_due"]) == (device, gauge, due)


def test_draft_snapshot_of_the_specification_and_reading() -> None:
    r = record(station().handle(reading("0.4733", unit="in")))
    expected = {
        "site": "plant-1",
        "line": "line-a",
        "station": "st-10",
        "plan_revision": "C",
        "characteristic": "D1",
        "characteristic_name": "Bore",
        "nominal": "12.000",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "decimals": 3,
        "criticality": "major",
        "channel": "01",
        "raw": "01A+0.4733\r",
        "reading_value": "0.4733",
        "reading_unit": "in",
        "value": "12.02182",
        "judged_value": "12.022",
        "deviation": "0.022",
        "verdict": "fail",
        "limit": "upper",
        "measured_at": format_utc_us(AT_NS // 1000),
        "supersedes": None,
        "reason": None,
    }
    assert {k: r[k] for k in expected} == expected


def test_drafts_become_valid_records_through_the_journal(tmp_path: Path) -> None:
    s = station()
    drafts = [record(s.handle(reading(v, n=i))) for i, v in enumerate([*PART, "11.970"])]
    j = Journal(tmp_path / "j.sqlite", "gw-1", clock_us=lambda: AT_NS // 1000)
    try:
        (sealed,) = j.append(drafts, {"station:st-10": s.state()})  # one station, one block
        models = RECORDS_ADAPTER.validate_python(sealed.block.records)
        measured = [m for m in models if isinstance(m, InspectionRecord)]
        assert len(measured) == len(models)  # four measurements, nothing else
        seqs = range(sealed.block.first_seq, sealed.block.last_seq + 1)
        assert [(n, m.characteristic, m.serial, m.verdict) for n, m in zip(seqs, measured, strict=True)] == [
            (1, "D1", "SN-00001", "pass"),
            (2, "L1", "SN-00001", "pass"),
            (3, "T1", "SN-00001", "pass"),
            (4, "D1", "SN-00002", "fail"),
        ]
        assert len({m.id for m in models}) == 4
        restored = station(saved_state=j.state("station:st-10"))
        assert (restored.next_characteristic, restored.context["serial"]) == ("L1", "SN-00002")
    finally:
        j.close()


def test_a_labelled_part_is_not_followed_by_readings_without_a_new_label() -> None:
    """Two parts never share a serial: after a scanned part is complete, the next needs its label."""
    s = station()
    s.scan("HX-4711|SN-12345|L-9")
    assert [r["serial"] for r in measure_part(s)] == ["SN-12345"] * 3
    refused = refusal(s.handle(reading()))
    assert refused.reason_code == "no_part" and "scan the part's label" in refused.reason
    restarted = station(saved_state=s.state())  # the wait survives a restart too
    assert restarted.handle(reading()).refusal is not None
    restarted.scan("HX-4711|SN-12346|L-9")
    assert record(restarted.handle(reading()))["serial"] == "SN-12346"


def test_sample_plan_inspects_n_of_every_m_parts_and_records_the_others() -> None:
    cfg = load()
    settings = cfg.stations[0].model_copy(update={"sampling": config_mod.SamplingSettings(inspect=1, every=3)})
    s = Station(
        settings,
        {p.part_number: p for p in cfg.plans},
        {g.id: g for g in cfg.gauges},
        site="plant-1",
        line="line-a",
        calibration=LENIENT,
        today=lambda: TODAY,
    )
    inspected, skipped = [], []
    for n in range(1, 7):
        out = s.scan(f"HX-4711|SN-{n:05d}|L-9")
        audits = [d for d in out.drafts if d["kind"] == "audit"]  # (the last part is closed as incomplete)
        if audits:
            (audit,) = audits
            assert (audit["kind"], audit["event"], audit["subject"]) == ("audit", "not_sampled", f"SN-{n:05d}")
            refused = s.handle(reading("12.001"))
            assert refused.refusal is not None and refused.refusal.reason_code == "not_sampled"
            assert refused.drafts == []  # the audit record is the evidence, not each reading
            skipped.append(n)
        else:
            assert record(s.handle(reading("12.001")))["serial"] == f"SN-{n:05d}"
            inspected.append(n)
    assert (inspected, skipped) == ([1, 4], [2, 3, 5, 6])
    again = station(saved_state=s.state())  # the count survives a restart
    assert again.parts_seen == 6 and again.sampled is False


def test_a_sample_plan_cannot_inspect_more_than_it_counts() -> None:
    with pytest.raises(ValueError, match="cannot inspect 4 of every 3"):
        config_mod.SamplingSettings(inspect=4, every=3)


# -- people: sign-in, the competence gate, signatures -------------------------------------------------
OLGA_HASH = hash_password("2468", n=2**4, r=1, p=1)
PEOPLE = f"""
users:
  - {{id: op-42, name: Olga Petrova, badge: "B-0042", roles: [inspector], secret_hash: "{OLGA_HASH}",
      qualifications: [{{plan: HX-4711, expires: 2026-11-30}}]}}
  - {{id: sv-3, name: Sam Vogt, badge: "B-0003", roles: [supervisor], secret_hash: "{OLGA_HASH}",
      qualifications: [{{plan: "*", expires: 2027-12-31}}]}}
  - {{id: qe-7, name: Quentin Eder, roles: [quality], secret_hash: "{OLGA_HASH}"}}
"""


def people_station(
    *, secret_required: tuple[str, ...] = ("sign_in",), today: dt.date = TODAY, index: int = 0
) -> tuple[Station, list[dt.date]]:
    """A station with a user register; the returned list holds 'today' (a test moves it)."""
    cfg = load()
    rules = PeopleRules(
        config_mod.PeopleSettings.model_validate({"register": "people.yaml", "secret_required": secret_required}),
        config_mod.parse_register(PEOPLE, "people.yaml"),
    )
    day = [today]
    part = cfg.stations[index].part
    st = cfg.stations[index].model_copy(update={"part": part and part.model_copy(update={"operator": None})})
    s = Station(
        st,
        {p.part_number: p for p in cfg.plans},
        {g.id: g for g in cfg.gauges},
        site="plant-1",
        line="line-a",
        calibration=LENIENT,
        today=lambda: day[0],
        people=rules,
    )
    return s, day


def valid(drafts: list[dict[str, Any]], tmp_path: Path) -> list[Any]:
    """The drafts sealed by a journal and read back through the record schema (the recorder's check)."""
    j = Journal(tmp_path / "j.sqlite", "gw-1", clock_us=lambda: AT_NS // 1000)
    try:
        return [m for sealed in j.append(drafts, {}) for m in RECORDS_ADAPTER.validate_python(sealed.block.records)]
    finally:
        j.close()


OLGA = Signature("op-42", "Olga Petrova", "secret")


def test_a_badge_waits_for_the_pin_and_the_sign_in_is_signed(tmp_path: Path) -> None:
    s, _ = people_station()
    pattern = r"(?P<operator>B-\d{4})|(?P<part_number>[A-Z]{2}-\d{4})\|(?P<serial>SN-\d{5})\|(?P<lot>L[\w-]+)"
    s.settings = s.settings.model_copy(update={"scan_pattern": pattern})
    s._scan = re.compile(str(s.settings.scan_pattern))
    out = s.scan("B-0042")
    assert out.drafts == [] and s.context["operator"] is None  # a badge alone is not enough here
    assert s.pending_badge == "B-0042" and s.view()["pending_sign_in"] == "B-0042"
    out = s.sign_in("op-42", OLGA)
    (audit,) = out.drafts
    assert (audit["event"], audit["by"], audit["signed_by"], audit["signer_name"]) == (
        "sign_in",
        "op-42",
        "op-42",
        "Olga Petrova",
    )
    assert (audit["signature_meaning"], audit["signature_method"]) == ("signed_in", "secret")
    assert s.pending_badge is None and s.view()["operator_name"] == "Olga Petrova"
    # from nobody (an operator view without a session) a part label is refused; a badge is not
    with pytest.raises(CommandRefused, match="sign in first") as caught:
        s.scan("HX-4711|SN-12345|L-9", trusted=False)
    assert caught.value.kind == "unauthenticated" and s.context["serial"] == "SN-00001"
    assert valid(out.drafts, tmp_path)[0].signature_method == "secret"


def test_with_the_badge_alone_allowed_a_registered_badge_signs_in() -> None:
    s, _ = people_station(secret_required=())
    out = s.apply_label({"operator": "B-0003"})
    assert s.context["operator"] == "sv-3"
    assert out.drafts[-1]["signature_method"] == "badge" and out.drafts[-1]["signed_by"] == "sv-3"
    refused = s.apply_label({"operator": "B-9999"})
    assert refused.refused is not None and "unknown badge" in refused.refused
    assert refused.drafts[0]["event"] == "sign_in_refused" and s.context["operator"] == "sv-3"


def test_the_competence_gate_refuses_sign_in_and_readings_like_an_overdue_gauge(tmp_path: Path) -> None:
    s, day = people_station()
    out = s.sign_in("qe-7", Signature("qe-7", "Quentin Eder", "secret"))  # no qualification at all
    assert out.refused == "station st-10: sign-in refused: qe-7 (Quentin Eder) has no qualification for HX-4711"
    (audit,) = out.drafts
    assert (audit["event"], audit["by"], audit["subject"]) == ("sign_in_refused", "qe-7", "qe-7")
    assert "signed_by" not in audit  # a refusal is not a signature
    assert out.alerts == {audit["id"]: ("refused", "warning", "sign-in refused: " + out.message)}
    assert s.context["operator"] is None
    # Olga is qualified until 2026-11-30: she signs in, measures, and the next day is refused
    day[0] = dt.date(2026, 11, 30)
    assert s.sign_in("op-42", OLGA).refused is None
    assert record(s.handle(reading("12.001")))["operator"] == "op-42"
    day[0] = dt.date(2026, 12, 1)
    refused = s.handle(reading("45.01"))
    assert refused.refusal is not None and refused.refusal.reason_code == "not_qualified"
    (draft,) = refused.drafts
    assert draft["kind"] == "refusal" and draft["reason"] == (
        "operator not qualified: op-42's qualification for HX-4711 expired on 2026-11-30"
    )
    assert s.next_characteristic == "L1"  # the slot is not used up
    assert [m.kind for m in valid([audit, draft], tmp_path)] == ["audit", "refusal"]


def test_a_completed_part_is_released_within_the_sign_in_session(tmp_path: Path) -> None:
    s, _ = people_station()
    s.sign_in("op-42", OLGA)
    drafts = [d for i, v in enumerate(["12.001", "45.01", "6.40"]) for d in s.handle(reading(v, n=i)).drafts]
    (part,) = [d for d in drafts if d["kind"] == "part"]
    assert (part["verdict"], part["released_by"], part["signed_by"]) == ("reject", "op-42", "op-42")
    assert (part["signature_meaning"], part["signature_method"]) == ("rejected", "session")
    measurements = [d for d in drafts if d["kind"] == "measurement"]
    assert all("signed_by" not in d for d in measurements)  # a value is not a signature
    models = valid(drafts, tmp_path)
    assert [m.kind for m in models].count("part") == 1


def test_where_releases_are_signed_the_part_waits_for_its_release() -> None:
    s, _ = people_station(secret_required=("sign_in", "release"))
    s.sign_in("op-42", OLGA)
    drafts = [d for i, v in enumerate(PART) for d in s.handle(reading(v, n=i)).drafts]
    (unreleased,) = [d for d in drafts if d["kind"] == "part"]
    assert (unreleased["verdict"], unreleased["released_by"]) == ("accept", None) and "signed_by" not in unreleased
    assert s.awaiting_release and s.view()["awaiting_release"]
    out = s.release(OLGA)
    (released,) = out.drafts
    assert (released["supersedes"], released["released_by"], released["signature_meaning"]) == (
        unreleased["id"],
        "op-42",
        "released",
    )
    assert released["records"] == unreleased["records"] and not s.awaiting_release
    with pytest.raises(CommandError, match="released already"):
        s.release(OLGA)
    again = station(saved_state=s.state())
    assert not again.awaiting_release


def test_signed_commands_carry_the_signature_and_act_on_this_stations_records_only(tmp_path: Path) -> None:
    s, _ = people_station()
    s.sign_in("op-42", OLGA)
    first = record(s.handle(reading("12.031")))
    out = s.remeasure(None, "gauge not seated", "op-42", OLGA)
    assert out.drafts == []  # the new value carries the signed reason
    again = record(s.handle(reading("12.001", n=1)))
    assert (again["supersedes"], again["reason"], again["signed_by"], again["signature_meaning"]) == (
        first["id"],
        "gauge not seated",
        "op-42",
        "remeasured",
    )
    sam = Signature("sv-3", "Sam Vogt", "secret")
    (inv,) = s.invalidate(first, "probe contaminated", sam).drafts
    assert (inv["target"], inv["by"], inv["signed_by"], inv["signature_meaning"], inv["serial"]) == (
        first["id"],
        "sv-3",
        "sv-3",
        "invalidated",
        "SN-00001",
    )
    foreign = {**first, "station": "st-99"}
    with pytest.raises(CommandRefused, match="not this station's: a station acts on its own records only") as caught:
        s.invalidate(foreign, "x", sam)
    assert caught.value.kind == "forbidden"
    with pytest.raises(CommandRefused, match="no record 0195"):
        s.own(None, "0195-unknown")
    with pytest.raises(CommandRefused, match="is not a nonconformance"):
        s.dispose(first, "scrap", Signature("qe-7", "Quentin Eder", "secret"), None, None)
    ack = s.ack_alert(first, Signature("sam", None, "dashboard"), "seen")
    assert ack.drafts[0]["signature_method"] == "dashboard" and ack.drafts[0]["by"] == "sam"
    models = valid([first, again, inv, ack.drafts[0]], tmp_path)
    assert [m.kind for m in models] == ["measurement", "measurement", "invalidation", "audit"]
