"""Modbus register encoding: the bytes of a point <-> a value, for every type and byte/word order.

Modbus transmits each 16-bit register big-endian. Anything wider than one register is the
vendor's choice, written here as the order of the bytes ``A B C D`` of a 32-bit value (``A``
most significant) as they appear on the wire:

============  ===============  ==============  ====================================
``order``     ``word_order``   ``byte_order``  seen at
============  ===============  ==============  ====================================
``ABCD``      big              big             the Modbus specification, Siemens
``CDAB``      little           big             Schneider, many PLCs' float32
``BADC``      big              little          some meters
``DCBA``      little           little          little-endian devices dumping memory
============  ===============  ==============  ====================================

The same two flags generalise to every width: ``byte_order: little`` swaps the two bytes of
each register, ``word_order: little`` reverses the sequence of registers. So a 64-bit value
``ABCDEFGH`` in ``CDAB`` order is on the wire as ``GH EF CD AB``. A 16-bit value only has a
byte order; a string honours both (the word order reverses its registers, which some devices
really do with character arrays mapped as little-endian words).

Values become :class:`~decimal.Decimal` without binary rounding: integers exactly, then
``raw * scale + offset`` computed exactly in a wide decimal context. A float64 becomes the
Decimal of its ``repr`` (the shortest text that reads back as the same double). A float32
becomes the shortest text that reads back as the same *single*: ``Decimal(repr(float))`` of
a widened float32 would record 12.300000190734863 for the 12.3 the PLC computed, which is
the same bits but digits nobody measured. Non-finite floats, strings that do not decode and
byte counts that do not fit raise :class:`CodecError` and never become values.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from decimal import Context, Decimal, Inexact, InvalidOperation
from operator import itemgetter
from typing import Final, Literal, get_args

DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bit"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Endian = Literal["big", "little"]
Encoding = Literal["ascii", "latin-1", "utf-8"]

DATA_TYPES: Final[tuple[str, ...]] = get_args(DataType)
ORDERS: Final[tuple[str, ...]] = get_args(Order)

#: registers per value (strings: configured ``length``)
REGISTERS: Final[dict[str, int]] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
    "bit": 1,
}

_INT_FORMATS: Final[dict[str, str]] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
}
_FLOAT_FORMATS: Final[dict[str, str]] = {"float32": ">f", "float64": ">d"}

#: (byte_order, word_order) of each combined order name
ORDER_FLAGS: Final[dict[str, tuple[Endian, Endian]]] = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}

# Wide enough that raw * scale + offset is exact for any 64-bit raw value and the scale and
# offset digits the configuration allows (MAX_FACTOR_DIGITS); Inexact is trapped anyway so a
# rounding would surface as an error instead of a silently different number.
MAX_FACTOR_DIGITS: Final = 30
_EXACT = Context(prec=90, Emin=-999_999, Emax=999_999, traps=[InvalidOperation, Inexact])

# floats round anyway when packed, so unscaling towards a float may round too
_ROUNDING = Context(prec=40, Emin=-999_999, Emax=999_999)

_ZERO = Decimal(0)
_ONE = Decimal(1)


class CodecError(ValueError):
    """Bytes that are not a value of the point's type, or a value the point cannot hold."""


def order_of(byte_order: Endian, word_order: Endian) -> Order:
    for name, flags in ORDER_FLAGS.items():
        if flags == (byte_order, word_order):
            return name  # type: ignore[return-value]
    raise AssertionError("unreachable: every combination has a name")


def register_count(dtype: DataType, length: int | None = None) -> int:
    if dtype == "string":
        if length is None or length < 1:
            raise CodecError("a string needs a length in registers")
        return length
    return REGISTERS[dtype]


def permutation(order: Order, registers: int) -> tuple[int, ...] | None:
    """Wire byte index of each canonical (big-endian) byte, or None when they are the same.

    The mapping is an involution: applying it twice gives the identity, so the same
    permutation turns wire bytes into canonical bytes and back.
    """
    byte_order, word_order = ORDER_FLAGS[order]
    if registers == 1:
        word_order = "big"  # a single register has no word order
    if byte_order == "big" and word_order == "big":
        return None
    words = range(registers - 1, -1, -1) if word_order == "little" else range(registers)
    pairs = (1, 0) if byte_order == "little" else (0, 1)
    return tuple(2 * w + b for w in words for b in pairs)


def _reorder(data: bytes, perm: tuple[int, ...] | None) -> bytes:
    if perm is None:
        return data
    return bytes(itemgetter(*perm)(data))


