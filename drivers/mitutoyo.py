"""Mitutoyo Digimatic gauges behind a USB / RS-232 interface adapter (USB-ITN, DP-1VR, U-WAVE).

Each reading is one ASCII line ``CCA±VVVVVVVV`` + CR, e.g. ``01A+0000.123``: a two-digit
channel, the letter ``A``, a sign, and eight characters of value with a floating decimal
point. The unit is not on the wire; it comes from configuration.

Readings arrive when the operator presses DATA, or, with ``request`` (and optionally
``poll_interval``) configured, when the driver asks for one. Anything that does not parse,
adapter error lines (``#...``) included, becomes a ``BAD_FRAME`` event and never a value.

Channel handling: the channel of every reading is the one in the frame. If ``channel`` is
configured, frames of any other channel are reported as bad frames: a multiplexer on the
port sending a channel nobody configured is a wiring or set-up fault worth seeing.
"""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from drivers import registry
from drivers.base import DeviceEvent, Driver, DriverConfig, DriverError, EventKind, FrameError, Reading, Sink
from drivers.serialport import Backoff, LinkDown, SerialLink, SerialSettings, StopBits

log = logging.getLogger(__name__)

FRAME_LENGTH = 12  # without the CR: the reference's "13 characters" count the terminator
_DIGITS = frozenset(b"0123456789")


def parse_frame(frame: bytes) -> tuple[str, Decimal]:
    """Parse one frame without its terminator into ``(channel, value)``.

    Surrounding ASCII whitespace is ignored; everything else must be exact. The value keeps
    the gauge's resolution: ``01A-0012.340`` gives ``Decimal("-12.340")``.
    Raises :class:`~drivers.base.FrameError` for anything that is not a reading.
    """
    body = frame.strip()
    if body.startswith(b"#"):
        raise FrameError("adapter error line", frame)
    if len(body) != FRAME_LENGTH:
        raise FrameError(f"expected {FRAME_LENGTH} characters, got {len(body)}", frame)
    channel, letter, sign, digits = body[0:2], body[2:3], body[3:4], body[4:]
    if not (channel[0] in _DIGITS and channel[1] in _DIGITS):
        raise FrameError("channel is not two digits", frame)
    if letter != b"A":
        raise FrameError(f"expected 'A' after the channel, got {letter!r}", frame)
    if sign not in (b"+", b"-"):
        raise FrameError(f"bad sign {sign!r}", frame)
    if digits.count(b".") > 1:
        raise FrameError("more than one decimal point", frame)
    if digits.startswith(b".") or digits.endswith(b"."):
        raise FrameError("decimal point without digits on both sides", frame)
    if any(b not in _DIGITS for b in digits.replace(b".", b"")):
        raise FrameError("value is not decimal digits", frame)
    return channel.decode("ascii"), Decimal((sign + digits).decode("ascii"))


