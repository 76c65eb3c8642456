"""Whole inspections through the simulators: a manual station with a badge, part labels from
a scanner, a caliper and a balance; an automatic station whose PLC triggers each part over
Modbus. Everything is found in InfluxDB, attributed; the PLC's andon coil is switched."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collector import config as config_mod
from collector.evidence.trace import TraceFilter, trace
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from simulators.mt_sics import MtSicsSimulator
from simulators.mt_sics import Scenario as ScaleScenario
from simulators.plc import PlcSimulator
from simulators.plc import Scenario as PlcScenario
from simulators.scanner import ScannerSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import build_config, count_all, store_of, write_config

LABELS = r"^(?:B:(?P<operator>op-\d+)|(?P<part_number>HX-\d{4})\|(?P<serial>HX\d{6})\|(?P<lot>L[\w-]+))$"


def stations_config(tmp: Path, plc_port: int, base: dict[str, Any]) -> dict[str, Any]:
    dev = tmp / "dev"
    base["gauges"] += [
        {"id": "BAL-0007", "type": "scale", "calibration_due": "2099-03-31"},
        {"id": "PLC-PRESS-3", "type": "plc-sensor", "calibration_due": "2099-01-15"},
    ]
    base["plans"] = [
        {
            "part_number": "HX-4711",
            "revision": "C",
            "characteristics": [
                {"id": "D1", "name": "Bore diameter", "nominal": "12.000", "lower_tol": "-0.020",
                 "upper_tol": "0.020", "unit": "mm", "decimals": 3},
                {"id": "L1", "name": "Overall length", "nominal": "45.00", "lower_tol": "-0.05",
                 "upper_tol": "0.05", "unit": "mm", "decimals": 2},
                {"id": "W1", "name": "Mass", "nominal": "245.0", "lower_tol": "-1.5", "upper_tol": "1.5",
                 "unit": "g", "decimals": 1},
            ],
        },
        {
            "part_number": "PF-220",
            "revision": "B",
            "characteristics": [
                # the press's force runs at 1250 N: above this limit on purpose, so the andon must go on
                {"id": "F1", "name": "Press-in force", "lsl": "1100", "usl": "1200", "unit": "N", "decimals": 0},
                {"id": "T2", "name": "Torque", "nominal": "12.50", "lower_tol": "-1.00", "upper_tol": "1.00",
                 "unit": "Nm", "decimals": 2},
                {"id": "L2", "name": "Pressed length", "nominal": "84.20", "lower_tol": "-1.00",
                 "upper_tol": "1.00", "unit": "mm", "decimals": 2},
            ],
        },
    ]  # fmt: skip
    base["stations"] = [
        {
            "id": "st-10",
            "plan": "HX-4711",
            "part": None,
            "require_operator": True,
            "scan_pattern": LABELS,
            "devices": [
                {"id": "caliper-1", "driver": "mitutoyo", "gauge": "CAL-0042", "characteristics": ["D1", "L1"],
                 "port": str(dev / "caliper-1"), "reconnect_min": 0.05, "reconnect_max": 0.5},
                {"id": "scale-1", "driver": "mt-sics", "gauge": "BAL-0007", "characteristics": ["W1"],
                 "ask_when_next": True, "port": str(dev / "scale-1"), "mode": "request", "command": "S",
                 "poll_interval": None, "response_timeout": 5.0},
                {"id": "scanner-1", "driver": "scanner", "port": str(dev / "scanner-1"), "format": "raw"},
            ],
        },
        {
            "id": "st-20",
            "plan": "PF-220",
            "part": {"part_number": "PF-220", "operator": None},
            "require_operator": False,  # automatic: the PLC measures
            "andon": {"device": "plc-1", "point": "andon"},
            "devices": [
                {
                    "id": "plc-1",
                    "driver": "modbus",
                    "gauge": "PLC-PRESS-3",
                    "channels": {"force": "F1", "torque": "T2", "length": "L2"},
                    "serial_channel": "serial",
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "port": plc_port,
                    "timeout": 0.5,
                    "slaves": [{
                        "unit": 1,
                        "poll_interval": 0.05,
                        "points": [
                            {"name": "serial", "address": 10, "type": "string", "length": 10},
                            {"name": "force", "address": 20, "type": "float32", "order": "CDAB", "unit": "N"},
                            {"name": "torque", "address": 22, "type": "float32", "order": "CDAB", "unit": "Nm"},
                            {"name": "length", "address": 24, "type": "float32", "order": "CDAB", "unit": "mm"},
                            {"name": "andon", "table": "coil", "address": 0, "poll": False},
                            {"name": "part_ack", "table": "coil", "address": 1},
                            {"name": "part_done", "table": "discrete", "address": 0},
                        ],
                        "trigger": {
                            "point": "part_done",
                            "mode": "rise",
                            "on_trigger": ["serial", "force", "torque", "length"],
                            "acknowledge": {"point": "part_ack", "value": 1},
                        },
                    }],
                }
            ],
        },
    ]  # fmt: skip
    return base


@pytest.fixture
def plc() -> Iterator[PlcSimulator]:
    sim = PlcSimulator([1], PlcScenario(seed=3, cycle_time=None, word_order="CDAB")).start()
    try:
        yield sim
    finally:
        sim.stop()


def test_manual_and_automatic_stations_end_to_end(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    topic_prefix: str,
    v1_store: InfluxV1Store,
    plc: PlcSimulator,
) -> None:
    (tmp_path / "dev").mkdir()
    data = stations_config(tmp_path, plc.port, build_config(tmp_path, broker, influxd, database, topic_prefix))
    path = write_config(tmp_path, data)
    cfg = config_mod.load(path)
    caliper = MitutoyoSimulator(tmp_path / "dev" / "caliper-1")
    scale = MtSicsSimulator(
        tmp_path / "dev" / "scale-1", ScaleScenario(nominal=Decimal("0.00"), capacity=Decimal("620.00"))
    )
    scanner = ScannerSimulator(tmp_path / "dev" / "scanner-1")
    scale.start()
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    try:
        for dev in ("caliper-1", "scale-1", "scanner-1", "plc-1"):

            def connected(dev: str = dev) -> int | None:
                return gateway.stats.device_events.get(f"{dev}:connected")

            wait_for(connected, timeout=15, what=f"{dev} connected")
        # the manual station: nothing counts before a badge and a part label
        caliper.send_value(Decimal("12.001"))
        wait_for(lambda: gateway.stats.by_kind["refusal"] == 1, what="a refusal: no part, no operator")
        scanner.scan("B:op-42")
        scanner.scan("HX-4711|HX000777|L-9")
        wait_for(lambda: gateway.stations["st-10"].context.get("serial") == "HX000777", what="the part label")
        scale.load(Decimal("245.30"))  # the part waits on the pan; the gateway asks when W1 is next
        caliper.send_value(Decimal("12.004"))
        caliper.send_value(Decimal("45.02"))
        wait_for(lambda: gateway.stats.by_kind["part"] >= 1, timeout=15, what="the manual part's verdict")
        # the automatic station: the PLC finishes a part and raises part-done
        part = plc.new_part(1)
        wait_for(lambda: plc.acknowledged(1) == [part.counter], timeout=15, what="the PLC's handshake")
        wait_for(lambda: plc.bits(1, "coil", 0, 1) == [True], timeout=10, what="the andon coil switched on")
        wait_for(lambda: gateway.stats.by_kind["part"] >= 2, timeout=15, what="the automatic part's verdict")
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=20, what="every record in InfluxDB")
        wait_for(lambda: v1_store.query('SELECT * FROM "alert"'), what="the andon's alert kept")
    finally:
        gateway.stop()
        recorder.stop()
        for sim in (caliper, scale, scanner):
            sim.close()

    manual = trace(v1_store, TraceFilter(serial="HX000777"))
    values = {r["characteristic"]: r for r in manual if r["kind"] == "measurement"}
    assert {k: (v["judged_value"], v["verdict"], v["gauge"], v["operator"]) for k, v in values.items()} == {
        "D1": ("12.004", "pass", "CAL-0042", "op-42"),
        "L1": ("45.02", "pass", "CAL-0042", "op-42"),
        "W1": ("245.3", "pass", "BAL-0007", "op-42"),
    }
    assert all(v["lot"] == "L-9" and v["calibration_status"] == "valid" for v in values.values())
    (verdict,) = [r for r in manual if r["kind"] == "part"]
    assert (verdict["verdict"], verdict["released_by"]) == ("accept", "op-42")

    auto = trace(v1_store, TraceFilter(serial=part.serial))
    measured = {r["characteristic"]: r for r in auto if r["kind"] == "measurement"}
    assert set(measured) == {"F1", "T2", "L2"}
    assert measured["F1"]["verdict"] == "fail" and measured["F1"]["device"] == "plc-1"
    assert Decimal(measured["L2"]["reading_value"]) == part.length
    (auto_verdict,) = [r for r in auto if r["kind"] == "part"]
    assert (auto_verdict["verdict"], auto_verdict["released_by"]) == ("reject", "auto")
    (nc,) = [r for r in auto if r["kind"] == "nonconformance"]
    assert nc["measurement_id"] == measured["F1"]["id"]

    station10 = trace(v1_store, TraceFilter(station="st-10"))
    audits = [r for r in station10 if r["kind"] == "audit"]
    assert {("sign_in", "op-42"), ("config_loaded", "system")} <= {(a["event"], a["by"]) for a in audits}
    (refusal,) = [r for r in station10 if r["kind"] == "refusal"]
    assert refusal["reason_code"] == "no_part" and refusal["reading_value"] == "12.001"
    alerts = v1_store.query('SELECT * FROM "alert"')
    assert any(
        a["station"] == "st-20" and a["kind"] == "out_of_tolerance" and a["serial"] == part.serial for a in alerts
    )
