"""Frame-level rules every serial codec shares: resynchronisation after noise, fixed-width fields.

A line cut at its terminator is one frame, or noise followed by one frame (a DATA press
right after the adapter was plugged in, a balance switched on mid-line). :func:`find_frame`
takes the whole line if it parses, else the longest tail of it that does, and says how many
bytes before it were noise. A tail is only ever taken when it is a complete frame of the
protocol ending at the terminator; a frame that is itself damaged is never repaired.

Fixed-width numeric fields (right-aligned, leading zeros blanked) are read by
:func:`right_aligned_number`, which refuses a field of any other width or shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

from drivers.base import FrameError

T = TypeVar("T")

#: a plain decimal: optional minus, digits without a superfluous leading zero, optional fraction
_PLAIN = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Found(Generic[T]):
    """A frame found in a line: ``skip`` bytes of noise before it, then ``frame``, parsed."""

    skip: int
    parsed: T


def every_start(line: bytes) -> Iterable[int]:
    """Candidate frame starts for protocols whose frames are recognised by their own layout."""
    return range(1, len(line))


def after_noise(line: bytes) -> Iterable[int]:
    """The one candidate start of protocols that cannot tell a frame from text (user patterns,
    barcodes): just past a leading run of bytes no instrument prints (controls, 8-bit)."""
    n = 0
    while n < len(line) and not 0x20 <= line[n] <= 0x7E:
        n += 1
    return (n,) if 0 < n < len(line) else ()


def fixed_length(length: int) -> Callable[[bytes], Iterable[int]]:
    """The one candidate start of a fixed-length frame: ``length`` bytes before the terminator."""

    def starts(line: bytes) -> Iterable[int]:
        return (len(line) - length,) if len(line) > length else ()

    return starts


def find_frame(
    line: bytes, parse: Callable[[bytes], T], starts: Callable[[bytes], Iterable[int]] = every_start
) -> Found[T]:
    """``parse(line)``, or the first (longest) tail of ``line`` at one of ``starts`` that parses.

    Raises the :class:`FrameError` of the whole line when no tail parses: the reason a
    reader sees is the one about the line as received.
    """
    try:
        return Found(0, parse(line))
    except FrameError as whole:
        for start in starts(line):
            try:
                return Found(start, parse(line[start:]))
            except FrameError:
                continue
        raise whole from None


def right_aligned_number(field: bytes, what: str, frame: bytes, *, sign_inside: bool = True) -> Decimal:
    """A number right-aligned in a fixed-width field, leading zeros blanked: ``b"   -12.50"``.

    The field must be spaces, then the number up to its last character. With ``sign_inside``
    a minus sign stands directly before the first digit; otherwise no sign is allowed. A
    zero before the decimal point is the only leading zero (a display shows ``0.5``, never
    ``00.5`` or ``.5``), which also makes a blank turned into a zero a bad frame.
    """
    digits = field.lstrip(b" ")
    if not digits:
        raise FrameError(f"{what} is blank", frame)
    if not sign_inside and digits.startswith(b"-"):
        raise FrameError(f"{what} has a sign where none belongs", frame)
    if _PLAIN.fullmatch(digits) is None:
        raise FrameError(f"{what} {field.decode('latin-1')!r} is not a right-aligned decimal number", frame)
    return Decimal(digits.decode("ascii"))


def printable(data: bytes) -> bool:
    """Only printable ASCII (space to tilde)."""
    return all(0x20 <= b <= 0x7E for b in data)
