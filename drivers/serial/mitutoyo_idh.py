"""Mitutoyo ID-H style indicators on RS-232: request/response with a device id.

The host sends a command with the indicator's two-digit id (00-99), ended by CR LF; the
indicator answers with one line ended by CR LF::

    GN01  ->  GN01,+0016.2345      current value (GX max, GM min, GW run-out = max - min)
    CR01  ->  CH01                 zero (preset) acknowledged
              DH01,OK / +NG / -NG  tolerance judgement, when the indicator is set to judge

The unit is not on the wire; it comes from configuration. Details of the ID-H command set
beyond these are unverified, so the parser accepts exactly these shapes and reports
everything else as a ``BAD_FRAME`` event, never as a value.

Representation decisions:

* A value reply is a :class:`~drivers.base.Reading` whose channel is the reply's command
  (``"GN"``, ``"GX"``, ``"GM"``, ``"GW"``), so max, min and run-out are never mistaken for
  the current value.
* The value field has a fixed width on the indicator (``value_width``, 9 characters after the
  sign in the reference's ``+0016.2345``): a reply that lost trailing digits in transit would
  otherwise read as a valid value of coarser resolution. ``value_width: null`` accepts any.
* A reply carrying another device id is rejected as a ``BAD_FRAME`` (two indicators
  sharing a line, or a wrong ``device_id``) and does not count as the answer: the request
  still times out.
* ``CH`` confirms a zero: logged, nothing emitted.
* Judgement replies (``DH``) are informational: the collector judges every value against
  the inspection plan itself, so the indicator's verdict is logged, counted in
  :attr:`MitutoyoIdhDriver.judgements` and kept as :attr:`MitutoyoIdhDriver.last_judgement`,
  but not emitted. A Reading with text and no value would be taken by the gateway for a
  scanned label, and no :class:`~drivers.base.EventKind` means "information". A ``DH``
  that answers a read request counts as its answer (no timeout): some indicators, set to
  judge, answer the read command with the verdict instead of the value.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from pydantic import Field

from drivers import registry
from drivers.base import DriverConfig, DriverError, EventKind, FrameError, Reading
from drivers.serial.port import LinkDown, SerialDriverConfig, SerialLineDriver, log_timeout, next_slot

log = logging.getLogger(__name__)

READ_COMMANDS: Final = ("GN", "GX", "GM", "GW")
JUDGEMENTS: Final = ("OK", "+NG", "-NG")
MAX_DIGITS = 12  # characters of value, decimal point included: beyond any indicator's display

_VALUE = re.compile(r"(G[NXMW])([0-9]{2}),([+-])([0-9]+(?:\.[0-9]+)?)")
_ACK = re.compile(r"CH([0-9]{2})")
_JUDGEMENT = re.compile(r"DH([0-9]{2}),(OK|\+NG|-NG)")
_ADDRESSED = re.compile(r"(G[NXMW]|CH|DH)([0-9]{2})(?:,.*)?")


@dataclass(frozen=True, slots=True)
class IdhReply:
    """One parsed reply line.

    ``command`` is ``GN``/``GX``/``GM``/``GW`` (``value`` set), ``CH`` (zero acknowledged) or
    ``DH`` (``judgement`` set to ``OK``, ``+NG`` or ``-NG``).
    """

    command: str
    device_id: int
    value: Decimal | None = None
    judgement: str | None = None


def parse_reply(line: bytes, width: int | None = None) -> IdhReply:
    """Parse one reply line (terminator and surrounding whitespace are ignored).

    The value keeps the indicator's resolution: ``GN01,+0016.2340`` gives
    ``Decimal("16.2340")``. With ``width``, the value after the sign must be exactly that
    many characters (decimal point included): a reply that lost trailing digits in transit
    would otherwise read as a valid value of coarser resolution. The device id is returned,
    not checked. Raises :class:`~drivers.base.FrameError` for anything else.
    """
    body = line.strip()
    if not body:
        raise FrameError("empty line", line)
    if any(b < 0x20 or b > 0x7E for b in body):
        raise FrameError("non-printable or non-ASCII bytes", line)
    text = body.decode("ascii")
    if m := _VALUE.fullmatch(text):
        digits = m.group(4)
        if len(digits) > MAX_DIGITS:
            raise FrameError(f"value longer than {MAX_DIGITS} characters", line)
        if width is not None and len(digits) != width:
            raise FrameError(f"value is {len(digits)} characters, expected {width}", line)
        return IdhReply(m.group(1), int(m.group(2)), value=Decimal(m.group(3) + m.group(4)))
    if m := _ACK.fullmatch(text):
        return IdhReply("CH", int(m.group(1)))
    if m := _JUDGEMENT.fullmatch(text):
        return IdhReply("DH", int(m.group(1)), judgement=m.group(2))
    if text[:2] in READ_COMMANDS:
        raise FrameError(f"{text[:2]} reply is not '{text[:2]}<id>,<sign><digits>'", line)
    if text[:2] == "DH":
        raise FrameError("judgement is not 'DH<id>,OK|+NG|-NG'", line)
    raise FrameError("unknown reply", line)


def addressed_id(line: bytes) -> int | None:
    """The device id a line claims to come from, if it looks like a reply at all."""
    m = _ADDRESSED.fullmatch(line.strip().decode("ascii", errors="replace"))
    return int(m.group(2)) if m else None


class MitutoyoIdhConfig(SerialDriverConfig):
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    #: the indicator's address, 0..99 (sent as two digits: 1 -> "01")
    device_id: int = Field(default=1, ge=0, le=99)
    #: what a poll and request("read") ask for: current value, max, min or run-out
    read: Literal["GN", "GX", "GM", "GW"] = "GN"
    #: seconds between polls; null reads only on request("read")
    poll_interval: float | None = Field(default=1.0, gt=0)
    #: a command not answered within this many seconds is reported as a TIMEOUT event
    response_timeout: float = Field(default=1.0, gt=0)
    #: the frame carries no unit
    unit: str = Field(default="mm", min_length=1)
    #: characters of value after the sign, decimal point included ("0016.2345" is 9): a reply
    #: of another length is a bad frame (it lost digits); null accepts any length
    value_width: int | None = Field(default=9, ge=1, le=MAX_DIGITS)
    #: a line longer than this without LF is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=64, ge=24)


@dataclass(frozen=True, slots=True)
class Judgement:
    judgement: str  # "OK", "+NG" or "-NG"
    raw: bytes
    timestamp_ns: int


@dataclass(slots=True)
class _Pending:
    command: str  # "GN", "GX", "GM", "GW" or "CR"
    deadline: float  # time.monotonic()


@registry.register
class MitutoyoIdhDriver(SerialLineDriver[MitutoyoIdhConfig]):
    name = "mitutoyo-idh"
    config_model = MitutoyoIdhConfig
    terminator = b"\n"
    worker_name = "idh"

    def __init__(self, config: DriverConfig) -> None:
        super().__init__(config)
        self.address = f"{self.cfg.device_id:02d}"
        # guarded by self._cond, which the worker waits on for deadlines and new work
        self._pending: collections.deque[_Pending] = collections.deque()
        self._timeouts_in_row = 0
        self._last_judgement: Judgement | None = None
        self._judgements: collections.Counter[str] = collections.Counter()

    @property
    def last_judgement(self) -> Judgement | None:
        with self._cond:
            return self._last_judgement

    @property
    def judgements(self) -> dict[str, int]:
        """How many of each judgement the indicator sent since the driver was created."""
        with self._cond:
            return dict(self._judgements)

    # -- Driver -----------------------------------------------------------------------------

    def request(self, command: str, **kwargs: Any) -> None:
        """``"read"`` asks for the configured ``read`` (``what="GX"`` for another one);
        ``"GN"``, ``"GX"``, ``"GM"``, ``"GW"`` ask for that one; ``"zero"`` sends ``CR``.

        The answer arrives at the sink. Raises :class:`~drivers.serial.port.LinkDown` when the
        port is not connected.
        """
        unknown = set(kwargs) - ({"what"} if command == "read" else set())
        if unknown:
            raise DriverError(f"{self.device_id}: unknown request options {sorted(unknown)}")
        if command == "read":
            what = kwargs.get("what", self.cfg.read)
            if what not in READ_COMMANDS:
                raise DriverError(f"{self.device_id}: {what!r} is not one of {', '.join(READ_COMMANDS)}")
            self._send(str(what))
        elif command in READ_COMMANDS:
            self._send(command)
        elif command == "zero":
            self._send("CR")
        else:
            raise DriverError(f"driver 'mitutoyo-idh' does not support request {command!r}")

    # -- start and stop -------------------------------------------------------------------------

    def _starting(self) -> None:
        with self._cond:
            self._pending.clear()

    def _stopped(self) -> None:
        with self._cond:
            self._pending.clear()

    # -- replies -------------------------------------------------------------------------------

    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        try:
            reply = parse_reply(frame, self.cfg.value_width)
        except FrameError as exc:
            claimed = addressed_id(frame)
            if claimed is None or claimed == self.cfg.device_id:
                # a garbled line is most likely the answer that was due
                self._answered(None)
            self._bad_frame(exc.reason, raw, timestamp_ns)
            return
        if reply.device_id != self.cfg.device_id:
            self._bad_frame(f"device id {reply.device_id:02d} is not the configured {self.address}", raw, timestamp_ns)
            return
        self._answered(reply)
        if reply.value is not None:
            self.emit(
                Reading(
                    device=self.device_id,
                    channel=reply.command,
                    value=reply.value,
                    unit=self.cfg.unit,
                    raw=raw,
                    timestamp_ns=timestamp_ns,
                )
            )
        elif reply.judgement is not None:
            with self._cond:
                self._last_judgement = Judgement(reply.judgement, raw, timestamp_ns)
                self._judgements[reply.judgement] += 1
            # informational: an NG is worth a line at INFO, a stream of OKs is not
            level = logging.DEBUG if reply.judgement == "OK" else logging.INFO
            log.log(level, "%s: indicator judgement %s", self.device_id, reply.judgement)
        else:
            log.info("%s: zero acknowledged", self.device_id)

    def _answered(self, reply: IdhReply | None) -> None:
        """Retire the pending command ``reply`` answers (None: an unreadable line)."""
        with self._cond:
            if self._timeouts_in_row:
                log.info("%s: answering again after %d timeouts", self.device_id, self._timeouts_in_row)
                self._timeouts_in_row = 0
            if not self._pending:
                return
            head = self._pending[0].command
            if reply is not None:
                expected = ("CH",) if head == "CR" else (head, "DH")
                if reply.command not in expected:
                    return  # a late answer to an earlier command that already timed out
            self._pending.popleft()
            self._cond.notify_all()

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        if kind is EventKind.DISCONNECTED:
            with self._cond:
                self._pending.clear()  # the outage is reported; timeouts on top would be noise
                self._cond.notify_all()
        super()._on_link_event(kind, detail, raw, timestamp_ns)

    # -- commands ---------------------------------------------------------------------------------

    def _send(self, command: str) -> None:
        # pending before the write: the answer can be parsed before write() returns
        entry = _Pending(command, time.monotonic() + self.cfg.response_timeout)
        with self._cond:
            self._pending.append(entry)
            self._cond.notify_all()
        try:
            self.link.write(f"{command}{self.address}\r\n".encode("ascii"))
        except LinkDown:
            with self._cond:
                if entry in self._pending:
                    self._pending.remove(entry)
                self._cond.notify_all()
            raise

    def _work(self) -> None:
        """Polls on a fixed schedule (never stacking commands) and reports unanswered ones."""
        interval = self.cfg.poll_interval
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            timeout: str | None = None
            first = poll = False
            with self._cond:
                if self._pending and self._pending[0].deadline <= now:
                    late = self._pending.popleft()
                    timeout = f"no answer to {late.command}{self.address} within {self.cfg.response_timeout:g} s"
                    self._timeouts_in_row += 1
                    first = self._timeouts_in_row == 1
                if next_poll is not None and interval is not None and now >= next_poll:
                    next_poll = next_slot(next_poll, now, interval)
                    poll = not self._pending and self.link.connected
            if timeout is not None:
                log_timeout(log, self.device_id, timeout, first=first)
                self._timed_out(timeout)
            if poll:
                try:
                    self._send(self.cfg.read)
                except LinkDown as exc:
                    log.debug("%s: poll skipped: %s", self.device_id, exc)
            with self._cond:
                if self._stop.is_set():
                    return
                wake = [t for t in (self._pending[0].deadline if self._pending else None, next_poll) if t is not None]
                self._cond.wait(max(0.0, min(wake) - time.monotonic()) if wake else None)
