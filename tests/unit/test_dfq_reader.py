"""An independent DFQ reader reads the export back, and what it reads must be the records.

The reader below is written from the format description alone (the Q-DAS AQDEF section
of the project's protocol reference), not from the exporter: it imports nothing of
``collector.evidence.dfq`` but the functions under test, and keeps its own code tables. It
reads the file's bytes, as a statistics tool would, and accepts both value line forms
the description names (``Kxxxx/n value`` and the compact 0x14 / 0x0F form). Its own
correctness is checked first, on hand-written files.

No installable third-party reader was usable here: ``qdas-parser`` and ``aqdef-reader``
do not exist on PyPI, and ``aqdefreader`` (not a project dependency) parses only unsigned
numbers with a decimal comma, leaving ``12.003`` and every negative value as text.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector.evidence.dfq import dfq_files, encode_dfq, to_dfq

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dfq"

# --- the reader -------------------------------------------------------------------------------

#: compact value form: fields of one characteristic's value, separated by 0x14, in this order
COMPACT_FIELDS = ("K0001", "K0002", "K0004", "K0005", "K0006", "K0007", "K0008", "K0010", "K0011", "K0012")
_K_LINE = re.compile(r"K(?P<key>\d{4})(?:/(?P<index>\d+))?(?: (?P<value>.*))?")


class DfqFormatError(Exception):
    pass


@dataclass
class DfqFile:
    header: dict[str, str] = field(default_factory=dict)  # K0100 and the part fields (K1xxx)
    characteristics: dict[int, dict[str, str]] = field(default_factory=dict)
    values: dict[int, list[dict[str, str]]] = field(default_factory=dict)

    def characteristic(self, number: str) -> int:
        found = [n for n, c in self.characteristics.items() if c.get("K2001") == number]
        if len(found) != 1:
            raise AssertionError(f"characteristic {number!r}: found {len(found)} times")
        return found[0]


def read_dfq(data: bytes, encoding: str) -> DfqFile:
    text = data.decode(encoding)  # strict: a byte the encoding does not define is an error
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    out = DfqFile()
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        if line.startswith("K"):
            m = _K_LINE.fullmatch(line)
            if m is None:
                raise DfqFormatError(f"line {number}: not a K-field line: {line!r}")
            key, value = "K" + m["key"], m["value"] or ""
            index = int(m["index"]) if m["index"] else None
            _k_field(out, key, index, value, number)
        else:
            _compact(out, line, number)
    declared = out.header.get("K0100")
    if declared is not None and int(declared) != len(out.characteristics):
        raise DfqFormatError(f"K0100 says {declared} characteristics, the file describes {len(out.characteristics)}")
    return out


def _k_field(out: DfqFile, key: str, index: int | None, value: str, number: int) -> None:
    group = key[1]
    if key == "K0100" or group == "1":
        if index not in (None, 1):
            raise DfqFormatError(f"line {number}: only one part per file is expected, got {key}/{index}")
        out.header[key] = value
    elif group in "2358":
        out.characteristics.setdefault(index or 1, {})[key] = value
    elif group == "0":
        n = index or 1
        if key == "K0001":
            out.values.setdefault(n, []).append({key: value})
        elif not out.values.get(n):
            raise DfqFormatError(f"line {number}: {key}/{n} before any K0001/{n}")
        else:
            out.values[n][-1][key] = value
    else:
        raise DfqFormatError(f"line {number}: unexpected field {key}")


def _compact(out: DfqFile, line: str, number: int) -> None:
    for n, chunk in enumerate(line.split("\x0f"), start=1):
        parts = chunk.split("\x14")
        if len(parts) > len(COMPACT_FIELDS):
            raise DfqFormatError(f"line {number}: {len(parts)} fields for characteristic {n}")
        out.values.setdefault(n, []).append({k: v for k, v in zip(COMPACT_FIELDS, parts, strict=False) if v != ""})


# --- the reader's own checks, on files written by hand from the description -----------------------

HAND_WRITTEN = (
    "K0100 2\r\n"
    "K1001 P-1\r\n"
    "K1004 B\r\n"
    "K2001/1 A\r\nK2110/1 -0.5\r\nK2111/1 0.5\r\n"
    "K2001/2 B\r\nK2142/2 mm\r\n"
    "K0001/1 -0.125\r\nK0002/1 0\r\nK0004/1 05.01.2026/07:08:09\r\n"
    "K0001/2 3.5\r\nK0008/2 Jürgen\r\n"
    "K0001/1 0.25\r\nK0002/1 129\r\n"
)


def test_reader_reads_the_k_field_form() -> None:
    f = read_dfq(HAND_WRITTEN.encode("iso-8859-1"), "iso-8859-1")
    assert f.header == {"K0100": "2", "K1001": "P-1", "K1004": "B"}
    assert f.characteristics == {1: {"K2001": "A", "K2110": "-0.5", "K2111": "0.5"}, 2: {"K2001": "B", "K2142": "mm"}}
    assert f.values[1] == [
        {"K0001": "-0.125", "K0002": "0", "K0004": "05.01.2026/07:08:09"},
        {"K0001": "0.25", "K0002": "129"},
    ]
    assert f.values[2] == [{"K0001": "3.5", "K0008": "Jürgen"}]


def test_reader_reads_the_compact_form() -> None:
    line = "1.5\x140\x1405.01.2026/07:08:09\x0f2.5\x14129\x14\x14\x14L-1\x14\x14op-1\x14\x14\x14G-7"
    f = read_dfq(f"K0100 2\nK2001/1 A\nK2001/2 B\n{line}\n".encode("ascii"), "ascii")
    assert f.values[1] == [{"K0001": "1.5", "K0002": "0", "K0004": "05.01.2026/07:08:09"}]
    assert f.values[2] == [{"K0001": "2.5", "K0002": "129", "K0006": "L-1", "K0008": "op-1", "K0012": "G-7"}]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("K0100 1\nK0002/1 0\n", "before any K0001/1"),
        ("K0100 2\nK2001/1 A\n", "K0100 says 2"),
        ("K1001/2 P\n", "only one part"),
        ("Kx001 1\n", "not a K-field line"),
    ],
)
def test_reader_rejects_malformed_files(text: str, problem: str) -> None:
    with pytest.raises(DfqFormatError, match=problem):
        read_dfq(text.encode("ascii"), "ascii")


# --- the export, read back ------------------------------------------------------------------------

#: from the description: K2005 4 critical .. 0 unimportant; K0015 codes
CLASS = {"critical": "4", "major": "3", "minor": "2", "incidental": "1"}
REASON = {
    "ongoing": "0",
    "special": "10",
    "audit": "20",
    "first_piece": "30",
    "raw_material": "40",
    "pre_run": "50",
    "patrol": "0",
}
#: value field -> record field, compared as text (absent when the record has none)
VALUE_TEXT = {
    "K0006": "lot",
    "K0008": "operator",
    "K0010": "station",
    "K0012": "gauge",
    "K0014": "serial",
    "K0053": "work_order",
}


def load(case: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((GOLDEN / case / "records.json").read_text(encoding="utf-8"))
    return records


def not_for_statistics(records: list[dict[str, Any]]) -> set[str]:
    """Ids of values an invalidation targets (written, marked 129)."""
    return {str(r["target"]) for r in records if r["kind"] == "invalidation"}


def superseded(records: list[dict[str, Any]]) -> set[str]:
    """Ids of values a later measurement re-measured (left out: the new value takes their place)."""
    return {str(r["supersedes"]) for r in records if r["kind"] == "measurement" and r.get("supersedes")}


def check_against_records(
    f: DfqFile, measurements: list[dict[str, Any]], void: set[str], zone: dt.tzinfo = dt.UTC
) -> None:
    """Every header, characteristic and value field of ``f`` against the records it came from.

    ``measurements`` without the superseded ones; ``zone``: the time zone of K0004.
    """
    assert {(r["part_number"], r["plan_revision"]) for r in measurements} == {(f.header["K1001"], f.header["K1004"])}
    chars = list(dict.fromkeys(r["characteristic"] for r in measurements))
    assert f.header["K0100"] == str(len(chars))
    assert [f.characteristics[n]["K2001"] for n in sorted(f.characteristics)] == chars  # first-seen order
    for cid in chars:
        n = f.characteristic(cid)
        mine = [r for r in measurements if r["characteristic"] == cid]
        spec = mine[0]
        c = f.characteristics[n]
        assert c["K2002"] == spec["characteristic_name"]
        assert c["K2004"] == "0"
        assert c["K2005"] == CLASS[spec["criticality"]]
        assert c["K2022"] == str(spec["decimals"])
        assert c["K2142"] == spec["unit"]
        for key, name in (("K2101", "nominal"), ("K2110", "lsl"), ("K2111", "usl")):
            if spec[name] is None:
                assert key not in c, f"{cid}: {key} for a missing {name}"
            else:
                assert Decimal(c[key]) == Decimal(spec[name]), f"{cid}: {key}"
        assert len(f.values.get(n, [])) == len(mine), f"{cid}: number of values"
        for value, r in zip(f.values[n], mine, strict=True):
            where = f"{cid} value of record {r['id']}"
            assert value["K0001"] == r["value"], where  # exact: the same digits, not just the same number
            assert Decimal(value["K0001"]) == Decimal(r["value"]), where
            assert value["K0002"] == ("129" if r["id"] in void else "0"), where
            local = dt.datetime.strptime(value["K0004"], "%d.%m.%Y/%H:%M:%S")
            recorded = dt.datetime.fromisoformat(r["measured_at"].replace("Z", "+00:00"))
            shifted = recorded.astimezone(zone).replace(microsecond=0, tzinfo=None)
            assert local == shifted, where  # local wall-clock time in the zone, whole seconds
            assert value["K0015"] == REASON[r["reason_for_test"]], where
            for key, name in VALUE_TEXT.items():
                assert value.get(key) == r[name], f"{where}: {key} ({name})"
            assert set(value) <= {"K0001", "K0002", "K0004", "K0015", *VALUE_TEXT}, where


@pytest.mark.parametrize("encoding", ["iso-8859-1", "cp1252", "utf-8"])
def test_export_reads_back_as_the_records(encoding: str) -> None:
    records = load("hx4711_remeasure_invalidation")
    data = encode_dfq(to_dfq(records), encoding)
    f = read_dfq(data, encoding)
    gone = superseded(records)
    measurements = [r for r in records if r["kind"] == "measurement" and r["id"] not in gone]
    check_against_records(f, measurements, not_for_statistics(records))

    # the cases the checks above must not pass vacuously: one value set per part
    l1 = f.values[f.characteristic("L1")]
    assert [v["K0001"] for v in l1] == ["30.012", "29.96", "30.03"]  # 30.04 invalidated and re-measured
    assert l1[2]["K0008"] == "Zoë Müller" and l1[2]["K0014"] == "SN-003" and "K0006" not in l1[2]
    d1 = f.values[f.characteristic("D1")]
    assert [v["K0001"] for v in d1] == ["12.0034", "12.0150", "12.000230"]  # 12.0251 re-measured after rework
    assert d1[0]["K0012"] == "CAL-0042" and d1[0]["K0006"] == "L-1" and d1[0]["K0053"] == "WO-1"
    assert d1[0]["K0015"] == "30"
    for n in f.values:  # the i-th value of every characteristic is of the i-th part
        assert [v["K0014"] for v in f.values[n]] == ["SN-001", "SN-002", "SN-003"]
    assert "K2101" not in f.characteristics[f.characteristic("R1")]


def test_every_file_of_a_multi_group_export_reads_back() -> None:
    records = load("three_groups")
    void = not_for_statistics(records)
    gone = superseded(records)
    files = dfq_files(records)
    assert len(files) == 3
    for name, text in files.items():
        f = read_dfq(encode_dfq(text), "iso-8859-1")
        key = (f.header["K1001"], f.header["K1004"])
        mine = [
            r
            for r in records
            if r["kind"] == "measurement" and (r["part_number"], r["plan_revision"]) == key and r["id"] not in gone
        ]
        assert mine, name
        check_against_records(f, mine, void)
    # the two revisions keep their own limits
    c = read_dfq(encode_dfq(files["HX-4711_C.dfq"]), "iso-8859-1").characteristics[1]
    d = read_dfq(encode_dfq(files["HX-4711_D.dfq"]), "iso-8859-1").characteristics[1]
    assert (c["K2110"], c["K2111"]) == ("11.980", "12.020")
    assert (d["K2110"], d["K2111"]) == ("11.985", "12.015")
    w = read_dfq(encode_dfq(files["BR_200_A.dfq"]), "iso-8859-1").values[1]
    assert [(v["K0001"], v["K0002"]) for v in w] == [("250.38", "0")]  # 250.43 invalidated, re-measured


def test_the_local_time_case_reads_back_in_the_sites_zone() -> None:
    records = load("local_time_remeasure")
    zone = ZoneInfo("Europe/Berlin")
    f = read_dfq(
        encode_dfq(to_dfq(records, description="Hydraulic valve housing, final inspection", zone=zone)), "iso-8859-1"
    )
    gone = superseded(records)
    mine = [r for r in records if r["kind"] == "measurement" and r["id"] not in gone]
    check_against_records(f, mine, not_for_statistics(records), zone)
    assert f.header["K1002"] == "Hydraulic valve housing, final inspection"
    for n in f.values:
        assert [v["K0014"] for v in f.values[n]] == ["HX000201", "HX000202", "HX000203"]
