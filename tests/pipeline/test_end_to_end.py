"""Simulator -> gateway -> real Mosquitto -> recorder -> real InfluxDB, then trace and verify."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from collector import cli
from collector.chain import blocks
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import count_points

TRACE_FIELDS = (
    "id",
    "gateway",
    "seq",
    "recorded_at",
    "clock_synced",
    "site",
    "line",
    "station",
    "operator",
    "part_number",
    "plan_revision",
    "serial",
    "lot",
    "work_order",
    "characteristic",
    "characteristic_name",
    "nominal",
    "lsl",
    "usl",
    "unit",
    "decimals",
    "criticality",
    "gauge",
    "gauge_calibration_due",
    "device",
    "channel",
    "measured_at",
    "raw",
    "raw_encoding",
    "reading_value",
    "reading_unit",
    "value",
    "judged_value",
    "deviation",
    "verdict",
    "schema_version",
)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_readings_become_traceable_verified_records(
    stack_config, caliper: MitutoyoSimulator, v1_store: InfluxV1Store, capsys: pytest.CaptureFixture[str]
) -> None:
    path, cfg = stack_config()
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    recorder.start()
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.publisher.connected and recorder.subscribed.is_set(), what="both connected")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        values = [
            Decimal("12.003"),
            Decimal("12.00"),
            Decimal("11.950"),
            Decimal("12.07"),  # part 1 D1, L1; part 2
            Decimal("12.020"),
            Decimal("11.95"),
        ]
        for i, v in enumerate(values):
            caliper.send_value(v.quantize(Decimal("0.001")))
            if i == 2:  # a garbled frame mid-stream is rejected and costs nothing else
                caliper.send_garbage(b"01A+0?12.000\r")
        wait_for(lambda: count_points(v1_store) == len(values), timeout=15, what="all records in InfluxDB")
    finally:
        gateway.stop()
        recorder.stop()

    assert gateway.stats.device_events["caliper-1:bad_frame"] == 1
    assert gateway.stats.measurements == len(values)
    assert gateway.stats.by_kind["part"] == 3 and gateway.stats.by_kind["nonconformance"] == 2
    # 11.950 on D1 (below 11.980) and 12.07 on L1 (above 12.05) each open an alarm episode, which
    # the next good value of that characteristic (12.020, 11.95) closes: four alert messages
    assert gateway.stats.alerts == 4

    code, out, err = run_cli(capsys, "trace", "--config", str(path), "--serial", "HX000001")
    assert code == 0, err
    history = json.loads(out)
    part1 = [r for r in history if r["kind"] == "measurement"]
    assert [r["characteristic"] for r in part1] == ["D1", "L1"]
    verdicts = [r for r in history if r["kind"] == "part"]
    assert len(verdicts) == 1 and verdicts[0]["verdict"] == "accept"
    assert verdicts[0]["records"] == [r["id"] for r in part1] and verdicts[0]["released_by"] == "op-117"
    for r in part1:
        missing = [f for f in TRACE_FIELDS if f not in r]
        assert not missing, missing
        assert r["serial"] == "HX000001" and r["lot"] == "L-1" and r["work_order"] == "WO-1"
        assert r["operator"] == "op-117" and r["gauge"] == "CAL-0042" and r["gauge_calibration_due"] == "2027-06-30"
        assert r["plan_revision"] == "C" and r["device"] == "caliper-1" and r["raw"].endswith("\r")
    assert part1[0]["judged_value"] == "12.003" and part1[0]["verdict"] == "pass"
    assert part1[0]["lsl"] == "11.980" and part1[0]["usl"] == "12.020"
    assert part1[1]["judged_value"] == "12.00" and part1[1]["value"] == "12.000"

    code, out, _ = run_cli(capsys, "trace", "--config", str(path), "--serial", "HX000002", "--format", "csv")
    assert code == 0
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["kind"] == "measurement"]
    assert [(r["characteristic"], r["judged_value"], r["verdict"], r["limit"]) for r in rows] == [
        ("D1", "11.950", "fail", "lower"),
        ("L1", "12.07", "fail", "upper"),
    ]

    head = gateway.journal.head[0]
    keys = str(path.parent / "keys")
    code, out, _ = run_cli(capsys, "verify", "--config", str(path), "--keys", keys)
    assert code == 0, out
    assert "RESULT: intact" in out and f"gateway gw-test-1 (registered): {head} record(s) in" in out
    assert f"seq 1..{head}" in out
    assert all(r["raw_encoding"] == "text" and r["raw"].endswith("\r") for r in part1)

    # delete one record point: verify names it
    third = sorted(v1_store.query('SELECT "seq" FROM "inspection"'), key=lambda r: r["seq"])[2]
    v1_store.query(f'DELETE FROM "inspection" WHERE time = {third["time"]}u')
    assert count_points(v1_store) == 5
    code, out, _ = run_cli(capsys, "verify", "--config", str(path), "--keys", keys)
    assert code == 1
    assert f"gateway gw-test-1 seq {third['seq']}:" in out, out


def test_verify_names_an_edited_point(
    stack_config,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, cfg = stack_config()
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        for v in ("12.001", "12.010", "11.999"):
            caliper.send_value(Decimal(v))
        wait_for(lambda: count_points(v1_store) == 3, timeout=15, what="3 records in InfluxDB")
    finally:
        gateway.stop()
        recorder.stop()
    keys = str(tmp_path / "keys")
    assert run_cli(capsys, "verify", "--config", str(path), "--keys", keys)[0] == 0

    # overwrite the value of the second measurement in place (same series and time): a quiet "correction"
    row = sorted(v1_store.query('SELECT * FROM "inspection"'), key=lambda r: r["seq"])[1]
    n = row["seq"]
    tags = ",".join(
        f"{k}={row[k]}"
        for k in ("characteristic", "gateway", "kind", "line", "part_number", "site", "station", "verdict")
    )
    v1_store.write_lines([f"inspection,{tags} value=12.0 {row['time']}"])
    code, out, _ = run_cli(capsys, "verify", "--config", str(path), "--keys", keys)
    assert code == 1
    assert f"ALTERED: gateway gw-test-1 seq {n}" in out, out

    # and the block rewritten to match, its hash computed again: the signature no longer matches
    block_row = next(b for b in v1_store.query('SELECT * FROM "block"') if b["first_seq"] <= n <= b["last_seq"])
    block = blocks.read(block_row["payload"])
    records = [dict(r, reading_value="12.000", value="12.000", judged_value="12.000") for r in block.records]
    forged = blocks.seal(
        records, gateway=block.gateway, site=block.site, line=block.line, station=block.station,
        first_seq=block.first_seq, recorded_at=block.recorded_at, clock_synced=block.clock_synced,
        prev_hash=block.prev_hash, signer=None,
    )  # fmt: skip
    text = forged.text.replace('"key_id":null', f'"key_id":"{block.key_id}"')  # claims the gateway's key
    text = blocks.seal_text(text[: text.rfind(',"hash"')] + "}", None)[0][:-1] + f',"signature":"{"00" * 64}"}}'
    tags = f"gateway={block.gateway},line={block.line},site={block.site},station={block.station}"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    digest = blocks.read(text).hash
    v1_store.write_lines([f'block,{tags} hash="{digest}",payload="{escaped}" {block_row["time"]}'])
    code, out, _ = run_cli(capsys, "verify", "--config", str(path), "--keys", keys, "--json")
    assert code == 1
    report = json.loads(out)
    kinds = {(f["kind"], f["seq"]) for f in report["findings"]}
    assert ("FORGED", block.first_seq) in kinds, report["findings"]
    # the gateway's checkpoint at stop (stored by the recorder) names the genuine head block
    assert any(k == "REHASHED" for k, _ in kinds), report["findings"]
