"""The live state groups alerts by episode, keeps a characteristic's points and limits, reads reaction-plan acks."""

from __future__ import annotations

import json

from collector.dashboard.live import LiveState, ack_from_record
from collector.people.accounts import DashboardSettings
from tests.unit.dashboard_helpers import NOW, Clock, alert, record


def state() -> LiveState:
    return LiveState(DashboardSettings(shift_timezone="UTC"), Clock(NOW))


def test_one_card_per_episode_opened_updated_closed() -> None:
    s = state()
    s.on_alert({**alert("r1", kind="trend"), "seq": 1, "rules": [1], "episode": "r1", "state": "opened"})
    s.on_alert({**alert("r2", 1, kind="trend"), "seq": 2, "rules": [5], "episode": "r1", "state": "updated"})
    s.on_alert({**alert("r2", 1, kind="trend"), "seq": 2, "rules": [5], "episode": "r1", "state": "updated"})
    _, snap = s.snapshot()
    (card,) = snap["alerts"]
    assert (card["record_id"], card["state"], card["points"], card["rules"]) == ("r1", "updated", 2, [1, 5])
    s.on_alert({**alert("r3", 2, kind="trend"), "seq": 3, "episode": "r1", "state": "closed", "severity": "info"})
    _, snap = s.snapshot()
    (card,) = snap["alerts"]
    assert (card["state"], card["points"], card["closed_at"]) == ("closed", 2, alert("r3", 2)["at"])
    # the acknowledgement of the episode is the one of the record that opened it
    s.on_ack("r1", {"by": "sam", "comment": None})
    assert s.snapshot()[1]["alerts"][0]["ack"]["by"] == "sam"
    # an alert from a gateway before episodes is its own episode
    s.on_alert({**alert("r9", 3), "seq": 9})
    assert len(s.snapshot()[1]["alerts"]) == 2


def test_points_and_the_limits_in_force_of_a_characteristic() -> None:
    s = state()
    limits = {"characteristic": "D1", "centre": 12.0, "sigma": 0.002, "ucl": 12.006, "lcl": 11.994, "n": 25}
    audit = record(3, kind="audit", event="spc_limits", subject="D1", detail=json.dumps(limits))
    remeasure = record(4, judged_value="12.002", supersedes="r2")
    s.on_records("s", "l", "st-10", [record(1), record(2, judged_value="12.030", verdict="fail"), audit, remeasure])
    points, in_force = s.charts.data("s/l/st-10", "D1")
    assert [p["value"] for p in points] == [12.001, 12.030]  # a re-measure is not a point of the chart
    assert in_force is not None and (in_force["centre"], in_force["sigma"], in_force["n"]) == (12.0, 0.002, 25)


def test_an_acknowledgement_with_cause_and_action_is_read_back() -> None:
    r = {
        "kind": "audit",
        "event": "alert_ack",
        "subject": "r1",
        "by": "sv-3",
        "id": "a1",
        "detail": "alert acknowledged (cause: tool wear; action: tool changed): insert 3",
    }
    assert ack_from_record(r) == (
        "r1",
        {
            "by": "sv-3",
            "comment": "insert 3",
            "at": None,
            "record": "a1",
            "cause": "tool wear",
            "action": "tool changed",
        },
    )
    plain = {**r, "detail": "alert acknowledged: seen"}
    assert ack_from_record(plain) == ("r1", {"by": "sv-3", "comment": "seen", "at": None, "record": "a1"})


def test_a_chart_seeded_from_the_store_and_none_for_names_with_no_values() -> None:
    s = state()
    limits = {"characteristic": "D1", "centre": 12.0, "sigma": 0.002, "n": 100, "provisional": False}
    audit = record(3, kind="audit", event="spc_limits", subject="D1", detail=json.dumps(limits))
    s.charts.seed("s/l/st-10", "D1", [record(1), record(2, characteristic="L1"), audit])
    points, in_force = s.charts.data("s/l/st-10", "D1")
    assert [p["id"] for p in points] == ["r1"] and in_force is not None and in_force["n"] == 100
    s.charts.seed("s/l/st-99", "made-up", [])
    assert [k["characteristic"] for k in s.charts.listing()] == ["D1"]
