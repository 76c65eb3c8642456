"""The Digimatic adapter frame parser (99MAF600B §6.3) and the simulator's frame formatter."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.serial.mitutoyo import parse_frame
from simulators.mitutoyo import Scenario, format_frame

# the documented frame (D1-D12), independently of the parser's own code
VALID = re.compile(rb"[0-9]{2}A[+-](?=[0-9.]{8}$)[0-9]+\.[0-9]+")


@pytest.mark.parametrize(
    ("frame", "channel", "value"),
    [
        (b"01A+0000.123", "01", "0.123"),  # §6.3.4, mm 0.001
        (b"01A+0000.125", "01", "0.125"),  # §6.3.4, mm 0.005
        (b"01A+00.12345", "01", "0.12345"),  # §6.3.4, inch 0.00005
        (b"01A+000.1234", "01", "0.1234"),  # §6.3.4, inch 0.0001
        (b"01A-0012.340", "01", "-12.340"),  # trailing zero kept: it is the gauge's resolution
        (b"07A+1234.567", "07", "1234.567"),
        (b"01A-0000.000", "01", "-0.000"),
        (b"99A+0.000001", "99", "0.000001"),
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
        (b"", "expected 12 characters before CR, got 0"),
        (b"#E", "adapter error line"),
        (b"#01A+0000.123", "adapter error line"),
        (b"01A+0000.12", "got 11"),
        (b"01A+0000.1234", "got 13"),
        (b"  01A+0000.123 ", "got 15"),  # nothing is stripped
        (b"01A+0000.123\r", "got 13"),
        (b"1AA+0000.123", "not two digits"),
        (b" 1A+0000.123", "not two digits"),
        (b"01B+0000.123", "not 'A'"),
        (b"01a+0000.123", "not 'A'"),
        (b"01A 0000.123", "D4 (sign)"),
        (b"01A*0000.123", "D4 (sign)"),
        (b"01A+00000012", "exactly one decimal point"),  # every documented frame has one
        (b"01A+-000.123", "not decimal digits"),
        (b"01A+00.0.123", "exactly one decimal point"),
        (b"01A+000.,123", "not decimal digits"),
        (b"01A+0000 123", "exactly one decimal point"),
        (b"01A+0001e.23", "not decimal digits"),
        (b"01A+.0000123", "digits on both sides"),
        (b"01A+0000123.", "digits on both sides"),
        (b"01A+\xff000.123", "not decimal digits"),
        (b"01A+\xd9\xa300.123", "not decimal digits"),  # Arabic-Indic digit three
        (b"01A+NaN0.000", "not decimal digits"),
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
        assert channel == frame[:2].decode()
        assert str(value) == str(Decimal(frame[3:].decode()))


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
    ch, value = parse_frame(frame[:-1])
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
    ],
)
def test_format_frame(value: Decimal, decimals: int, frame: bytes) -> None:
    assert format_frame("01", value, decimals) == frame


@pytest.mark.parametrize(
    ("channel", "value", "decimals", "reason"),
    [
        ("01", Decimal("10000.000"), 3, "does not fit in 8 characters"),  # nine characters
        ("01", Decimal("1000.00"), 5, "does not fit in 8 characters"),
        ("01", Decimal("0.1234"), 3, "more than 3 decimals"),  # finer than the gauge
        ("01", Decimal("NaN"), 3, "is not finite"),
        ("01", Decimal("1"), 7, "decimals must be 1..6"),
        ("01", Decimal("12"), 0, "decimals must be 1..6"),  # no decimal point: no documented frame
        ("1", Decimal("1"), 3, "channel must be two digits"),
        ("0x", Decimal("1"), 3, "channel must be two digits"),
    ],
)
def test_format_frame_refuses(channel: str, value: Decimal, decimals: int, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        format_frame(channel, value, decimals)


def test_scenario_refuses_what_a_frame_cannot_show() -> None:
    with pytest.raises(ValueError, match="does not fit in 8 characters"):
        Scenario(nominal=Decimal("12345.0"))
    with pytest.raises(ValueError, match="bad_rate must be within 0"):
        Scenario(bad_rate=1.5)
