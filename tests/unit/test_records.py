"""Records: the drafts a station makes (ids, timestamps, decimals, raw frames) and the
record models the recorder checks them against, sealed in blocks."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.chain import blocks
from collector.inspection import models
from collector.inspection.models import RECORD_ADAPTER, RECORDS_ADAPTER, BlockModel, Characteristic
from collector.inspection.records import (
    dec,
    format_utc_us,
    measurement_record,
    parse_utc_us,
    raw_fields,
    refusal_record,
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
BLOCK_KEYS = ("site", "line", "station")


def reading(value: str = "12.0205", raw: bytes = b"01A+0012.0205\r", n: int = 0) -> Reading:
    at_ns = (AT_US + n) * 1000
    return Reading(device="caliper-1", channel="01", value=D(value), unit="mm", raw=raw, timestamp_ns=at_ns)


def draft(value: str = "12.0205", raw: bytes = b"01A+0012.0205\r", n: int = 0, binary: bool = False) -> dict[str, Any]:
    return measurement_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context={"part_number": "HX-4711", "serial": "HX000001", "lot": "L1", "work_order": "WO-1", "operator": "op"},
        plan_revision="C",
        characteristic=CHAR,
        judgement=judge(CHAR, D(value), "mm"),
        reading=reading(value, raw, n),
        gauge="CAL-0042",
        gauge_calibration_due="2027-06-30",
        binary=binary,
    )


def entry(record: dict[str, Any]) -> dict[str, Any]:
    """A draft as it sits in its block (the journal moves site, line and station to the block)."""
    return {k: v for k, v in record.items() if k not in BLOCK_KEYS}


def sealed(records: list[dict[str, Any]]) -> blocks.Block:
    return blocks.seal(
        [entry(r) for r in records],
        gateway="gw-1", site="plant-1", line="line-a", station="st-10", first_seq=1,
        recorded_at=format_utc_us(AT_US), clock_synced=True, prev_hash=blocks.GENESIS_HASH, signer=None,
    )  # fmt: skip


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
@pytest.mark.parametrize(
    ("raw", "binary", "expected"),
    [
        (b"01A+0012.005\r", False, ("01A+0012.005\r", "text")),
        (b"S S      12.34 g\r\n", False, ("S S      12.34 g\r\n", "text")),
        (b"\tTAB\t", False, ("\tTAB\t", "text")),
        (b"", False, ("", "text")),
        (b"01A+0012.005\x85\r", False, ("3031412b303031322e30303585" + "0d", "hex")),  # U+0085 would be NEL
        (b"\x00\x01\xff", False, ("0001ff", "hex")),
        (b"\x7f", False, ("7f", "hex")),
        (b"01A+0012.005\r", True, ("3031412b303031322e3030350d", "hex")),  # a binary protocol: always hex
        (b"\x01\x03\x04\x00\x0c\x00\x05", True, ("01030400 0c0005".replace(" ", ""), "hex")),
    ],
)
def test_raw_frames_travel_as_text_only_when_printable(raw: bytes, binary: bool, expected: tuple[str, str]) -> None:
    assert raw_fields(raw, binary) == expected


@given(st.binary(max_size=64), st.booleans())
def test_every_frame_is_recovered_exactly_from_its_record(raw: bytes, binary: bool) -> None:
    text, encoding = raw_fields(raw, binary)
    assert (text.encode("ascii") if encoding == "text" else bytes.fromhex(text)) == raw
    # and whatever it is, the JSON line stays one line for line-based tools
    line = json.dumps({"raw": text}, ensure_ascii=False)
    assert len(line.splitlines()) == 1 and "\x85" not in line


def test_records_carry_raw_and_its_encoding() -> None:
    rec = draft()
    assert (rec["raw"], rec["raw_encoding"]) == ("01A+0012.0205\r", "text")
    plc = draft(raw=b"\x01\x03\x02\x04\xd2", binary=True)
    assert (plc["raw"], plc["raw_encoding"]) == ("01030204d2", "hex")
    refusal = refusal_record(
        site="p", line="l", station="s", context={}, reason_code="gauge_overdue", reason="overdue",
        reading=reading(raw=b"\x85\r"), gauge=None, gauge_calibration_due=None, characteristic="D1",
    )  # fmt: skip
    assert (refusal["raw"], refusal["raw_encoding"]) == ("850d", "hex")


# -- the record models ------------------------------------------------------------------
def test_a_sealed_records_block_matches_the_models() -> None:
    block = sealed([draft(), draft(value="12.021", n=1)])
    models_ = RECORDS_ADAPTER.validate_python(block.records)
    assert [m.value for m in models_] == ["12.0205", "12.021"]  # type: ignore[union-attr]
    assert models_[0].verdict == "pass" and models_[1].verdict == "fail"  # type: ignore[union-attr]
    assert models_[0].judged_value == "12.020" and models_[0].deviation == "0.020"  # type: ignore[union-attr]
    # the whole block as it travels, for JSON Schema users
    parsed = BlockModel.model_validate_json(block.text)
    assert parsed.hash == block.hash and parsed.first_seq == 1 and len(parsed.records) == 2
    # a model serialises back to the same record
    assert json.loads(RECORD_ADAPTER.dump_json(models_[0])) == block.records[0]


def test_the_literal_values_are_the_enums_values() -> None:
    from typing import get_args

    assert set(get_args(models.VerdictText)) == {v.value for v in models.Verdict}
    assert set(get_args(models.CriticalityText)) == {v.value for v in models.Criticality}
    assert set(get_args(models.ReasonForTestText)) == {v.value for v in models.ReasonForTest}
    assert set(get_args(models.CalibrationStatusText)) == {v.value for v in models.CalibrationStatus}
    assert set(models.RECORD_MODELS) == {v.value for v in models.RecordKind}
    assert set(get_args(models.SignatureMeaningText)) == {v.value for v in models.SignatureMeaning}
    assert set(get_args(models.SignatureMethodText)) == {v.value for v in models.SignatureMethod}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.__setitem__("value", 12.0205), "value"),
        (lambda r: r.__setitem__("judged_value", D("12.020")), "judged_value"),
        (lambda r: r.__setitem__("value", "1.2E+1"), "value"),
        (lambda r: r.__setitem__("value", "12,020"), "value"),
        (lambda r: r.__setitem__("decimals", "3"), "decimals"),  # strict: a string is not an integer
        (lambda r: r.pop("serial"), "serial"),
        (lambda r: r.pop("gauge_calibration_due"), "gauge_calibration_due"),
        (lambda r: r.__setitem__("colour", "red"), "colour"),
        (lambda r: r.__setitem__("seq", 1), "seq"),  # the block's key, not the record's
        (lambda r: r.__setitem__("station", "st-10"), "station"),
        (lambda r: r.__setitem__("measured_at", "2026-11-21T10:15:30.123456+00:00"), "measured_at"),
        (lambda r: r.__setitem__("verdict", "ok"), "verdict"),
        (lambda r: r.__setitem__("raw_encoding", "base64"), "raw_encoding"),
    ],
)
def test_the_model_refuses(mutate: Any, field: str) -> None:
    rec = entry(draft())
    RECORD_ADAPTER.validate_python(rec)  # valid before
    mutate(rec)
    with pytest.raises(ValidationError) as info:
        RECORD_ADAPTER.validate_python(rec)
    # the union's tag (the record's kind) comes first in the location, then the field
    assert field in {str(e["loc"][1] if len(e["loc"]) > 1 else e["loc"][0]) for e in info.value.errors()}


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [("01A\u0085", "text"), ("0g", "hex"), ("abc", "hex"), ("AB", "hex"), ("caf\u00e9", "text")],
)
def test_the_model_refuses_raw_that_is_not_as_encoded(raw: str, encoding: str) -> None:
    rec = dict(entry(draft()), raw=raw, raw_encoding=encoding)
    with pytest.raises(ValidationError, match="raw is not"):
        RECORD_ADAPTER.validate_python(rec)
