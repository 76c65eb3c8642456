"""The ``sartorius-sbi`` driver: Sartorius balances speaking SBI (frame layout in :mod:`.codec`).

Commands are ESC plus one letter, CR LF after it optional (Sartorius Cubis MSE operating
instructions, "SBI Commands (Data Input Format)", format 1): ``ESC P`` print (send the
displayed value), ``ESC T`` tare and zero (the tare key), ``ESC U`` tare, ``ESC V`` zero,
``ESC Z`` internal calibration. Only ``ESC P`` is answered; the others change the balance
and say nothing.

In ``mode: request`` the driver sends ``ESC P`` every ``poll_interval`` seconds and reports
unanswered requests as ``TIMEOUT`` events; in ``mode: push`` the balance prints by itself
(auto print, or the operator's print key) and the driver only listens.

A 22-character frame's ID code becomes the reading's channel; a 16-character frame (or a
blank ID) gets the configured ``channel``. A blank unit field means the balance has not
settled: the reading is UNSTABLE, value kept, no unit. Special and error codes are ERROR
readings without a value. Everything else is a ``BAD_FRAME`` event; noise before a frame
on the same line is a bad frame and the frame is still read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from drivers import registry
from drivers.base import DriverConfig, DriverError, Reading
from drivers.serial.port import Requester, SerialDriverConfig, SerialLineDriver
from drivers.serial.sartorius_sbi.codec import FrameFormat, SbiFrame, command, lengths, parse_frame

#: request name -> SBI command letter; only "read" is answered by the balance
COMMANDS: dict[str, str] = {
    "read": "P",
    "tare": "U",
    "zero": "V",
    "tare_zero": "T",  # the tare key: older models know only this one
    "calibrate": "Z",
}
DEFAULT_POLL_INTERVAL = 1.0


def _frame_format(value: Any) -> Any:
    # YAML reads `frame: 16` as an int
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SartoriusConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O", "M", "S"] = "O"
    #: 16 (no ID code), 22 (six-character ID code first), or auto (by length)
    frame: Annotated[FrameFormat, BeforeValidator(_frame_format)] = "auto"
    #: what the balance writes in position 1 for a positive weight: "+", or " " on models
    #: whose display shows no plus sign (the other is then a bad frame)
    plus_sign: Literal["+", " "] = "+"
    #: the only ID codes a 22-character frame may carry (N, G#, T ...); empty: any
    identifiers: list[str] = Field(default_factory=list)
    mode: Literal["request", "push"] = "request"
    #: request mode: seconds between ESC P (default 1 s); push mode must leave it out
    poll_interval: float | None = Field(default=None, gt=0)
    #: an ESC P not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: some models want CR LF after each ESC command
    command_suffix: Literal["", "\r\n"] = ""
    #: channel of readings without ID code
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
        return command(COMMANDS[name], self.cfg.command_suffix.encode("ascii"))

    # -- Driver -----------------------------------------------------------------------------

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        if command not in COMMANDS or kwargs:
            return super().command_bytes(command, **kwargs)
        return self.command(command)

    def request(self, command: str, **kwargs: Any) -> None:
        """``read`` (ESC P, answer awaited), ``tare`` (ESC U), ``zero`` (ESC V),
        ``tare_zero`` (ESC T) or ``calibrate`` (ESC Z).

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        if command not in COMMANDS:
            raise DriverError(f"driver 'sartorius-sbi' does not support request {command!r}")
        self.requester.send(self.command_bytes(command, **kwargs), expect_answer=command == "read")

    # -- internals ---------------------------------------------------------------------------

    def _parse(self, frame: bytes) -> SbiFrame:
        return parse_frame(frame, self.cfg.frame, self.cfg.identifiers, self.cfg.plus_sign)

    def _starts(self, frame: bytes) -> Iterable[int]:
        # fixed lengths: a frame after noise is the last 16 (or 22) characters of the line
        return [len(frame) - n for n in sorted(lengths(self.cfg.frame), reverse=True) if len(frame) > n]

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        self._request_answered()
        found = self._find(frame, raw, timestamp_ns, self._parse, self._starts)
        if found is None:
            return
        parsed, raw = found
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
