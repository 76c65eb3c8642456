"""Line protocol of schema version 2: blocks, record points, lookup entries, checkpoints.

The blocks are real: sealed by ``collector.chain.blocks.seal`` and signed (HMAC here, so
that the expected lines are fixed text; Ed25519 in tests/store). That InfluxDB reads these
lines back as intended is checked against a real influxd in tests/store/test_schema_v2.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.chain import blocks, checkpoints
from collector.chain.blocks import Block, format_utc_us, parse_utc_us
from collector.chain.keys import HmacSigner
from collector.store.lineprotocol import (
    RECORD_FIELDS,
    TAG_KEYS,
    block_columns,
    bucket,
    checkpoint_line,
    decode_lookup,
    encode_lookup,
    escape_string_field,
    escape_tag,
    lines_for_block,
    lookup_entries,
    mismatches,
    record_columns,
    utc_us,
)
from tests.store.chains import GatewayChain, event, measurement, part

AT_US = 1_795_000_000_123_456
SIGNER = HmacSigner(b"test-secret")


def seal(records: list[dict[str, Any]], *, at_us: int = AT_US, **header: Any) -> Block:
    args: dict[str, Any] = dict(
        gateway="gw-1",
        site="plant-a",
        line="line-1",
        station="st-1",
        first_seq=7,
        recorded_at=format_utc_us(at_us),
        clock_synced=True,
        prev_hash=blocks.GENESIS_HASH,
        signer=SIGNER,
    )
    args.update(header)
    return blocks.seal(records, **args)


FIXED_ID = "0193a0a0-0000-7000-8000-00000000000a"


def fixed_measurement(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": FIXED_ID, "lot": "L-1", "work_order": "WO-1", "gauge": "G-1"}
    fields.update(overrides)
    serial, characteristic, value = (
        fields.pop(k, d) for k, d in (("serial", "SN-1"), ("characteristic", "len"), ("value", "50.013"))
    )
    return measurement(serial, characteristic, value, **fields)


def split_line(line: str) -> tuple[str, str, str]:
    """(measurement+tags, fields, timestamp) of a line whose tags have no escaped spaces."""
    head, _, rest = line.partition(" ")
    fields, _, ts = rest.rpartition(" ")
    return head, fields, ts


def test_a_block_makes_its_point_one_point_per_record_and_its_lookup_entries() -> None:
    block = seal([fixed_measurement(), fixed_measurement(id=FIXED_ID[:-1] + "b", characteristic="dia")])
    lines = lines_for_block(block)
    assert len(lines) == 1 + 2 + 3  # block, two records, serial + lot + work order
    assert lines[0] == (
        "block,gateway=gw-1,line=line-1,site=plant-a,station=st-1 first_seq=7i,last_seq=8i,"
        f'hash="{block.hash}",prev_hash="{"0" * 64}",key_id="hmac",'
        f"payload={escape_string_field('payload', block.text)} {AT_US}"
    )
    assert lines[1] == (
        "inspection,characteristic=len,gateway=gw-1,kind=measurement,line=line-1,part_number=P-100,"
        "site=plant-a,station=st-1,verdict=pass "
        f'seq=7i,block_time={AT_US}i,id="{FIXED_ID}",serial="SN-1",lot="L-1",work_order="WO-1",'
        'operator="op-12",gauge="G-1",device="caliper-1",plan_revision="C",unit="mm",reason_for_test="ongoing",'
        f"value=50.013,judged_value=50.013,deviation=0.004,nominal=12.000,lsl=11.980,usl=12.020 {AT_US}"
    )
    assert split_line(lines[2])[0].startswith("inspection,characteristic=dia,")
    assert split_line(lines[2])[1].startswith(f"seq=8i,block_time={AT_US}i,")
    assert split_line(lines[2])[2] == str(AT_US + 1)  # the record's own recorded_at
    serial_bucket = "serial:" + hashlib.sha256(b"SN-1").hexdigest()[:3]
    assert f'lookup,bucket={serial_bucket} gw:gw-1/st-1="[\\"SN-1\\"]" {AT_US}' in lines
    assert {split_line(x)[0] for x in lines[3:]} == {
        f"lookup,bucket={bucket(k, v)}" for k, v in (("serial", "SN-1"), ("lot", "L-1"), ("work_order", "WO-1"))
    }
    assert all("\n" not in x and "\r" not in x for x in lines)
    # a redelivery writes the identical points (same series, same times): idempotent
    assert lines_for_block(blocks.read(block.text, strict=True)) == lines


def test_record_points_are_what_record_columns_says() -> None:
    block = seal([fixed_measurement(), part("SN-1", [FIXED_ID]), event("audit", event="sign_in", by="op-12")])
    for i, line in enumerate(lines_for_block(block)[1:4]):
        measurement_name, tags, fields, at = record_columns(block, i)
        head, body, ts = split_line(line)
        assert int(ts) == at == parse_utc_us(block.materialise()[i]["recorded_at"])
        assert head == measurement_name + "".join(f",{k}={v}" for k, v in sorted(tags.items()))
        written = dict(part.split("=", 1) for part in re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', body))
        assert set(written) == set(fields)
        for k, v in fields.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                assert written[k] == f'"{v}"', k
            elif isinstance(v, int):
                assert written[k] == f"{v}i", k
            else:
                assert float(written[k]) == v, k
    assert split_line(lines_for_block(block)[2])[0].startswith("part,gateway=gw-1,kind=part,")
    assert (
        split_line(lines_for_block(block)[3])[0]
        == "event,gateway=gw-1,kind=audit,line=line-1,site=plant-a,station=st-1"
    )


def test_a_kind_added_later_is_stored_as_an_event_not_refused() -> None:
    block = seal([event("signature", by="qe-1", meaning="approved")])
    assert lines_for_block(block)[1].startswith("event,gateway=gw-1,kind=signature,")


def test_tags_are_escaped_and_empty_ones_left_out() -> None:
    block = seal([fixed_measurement(part_number="", characteristic="ø dia, =")], site="Werk 1, Halle=3")
    head = lines_for_block(block)[1].split(" seq=")[0]
    assert head == (
        "inspection,characteristic=ø\\ dia\\,\\ \\=,gateway=gw-1,kind=measurement,line=line-1,"
        "site=Werk\\ 1\\,\\ Halle\\=3,station=st-1,verdict=pass"
    )
    _, tags, _, _ = record_columns(block, 0)
    assert "part_number" not in tags


@pytest.mark.parametrize("bad", ["ends\\", "a\\,b", "a\\ b", "a\\=b"])
def test_tag_backslashes_influxdb_cannot_represent_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="'characteristic'"):
        lines_for_block(seal([fixed_measurement(characteristic=bad)]))
    with pytest.raises(ValueError, match="'station'"):
        lines_for_block(seal([fixed_measurement()], station=bad))


def test_harmless_tag_backslash_is_kept_literally() -> None:
    assert escape_tag("station", "C:\\st\\10") == "C:\\st\\10"


def test_string_fields_escape_backslash_and_quote() -> None:
    line = lines_for_block(seal([fixed_measurement(operator='O"Brien \\ x, y=z')]))[1]
    assert ',operator="O\\"Brien \\\\ x, y=z",' in line


def test_none_fields_are_left_out() -> None:
    block = seal([fixed_measurement(serial=None, lot=None, work_order=None, operator=None, gauge=None, deviation=None)])
    lines = lines_for_block(block)
    assert len(lines) == 2  # nothing to look up
    for name in ("serial", "lot", "work_order", "operator", "gauge", "deviation"):
        assert f",{name}=" not in lines[1]
    assert set(record_columns(block, 0)[2]) == {
        "seq", "block_time", "id", "device", "plan_revision", "unit", "reason_for_test",
        "value", "judged_value", "nominal", "lsl", "usl",
    }  # fmt: skip


@pytest.mark.parametrize("field", ["operator", "serial", "lot", "work_order"])
@pytest.mark.parametrize("brk", ["\n", "\r"])
def test_line_breaks_in_identifiers_are_refused_naming_the_field(field: str, brk: str) -> None:
    block = seal([fixed_measurement(**{field: f"first{brk}second"})])
    assert "\n" not in block.text and "\r" not in block.text  # JSON escapes it in the block...
    with pytest.raises(ValueError, match=f"'{field}' contains a line break"):
        lines_for_block(block)  # ...but the column itself is refused


def test_free_text_with_line_breaks_stays_in_the_block() -> None:
    block = seal([fixed_measurement(reason="two\nlines", raw="+50.013\r\n")])
    lines = lines_for_block(block)
    assert all("\n" not in x for x in lines) and ",reason=" not in lines[1] and ",raw=" not in lines[1]


@pytest.mark.parametrize(
    ("field", "value"),
    [("value", "1" + "0" * 400), ("lsl", "abc"), ("usl", "nan"), ("nominal", "inf"), ("deviation", "1.2.3")],
)
def test_numbers_that_are_not_finite_decimals_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        lines_for_block(seal([fixed_measurement(**{field: value})]))


@given(
    st.one_of(
        st.integers(0, 12)
        .flatmap(lambda p: st.decimals(allow_nan=False, allow_infinity=False, places=p))
        .map(lambda d: format(d, "f")),
        st.from_regex(r"\A-?[0-9]{1,20}(\.[0-9]{0,20})?\Z"),
        st.from_regex(r"\A[-+ ]?[0-9_.eE]{1,12}\Z"),
    )
)
def test_a_written_float_is_the_value_record_columns_expects(value: str) -> None:
    """The fast path writes a plain decimal as it is; what InfluxDB reads must be float(value)."""
    block = seal([fixed_measurement(value=value)])
    try:
        expected = record_columns(block, 0)[2]["value"]
    except ValueError:
        with pytest.raises(ValueError, match="'value'"):
            lines_for_block(block)
        return
    written = re.search(r",value=([^, ]+)", lines_for_block(block)[1])
    assert written is not None
    literal = written.group(1)
    # what InfluxDB's parser accepts as a float literal: digits, one '.', an optional '-'
    assert re.fullmatch(r"-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", literal), literal
    assert float(literal) == expected


def test_lookup_entries_are_distinct_values_per_bucket_in_order() -> None:
    ids = [f"0193a0a0-0000-7000-8000-00000000010{i}" for i in range(4)]
    block = seal(
        [
            fixed_measurement(serial="SN-1", id=ids[0]),
            fixed_measurement(serial="SN-2", id=ids[1], supersedes=ids[0]),
            fixed_measurement(serial="SN-1", id=ids[2]),
            event("invalidation", target=ids[1], by="op", reason="dropped"),
            event("nonconformance", measurement_id=ids[2]),
            event("disposition", nonconformance_id=ids[3], decision="scrap", by="qe"),
        ]
    )
    entries = lookup_entries(block)
    values = [v for vs in entries.values() for v in vs]
    assert sorted(values) == sorted(["SN-1", "SN-2", "L-1", "WO-1", ids[0], ids[1], ids[2], ids[3]])
    for b, vs in entries.items():
        key = b.split(":")[0]
        assert all(bucket(key, v) == b for v in vs)
        assert len(b) == len(key) + 4 and re.fullmatch(r"[0-9a-f]{3}", b[-3:])
    assert {b.split(":")[0] for b in entries} == {"serial", "lot", "work_order", "ref"}


def test_many_serials_in_one_bucket_share_one_point() -> None:
    same = [s for s in (f"SN-{n}" for n in range(20_000)) if bucket("serial", s) == bucket("serial", "SN-0")][:3]
    block = seal([fixed_measurement(serial=s, lot=None, work_order=None) for s in same])
    [lookup] = lines_for_block(block)[4:]
    field = escape_string_field("x", encode_lookup(same))
    assert lookup == f"lookup,bucket={bucket('serial', 'SN-0')} gw:gw-1/st-1={field} {AT_US}"
    assert decode_lookup(encode_lookup(same)) == same


@given(st.lists(st.text(), max_size=5))
def test_lookup_values_encode_as_json(values: list[str]) -> None:
    try:
        expected = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    except UnicodeEncodeError:
        return
    assert encode_lookup(values) == expected
    assert decode_lookup(expected) == values


def test_decode_lookup_refuses_what_is_not_a_list_of_strings() -> None:
    assert decode_lookup('["a",1]') is None and decode_lookup("{") is None and decode_lookup(None) is None


def test_checkpoint_line() -> None:
    block = seal([fixed_measurement()])
    cp = checkpoints.make("gw-1", block.last_seq, block.hash, AT_US + 5, SIGNER)
    assert checkpoint_line(cp) == (
        f'checkpoint,gateway=gw-1 head_seq=7i,head_hash="{block.hash}",key_id="hmac",'
        f"payload={escape_string_field('payload', cp.text)} {AT_US + 5}"
    )
    unsigned = checkpoints.make("gw-1", 7, block.hash, AT_US, None)
    assert ",key_id=" not in checkpoint_line(unsigned)


def test_block_columns_are_the_block_line() -> None:
    block = seal([fixed_measurement()])
    tags, fields, at = block_columns(block)
    assert tags == {"gateway": "gw-1", "line": "line-1", "site": "plant-a", "station": "st-1"}
    assert fields["payload"] == block.text and fields["first_seq"] == 7 and fields["key_id"] == "hmac"
    assert at == AT_US


def stored_row(block: Block, index: int) -> dict[str, Any]:
    """A row as InfluxDB's JSON gives it: integral floats come back as ints, absent columns None."""
    name, tags, fields, at = record_columns(block, index)
    row: dict[str, Any] = {k: None for k in (*TAG_KEYS, *RECORD_FIELDS)}
    row.update(measurement=name, time=at, **tags)
    for k, v in fields.items():
        row[k] = int(v) if isinstance(v, float) and v.is_integer() else v
    return json.loads(json.dumps(row))  # type: ignore[no-any-return]


