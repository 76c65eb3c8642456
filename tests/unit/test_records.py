"""Records as evidence: canonical form, hash chain, signature, ids, timestamps, payload schema."""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import hmac
import itertools
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from collector.inspection.models import RECORD_ADAPTER, Characteristic
from collector.inspection.records import (
    GENESIS_HASH,
    canonical_bytes,
    chain_hash,
    dec,
    format_utc_us,
    measurement_record,
    parse_utc_us,
    recompute_hash,
    seal,
    sign,
    uuid7,
)
from collector.inspection.tolerance import judge
from drivers.base import Reading

D = Decimal
CHAR = Characteristic(
    id="D1",
    name="Bore diameter",
    nominal=D("12.000"),
    lower_tol=D("-0.020"),
    upper_tol=D("0.020"),
    unit="mm",
    decimals=3,
)
AT_US = 1_795_000_000_123_456
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def draft(value: str = "12.0205", raw: bytes = b"01A+0012.0205\r", n: int = 0, **extra: Any) -> dict[str, Any]:
    reading = Reading(
        device="caliper-1", channel="01", value=D(value), unit="mm", raw=raw, timestamp_ns=(AT_US + n) * 1000
    )
    rec = measurement_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context={"part_number": "HX-4711", "serial": "HX000001", "lot": "L1", "work_order": "WO-1", "operator": "op"},
        plan_revision="C",
        characteristic=CHAR,
        judgement=judge(CHAR, D(value), "mm"),
        reading=reading,
        gauge="CAL-0042",
        gauge_calibration_due="2027-06-30",
    )
    # what the journal adds before sealing
    rec.update(gateway="gw-1", seq=1 + n, recorded_at=format_utc_us(AT_US + n), clock_synced=True)
    rec.update(extra)
    return rec


# -- canonical form -----------------------------------------------------------------------
def test_canonical_bytes_sorted_compact_utf8_without_seal() -> None:
    rec = {"b": 1, "a": "ü", "hash": "x" * 64, "signature": "y" * 64, "c": None, "d": True}
    assert canonical_bytes(rec) == '{"a":"ü","b":1,"c":null,"d":true}'.encode()


def test_canonical_bytes_independent_of_insertion_order() -> None:
    rec = draft()
    reversed_rec = dict(reversed(list(rec.items())))
    assert list(reversed_rec) != list(rec)
    assert canonical_bytes(reversed_rec) == canonical_bytes(rec)


def test_canonical_bytes_does_not_modify_the_record() -> None:
    rec = {"a": 1, "hash": "h"}
    canonical_bytes(rec)
    assert rec == {"a": 1, "hash": "h"}


# -- sealing ------------------------------------------------------------------------------
def test_seal_sets_prev_hash_and_hash_and_payload_round_trips() -> None:
    rec = draft()
    payload = seal(rec, GENESIS_HASH)
    assert rec["prev_hash"] == GENESIS_HASH
    assert re.fullmatch(r"[0-9a-f]{64}", rec["hash"])
    assert "signature" not in rec
    parsed = json.loads(payload)
    assert parsed == rec
    assert recompute_hash(parsed) == rec["hash"]
    # the definition, spelled out: sha256(prev_hash bytes || canonical bytes)
    expected = hashlib.sha256(bytes.fromhex(GENESIS_HASH) + canonical_bytes(parsed)).hexdigest()
    assert rec["hash"] == expected


def test_payload_is_the_hashed_bytes_plus_the_seal() -> None:
    rec = draft()
    payload = seal(rec, GENESIS_HASH, b"key")
    canonical = canonical_bytes(rec).decode()
    assert payload == canonical[:-1] + f',"hash":"{rec["hash"]}","signature":"{rec["signature"]}"' + "}"


def test_reseal_replaces_an_old_seal() -> None:
    rec = draft()
    seal(rec, GENESIS_HASH, b"key")
    first = rec["hash"]
    payload = seal(rec, "ab" * 32)  # no key this time: the old signature must go
    assert "signature" not in rec and "signature" not in json.loads(payload)
    assert rec["hash"] != first
    assert recompute_hash(json.loads(payload)) == rec["hash"]


@pytest.mark.parametrize("field", ["value", "serial", "raw", "recorded_at", "characteristic", "gauge", "verdict"])
def test_one_character_change_changes_the_hash(field: str) -> None:
    rec = draft()
    seal(rec, GENESIS_HASH)
    original = rec["hash"]
    for i in range(len(rec[field])):
        tampered = dict(rec)
        ch = tampered[field][i]
        tampered[field] = tampered[field][:i] + ("0" if ch != "0" else "1") + tampered[field][i + 1 :]
        assert recompute_hash(tampered) != original, (field, i)


