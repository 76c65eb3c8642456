"""The Q-DAS DFQ export against golden files, field by field, and its refusals.

Golden cases live in ``tests/golden/dfq/`` (see the README there). A mismatch is reported
per K-field and characteristic index, so a failure names what changed rather than showing
two long texts.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector import config as config_mod
from collector.dashboard.records import site_dfq
from collector.evidence.dfq import (
    CLASS_CODES,
    REASON_CODES,
    DfqError,
    dfq_files,
    encode_dfq,
    to_dfq,
    write_dfq_files,
)
from collector.inspection.models import Criticality, ReasonForTest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dfq"
LINE = re.compile(r"K(\d{4})(?:/(\d+))? (.*)")

Fields = dict[tuple[str, int | None], list[str]]


def load(case: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((GOLDEN / case / "records.json").read_text(encoding="utf-8"))
    return records


def fields(text: str) -> Fields:
    """``{(K-field, index): [values in order]}``: enough to name the field that differs."""
    out: Fields = defaultdict(list)
    for number, line in enumerate(text.splitlines(), start=1):
        m = LINE.fullmatch(line)
        assert m, f"line {number} is not a K-field line: {line!r}"
        out[(f"K{m.group(1)}", int(m.group(2)) if m.group(2) else None)].append(m.group(3))
    return dict(out)


def assert_same_fields(actual: str, expected: str, where: str) -> None:
    got, want = fields(actual), fields(expected)
    problems = []
    for key in sorted(set(got) | set(want), key=lambda k: (k[0], k[1] or 0)):
        name = key[0] + (f"/{key[1]}" if key[1] is not None else "")
        if key not in got:
            problems.append(f"{name}: missing (expected {want[key]})")
        elif key not in want:
            problems.append(f"{name}: unexpected {got[key]}")
        elif got[key] != want[key]:
            diffs = [
                f"#{i + 1}: {a!r} != {b!r}" for i, (a, b) in enumerate(zip(got[key], want[key], strict=False)) if a != b
            ]
            if len(got[key]) != len(want[key]):
                diffs.append(f"{len(got[key])} value(s), expected {len(want[key])}")
            problems.append(f"{name}: " + "; ".join(diffs))
    assert not problems, f"{where}: fields differ:\n" + "\n".join(problems)
    # same fields, same values: what is left is line order, which the reader depends on
    # (a value's fields follow its K0001 line)
    assert actual == expected, f"{where}: same fields but different line order"


def single_cases() -> list[str]:
    return sorted(p.parent.name for p in GOLDEN.glob("*/expected.dfq"))


def multi_cases() -> list[str]:
    return sorted(p.parent.name for p in GOLDEN.glob("*/expected") if p.is_dir())


def test_golden_cases_exist() -> None:
    assert single_cases() and multi_cases()


def options(case: str) -> dict[str, Any]:
    """A case's ``options.json``: K1002 ``description`` and the ``zone`` of K0004 (else none, UTC)."""
    path = GOLDEN / case / "options.json"
    given = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {"description": given.get("description"), "zone": ZoneInfo(given.get("zone", "UTC"))}


@pytest.mark.parametrize("case", single_cases())
def test_to_dfq_matches_golden(case: str) -> None:
    expected = (GOLDEN / case / "expected.dfq").read_text(encoding="utf-8")
    assert_same_fields(to_dfq(load(case), **options(case)), expected, case)


def test_the_local_time_case_covers_what_it_claims() -> None:
    """Local time across a daylight-saving change, K1002, a re-measure and an invalidation."""
    case = "local_time_remeasure"
    records = load(case)
    text = to_dfq(records, **options(case))
    got = fields(text)
    assert got[("K1002", None)] == ["Hydraulic valve housing, final inspection"]
    # 00:30Z is 02:30 CEST; 01:15Z, after the change, 02:15 CET: later, though the clock shows earlier
    assert got[("K0004", 1)] == ["25.10.2026/02:30:00", "25.10.2026/02:15:00", "26.10.2026/00:30:00"]
    remeasured = [r for r in records if r["kind"] == "measurement" and r.get("supersedes")]
    assert len(remeasured) == 1 and remeasured[0]["value"] in got[("K0001", 1)]
    superseded = next(r for r in records if r["id"] == remeasured[0]["supersedes"])
    assert superseded["value"] not in got[("K0001", 1)]  # left out: the re-measure took its place
    assert len(got[("K0001", 1)]) == len(got[("K0001", 2)]) == 3  # one value set per part
    assert got[("K0002", 2)] == ["0", "0", "129"]  # invalidated, nothing re-measured it: kept, marked
    assert to_dfq(records) != text  # the zone matters: UTC is another file


