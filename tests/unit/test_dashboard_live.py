"""The dashboard's live state without a browser or a broker: shifts, and what the state
makes of status, alert and record messages (records arrive as sealed blocks)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

from collector.dashboard.live import LiveState, SeqSet
from collector.dashboard.records import records_in_message
from collector.dashboard.shifts import shift_at
from collector.people.accounts import DashboardSettings
from tests.unit.dashboard_helpers import NOW, Clock, alert, at, block_line, record, utc

# -- shifts --------------------------------------------------------------------------------------

STARTS = [dt.time(6), dt.time(14), dt.time(22)]


def test_shifts_in_utc_including_the_night_shift_over_midnight() -> None:
    zone = ZoneInfo("UTC")
    s = shift_at(utc(2026, 11, 21, 10, 30), STARTS, zone)
    assert (s.start, s.end, s.label) == (utc(2026, 11, 21, 6), utc(2026, 11, 21, 14), "06:00–14:00")
    s = shift_at(utc(2026, 11, 21, 14, 0), STARTS, zone)
    assert s.start == utc(2026, 11, 21, 14)  # the boundary belongs to the new shift
    s = shift_at(utc(2026, 11, 22, 1, 15), STARTS, zone)
    assert (s.start, s.end, s.label) == (utc(2026, 11, 21, 22), utc(2026, 11, 22, 6), "22:00–06:00")
    assert s.contains_us(int(utc(2026, 11, 21, 23).timestamp() * 1e6))
    assert not s.contains_us(s.end_us)


def test_shifts_in_a_zone_with_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    winter = shift_at(utc(2026, 1, 15, 6, 0), STARTS, berlin)  # 07:00 in Berlin
    assert winter.start == utc(2026, 1, 15, 5) and winter.label == "06:00–14:00"
    summer = shift_at(utc(2026, 7, 15, 6, 0), STARTS, berlin)  # 08:00 in Berlin
    assert summer.start == utc(2026, 7, 15, 4)
    # the night of the spring change is an hour shorter
    night = shift_at(utc(2026, 3, 29, 0, 30), STARTS, berlin)
    assert night.end - night.start == dt.timedelta(hours=7)


# -- the live state ------------------------------------------------------------------------------


def state(clock: Clock | None = None, **settings: Any) -> LiveState:
    return LiveState(DashboardSettings(shift_timezone="UTC", **settings), clock or Clock(NOW))


def stations(s: LiveState) -> dict[str, dict[str, Any]]:
    return {st["station"]: st for st in s.snapshot()[1]["stations"]}


def test_a_gateways_last_will_takes_all_its_stations_offline() -> None:
    s = state()
    s.on_gateway_status("gw-1", {"state": "online", "site": "s", "line": "l", "stations": ["st-10", "st-20"]})
    s.on_station_status("s", "l", "st-10", {"state": "online", "gateway": "gw-1", "station": "st-10"})
    s.on_station_status("s", "l", "st-20", {"state": "online", "gateway": "gw-1", "station": "st-20"})
    assert {k: v["state"] for k, v in stations(s).items()} == {"st-10": "online", "st-20": "online"}
    # the broker publishes the will: only the gateway's topic changes, the stations' stay "online"
    s.on_gateway_status(
        "gw-1",
        {"state": "offline", "site": "s", "line": "l", "stations": ["st-10", "st-20"], "reason": "connection lost"},
    )
    seen = stations(s)
    assert {k: v["state"] for k, v in seen.items()} == {"st-10": "offline", "st-20": "offline"}
    assert seen["st-10"]["reason"] == "connection lost"
    s.on_gateway_status("gw-1", {"state": "online", "site": "s", "line": "l", "stations": ["st-10", "st-20"]})
    assert stations(s)["st-20"]["state"] == "online"


def test_counts_per_shift_count_each_record_once_and_only_in_the_shift() -> None:
    s = state(records_per_station=3)
    s.on_records("s", "l", "st-10", [record(1), record(2, verdict="fail"), record(3, kind="part", verdict="reject")])
    s.on_records("s", "l", "st-10", [record(2, verdict="fail")])  # redelivered (at least once)
    s.on_records("s", "l", "st-10", [record(4, minutes=-300)])  # from the previous shift (a backlog)
    s.on_alert(alert("r2"))
    s.on_alert(alert("r2"), retained=True)  # the retained copy after a reconnect
    s.on_alert(alert("r2", kind="trend"))  # a second alert about the same value
    s.on_alert(alert("r0", minutes=-300))  # raised in the previous shift
    st = stations(s)["st-10"]
    assert st["counts"] == {"records": 3, "fails": 1, "alerts": 2}
    assert [r["id"] for r in st["records"]] == ["r4", "r3", "r2"]  # the newest first, at most 3
    # newest first; alerts of one moment (one value) with the latest arrival on top
    assert [a["key"] for a in s.snapshot()[1]["alerts"]] == ["r2:trend", "r2:out_of_tolerance", "r0:out_of_tolerance"]


def test_a_new_shift_starts_the_counts_again() -> None:
    clock = Clock(NOW)
    s = state(clock)
    s.on_records("s", "l", "st-10", [record(1, verdict="fail")])
    assert stations(s)["st-10"]["counts"]["fails"] == 1
    clock.now = utc(2026, 11, 21, 14, 0, 1).timestamp()
    s.tick()
    snap = s.snapshot()[1]
    assert snap["shift"]["label"] == "14:00–22:00"
    assert stations(s)["st-10"]["counts"] == {"records": 0, "fails": 0, "alerts": 0}


def test_an_acknowledgement_record_marks_the_alert_on_every_page() -> None:
    s = state()
    s.on_alert(alert("r9"))
    seq = s.hub.seq
    audit = {
        "kind": "audit",
        "id": "a1",
        "gateway": "gw-1",
        "seq": 10,
        "recorded_at": at(1),
        "event": "alert_ack",
        "by": "sam",
        "subject": "r9",
        "detail": "alert acknowledged: probe contaminated",
    }
    s.on_records("s", "l", "st-10", [audit])
    (only,) = s.snapshot()[1]["alerts"]
    assert only["ack"] == {"by": "sam", "comment": "probe contaminated", "at": at(1), "record": "a1"}
    got = s.hub.wait(seq, 0)
    assert got is not None
    assert any(b"event: ack" in e and b"probe contaminated" in e for e in got[1])
    # an alert that arrives after its acknowledgement (a retained one) shows it at once
    s.on_alert(alert("r9", kind="trend"), retained=True)
    assert all(a["ack"] is not None for a in s.snapshot()[1]["alerts"])


def test_the_event_ring_tells_a_slow_reader_to_start_over() -> None:
    s = state()
    seq, _ = s.snapshot()
    for i in range(2100):
        s.on_alert(alert(f"r{i}"))
    assert s.hub.wait(seq, 0) is None
    latest = s.hub.seq
    assert s.hub.wait(latest, 0) == (latest, [])


def test_seqset() -> None:
    seen = SeqSet()
    assert all(seen.add(i) for i in (1, 2, 3, 7, 5, 6, 4))
    assert len(seen) == 1
    assert not seen.add(5) and not seen.add(1)
    assert seen.add(10) and len(seen) == 2


def test_record_messages_are_read_as_sealed_blocks() -> None:
    message = block_line(record(1), record(2, verdict="fail")) + b"\n" + block_line(record(3))
    found, bad = records_in_message(message)
    assert bad == 0
    assert [(r["id"], r["seq"], r["station"], r["gateway"]) for r in found] == [
        ("r1", 1, "st-10", "gw-1"),
        ("r2", 2, "st-10", "gw-1"),
        ("r3", 3, "st-10", "gw-1"),
    ]
    assert found[0]["recorded_at"] == at(0) and found[1]["verdict"] == "fail"
    assert not {"hash", "prev_hash", "signature"} & set(found[0])


def test_lines_that_are_not_sealed_blocks_are_counted_not_shown() -> None:
    genuine = block_line(record(1))
    tampered = genuine.replace(b'"12.001"', b'"12.002"')
    old_format = json.dumps(record(2)).encode()  # a record of the first evidence format
    found, bad = records_in_message(b"\n".join([tampered, old_format, b"\xff\xfe", b"", genuine]))
    assert [r["id"] for r in found] == ["r1"] and bad == 3
