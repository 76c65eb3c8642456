"""Register bytes <-> values for every type and byte/word order (drivers.modbus.codec).

Expected wire bytes are written out by hand or built with ``struct`` and an explicit byte
permutation here, never with the codec itself, so a wrong order in the codec cannot agree
with a wrong order in the test.
"""

from __future__ import annotations

import contextlib
import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import (
    DATA_TYPES,
    ORDERS,
    CodecError,
    DataType,
    Order,
    bytes_to_registers,
    decode,
    encode,
    float32_text,
    make_decoder,
    order_of,
    permutation,
    register_count,
    registers_to_bytes,
    scale_value,
)

# -- reference wire layouts ----------------------------------------------------------------------


def wire(canonical: bytes, order: str) -> bytes:
    """Canonical big-endian bytes as a device with ``order`` puts them on the wire (by the table)."""
    n = len(canonical)
    if n == 2:
        return canonical if order in ("ABCD", "CDAB") else canonical[::-1]
    regs = [canonical[i : i + 2] for i in range(0, n, 2)]
    if order in ("CDAB", "DCBA"):
        regs.reverse()
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    return b"".join(regs)


#: the 32-bit value 0x11223344 in every order, straight from the vendor tables
KNOWN_32 = {
    "ABCD": bytes.fromhex("11223344"),
    "CDAB": bytes.fromhex("33441122"),
    "BADC": bytes.fromhex("22114433"),
    "DCBA": bytes.fromhex("44332211"),
}
KNOWN_64 = {
    "ABCD": bytes.fromhex("0102030405060708"),
    "CDAB": bytes.fromhex("0708050603040102"),
    "BADC": bytes.fromhex("0201040306050807"),
    "DCBA": bytes.fromhex("0807060504030201"),
}

INT_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "uint64": ">Q"}
INT_BOUNDS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@pytest.mark.parametrize("order", ORDERS)
def test_known_32_and_64_bit_layouts(order: Order) -> None:
    assert wire(bytes.fromhex("11223344"), order) == KNOWN_32[order]
    assert wire(bytes.fromhex("0102030405060708"), order) == KNOWN_64[order]
    assert decode(KNOWN_32[order], "uint32", order) == 0x11223344
    assert encode(0x11223344, "uint32", order) == KNOWN_32[order]
    assert decode(KNOWN_64[order], "uint64", order) == 0x0102030405060708
    assert encode(0x0102030405060708, "uint64", order) == KNOWN_64[order]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", list(INT_FORMATS))
