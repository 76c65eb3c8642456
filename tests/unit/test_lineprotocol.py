"""Line protocol for inspection records: shape, escaping, omitted nulls, refusals.

That InfluxDB reads these lines back as intended is checked against a real influxd in
tests/store/test_influx_v1.py.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.inspection.models import Characteristic
from collector.inspection.records import GENESIS_HASH, format_utc_us, measurement_record, parse_utc_us, seal
from collector.inspection.tolerance import judge
from collector.store.lineprotocol import (
    FIELD_COLUMNS,
    FLOAT_FIELDS,
    TAG_KEYS,
    escape_string_field,
    escape_tag,
    expected_fields,
    expected_tags,
    mismatches,
    record_line,
    timestamp_us,
)
from drivers.base import Reading

CHAR = Characteristic(
    id="len", name="Length", nominal=Decimal("50.00"), lsl=Decimal("49.95"), usl=Decimal("50.05"), unit="mm", decimals=2
)
AT_US = 1_795_000_000_123_456


def sealed(**overrides: Any) -> tuple[dict[str, Any], str]:
    reading = Reading(
        device="dev-1", channel="0", value=Decimal("50.013"), unit="mm", raw=b"50.013\r\n", timestamp_ns=AT_US * 1000
    )
    record = measurement_record(
        site="plant-a",
        line="line-1",
        station="st-1",
        context={"part_number": "P-1", "serial": "SN-1", "lot": "L-1", "work_order": "WO-1", "operator": "op"},
        plan_revision="A",
        characteristic=CHAR,
        judgement=judge(CHAR, Decimal("50.013"), "mm"),
        reading=reading,
        gauge="G-1",
        gauge_calibration_due="2027-01-01",
    )
    record.update(gateway="gw-1", seq=7, recorded_at=format_utc_us(AT_US), clock_synced=True)
    record.update(overrides)
    return record, seal(record, GENESIS_HASH)


def split_line(line: str) -> tuple[str, str, str]:
    """(measurement+tags, fields, timestamp) of a line without escaped spaces in fields' keys."""
    head, _, rest = line.partition(" ")
    while head.endswith("\\"):  # an escaped space in a tag
        more, _, rest = rest.partition(" ")
        head += " " + more
    fields, _, ts = rest.rpartition(" ")
    return head, fields, ts


def test_shape_of_a_record_line() -> None:
    record, payload = sealed()
    line = record_line(record, payload)
    head, fields, ts = split_line(line)
    assert head == (
        "inspection,characteristic=len,gateway=gw-1,kind=measurement,line=line-1,part_number=P-1,site=plant-a,station=st-1,verdict=pass"
    )
    assert fields.startswith("seq=7i,")
    assert ',serial="SN-1",' in fields  # a field, not a tag
    assert ",value=50.013," in fields and ",judged_value=50.01," in fields and ",nominal=50.0," in fields
    assert fields.endswith(",payload=" + escape_string_field("payload", payload))
    assert int(ts) == AT_US == parse_utc_us(record["recorded_at"])
    assert "\n" not in line
    # a redelivery writes the identical point (same series, same time): idempotent
    assert record_line(json.loads(payload), payload) == line


def test_tags_are_escaped_and_empty_ones_left_out() -> None:
    record, payload = sealed(site="Werk 1, Halle=3", line="", station="St\\10 ü")
    head, _, _ = split_line(record_line(record, payload))
    assert head == (
        "inspection,characteristic=len,gateway=gw-1,kind=measurement,part_number=P-1,"
        "site=Werk\\ 1\\,\\ Halle\\=3,station=St\\10\\ ü,verdict=pass"
    )
    assert "line" not in expected_tags(record)


@pytest.mark.parametrize("bad", ["ends\\", "a\\,b", "a\\ b", "a\\=b"])
def test_tag_backslashes_influxdb_cannot_represent_are_refused(bad: str) -> None:
    record, payload = sealed(station=bad)
    with pytest.raises(ValueError, match="'station'"):
        record_line(record, payload)


def test_harmless_tag_backslash_is_kept_literally() -> None:
    assert escape_tag("station", "C:\\st\\10") == "C:\\st\\10"


def test_string_fields_escape_backslash_and_quote() -> None:
    record, payload = sealed(operator='O"Brien \\ x, y=z')
    _, fields, _ = split_line(record_line(record, payload))
    assert ',operator="O\\"Brien \\\\ x, y=z",' in fields


