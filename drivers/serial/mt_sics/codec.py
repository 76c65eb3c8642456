"""MT-SICS replies, as Mettler Toledo documents them.

Source: Mettler Toledo, MT-SICS Interface Command Reference Manual (No. 11780711), chapter
"Command formats": "Response formats" (format of responses with and without a weight
value), "Error messages" (command-specific and general), and the command descriptions of
``@``, ``I1``-``I4``, ``S``, ``SI``, ``SIR``, ``T``, ``TA``, ``TAC``, ``TI``, ``Z`` and ``ZI``.

* Every reply is one line ended by CR LF.
* A reply with a weight value is ``ID`` space ``Status`` space ``WeightValue`` space
  ``Unit``. ``WeightValue`` is ten characters, right-aligned, the sign directly in front of
  the first digit, leading zeros not shown except the zero before the decimal point::

      S S      100.00 g         stable weight     S D      100.02 g     dynamic weight

* A reply without one is ``ID`` space ``Status`` (``Z A``, ``S I``), or identification
  texts in double quotes (``I4 A "B021002593"``).
* ``S I`` / ``S L`` / ``S +`` / ``S -`` (and the same statuses of the other commands) are
  command-specific errors; ``ES``, ``ET`` and ``EL`` the general ones.

``S``, ``SI`` and ``SIR`` are all answered by ``S ...``, ``@`` (reset) by ``I4 A "<serial
number>"``. A line of any other shape, width or spacing raises :class:`FrameError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from drivers.base import FrameError
from drivers.serial.frames import printable, right_aligned_number

TERMINATOR: Final = b"\r\n"
WEIGHT_WIDTH: Final = 10

#: command sent -> identifier of the reply that answers it
REPLY_ID: Final[dict[str, str]] = {
    "S": "S",
    "SI": "S",
    "SIR": "S",
    "Z": "Z",
    "ZI": "ZI",
    "T": "T",
    "TI": "TI",
    "TA": "TA",
    "TAC": "TAC",
    "@": "I4",
    "I1": "I1",
    "I2": "I2",
    "I3": "I3",
    "I4": "I4",
}

GENERAL_ERRORS: Final[dict[str, str]] = {
    "ES": "syntax error (command not recognised)",
    "ET": "transmission error (parity, framing or buffer overflow)",
    "EL": "logical error (command cannot be executed)",
}

#: statuses after which a weight value and a unit follow
_WEIGHT_STATUS: Final[dict[str, str]] = {"S": "SD", "T": "S", "TI": "SD", "TA": "A"}
#: statuses that stand alone
_PLAIN_STATUS: Final[dict[str, str]] = {
    "S": "IL+-",
    "Z": "AI+-",
    "ZI": "SDI+-",
    "T": "IL+-",
    "TI": "IL+-",
    "TA": "IL",
    "TAC": "AIL",
    "I1": "IL",
    "I2": "IL",
    "I3": "IL",
    "I4": "IL",
}
INFO_IDS: Final = frozenset({"I1", "I2", "I3", "I4"})
ERROR_STATUS: Final = frozenset("IL+-")

_HEAD = re.compile(rb"([A-Z][A-Z0-9]{0,3}) ([SDAIL+-])(?: (.*))?", re.DOTALL)
_UNIT = re.compile(rb"[A-Za-z%][A-Za-z0-9%/]{0,4}")
_QUOTED = re.compile(rb'"[^"]*"(?: "[^"]*")*')


@dataclass(frozen=True, slots=True)
class Reply:
    """One parsed MT-SICS reply line.

    ``command`` is the reply identifier (``S`` for S/SI/SIR, ``I4`` for ``@``) or one of
    ``ES``/``ET``/``EL``; ``status`` is the one-character status (empty for the general
    errors); ``value`` and ``unit`` are set for weight replies only, ``texts`` for
    identification replies only.
    """

    command: str
    status: str
    value: Decimal | None = None
    unit: str | None = None
    texts: tuple[str, ...] = ()

    @property
    def error(self) -> str | None:
        """What the balance reported, for an error reply; None otherwise."""
        if self.command in GENERAL_ERRORS:
            return f"{self.command}: {GENERAL_ERRORS[self.command]}"
        if self.status not in ERROR_STATUS:
            return None
        return f"{self.command} {self.status}: {_describe(self.command, self.status)}"

    @property
    def stable(self) -> bool:
        """False only for a dynamic (``D``) reply."""
        return self.status != "D"


def _describe(command: str, status: str) -> str:
    if status == "I":
        return "not executable now (balance busy, or no stable weight in time)"
    if status == "L":
        return "logical error (command or parameter not allowed)"
    if command == "S":
        return "overload" if status == "+" else "underload"
    what = "zero setting" if command in ("Z", "ZI") else "taring"
    return f"{'above' if status == '+' else 'below'} the {what} range"


def parse_reply(line: bytes) -> Reply:
    """Parse one reply line, its CR LF already cut off. Nothing is stripped or tolerated.

    The value keeps the balance's resolution: ``S S      100.00 g`` gives
    ``Decimal("100.00")``. Raises :class:`~drivers.base.FrameError` for anything that is
    not a documented reply in the documented layout.
    """
    if not line:
        raise FrameError("empty line", line)
    if not printable(line):
        raise FrameError("non-printable or non-ASCII bytes", line)
    text = line.decode("ascii")
    if text in GENERAL_ERRORS:
        return Reply(text, "")
    head = _HEAD.fullmatch(line)
    if head is None:
        raise FrameError("not '<ID> <status> ...'", line)
    command, status, rest = head.group(1).decode(), head.group(2).decode(), head.group(3)
    if command not in _PLAIN_STATUS:
        raise FrameError(f"unknown reply {command!r}", line)
    if status in _WEIGHT_STATUS.get(command, ""):
        value, unit = _weight(rest, line)
        return Reply(command, status, value, unit)
    if command in INFO_IDS and status == "A":
        if rest is None or not _QUOTED.fullmatch(rest):
            raise FrameError(f"{command} A without quoted text", line)
        return Reply(command, status, texts=tuple(t.decode() for t in re.findall(rb'"([^"]*)"', rest)))
    if status in _PLAIN_STATUS[command]:
        if rest is not None:
            raise FrameError(f"unexpected text after '{command} {status}'", line)
        return Reply(command, status)
    raise FrameError(f"status {status!r} is not a reply to {command}", line)


def _weight(rest: bytes | None, line: bytes) -> tuple[Decimal, str]:
    """``WeightValue`` (ten characters, right-aligned) space ``Unit``."""
    if rest is None or len(rest) < WEIGHT_WIDTH + 2:
        raise FrameError("weight reply shorter than its ten-character weight field and unit", line)
    field, gap, unit = rest[:WEIGHT_WIDTH], rest[WEIGHT_WIDTH : WEIGHT_WIDTH + 1], rest[WEIGHT_WIDTH + 1 :]
    if gap != b" ":
        raise FrameError("weight field is not ten characters followed by a space", line)
    if _UNIT.fullmatch(unit) is None:
        raise FrameError(f"bad unit {unit.decode()!r}", line)
    return right_aligned_number(field, "weight field", line), unit.decode()


def command(name: str, argument: str | None = None) -> bytes:
    """The bytes of one command: ``command("SI")`` is ``b"SI\\r\\n"``."""
    text = name if argument is None else f"{name} {argument}"
    return text.encode("ascii") + TERMINATOR
