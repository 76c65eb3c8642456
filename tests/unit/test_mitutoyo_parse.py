"""The Mitutoyo frame parser and the simulator's frame formatter."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.serial.mitutoyo import parse_frame
from simulators.mitutoyo import Scenario, format_frame

# the documented frame, independently of the parser's own code
VALID = re.compile(rb"\s*[0-9]{2}A[+-](?=[0-9.]{8}\s*$)[0-9]+(\.[0-9]+)?\s*")


@pytest.mark.parametrize(
    ("frame", "channel", "value"),
    [
        (b"01A+0000.123", "01", "0.123"),
        (b"01A-0012.340", "01", "-12.340"),  # trailing zero kept: it is the gauge's resolution
        (b"01A+00.12345", "01", "0.12345"),  # inch, five decimals
        (b"07A+1234.567", "07", "1234.567"),
        (b"01A+0000.000", "01", "0.000"),
        (b"01A-0000.000", "01", "-0.000"),
        (b"01A+00000012", "01", "12"),  # no decimal point: a counter, or 0 decimals
        (b"99A+0.000001", "99", "0.000001"),
        (b"  01A+0000.123 \t", "01", "0.123"),  # surrounding whitespace is tolerated
        (b"01A+0000.123\r", "01", "0.123"),
        (b"\n01A+0000.123", "01", "0.123"),
    ],
)
def test_valid(frame: bytes, channel: str, value: str) -> None:
    ch, val = parse_frame(frame)
    assert ch == channel
    assert str(val) == value
    assert val == Decimal(value)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "expected 12 characters, got 0"),
        (b"#E", "adapter error line"),
        (b"#01A+0000.123", "adapter error line"),
        (b"01A+0000.12", "expected 12 characters, got 11"),
        (b"01A+0000.1234", "expected 12 characters, got 13"),
        (b"01A+0000.123\r01A+0000.123", "expected 12 characters"),
        (b"1AA+0000.123", "channel is not two digits"),
        (b" 1A+0000.123", "expected 12 characters"),  # stripped, then too short
        (b"01B+0000.123", "expected 'A'"),
        (b"01a+0000.123", "expected 'A'"),
        (b"01A 0000.123", "bad sign"),
        (b"01A*0000.123", "bad sign"),
        (b"01A+-000.123", "value is not decimal digits"),
        (b"01A+00.0.123", "more than one decimal point"),
        (b"01A+000.,123", "value is not decimal digits"),
        (b"01A+0000 123", "value is not decimal digits"),
        (b"01A+00001e23", "value is not decimal digits"),
        (b"01A+.0000123", "decimal point without digits"),
        (b"01A+0000123.", "decimal point without digits"),
        (b"01A+\xff000.123", "value is not decimal digits"),
        (b"01A+\xd9\xa3000.12", "value is not decimal digits"),  # Arabic-Indic digit three
        (b"01A+0000.123\x00", "expected 12 characters"),
        (b"01A+NaN00.000", "expected 12 characters"),
        (b"01A+Infinity", "value is not decimal digits"),
    ],
)
def test_invalid(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(frame)
    assert reason in info.value.reason
    assert info.value.raw == frame


@given(st.binary(max_size=20))
@example(b"01A+0000.123")
@example(b"01A+0000.12\x00")
def test_random_bytes_never_yield_a_value_unless_valid(frame: bytes) -> None:
    try:
        channel, value = parse_frame(frame)
    except FrameError:
        assert not VALID.fullmatch(frame)
    else:
        assert VALID.fullmatch(frame)
        body = frame.strip()
        assert channel == body[:2].decode()
        assert value == Decimal(body[3:].decode())


@given(
    channel=st.from_regex(r"\A[0-9]{2}\Z"),
    sign=st.sampled_from("+-"),
    digits=st.text("0123456789", min_size=8, max_size=8),
    point=st.integers(min_value=1, max_value=6),
)
def test_valid_frames_round_trip(channel: str, sign: str, digits: str, point: int) -> None:
    # put the point inside seven digits, so the field stays eight characters wide
    body = digits[:point] + "." + digits[point:7]
    frame = f"{channel}A{sign}{body}\r".encode()
    ch, value = parse_frame(frame)
    assert ch == channel
    assert format_frame(ch, value, 7 - point) == frame


@given(
    value=st.decimals(min_value=-9999, max_value=9999, places=3, allow_nan=False, allow_infinity=False),
)
def test_formatted_values_parse_back_exactly(value: Decimal) -> None:
    frame = format_frame("01", value, 3)
    assert len(frame) == 13 and frame.endswith(b"\r")
    channel, parsed = parse_frame(frame[:-1])
    assert channel == "01"
    assert parsed == value
    assert parsed.as_tuple().exponent == -3


@pytest.mark.parametrize(
    ("value", "decimals", "frame"),
    [
        (Decimal("12.34"), 3, b"01A+0012.340\r"),
        (Decimal("-0.001"), 3, b"01A-0000.001\r"),
        (Decimal("0.5"), 5, b"01A+00.50000\r"),
        (Decimal("9999.999"), 3, b"01A+9999.999\r"),
        (Decimal("12"), 0, b"01A+00000012\r"),
    ],
)
def test_format_frame(value: Decimal, decimals: int, frame: bytes) -> None:
    assert format_frame("01", value, decimals) == frame


@pytest.mark.parametrize(
    ("channel", "value", "decimals"),
    [
        ("01", Decimal("10000.000"), 3),  # nine characters
        ("01", Decimal("1000.00"), 5),
        ("01", Decimal("0.1234"), 3),  # finer than the gauge
        ("01", Decimal("NaN"), 3),
        ("01", Decimal("1"), 7),
        ("1", Decimal("1"), 3),
        ("0x", Decimal("1"), 3),
    ],
)
def test_format_frame_refuses(channel: str, value: Decimal, decimals: int) -> None:
    with pytest.raises(ValueError):
        format_frame(channel, value, decimals)


def test_scenario_refuses_what_a_frame_cannot_show() -> None:
    with pytest.raises(ValueError):
        Scenario(nominal=Decimal("12345.0"))
    with pytest.raises(ValueError):
        Scenario(bad_rate=1.5)