def test_mismatches_names_edited_columns() -> None:
    block = seal([fixed_measurement(value="50.000")])
    _, tags, fields, at = record_columns(block, 0)
    row = stored_row(block, 0)
    assert isinstance(row["value"], int)  # 50.0 printed as 50
    assert mismatches(tags, fields, at, row) == []
    assert mismatches(tags, fields, at, {**row, "value": 50.001}) == ["value"]
    assert mismatches(tags, fields, at, {**row, "serial": "SN-2", "verdict": "fail"}) == ["verdict", "serial"]
    assert mismatches(tags, fields, at, {**row, "supersedes": "x"}) == ["supersedes"]  # a column added later
    assert mismatches(tags, fields, at, {**row, "seq": 7.0}) == ["seq"]
    assert mismatches(tags, fields, at, {**row, "time": row["time"] + 1}) == ["time"]
    assert mismatches(tags, fields, at, {**row, "gateway": None}) == ["gateway"]


@given(st.integers(min_value=0, max_value=4_102_444_799_999_999))
def test_utc_us_matches_the_reference_parser(us: int) -> None:
    assert utc_us(format_utc_us(us)) == us == parse_utc_us(format_utc_us(us))


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


@given(st.text(alphabet=st.characters(blacklist_characters="\n\r", codec="utf-8")))
def test_string_field_escaping_round_trips(text: str) -> None:
    assert _unescape_string_field(escape_string_field("f", text)) == text


def test_an_ed25519_chain_makes_the_same_kind_of_lines(tmp_path: Path) -> None:
    chain = GatewayChain("gw-7", tmp_path)
    block = chain.seal([measurement("SN-9")])
    lines = lines_for_block(block)
    assert lines[0].startswith("block,gateway=gw-7,") and f'key_id="{block.key_id}"' in lines[0]
    assert _unescape_string_field(lines[0].split(",payload=")[1].rsplit(" ", 1)[0]) == block.text