#: below this a float32 is subnormal and has fewer than 24 significant bits
_FLOAT32_MIN_NORMAL: Final = 1.1754943508222875e-38


def float32_text(value: float) -> str:
    """The shortest decimal text that reads back as the same float32 bit pattern.

    Rounding to ``d`` digits gives the nearest ``d``-digit decimal, so if any ``d``-digit
    decimal reads back as the same single, this one does: trying ``d`` upwards finds the
    shortest. A normal float32 keeps every decimal of up to six significant digits (its
    error is far below half a unit of the sixth digit), so the search starts at six there.
    """
    bits = struct.pack(">f", value)
    first = 6 if abs(value) >= _FLOAT32_MIN_NORMAL else 1
    for digits in range(first, 9):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == bits:
            return text
    return f"{value:.9g}"  # nine significant digits always identify a float32


def scale_value(raw: int | Decimal, scale: Decimal, offset: Decimal) -> Decimal:
    """``raw * scale + offset``, exactly (raises CodecError instead of rounding)."""
    value = raw if isinstance(raw, Decimal) else Decimal(raw)
    try:
        if scale != _ONE:
            value = _EXACT.multiply(value, scale)
        if offset:
            value = _EXACT.add(value, offset)
    except (Inexact, InvalidOperation) as exc:  # pragma: no cover - bounded by MAX_FACTOR_DIGITS
        raise CodecError(f"{raw} * {scale} + {offset} is not exact in {_EXACT.prec} digits") from exc
    return value


def unscale_value(value: Decimal, scale: Decimal, offset: Decimal, *, exact: bool = True) -> Decimal:
    """``(value - offset) / scale``; CodecError when that is not a finite (and, if asked, exact) decimal."""
    if not value.is_finite():
        raise CodecError(f"{value} is not a finite number")
    ctx = _EXACT if exact else _ROUNDING
    try:
        raw = ctx.subtract(value, offset) if offset else value
        if scale != _ONE:
            raw = ctx.divide(raw, scale)
    except (Inexact, InvalidOperation) as exc:
        raise CodecError(f"({value} - {offset}) / {scale} has no exact decimal result") from exc
    return raw


Decoder = Callable[[bytes], Decimal | str]
"""Wire bytes of one point -> its value (Decimal, or str for strings); raises CodecError."""


def make_decoder(  # noqa: C901 - one branch per data type, compiled once so the poll loop does no dispatch
    dtype: DataType,
    order: Order = "ABCD",
    *,
    length: int | None = None,
    bit: int | None = None,
    scale: Decimal = _ONE,
    offset: Decimal = _ZERO,
    encoding: Encoding = "ascii",
) -> Decoder:
    """Compile the decoder of one point once, so the poll loop does no per-reading dispatch."""
    count = register_count(dtype, length)
    size = 2 * count
    perm = permutation(order, count)

    def check(data: bytes) -> None:
        if len(data) != size:
            raise CodecError(f"{dtype} needs {size} bytes, got {len(data)}")

    if dtype == "bit":
        if bit is None:
            raise CodecError("a bit of a register needs its bit number")
        shift = bit

        def decode_bit(data: bytes) -> Decimal:
            check(data)
            word = int.from_bytes(_reorder(data, perm), "big")
            return _ONE if (word >> shift) & 1 else _ZERO

        return decode_bit

    if dtype == "string":

        def decode_string(data: bytes) -> str:
            check(data)
            text_bytes = _reorder(data, perm)
            # PLC strings are NUL-padded (or NUL-terminated inside a fixed field), some pad with spaces
            end = text_bytes.find(b"\x00")
            if end >= 0:
                text_bytes = text_bytes[:end]
            try:
                text = text_bytes.decode(encoding).rstrip(" ")
            except UnicodeDecodeError as exc:
                raise CodecError(f"not {encoding} text: {data!r}") from exc
            if not text.isprintable():
                raise CodecError(f"control characters in text: {data!r}")
            return text

        return decode_string

    plain = scale == _ONE and not offset
    wrong_size = f"{dtype} needs {size} bytes"
    pick = itemgetter(*perm) if perm is not None else None
    # the hot path of every poll: no helper calls when the point needs no reordering or scaling
    if dtype in _INT_FORMATS:
        unpack = struct.Struct(_INT_FORMATS[dtype]).unpack

        def decode_int(data: bytes) -> Decimal:
            if pick is not None:
                if len(data) != size:
                    raise CodecError(f"{wrong_size}, got {len(data)}")
                data = bytes(pick(data))
            try:
                (raw,) = unpack(data)
            except struct.error:
                raise CodecError(f"{wrong_size}, got {len(data)}") from None
            return Decimal(raw) if plain else scale_value(raw, scale, offset)

        return decode_int

    unpack_float = struct.Struct(_FLOAT_FORMATS[dtype]).unpack
    single = dtype == "float32"
    isfinite = math.isfinite

    def decode_float(data: bytes) -> Decimal:
        wire = data
        if pick is not None:
            if len(data) != size:
                raise CodecError(f"{wrong_size}, got {len(data)}")
            data = bytes(pick(data))
        try:
            (raw,) = unpack_float(data)
        except struct.error:
            raise CodecError(f"{wrong_size}, got {len(data)}") from None
        if not isfinite(raw):
            raise CodecError(f"{dtype} is not a finite number ({raw}): {wire!r}")
        value = Decimal(float32_text(raw) if single else repr(raw))
        return value if plain else scale_value(value, scale, offset)

    return decode_float