def test_none_fields_are_left_out() -> None:
    record, payload = sealed(serial=None, lot=None, work_order=None, operator=None, gauge=None, deviation=None)
    line = record_line(record, payload)
    for name in ("serial", "lot", "work_order", "operator", "gauge", "deviation"):
        assert f",{name}=" not in split_line(line)[1].split(",payload=")[0]
        assert name not in expected_fields(record)
    assert set(expected_fields(record)) == {
        "seq", "id", "hash", "prev_hash", "device", "plan_revision", "unit", "reason_for_test",
        "value", "judged_value", "nominal", "lsl", "usl",
    }  # fmt: skip


@pytest.mark.parametrize("field", ["operator", "serial", "lot", "work_order"])
@pytest.mark.parametrize("brk", ["\n", "\r"])
def test_line_breaks_in_text_are_refused_naming_the_field(field: str, brk: str) -> None:
    record, payload = sealed(**{field: f"first{brk}second"})
    with pytest.raises(ValueError, match=f"'{field}' contains a line break"):
        record_line(record, payload)


def test_line_break_in_a_tag_is_refused() -> None:
    record, payload = sealed(station="st\n1")
    with pytest.raises(ValueError, match="'station'"):
        record_line(record, payload)


def test_the_payload_never_holds_a_raw_line_break() -> None:
    record, payload = sealed(operator="two\nlines")  # JSON escapes it in the payload...
    assert "\n" not in payload
    with pytest.raises(ValueError, match="'operator'"):  # ...but the field itself is refused
        record_line(record, payload)


def test_unknown_kind_and_bad_numbers_are_refused() -> None:
    record, payload = sealed(kind="calibration")
    with pytest.raises(ValueError, match="no measurement is defined for record kind 'calibration'"):
        record_line(record, payload)
    record, payload = sealed(value="1" + "0" * 400)
    with pytest.raises(ValueError, match="'value'"):
        record_line(record, payload)
    record, payload = sealed(lsl="abc")
    with pytest.raises(ValueError, match="'lsl'"):
        record_line(record, payload)
    record, payload = sealed(seq="7")
    with pytest.raises(ValueError, match="'seq'"):
        record_line(record, payload)


def test_expected_fields_are_exactly_the_written_fields() -> None:
    record, payload = sealed(supersedes="0190a0b0-0000-7000-8000-000000000000", reason="re-measure")
    expected = expected_fields(record, payload)
    _, fields, _ = split_line(record_line(record, payload))
    written = {part.split("=", 1)[0] for part in fields.split(",payload=")[0].split(",")} | {"payload"}
    assert written == set(expected)
    assert set(expected) <= set(FIELD_COLUMNS)
    assert isinstance(expected["seq"], int)
    assert all(isinstance(expected[k], float) for k in FLOAT_FIELDS if k in expected)
    assert expected["payload"] == payload and expected["supersedes"] == record["supersedes"]


def stored_row(record: dict[str, Any], payload: str) -> dict[str, Any]:
    """A row as InfluxDB's JSON would give it: integral floats come back as ints."""
    row: dict[str, Any] = {k: None for k in (*TAG_KEYS, *FIELD_COLUMNS)}
    row.update(measurement="inspection", time=timestamp_us(record), **expected_tags(record))
    for k, v in expected_fields(record, payload).items():
        row[k] = int(v) if isinstance(v, float) and v.is_integer() else v
    return json.loads(json.dumps(row))  # type: ignore[no-any-return]


def test_mismatches_names_edited_columns() -> None:
    record, payload = sealed(value="50.000")
    row = stored_row(record, payload)
    assert isinstance(row["value"], int)  # 50.0 printed as 50
    assert mismatches(record, row, payload) == []
    assert mismatches(record, row) == []
    assert mismatches(record, {**row, "value": 50.001}) == ["value"]
    assert mismatches(record, {**row, "serial": "SN-2", "verdict": "fail"}) == ["verdict", "serial"]
    assert mismatches(record, {**row, "supersedes": "x"}) == ["supersedes"]  # a column added later
    assert mismatches(record, {**row, "seq": 7.0}) == ["seq"]
    assert mismatches(record, {**row, "time": row["time"] + 1}) == ["time"]
    assert mismatches(record, {**row, "payload": payload + " "}, payload) == ["payload"]


@given(st.integers(min_value=0, max_value=4_102_444_799_999_999))
def test_timestamp_matches_the_reference_parser(us: int) -> None:
    assert timestamp_us({"recorded_at": format_utc_us(us)}) == us


def _unescape_string_field(quoted: str) -> str:
    assert quoted[0] == quoted[-1] == '"'
    out, i, body = [], 0, quoted[1:-1]
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '\\"':
            out.append(body[i + 1])
            i += 2
        else:
            assert body[i] != '"', "an unescaped quote would end the string"
            out.append(body[i])
            i += 1
    return "".join(out)


@given(st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",))))
def test_string_field_escaping_round_trips(text: str) -> None:
    assert _unescape_string_field(escape_string_field("f", text)) == text
