"""The ``mt-sics`` driver: Mettler Toledo balances and scales on RS-232 or a USB-serial adapter.

MT-SICS is a strict command/reply protocol: the host sends an ASCII command ended by
CR LF, the balance answers with one line ended by CR LF (the layouts, and the manual they
come from, are in :mod:`.codec`). Lines end at CR LF only: a balance set to another line
end glues lines together, which shows up as bad frames rather than as guesses.

How replies become readings and events (the station, not the driver, decides what to keep):

* ``S S`` is a :class:`~drivers.base.Reading` on channel ``"weight"`` with status ``OK``;
  ``S D`` the same with status ``UNSTABLE`` and the value kept, so a characteristic that
  allows dynamic weights can still use it. With ``accept_dynamic: false`` dynamic
  weights are not emitted at all (they are counted in ``dynamic_dropped``), which keeps a
  continuous stream quiet while a load settles.
* Every error reply is a Reading with status ``ERROR``, ``value`` None, ``unit`` None and
  ``error`` saying what the balance reported, on the channel of the command family it
  answers: ``"weight"`` (S, SI, SIR), ``"zero"`` (Z, ZI), ``"tare"`` (T, TI, TA, TAC),
  ``"info"`` (I1..I4). ``ES``, ``ET`` and ``EL`` name no command: they take the channel of
  the command they answer, ``"weight"`` when nothing was pending. An error is never a number.
* Tare weights (``T S``, ``TI S``/``TI D``, ``TA A``) are kept in :attr:`MtSicsDriver.last_tare`
  and logged. They are emitted as Readings on channel ``"tare"`` only with
  ``report_tare: true``, because a station that does not look at the channel would take a
  tare weight for the next measurement.
* ``Z A``, ``ZI S``/``ZI D`` and ``TAC A`` confirm an action: logged, nothing emitted.
  Identification replies are stored in :attr:`MtSicsDriver.identification` and logged.
* Lines that do not parse are ``BAD_FRAME`` events; a command not answered within
  ``response_timeout`` is a ``TIMEOUT`` event.

Modes: ``request`` sends ``command`` (``S`` or ``SI``) every ``poll_interval`` seconds,
never while an earlier command is still unanswered (commands are not stacked in the
balance's input buffer). ``continuous`` sends ``SIR`` once connected, and again after a
reconnect, after any other command (which ends the stream on the balance), and when the
stream falls silent for ``response_timeout`` (which is also reported as a ``TIMEOUT``):
a balance that was switched off and on stops streaming without the serial port noticing.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from pydantic import Field

from drivers import registry
from drivers.base import DriverConfig, DriverError, EventKind, FrameError, Reading, ReadingStatus
from drivers.serial.mt_sics.codec import GENERAL_ERRORS, INFO_IDS, REPLY_ID, Reply, parse_reply
from drivers.serial.mt_sics.codec import command as encode_command
from drivers.serial.port import LinkDown, SerialDriverConfig, SerialLineDriver, log_timeout, next_slot

log = logging.getLogger(__name__)

WEIGHT: Final = "weight"
TARE: Final = "tare"
ZERO: Final = "zero"
INFO: Final = "info"

#: reply identifier -> reading channel of its values and errors
CHANNEL: Final[dict[str, str]] = {
    "S": WEIGHT,
    "Z": ZERO,
    "ZI": ZERO,
    "T": TARE,
    "TI": TARE,
    "TA": TARE,
    "TAC": TARE,
    "I1": INFO,
    "I2": INFO,
    "I3": INFO,
    "I4": INFO,
}


class MtSicsConfig(SerialDriverConfig):
    #: MT-SICS balances leave the factory at 9600 8N1 without handshake; many allow others
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    #: request: poll with ``command``; continuous: let the balance stream (SIR)
    mode: Literal["request", "continuous"] = "request"
    #: S waits for a stable weight before answering; SI answers at once, stable or not
    command: Literal["S", "SI"] = "S"
    #: request mode: seconds between polls; null polls only on request("read")
    poll_interval: float | None = Field(default=1.0, gt=0)
    #: seconds for an answer to any command (S and T wait for stability: leave room for it);
    #: in continuous mode also the longest gap allowed between two streamed weights
    response_timeout: float = Field(default=2.0, gt=0)
    #: false drops dynamic (not yet stable) weights instead of emitting them as UNSTABLE
    accept_dynamic: bool = True
    #: emit tare weights as readings on channel "tare" (off: logged and kept in last_tare)
    report_tare: bool = False
    #: the only units a weight reply may carry (e.g. [g]); empty: any. A balance switched to
    #: another unit then gives bad frames instead of weights in the wrong unit.
    units: list[str] = Field(default_factory=list)
    #: a line longer than this without CR LF is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=128, ge=32)

    def _check(self) -> None:
        super()._check()
        if self.mode == "continuous" and "poll_interval" in self.model_fields_set and self.poll_interval is not None:
            raise ValueError("poll_interval has no effect in continuous mode (the balance sets the pace)")


@dataclass(frozen=True, slots=True)
class Tare:
    value: Decimal
    unit: str
    stable: bool
    raw: bytes
    timestamp_ns: int


@dataclass(slots=True)
class _Pending:
    command: str
    reply_id: str
    deadline: float  # time.monotonic()


#: request() names -> command, and the command with immediate=True
_REQUESTS: Final[dict[str, tuple[str, str | None]]] = {
    "zero": ("Z", "ZI"),
    "tare": ("T", "TI"),
    "clear_tare": ("TAC", None),
    "reset": ("@", None),
}


@registry.register
class MtSicsDriver(SerialLineDriver[MtSicsConfig]):
    name = "mt-sics"
    config_model = MtSicsConfig
    terminator = b"\r\n"
    worker_name = "mt-sics"

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        self._continuous = self.cfg.mode == "continuous"
        # guarded by self._cond, which the worker waits on for deadlines and new work
        # commands sent and not yet answered, oldest first: MT-SICS answers in order
        self._pending: collections.deque[_Pending] = collections.deque()
        self._want_stream = False  # continuous: SIR must be (re)sent once nothing is pending
        self._stream_deadline: float | None = None  # continuous: the next streamed weight is due by then
        self._timeouts_in_row = 0
        self._last_tare: Tare | None = None
        self._identification: dict[str, str] = {}
        self._dynamic_dropped = 0

    # -- state the balance reported ------------------------------------------------------------

    @property
    def last_tare(self) -> Tare | None:
        """The last tare weight the balance reported (T, TI, TA); None after TAC or before any."""
        with self._cond:
            return self._last_tare

    @property
    def identification(self) -> dict[str, str]:
        """Identification replies received, by command: ``{"I4": "B021002593", ...}``."""
        with self._cond:
            return dict(self._identification)

    @property
    def dynamic_dropped(self) -> int:
        """Dynamic weights not emitted because ``accept_dynamic`` is false."""
        with self._cond:
            return self._dynamic_dropped

    # -- Driver --------------------------------------------------------------------------------

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        return b"".join(encode_command(name) for name in self._commands(command, **kwargs))

    def request(self, command: str, **kwargs: Any) -> None:
        """Send a command to the balance; its answer arrives at the sink like any other.

        ``"read"`` sends the configured ``command`` (``immediate=True``: ``SI``), ``"zero"``
        ``Z`` (``ZI`` when immediate), ``"tare"`` ``T`` (``TI``), ``"clear_tare"`` ``TAC``,
        ``"reset"`` ``@``, ``"identify"`` ``I1`` to ``I4``. In continuous mode any of them
        interrupts the stream, which the driver restarts once they are answered.
        Raises :class:`~drivers.serial.port.LinkDown` when the port is not connected.
        """
        for name in self._commands(command, **kwargs):
            self._send(name)

    def _commands(self, command: str, **kwargs: Any) -> list[str]:
        unknown = set(kwargs) - {"immediate"}
        if unknown:
            raise DriverError(f"{self.device_id}: unknown request options {sorted(unknown)}")
        immediate = bool(kwargs.get("immediate", False))
        if command == "read":
            return ["SI" if immediate else self.cfg.command]
        if command == "identify":
            if immediate:
                raise DriverError(f"{self.device_id}: 'identify' has no immediate form")
            return ["I1", "I2", "I3", "I4"]
        if command in _REQUESTS:
            normal, fast = _REQUESTS[command]
            chosen = fast if immediate else normal
            if chosen is None:
                raise DriverError(f"{self.device_id}: {command!r} has no immediate form")
            return [chosen]
        raise DriverError(f"driver 'mt-sics' does not support request {command!r}")

    # -- start and stop ---------------------------------------------------------------------------

    def _starting(self) -> None:
        with self._cond:
            self._pending.clear()
            self._want_stream = False
            self._stream_deadline = None

    def _stopped(self) -> None:
        with self._cond:
            self._pending.clear()
            self._stream_deadline = None

    # -- replies ---------------------------------------------------------------------------------

    def _parse(self, line: bytes) -> Reply:
        reply = parse_reply(line)
        if self.cfg.units and reply.unit is not None and reply.unit not in self.cfg.units:
            raise FrameError(f"unit {reply.unit!r} is not one of the configured {self.cfg.units}", line)
        return reply

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        found = self._find(frame, raw, timestamp_ns, self._parse)
        if found is None:
            with self._cond:
                # a garbled line is most likely the answer that was due: waiting on for it
                # would only add a timeout to the bad frame
                self._answered(None)
            return
        reply, raw = found
        with self._cond:
            answered = self._answered(reply)
            if reply.command == "S" and self._stream_deadline is not None:
                self._stream_deadline = time.monotonic() + self.cfg.response_timeout
        if reply.command in GENERAL_ERRORS:
            channel = CHANNEL[answered.reply_id] if answered is not None else WEIGHT
        else:
            channel = CHANNEL[reply.command]
        self._handle(reply, channel, raw, timestamp_ns)

    def _answered(self, reply: Reply | None) -> _Pending | None:
        """Retire the pending command ``reply`` answers (None: an unreadable line). Holds _cond."""
        if self._timeouts_in_row:
            log.info("%s: answering again after %d timeouts", self.device_id, self._timeouts_in_row)
            self._timeouts_in_row = 0
        if not self._pending:
            return None
        head = self._pending[0]
        if reply is not None and reply.command != head.reply_id and reply.command not in GENERAL_ERRORS:
            # e.g. a streamed weight still arriving after Z was sent: not Z's answer
            return None
        self._pending.popleft()
        if head.command == "SIR":
            # from now on the stream is watched, even if SIR was refused: silence then
            # leads to a timeout and a new SIR
            self._stream_deadline = time.monotonic() + self.cfg.response_timeout
        self._cond.notify_all()
        return head

    def _handle(self, reply: Reply, channel: str, raw: bytes, timestamp_ns: int) -> None:
        error = reply.error
        if error is not None:
            log.warning("%s: balance reports %s", self.device_id, error)
            self._reading(channel, None, None, raw, timestamp_ns, ReadingStatus.ERROR, error)
            return
        status = ReadingStatus.OK if reply.stable else ReadingStatus.UNSTABLE
        if reply.value is not None and reply.unit is not None:
            if reply.command != "S":
                self._tare(reply, raw, timestamp_ns)
                if not self.cfg.report_tare:
                    return
            if status is ReadingStatus.UNSTABLE and not self.cfg.accept_dynamic:
                with self._cond:
                    self._dynamic_dropped += 1
                return
            self._reading(channel, reply.value, reply.unit, raw, timestamp_ns, status, None)
        elif reply.command in INFO_IDS:
            text = " ".join(reply.texts)
            with self._cond:
                self._identification[reply.command] = text
            log.info("%s: %s %s", self.device_id, reply.command, text)
        elif reply.command == "TAC":
            with self._cond:
                self._last_tare = None
            log.info("%s: tare cleared", self.device_id)
        else:
            moving = " while the weight was moving" if reply.status == "D" else ""
            log.info("%s: zero set (%s %s)%s", self.device_id, reply.command, reply.status, moving)

    def _tare(self, reply: Reply, raw: bytes, timestamp_ns: int) -> None:
        assert reply.value is not None and reply.unit is not None
        tare = Tare(reply.value, reply.unit, reply.stable, raw, timestamp_ns)
        with self._cond:
            self._last_tare = tare
        log.info("%s: tare %s %s%s", self.device_id, tare.value, tare.unit, "" if tare.stable else " (dynamic)")

    def _reading(
        self,
        channel: str,
        value: Decimal | None,
        unit: str | None,
        raw: bytes,
        timestamp_ns: int,
        status: ReadingStatus,
        error: str | None,
    ) -> None:
        self.emit(
            Reading(
                device=self.device_id,
                channel=channel,
                value=value,
                unit=unit,
                raw=raw,
                timestamp_ns=timestamp_ns,
                status=status,
                error=error,
            )
        )

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        with self._cond:
            if kind is EventKind.DISCONNECTED:
                # the outage is reported; timeouts for what was in flight would be noise
                self._pending.clear()
                self._stream_deadline = None
                self._want_stream = False
            elif kind is EventKind.CONNECTED:
                # a reconnected balance may have been reset: its stream has to be asked for again
                self._want_stream = self._continuous
            self._cond.notify_all()
        super()._on_link_event(kind, detail, raw, timestamp_ns)

    # -- commands ---------------------------------------------------------------------------------

    def _send(self, command: str, *, keep_on_failure: bool = False) -> None:
        """Queue ``command`` as pending, then write it.

        The entry goes in before the write because the answer can be parsed before write()
        returns. On LinkDown it is withdrawn, unless ``keep_on_failure``: then it times out
        like an unanswered command, which paces the worker's retries.
        """
        entry = _Pending(command, REPLY_ID[command], time.monotonic() + self.cfg.response_timeout)
        with self._cond:
            self._pending.append(entry)
            if self._continuous and command != "SIR":
                # any other command ends the balance's stream
                self._stream_deadline = None
                self._want_stream = True
            self._cond.notify_all()
        try:
            self.link.write(encode_command(command))
        except LinkDown:
            if not keep_on_failure:
                with self._cond:
                    if entry in self._pending:
                        self._pending.remove(entry)
                    self._cond.notify_all()
            raise

    def _work(self) -> None:
        """Polls (request mode), keeps the stream alive (continuous mode), reports timeouts."""
        interval = self.cfg.poll_interval if not self._continuous else None
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout: str | None = None
            first = send_sir = poll = False
            with self._cond:
                if self._pending and self._pending[0].deadline <= now:
                    late = self._pending.popleft()
                    timeout = f"no answer to {late.command} within {self.cfg.response_timeout:g} s"
                    if self._continuous:
                        self._want_stream = True
                elif self._stream_deadline is not None and not self._pending and now >= self._stream_deadline:
                    timeout = f"continuous stream silent for {self.cfg.response_timeout:g} s; SIR sent again"
                    self._stream_deadline = None
                    self._want_stream = True
                if timeout is not None:
                    self._timeouts_in_row += 1
                    first = self._timeouts_in_row == 1
                if self._want_stream and not self._pending and self.link.connected:
                    self._want_stream = False
                    send_sir = True
                if next_poll is not None and interval is not None and now >= next_poll:
                    next_poll = next_slot(next_poll, now, interval)
                    poll = not self._pending and self.link.connected
            if timeout is not None:
                log_timeout(log, self.device_id, timeout, first=first)
                self._timed_out(timeout)
            if send_sir:
                try:
                    self._send("SIR", keep_on_failure=True)
                except LinkDown as exc:
                    log.debug("%s: SIR not sent: %s", self.device_id, exc)
            if poll:
                try:
                    self._send(self.cfg.command)
                except LinkDown as exc:
                    log.debug("%s: poll skipped: %s", self.device_id, exc)
            with self._cond:
                if self._stop.is_set():
                    return
                now = time.monotonic()
                wake = [t for t in (self._pending[0].deadline if self._pending else None, next_poll) if t is not None]
                if self._stream_deadline is not None and not self._pending:
                    wake.append(self._stream_deadline)
                due = self._want_stream and not self._pending and self.link.connected
                if not due:
                    self._cond.wait(max(0.0, min(wake) - now) if wake else None)
