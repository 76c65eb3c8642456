"""``collector trace`` against a real InfluxDB: records come from verified blocks, never from columns."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from collector import cli
from collector.chain import blocks
from collector.chain.blocks import format_utc_us
from collector.chain.keys import Ed25519Signer, KeyRing, generate
from collector.evidence.trace import TraceFilter, trace, trace_evidence, with_related
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import bucket, escape_string_field, lines_for_block
from tests.store.chains import BASE_US, GatewayChain, event, forge, measurement, part

pytestmark = pytest.mark.services


@pytest.fixture
def plant(v1_store: InfluxV1Store, keydir: Path) -> tuple[InfluxV1Store, KeyRing, dict[str, str]]:
    """Two gateways; part SN-1 measured at both, re-measured, invalidated and disposed of later."""
    gw1, gw2 = GatewayChain("gw-1", keydir), GatewayChain("gw-2", keydir, line="line-3", next_us=BASE_US + 10_000)
    m1 = measurement("SN-1", "bore-d", "12.030", verdict="fail", lot="L-1")
    nc = event("nonconformance", measurement_id=m1["id"], serial="SN-1", characteristic="bore-d")
    other = measurement("SN-2", "bore-d", "12.001", lot="L-1")  # another part in the same PLC block
    m2 = measurement("SN-1", "bore-d", "12.010", supersedes=m1["id"], reason="fixture", lot="L-1")
    m3 = measurement("SN-1", "len", "44.990", lot="L-1", gauge="G-99")
    p = part("SN-1", [m2["id"], m3["id"]], verdict="accept", lot="L-1")
    ids = {"m1": m1["id"], "nc": nc["id"], "m2": m2["id"], "m3": m3["id"], "part": p["id"]}
    sealed = [
        gw1.seal([m1, nc, other], station="st-10"),
        gw1.seal([m2], station="st-10"),
        gw2.seal([m3], station="st-30"),
        gw2.seal([p], station="st-30"),
        gw1.seal([measurement("SN-3", lot="L-2")], station="st-10"),
    ]
    # written later and without the part's context: found only by the ids they point at
    inv = event("invalidation", target=m3["id"], by="qe-1", reason="wrong gauge")
    disp = event("disposition", nonconformance_id=nc["id"], decision="rework", by="qe-1", comment=None)
    sealed += [gw2.seal([inv], station="st-30", at_us=BASE_US + 50_000), gw1.seal([disp], at_us=BASE_US + 60_000)]
    ids.update(inv=inv["id"], disp=disp["id"])
    v1_store.write_lines([line for b in sealed for line in lines_for_block(b)])
    return v1_store, KeyRing.load(keydir), ids


def test_a_serial_traces_to_its_whole_history_from_verified_blocks(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
) -> None:
    store, keys, ids = plant
    found = trace_evidence(store, TraceFilter(serial="SN-1"), keys)
    got = [r["id"] for r in found.records]
    assert got == [ids[k] for k in ("m1", "nc", "m2", "m3", "part", "inv", "disp")]
    assert all(
        r["verified"] is True and r["verification"].startswith("verified: signed with key") for r in found.records
    )
    assert found.problems() == [] and found.blocks == 6
    first = found.records[0]
    assert (
        first["seq"] == 1
        and first["gateway"] == "gw-1"
        and first["station"] == "st-10"
        and first["schema_version"] == 2
    )
    assert first["recorded_at"] == format_utc_us(BASE_US) and found.records[1]["recorded_at"] == format_utc_us(
        BASE_US + 1
    )
    # SN-2 shares the first block but is not SN-1's
    assert "SN-2" not in {r.get("serial") for r in found.records}
    assert [r["id"] for r in trace(store, TraceFilter(serial="SN-1"), keys, related=False)] == got[:5]


def test_other_filters_reach_blocks_through_the_record_points(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
) -> None:
    store, keys, ids = plant
    by_gauge = trace(store, TraceFilter(gauge="G-99"), keys, related=False)
    assert [r["id"] for r in by_gauge] == [ids["m3"]], (ids, [(r["kind"], r.get("gauge"), r["id"]) for r in by_gauge])
    by_station = trace(store, TraceFilter(station="st-30", kind="part"), keys)
    assert [(r["kind"], r["id"]) for r in by_station] == [("part", ids["part"])], by_station
    lot = trace(store, TraceFilter(lot="L-1"), keys, related=False)
    assert {r.get("serial") for r in lot} == {"SN-1", "SN-2"}
    window = TraceFilter(characteristic="bore-d", start=format_utc_us(BASE_US + 3), end=format_utc_us(BASE_US + 1004))
    assert [r["id"] for r in trace(store, window, keys, related=False)] == [ids["m2"]]


def test_with_related_adds_what_points_at_given_records(plant: tuple[InfluxV1Store, KeyRing, dict[str, str]]) -> None:
    store, keys, ids = plant
    plain = trace(store, TraceFilter(serial="SN-1"), keys, related=False)
    assert [r["id"] for r in with_related(store, plain, keys)][-2:] == [ids["inv"], ids["disp"]]


def test_an_edited_column_does_not_change_what_is_printed(plant: tuple[InfluxV1Store, KeyRing, dict[str, str]]) -> None:
    store, keys, ids = plant
    [row] = store.query(f"SELECT * FROM inspection WHERE id = '{ids['m2']}'")
    store.write_lines(
        [
            "inspection,characteristic=bore-d,gateway=gw-1,kind=measurement,line=line-2,part_number=P-100,"
            f"site=plant-a,station=st-10,verdict=pass value=99.0 {row['time']}"
        ]
    )
    [m2] = [r for r in trace(store, TraceFilter(serial="SN-1"), keys) if r["id"] == ids["m2"]]
    assert m2["value"] == "12.010"


def test_a_point_without_a_block_is_never_printed_as_evidence(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
) -> None:
    store, keys, _ = plant
    store.write_lines(
        [
            'inspection,characteristic=bore-d,kind=measurement,station=st-10 seq=1i,serial="SN-1",value=11.0 '
            f"{BASE_US + 500}",
            "inspection,characteristic=bore-d,gateway=gw-1,kind=measurement,station=st-10 seq=77i,block_time="
            f'{BASE_US + 400}i,serial="SN-1" {BASE_US + 400}',
        ]
    )
    found = trace_evidence(store, TraceFilter(characteristic="bore-d"), keys, related=False)
    assert all(r["verified"] for r in found.records) and len(found.records) == 5  # 4 values and the nonconformance
    assert len(found.orphans) == 2
    assert any("gateway (none)" in o and "names no block" in o for o in found.orphans)
    assert any("not stored" in o for o in found.orphans)


def test_a_forged_block_is_marked_not_verified_and_a_false_index_entry_shows_nothing(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]], keydir: Path
) -> None:
    store, keys, _ = plant
    attacker = Ed25519Signer.from_file(generate("gw-1", keydir / "attacker")[0])
    template = blocks.read(store.query("SELECT payload FROM block WHERE gateway = 'gw-1' LIMIT 1")[0]["payload"])
    at = format_utc_us(BASE_US + 9_000_000)
    fake = forge(template, [measurement("SN-1", "bore-d", "12.000")], attacker, first_seq=99, recorded_at=at)
    store.write_lines(lines_for_block(fake))
    # an index entry that claims SN-1 is in the block of SN-3
    sn3_time = BASE_US + 4 * 1001 + 2
    store.write_lines(
        [
            f"lookup,bucket={bucket('serial', 'SN-1')} "
            f"gw:gw-1/st-10={escape_string_field('v', json.dumps(['SN-1']))} {sn3_time}"
        ]
    )
    found = trace_evidence(store, TraceFilter(serial="SN-1"), keys)
    forged = [r for r in found.records if r["seq"] == 99]
    assert len(forged) == 1 and forged[0]["verified"] is False and "FORGED" in forged[0]["verification"]
    assert "SN-3" not in {r.get("serial") for r in found.records}
    assert [p for p in found.problems() if "FORGED" in p]


# --- the command ----------------------------------------------------------------------------------


def config_file(tmp_path: Path, store: InfluxV1Store) -> str:
    path = tmp_path / "trace.yaml"
    path.write_text(f"influxdb:\n  kind: v1\n  url: {store._http.url}\n  database: {store.database}\n")
    return str(path)


def test_the_command_prints_json_csv_and_dfq(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
    tmp_path: Path,
    keydir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, ids = plant
    cfg = config_file(tmp_path, store)
    assert cli.main(["trace", "--config", cfg, "--keys", str(keydir), "--serial", "SN-1"]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [r["id"] for r in records][-2:] == [ids["inv"], ids["disp"]] and all(r["verified"] for r in records)
    assert "7 record(s) from 6 block(s)" in err
    assert cli.main(["trace", "--config", cfg, "--keys", str(keydir), "--serial", "SN-1", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 7 and {r["verified"] for r in rows} == {"true"} and rows[0]["block_hash"]
    out_dir = tmp_path / "dfq"
    code = cli.main(
        ["trace", "--config", cfg, "--keys", str(keydir), "--serial", "SN-1", "--format", "dfq", "--out", str(out_dir)]
    )
    assert code == 0 and [p.name for p in out_dir.iterdir()] == ["P-100_C.dfq"]


def test_the_command_without_keys_marks_records_unverified_and_refuses_dfq(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, _, _ = plant
    cfg = config_file(tmp_path, store)
    assert cli.main(["trace", "--config", cfg, "--serial", "SN-1"]) == 0
    out, err = capsys.readouterr()
    assert {r["verified"] for r in json.loads(out)} == {False} and "signatures not checked" in err
    assert cli.main(["trace", "--config", cfg, "--serial", "SN-1", "--format", "dfq"]) == 1
    assert "not verified evidence" in caplog.text


def test_the_command_exits_1_naming_what_is_not_evidence(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
    tmp_path: Path,
    keydir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, _ = plant
    store.write_lines(
        [f'inspection,characteristic=bore-d,kind=measurement seq=1i,serial="SN-1",value=11.0 {BASE_US + 500}']
    )
    code = cli.main(
        ["trace", "--config", config_file(tmp_path, store), "--keys", str(keydir), "--characteristic", "bore-d"]
    )
    out, err = capsys.readouterr()
    assert code == 1 and "not evidence: inspection point" in err and "names no block" in err
    assert all(r["verified"] for r in json.loads(out))  # what is printed is evidence


def test_the_report_command_shows_each_record_verified_and_the_chains(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
    tmp_path: Path,
    keydir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, ids = plant
    out = tmp_path / "SN-1.html"
    argv = ["report", "--config", config_file(tmp_path, store), "--keys", str(keydir), "--serial", "SN-1"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<td class="pass">verified: signed with key') == 7 and "NOT VERIFIED" not in page
    assert "Store verification: intact." in page and "signatures checked against the key directory" in page
    assert f'id="r-{ids["m2"]}"' in page and "wrong gauge" in page  # the late invalidation, found by its target
    assert cli.main(["report", "--config", config_file(tmp_path, store), "--serial", "SN-404"]) == 1


def test_the_impact_command_reads_verified_records(
    plant: tuple[InfluxV1Store, KeyRing, dict[str, str]],
    tmp_path: Path,
    keydir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, ids = plant
    argv = ["impact", "--config", config_file(tmp_path, store), "--keys", str(keydir), "--gauge", "G-99"]
    assert cli.main([*argv, "--since", "2026-01-01", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [value] = [v for p in doc["parts"] for v in p["values"]]
    assert doc["unreadable"] == [] and value["id"] == ids["m3"] and value["verified"] is True
    assert value["status"] == "invalidated"  # the late invalidation, found through the ref index