def test_integer_extremes_in_every_order(dtype: DataType, order: Order) -> None:
    for value in (*INT_BOUNDS[dtype], 0, 1, INT_BOUNDS[dtype][1] // 3):
        data = wire(struct.pack(INT_FORMATS[dtype], value), order)
        got = decode(data, dtype, order)
        assert got == value and isinstance(got, Decimal)
        assert encode(value, dtype, order) == data


@pytest.mark.parametrize("order", ORDERS)
def test_float32_reads_as_the_decimal_the_plc_computed(order: Order) -> None:
    for text in ("12.3", "-0.1", "1250.63", "84.2", "0", "3.4028235e+38", "1e-45", "1.17549435e-38", "-0"):
        data = wire(struct.pack(">f", float(text)), order)
        value = decode(data, "float32", order)
        assert isinstance(value, Decimal)
        # the same float32, and no longer than it needs to be
        assert struct.pack(">f", float(value)) == struct.pack(">f", float(text))
        assert len(value.as_tuple().digits) <= len(Decimal(text).as_tuple().digits)
    assert str(decode(wire(struct.pack(">f", 12.3), order), "float32", order)) == "12.3"


@pytest.mark.parametrize("order", ORDERS)
def test_float64_is_the_decimal_of_its_repr(order: Order) -> None:
    for x in (0.1, -2.5e-300, 1.7976931348623157e308, 123456.789, 5e-324):
        data = wire(struct.pack(">d", x), order)
        assert decode(data, "float64", order) == Decimal(repr(x))
        assert encode(Decimal(repr(x)), "float64", order) == data


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_finite_floats_are_errors_not_values(dtype: DataType) -> None:
    fmt = ">f" if dtype == "float32" else ">d"
    for x in (math.nan, math.inf, -math.inf):
        with pytest.raises(CodecError, match="not a finite"):
            decode(struct.pack(fmt, x), dtype)
    with pytest.raises(CodecError):
        encode(Decimal("NaN"), dtype)
    with pytest.raises(CodecError, match="too large"):
        encode(Decimal("1e39"), "float32")


def test_float32_text_is_shortest() -> None:
    assert float32_text(struct.unpack(">f", struct.pack(">f", 0.1))[0]) == "0.1"
    assert float32_text(struct.unpack(">f", struct.pack(">f", 16777217.0))[0]) == "16777216"
    assert float32_text(0.0) == "0"
    assert float32_text(struct.unpack(">f", bytes.fromhex("00000001"))[0]) == "1e-45"  # smallest subnormal


@pytest.mark.parametrize("order", ORDERS)
def test_strings(order: Order) -> None:
    canonical = b"SN01-000042\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    data = wire_string(canonical, order)
    assert decode(data, "string", order, length=10) == "SN01-000042"
    assert encode("SN01-000042", "string", order, length=10) == data


def wire_string(canonical: bytes, order: str) -> bytes:
    regs = [canonical[i : i + 2] for i in range(0, len(canonical), 2)]
    if order in ("CDAB", "DCBA"):
        regs.reverse()
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    return b"".join(regs)


def test_string_padding_and_errors() -> None:
    assert decode(b"AB  ", "string", length=2) == "AB"  # space padded
    assert decode(b"A\x00B\x00", "string", length=2) == "A"  # a C string inside a fixed field
    assert decode(b"\x00\x00\x00\x00", "string", length=2) == ""
    with pytest.raises(CodecError, match="control"):
        decode(b"A\x01BC", "string", length=2)
    with pytest.raises(CodecError, match="not ascii"):
        decode(b"\xc3\xa9AB", "string", length=2)
    assert decode(b"\xc3\xa9AB", "string", length=2, encoding="utf-8") == "éAB"
    assert decode(b"\xe9AB ", "string", length=2, encoding="latin-1") == "éAB"
    with pytest.raises(CodecError, match="needs 5 bytes"):
        encode("HELLO", "string", length=2)
    with pytest.raises(CodecError, match="not ascii"):
        encode("é", "string", length=2)
    with pytest.raises(CodecError, match="needs text"):
        encode(12, "string", length=2)
    with pytest.raises(CodecError):
        register_count("string")


def test_bits_of_a_register() -> None:
    assert decode(b"\x80\x01", "bit", bit=0) == 1
    assert decode(b"\x80\x01", "bit", bit=15) == 1
    assert decode(b"\x80\x01", "bit", bit=1) == 0
    # a byte-swapped device: its register value is 0x0180, so bit 8 is set, not bit 0
    assert decode(b"\x80\x01", "bit", "BADC", bit=8) == 1
    assert decode(b"\x80\x01", "bit", "BADC", bit=0) == 0
    assert encode(1, "bit") == b"\x00\x01"
    assert encode(True, "bit", "DCBA") == b"\x01\x00"
    with pytest.raises(CodecError, match="0 or 1"):
        encode(2, "bit")
    with pytest.raises(CodecError, match="bit number"):
        make_decoder("bit")


def test_scale_and_offset_are_exact() -> None:
    # 0x FB2E = -1234 as int16; -1234 * 0.1 + 273.15 = 149.75, with no binary rounding anywhere
    value = decode(b"\xfb\x2e", "int16", scale=Decimal("0.1"), offset=Decimal("273.15"))
    assert str(value) == "149.75"
    assert encode(Decimal("149.75"), "int16", scale=Decimal("0.1"), offset=Decimal("273.15")) == b"\xfb\x2e"
    big = decode(b"\xff" * 8, "uint64", scale=Decimal("0.000000000000000000000000001"))
    assert big == Decimal(2**64 - 1).scaleb(-27)
    assert str(scale_value(3, Decimal("0.10"), Decimal(0))) == "0.30"  # keeps the scale's resolution
    f = decode(struct.pack(">f", 12.5), "float32", scale=Decimal(2), offset=Decimal("-1"))
    assert f == Decimal("24.0")


def test_encode_refuses_values_that_would_need_rounding() -> None:
    with pytest.raises(CodecError, match="whole number"):
        encode(Decimal("1.25"), "int16", scale=Decimal("0.1"))
    with pytest.raises(CodecError, match="outside"):
        encode(40000, "int16")
    with pytest.raises(CodecError, match="outside"):
        encode(-1, "uint32")
    with pytest.raises(CodecError, match="not a number"):
        encode("twelve", "uint16")
    with pytest.raises(CodecError, match="not a number"):
        encode(None, "uint16")
    assert encode("12", "uint16") == b"\x00\x0c"
    assert encode(12.5, "float32") == struct.pack(">f", 12.5)
    assert encode(True, "uint16") == b"\x00\x01"


def test_wrong_byte_count_is_an_error() -> None:
    for dtype in DATA_TYPES:
        length = 3 if dtype == "string" else None
        bit = 0 if dtype == "bit" else None
        size = 2 * register_count(dtype, length)  # type: ignore[arg-type]
        for n in (0, size - 1, size + 1):
            with pytest.raises(CodecError, match="bytes"):
                decode(b"\x00" * n, dtype, length=length, bit=bit)  # type: ignore[arg-type]


def test_helpers() -> None:
    assert registers_to_bytes([0x1234, 0xABCD]) == b"\x12\x34\xab\xcd"
    assert bytes_to_registers(b"\x12\x34\xab\xcd") == [0x1234, 0xABCD]
    with pytest.raises(CodecError):
        bytes_to_registers(b"\x01")
    assert order_of("big", "big") == "ABCD" and order_of("little", "big") == "BADC"
    assert order_of("big", "little") == "CDAB" and order_of("little", "little") == "DCBA"
    for order in ORDERS:
        for regs in (1, 2, 4, 7):
            perm = permutation(order, regs)  # type: ignore[arg-type]
            if perm is not None:
                assert sorted(perm) == list(range(2 * regs))
                assert [perm[i] for i in perm] == list(range(2 * regs))  # an involution


# -- properties -----------------------------------------------------------------------------------

orders = st.sampled_from(ORDERS)


@st.composite
def int_points(draw: st.DrawFn) -> tuple[str, int, Decimal, Decimal]:
    dtype = draw(st.sampled_from(list(INT_FORMATS)))
    low, high = INT_BOUNDS[dtype]
    raw = draw(st.integers(low, high))
    scale = draw(st.sampled_from([Decimal(1), Decimal("0.1"), Decimal("0.001"), Decimal("2.5"), Decimal("-1")]))
    offset = draw(st.sampled_from([Decimal(0), Decimal("273.15"), Decimal("-40")]))
    return dtype, raw, scale, offset


@settings(max_examples=300, deadline=None)
@given(int_points(), orders)
def test_integers_round_trip(point: tuple[str, int, Decimal, Decimal], order: Order) -> None:
    dtype, raw, scale, offset = point
    value = raw * scale + offset  # exact: Decimal arithmetic on these sizes fits 28 digits
    data = encode(value, dtype, order, scale=scale, offset=offset)  # type: ignore[arg-type]
    assert data == wire(struct.pack(INT_FORMATS[dtype], raw), order)
    assert decode(data, dtype, order, scale=scale, offset=offset) == value  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False), orders)
