"""The SBI frame parser (Sartorius "Data Output Format") and the simulator's frame formatter."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError, ReadingStatus
from drivers.serial.sartorius_sbi import UNITS, command, parse_frame
from simulators.sartorius import format_frame, format_special, parse_serial_settings

# the documented value frame, independently of the parser's own code: sign, space, eight
# characters of right-aligned number (leading zeros blanked), space, unit symbol left-aligned
# in three characters or three blanks
VALUE_BODY = re.compile(rb"([+-]) (?=[ 0-9.]{8} ) *((?:0|[1-9][0-9]*)(?:\.[0-9]+)?) ([!-~]{1,3} *|   )")
IDENTIFIER = re.compile(rb"[!-~][ -~]{5}")


def independently_valid(frame: bytes) -> bool:
    if len(frame) == 20:
        return bool(IDENTIFIER.fullmatch(frame[:6])) and frame[:4] != b"Stat" and independently_valid(frame[6:])
    m = VALUE_BODY.fullmatch(frame) if len(frame) == 14 else None
    return m is not None and (m.group(3).strip() == b"" or m.group(3).strip().decode() in UNITS)


@pytest.mark.parametrize(
    ("frame", "identifier", "value", "unit", "status"),
    [
        (b"+   1255.7 g  ", None, "1255.7", "g", ReadingStatus.OK),  # FB series example
        (b"-     0.50 kg ", None, "-0.50", "kg", ReadingStatus.OK),
        (b"+ 12345678 ct ", None, "12345678", "ct", ReadingStatus.OK),  # no decimals: no point
        (b"+ 0.000001 ozt", None, "0.000001", "ozt", ReadingStatus.OK),
        (b"+    12.34 /lb", None, "12.34", "/lb", ReadingStatus.OK),
        (b"+    12.34    ", None, "12.34", None, ReadingStatus.UNSTABLE),  # no unit symbol: not stable
        (b"-     0.00    ", None, "-0.00", None, ReadingStatus.UNSTABLE),
        (b"G#    +   1255.7 g  ", "G#", "1255.7", "g", ReadingStatus.OK),  # Combics example
        (b"N     +    12.34 g  ", "N", "12.34", "g", ReadingStatus.OK),
        (b"T     -     5.00    ", "T", "-5.00", None, ReadingStatus.UNSTABLE),
    ],
)
def test_valid(frame: bytes, identifier: str | None, value: str, unit: str | None, status: ReadingStatus) -> None:
    parsed = parse_frame(frame)
    assert (parsed.identifier, str(parsed.value), parsed.unit, parsed.status, parsed.error) == (
        identifier,
        value,
        unit,
        status,
        None,
    )


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"      H       ", "H (overload)"),
        (b"      HH      ", "HH (overload during checkweighing)"),
        (b"      L       ", "L (underload)"),
        (b"      LL      ", "LL (underload during checkweighing)"),
        (b"      C       ", "C (calibration/adjustment)"),
        (b"   Err 123    ", "Err 123 (balance error)"),
        (b"Stat     ERR 054    ", "ERR 054 (balance error)"),
        (b"Stat        H       ", "H (overload)"),
        (b"Stat        High    ", "High (overload)"),
        (b"Stat        Low     ", "Low (underload)"),
    ],
)
def test_special_and_error_codes_are_errors(frame: bytes, error: str) -> None:
    parsed = parse_frame(frame)
    assert (parsed.identifier, parsed.value, parsed.unit, parsed.status, parsed.error) == (
        None,
        None,
        None,
        ReadingStatus.ERROR,
        error,
    )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "expected 16 or 22 characters with CR LF, got 2"),
        (b"+    12.34 g ", "got 15"),
        (b"+    12.34 g   ", "got 17"),
        (b"+    1234 g  ", "got 15"),  # 12.34 that lost its decimal point
        (b"*    12.34 g  ", "position 1 (sign)"),
        (b"     12.34 g  ", "position 1 (sign)"),  # the balance writes + for plus: a lost minus
        (b"+x   12.34 g  ", "positions 2 and 11"),
        (b"+    12.34xg  ", "positions 2 and 11"),
        (b"+   12.3 4 g  ", "not a right-aligned decimal number"),
        (b"+   1.2.34 g  ", "not a right-aligned decimal number"),
        (b"+  12.34   g  ", "not a right-aligned decimal number"),  # not right-aligned
        (b"+   012.34 g  ", "not a right-aligned decimal number"),  # a blank turned into a zero
        (b"+   -12.34 g  ", "has a sign where none belongs"),
        (b"+    12.   g  ", "not a right-aligned decimal number"),
        (b"+      .34 g  ", "not a right-aligned decimal number"),
        (b"+          g  ", "blank"),
        (b"+    1e-34 g  ", "not a right-aligned decimal number"),
        (b"+      NaN g  ", "not a right-aligned decimal number"),
        (b"+    12.34 g g", "unit symbol"),
        (b"+    12.34  g ", "unit symbol"),
        (b"+    12.34 xyz", "unit symbol"),
        (b"+    12.34 \xb5g ", "not printable ASCII"),
        (b"+    12.34\tg  ", "not printable ASCII"),
        (b"+    12.34 g \r", "not printable ASCII"),
        (b"+  \xd9\xa312.34 g  ", "not printable ASCII"),  # Arabic-Indic digit three
        (b"       Hi     ", "position 1 (sign)"),
        (b"   Err        ", "position 1 (sign)"),
        (b" N    +    12.34 g  ", "ID code is not left-aligned"),
        (b"Stat  +    12.34 g  ", "ID code Stat with a weight"),
        (b"      +    12.34 g  ", "ID code is blank"),  # every ID code the manuals list has characters
    ],
)
def test_invalid(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(frame)
    assert reason in info.value.reason
    assert info.value.raw == frame


def test_fixed_frame_format_plus_sign_and_identifiers() -> None:
    assert parse_frame(b"+    12.34 g  ", "16").value == Decimal("12.34")
    assert parse_frame(b"N     +    12.34 g  ", "22").identifier == "N"
    with pytest.raises(FrameError, match="expected 16 characters"):
        parse_frame(b"N     +    12.34 g  ", "16")
    with pytest.raises(FrameError, match="expected 22 characters"):
        parse_frame(b"+    12.34 g  ", "22")
    assert parse_frame(b"     12.34 g  ", plus_sign=" ").value == Decimal("12.34")
    with pytest.raises(FrameError, match="position 1"):
        parse_frame(b"+    12.34 g  ", plus_sign=" ")
    assert parse_frame(b"N     +    12.34 g  ", identifiers=["N"]).identifier == "N"
    with pytest.raises(FrameError, match="ID code 'T'"):
        parse_frame(b"T     +    12.34 g  ", identifiers=["N"])


def test_commands() -> None:
    assert command("P") == b"\x1bP"
    assert command("T", b"\r\n") == b"\x1bT\r\n"
    with pytest.raises(ValueError, match="an SBI command is one letter"):
        command("PP")


# -- properties ---------------------------------------------------------------------------------

_VALID_FRAMES = [b"+    12.34 g  ", b"N     -     0.50 kg ", b"+    12.34    "]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A valid frame with one byte replaced, dropped or inserted: where parsers go wrong."""
    frame = bytearray(draw(st.sampled_from(_VALID_FRAMES)))
    at = draw(st.integers(0, len(frame) - 1))
    byte = draw(st.integers(0, 255))
    kind = draw(st.sampled_from(["replace", "drop", "insert"]))
    if kind == "replace":
        frame[at] = byte
    elif kind == "drop":
        del frame[at]
    else:
        frame.insert(at, byte)
    return bytes(frame)


