"""Line parsing of the generic ASCII driver, the shipped samples' patterns, and the simulator's formatter."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError, ReadingStatus
from drivers.serial.ascii import AsciiLineConfig, AsciiLineDriver, LineFormat, ParsedLine, parse_line, parse_number
from simulators.ascii_line import OHAUS, SYLVAC, Instrument, format_line, format_number
from tests.drivers.cases import sample

SYLVAC_SAMPLE = sample("ascii", "sample-sylvac.yaml")
OHAUS_SAMPLE = sample("ascii", "sample-ohaus.yaml")
SYLVAC_PATTERN = SYLVAC_SAMPLE["pattern"]
OHAUS_PATTERN = OHAUS_SAMPLE["pattern"]
ANY = r"(?P<value>.*)"
# the Sylvac layout (sign, digits without a superfluous zero, point, three decimals),
# independently of the driver's number regex
SYLVAC_LINE = re.compile(rb"[+-](?:0|[1-9][0-9]*)\.[0-9]{3}")


def fmt(**settings: Any) -> LineFormat:
    config = AsciiLineConfig(id="a", driver="ascii", port="p", **{"pattern": ANY, **settings})
    return AsciiLineDriver(config).format


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("+12.345", "12.345"),
        ("-0.0015", "-0.0015"),
        ("    -12.30", "-12.30"),  # a right-aligned field
        ("42", "42"),
        ("-0.000", "-0.000"),
    ],
)
def test_parse_number(text: str, value: str) -> None:
    assert str(parse_number(text)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "1e3",
        "NaN",
        "Infinity",
        "1,5",
        "1.2.3",
        "12 34",
        "+-1",
        "\u0663",
        "0x1f",
        "- 12.30",
        "12.",
        ".5",
        "42 ",
    ],
)
def test_parse_number_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a decimal number"):
        parse_number(text)


def test_decimal_comma() -> None:
    assert parse_number("12,345", decimal_comma=True) == Decimal("12.345")
    with pytest.raises(ValueError, match="decimal point"):
        parse_number("1.234,5", decimal_comma=True)


@pytest.mark.parametrize(
    ("line", "settings", "expected"),
    [
        (
            b"+12.345",
            {"pattern": SYLVAC_PATTERN, "unit": "mm"},
            ParsedLine("value", Decimal("12.345"), "mm", ReadingStatus.OK),
        ),
        (b"      12.35 g", {"pattern": OHAUS_PATTERN}, ParsedLine("value", Decimal("12.35"), "g", ReadingStatus.OK)),
        (
            b"     -12.35 g ?",
            {"pattern": OHAUS_PATTERN},
            ParsedLine("value", Decimal("-12.35"), "g", ReadingStatus.UNSTABLE),
        ),
        (
            b"12.3 kg",
            {"pattern": r"(?P<value>\S+) (?P<unit>\S+)", "unit": "g"},
            ParsedLine("value", Decimal("12.3"), "kg", ReadingStatus.OK),
        ),
        (
            b"-4 \xb5m",
            {"pattern": r"(?P<value>\S+) (?P<unit>\S+)"},
            ParsedLine("value", Decimal("-4"), "\xb5m", ReadingStatus.OK),
        ),
        (b"M3 1,5", {"pattern": r"M(?P<channel>\d) (?P<value>\S+)", "decimal_comma": True}, None),
        (b"ST,+0012.5 g", {"pattern": r"(?P<stable>ST|US),(?P<value>\S+) (?P<unit>g)"}, None),
        (b"US,+0012.5 g", {"pattern": r"(?P<stable>ST|US),(?P<value>\S+) (?P<unit>g)", "stable_when": "ST"}, None),
        (b"Err 3", {"error_pattern": r"Err \d+"}, ParsedLine("value", None, None, ReadingStatus.ERROR, "Err 3")),
    ],
)
def test_parse_line(line: bytes, settings: dict[str, Any], expected: ParsedLine | None) -> None:
    parsed = parse_line(line, fmt(**settings))
    if expected is not None:
        assert parsed == expected
    assert parsed is not None


def test_channel_group_and_decimal_comma() -> None:
    parsed = parse_line(b"M3 1,5", fmt(pattern=r"M(?P<channel>\d) (?P<value>\S+)", decimal_comma=True))
    assert parsed == ParsedLine("3", Decimal("1.5"), None, ReadingStatus.OK)


@pytest.mark.parametrize(
    ("line", "stable_when", "status"),
    [
        (b"ST,12.5", None, ReadingStatus.OK),
        (b",12.5", None, ReadingStatus.UNSTABLE),  # the stable group matched nothing
        (b"ST,12.5", "ST", ReadingStatus.OK),
        (b"US,12.5", "ST", ReadingStatus.UNSTABLE),
        (b"US,12.5", None, ReadingStatus.OK),  # without stable_when any marker counts as stable
    ],
)
def test_stable_group(line: bytes, stable_when: str | None, status: ReadingStatus) -> None:
    parsed = parse_line(line, fmt(pattern=r"(?P<stable>ST|US)?,(?P<value>\S+)", stable_when=stable_when))
    assert parsed is not None and parsed.status is status


def test_error_is_checked_before_the_value_and_ignore_after() -> None:
    f = fmt(pattern=r".*?(?P<value>\d+)", error_pattern=r"Err \d+", ignore_pattern=r"OK!|\d+")
    assert parse_line(b"Err 3", f) == ParsedLine("value", None, None, ReadingStatus.ERROR, "Err 3")
    assert parse_line(b"12", f) == ParsedLine("value", Decimal("12"), None, ReadingStatus.OK)
    assert parse_line(b"OK!", f) is None
    with pytest.raises(FrameError):
        parse_line(b"  OK!  ", f)  # nothing is stripped: the patterns describe the whole line


@pytest.mark.parametrize(
    ("line", "settings", "reason"),
    [
        (b"ES", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),
        (b"+12.345 mm", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),  # fullmatch
        (b" +12.345", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),  # nothing stripped
        (b"+12.34", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),  # lost a decimal
        (b"+12345", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),  # lost its point
        (b"+012.345", {"pattern": SYLVAC_PATTERN}, "does not match the pattern"),  # gained a zero
        (b"     12.35 g", {"pattern": OHAUS_PATTERN}, "does not match the pattern"),  # ten characters
        (b"       12.35 g", {"pattern": OHAUS_PATTERN}, "does not match the pattern"),  # twelve
        (b"     12.35 kg", {"pattern": OHAUS_PATTERN}, "does not match the pattern"),
        (b"12,5", {}, "is not a decimal number"),  # a comma without decimal_comma
        (b"1.2.3", {}, "is not a decimal number"),
        (b"1e5", {}, "is not a decimal number"),
        (b"x", {"pattern": r"(?P<value>\d+)?x"}, "did not take part"),
        (b"\x00\xff", {"pattern": SYLVAC_PATTERN}, "does not match"),
    ],
)
def test_parse_line_refuses(line: bytes, settings: dict[str, Any], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_line(line, fmt(**settings))
    assert reason in info.value.reason and info.value.raw == line


# -- properties ---------------------------------------------------------------------------------


@given(st.binary(max_size=16))
@example(b"+12.345")
@example(b"+ 1.000")
@example(b"1.")
def test_random_bytes_never_yield_a_number_unless_valid(line: bytes) -> None:
    try:
        parsed = parse_line(line, fmt(pattern=SYLVAC_PATTERN))
    except FrameError:
        assert not SYLVAC_LINE.fullmatch(line)
        return
    assert parsed is not None and SYLVAC_LINE.fullmatch(line)
    assert str(parsed.value) == str(Decimal(line.decode()))


@given(
    value=st.decimals(min_value=-9999999, max_value=9999999, places=3, allow_nan=False, allow_infinity=False),
    stable=st.booleans(),
    instrument=st.sampled_from([SYLVAC, OHAUS, Instrument(decimal_comma=True, template="{value} {unit}", unit="mm")]),
)
def test_simulated_lines_round_trip(value: Decimal, stable: bool, instrument: Instrument) -> None:
    shown = value.quantize(Decimal(1).scaleb(-instrument.decimals))
    line = format_line(shown, instrument, stable=stable)
    assert line.endswith(instrument.terminator)
    settings: dict[str, Any] = {
        "sylvac": {"pattern": SYLVAC_PATTERN},
        "ohaus": {"pattern": OHAUS_PATTERN},
        "generic": {"pattern": r"(?P<value>\S+) (?P<unit>mm)", "decimal_comma": True},
    }[instrument.name]
    parsed = parse_line(line[: -len(instrument.terminator)], fmt(**settings))
    assert parsed is not None and parsed.value == shown
    assert str(parsed.value) == str(shown)
    want_status = ReadingStatus.OK if stable or not instrument.unstable_mark else ReadingStatus.UNSTABLE
    assert parsed.status is want_status


@pytest.mark.parametrize(
    ("value", "instrument", "text"),
    [
        (Decimal("12.345"), SYLVAC, "+12.345"),
        (Decimal("-0.001"), SYLVAC, "-0.001"),
        (Decimal("12.30"), OHAUS, "      12.30"),
        (Decimal("-5"), OHAUS, "      -5.00"),
        (Decimal("1.5"), Instrument(decimal_comma=True, decimals=1, sign="negative"), "1,5"),
    ],
)
def test_format_number(value: Decimal, instrument: Instrument, text: str) -> None:
    assert format_number(value, instrument) == text


def test_format_line_presets() -> None:
    assert format_line(Decimal("12.345"), SYLVAC) == b"+12.345\r"
    assert format_line(Decimal("192.21"), OHAUS) == b"     192.21 g\r\n"  # EN-3: *****192.21_g
    assert format_line(Decimal("0.01"), OHAUS, stable=False) == b"       0.01 g ?\r\n"  # *******0.01_g_?
    with pytest.raises(ValueError, match="more than 3 decimals"):
        format_line(Decimal("1.2345"), SYLVAC)
    with pytest.raises(ValueError, match="is not valid"):
        Instrument(template="{value} {weight}")