@pytest.mark.parametrize("case", multi_cases())
def test_dfq_files_match_golden(case: str) -> None:
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted((GOLDEN / case / "expected").glob("*.dfq"))}
    files = dfq_files(load(case))
    assert sorted(files) == sorted(expected)
    for name, text in files.items():
        assert_same_fields(text, expected[name], f"{case}/{name}")


def test_single_group_through_dfq_files_is_to_dfq() -> None:
    records = load("hx4711_remeasure_invalidation")
    assert dfq_files(records) == {"HX-4711_C.dfq": to_dfq(records)}


def test_the_mapping_tables_cover_every_model_value() -> None:
    # a new criticality or reason for test must get a Q-DAS code deliberately
    assert set(CLASS_CODES) == {c.value for c in Criticality}
    assert set(REASON_CODES) == {r.value for r in ReasonForTest}
    assert REASON_CODES["patrol"] == 0


def test_description_is_k1002_when_given() -> None:
    records = load("hx4711_remeasure_invalidation")
    text = to_dfq(records, description="Heat exchanger flange")
    assert fields(text)[("K1002", None)] == ["Heat exchanger flange"]
    assert ("K1002", None) not in fields(to_dfq(records))
    files = dfq_files(load("three_groups"), descriptions={"BR/200": "Bracket"})
    assert fields(files["BR_200_A.dfq"])[("K1002", None)] == ["Bracket"]
    assert ("K1002", None) not in fields(files["HX-4711_C.dfq"])


def test_mixed_part_numbers_are_refused_by_to_dfq() -> None:
    with pytest.raises(DfqError, match=r"BR/200 rev A, HX-4711 rev C, HX-4711 rev D"):
        to_dfq(load("three_groups"))


def test_no_measurements_is_an_error() -> None:
    parts = [r for r in load("hx4711_remeasure_invalidation") if r["kind"] != "measurement"]
    with pytest.raises(DfqError, match="no measurement records"):
        to_dfq(parts)
    assert dfq_files(parts) == {}


def test_records_that_are_not_verified_evidence_are_refused_naming_them() -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    assert all(r["verified"] for r in records)  # as a trace against the key directory gives them
    bad = records[2]
    bad["verified"], bad["verification"] = False, "NOT VERIFIED: FORGED signature: signature does not match key x"
    for export in (to_dfq, dfq_files):
        with pytest.raises(
            DfqError,
            match=rf"1 record\(s\) are not verified evidence .*{bad['gateway']} seq {bad['seq']}: NOT VERIFIED: FORGED",
        ):
            export(records)
    unmarked = [{k: v for k, v in r.items() if k not in ("verified", "verification")} for r in records]
    assert to_dfq(unmarked) == to_dfq(load("hx4711_remeasure_invalidation"))  # built by a caller: taken as given


def test_two_specifications_for_one_characteristic_are_refused() -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    later = [r for r in records if r["kind"] == "measurement" and r["characteristic"] == "D1"][1]
    later["usl"] = "12.025"
    with pytest.raises(DfqError, match=r"characteristic D1 has two specifications .* differ in usl"):
        to_dfq(records)


@pytest.mark.parametrize("bad", ["op\n117", "op\r117", "op\x14117", "op\x0f117", "op\t117", "op\x85117"])
def test_control_characters_are_refused_not_replaced(bad: str) -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    records[0]["operator"] = bad
    with pytest.raises(DfqError, match=r"operator .* control character"):
        to_dfq(records)


@pytest.mark.parametrize("value", ["1E-7", "1,5", " 12.0", "12.", "NaN"])
def test_a_value_that_is_not_a_plain_decimal_is_refused(value: str) -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    records[0]["value"] = value
    with pytest.raises(DfqError, match="not a plain decimal"):
        to_dfq(records)


