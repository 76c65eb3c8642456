"""GS1 parsing, shop label patterns and the decode helper of the scanner driver."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.serial.scanner import (
    DecodeError,
    GS1Error,
    LabelFormat,
    ScannerConfig,
    check_text,
    decode,
    gs1_check_digit,
    gs1_date,
    parse_gs1,
    strip_symbology,
)
from simulators.scanner import check_digit, element_string, hri

GS = "\x1d"
GTIN = "09501101530003"


def config(**settings: Any) -> ScannerConfig:
    return ScannerConfig(id="s", driver="scanner", port="p", **settings)


# -- GS1 element strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        f"]C101{GTIN}10ABC{GS}21123",
        f"]d201{GTIN}10ABC{GS}21123",
        f"]Q301{GTIN}10ABC{GS}21123",
        f"]e001{GTIN}10ABC{GS}21123",
        f"01{GTIN}10ABC{GS}21123",  # no symbology identifier
        f"{GS}01{GTIN}10ABC{GS}21123",  # FNC1 in first position sent as GS
        f"01{GTIN}{GS}10ABC{GS}21123{GS}",  # needless separators after fixed fields and at the end
        f"(01){GTIN}(10)ABC(21)123",
        f"]C1(01){GTIN}(10)ABC(21)123",
    ],
)
def test_parse_gs1_forms(code: str) -> None:
    assert parse_gs1(code) == {"01": GTIN, "10": "ABC", "21": "123"}


def test_parse_gs1_reads_fixed_fields_without_separators_in_code_order() -> None:
    parsed = parse_gs1(f"]C101{GTIN}17260200111203151012{GS}21A-1/2%")
    assert list(parsed.items()) == [("01", GTIN), ("17", "260200"), ("11", "120315"), ("10", "12"), ("21", "A-1/2%")]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (f"00{'0' * 17}0", {"00": "000000000000000000"}),  # SSCC, check digit 0
        ("3103001250", {"3103": "001250"}),  # net weight 1.250 kg
        ("4109501101530003" + "3701" + GS + "422276", {"410": "9501101530003", "37": "01", "422": "276"}),
        ("9112345678901234567890" + GS + "7003" + "2612311530", {"91": "12345678901234567890", "7003": "2612311530"}),
        ("240PN-4711" + GS + "400WO-88123", {"240": "PN-4711", "400": "WO-88123"}),
    ],
)
def test_parse_gs1_other_identifiers(code: str, expected: dict[str, str]) -> None:
    assert parse_gs1(code) == expected


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (f"01{GTIN[:-1]}4", "check digit of 09501101530004 is wrong (expected 3)"),
        ("0195011015300", "AI (01) GTIN: expected 14 characters, got 11"),
        (f"01{GTIN[:5]}{GS}10ABC", "expected 14 characters, got 5"),
        ("01095011015300AB", "is not all digits"),
        (f"01{GTIN}10{'X' * 21}", "AI (10) BATCH/LOT: expected 1 to 20 characters, got 21"),
        (f"01{GTIN}21{'7' * 21}", "AI (21) SERIAL: expected 1 to 20 characters, got 21"),
        (f"01{GTIN}10{GS}21123", "AI (10) BATCH/LOT has no value"),
        (f"01{GTIN}10AB C", "outside the GS1 character set"),
        (f"01{GTIN}10AB\u00e4", "outside the GS1 character set"),
        (f"01{GTIN}99", "AI (99) INTERNAL has no value"),
        (f"01{GTIN}17261301", "month 13 does not exist"),
        (f"01{GTIN}17261232", "day 32 does not exist"),
        (f"01{GTIN}11250229", "day 29 does not exist"),  # 2025 is no leap year
        (f"01{GTIN}17", "AI (17) USE BY OR EXPIRY has no value"),
        (f"01{GTIN}1726", "expected 6 characters, got 2"),
        (f"01{GTIN}23ABC", "unknown application identifier at '23AB'"),
        ("(01)09501101530003(23)ABC", "unknown application identifier (23)"),
        ("(01)", "AI (01) GTIN has no value"),
        ("(1)0950", "parenthesised form must start with (AI)"),
        (f"(01){GTIN}(10)A(10)B", "AI (10) appears twice: 'A' and 'B'"),
        (f"(01){GTIN}(10)A(01){GTIN}(10)A", "AI (01) appears twice"),  # two codes glued by a lost CR
        (f"01{GTIN}10ABC{GS}{GS}21123", "two separators (FNC1) in a row"),
        ("]C0HX-4711", "symbology identifier ']C0' does not announce GS1 data"),
        (f"]d1{GTIN}", "symbology identifier ']d1'"),
        ("]C1", "empty code"),
        (GS * 3, "empty code"),
        ("", "empty code"),
        # nothing is stripped: a blank is in no GS1 value's character set (a damaged serial
        # 00000 -> "0000 " must not read as the serial 0000)
        (f"(01) {GTIN} (10) ABC (21) 123", "AI (01) GTIN: expected 14 characters"),
        (f"01{GTIN}10ABC{GS}21123 ", "outside the GS1 character set"),
        (f"  01{GTIN}10ABC{GS}21123", "unknown application identifier"),
    ],
)
def test_parse_gs1_errors(code: str, message: str) -> None:
    with pytest.raises(GS1Error) as info:
        parse_gs1(code)
    assert message in str(info.value)


def test_dates_allow_day_zero_and_leap_days() -> None:
    assert parse_gs1("17260200") == {"17": "260200"}
    assert parse_gs1("11240229") == {"11": "240229"}


@pytest.mark.parametrize(
    ("value", "today", "expected"),
    [
        ("271231", datetime.date(2026, 5, 1), datetime.date(2027, 12, 31)),
        ("270200", datetime.date(2026, 5, 1), datetime.date(2027, 2, 28)),  # DD 00: end of month
        ("240200", datetime.date(2026, 5, 1), datetime.date(2024, 2, 29)),
        ("761231", datetime.date(2026, 5, 1), datetime.date(2076, 12, 31)),  # 50 years ahead: this century
        ("770101", datetime.date(2026, 5, 1), datetime.date(1977, 1, 1)),  # 51 ahead: the last century
        ("100101", datetime.date(2095, 5, 1), datetime.date(2110, 1, 1)),  # 85 back: the next century
    ],
)
def test_gs1_date(value: str, today: datetime.date, expected: datetime.date) -> None:
    assert gs1_date(value, today) == expected


@pytest.mark.parametrize("value", ["271331", "270230", "2712", "27123a"])
def test_gs1_date_refuses(value: str) -> None:
    with pytest.raises(GS1Error):
        gs1_date(value, datetime.date(2026, 1, 1))


# -- shop labels and decode ---------------------------------------------------------------------

SHOP = r"(?P<part_number>[A-Z]{2}-\d{4})\|(?P<serial>HX\d{6})\|(?P<lot>L[\d-]+)(?:\|(?P<operator>op-\d+))?"


def test_label_format() -> None:
    label = LabelFormat.compile(SHOP)
    assert label.decode("HX-4711|HX000123|L2026-1121") == {
        "part_number": "HX-4711",
        "serial": "HX000123",
        "lot": "L2026-1121",
    }
    assert label.decode("]C0HX-4711|HX000123|L1|op-117")["operator"] == "op-117"
    with pytest.raises(DecodeError, match="does not match the label pattern"):
        label.decode("HX-4711|HX000123|L1 trailing")
    for bad, reason in (
        ("(?P<badge>\\d+)", "unknown named groups"),
        ("\\d+", "needs at least one named group"),
        ("(?P<serial>", "not a valid regular expression"),
    ):
        with pytest.raises(ValueError, match=reason):
            LabelFormat.compile(bad)


def test_decode_gs1_with_the_default_map() -> None:
    assert decode(f"]C101{GTIN}17271231102026-1121{GS}21000042", config(format="gs1")) == {
        "gtin": GTIN,
        "lot": "2026-1121",
        "serial": "000042",
    }


def test_decode_gs1_with_part_numbers_and_a_custom_map() -> None:
    cfg = config(
        format="gs1",
        gs1_map={"10": "lot", "21": "serial", "17": "expiry", "400": "work_order"},
        gtin_to_part_number={"9501101530003": "HX-4711"},  # GTIN-13, padded to 14
    )
    code = f"(01){GTIN}(17)270200(10)L1(21)S9(400)WO-88123"
    assert decode(code, cfg) == {
        "lot": "L1",
        "serial": "S9",
        "expiry": "270200",
        "work_order": "WO-88123",
        "part_number": "HX-4711",
    }
    with pytest.raises(DecodeError, match="not in gtin_to_part_number"):
        decode("(01)04006381333931(10)L1", cfg)
    with pytest.raises(DecodeError, match="no GTIN"):
        decode("(10)L1", cfg)


def test_decode_pattern_and_raw() -> None:
    assert decode("HX-4711|HX000001|L1", config(format="pattern", pattern=SHOP))["serial"] == "HX000001"
    with pytest.raises(DecodeError):
        decode(f"01{GTIN}", config(format="pattern", pattern=SHOP))
    assert decode("anything at all", config()) == {}


def test_check_text() -> None:
    assert check_text("Größe 42".encode()) == "Größe 42"
    assert check_text(b"]d2\x1e01\x1d\x04") == "]d2\x1e01\x1d\x04"
    for bad in (b"\xff\xfe", b"A\x00B", b"A\x7fB", b"A\rB"):
        with pytest.raises(DecodeError):
            check_text(bad)


def test_strip_symbology() -> None:
    assert strip_symbology("]C1abc") == "abc"
    assert strip_symbology("]Xzabc") == "abc"
    assert strip_symbology("]1abc") == "]1abc"
    assert strip_symbology("abc") == "abc"


# -- properties ---------------------------------------------------------------------------------

_CSET82 = "!\"%&'*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"  # minus ( )
# (kind, length) from the GS1 General Specifications, for generating values
_GENERATE: dict[str, tuple[str, int]] = {
    "00": ("check", 18),
    "01": ("check", 14),
    "02": ("check", 14),
    "410": ("check", 13),
    "11": ("date", 6),
    "13": ("date", 6),
    "17": ("date", 6),
    "20": ("digits", 2),
    "3103": ("digits", 6),
    "422": ("digits", 3),
    "7003": ("digits", 10),
    "30": ("vdigits", 8),
    "37": ("vdigits", 8),
    "10": ("text", 20),
    "21": ("text", 20),
    "22": ("text", 20),
    "240": ("text", 30),
    "400": ("text", 30),
    "91": ("text", 90),
}


@st.composite
def gs1_fields(draw: st.DrawFn) -> list[tuple[str, str]]:
    ais = draw(st.lists(st.sampled_from(sorted(_GENERATE)), min_size=1, max_size=6, unique=True))
    fields = []
    for ai in ais:
        kind, length = _GENERATE[ai]
        if kind == "check":
            body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
            value = body + check_digit(body)
        elif kind == "date":
            day = draw(st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31)))
            dd = 0 if draw(st.booleans()) and day.day == 1 else day.day
            value = f"{day:%y%m}{dd:02d}"
        elif kind == "digits":
            value = draw(st.text("0123456789", min_size=length, max_size=length))
        elif kind == "vdigits":
            value = draw(st.text("0123456789", min_size=1, max_size=length))
        else:
            value = draw(st.text(_CSET82, min_size=1, max_size=length))
        fields.append((ai, value))
    return fields


@given(gs1_fields(), st.sampled_from(["]C1", "]d2", "]Q3", "]e0", None]))
def test_gs1_element_strings_round_trip(fields: list[tuple[str, str]], symbology: str | None) -> None:
    code = element_string(fields, symbology=symbology)
    assert parse_gs1(code) == dict(fields)
    assert list(parse_gs1(code)) == [ai for ai, _ in fields]


@given(gs1_fields())
def test_gs1_printed_form_round_trips(fields: list[tuple[str, str]]) -> None:
    assert parse_gs1(hri(fields)) == dict(fields)


@given(st.text("0123456789", min_size=1, max_size=20))
def test_check_digit_agrees_with_the_simulator(digits: str) -> None:
    assert gs1_check_digit(digits) == check_digit(digits)


@given(st.text(alphabet=st.sampled_from(list("0123456789()]Cd1A-" + GS)), max_size=40))
@example(f"01{GTIN}")
@example(f"(01){GTIN}(10)(21)")
def test_random_text_parses_or_fails_with_a_gs1_error(code: str) -> None:
    try:
        parsed = parse_gs1(code)
    except GS1Error:
        return
    assert parsed
    # whatever parsed re-encodes to an element string that parses to the same
    assert parse_gs1(element_string(list(parsed.items()), symbology=None)) == parsed
