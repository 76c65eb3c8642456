"""The ID-H reply parser (99MAH016B §4.2.4) and the simulator's reply formatters."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.serial.mitutoyo_idh import IdhReply, claimed_id, command, parse_reply
from simulators.mitutoyo_idh import Scenario, format_ack, format_judgement, format_value

# the data replies of §4.2.4, written from the manual's example GN**,+0016.2345, not from the parser
NUMERIC = re.compile(rb"(G[NXMW])([0-9]{2}),([+-])(?=[0-9.]{9}$)([0-9]+\.[0-9]+)")


@pytest.mark.parametrize(
    ("line", "header", "device_id", "value"),
    [
        (b"GN01,+0016.2345", "GN", 1, "16.2345"),
        (b"GX99,-0000.1230", "GX", 99, "-0.1230"),  # trailing zero kept: it is the resolution
        (b"GM00,+0000.0000", "GM", 0, "0.0000"),
        (b"GN01,-0000.0000", "GN", 1, "-0.0000"),
        (b"GW42,+00000.012", "GW", 42, "0.012"),
    ],
)
def test_data_replies(line: bytes, header: str, device_id: int, value: str) -> None:
    reply = parse_reply(line)
    assert (reply.kind, reply.header, reply.device_id, reply.text) == ("value", header, device_id, None)
    assert str(reply.value) == value


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"CH01", IdhReply("ack", "CH", 1)),
        (b"DH99", IdhReply("ack", "DH", 99)),
        (b"DH01,OK", IdhReply("judgement", "DH", 1, text="OK")),
        (b"DH07,+NG", IdhReply("judgement", "DH", 7, text="+NG")),
        (b"DH07,-NG", IdhReply("judgement", "DH", 7, text="-NG")),
        (b"DH07,JOFF", IdhReply("judgement", "DH", 7, text="JOFF")),
        (b"DH01,PRESET", IdhReply("notice", "DH", 1, text="PRESET")),
        (b"DH01,F-LOCK", IdhReply("notice", "DH", 1, text="F-LOCK")),
        (b"DH01,+0016.2345", IdhReply("setting", "DH", 1, value=Decimal("16.2345"))),
        (b"DG01,+0016.2345", IdhReply("setting", "DG", 1, value=Decimal("16.2345"))),
        (b"DD01,-0016.2345", IdhReply("setting", "DD", 1, value=Decimal("-16.2345"))),
    ],
)
def test_other_replies_of_the_table_carry_no_reading(line: bytes, expected: IdhReply) -> None:
    assert parse_reply(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty line"),
        (b"GN01", "GN reply is not"),
        (b"GN01,", "GN reply is not"),
        (b"GN1,+0016.2345", "GN reply is not"),
        (b"GN001,+0016.2345", "GN reply is not"),
        (b"GN01;+0016.2345", "GN reply is not"),
        (b"GN01,0016.2345", "GN reply is not"),  # no sign
        (b"GN01, 0016.2345", "GN reply is not"),
        (b"GN01,+0016.234", "8 characters after the sign, expected 9"),  # lost a digit in transit
        (b"GN01,+00016.2345", "10 characters after the sign, expected 9"),
        (b"GN01,+00162345", "8 characters after the sign"),  # lost its decimal point
        (b"GN01,+000162345", "one decimal point"),
        (b"GN01,+00.6.2345", "one decimal point"),
        (b"GN01,+00162345.", "one decimal point"),
        (b"GN01,+0016,2345", "GN reply is not"),
        (b"GN01,+0016.2345 ", "GN reply is not"),  # nothing is stripped
        (b" GN01,+0016.2345", "unknown reply"),
        (b"gn01,+0016.2345", "unknown reply"),
        (b"GA01", "unknown reply"),  # the data command is no reply
        (b"CH1", "unknown reply"),
        (b"CH01,OK", "unknown reply"),
        (b"DH01,NG", "DH reply is none"),
        (b"DH01,ok", "DH reply is none"),
        (b"ERR", "unknown reply"),
        (b"GN01,+0016.2345\r", "non-printable"),
        (b"GN01,+00\xd9\xa36.2345", "non-printable or non-ASCII"),  # Arabic-Indic digit three
    ],
)
def test_invalid(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_reply(line)
    assert reason in info.value.reason
    assert info.value.raw == line


def test_configured_width() -> None:
    assert parse_reply(b"GN01,+00.64567", width=8).value == Decimal("0.64567")
    with pytest.raises(FrameError, match="expected 8"):
        parse_reply(b"GN01,+0016.2345", width=8)


def test_commands() -> None:
    assert command("GA", 1) == b"GA01\r\n"
    assert command("DJ", 42, "OUT") == b"DJ42,OUT\r\n"
    for bad, reason in (
        (("ga", 1), "two capital letters"),
        (("GAX", 1), "two capital letters"),
        (("GA", 100), "must be 00"),
    ):
        with pytest.raises(ValueError, match=reason):
            command(*bad)


@pytest.mark.parametrize(
    ("line", "claimed"),
    [(b"GN02,+0016.23", 2), (b"GN01,garbage", 1), (b"DH05,??", 5), (b"CH07", 7), (b"G?N01", None), (b"\xff", None)],
)
def test_claimed_id(line: bytes, claimed: int | None) -> None:
    assert claimed_id(line) == claimed


PIECES = [b"GN", b"GX", b"G", b"N", b"CH", b"DH", b"0", b"1", b"9", b",", b"+", b"-", b".", b"OK", b"NG"]
PIECES += [b" ", b"\r", b"\n", b"\xff", b"\x00", b"e"]


@given(st.one_of(st.binary(max_size=24), st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join)))
@example(b"GN01,+0016.2345")
@example(b"GN01,+0016.234")
def test_random_bytes_never_yield_a_value_unless_valid(line: bytes) -> None:
    m = NUMERIC.fullmatch(line)
    refused: FrameError | None = None
    try:
        reply = parse_reply(line)
    except FrameError as exc:
        refused = exc
    if refused is not None:
        assert refused.raw == line and m is None
        return
    if reply.kind != "value":
        assert m is None
    else:
        assert m is not None, line
        assert (reply.header, reply.device_id) == (m.group(1).decode(), int(m.group(2)))
        assert str(reply.value) == str(Decimal((m.group(3) + m.group(4)).decode()))


@given(value=st.decimals(min_value=-9999, max_value=9999, places=4, allow_nan=False, allow_infinity=False))
def test_formatted_values_parse_back_exactly(value: Decimal) -> None:
    line = format_value("GN", 1, value, 4)
    assert len(line) == 17 and line.endswith(b"\r\n")
    reply = parse_reply(line[:-2])
    assert reply.value == value and reply.value.as_tuple().exponent == -4


def test_acks_and_judgements_round_trip() -> None:
    for device_id in (0, 1, 99):
        assert parse_reply(format_ack(device_id)[:-2]) == IdhReply("ack", "CH", device_id)
        for judgement in ("OK", "+NG", "-NG", "JOFF"):
            line = format_judgement(device_id, judgement)[:-2]
            assert parse_reply(line) == IdhReply("judgement", "DH", device_id, text=judgement)


@pytest.mark.parametrize(
    ("header", "device_id", "value", "decimals", "reason"),
    [
        ("GN", 1, Decimal("100000.0000"), 4, "does not fit in 9 characters"),  # ten characters
        ("GN", 1, Decimal("0.12345"), 4, "more than 4 decimals"),  # finer than the display
        ("GN", 1, Decimal("NaN"), 4, "is not finite"),
        ("GN", 100, Decimal("1"), 4, "ID No. must be 0..99"),
        ("GA", 1, Decimal("1"), 4, "not a header that carries a value"),
        ("GN", 1, Decimal("1"), 8, "decimals must be 1..7"),
    ],
)
def test_format_value_refuses(header: str, device_id: int, value: Decimal, decimals: int, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        format_value(header, device_id, value, decimals)


def test_format_judgement_refuses_unknown_verdicts() -> None:
    with pytest.raises(ValueError, match="judgement must be OK"):
        format_judgement(1, "NG")


def test_scenario_refuses_what_a_reply_cannot_show() -> None:
    with pytest.raises(ValueError, match="does not fit in 9 characters"):
        Scenario(nominal=Decimal("123456"))
    with pytest.raises(ValueError, match="bad_rate must be within 0"):
        Scenario(bad_rate=-0.1)
