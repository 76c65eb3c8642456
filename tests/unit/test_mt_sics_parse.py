"""The MT-SICS reply parser (reference manual 11780711, response formats) and the simulator's formatters."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.serial.mt_sics import Reply, parse_reply
from simulators.mt_sics import format_status, format_texts, format_weight

# the replies that carry a number, written from the manual's response format, not from the parser:
# ID, space, status, space, ten characters of right-aligned number (no superfluous zero), space, unit
NUMERIC = re.compile(
    rb"(S [SD]|T S|TI [SD]|TA A) (?=.{10} ) *(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?) [A-Za-z%][A-Za-z0-9%/]{0,4}"
)


@pytest.mark.parametrize(
    ("line", "command", "status", "value", "unit"),
    [
        (b"S S     100.00 g", "S", "S", "100.00", "g"),
        (b"S D     100.02 g", "S", "D", "100.02", "g"),
        (b"S S    -12.340 kg", "S", "S", "-12.340", "kg"),  # trailing zero kept: the resolution
        (b"S S      -0.00 g", "S", "S", "-0.00", "g"),
        (b"S S    12.3456 mg", "S", "S", "12.3456", "mg"),
        (b"S S       5.00 ct", "S", "S", "5.00", "ct"),
        (b"S S     0.2205 lb", "S", "S", "0.2205", "lb"),
        (b"S S      3.215 ozt", "S", "S", "3.215", "ozt"),
        (b"S S         12 PCS", "S", "S", "12", "PCS"),
        (b"S S       99.5 %", "S", "S", "99.5", "%"),
        (b"S S 1234567.89 g", "S", "S", "1234567.89", "g"),  # the field filled
        (b"T S     100.00 g", "T", "S", "100.00", "g"),
        (b"TI D      12.01 g", "TI", "D", "12.01", "g"),
        (b"TA A      10.00 g", "TA", "A", "10.00", "g"),
    ],
)
def test_weight_replies(line: bytes, command: str, status: str, value: str, unit: str) -> None:
    reply = parse_reply(line)
    assert (reply.command, reply.status, reply.unit) == (command, status, unit)
    assert str(reply.value) == value
    assert reply.error is None
    assert reply.stable is (status != "D")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"S I", "S I: not executable now"),
        (b"S L", "S L: logical error"),
        (b"S +", "S +: overload"),
        (b"S -", "S -: underload"),
        (b"ES", "ES: syntax error"),
        (b"ET", "ET: transmission error"),
        (b"EL", "EL: logical error"),
        (b"Z I", "Z I: not executable now"),
        (b"Z +", "Z +: above the zero setting range"),
        (b"ZI -", "ZI -: below the zero setting range"),
        (b"T +", "T +: above the taring range"),
        (b"TI L", "TI L: logical error"),
        (b"TA I", "TA I: not executable"),
        (b"TAC L", "TAC L: logical error"),
        (b"I4 I", "I4 I: not executable"),
    ],
)
def test_error_replies_carry_no_value(line: bytes, error: str) -> None:
    reply = parse_reply(line)
    assert reply.value is None and reply.unit is None
    assert reply.error is not None and reply.error.startswith(error)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"Z A", Reply("Z", "A")),
        (b"ZI S", Reply("ZI", "S")),
        (b"ZI D", Reply("ZI", "D")),
        (b"TAC A", Reply("TAC", "A")),
        (b'I4 A "B021002593"', Reply("I4", "A", texts=("B021002593",))),
        (b'I1 A "01" "2.20" "2.20" "1.00" "1.50"', Reply("I1", "A", texts=("01", "2.20", "2.20", "1.00", "1.50"))),
        (b'I2 A "XS205DU 220.00 g"', Reply("I2", "A", texts=("XS205DU 220.00 g",))),
        (b'I3 A ""', Reply("I3", "A", texts=("",))),
    ],
)
def test_confirmations_and_identification(line: bytes, expected: Reply) -> None:
    reply = parse_reply(line)
    assert reply == expected and reply.error is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty line"),
        (b"S", "not '<ID> <status>"),
        (b"S S", "shorter than its ten-character weight field"),
        (b"S S     100.00", "shorter than its ten-character weight field"),  # the unit is lost
        (b"S S    720629 g", "shorter than its ten-character weight field"),  # 7206.29 without its point
        (b"S S      100.00 g", "not ten characters followed by a space"),  # eleven characters
        (b"S S    0100.00 g", "not a right-aligned decimal number"),  # a blank turned into a zero
        (b"S S     100.00 g kg", "bad unit"),
        (b"S S     100.00 g ", "bad unit"),
        (b"S S    +100.00 g", "not a right-aligned decimal number"),  # MT-SICS has no plus sign
        (b"S S -   100.00 g", "not a right-aligned decimal number"),  # the sign is before the digits
        (b"S S       100. g", "not a right-aligned decimal number"),
        (b"S S         .5 g", "not a right-aligned decimal number"),
        (b"S S        1e3 g", "not a right-aligned decimal number"),
        (b"S S       1,00 g", "not a right-aligned decimal number"),
        (b"S S        NaN g", "not a right-aligned decimal number"),
        (b"S S     1O0.00 g", "not a right-aligned decimal number"),
        (b"S S            g", "blank"),
        (b"S S100.00 g", "not '<ID> <status>"),
        (b"S  S    100.00 g", "not '<ID> <status>"),
        (b" S S     100.00 g", "not '<ID> <status>"),  # nothing is stripped
        (b"S X     100.00 g", "not '<ID> <status>"),
        (b"s s     100.00 g", "not '<ID> <status>"),
        (b"S A     100.00 g", "status 'A' is not a reply to S"),
        (b"T D     100.00 g", "status 'D' is not a reply to T"),
        (b"Z A 1.00 g", "unexpected text after 'Z A'"),
        (b"S I extra", "unexpected text after 'S I'"),
        (b"Q S     100.00 g", "unknown reply 'Q'"),
        (b"SIR S     100.00 g", "unknown reply 'SIR'"),  # SIR is answered with S
        (b"I4 A B021002593", "I4 A without quoted text"),
        (b'I4 A "B02', "I4 A without quoted text"),
        (b"I4 A", "I4 A without quoted text"),
        (b"E S", "unknown reply 'E'"),
        (b"ESX", "not '<ID> <status>"),
        (b"S S     100.00 g\rS S     100.01 g", "non-printable"),  # CR-only lines glued together
        (b"S S\t    100.00 g", "non-printable"),
        (b"S S     100.00 \xb5g", "non-printable or non-ASCII"),
        (b"S S     1\xd9\xa300.0 g", "non-printable or non-ASCII"),  # Arabic-Indic digit three
        (b"S S     100.00 g\x00", "non-printable"),
    ],
)
def test_invalid(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_reply(line)
    assert reason in info.value.reason
    assert info.value.raw == line


# pieces of real replies, so that generated lines are often close to valid
PIECES = [b"S", b"SI", b"T", b"TI", b"TA", b"TAC", b"Z", b"I4", b"ES", b"D", b"A", b"I", b"L", b"+", b"-"]
PIECES += [b" ", b"  ", b"0", b"1", b"9", b".", b"g", b"kg", b"%", b"/", b'"', b"\r", b"\n", b"\t", b"\xff", b"\x00"]


@given(st.one_of(st.binary(max_size=24), st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join)))
@example(b"S S     100.00 g")
@example(b"S D          0 g")
@example(b"TA A       -0.0 lb")
@example(b"S S     100.00 g\x00")
def test_random_bytes_never_yield_a_value_unless_valid(line: bytes) -> None:
    refused: FrameError | None = None
    try:
        reply = parse_reply(line)
    except FrameError as exc:
        refused = exc
    if refused is not None:
        assert refused.raw == line
        assert not NUMERIC.fullmatch(line)
        return
    m = NUMERIC.fullmatch(line)
    if reply.value is None:
        assert m is None
        assert reply.unit is None
    else:
        assert m is not None, line
        assert reply.value == Decimal(m.group(2).decode())
        assert str(reply.value) == m.group(2).decode()  # the digits as sent, resolution included


@given(
    kind=st.sampled_from([("S", "S"), ("S", "D"), ("T", "S"), ("TI", "S"), ("TI", "D"), ("TA", "A")]),
    value=st.decimals(min_value=-9999, max_value=99999, allow_nan=False, allow_infinity=False, places=4),
    unit=st.from_regex(r"\A[A-Za-z%][A-Za-z0-9%/]{0,4}\Z"),
)
def test_weight_replies_round_trip_exactly(kind: tuple[str, str], value: Decimal, unit: str) -> None:
    line = format_weight(kind[0], kind[1], value, unit)
    assert line.endswith(b"\r\n")
    reply = parse_reply(line[:-2])
    assert (reply.command, reply.status, reply.unit) == (kind[0], kind[1], unit)
    assert reply.value == value and str(reply.value) == format(value, "f")
    assert reply.value is not None
    assert format_weight(reply.command, reply.status, reply.value, unit) == line


@given(
    st.sampled_from(
        [
            (c, s)
            for c, statuses in {"S": "IL+-", "Z": "AI+-", "ZI": "SDI+-", "TAC": "AIL", "T": "IL+-"}.items()
            for s in statuses
        ]
    )
)
def test_status_replies_round_trip(kind: tuple[str, str]) -> None:
    line = format_status(*kind)
    reply = parse_reply(line[:-2])
    assert (reply.command, reply.status, reply.value) == (kind[0], kind[1], None)
    assert format_status(reply.command, reply.status) == line


@given(
    ident=st.sampled_from(["I1", "I2", "I3", "I4"]),
    texts=st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"')), min_size=1),
)
def test_identification_round_trips(ident: str, texts: list[str]) -> None:
    line = format_texts(ident, *texts)
    reply = parse_reply(line[:-2])
    assert reply.command == ident and reply.texts == tuple(texts)
    assert format_texts(ident, *reply.texts) == line


def test_the_simulator_writes_the_ten_character_field() -> None:
    assert format_weight("S", "S", Decimal("100.00"), "g") == b"S S     100.00 g\r\n"
    assert format_weight("S", "D", Decimal("-0.5"), "kg") == b"S D       -0.5 kg\r\n"


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("S", "S", Decimal("NaN"), "g"), ValueError),
        (("S", "S", Decimal("1"), ""), ValueError),
        (("S", "S", Decimal("1"), "k g"), ValueError),
        (("S", "S", Decimal("12345678.90"), "g"), ValueError),  # eleven characters
    ],
)
def test_format_weight_refuses(args: tuple[str, str, Decimal, str], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        format_weight(*args)