def decode(
    data: bytes,
    dtype: DataType,
    order: Order = "ABCD",
    *,
    length: int | None = None,
    bit: int | None = None,
    scale: Decimal = _ONE,
    offset: Decimal = _ZERO,
    encoding: Encoding = "ascii",
) -> Decimal | str:
    """Decode one point's wire bytes (convenience; the driver compiles with :func:`make_decoder`)."""
    return make_decoder(dtype, order, length=length, bit=bit, scale=scale, offset=offset, encoding=encoding)(data)


_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def _as_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        return _ONE if value else _ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise CodecError(f"not a number: {value!r}") from None
    raise CodecError(f"not a number: {value!r}")


def encode(
    value: object,
    dtype: DataType,
    order: Order = "ABCD",
    *,
    length: int | None = None,
    scale: Decimal = _ONE,
    offset: Decimal = _ZERO,
    encoding: Encoding = "ascii",
) -> bytes:
    """The wire bytes that :func:`decode` turns back into ``value``.

    Numbers are unscaled exactly: a value that needs rounding to fit the raw integer (or
    a float32) is refused, never rounded on the way to the PLC. A ``bit`` encodes as the
    register value 0 or 1 (the caller masks it into the register).
    """
    count = register_count(dtype, length)
    perm = permutation(order, count)
    if dtype == "string":
        if not isinstance(value, str):
            raise CodecError(f"a string point needs text, got {value!r}")
        try:
            text = value.encode(encoding)
        except UnicodeEncodeError as exc:
            raise CodecError(f"{value!r} is not {encoding}") from exc
        if len(text) > 2 * count:
            raise CodecError(f"{value!r} needs {len(text)} bytes, the point holds {2 * count}")
        return _reorder(text.ljust(2 * count, b"\x00"), perm)
    number = _as_decimal(value)
    if dtype == "bit":
        if number not in (_ZERO, _ONE):
            raise CodecError(f"a bit is 0 or 1, got {value!r}")
        return _reorder(int(number).to_bytes(2, "big"), perm)
    raw = unscale_value(number, scale, offset, exact=dtype in _INT_FORMATS)
    if dtype in _INT_FORMATS:
        if raw != raw.to_integral_value():
            raise CodecError(f"{value} is not a whole number of {scale} (+ {offset}) steps")
        low, high = _INT_RANGES[dtype]
        as_int = int(raw)
        if not low <= as_int <= high:
            raise CodecError(f"raw value {as_int} is outside {dtype} ({low}..{high})")
        return _reorder(struct.pack(_INT_FORMATS[dtype], as_int), perm)
    as_float = float(raw)
    try:
        packed = struct.pack(_FLOAT_FORMATS[dtype], as_float)
    except OverflowError as exc:
        raise CodecError(f"{value} is too large for {dtype}") from exc
    if not math.isfinite(as_float):
        raise CodecError(f"{value} is too large for {dtype}")
    return _reorder(packed, perm)


def registers_to_bytes(registers: list[int]) -> bytes:
    """Register values (as a client library returns them) -> the bytes on the wire."""
    return struct.pack(f">{len(registers)}H", *registers)


def bytes_to_registers(data: bytes) -> list[int]:
    if len(data) % 2:
        raise CodecError(f"odd number of bytes: {len(data)}")
    return list(struct.unpack(f">{len(data) // 2}H", data))
