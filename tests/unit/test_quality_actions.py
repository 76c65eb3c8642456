"""Limits in force on record, provisional baselines, reaction plans, one decision per nonconformance, episodes."""

from __future__ import annotations

import itertools
import json
import statistics

import pytest

from collector import config as config_mod
from collector.gateway.episodes import Episodes
from collector.inspection.station import CommandError, Station
from collector.people.register import Signature
from tests.unit import test_station
from tests.unit.test_station import CONFIG, LENIENT, reading

SPC = CONFIG.replace(
    "{id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3}",
    "{id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3,"
    " spc: {baseline: 5, min_baseline: 10},"
    " reaction_plan: {causes: [tool wear, material], actions: [tool changed, parts sorted]}}",
)


def station() -> Station:
    """st-20: no part template, one device, D1 first in every part."""
    return test_station.station(config_mod.parse(SPC.replace("FIRST", "1"), "session.yaml"), index=1)


def _d1(s: Station, value: str, n: int) -> list[dict[str, object]]:
    """One D1 value (the other two characteristics of the part are filled with good values)."""
    out = s.handle(reading(value, device="ind-1", n=n)).drafts
    s.handle(reading("45.00", device="ind-1", n=n + 1))
    s.handle(reading("6.350", device="ind-1", n=n + 2))
    return out


def test_provisional_limits_then_final_limits_each_on_record() -> None:
    s = station()
    values = ["12.001", "12.003", "11.999", "12.002", "12.000", "12.004", "11.998", "12.001", "12.002", "12.000"]
    limits = []
    for i, v in enumerate(values):
        drafts = _d1(s, v, 10 * i)
        limits += [json.loads(str(d["detail"])) for d in drafts if d["kind"] == "audit" and d["event"] == "spc_limits"]
    assert [x["n"] for x in limits] == [5, 10]
    first, final = limits
    xs = [float(v) for v in values]
    mr = [abs(b - a) for a, b in itertools.pairwise(xs)]
    for rec, basis, mrs in ((first, xs[:5], mr[:4]), (final, xs, mr)):
        assert rec["centre"] == pytest.approx(statistics.fmean(basis), abs=1e-12)
        assert rec["sigma"] == pytest.approx(statistics.fmean(mrs) / 1.128, abs=1e-12)
        assert rec["ucl"] == pytest.approx(rec["centre"] + 3 * rec["sigma"], abs=1e-12)
    assert first["provisional"] and not final["provisional"]
    assert s.spc_basis("D1") == (10, False)
    # after the final limits, no more limits records
    assert not [d for d in _d1(s, "12.001", 500) if d["kind"] == "audit"]


def test_acknowledging_needs_a_cause_and_an_action_from_the_reaction_plan() -> None:
    s = station()
    (m, *_) = _d1(s, "12.050", 0)
    sam = Signature("sv-3", "Sam Vogt", "dashboard")
    with pytest.raises(CommandError, match="choose the cause"):
        s.ack_alert(m, sam, "seen")
    with pytest.raises(CommandError, match="choose the action"):
        s.ack_alert(m, sam, None, "tool wear", "prayed")
    (audit,) = s.ack_alert(m, sam, "insert 3", "tool wear", "tool changed").drafts
    assert audit["detail"] == "alert acknowledged (cause: tool wear; action: tool changed): insert 3"
    # a value in tolerance and in control (an overdue gauge's alert, say) needs no choice
    (good, *_) = _d1(s, "12.001", 10)
    assert s.ack_alert(good, sam, "gauge sent to the lab").drafts[0]["detail"] == (
        "alert acknowledged: gauge sent to the lab"
    )


def test_a_value_that_broke_a_run_rule_needs_the_reaction_plan_too() -> None:
    s = station()
    for i, v in enumerate(["12.001", "11.999", "12.002", "11.998", "12.000"]):
        _d1(s, v, 10 * i)
    (m, *_) = _d1(s, "12.015", 100)  # in tolerance, far beyond the control limit
    assert m["verdict"] == "pass"
    sam = Signature("sv-3", "Sam Vogt", "dashboard")
    with pytest.raises(CommandError, match="choose the cause"):
        s.ack_alert(m, sam, "seen")


def test_a_nonconformance_is_decided_once() -> None:
    s = station()
    nc = next(d for d in _d1(s, "12.050", 0) if d["kind"] == "nonconformance")
    nc = {**nc, "id": "0195-nc-1"}
    quentin = Signature("qe-7", "Quentin Eder", "dashboard")
    (disp,) = s.dispose(nc, "rework", quentin, None, None).drafts
    assert disp["decision"] == "rework"
    with pytest.raises(CommandError, match="decided already"):
        s.dispose(nc, "scrap", quentin, None, None)
    # and a restart does not forget it
    again = Station(s.settings, s.plans, {}, site="plant-1", line="line-a", saved_state=s.state(), calibration=LENIENT)
    with pytest.raises(CommandError, match="decided already"):
        again.dispose(nc, "scrap", quentin, None, None)


def test_an_episode_opens_updates_and_closes() -> None:
    e = Episodes(limit=2)
    key = ("st-1", "D1", "trend")
    assert e.step(key, False, "r0") is None
    assert e.step(key, True, "r1") == ("r1", "opened")
    assert e.step(key, True, "r2") == ("r1", "updated")
    assert e.step(key, False, "r3") == ("r1", "closed")
    assert e.step(key, True, "r4") == ("r4", "opened")
    e.step(("a", "b", "c"), True, "x")
    e.step(("d", "e", "f"), True, "y")
    assert len(e) == 2 and e.forgotten == 1
