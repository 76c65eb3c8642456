"""Reading one line of a line-based ASCII instrument with the patterns of its configuration.

There is no manual behind this driver: the instrument's manual is behind its pattern. So
the rules are about patterns and numbers, and they are strict: the pattern must match the
whole line exactly as received (terminator cut off, nothing stripped), and the ``value``
group must be a plain decimal number. The shipped samples write the layout of their
instrument's manual into the pattern (fixed widths, sign position, decimals, unit,
stability marker), so that a line that lost or gained a character does not match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from drivers.base import FrameError, ReadingStatus

#: a number as an instrument prints it: a sign directly before the digits, a decimal point
#: with digits on both sides (blanks before the sign belong to a right-aligned field)
_NUMBER = re.compile(r" *([+-]?[0-9]+(?:\.[0-9]+)?)", re.ASCII)


def parse_number(text: str, *, decimal_comma: bool = False) -> Decimal:
    """A plain decimal number as an instrument prints it: ``+12.345``, ``   -0.50``, ``12,3``.

    Leading blanks (a right-aligned field) are allowed; blanks between sign and digits,
    exponents, NaN, thousands separators, other digits and a point without digits on both
    sides are not. With ``decimal_comma`` the separator is a comma and a point is refused
    (it would be a thousands separator, which is never guessed at). Raises ValueError.
    """
    body = text
    if decimal_comma:
        if "." in body:
            raise ValueError(f"{text!r} has a decimal point but decimal_comma is set")
        body = body.replace(",", ".")
    m = _NUMBER.fullmatch(body)
    if m is None:
        raise ValueError(f"{text!r} is not a decimal number")
    return Decimal(m.group(1))


def compile_pattern(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True, slots=True)
class LineFormat:
    """How to read one line (the driver builds it from its configuration)."""

    pattern: re.Pattern[str]
    unit: str | None = None
    channel: str = "value"
    stable_when: str | None = None
    error_pattern: re.Pattern[str] | None = None
    ignore_pattern: re.Pattern[str] | None = None
    decimal_comma: bool = False


@dataclass(frozen=True, slots=True)
class ParsedLine:
    channel: str
    value: Decimal | None
    unit: str | None
    status: ReadingStatus
    error: str | None = None


def parse_line(frame: bytes, fmt: LineFormat) -> ParsedLine | None:
    """Parse one line (without terminator). None means an acknowledgement to ignore.

    ``error_pattern`` is tried first (an ERROR reading, the line as error text), then
    ``pattern``, then ``ignore_pattern``; each must match the whole line as received.
    Lines are decoded as latin-1, so every byte is one character (units such as ``µm``,
    0xB5, survive). Raises :class:`~drivers.base.FrameError` for a line that is neither a
    value, nor an error, nor ignorable.
    """
    text = frame.decode("latin-1")
    if fmt.error_pattern is not None and fmt.error_pattern.fullmatch(text):
        return ParsedLine(fmt.channel, None, None, ReadingStatus.ERROR, text)
    m = fmt.pattern.fullmatch(text)
    if m is None:
        if fmt.ignore_pattern is not None and fmt.ignore_pattern.fullmatch(text):
            return None
        raise FrameError("line does not match the pattern", frame)
    groups = m.groupdict()
    raw_value = groups.get("value")
    if raw_value is None:
        raise FrameError("the value group did not take part in the match", frame)
    try:
        value = parse_number(raw_value, decimal_comma=fmt.decimal_comma)
    except ValueError as exc:
        raise FrameError(str(exc), frame) from None
    unit = (groups.get("unit") or "").strip() or fmt.unit
    channel = (groups.get("channel") or "").strip() or fmt.channel
    status = ReadingStatus.OK
    if "unstable" in groups:
        if groups["unstable"]:
            status = ReadingStatus.UNSTABLE
    elif "stable" in groups:
        marker = (groups["stable"] or "").strip()
        stable = marker == fmt.stable_when if fmt.stable_when is not None else bool(marker)
        if not stable:
            status = ReadingStatus.UNSTABLE
    return ParsedLine(channel, value, unit, status)
