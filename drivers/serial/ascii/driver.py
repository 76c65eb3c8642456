"""The ``ascii`` driver: line-based ASCII instruments (Ohaus balances, Sylvac gauges and cousins).

Many instruments speak the same shape of protocol: optionally send a request string, get
one line of text back (or get lines pushed at the operator's key press), read a number in
it. This driver is configured instead of programmed (the line rules are in :mod:`.codec`):

* ``pattern`` (required) is a Python regular expression matched against the whole line as
  received, terminator cut off and nothing stripped. It must have a named group ``value``;
  it may have ``unit``, ``channel``, and one of ``stable`` / ``unstable``. Write the
  instrument's layout into it: field widths, sign position, the number of decimals, the
  unit, the stability marker, so that a line that lost or gained a character in transit
  does not match (the samples beside this module show how, citing their manuals).
* Stability (``stable_when``):

  - pattern with an ``unstable`` group: the reading is UNSTABLE when that group matched
    something (non-empty), OK otherwise. Ohaus: ``(?P<unstable>\\?)?`` for the ``?``.
  - pattern with a ``stable`` group and no ``stable_when``: OK when the group matched
    something, UNSTABLE when it did not take part or matched nothing.
  - pattern with a ``stable`` group and ``stable_when: S``: OK exactly when the group's
    text (stripped) equals ``S``, UNSTABLE for any other text.
  - neither group: the instrument says nothing about stability; every value is OK.

* ``error_pattern`` (checked first): a matching line is an ERROR reading, value None, the
  line as error text. ``ignore_pattern`` (checked last): acknowledgements such as Ohaus's
  ``OK!`` that are neither values nor faults. A line matching none of the three patterns is
  a ``BAD_FRAME`` event, never a value. Bytes no instrument prints (controls, 8-bit) before
  a line that matches are reported as a bad frame and the line is read; no other repair is
  tried, since a user pattern cannot tell a damaged line from a whole one.

Requests and commands must be ASCII; requests are awaited by
:class:`~drivers.serial.port.Requester` (the poll loop with response timeouts).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers import registry
from drivers.base import DriverConfig, DriverError, Reading
from drivers.serial.ascii.codec import LineFormat, ParsedLine, compile_pattern, parse_line
from drivers.serial.frames import after_noise
from drivers.serial.port import TERMINATORS, SerialDriverConfig, SerialLineDriver, Terminator, TerminatorText

log = logging.getLogger(__name__)

#: groups the driver understands; any other named group is a typo worth failing on
PATTERN_GROUPS = frozenset({"value", "unit", "channel", "stable", "unstable"})


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
    #: the whole line, as a regular expression with a named group "value" (required)
    pattern: str
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
        cfg = self.cfg
        self.format = LineFormat(
            pattern=re.compile(cfg.pattern),
            unit=cfg.unit,
            channel=cfg.channel,
            stable_when=cfg.stable_when,
            error_pattern=re.compile(cfg.error_pattern) if cfg.error_pattern is not None else None,
            ignore_pattern=re.compile(cfg.ignore_pattern) if cfg.ignore_pattern is not None else None,
            decimal_comma=cfg.decimal_comma,
        )
        # commands can be sent without a request string, but only requests are awaited
        self._request_bytes = self._request_string(
            self.cfg.request, poll_interval=self.cfg.poll_interval, response_timeout=self.cfg.response_timeout
        )

    def _terminator(self) -> Terminator:
        return TERMINATORS[self.cfg.terminator]

    # -- Driver -----------------------------------------------------------------------------

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        if kwargs:
            raise DriverError(f"{self.device_id}: unknown request options {sorted(kwargs)}")
        if command == "read":
            if self._request_bytes is None:
                raise DriverError(f"{self.device_id}: no request string configured")
            return self._request_bytes
        text = self.cfg.commands.get(command)
        if text is None:
            known = ", ".join(["read", *sorted(self.cfg.commands)])
            raise DriverError(f"{self.device_id}: unknown request {command!r} (configured: {known})")
        return text.encode("ascii")

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` sends the request string and awaits the answer; any other
        name sends the configured command of that name without awaiting anything.

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        data = self.command_bytes(command, **kwargs)
        if command == "read":
            assert self.requester is not None  # made with the request string
            self.requester.send(data)
        else:
            self.link.write(data)

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

    def _parse(self, line: bytes) -> ParsedLine | None:
        return parse_line(line, self.format)

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        found = self._find(frame, raw, timestamp_ns, self._parse, after_noise)
        if found is None:
            self._request_answered()  # a garbled answer is still an answer: the device heard
            return
        parsed, raw = found
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
