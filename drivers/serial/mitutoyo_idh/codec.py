"""The ID-H digimatic indicator's RS-232C command set, as Mitutoyo documents it.

Source: Mitutoyo ID-H0530/0560 Digimatic Indicator User's Manual No. 99MAH016B, §4.2.4
"Communication command (I/O format)". Every command and every reply is one line ended by
CR LF; ``**`` is the indicator's ID No., two digits 00-99 (§3.2 sets it). The rows used here:

=============================  ====================  ==================================
operation                      host -> indicator     indicator -> host
=============================  ====================  ==================================
data output                    ``GA**``              ``GN**,+0016.2345`` (normal),
                                                     ``GX**,...`` (max), ``GM**,...``
                                                     (min), ``GW**,...`` (TIR, run-out)
measurement mode switching     ``CN**`` ``CX**``     ``CH**``
                               ``CM**`` ``CW**``
zero-setting                   ``CR**``              ``CH**`` (``DH**,PRESET``, see note)
peak hold cancel (start)       ``CL**``              ``CH**``
tolerance judgement result     ``DJ**,OUT``          ``DH**,OK`` / ``DH**,+NG`` /
                                                     ``DH**,-NG``; ``DH**,JOFF`` when
                                                     judgement is cancelled
=============================  ====================  ==================================

So the data reply's header names the measurement mode the indicator is in; the mode is
changed with ``CN``/``CX``/``CM``/``CW``, never by the data command. The other replies of
the table (``DH**`` acknowledging D-commands, ``DH**,+0016.2345`` the preset value,
``DG**``/``DD**`` the judgement limits, ``DH**,F-LOCK``/``F-FREE``) are recognised, so that
they are not mistaken for noise, and carry no reading.

The manual's value example ``+0016.2345`` is the only width shown: a sign and nine
characters with one decimal point. The width is a setting (``value_width``) because other
resolutions and the inch display are not shown; a reply of another width is a bad frame.
What ``DH**,PRESET`` answering ``CR**`` means is in a note of §4.2.4 not at hand: it is
treated as the zero command's answer and reported, never as a reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from drivers.base import FrameError
from drivers.serial.frames import printable

TERMINATOR: Final = b"\r\n"
#: measurement mode -> (mode switching command, data reply header)
MODES: Final[dict[str, tuple[str, str]]] = {
    "current": ("CN", "GN"),
    "max": ("CX", "GX"),
    "min": ("CM", "GM"),
    "runout": ("CW", "GW"),
}
VALUE_HEADERS: Final = ("GN", "GX", "GM", "GW")
JUDGEMENTS: Final = ("OK", "+NG", "-NG", "JOFF")
DEFAULT_WIDTH: Final = 9  # characters after the sign in the manual's example: 0016.2345

ReplyKind = Literal["value", "ack", "judgement", "notice", "setting"]

_ID = rb"([0-9]{2})"
_VALUE = re.compile(rb"(G[NXMW])" + _ID + rb",([+-])([0-9.]+)")
_ACK = re.compile(rb"(CH|DH)" + _ID)
_DH_TEXT = re.compile(rb"DH" + _ID + rb",(OK|\+NG|-NG|JOFF|PRESET|F-LOCK|F-FREE)")
_SETTING = re.compile(rb"(DH|DG|DD)" + _ID + rb",([+-])([0-9.]+)")
_CLAIM = re.compile(rb"(G[NXMW]|CH|DH|DG|DD)" + _ID + rb"(?:,.*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class IdhReply:
    """One reply line.

    ``kind``: ``value`` (``header`` GN/GX/GM/GW, ``value`` set), ``ack`` (``CH`` or bare
    ``DH``), ``judgement`` (``text`` OK, +NG, -NG or JOFF), ``notice`` (``text`` PRESET,
    F-LOCK, F-FREE) or ``setting`` (a preset value or judgement limit, ``value`` set).
    """

    kind: ReplyKind
    header: str
    device_id: int
    value: Decimal | None = None
    text: str | None = None


def command(code: str, device_id: int, argument: str | None = None) -> bytes:
    """The bytes of one command: ``command("GA", 1)`` is ``b"GA01\\r\\n"``."""
    if not (len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()):
        raise ValueError(f"command code must be two capital letters, got {code!r}")
    if not 0 <= device_id <= 99:
        raise ValueError(f"ID No. must be 00..99, got {device_id}")
    tail = "" if argument is None else f",{argument}"
    return f"{code}{device_id:02d}{tail}".encode("ascii") + TERMINATOR


def _number(sign: bytes, digits: bytes, width: int, line: bytes) -> Decimal:
    if len(digits) != width:
        raise FrameError(f"value is {len(digits)} characters after the sign, expected {width}", line)
    if digits.count(b".") != 1 or digits.startswith(b".") or digits.endswith(b"."):
        raise FrameError("value needs one decimal point with digits on both sides", line)
    return Decimal((sign + digits).decode("ascii"))


def parse_reply(line: bytes, width: int = DEFAULT_WIDTH) -> IdhReply:
    """Parse one reply line, its CR LF already cut off. Nothing is stripped or tolerated.

    The value keeps the indicator's resolution: ``GN01,+0016.2340`` gives
    ``Decimal("16.2340")``. The ID No. is returned, not checked. Raises
    :class:`~drivers.base.FrameError` for anything that is not a row of §4.2.4.
    """
    if not line:
        raise FrameError("empty line", line)
    if not printable(line):
        raise FrameError("non-printable or non-ASCII bytes", line)
    if m := _VALUE.fullmatch(line):
        value = _number(m.group(3), m.group(4), width, line)
        return IdhReply("value", m.group(1).decode(), int(m.group(2)), value=value)
    if m := _ACK.fullmatch(line):
        return IdhReply("ack", m.group(1).decode(), int(m.group(2)))
    if m := _DH_TEXT.fullmatch(line):
        text = m.group(2).decode()
        return IdhReply("judgement" if text in JUDGEMENTS else "notice", "DH", int(m.group(1)), text=text)
    if m := _SETTING.fullmatch(line):
        value = _number(m.group(3), m.group(4), width, line)
        return IdhReply("setting", m.group(1).decode(), int(m.group(2)), value=value)
    if line[:2] in (b"GN", b"GX", b"GM", b"GW"):
        raise FrameError(f"{line[:2].decode()} reply is not '{line[:2].decode()}<ID>,<sign><value>'", line)
    if line[:2] == b"DH":
        raise FrameError("DH reply is none of those of §4.2.4", line)
    raise FrameError("unknown reply", line)


def claimed_id(line: bytes) -> int | None:
    """The ID No. a line claims to come from, if it starts like a reply at all."""
    m = _CLAIM.fullmatch(line)
    return int(m.group(2)) if m else None
