"""The ``mitutoyo-idh`` driver: ID-H digimatic indicators on RS-232C (commands in :mod:`.codec`).

The driver asks for data with ``GA**`` (every ``poll_interval`` seconds, and on
``request("read")``); the reply's header names the indicator's measurement mode and becomes
the reading's channel (``GN`` normal, ``GX`` max, ``GM`` min, ``GW`` run-out), so a max is
never taken for the current value. With ``mode`` configured the driver switches the
indicator to it (``CN``/``CX``/``CM``/``CW``) once connected, and again after every
reconnect: a power-cycled indicator may have forgotten it.

Other requests: ``zero`` (``CR**``), ``mode`` (``mode="max"`` ...), ``clear_peak``
(``CL**``, starts peak hold anew) and ``judgement`` (``DJ**,OUT``). The indicator's verdict
(``DH**,OK`` / ``+NG`` / ``-NG``, ``JOFF`` when its judgement is off) is logged, counted in
:attr:`MitutoyoIdhDriver.judgements` and kept in :attr:`MitutoyoIdhDriver.last_judgement`,
but not emitted: the collector judges every value against the inspection plan itself.

Commands are sent one at a time and each awaits its answer (``response_timeout``, then a
``TIMEOUT`` event). A reply carrying another ID No. is a ``BAD_FRAME`` (two indicators on
one line, or a wrong ``device_id``) and answers nothing. A line that is not a reply of the
manual is a ``BAD_FRAME`` and counts as the answer that was due (the indicator did answer,
unreadably), so it is not reported twice.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field

from drivers import registry
from drivers.base import DriverConfig, DriverError, EventKind, Reading
from drivers.serial.mitutoyo_idh.codec import DEFAULT_WIDTH, MODES, IdhReply, claimed_id, parse_reply
from drivers.serial.mitutoyo_idh.codec import command as encode_command
from drivers.serial.port import LinkDown, SerialDriverConfig, SerialLineDriver, log_timeout, next_slot

log = logging.getLogger(__name__)

Mode = Literal["current", "max", "min", "runout"]

#: command code -> what answers it (reply kind, header)
_ANSWERS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "GA": (("value", "GN"), ("value", "GX"), ("value", "GM"), ("value", "GW")),
    "CN": (("ack", "CH"),),
    "CX": (("ack", "CH"),),
    "CM": (("ack", "CH"),),
    "CW": (("ack", "CH"),),
    "CL": (("ack", "CH"),),
    "CR": (("ack", "CH"), ("notice", "DH")),
    "DJ": (("judgement", "DH"),),
}


class MitutoyoIdhConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    #: the indicator's ID No., 0..99 (sent as two digits: 1 -> "01")
    device_id: int = Field(default=1, ge=0, le=99)
    #: switch the indicator to this measurement mode once connected; null leaves it as set
    mode: Mode | None = None
    #: seconds between data requests (GA); null asks only on request("read")
    poll_interval: float | None = Field(default=1.0, gt=0)
    #: a command not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: the frame carries no unit
    unit: str = Field(default="mm", min_length=1)
    #: characters of value after the sign, decimal point included ("0016.2345" is 9): a reply
    #: of another width is a bad frame (it lost or gained digits in transit)
    value_width: int = Field(default=DEFAULT_WIDTH, ge=3, le=12)
    #: a line longer than this without CR LF is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=64, ge=24)


@dataclass(frozen=True, slots=True)
class Judgement:
    judgement: str  # "OK", "+NG", "-NG" or "JOFF"
    raw: bytes
    timestamp_ns: int


@dataclass(slots=True)
class _Pending:
    code: str  # "GA", "CN", "CR", "DJ" ...
    deadline: float  # time.monotonic()


@registry.register
class MitutoyoIdhDriver(SerialLineDriver[MitutoyoIdhConfig]):
    name = "mitutoyo-idh"
    config_model = MitutoyoIdhConfig
    terminator = b"\r\n"
    worker_name = "idh"

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        # guarded by self._cond, which the worker waits on for deadlines and new work
        self._pending: collections.deque[_Pending] = collections.deque()
        self._want_mode = False  # the configured mode is still to be set on this connection
        self._timeouts_in_row = 0
        self._last_judgement: Judgement | None = None
        self._judgements: collections.Counter[str] = collections.Counter()

    @property
    def last_judgement(self) -> Judgement | None:
        with self._cond:
            return self._last_judgement

    @property
    def judgements(self) -> dict[str, int]:
        """How many of each verdict the indicator sent since the driver was created."""
        with self._cond:
            return dict(self._judgements)

    # -- Driver -----------------------------------------------------------------------------

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        return encode_command(*self._command(command, **kwargs))

    def request(self, command: str, **kwargs: Any) -> None:
        """``read`` (GA), ``zero`` (CR), ``mode`` (``mode="current"|"max"|"min"|"runout"``),
        ``clear_peak`` (CL) or ``judgement`` (DJ,OUT). The answer arrives at the sink.

        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        code, _, argument = self._command(command, **kwargs)
        self._send(code, argument)

    def _command(self, name: str, **kwargs: Any) -> tuple[str, int, str | None]:
        unknown = set(kwargs) - ({"mode"} if name == "mode" else set())
        if unknown:
            raise DriverError(f"{self.device_id}: unknown request options {sorted(unknown)}")
        simple = {"read": "GA", "zero": "CR", "clear_peak": "CL"}
        if name in simple:
            return simple[name], self.cfg.device_id, None
        if name == "judgement":
            return "DJ", self.cfg.device_id, "OUT"
        if name == "mode":
            mode = kwargs.get("mode")
            if mode not in MODES:
                raise DriverError(f"{self.device_id}: mode must be one of {', '.join(MODES)}, got {mode!r}")
            return MODES[str(mode)][0], self.cfg.device_id, None
        raise DriverError(f"driver 'mitutoyo-idh' does not support request {name!r}")

    # -- start and stop -------------------------------------------------------------------------

    def _starting(self) -> None:
        with self._cond:
            self._pending.clear()
            self._want_mode = False

    def _stopped(self) -> None:
        with self._cond:
            self._pending.clear()

    # -- replies -------------------------------------------------------------------------------

    def _parse(self, line: bytes) -> IdhReply:
        return parse_reply(line, self.cfg.value_width)

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        found = self._find(frame, raw, timestamp_ns, self._parse)
        if found is None:
            claimed = claimed_id(frame)
            if claimed is None or claimed == self.cfg.device_id:
                self._answered(None)  # a garbled line is most likely the answer that was due
            return
        reply, raw = found
        if reply.device_id != self.cfg.device_id:
            self._bad_frame(
                f"ID No. {reply.device_id:02d} is not the configured {self.cfg.device_id:02d}", raw, timestamp_ns
            )
            return
        self._answered(reply)
        if reply.kind == "value":
            self.emit(
                Reading(
                    device=self.device_id,
                    channel=reply.header,
                    value=reply.value,
                    unit=self.cfg.unit,
                    raw=raw,
                    timestamp_ns=timestamp_ns,
                )
            )
        elif reply.kind == "judgement":
            assert reply.text is not None
            with self._cond:
                self._last_judgement = Judgement(reply.text, raw, timestamp_ns)
                self._judgements[reply.text] += 1
            # informational: an NG is worth a line at INFO, a stream of OKs is not
            level = logging.DEBUG if reply.text == "OK" else logging.INFO
            log.log(level, "%s: indicator judgement %s", self.device_id, reply.text)
        elif reply.kind == "notice":
            log.info("%s: indicator reports %s", self.device_id, reply.text)
        elif reply.kind == "setting":
            log.info("%s: indicator reports %s %s", self.device_id, reply.header, reply.value)
        else:
            log.debug("%s: %s acknowledged", self.device_id, reply.header)

    def _answered(self, reply: IdhReply | None) -> None:
        """Retire the pending command ``reply`` answers (None: an unreadable line)."""
        with self._cond:
            if self._timeouts_in_row:
                log.info("%s: answering again after %d timeouts", self.device_id, self._timeouts_in_row)
                self._timeouts_in_row = 0
            if not self._pending:
                return
            head = self._pending[0].code
            if reply is not None and (reply.kind, reply.header) not in _ANSWERS.get(head, ()):
                return  # a late answer to an earlier command that already timed out
            self._pending.popleft()
            self._cond.notify_all()

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        with self._cond:
            if kind is EventKind.DISCONNECTED:
                self._pending.clear()  # the outage is reported; timeouts on top would be noise
            elif kind is EventKind.CONNECTED:
                # a reconnected indicator may have been power-cycled: set its mode again
                self._want_mode = self.cfg.mode is not None
            self._cond.notify_all()
        super()._on_link_event(kind, detail, raw, timestamp_ns)

    # -- commands ---------------------------------------------------------------------------------

    def _send(self, code: str, argument: str | None = None) -> None:
        # pending before the write: the answer can be parsed before write() returns
        entry = _Pending(code, time.monotonic() + self.cfg.response_timeout)
        with self._cond:
            self._pending.append(entry)
            self._cond.notify_all()
        try:
            self.link.write(encode_command(code, self.cfg.device_id, argument))
        except LinkDown:
            with self._cond:
                if entry in self._pending:
                    self._pending.remove(entry)
                self._cond.notify_all()
            raise

    def _work(self) -> None:
        """Sets the mode, polls on a fixed schedule (never stacking commands), reports timeouts."""
        interval = self.cfg.poll_interval
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout: str | None = None
            first = poll = set_mode = False
            with self._cond:
                if self._pending and self._pending[0].deadline <= now:
                    late = self._pending.popleft()
                    timeout = f"no answer to {late.code}{self.cfg.device_id:02d} within {self.cfg.response_timeout:g} s"
                    if self.cfg.mode is not None and late.code == MODES[self.cfg.mode][0]:
                        self._want_mode = True  # try again
                    self._timeouts_in_row += 1
                    first = self._timeouts_in_row == 1
                idle = not self._pending and self.link.connected
                if idle and self._want_mode:
                    self._want_mode = False
                    set_mode = True
                elif next_poll is not None and interval is not None and now >= next_poll:
                    next_poll = next_slot(next_poll, now, interval)
                    poll = idle
            if timeout is not None:
                log_timeout(log, self.device_id, timeout, first=first)
                self._timed_out(timeout)
            if set_mode or poll:
                try:
                    if set_mode:
                        assert self.cfg.mode is not None
                        self._send(MODES[self.cfg.mode][0])
                    else:
                        self._send("GA")
                except LinkDown as exc:
                    log.debug("%s: command skipped: %s", self.device_id, exc)
            with self._cond:
                if self._stop.is_set():
                    return
                wake = [t for t in (self._pending[0].deadline if self._pending else None, next_poll) if t is not None]
                due = self._want_mode and not self._pending and self.link.connected
                if not due:
                    self._cond.wait(max(0.0, min(wake) - time.monotonic()) if wake else None)
