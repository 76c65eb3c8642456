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
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers import registry
from drivers.base import DriverConfig, DriverError, FrameError, Reading
from drivers.serial.port import SerialDriverConfig, SerialLineDriver

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


class MitutoyoConfig(SerialDriverConfig):
    parity: Literal["N", "E", "O"] = "N"
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

    def _check(self) -> None:
        if self.poll_interval is not None and self.request is None:
            raise ValueError("poll_interval needs a request string")
        super()._check()


@registry.register
class MitutoyoDriver(SerialLineDriver[MitutoyoConfig]):
    name = "mitutoyo"
    config_model = MitutoyoConfig
    terminator = b"\r"

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        self._request_bytes = self._request_string(
            self.cfg.request, poll_interval=self.cfg.poll_interval, response_timeout=self.cfg.response_timeout
        )

    # -- Driver -----------------------------------------------------------------------------

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` asks the adapter for one reading (needs ``request`` configured).

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        if command != "read":
            raise DriverError(f"driver 'mitutoyo' does not support request {command!r}")
        if self.requester is None or self._request_bytes is None:
            raise DriverError(f"{self.device_id}: no request string configured")
        self.requester.send(self._request_bytes)

    # -- internals ---------------------------------------------------------------------------

    def _starting(self) -> None:
        if self.cfg.request is not None and "\\" in self.cfg.request:
            log.warning(
                "%s: request %r contains a backslash; escapes are not decoded (quote it in YAML)",
                self.device_id,
                self.cfg.request,
            )

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        self._request_answered()  # any answer, even a bad one, shows the adapter heard the request
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