def test_unknown_codes_are_refused() -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    records[0]["reason_for_test"] = "sampling"
    with pytest.raises(DfqError, match="unknown reason for test 'sampling'"):
        to_dfq(records)
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    for r in records:
        if r.get("characteristic") == "D1" and r["kind"] == "measurement":
            r["criticality"] = "cosmetic"
    with pytest.raises(DfqError, match="unknown criticality 'cosmetic'"):
        to_dfq(records)


def test_file_names_are_safe_and_distinct() -> None:
    base = next(r for r in load("three_groups") if r["kind"] == "measurement")
    a = dict(base, id="a" * 26, part_number="A/B", plan_revision="1")
    b = dict(base, id="b" * 26, part_number="A_B", plan_revision="1")
    c = dict(base, id="c" * 26, part_number="../..", plan_revision="..")
    assert sorted(dfq_files([a, b, c])) == ["A_B_1-2.dfq", "A_B_1.dfq", "part.dfq"]


def test_encode_default_is_iso_8859_1_with_crlf() -> None:
    text = to_dfq(load("hx4711_remeasure_invalidation"))
    data = encode_dfq(text)
    assert data.count(b"\r\n") == text.count("\n") and b"\n" not in data.replace(b"\r\n", b"")
    assert b"K2142/3 \xb5m\r\n" in data  # µ is 0xB5 in ISO-8859-1 and in Windows-1252
    assert b"K0008/1 Zo\xeb M\xfcller\r\n" in data
    assert data.decode("cp1252") == data.decode("iso-8859-1")  # both readers see the same text
    assert encode_dfq(text, "utf-8").decode("utf-8") == text.replace("\n", "\r\n")


def test_encode_refuses_what_the_encoding_cannot_carry() -> None:
    records = copy.deepcopy(load("hx4711_remeasure_invalidation"))
    records[0]["operator"] = "Łukasz"
    text = to_dfq(records)
    with pytest.raises(DfqError, match=r"line \d+ \(K0008/1\): the character 'Ł' \(U\+0141\) cannot be written"):
        encode_dfq(text)
    assert "Łukasz".encode() in encode_dfq(text, "utf-8")
    records[0]["operator"] = "5 €"
    text = to_dfq(records)
    with pytest.raises(DfqError, match="U\\+20AC"):
        encode_dfq(text)  # ISO-8859-1 has no euro sign: a Windows-1252-only byte would be misread
    assert b"K0008/1 5 \x80\r\n" in encode_dfq(text, "cp1252")


@pytest.mark.parametrize("encoding", ["utf-16", "ascii-but-not-really", "utf-32"])
def test_unsupported_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(DfqError, match="unsupported DFQ encoding"):
        encode_dfq("K0100 1\n", encoding)


def test_write_dfq_files(tmp_path: Path) -> None:
    files = dfq_files(load("three_groups"))
    written = write_dfq_files(files, tmp_path / "out")
    assert [p.name for p in written] == list(files)
    for p in written:
        assert p.read_bytes() == encode_dfq(files[p.name])
    with pytest.raises(DfqError, match="exists already"):
        write_dfq_files(files, tmp_path / "out")


def test_write_dfq_files_writes_nothing_when_one_file_cannot_be_encoded(tmp_path: Path) -> None:
    files = {"a.dfq": "K0100 1\n", "b.dfq": "K0100 1\nK1001 Ω\n"}
    with pytest.raises(DfqError, match="U\\+03A9"):
        write_dfq_files(files, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_dashboards_download_writes_local_time_and_k1002() -> None:
    cfg = config_mod.parse(
        """
plans:
  - part_number: HX-4711
    revision: C
    description: Hydraulic valve housing, final inspection
    characteristics:
      - {id: D1, name: Bore diameter, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3}
""",
        "site.yaml",
    )
    out = io.StringIO()
    site_dfq(cfg, "Europe/Berlin").write(load("local_time_remeasure"), out)
    expected = (GOLDEN / "local_time_remeasure" / "expected.dfq").read_text(encoding="utf-8")
    assert out.getvalue() == expected.replace("\n", "\r\n")  # the same file the CLI writes, CR LF
