"""The Mitutoyo ID-H reply parser and the simulator's reply formatters."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.serial.mitutoyo_idh import IdhReply, addressed_id, parse_reply
from simulators.mitutoyo_idh import Scenario, format_ack, format_judgement, format_value

# the replies that carry a number, written from the reference, not from the parser
NUMERIC = re.compile(rb"\s*(G[NXMW])([0-9]{2}),([+-](?=[0-9.]{1,12}\s*$)[0-9]+(\.[0-9]+)?)\s*")


@pytest.mark.parametrize(
    ("line", "command", "device_id", "value"),
    [
        (b"GN01,+0016.2345", "GN", 1, "16.2345"),
        (b"GN01,+0016.2345\r\n", "GN", 1, "16.2345"),
        (b"GX99,-0000.1230", "GX", 99, "-0.1230"),  # trailing zero kept: it is the resolution
        (b"GM00,+0000.0000", "GM", 0, "0.0000"),
        (b"GN01,-0000.0000", "GN", 1, "-0.0000"),
        (b"GW42,+00000.012", "GW", 42, "0.012"),
        (b"GN01,+000001234", "GN", 1, "1234"),  # no decimal point: a counter
        (b"  GN01,+0016.2345 ", "GN", 1, "16.2345"),
    ],
)
def test_values(line: bytes, command: str, device_id: int, value: str) -> None:
    reply = parse_reply(line)
    assert (reply.command, reply.device_id, reply.judgement) == (command, device_id, None)
    assert str(reply.value) == value
    assert parse_reply(line, width=9) == reply


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"CH01", IdhReply("CH", 1)),
        (b"CH99\r\n", IdhReply("CH", 99)),
        (b"DH01,OK", IdhReply("DH", 1, judgement="OK")),
        (b"DH07,+NG", IdhReply("DH", 7, judgement="+NG")),
        (b"DH07,-NG", IdhReply("DH", 7, judgement="-NG")),
    ],
)
def test_acknowledgements_and_judgements_carry_no_value(line: bytes, expected: IdhReply) -> None:
    reply = parse_reply(line)
    assert reply == expected and reply.value is None


@pytest.mark.parametrize(
    ("line", "reason", "width"),
    [
        (b"", "empty line", None),
        (b"GN01", "GN reply is not", None),
        (b"GN01,", "GN reply is not", None),
        (b"GN1,+0016.2345", "GN reply is not", None),
        (b"GN001,+0016.2345", "GN reply is not", None),
        (b"GN01;+0016.2345", "GN reply is not", None),
        (b"GN01,0016.2345", "GN reply is not", None),  # no sign
        (b"GN01, 0016.2345", "GN reply is not", None),
        (b"GN01,+0016.", "GN reply is not", None),
        (b"GN01,+.2345", "GN reply is not", None),
        (b"GN01,+00.16.2345", "GN reply is not", None),
        (b"GN01,+0016,2345", "GN reply is not", None),
        (b"GN01,+1e10", "GN reply is not", None),
        (b"GN01,+NaN", "GN reply is not", None),
        (b"GN01,+0016.2345 mm", "GN reply is not", None),
        (b"GN01,+0016.234", "value is 8 characters, expected 9", 9),  # lost a digit in transit
        (b"GN01,+00016.2345", "value is 10 characters, expected 9", 9),
        (b"GN01,+1234567890123", "longer than 12", None),
        (b"gn01,+0016.2345", "unknown reply", None),
        (b"GZ01,+0016.2345", "unknown reply", None),
        (b"CH1", "unknown reply", None),
        (b"CH01,OK", "unknown reply", None),
        (b"DH01,NG", "judgement is not", None),
        (b"DH01,ok", "judgement is not", None),
        (b"DH01", "judgement is not", None),
        (b"ERR", "unknown reply", None),
        (b"GN01,+0016.2345\rGN01,+0016.2346", "non-printable", None),
        (b"GN01,+0016.2345\x00", "non-printable", None),
        (b"GN01,+00\xd9\xa36.2345", "non-printable or non-ASCII", None),  # Arabic-Indic digit three
    ],
)
def test_invalid(line: bytes, reason: str, width: int | None) -> None:
    with pytest.raises(FrameError) as info:
        parse_reply(line, width)
    assert reason in info.value.reason
    assert info.value.raw == line


@pytest.mark.parametrize(
    ("line", "claimed"),
    [(b"GN02,+0016.23", 2), (b"GN01,garbage", 1), (b"DH05,??", 5), (b"CH07", 7), (b"G?N01", None), (b"\xff", None)],
)
def test_addressed_id(line: bytes, claimed: int | None) -> None:
    assert addressed_id(line) == claimed


PIECES = [b"GN", b"GX", b"G", b"N", b"CH", b"DH", b"0", b"1", b"9", b",", b"+", b"-", b".", b"OK", b"NG"]
PIECES += [b" ", b"\r", b"\n", b"\xff", b"\x00", b"e"]


@given(
    st.one_of(st.binary(max_size=24), st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join)),
    st.sampled_from([None, 9]),
)
@example(b"GN01,+0016.2345", 9)
@example(b"GN01,+0016.234", 9)
@example(b"GN01,+1234567890123", None)
def test_random_bytes_never_yield_a_value_unless_valid(line: bytes, width: int | None) -> None:
    m = NUMERIC.fullmatch(line)
    valid = m is not None and (width is None or len(m.group(3)) - 1 == width)
    try:
        reply = parse_reply(line, width)
    except FrameError as exc:
        assert exc.raw == line
        assert not valid
        return
    if reply.value is None:
        assert m is None
    else:
        assert valid and m is not None, line
        assert reply.command == m.group(1).decode() and reply.device_id == int(m.group(2))
        assert str(reply.value) == str(Decimal(m.group(3).decode()))


@given(
    command=st.sampled_from(["GN", "GX", "GM", "GW"]),
    device_id=st.integers(min_value=0, max_value=99),
    sign=st.sampled_from("+-"),
    digits=st.text("0123456789", min_size=9, max_size=9),
    point=st.integers(min_value=2, max_value=7),  # 6..1 decimals, as displays show
)
def test_valid_replies_round_trip(command: str, device_id: int, sign: str, digits: str, point: int) -> None:
    # put the point inside eight digits, so the field stays nine characters wide
    body = digits[:point] + "." + digits[point:8]
    line = f"{command}{device_id:02d},{sign}{body}\r\n".encode()
    reply = parse_reply(line, width=9)
    assert (reply.command, reply.device_id) == (command, device_id)
    assert reply.value is not None
    assert format_value(reply.command, reply.device_id, reply.value, 8 - point) == line


@given(value=st.decimals(min_value=-9999, max_value=9999, places=4, allow_nan=False, allow_infinity=False))
def test_formatted_values_parse_back_exactly(value: Decimal) -> None:
    line = format_value("GN", 1, value, 4)
    assert len(line) == 17 and line.endswith(b"\r\n")
    reply = parse_reply(line, width=9)
    assert reply.value == value and reply.value.as_tuple().exponent == -4


def test_acks_and_judgements_round_trip() -> None:
    for device_id in (0, 1, 99):
        assert parse_reply(format_ack(device_id)) == IdhReply("CH", device_id)
        for judgement in ("OK", "+NG", "-NG"):
            assert parse_reply(format_judgement(device_id, judgement)) == IdhReply("DH", device_id, judgement=judgement)


@pytest.mark.parametrize(
    ("command", "device_id", "value", "decimals"),
    [
        ("GN", 1, Decimal("100000.0000"), 4),  # ten characters
        ("GN", 1, Decimal("0.12345"), 4),  # finer than the display
        ("GN", 1, Decimal("NaN"), 4),
        ("GN", 100, Decimal("1"), 4),
        ("GZ", 1, Decimal("1"), 4),
        ("GN", 1, Decimal("1"), 7),
    ],
)
def test_format_value_refuses(command: str, device_id: int, value: Decimal, decimals: int) -> None:
    with pytest.raises(ValueError):
        format_value(command, device_id, value, decimals)


def test_format_judgement_refuses_unknown_verdicts() -> None:
    with pytest.raises(ValueError):
        format_judgement(1, "NG")


def test_scenario_refuses_what_a_reply_cannot_show() -> None:
    with pytest.raises(ValueError):
        Scenario(nominal=Decimal("123456"))
    with pytest.raises(ValueError):
        Scenario(bad_rate=-0.1)
