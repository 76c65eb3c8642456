"""InfluxV1Store against a real influxd (Debian's InfluxDB 1.x) started by the fixtures."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.chain import blocks
from collector.chain.blocks import Block
from collector.errors import StoreError
from collector.store import influx_v1
from collector.store.base import Row, quote_literal
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import (
    FLOAT_FIELDS,
    bucket,
    decode_lookup,
    lines_for_block,
    mismatches,
    record_columns,
)
from collector.testing.services import InfluxD, free_port
from tests.store.chains import GatewayChain, measurement

pytestmark = pytest.mark.services


def rows(store: InfluxV1Store, where: str = "") -> list[Row]:
    return store.query(f"SELECT * FROM inspection {where} ORDER BY time")


def written(store: InfluxV1Store, chain: GatewayChain, n: int, **overrides: Any) -> list[Block]:
    sealed = [chain.seal([measurement(f"SN-{i:06d}", **overrides)]) for i in range(n)]
    store.write_lines([line for b in sealed for line in lines_for_block(b)])
    return sealed


def test_write_and_read_back(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    sealed = written(v1_store, chain, 3)
    got = rows(v1_store)
    assert len(got) == 3
    for block, row in zip(sealed, got, strict=True):
        name, tags, fields, at = record_columns(block, 0)
        assert row["measurement"] == name == "inspection"
        # what record_columns predicts is what influxd returns, with its JSON types
        assert mismatches(tags, fields, at, row) == []
        assert isinstance(row["seq"], int) and isinstance(row["serial"], str)
        for k in FLOAT_FIELDS:
            assert float(row[k]) == fields[k]
    payloads = [r["payload"] for r in v1_store.query("SELECT payload FROM block ORDER BY time")]
    assert payloads == [b.text for b in sealed]  # byte for byte: the evidence copy


def test_rewriting_a_block_leaves_its_points(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    block = chain.seal([measurement("SN-1"), measurement("SN-1", "dia")])
    lines = lines_for_block(block)
    v1_store.write_lines(lines + lines)  # a duplicate within one batch
    v1_store.write_lines(lines)  # and a redelivery later
    v1_store.write_lines(lines_for_block(blocks.read(block.text)))  # rebuilt from the stored copy
    assert v1_store.query("SELECT count(seq) FROM inspection")[0]["count"] == 2
    assert v1_store.query("SELECT count(first_seq) FROM block")[0]["count"] == 1
    assert len(v1_store.query("SHOW SERIES")) == 2 + 1 + 3  # two characteristics, the block, three lookups


AWKWARD_TAGS = {
    "part_number": "P=1,2 3",
    "characteristic": "ø dia, =",
}
AWKWARD_FIELDS = {
    "operator": 'O\'Brien "Bob" \\ back\\slash, x=y ✓',
    "serial": 'SN,1 =2\\"x',
    "lot": "\\",
    "work_order": '"',
    "gauge": "",
    "device": "tab\there",
}


def test_awkward_strings_round_trip(v1_store: InfluxV1Store, keydir: Path) -> None:
    chain = GatewayChain("gw.awk-1", keydir, site='Werk 1, "Halle"=3 ü', line="l'ine\\2")
    station = "St\\10 €"
    block = chain.seal([measurement(**AWKWARD_TAGS, **AWKWARD_FIELDS)], station=station)  # type: ignore[arg-type]
    plain = chain.seal([measurement("SN-2")])
    v1_store.write_lines(lines_for_block(block) + lines_for_block(plain))

    [row] = rows(v1_store, f"WHERE station = {quote_literal(station)}")
    assert row["site"] == chain.site
    for k, v in {**AWKWARD_TAGS, **AWKWARD_FIELDS, "line": chain.line}.items():
        assert row[k] == v, k
    assert mismatches(*record_columns(block, 0)[1:], row) == []
    [stored] = v1_store.query(f"SELECT payload FROM block WHERE station = {quote_literal(station)}")
    assert stored["payload"] == block.text

    # the serial's lookup entry names it, in the bucket its value hashes to
    serial_bucket = quote_literal(bucket("serial", AWKWARD_FIELDS["serial"]))
    entry = v1_store.query(f"SELECT * FROM lookup WHERE bucket = {serial_bucket}")
    assert [decode_lookup(r[f"gw:gw.awk-1/{station}"]) for r in entry] == [[AWKWARD_FIELDS["serial"]]]
    tag_values = {r["value"] for r in v1_store.query('SHOW TAG VALUES FROM inspection WITH KEY = "station"')}
    assert tag_values == {station, "st-10"}


def test_a_field_edited_in_influxdb_is_detected(v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    [block] = written(v1_store, chain, 1)
    # overwrite the point (same series, same time) with other values, as someone with write access can
    line = lines_for_block(block)[1]
    v1_store.write_lines([line.replace(",value=12.004", ",value=11.9").replace('operator="op-12"', 'operator="x"')])
    [row] = rows(v1_store)
    assert sorted(mismatches(*record_columns(block, 0)[1:], row)) == ["operator", "value"]


def test_bad_line_protocol_is_a_permanent_error(v1_store: InfluxV1Store) -> None:
    with pytest.raises(StoreError) as info:
        v1_store.write_lines(["inspection,site=x"])
    assert info.value.status == 400 and not info.value.retryable
    assert "unable to parse" in str(info.value)
    assert v1_store.database in str(info.value)

    v1_store.write_lines(["conflict seq=1i 1"])
    with pytest.raises(StoreError) as info:
        v1_store.write_lines(['conflict seq="one" 2'])  # field type conflict: a partial write
    assert info.value.status == 400 and not info.value.retryable
    assert "conflict" in str(info.value)


def test_unreachable_server_is_retryable() -> None:
    store = InfluxV1Store(f"http://127.0.0.1:{free_port()}", "qc", timeout=2)
    with pytest.raises(StoreError) as info:
        store.write_lines(["m v=1 1"])
    assert info.value.retryable and info.value.status is None
    assert "Connection refused" in str(info.value) or "ConnectionRefused" in str(info.value)
    with pytest.raises(StoreError) as info:
        store.query("SHOW DATABASES")
    assert info.value.retryable
    store.close()


def test_query_errors_are_permanent(v1_store: InfluxV1Store, influxd: InfluxD) -> None:
    with pytest.raises(StoreError) as info:
        v1_store.query("SELEKT * FROM inspection")
    assert info.value.status == 400 and not info.value.retryable and "error parsing query" in str(info.value)
    missing = InfluxV1Store(influxd.url, "no_such_db")
    with pytest.raises(StoreError, match="database not found") as info:
        missing.query("SELECT * FROM inspection")
    assert not info.value.retryable
    with pytest.raises(StoreError) as info:
        missing.write_lines(["m v=1 1"])
    assert info.value.status == 404 and not info.value.retryable
    missing.close()


def test_chunked_query_streams_every_row(v1_store: InfluxV1Store, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 25_000
    lines = [f'bulk,station=st-{i % 3} seq={i}i,serial="SN-{i:06d}" {1_700_000_000_000_000 + i}' for i in range(n)]
    v1_store.write_lines(lines)  # ~1.2 MB: also goes gzip-compressed

    chunks = 0
    real_rows = influx_v1._rows

    def counting_rows(line: bytes, what: str, url: str) -> Iterator[Row]:
        nonlocal chunks
        chunks += 1
        return real_rows(line, what, url)

    monkeypatch.setattr(influx_v1, "_rows", counting_rows)
    seen = 0
    last_time = -1
    for row in v1_store.iter_query("SELECT seq, serial FROM bulk"):
        assert row["time"] > last_time
        last_time = row["time"]
        assert row["serial"] == f"SN-{row['seq']:06d}"
        seen += 1
    assert seen == n
    assert chunks >= n // v1_store.chunk_size  # the server answered in chunks and each was parsed


def test_gzip_bodies_are_accepted(influxd: InfluxD, v1_store: InfluxV1Store, chain: GatewayChain) -> None:
    store = InfluxV1Store(influxd.url, v1_store.database, gzip_min_bytes=0)
    block = chain.seal([measurement()])
    store.write_lines(lines_for_block(block))
    assert store.query("SELECT payload FROM block")[0]["payload"] == block.text
    store.close()


def test_abandoned_query_does_not_poison_the_pool(v1_store: InfluxV1Store) -> None:
    v1_store.write_lines([f"m v={i}i {i}" for i in range(1, 50)])
    it = v1_store.iter_query("SELECT v FROM m")
    assert isinstance(it, Generator)  # a caller that stops reading closes it
    assert next(it)["v"] == 1
    it.close()  # the rest of the answer was never read: that connection must not be reused
    assert [r["v"] for r in v1_store.query("SELECT v FROM m LIMIT 3")] == [1, 2, 3]


def test_ensure_database_is_idempotent_and_checks_the_retention_policy(v1_store: InfluxV1Store) -> None:
    v1_store.ensure_database()
    v1_store.ensure_database()
    with_rp = InfluxV1Store(v1_store._http.url, v1_store.database, retention_policy="autogen")
    with_rp.ensure_database()
    with_rp.write_lines(["m v=1i 1"])
    assert with_rp.query("SELECT v FROM m")[0]["v"] == 1
    with_rp.close()
    bad_rp = InfluxV1Store(v1_store._http.url, v1_store.database, retention_policy="nope")
    with pytest.raises(StoreError, match="retention policy 'nope' does not exist") as info:
        bad_rp.ensure_database()
    assert not info.value.retryable
    bad_rp.close()


def test_keepalive_reuse_and_reconnect_after_a_server_restart(tmp_path: Path) -> None:
    with InfluxD(tmp_path / "influxd") as server:
        store = InfluxV1Store(server.url, "qc")
        store.ensure_database()
        store.write_lines(["m v=1i 1"])
        [conn] = store._http._idle
        store.write_lines(["m v=2i 2"])
        assert store._http._idle == [conn]  # the same TCP connection served both writes

        server.restart()  # the pooled connection is now dead
        store.write_lines(["m v=3i 3"])
        assert store._http._idle and store._http._idle[0] is not conn
        assert [r["v"] for r in store.query("SELECT v FROM m")] == [1, 2, 3]
        store.close()


def test_basic_auth(tmp_path: Path) -> None:
    with InfluxD(tmp_path / "influxd", auth_enabled=True) as server:
        anonymous = InfluxV1Store(server.url, "qc")
        # InfluxDB accepts this one statement without credentials while it has no users
        anonymous.query("CREATE USER admin WITH PASSWORD 'pa55-w0rd' WITH ALL PRIVILEGES")
        with pytest.raises(StoreError) as info:
            anonymous.write_lines(["m v=1i 1"])
        assert info.value.status == 401 and not info.value.retryable

        store = InfluxV1Store(server.url, "qc", username="admin", password="pa55-w0rd")
        assert "pa55-w0rd" not in store.description and "admin" not in store.description
        store.ensure_database()
        store.write_lines(["m v=1i 1"])
        assert store.query("SELECT v FROM m")[0]["v"] == 1

        wrong = InfluxV1Store(server.url, "qc", username="admin", password="guess")
        with pytest.raises(StoreError) as info:
            wrong.write_lines(["m v=2i 2"])
        assert info.value.status == 401 and not info.value.retryable
        assert "guess" not in str(info.value)
        for s in (anonymous, store, wrong):
            s.close()


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="must not contain credentials") as info:
        InfluxV1Store("http://admin:pa55@127.0.0.1:8086", "qc")
    assert "pa55" not in str(info.value)
