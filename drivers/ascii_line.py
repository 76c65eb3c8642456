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

:class:`Requester` (the poll loop with response timeouts) is shared with the Sartorius
driver.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from drivers import registry
from drivers.base import (
    DeviceEvent,
    Driver,
    DriverConfig,
    DriverError,
    EventKind,
    FrameError,
    Reading,
    ReadingStatus,
    Sink,
)
from drivers.serialport import Backoff, LinkDown, SerialLink, SerialSettings, StopBits

log = logging.getLogger(__name__)

#: groups the driver understands; any other named group is a typo worth failing on
PATTERN_GROUPS = frozenset({"value", "unit", "channel", "stable", "unstable"})

#: a signed decimal with an optional unit of letters (and %, µ, °)
DEFAULT_PATTERN = r"(?P<value>[+-]?\s*\d+(?:[.,]\d+)?)\s*(?P<unit>[A-Za-z%µ°]+)?"

_NUMBER = re.compile(r"([+-]?) *(\d+(?:\.\d*)?|\.\d+)", re.ASCII)

TerminatorText = Literal["\r", "\n", "\r\n"]


# -- requests and timeouts (shared with drivers.sartorius) --------------------------------------


class Requester:
    """Writes requests to a :class:`SerialLink` and reports the ones nobody answered.

    One thread, started by :meth:`start`, sends ``poll`` every ``poll_interval`` seconds
    (when both are given) and watches the deadline of the oldest unanswered request. The
    driver calls :meth:`answered` for every frame it receives (any answer, even a bad one,
    shows the device heard) and :meth:`cancel` when the link drops (the outage is already
    reported; a timeout on top of it would be noise).
    """

    def __init__(
        self,
        link: SerialLink,
        name: str,
        *,
        response_timeout: float,
        on_timeout: Callable[[str], None],
        poll: bytes | None = None,
        poll_interval: float | None = None,
    ) -> None:
        if (poll is None) != (poll_interval is None):
            raise ValueError("poll and poll_interval go together")
        self.link = link
        self.name = name
        self.response_timeout = response_timeout
        self._on_timeout = on_timeout
        self._poll = poll
        self._interval = poll_interval
        self._cond = threading.Condition()
        self._deadline: float | None = None  # monotonic deadline of the oldest unanswered request
        self._timeouts_in_row = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name}: requester already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"requester:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            self._deadline = None

    def send(self, data: bytes, *, expect_answer: bool = True) -> None:
        """Write ``data``; with ``expect_answer`` a missing answer becomes a timeout.

        Raises :class:`~drivers.serialport.LinkDown` when the port is not connected.
        """
        armed = False
        if expect_answer:
            # armed before writing: the answer can be parsed before write() even returns
            with self._cond:
                armed = self._deadline is None
                if armed:
                    self._deadline = time.monotonic() + self.response_timeout
                self._cond.notify_all()
        try:
            self.link.write(data)
        except LinkDown:
            if armed:
                with self._cond:
                    self._deadline = None
            raise

    def answered(self) -> None:
        with self._cond:
            self._deadline = None
            silent_for, self._timeouts_in_row = self._timeouts_in_row, 0
        if silent_for:
            log.info("%s: answering again after %d timeouts", self.name, silent_for)

    def cancel(self) -> None:
        with self._cond:
            self._deadline = None

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a device fault: say so, but never kill the gateway
            log.exception("%s: requester crashed", self.name)

    def _loop(self) -> None:
        interval = self._interval
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            if next_poll is not None and interval is not None and now >= next_poll:
                # skip missed slots instead of bursting after a stall
                next_poll += (int((now - next_poll) // interval) + 1) * interval
                if self.link.connected and self._poll is not None:
                    try:
                        self.send(self._poll)
                    except LinkDown as exc:
                        log.debug("%s: poll skipped: %s", self.name, exc)
            timed_out = first = False
            with self._cond:
                deadline = self._deadline
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._deadline = None
                    self._timeouts_in_row += 1
                    timed_out = True
                    first = self._timeouts_in_row == 1
                elif not self._stop.is_set():
                    wake = [t for t in (deadline, next_poll) if t is not None]
                    self._cond.wait(min(wake) - now if wake else None)
            if timed_out:
                detail = f"no answer within {self.response_timeout:g} s"
                # every timeout is an event; only the first of a silence is worth a warning line
                log.log(logging.WARNING if first else logging.DEBUG, "%s: timeout: %s", self.name, detail)
                self._on_timeout(detail)


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


class AsciiLineConfig(DriverConfig):
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: StopBits = 1
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
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=10.0, gt=0)
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

    @model_validator(mode="after")
    def _consistent(self) -> AsciiLineConfig:
        if self.poll_interval is not None and self.request is None:
            raise ValueError("poll_interval needs a request string")
        if self.stable_when is not None and "stable" not in re.compile(self.pattern).groupindex:
            raise ValueError("stable_when needs a named group 'stable' in pattern")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be smaller than reconnect_min")
        return self


# -- driver ---------------------------------------------------------------------------------------


@registry.register
class AsciiLineDriver(Driver):
    name = "ascii"
    config_model = AsciiLineConfig

    def __init__(self, config: DriverConfig) -> None:
        if not isinstance(config, AsciiLineConfig):
            raise TypeError(f"{type(self).__name__} needs an AsciiLineConfig, got {type(config).__name__}")
        super().__init__(config)
        self.cfg = config
        self.format = LineFormat.from_config(config)
        self._request_bytes = config.request.encode("ascii") if config.request is not None else None
        self.link = SerialLink(
            SerialSettings(
                port=config.port,
                baudrate=config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
            ),
            self._on_frame,
            self._on_link_event,
            terminator=_TERMINATORS[config.terminator],
            max_frame_length=config.max_frame_length,
            backoff=Backoff(min_delay=config.reconnect_min, max_delay=config.reconnect_max),
            name=config.id,
        )
        poll = self._request_bytes if config.poll_interval is not None else None
        self.requester = Requester(
            self.link,
            config.id,
            response_timeout=config.response_timeout,
            on_timeout=self._on_timeout,
            poll=poll,
            poll_interval=config.poll_interval,
        )

    # -- Driver -----------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        if self.link.running:
            raise DriverError(f"{self.device_id}: already started")
        for what, text in [("request", self.cfg.request), *self.cfg.commands.items()]:
            if text is not None and "\\" in text:
                log.warning(
                    "%s: %s %r contains a backslash; escapes are not decoded (quote it in YAML)",
                    self.device_id,
                    what,
                    text,
                )
        self._sink = sink
        self._stop.clear()
        self.link.start()
        # commands can be sent without a request string, but only requests are awaited
        if self._request_bytes is not None:
            self.requester.start()

    def stop(self) -> None:
        self._stop.set()
        self.requester.stop()
        self.link.stop()

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` sends the request string and awaits the answer; any other
        name sends the configured command of that name without awaiting anything.

        Raises :class:`~drivers.serialport.LinkDown` when the port is not connected.
        """
        if command == "read":
            if self._request_bytes is None:
                raise DriverError(f"{self.device_id}: no request string configured")
            self.requester.send(self._request_bytes)
            return
        text = self.cfg.commands.get(command)
        if text is None:
            known = ", ".join(["read", *sorted(self.cfg.commands)])
            raise DriverError(f"{self.device_id}: unknown request {command!r} (configured: {known})")
        self.requester.send(text.encode("ascii"), expect_answer=False)

    # -- byte stream (also used by golden tests) ----------------------------------------------

    def feed(self, data: bytes, timestamp_ns: int | None = None) -> None:
        self.link.feed(data, timestamp_ns)

    def end_of_stream(self, timestamp_ns: int | None = None) -> None:
        self.link.end_of_stream(timestamp_ns)

    # -- internals ---------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        try:
            parsed = parse_line(frame, self.format)
        except FrameError as exc:
            self.requester.answered()  # a garbled answer is still an answer: the device heard
            log.warning("%s: bad frame: %s: %r", self.device_id, exc.reason, raw)
            self.emit(DeviceEvent(self.device_id, EventKind.BAD_FRAME, exc.reason, raw, timestamp_ns))
            return
        if parsed is None:
            # an acknowledgement answers a command (Ohaus OK! to Z), not the pending read
            log.debug("%s: ignored %r", self.device_id, raw)
            return
        self.requester.answered()
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

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        if kind is EventKind.DISCONNECTED:
            self.requester.cancel()
        self.emit(DeviceEvent(self.device_id, kind, detail, raw, timestamp_ns))

    def _on_timeout(self, detail: str) -> None:
        self.emit(DeviceEvent(self.device_id, EventKind.TIMEOUT, detail))


_TERMINATORS: dict[str, Literal[b"\r", b"\r\n", b"\n"]] = {"\r": b"\r", "\n": b"\n", "\r\n": b"\r\n"}
