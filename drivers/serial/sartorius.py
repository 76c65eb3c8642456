"""Sartorius balances speaking SBI (Sartorius Balance Interface).

Commands are ESC plus one letter: ``ESC P`` print (send the displayed value), ``ESC T``
tare and zero (the tare key), ``ESC U`` tare, ``ESC V`` zero, ``ESC Z`` internal
calibration. Only ``ESC P`` is answered; the others change the balance and say nothing.

A value frame is 16 characters: sign (``+``, ``-`` or space), space, eight characters of
value (right-aligned, decimal point included), space, three characters of unit, CR LF::

    +    12.34 g  \\r\\n

The 22-character frame puts a six-character identifier in front (``N     `` net,
``G     `` gross, ``T     `` tare, ...); its stripped text becomes the reading's channel.
A 16-character frame (or a blank identifier) gets the configured ``channel``.

* A blank unit field means the balance has not settled: the reading is UNSTABLE, with
  its value and without unit.
* Special texts replace the value: ``High`` / ``H`` (overload), ``Low`` / ``L``
  (underload), ``HH`` / ``LL`` (checkweighing limits), ``Err ###``, ``Stat``,
  ``Stat ERR ###``, ``C`` (calibrating). They become ERROR readings, value None, the text
  and its meaning as error, never a number. The one-letter forms come from older manuals
  (unverified on current models); accepting them costs nothing and a number is never made
  of them.
* Anything else (wrong length, garbled characters) is a ``BAD_FRAME`` event.

Serial settings differ by model and by menu setting (9600 7O1 and 19200 8N1 are both seen),
so every one of them is configurable; the default is 9600 7O1.

In ``mode: request`` the driver sends ``ESC P`` every ``poll_interval`` seconds and reports
unanswered requests as ``TIMEOUT`` events; in ``mode: push`` the balance prints by itself
(auto print, or the operator's print key) and the driver only listens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from drivers import registry
from drivers.base import DriverConfig, DriverError, FrameError, Reading, ReadingStatus
from drivers.serial.port import Requester, SerialDriverConfig, SerialLineDriver

ESC = b"\x1b"
#: request name -> SBI command letter; only "read" is answered by the balance
COMMANDS: dict[str, bytes] = {
    "read": b"P",
    "tare": b"U",
    "zero": b"V",
    "tare_zero": b"T",  # the tare key: older models know only this one
    "calibrate": b"Z",
}
DEFAULT_POLL_INTERVAL = 1.0
IDENTIFIER_LENGTH = 6
DATA_LENGTH = 14  # a 16-character frame without its CR LF

FrameFormat = Literal["auto", "16", "22"]

_VALUE = re.compile(r" *([0-9]+(?:\.[0-9]+)?)", re.ASCII)
_SPECIALS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"High|H"), "overload"),
    (re.compile(r"Low|L"), "underload"),
    (re.compile(r"HH"), "overload, checkweighing limit"),
    (re.compile(r"LL"), "underload, checkweighing limit"),
    (re.compile(r"Err *[0-9]{1,3}"), "balance error"),
    (re.compile(r"Stat +ERR *[0-9]{1,3}"), "balance status error"),
    (re.compile(r"Stat"), "balance not ready"),
    (re.compile(r"C"), "calibration running"),
]


@dataclass(frozen=True, slots=True)
class SbiFrame:
    """One parsed frame. ``identifier`` is None for a 16-character frame or a blank identifier."""

    identifier: str | None
    value: Decimal | None
    unit: str | None
    status: ReadingStatus
    error: str | None = None


def special_text(text: str) -> str | None:
    """The error description of a special text (``"High"`` -> ``"High (overload)"``), else None."""
    shown = text.strip(" ")
    for pattern, meaning in _SPECIALS:
        if pattern.fullmatch(shown):
            return f"{' '.join(shown.split())} ({meaning})"
    return None


def parse_frame(frame: bytes, frame_format: FrameFormat = "auto") -> SbiFrame:
    """Parse one frame without its CR LF.

    ``frame_format`` "16" or "22" accepts only that length; "auto" tells them apart by
    length. Raises :class:`~drivers.base.FrameError` for anything that is not a frame.
    """
    n = len(frame)
    lengths: dict[str, tuple[int, ...]] = {
        "auto": (DATA_LENGTH, DATA_LENGTH + IDENTIFIER_LENGTH),
        "16": (DATA_LENGTH,),
        "22": (DATA_LENGTH + IDENTIFIER_LENGTH,),
    }
    allowed = lengths[frame_format]
    if n not in allowed:
        want = " or ".join(str(a + 2) for a in allowed)
        raise FrameError(f"expected {want} characters with CR LF, got {n + 2}", frame)
    if not all(0x20 <= b < 0x7F for b in frame):
        raise FrameError("not printable ASCII", frame)
    text = frame.decode("ascii")
    identifier: str | None = None
    data = text
    if n > DATA_LENGTH:
        identifier = text[:IDENTIFIER_LENGTH].strip(" ") or None
        data = text[IDENTIFIER_LENGTH:]
        # a special text may run over the identifier's columns
        whole = special_text(text)
        if whole is not None:
            return SbiFrame(None, None, None, ReadingStatus.ERROR, whole)
    error = special_text(data)
    if error is None and data[0] in "+- " and data[1] == " " and data[10] == " ":
        # a special text in the value columns, with a sign or unit left standing around it
        error = special_text(data[2:10])
    if error is not None:
        return SbiFrame(identifier, None, None, ReadingStatus.ERROR, error)
    sign, gap1, field, gap2, unit_field = data[0], data[1], data[2:10], data[10], data[11:]
    if sign not in "+- ":
        raise FrameError(f"bad sign {sign!r}", frame)
    if gap1 != " " or gap2 != " ":
        raise FrameError("expected a space on each side of the value", frame)
    m = _VALUE.fullmatch(field)
    if m is None:
        raise FrameError("value is not a decimal number", frame)
    unit = unit_field.strip(" ")
    if " " in unit:
        raise FrameError(f"bad unit field {unit_field!r}", frame)
    value = Decimal(("-" if sign == "-" else "") + m.group(1))
    if not unit:
        return SbiFrame(identifier, value, None, ReadingStatus.UNSTABLE)
    return SbiFrame(identifier, value, unit, ReadingStatus.OK)


def _frame_format(value: Any) -> Any:
    # YAML reads `frame: 16` as an int
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SartoriusConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O", "M", "S"] = "O"
    #: 16 (no identifier), 22 (six-character identifier first), or auto (by length)
    frame: Annotated[FrameFormat, BeforeValidator(_frame_format)] = "auto"
    mode: Literal["request", "push"] = "request"
    #: request mode: seconds between ESC P (default 1 s); push mode must leave it out
    poll_interval: float | None = Field(default=None, gt=0)
    #: an ESC P not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: some models want CR LF after each ESC command
    command_suffix: Literal["", "\r\n"] = ""
    #: channel of readings without identifier
    channel: str = Field(default="weight", min_length=1)
    #: a longer line without CR LF is garbage (wrong baud rate or parity)
    max_frame_length: int = Field(default=64, ge=22, le=4096)

    def _check(self) -> None:
        if self.mode == "push" and self.poll_interval is not None:
            raise ValueError("poll_interval is for mode: request; in push mode the balance prints by itself")
        super()._check()


@registry.register
class SartoriusDriver(SerialLineDriver[SartoriusConfig]):
    name = "sartorius-sbi"
    config_model = SartoriusConfig
    terminator = b"\r\n"
    requester: Requester  # always: also in push mode an on-demand request("read") is awaited

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        polling = self.cfg.mode == "request"
        self.requester = self._make_requester(
            response_timeout=self.cfg.response_timeout,
            poll=self.command("read") if polling else None,
            poll_interval=(self.cfg.poll_interval or DEFAULT_POLL_INTERVAL) if polling else None,
        )

    def command(self, name: str) -> bytes:
        """The bytes sent for a request name (see :data:`COMMANDS`)."""
        return ESC + COMMANDS[name] + self.cfg.command_suffix.encode("ascii")

    # -- Driver -----------------------------------------------------------------------------

    def request(self, command: str, **kwargs: Any) -> None:
        """``read`` (ESC P, answer awaited), ``tare`` (ESC U), ``zero`` (ESC V),
        ``tare_zero`` (ESC T) or ``calibrate`` (ESC Z).

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        if command not in COMMANDS:
            raise DriverError(f"driver 'sartorius-sbi' does not support request {command!r}")
        self.requester.send(self.command(command), expect_answer=command == "read")

    # -- internals ---------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        self._request_answered()
        try:
            parsed = parse_frame(frame, self.cfg.frame)
        except FrameError as exc:
            self._bad_frame(exc.reason, raw, timestamp_ns)
            return
        self.emit(
            Reading(
                device=self.device_id,
                channel=parsed.identifier or self.cfg.channel,
                value=parsed.value,
                unit=parsed.unit,
                raw=raw,
                timestamp_ns=timestamp_ns,
                status=parsed.status,
                error=parsed.error,
            )
        )
