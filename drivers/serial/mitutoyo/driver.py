"""The ``mitutoyo`` driver: Digimatic interface adapters (USB-ITN, DP-1VR, U-WAVE receivers).

Readings arrive when the operator presses DATA, or, with ``request`` (and optionally
``poll_interval``) configured, when the driver asks for one. The frame layout is in
:mod:`.codec`; anything else is a ``BAD_FRAME`` event and never a value. Noise before a
frame on the same line (line noise while the adapter is plugged in) is reported as a bad
frame and the frame after it is read.

Channel handling: the channel of every reading is the one in the frame. If ``channel`` is
configured, frames of any other channel are bad frames: a multiplexer sending a channel
nobody configured is a wiring or set-up fault worth seeing.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers import registry
from drivers.base import DriverConfig, DriverError, Reading
from drivers.serial.frames import fixed_length
from drivers.serial.mitutoyo.codec import FRAME_LENGTH, parse_frame
from drivers.serial.port import SerialDriverConfig, SerialLineDriver

log = logging.getLogger(__name__)


class MitutoyoConfig(SerialDriverConfig):
    parity: Literal["N", "E", "O"] = "N"
    #: the frame carries no unit
    unit: str = "mm"
    #: sent to ask the adapter for a reading, taken literally: write "1\r" in a double-quoted
    #: YAML string so that \r becomes a carriage return (adapter dependent; not in the manual)
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

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        if command != "read" or kwargs:
            return super().command_bytes(command, **kwargs)
        if self._request_bytes is None:
            raise DriverError(f"{self.device_id}: no request string configured")
        return self._request_bytes

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("read")`` asks the adapter for one reading (needs ``request`` configured).

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        data = self.command_bytes(command, **kwargs)
        assert self.requester is not None  # made with the request string
        self.requester.send(data)

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
        found = self._find(frame, raw, timestamp_ns, parse_frame, fixed_length(FRAME_LENGTH))
        if found is None:
            return
        (channel, value), raw = found
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
