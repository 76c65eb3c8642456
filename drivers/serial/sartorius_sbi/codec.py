"""SBI (Sartorius Balance Interface) data frames, as Sartorius documents them.

Sources, the "Data Output Format" sections of Sartorius balance manuals, which agree on the
value frame: Sartorius FB series operating instructions ("Data Output Format", 16 and 22
characters, special codes, error codes, unit symbols, ID code characters); Sartorius
LE/LP series ("Output Format with 16 Characters": normal operation, special codes, error
codes); Sartorius Combics 1 operating instructions ("Data Interfaces": 22-character
example, ID code characters, error codes); Sartorius Master series ("Data Output with ID
Code", status and error strings).

16 characters::

    position  1      2      3-10                    11     12-14          15 16
              sign   space  weight, decimal point,  space  unit symbol    CR LF
              + - or        leading zeros output           (left-aligned)
              space         as spaces                      or spaces

    "+    12.34 g  " CR LF    (FB series: "+***1255.7*g**", * = space)

With an ID code (22 characters) six characters of ID (``N``, ``G#``, ``T`` ..., left-aligned)
come first and the 16 follow. No unit symbol is output while the balance has not
stabilised (FB series): the reading is UNSTABLE, its value kept. Without decimals the
decimal point is suppressed (FB series), so an integer is a value too.

Special codes and error codes replace the weight: ``H`` (overload), ``HH`` (overload during
checkweighing), ``L`` / ``LL`` (underload), ``C`` (calibration/adjustment); ``Err ###``
(``ERR ###`` in the 22-character ``Stat`` form); Entris II shows ``High`` / ``Low`` in the
``Stat`` form. The manuals agree on these texts but their columns differ between model
families (and the extracts at hand lose the spacing), so a special frame is accepted where
the text stands in the data columns and every other column is blank: it becomes an ERROR
reading, never a number. Anything else is a :class:`FrameError`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from drivers.base import FrameError, ReadingStatus
from drivers.serial.frames import printable, right_aligned_number

TERMINATOR: Final = b"\r\n"
ESC: Final = b"\x1b"
IDENTIFIER_LENGTH: Final = 6
DATA_LENGTH: Final = 14  # a 16-character frame without its CR LF
#: the unit symbols of the FB series table (and "gr", grains, as the MC series writes them)
UNITS: Final = frozenset(
    {"g", "kg", "ct", "lb", "oz", "ozt", "tlh", "tls", "tlt", "GN", "gr", "dwt", "mg", "/lb", "tlc", "mom", "K"}
    | {"tol", "bat", "MS", "%", "pcs"}
)
#: special codes and their meaning
SPECIAL_CODES: Final[dict[str, str]] = {
    "H": "overload",
    "HH": "overload during checkweighing",
    "L": "underload",
    "LL": "underload during checkweighing",
    "C": "calibration/adjustment",
    "High": "overload",
    "Low": "underload",
}

FrameFormat = Literal["auto", "16", "22"]

_ERROR = re.compile(rb"(Err|ERR) ([0-9]{1,3})")


@dataclass(frozen=True, slots=True)
class SbiFrame:
    """One parsed frame. ``identifier`` is None for a 16-character frame and for ``Stat``."""

    identifier: str | None
    value: Decimal | None
    unit: str | None
    status: ReadingStatus
    error: str | None = None


def lengths(frame_format: FrameFormat) -> tuple[int, ...]:
    """Characters before CR LF a frame of this format has."""
    return {"auto": (DATA_LENGTH, DATA_LENGTH + IDENTIFIER_LENGTH), "16": (DATA_LENGTH,)}.get(
        frame_format, (DATA_LENGTH + IDENTIFIER_LENGTH,)
    )


def parse_frame(
    frame: bytes,
    frame_format: FrameFormat = "auto",
    identifiers: Collection[str] = (),
    plus_sign: Literal["+", " "] = "+",
) -> SbiFrame:
    """Parse one frame without its CR LF. Nothing is stripped or tolerated.

    ``frame_format`` "16" or "22" accepts only that length; "auto" tells them apart by
    length. ``identifiers``, if given, are the only ID codes accepted (stripped: ``N``,
    ``G#``); a blank ID code is refused (every one the manuals list has characters, so a
    blank one was lost in transit). ``plus_sign`` is what the balance writes in
    position 1 for a positive weight (``+``, or a space where its display shows no plus):
    the other is refused, so a minus lost in transit does not make a positive weight.
    Raises :class:`~drivers.base.FrameError`.
    """
    allowed = lengths(frame_format)
    if len(frame) not in allowed:
        want = " or ".join(str(n + 2) for n in allowed)
        raise FrameError(f"expected {want} characters with CR LF, got {len(frame) + 2}", frame)
    if not printable(frame):
        raise FrameError("not printable ASCII", frame)
    identifier: str | None = None
    data = frame
    if len(frame) > DATA_LENGTH:
        field, data = frame[:IDENTIFIER_LENGTH], frame[IDENTIFIER_LENGTH:]
        identifier = _identifier(field, identifiers, frame)
    special = _special(data, frame)
    if special is not None:
        # "Stat" names a status string, not a value: the reading keeps the device's channel
        return SbiFrame(None if identifier == "Stat" else identifier, None, None, ReadingStatus.ERROR, special)
    if identifier == "Stat":
        raise FrameError("ID code Stat with a weight", frame)
    sign, gap1, weight, gap2, unit_field = data[0:1], data[1:2], data[2:10], data[10:11], data[11:]
    if sign not in (b"-", plus_sign.encode()):
        raise FrameError(f"position 1 (sign) is {sign!r}, not {plus_sign!r} or '-'", frame)
    if gap1 != b" " or gap2 != b" ":
        raise FrameError("positions 2 and 11 must be spaces", frame)
    number = right_aligned_number(weight, "weight (positions 3-10)", frame, sign_inside=False)
    value = number.copy_negate() if sign == b"-" else number  # keeps -0.00 as shown
    unit = unit_field.rstrip(b" ").decode("ascii")
    if not unit:
        return SbiFrame(identifier, value, None, ReadingStatus.UNSTABLE)
    if unit_field[:1] == b" " or unit not in UNITS:
        raise FrameError(f"unit symbol {unit_field.decode()!r} is not one of the manual's, left-aligned", frame)
    return SbiFrame(identifier, value, unit, ReadingStatus.OK)


def _identifier(field: bytes, identifiers: Collection[str], frame: bytes) -> str:
    text = field.rstrip(b" ").decode("ascii")
    if not text:
        # every ID code the manuals list has characters; a blank one is a lost one
        raise FrameError("ID code is blank", frame)
    if field[:1] == b" ":
        raise FrameError("ID code is not left-aligned", frame)
    if identifiers and text not in identifiers and text != "Stat":
        raise FrameError(f"ID code {text!r} is not one of the configured {sorted(identifiers)}", frame)
    return text


def _special(data: bytes, frame: bytes) -> str | None:
    """The error description of a special or error code frame, None for a value frame."""
    words = data.split()
    if not words or data[:1] in (b"+", b"-"):
        return None
    text = b" ".join(words)
    if len(words) == 1 and text.decode() in SPECIAL_CODES:
        return f"{text.decode()} ({SPECIAL_CODES[text.decode()]})"
    m = _ERROR.fullmatch(text)
    if m is not None:
        return f"{m.group(1).decode()} {m.group(2).decode()} (balance error)"
    return None


def command(letter: str, suffix: bytes = b"") -> bytes:
    """The bytes of one SBI command: ESC and a letter (``command("P")`` is ``b"\\x1bP"``)."""
    if len(letter) != 1 or not letter.isascii():
        raise ValueError(f"an SBI command is one letter, got {letter!r}")
    return ESC + letter.encode("ascii") + suffix