class MitutoyoConfig(DriverConfig):
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: StopBits = 1
    #: the frame carries no unit
    unit: str = "mm"
    #: sent to ask the adapter for a reading, taken literally: write "1\r" in a double-quoted
    #: YAML string so that \r becomes a carriage return
    request: str | None = None
    #: seconds between requests; needs ``request``. Without it readings come from DATA presses.
    poll_interval: float | None = Field(default=None, gt=0)
    #: a request not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: accept only this channel (two digits); None accepts every channel
    channel: str | None = Field(default=None, pattern=r"^[0-9]{2}$")
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=10.0, gt=0)
    #: a line longer than this without CR is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=64, ge=FRAME_LENGTH)

    @field_validator("request")
    @classmethod
    def _ascii_request(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("request must not be empty")
            if not value.isascii():
                raise ValueError("request must be ASCII")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MitutoyoConfig:
        if self.poll_interval is not None and self.request is None:
            raise ValueError("poll_interval needs a request string")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be smaller than reconnect_min")
        return self


@registry.register
class MitutoyoDriver(Driver):
    name = "mitutoyo"
    config_model = MitutoyoConfig

    def __init__(self, config: DriverConfig) -> None:
        if not isinstance(config, MitutoyoConfig):
            raise TypeError(f"{type(self).__name__} needs a MitutoyoConfig, got {type(config).__name__}")
        super().__init__(config)
        self.cfg = config
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
            terminator=b"\r",
            max_frame_length=config.max_frame_length,
            backoff=Backoff(min_delay=config.reconnect_min, max_delay=config.reconnect_max),
            name=config.id,
        )
        # monotonic deadline of the oldest unanswered request, None when nothing is pending
        self._pending_lock = threading.Condition()
        self._answer_deadline: float | None = None
        self._timeouts_in_row = 0
        self._requester: threading.Thread | None = None

    # -- Driver -----------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        if self.link.running:
            raise DriverError(f"{self.device_id}: already started")
        if self.cfg.request is not None and "\\" in self.cfg.request:
            log.warning(
                "%s: request %r contains a backslash; escapes are not decoded (quote it in YAML)",
                self.device_id,
                self.cfg.request,
            )
        self._sink = sink
        self._stop.clear()
        self.link.start()
        if self._request_bytes is not None:
            self._requester = threading.Thread(
                target=self._request_loop, name=f"requester:{self.device_id}", daemon=True
            )
            self._requester.start()

    def stop(self) -> None:
        self._stop.set()
        with self._pending_lock:
            self._pending_lock.notify_all()
        requester, self._requester = self._requester, None
        if requester is not None:
            requester.join(1.0)
        self.link.stop()
        with self._pending_lock:
            self._answer_deadline = None

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` asks the adapter for one reading (needs ``request`` configured).

        Raises :class:`~drivers.serialport.LinkDown` when the port is not connected.
        """
        if command != "read":
            raise DriverError(f"driver 'mitutoyo' does not support request {command!r}")
        if self._request_bytes is None:
            raise DriverError(f"{self.device_id}: no request string configured")
        self._send_request()

    # -- byte stream (also used by golden tests) ----------------------------------------------

    def feed(self, data: bytes, timestamp_ns: int | None = None) -> None:
        self.link.feed(data, timestamp_ns)

    def end_of_stream(self, timestamp_ns: int | None = None) -> None:
        self.link.end_of_stream(timestamp_ns)

    # -- internals ---------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        with self._pending_lock:
            # any answer, even a bad one, shows the adapter heard the request
            self._answer_deadline = None
            silent_for, self._timeouts_in_row = self._timeouts_in_row, 0
        if silent_for:
            log.info("%s: answering again after %d timeouts", self.device_id, silent_for)
        try:
            channel, value = parse_frame(frame)
        except FrameError as exc:
            self._bad_frame(exc.reason, raw, timestamp_ns)
            return
        if self.cfg.channel is not None and channel != self.cfg.channel:
            self._bad_frame(f"channel {channel} is not the configured {self.cfg.channel}", raw, timestamp_ns)
            return
        self.emit(
            Reading(
                device=self.device_id,
                channel=channel,
                value=value,
                unit=self.cfg.unit,
                raw=raw,
                timestamp_ns=timestamp_ns,
            )
        )

    def _bad_frame(self, reason: str, raw: bytes, timestamp_ns: int) -> None:
        log.warning("%s: bad frame: %s: %r", self.device_id, reason, raw)
        self.emit(DeviceEvent(self.device_id, EventKind.BAD_FRAME, reason, raw, timestamp_ns))

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        if kind is EventKind.DISCONNECTED:
            with self._pending_lock:
                self._answer_deadline = None  # the outage is reported; a timeout on top is noise
        self.emit(DeviceEvent(self.device_id, kind, detail, raw, timestamp_ns))

    def _send_request(self) -> None:
        assert self._request_bytes is not None
        # armed before writing: the answer can be parsed before write() even returns
        with self._pending_lock:
            armed = self._answer_deadline is None
            if armed:
                self._answer_deadline = time.monotonic() + self.cfg.response_timeout
            self._pending_lock.notify_all()
        try:
            self.link.write(self._request_bytes)
        except LinkDown:
            if armed:
                with self._pending_lock:
                    self._answer_deadline = None
            raise

    def _request_loop(self) -> None:
        """Sends polls on a fixed schedule and reports requests nobody answered."""
        interval = self.cfg.poll_interval
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            if next_poll is not None and interval is not None and now >= next_poll:
                # skip missed slots instead of bursting after a stall
                next_poll += (int((now - next_poll) // interval) + 1) * interval
                if self.link.connected:
                    try:
                        self._send_request()
                    except LinkDown as exc:
                        log.debug("%s: poll skipped: %s", self.device_id, exc)
            timed_out = False
            with self._pending_lock:
                deadline = self._answer_deadline
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._answer_deadline = None
                    timed_out = True
                elif not self._stop.is_set():
                    wake = [t for t in (deadline, next_poll) if t is not None]
                    self._pending_lock.wait(min(wake) - now if wake else None)
            if timed_out:
                detail = f"no answer within {self.cfg.response_timeout:g} s"
                with self._pending_lock:
                    self._timeouts_in_row += 1
                    first = self._timeouts_in_row == 1
                # every timeout is an event; only the first of a silence is worth a warning line
                log.log(logging.WARNING if first else logging.DEBUG, "%s: timeout: %s", self.device_id, detail)
                self.emit(DeviceEvent(self.device_id, EventKind.TIMEOUT, detail))
