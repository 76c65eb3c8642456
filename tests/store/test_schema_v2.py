"""The storage schema of version 2 against a real influxd: what InfluxDB keeps of each line."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.chain import checkpoints
from collector.store.base import quote_literal
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import (
    BUCKET_DIGITS,
    block_columns,
    bucket,
    checkpoint_line,
    decode_lookup,
    lines_for_block,
    mismatches,
    record_columns,
)
from tests.store.chains import BASE_US, GatewayChain, event, measurement, part, record_id

pytestmark = pytest.mark.services


def test_every_point_of_a_block_reads_back_as_record_columns_says(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    m1, m2 = measurement("SN-1"), measurement("SN-1", "dia", "11.970", verdict="fail")
    block = chain.seal(
        [
            m1,
            m2,
            event("nonconformance", measurement_id=m2["id"], characteristic="dia", serial="SN-1"),
            part("SN-1", [m1["id"], m2["id"]], verdict="reject", failed=["dia"]),
            event("audit", event="sign_out", by="op-12", subject=None, detail="idle"),
        ]
    )
    v1_store.write_lines(lines_for_block(block))
    for i in range(len(block.records)):
        name, tags, fields, at = record_columns(block, i)
        [row] = v1_store.query(f'SELECT * FROM "{name}" WHERE time = {at}u')
        assert mismatches(tags, fields, at, row) == [], i
    [row] = v1_store.query("SELECT * FROM block")
    tags, fields, at = block_columns(block)
    assert row["time"] == at and all(row[k] == v for k, v in {**tags, **fields}.items())
    # the nonconformance's measurement id is in the ref index
    [ref] = v1_store.query(f"SELECT * FROM lookup WHERE bucket = {quote_literal(bucket('ref', m2['id']))}")
    assert m2["id"] in (decode_lookup(ref["gw:gw-1/st-10"]) or []) and ref["time"] == at


def test_two_gateways_in_one_bucket_at_one_microsecond_keep_both_entries(v1_store: InfluxV1Store, keydir: Path) -> None:
    """Blocks of different gateways may share a timestamp: their index entries must not collide."""
    serial_a = "SN-A"
    serial_b = next(s for s in (f"SN-{n}" for n in range(100_000)) if bucket("serial", s) == bucket("serial", serial_a))
    one = GatewayChain("gw-1", keydir).seal([measurement(serial_a)], at_us=BASE_US)
    two = GatewayChain("gw-2", keydir).seal([measurement(serial_b)], at_us=BASE_US)
    v1_store.write_lines(lines_for_block(one))
    v1_store.write_lines(lines_for_block(two))
    [row] = v1_store.query(f"SELECT * FROM lookup WHERE bucket = {quote_literal(bucket('serial', serial_a))}")
    assert decode_lookup(row["gw:gw-1/st-10"]) == [serial_a]
    assert decode_lookup(row["gw:gw-2/st-10"]) == [serial_b]
    assert len(v1_store.query("SELECT * FROM block")) == 2


def test_lookup_series_are_bounded_by_the_bucket_count(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    """5,000 serials, lots and work orders: never more than 4,096 lookup series per key."""
    lines: list[str] = []
    for n in range(5_000):
        m = measurement(f"SN-{n:07d}", lot=f"L-{n}", work_order=f"WO-{n}")
        lines += lines_for_block(chain.seal([m, event("invalidation", target=m["id"], by="op", reason="x")]))
    v1_store.write_lines(lines)
    buckets = [r["value"] for r in v1_store.query('SHOW TAG VALUES FROM "lookup" WITH KEY = "bucket"')]
    per_key: dict[str, int] = {}
    for b in buckets:
        per_key[b.split(":")[0]] = per_key.get(b.split(":")[0], 0) + 1
    assert set(per_key) == {"serial", "lot", "work_order", "ref"}
    limit = 16**BUCKET_DIGITS
    assert all(2_000 < n <= limit for n in per_key.values()), per_key  # 5,000 values spread over <= 4,096
    record_series = v1_store.query('SHOW SERIES FROM "inspection"')
    assert len(record_series) == 1  # one characteristic, one verdict: serials are not series


def test_a_checkpoint_reads_back(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    chain.seal([measurement()])
    cp = chain.checkpoint(BASE_US + 10_000_000)
    v1_store.write_lines([checkpoint_line(cp)])
    [row] = v1_store.query("SELECT * FROM checkpoint")
    assert row["time"] == cp.at_us and row["gateway"] == "gw-1" and row["head_seq"] == 1
    assert row["head_hash"] == cp.head_hash and row["key_id"] == cp.key_id
    again = checkpoints.read(row["payload"])
    assert again.digest == cp.digest and again.signature == cp.signature


def test_record_ids_in_tests_are_unique() -> None:
    assert len({record_id(n) for n in range(1000)}) == 1000