@given(st.one_of(st.binary(max_size=24), mutated_frames()))
@example(b"+    12.34 g  ")
@example(b"+    12.3\x004 g ")
@example(b"+   12.3 4 g  ")
@example(b"+    00.00   !")
@example(b"+    00.00    ")
def test_random_bytes_never_yield_a_number_unless_valid(frame: bytes) -> None:
    try:
        parsed = parse_frame(frame)
    except FrameError:
        assert not independently_valid(frame)
        return
    if parsed.value is None:
        assert parsed.status is ReadingStatus.ERROR and parsed.error and parsed.unit is None
        assert not independently_valid(frame)
        return
    assert independently_valid(frame)
    body = frame[-14:]
    m = VALUE_BODY.fullmatch(body)
    assert m is not None
    sign = "-" if body[:1] == b"-" else ""
    digits = m.group(2).decode()
    assert str(parsed.value) == sign + digits
    assert parsed.status is (ReadingStatus.OK if body[11:].strip() else ReadingStatus.UNSTABLE)


@given(
    value=st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False, allow_infinity=False),
    unit=st.one_of(st.none(), st.sampled_from(sorted(UNITS))),
    identifier=st.one_of(st.none(), st.from_regex(r"\A[A-Z#][A-Z#.]{0,5}\Z")),
)
def test_valid_frames_round_trip(value: Decimal, unit: str | None, identifier: str | None) -> None:
    frame = format_frame(value, unit, 2, identifier)
    assert len(frame) == (22 if identifier else 16) and frame.endswith(b"\r\n")
    parsed = parse_frame(frame[:-2])
    assert parsed.value == value and str(parsed.value) == str(value.quantize(Decimal("0.01")))
    assert parsed.unit == unit and parsed.identifier == identifier
    assert parsed.status is (ReadingStatus.OK if unit else ReadingStatus.UNSTABLE)


