"""The inspection workflow end to end: calibration gate, out-of-tolerance with its
nonconformance and disposition, re-measure and invalidation through the MQTT command
topic, signed by people of the user register, all found in InfluxDB, attributed and in
the gateway's chain."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector import cli
from collector import config as config_mod
from collector.gateway.daemon import Gateway
from collector.mqtt import topics
from collector.recorder.daemon import Recorder
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import StackConfig, build_config, count_all, store_of, write_config
from tests.pipeline.people import signer, write_register


class Operator:
    """A client that sends commands to a station and collects replies and alerts."""

    def __init__(self, broker: Mosquitto, prefix: str, station: str = "st-10") -> None:
        self.topic = topics.station_topic(prefix, "plant-1", "line-a", station, "command")
        self.ack_topic = topics.station_topic(prefix, "plant-1", "line-a", station, "ack")
        self.alert_topic = topics.station_topic(prefix, "plant-1", "line-a", station, "alert")
        self.replies: dict[str, dict[str, Any]] = {}
        self.alerts: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(self.topic + "/reply", 1), (self.ack_topic + "/reply", 1), (self.alert_topic, 1)])
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic == self.alert_topic:
            self.alerts.append(body)
        else:
            self.replies[str(body.get("request_id"))] = body

    def send(
        self, command: str, signed_by: str | None = None, *, topic: str | None = None, **args: Any
    ) -> dict[str, Any]:
        """A command on the station's command topic, signed by ``signed_by`` (with their secret)."""
        request_id = uuid.uuid4().hex
        body: dict[str, Any] = {"command": command, "args": args, "request_id": request_id}
        if signed_by is not None:
            body["signer"] = signer(signed_by)
        self.client.publish(topic or self.topic, json.dumps(body), qos=1).wait_for_publish(5)
        return wait_for(lambda: self.replies.get(request_id), what=f"the reply to {command}")

    def ack(self, command: str = "ack_alert", **args: Any) -> dict[str, Any]:
        """As a dashboard does: on the acknowledgement topic, its user in ``by``."""
        return self.send(command, topic=self.ack_topic, **args)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def keys_of(path: str | Path) -> str:
    """The recorders' key directory the pipeline configuration sits beside."""
    return str(Path(path).parent / "keys")