def test_float32_round_trip(x: float, order: Order) -> None:
    data = wire(struct.pack(">f", x), order)
    value = decode(data, "float32", order)
    assert isinstance(value, Decimal)
    assert encode(value, "float32", order) == data
    # shortest: the nearest decimal with one digit less is a different float32
    digits = len(value.normalize().as_tuple().digits)
    if digits > 1:
        shorter = float(f"{x:.{digits - 1}g}")
        # OverflowError: rounded past the largest float32, certainly not the same single
        with contextlib.suppress(OverflowError):
            assert struct.pack(">f", shorter) != struct.pack(">f", x)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), orders)
def test_float64_round_trip(x: float, order: Order) -> None:
    data = wire(struct.pack(">d", x), order)
    value = decode(data, "float64", order)
    assert value == Decimal(repr(x))
    assert encode(value, "float64", order) == data


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20), orders)
def test_string_round_trip(text: str, order: Order) -> None:
    data = encode(text, "string", order, length=10)
    assert len(data) == 20
    assert decode(data, "string", order, length=10) == text


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=20), st.sampled_from(DATA_TYPES), orders, st.integers(0, 15))
def test_random_bytes_give_a_value_or_a_codec_error(data: bytes, dtype: DataType, order: Order, bit: int) -> None:
    """Whatever a device sends, decoding ends in a value or a CodecError, never another exception."""
    length = max(1, len(data) // 2) if dtype == "string" else None
    try:
        value = decode(
            data,
            dtype,
            order,
            length=length,
            bit=bit if dtype == "bit" else None,
            scale=Decimal("0.01"),
            offset=Decimal(0) if dtype in ("string", "bit") else Decimal(1),
        )
    except CodecError:
        return
    if dtype == "string":
        assert isinstance(value, str)
    else:
        assert isinstance(value, Decimal) and value.is_finite()