@given(
    digits=st.text("0123456789", min_size=7, max_size=7).filter(lambda d: d[0] != "0"),
    point=st.integers(min_value=1, max_value=6),
    sign=st.sampled_from("+-"),
)
def test_every_decimal_position_parses(digits: str, point: int, sign: str) -> None:
    field = digits[:point] + "." + digits[point:]
    parsed = parse_frame(f"{sign} {field} g  ".encode())
    assert str(parsed.value) == ("-" if sign == "-" else "") + field  # trailing zeros kept: the resolution


@pytest.mark.parametrize("text", ["High", "Low", "Err 123", "ERR 54", "H", "LL", "C"])
@pytest.mark.parametrize("identifier", [None, "Stat"])
def test_special_frames_round_trip(text: str, identifier: str | None) -> None:
    frame = format_special(text, identifier)
    assert len(frame) == (22 if identifier else 16)
    parsed = parse_frame(frame[:-2])
    assert parsed.status is ReadingStatus.ERROR and parsed.value is None
    assert parsed.error is not None and parsed.error.startswith(text + " (")


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "frame"),
    [
        (Decimal("1255.7"), "g", 1, b"+   1255.7 g  \r\n"),
        (Decimal("-0.5"), "kg", 3, b"-    0.500 kg \r\n"),
        (Decimal("12.34"), None, 2, b"+    12.34    \r\n"),
        (Decimal("99999999"), "ct", 0, b"+ 99999999 ct \r\n"),
    ],
)
def test_format_frame(value: Decimal, unit: str | None, decimals: int, frame: bytes) -> None:
    assert format_frame(value, unit, decimals) == frame


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "reason"),
    [
        (Decimal("123456789"), "g", 0, "does not fit in 8 characters"),
        (Decimal("0.123"), "g", 2, "more than 2 decimals"),
        (Decimal("1"), "gram", 0, "unit must be up to 3 printable characters"),
        (Decimal("1"), "g g", 0, "unit must be up to 3 printable characters"),
        (Decimal("NaN"), "g", 2, "is not finite"),
    ],
)
def test_format_frame_refuses(value: Decimal, unit: str | None, decimals: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        format_frame(value, unit, decimals)


def test_format_special_refuses_what_no_manual_lists() -> None:
    for text in ("Stat", "Overload", "Err", "Err 1234"):
        with pytest.raises(ValueError, match="not a special or error code of the manuals"):
            format_special(text)


def test_serial_settings() -> None:
    assert parse_serial_settings("9600 7O1") == (9600, 7, "O", 1.0)
    assert parse_serial_settings("19200 8N1") == (19200, 8, "N", 1.0)
    with pytest.raises(ValueError, match="serial settings must look like"):
        parse_serial_settings("9600,8,N,1")
