"""Generic line-based ASCII instruments: Ohaus balances, Sylvac gauges and their many cousins.

Many instruments speak the same shape of protocol: optionally send a request string, get
one line of text back (or get lines pushed at the operator's key press), find a number in
it. This driver is configured instead of programmed:

* ``pattern`` is a Python regular expression matched against the whole line (``fullmatch``,
  after surrounding whitespace is stripped). It must have a named group ``value``; it may
  have ``unit``, ``channel``, and one of ``stable`` / ``unstable``.
* Stability (``stable_when``):

  - pattern with an ``unstable`` group: the reading is UNSTABLE when that group matched
    something (non-empty), OK otherwise. Ohaus: ``(?P<unstable>\\?)?`` for the trailing ``?``.
  - pattern with a ``stable`` group and no ``stable_when``: OK when the group matched
    something, UNSTABLE when it did not take part or matched nothing.
  - pattern with a ``stable`` group and ``stable_when: S``: OK exactly when the group's
    text (stripped) equals ``S``, UNSTABLE for any other text (e.g. ``S S 12.3 g`` vs
    ``S D 12.3 g``).
  - neither group: the instrument says nothing about stability; every value is OK.

* ``error_pattern`` (checked first): a matching line is an ERROR reading, value None, the
  line as error text. ``ignore_pattern`` (checked last): acknowledgements such as Ohaus's
  ``OK!`` that are neither values nor faults. A line matching none of the three patterns is
  a ``BAD_FRAME`` event, never a value.
* The value group must hold a plain decimal number: optional sign, spaces allowed between
  the sign and the digits, digits with at most one decimal point. With ``decimal_comma``
  the decimal separator is a comma and a point is refused (it would be a thousands
  separator, which is never guessed at). The number keeps the instrument's digits exactly.

Lines are decoded as latin-1, so every byte is one character and units such as ``µm``
(0xB5) survive. Requests and commands must be ASCII.

Requests are awaited by :class:`~drivers.serialport.Requester` (the poll loop with response
timeouts), which the Mitutoyo and Sartorius drivers use as well.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers import registry
from drivers.base import DriverConfig, DriverError, FrameError, Reading, ReadingStatus
from drivers.serial.port import TERMINATORS, SerialDriverConfig, SerialLineDriver, Terminator, TerminatorText

log = logging.getLogger(__name__)

#: groups the driver understands; any other named group is a typo worth failing on
PATTERN_GROUPS = frozenset({"value", "unit", "channel", "stable", "unstable"})

#: a signed decimal with an optional unit of letters (and %, µ, °)
DEFAULT_PATTERN = r"(?P<value>[+-]?\s*\d+(?:[.,]\d+)?)\s*(?P<unit>[A-Za-z%µ°]+)?"

_NUMBER = re.compile(r"([+-]?) *(\d+(?:\.\d*)?|\.\d+)", re.ASCII)


# -- line parsing ---------------------------------------------------------------------------------


def parse_number(text: str, *, decimal_comma: bool = False) -> Decimal:
    """A plain decimal number as an instrument prints it: ``+12.345``, ``- 0.5``, ``12,3``.

    Raises ValueError for anything else (exponents, NaN, thousands separators, other digits).
    """
    body = text.strip(" \t")
    if decimal_comma:
        if "." in body:
            raise ValueError(f"{text!r} has a decimal point but decimal_comma is set")
        body = body.replace(",", ".")
    m = _NUMBER.fullmatch(body)
    if m is None:
        raise ValueError(f"{text!r} is not a decimal number")
    return Decimal(m.group(1) + m.group(2))


def compile_pattern(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True, slots=True)
class LineFormat:
    """How to read one line; built from the configuration by :meth:`from_config`."""

    pattern: re.Pattern[str]
    unit: str | None = None
    channel: str = "value"
    stable_when: str | None = None
    error_pattern: re.Pattern[str] | None = None
    ignore_pattern: re.Pattern[str] | None = None
    decimal_comma: bool = False

    @classmethod
    def from_config(cls, cfg: AsciiLineConfig) -> LineFormat:
        return cls(
            pattern=re.compile(cfg.pattern),
            unit=cfg.unit,
            channel=cfg.channel,
            stable_when=cfg.stable_when,
            error_pattern=re.compile(cfg.error_pattern) if cfg.error_pattern is not None else None,
            ignore_pattern=re.compile(cfg.ignore_pattern) if cfg.ignore_pattern is not None else None,
            decimal_comma=cfg.decimal_comma,
        )


@dataclass(frozen=True, slots=True)
class ParsedLine:
    channel: str
    value: Decimal | None
    unit: str | None
    status: ReadingStatus
    error: str | None = None


def parse_line(frame: bytes, fmt: LineFormat) -> ParsedLine | None:
    """Parse one line (without terminator). None means an acknowledgement to ignore.

    Raises :class:`~drivers.base.FrameError` for a line that is neither a value, nor an
    error, nor ignorable.
    """
    # ASCII whitespace only: str.strip() would also eat NBSP and the separators 0x1C-0x1F
    text = frame.decode("latin-1").strip(" \t\r\n\x0b\x0c")
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


# -- configuration --------------------------------------------------------------------------------


def _ascii_command(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if not value.isascii():
        raise ValueError(f"{what} must be ASCII")
    return value


class AsciiLineConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    #: what ends a line. "\r" also accepts CR LF (the LF is dropped); "\n" also accepts CR LF.
    terminator: TerminatorText = "\r"
    #: sent to ask for a value, taken literally: write "IP\r\n" in a double-quoted YAML string
    request: str | None = None
    #: seconds between requests; needs ``request``. Without it lines are pushed by the instrument.
    poll_interval: float | None = Field(default=None, gt=0)
    #: a request not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: other commands for ``request(name)``, e.g. {zero: "Z\r\n"}; their answers are not awaited
    commands: dict[str, str] = Field(default_factory=dict)
    pattern: str = DEFAULT_PATTERN
    #: unit of readings whose line has no (or an empty) ``unit`` group
    unit: str | None = None
    #: channel of readings whose line has no ``channel`` group
    channel: str = Field(default="value", min_length=1)
    stable_when: str | None = None
    error_pattern: str | None = None
    ignore_pattern: str | None = None
    decimal_comma: bool = False
    #: a longer line without terminator is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=128, ge=4, le=65536)

    @field_validator("pattern")
    @classmethod
    def _value_pattern(cls, value: str) -> str:
        groups = set(compile_pattern(value, "pattern").groupindex)
        if "value" not in groups:
            raise ValueError(r"pattern needs a named group 'value', e.g. (?P<value>[+-]?\d+\.\d+)")
        unknown = groups - PATTERN_GROUPS
        if unknown:
            raise ValueError(f"pattern has unknown named groups {sorted(unknown)}; allowed: {sorted(PATTERN_GROUPS)}")
        if {"stable", "unstable"} <= groups:
            raise ValueError("pattern may have a 'stable' or an 'unstable' group, not both")
        return value

    @field_validator("error_pattern", "ignore_pattern")
    @classmethod
    def _other_patterns(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value, "the pattern")
        return value

    @field_validator("request")
    @classmethod
    def _request(cls, value: str | None) -> str | None:
        return None if value is None else _ascii_command(value, "request")

    @field_validator("commands")
    @classmethod
    def _commands(cls, value: dict[str, str]) -> dict[str, str]:
        for name, command in value.items():
            if name == "read":
                raise ValueError("'read' is the request string; configure it as request")
            _ascii_command(command, f"command {name!r}")
        return value

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("unit must not be blank (leave it out instead)")
        return value

    def _check(self) -> None:
        if self.poll_interval is not None and self.request is None:
            raise ValueError("poll_interval needs a request string")
        if self.stable_when is not None and "stable" not in re.compile(self.pattern).groupindex:
            raise ValueError("stable_when needs a named group 'stable' in pattern")
        super()._check()


# -- driver ---------------------------------------------------------------------------------------


@registry.register
class AsciiLineDriver(SerialLineDriver[AsciiLineConfig]):
    name = "ascii"
    config_model = AsciiLineConfig

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        self.format = LineFormat.from_config(self.cfg)
        # commands can be sent without a request string, but only requests are awaited
        self._request_bytes = self._request_string(
            self.cfg.request, poll_interval=self.cfg.poll_interval, response_timeout=self.cfg.response_timeout
        )

    def _terminator(self) -> Terminator:
        return TERMINATORS[self.cfg.terminator]

    # -- Driver -----------------------------------------------------------------------------

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` sends the request string and awaits the answer; any other
        name sends the configured command of that name without awaiting anything.

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        if command == "read":
            if self.requester is None or self._request_bytes is None:
                raise DriverError(f"{self.device_id}: no request string configured")
            self.requester.send(self._request_bytes)
            return
        text = self.cfg.commands.get(command)
        if text is None:
            known = ", ".join(["read", *sorted(self.cfg.commands)])
            raise DriverError(f"{self.device_id}: unknown request {command!r} (configured: {known})")
        self.link.write(text.encode("ascii"))

    # -- internals ---------------------------------------------------------------------------

    def _starting(self) -> None:
        for what, text in [("request", self.cfg.request), *self.cfg.commands.items()]:
            if text is not None and "\\" in text:
                log.warning(
                    "%s: %s %r contains a backslash; escapes are not decoded (quote it in YAML)",
                    self.device_id,
                    what,
                    text,
                )

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        try:
            parsed = parse_line(frame, self.format)
        except FrameError as exc:
            self._request_answered()  # a garbled answer is still an answer: the device heard
            self._bad_frame(exc.reason, raw, timestamp_ns)
            return
        if parsed is None:
            # an acknowledgement answers a command (Ohaus OK! to Z), not the pending read
            log.debug("%s: ignored %r", self.device_id, raw)
            return
        self._request_answered()
        self.emit(
            Reading(
                device=self.device_id,
                channel=parsed.channel,
                value=parsed.value,
                unit=parsed.unit,
                raw=raw,
                timestamp_ns=timestamp_ns,
                status=parsed.status,
                error=parsed.error,
            )
        )