def history(capsys: pytest.CaptureFixture[str], path: str, *args: str) -> list[dict[str, Any]]:
    assert cli.main(["trace", "--config", path, "--keys", keys_of(path), *args]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_out_of_tolerance_remeasure_invalidation_and_disposition(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    people = {"register": str(write_register(tmp_path)), "checks_per_second": 50}
    data = build_config(tmp_path, broker, influxd, database, topic_prefix, gateway={"people": people})
    data["stations"][0]["part"]["operator"] = "op-42"  # in the register, qualified for every plan
    path = write_config(tmp_path, data)
    cfg = config_mod.load(path)
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    op = Operator(broker, topic_prefix)
    try:
        wait_for(lambda: gateway.publisher.connected, what="gateway connected")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        caliper.send_value(Decimal("12.035"))  # D1 of HX000001: above 12.020
        wait_for(lambda: any(a["kind"] == "out_of_tolerance" for a in op.alerts), what="the alert")
        alert = next(a for a in op.alerts if a["kind"] == "out_of_tolerance")
        assert (alert["severity"], alert["serial"], alert["characteristic"], alert["limit"]) == (
            "critical",
            "HX000001",
            "D1",
            "upper",
        )
        first_id = alert["record_id"]

        unsigned = op.send("remeasure", reason="gauge_not_square")
        assert unsigned == {
            "request_id": unsigned["request_id"],
            "command": "remeasure",
            "ok": False,
            "error": "remeasure needs signer credentials ({user, secret}) on the command topic",
            "refused": "forbidden",
        }
        reply = op.send("remeasure", "op-42", reason="gauge_not_square")
        assert reply["ok"] and "re-measure D1" in reply["message"]
        caliper.send_value(Decimal("12.004"))  # the re-measure, in tolerance
        caliper.send_value(Decimal("12.01"))  # L1 completes the part
        wait_for(lambda: gateway.stats.by_kind["part"] == 1, what="the part verdict")

        bad = op.send("remeasure", "op-42", reason="")
        assert not bad["ok"] and bad["error"] == "reason must not be empty"
        unknown = op.send("teleport")
        assert not unknown["ok"] and "unknown command" in unknown["error"]
        incomplete = op.send("invalidate", "qe-7", reason="x")
        assert not incomplete["ok"] and incomplete["error"] == "invalidate needs record_id"

        nc_id = next(r for r in records(gateway) if r["kind"] == "nonconformance")["id"]
        reply = op.send("dispose", "qe-7", nonconformance_id=nc_id, decision="use_as_is")
        assert not reply["ok"] and "concession" in reply["error"]
        reply = op.send("dispose", "sv-3", nonconformance_id=nc_id, decision="rework", comment="re-bore")
        assert (reply["ok"], reply["error"]) == (False, "dispose needs the role quality (sv-3 has supervisor)")
        reply = op.send("dispose", "qe-7", nonconformance_id=nc_id, decision="rework", comment="re-bore")
        assert reply["ok"]
        reply = op.send("invalidate", "qe-7", record_id=first_id, reason="probe contaminated")
        assert reply["ok"]
        # a dashboard acknowledges on its own topic, for its signed-in user; nothing else goes there
        assert op.ack(record_id=first_id, by="sam", comment="seen, re-bored")["ok"]
        wrong_topic = op.ack("invalidate", record_id=first_id, reason="x")
        assert wrong_topic["error"] == (
            "only ack_alert and dispose may be sent on the acknowledgement topic (acknowledgement topic)"
        )
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=20, what="every record in InfluxDB")
        stored_alerts = wait_for(
            lambda: v1_store.query(f'SELECT * FROM "alert" WHERE "record_id" = \'{first_id}\''),
            what="the alert kept in InfluxDB",
        )
    finally:
        op.close()
        gateway.stop()
        recorder.stop()
    (kept,) = stored_alerts
    assert (kept["kind"], kept["severity"], kept["station"], kept["serial"], kept["limit"]) == (
        "out_of_tolerance",
        "critical",
        "st-10",
        "HX000001",
        "upper",
    )

    trail = history(capsys, str(path), "--serial", "HX000001")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in trail:
        by_kind.setdefault(r["kind"], []).append(r)
    d1 = [r for r in by_kind["measurement"] if r["characteristic"] == "D1"]
    assert [(r["judged_value"], r["verdict"]) for r in d1[:2]] == [("12.035", "fail"), ("12.004", "pass")]
    assert d1[1]["supersedes"] == d1[0]["id"] and d1[1]["reason"] == "gauge_not_square"
    assert (d1[1]["operator"], d1[1]["signed_by"], d1[1]["signature_meaning"]) == ("op-42", "op-42", "remeasured")
    (part,) = by_kind["part"]
    assert part["verdict"] == "accept" and part["records"][0] == d1[1]["id"]  # the latest value counts
    (nc,) = by_kind["nonconformance"]
    assert nc["measurement_id"] == d1[0]["id"] and nc["limit"] == "upper"
    (disp,) = by_kind["disposition"]
    assert (disp["nonconformance_id"], disp["decision"], disp["by"], disp["serial"]) == (
        nc["id"],
        "rework",
        "qe-7",
        "HX000001",
    )
    assert (disp["signer_name"], disp["signature_meaning"], disp["signature_method"]) == (
        "Quentin Eder",
        "dispositioned",
        "secret",
    )
    (inv,) = by_kind["invalidation"]
    assert (inv["target"], inv["by"], inv["reason"]) == (d1[0]["id"], "qe-7", "probe contaminated")
    assert inv["signature_meaning"] == "invalidated"
    station_trail = history(capsys, str(path), "--station", "st-10")
    audits = {(r["event"], r.get("by"), r.get("signature_method")) for r in station_trail if r["kind"] == "audit"}
    assert ("alert_ack", "sam", "dashboard") in audits
    refused = [r for r in station_trail if r["kind"] == "audit" and r["event"] == "command_refused"]
    assert [(r["by"], r["subject"]) for r in refused] == [
        (None, "remeasure"),
        ("sv-3", "dispose"),
        (None, "invalidate"),
    ]
    # the original out-of-tolerance value is still there, unchanged
    assert d1[0]["judged_value"] == "12.035"
    assert cli.main(["verify", "--config", str(path), "--keys", keys_of(path)]) == 0
    assert "RESULT: intact" in capsys.readouterr().out

    # the quality team's exports of the same history
    assert (
        cli.main(["trace", "--config", str(path), "--keys", keys_of(path), "--serial", "HX000001", "--format", "dfq"])
        == 0
    )
    dfq = capsys.readouterr().out
    assert "K1001 HX-4711" in dfq and "K2001/1 D1" in dfq
    values = [line for line in dfq.splitlines() if line.startswith(("K0001/1 ", "K0002/1 "))]
    # one value set per part: the re-measure in the part's set, the void first value after it
    assert values == ["K0001/1 12.004", "K0002/1 0", "K0001/1 12.035", "K0002/1 129"]
    report_file = path.parent / "HX000001.html"
    assert cli.main(["report", "--config", str(path), "--serial", "HX000001", "--out", str(report_file)]) == 0
    assert capsys.readouterr().out.strip() == str(report_file)
    page = report_file.read_text()
    assert "HX000001" in page and "12.035" in page and "hashes intact" in page
    # the process behind the part, read from the store: D1's values of the window (too few for a figure here)
    assert '<tr data-characteristic="D1"><td>D1</td>' in page and 'Page " counter(page)' in page
    assert (
        cli.main(
            [
                "impact",
                "--config",
                str(path),
                "--gauge",
                "CAL-0042",
                "--since",
                "2020-01-01",
                "--offset",
                "0.020",
                "--json",
            ]
        )
        == 0
    )
    impact = json.loads(capsys.readouterr().out)
    # corrected by 0.020: D1 12.035 -> 12.015 would have passed; 12.004 -> 11.984 and L1 12.01 -> 11.99 still pass
    assert impact["gauge"] == "CAL-0042" and impact["summary"]["values"] == 3 and impact["summary"]["parts"] == 1
    assert impact["summary"]["suspect_parts"] == 0
    shot_dir = os.environ.get("SCREENSHOT_DIR")
    if shot_dir:  # a reviewer's copy of the printable report
        Path(shot_dir).mkdir(parents=True, exist_ok=True)
        (Path(shot_dir) / "part-report.html").write_text(page)


def records(gateway: Gateway) -> list[dict[str, Any]]:
    return [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]


def test_an_overdue_gauge_is_refused_recorded_and_alerted(
    stack_config: StackConfig,
    broker: Mosquitto,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    topic_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = stack_config()
    text = path.read_text().replace("calibration_due: '2027-06-30'", "calibration_due: '2026-01-31'")
    assert text != path.read_text()
    path.write_text(text)
    cfg = config_mod.load(path)
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    op = Operator(broker, topic_prefix)
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        caliper.send_value(Decimal("12.001"))
        wait_for(lambda: any(a["kind"] == "refused" for a in op.alerts), what="the refusal alert")
        # no user register here: nobody can sign, so the command topic takes nothing at all
        unsigned = op.send("patrol")
        assert unsigned["error"] == (
            "patrol needs a signature, and this gateway has no user register: nobody can be authenticated "
            "here (gateway.people.register)"
        )
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=20, what="every record in InfluxDB")
    finally:
        op.close()
        gateway.stop()
        recorder.stop()
    assert gateway.stats.measurements == 0 and gateway.stats.refused == 1
    refusals = [r for r in history(capsys, str(path), "--station", "st-10") if r["kind"] == "refusal"]
    (refusal,) = refusals
    assert refusal["reason_code"] == "gauge_overdue" and refusal["gauge"] == "CAL-0042"
    assert refusal["gauge_calibration_due"] == "2026-01-31" and refusal["reading_value"] == "12.001"
    assert refusal["raw"] == "01A+0012.001\r" and refusal["serial"] == "HX000001" and refusal["operator"] == "op-117"


def test_verify_report_for_an_auditor_over_a_station_and_time_range(
    stack_config: StackConfig, caliper: MitutoyoSimulator, v1_store: InfluxV1Store, capsys: pytest.CaptureFixture[str]
) -> None:
    path, cfg = stack_config()
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        for v in ("12.001", "12.00", "11.999", "12.01"):
            caliper.send_value(Decimal(v))
        wait_for(lambda: gateway.stats.by_kind["part"] == 2, what="two parts")
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=20, what="every record in InfluxDB")
    finally:
        gateway.stop()
        recorder.stop()
    keys = keys_of(path)
    assert (
        cli.main(["verify", "--config", str(path), "--keys", keys, "--station", "st-10", "--from", "2020-01-01"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("EVIDENCE VERIFICATION REPORT")
    assert f"gateway gw-test-1 (registered): {head} record(s) in" in out and f"seq 1..{head}" in out
    assert "stations st-10 (" in out and "measurement 4" in out and "part 2" in out
    assert "time range   2020-01-01 .. now" in out and "RESULT: intact" in out
    assert cli.main(["verify", "--config", str(path), "--keys", keys, "--station", "elsewhere"]) == 0
    assert "no gateways found" in capsys.readouterr().out