def test_changed_types_change_the_hash() -> None:
    rec = draft()
    seal(rec, GENESIS_HASH)
    for field, other in (("seq", "1"), ("clock_synced", 1), ("decimals", 3.0), ("lot", None)):
        tampered = dict(rec)
        tampered[field] = other
        assert recompute_hash(tampered) != rec["hash"], field


def test_changed_prev_hash_changes_the_hash() -> None:
    rec = draft()
    seal(rec, GENESIS_HASH)
    tampered = dict(rec, prev_hash="0" * 63 + "1")
    assert recompute_hash(tampered) != rec["hash"]


def test_chain_links_prev_hash() -> None:
    prev = GENESIS_HASH
    payloads = []
    for n in range(5):
        rec = draft(value=f"12.00{n}", n=n)
        payloads.append(seal(rec, prev))
        prev = rec["hash"]
    parsed = [json.loads(p) for p in payloads]
    assert parsed[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(parsed):
        assert after["prev_hash"] == before["hash"]
    for rec in parsed:
        assert chain_hash(rec["prev_hash"], canonical_bytes(rec)) == rec["hash"]
    assert len({r["hash"] for r in parsed}) == 5
    # an identical record at another place in the chain has another hash
    a, b = draft(), draft()
    seal(a, GENESIS_HASH)
    seal(b, parsed[2]["hash"])
    assert a["hash"] != b["hash"]


def test_hmac_signature_verifies_with_the_key_only() -> None:
    key = b"gateway secret key"
    rec = draft()
    payload = seal(rec, GENESIS_HASH, key)
    parsed = json.loads(payload)
    assert parsed["signature"] == rec["signature"]
    expected = hmac.new(key, bytes.fromhex(parsed["hash"]), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parsed["signature"], expected)
    assert sign(key, parsed["hash"]) == parsed["signature"]
    assert sign(b"another key", parsed["hash"]) != parsed["signature"]
    assert sign(key, recompute_hash(dict(parsed, value="12.0206"))) != parsed["signature"]
    # the signature is not part of the hashed bytes
    assert recompute_hash(parsed) == parsed["hash"]


# -- identity -----------------------------------------------------------------------------
def test_uuid7_format() -> None:
    for _ in range(200):
        u = uuid7()
        assert UUID7.fullmatch(u), u
        bits = int(u.replace("-", ""), 16)
        assert (bits >> 76) & 0xF == 7  # version
        assert (bits >> 62) & 0b11 == 0b10  # variant


def test_uuid7_carries_the_millisecond_timestamp() -> None:
    ms = AT_US // 1000
    u = uuid7(ms)
    assert int(u.replace("-", "")[:12], 16) == ms


def test_uuid7_time_ordered_across_milliseconds() -> None:
    ms = AT_US // 1000
    ids = [uuid7(ms + i) for i in range(0, 500)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # random bits differ within the same millisecond
    same = {uuid7(ms) for _ in range(100)}
    assert len(same) == 100


# -- timestamps ---------------------------------------------------------------------------
def _us(text: str) -> int:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return calendar.timegm(t.utctimetuple()) * 1_000_000 + t.microsecond


@pytest.mark.parametrize(
    "text",
    [
        "1970-01-01T00:00:00.000000Z",
        "1970-01-01T00:00:00.000001Z",
        "1969-12-31T23:59:59.999999Z",
        "2000-02-29T12:00:00.500000Z",
        "2024-02-29T23:59:59.999999Z",
        "2024-03-01T00:00:00.000000Z",
        "2100-02-28T23:59:59.999999Z",
        "2100-03-01T00:00:00.000000Z",
        "2026-11-21T10:15:30.123456Z",
        "2038-01-19T03:14:08.000000Z",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_utc_round_trip(text: str) -> None:
    us = _us(text)
    assert format_utc_us(us) == text
    assert parse_utc_us(text) == us


def test_utc_microsecond_edges() -> None:
    base = _us("2024-02-29T23:59:59.000000Z")
    assert format_utc_us(base + 999_999) == "2024-02-29T23:59:59.999999Z"
    assert format_utc_us(base + 1_000_000) == "2024-03-01T00:00:00.000000Z"
    assert format_utc_us(_us("2100-02-28T23:59:59.999999Z") + 1) == "2100-03-01T00:00:00.000000Z"
    for us in range(base - 3, base + 3):
        assert parse_utc_us(format_utc_us(us)) == us


# -- decimals -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("1E-7"), "0.0000001"),
        (D("-1E-7"), "-0.0000001"),
        (D("1E+3"), "1000"),
        (D("12.000"), "12.000"),
        (D("-0.020"), "-0.020"),
        (D("0E-3"), "0.000"),
        (D("123456789012345678901234567.8"), "123456789012345678901234567.8"),
        (D("0.03937007874015748031496062992"), "0.03937007874015748031496062992"),
        (None, None),
    ],
)
def test_dec_plain_notation(value: Decimal | None, text: str | None) -> None:
    assert dec(value) == text
    if text is not None:
        assert "E" not in text and "e" not in text
        assert D(text) == value


def test_record_from_tiny_value_uses_plain_notation() -> None:
    c = Characteristic(id="R", name="Runout", usl=D("0.0000010"), unit="mm", decimals=7)
    r = Reading(device="d", channel="0", value=D("1E-7"), unit="mm", raw=b"x", timestamp_ns=AT_US * 1000)
    rec = measurement_record(
        site="s",
        line="l",
        station="st",
        context={"part_number": "P"},
        plan_revision="A",
        characteristic=c,
        judgement=judge(c, D("1E-7"), "mm"),
        reading=r,
        gauge=None,
        gauge_calibration_due=None,
    )
    assert (rec["reading_value"], rec["value"], rec["judged_value"], rec["usl"]) == (
        "0.0000001",
        "0.0000001",
        "0.0000001",
        "0.0000010",
    )


# -- raw frames ---------------------------------------------------------------------------
def test_every_byte_survives_the_json_payload() -> None:
    raw = bytes(range(256))
    rec = draft(raw=raw)
    payload = seal(rec, GENESIS_HASH)
    parsed = json.loads(payload)
    assert parsed["raw"].encode("latin-1") == raw
    assert recompute_hash(parsed) == rec["hash"]
    # and through UTF-8 bytes, as it travels over MQTT
    assert json.loads(payload.encode("utf-8"))["raw"].encode("latin-1") == raw


# -- the payload schema -------------------------------------------------------------------
def test_sealed_record_matches_the_schema() -> None:
    rec = draft()
    payload = seal(rec, GENESIS_HASH, b"k")
    model = RECORD_ADAPTER.validate_json(payload)
    assert model.hash == rec["hash"]
    assert model.value == "12.0205"
    assert model.judged_value == "12.020"
    assert model.deviation == "0.020"
    assert model.gauge_calibration_due == "2027-06-30"
    assert model.verdict == "pass"
    assert RECORD_ADAPTER.validate_python(json.loads(payload)) == model
    # the model serialises back to the same dict
    assert json.loads(RECORD_ADAPTER.dump_json(model)) == json.loads(payload)


def sealed_dict() -> dict[str, Any]:
    rec = draft()
    return dict(json.loads(seal(rec, GENESIS_HASH)))


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.__setitem__("value", 12.0205), "value"),
        (lambda r: r.__setitem__("judged_value", D("12.020")), "judged_value"),
        (lambda r: r.__setitem__("value", "1.2E+1"), "value"),
        (lambda r: r.__setitem__("value", "12,020"), "value"),
        (lambda r: r.pop("serial"), "serial"),
        (lambda r: r.pop("gauge_calibration_due"), "gauge_calibration_due"),
        (lambda r: r.pop("hash"), "hash"),
        (lambda r: r.__setitem__("colour", "red"), "colour"),
        (lambda r: r.__setitem__("recorded_at", "2026-11-21T10:15:30Z"), "recorded_at"),
        (lambda r: r.__setitem__("recorded_at", "2026-11-21 10:15:30.123456Z"), "recorded_at"),
        (lambda r: r.__setitem__("measured_at", "2026-11-21T10:15:30.123456+00:00"), "measured_at"),
        (lambda r: r.__setitem__("hash", "A" * 64), "hash"),
        (lambda r: r.__setitem__("seq", 0), "seq"),
        (lambda r: r.__setitem__("schema_version", 2), "schema_version"),
        (lambda r: r.__setitem__("verdict", "ok"), "verdict"),
    ],
)
def test_schema_rejects(mutate: Any, field: str) -> None:
    rec = sealed_dict()
    RECORD_ADAPTER.validate_python(rec)  # valid before
    mutate(rec)
    with pytest.raises(ValidationError) as info:
        RECORD_ADAPTER.validate_python(rec)
    # the union's tag (the record's kind) comes first in the location, then the field
    assert field in {str(e["loc"][1] if len(e["loc"]) > 1 else e["loc"][0]) for e in info.value.errors()}


def test_schema_rejects_float_in_json_payload() -> None:
    payload = seal(draft(), GENESIS_HASH)
    tampered = payload.replace('"value":"12.0205"', '"value":12.0205')
    assert tampered != payload
    with pytest.raises(ValidationError):
        RECORD_ADAPTER.validate_json(tampered)
