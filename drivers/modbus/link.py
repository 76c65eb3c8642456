"""The wire: one request out, its answer back, and every frame that is not that answer counted.

Why the driver frames Modbus itself rather than through pymodbus's clients: a master must see
every frame on its link to count what goes wrong per device (CRC errors, answers from another
address, late answers) and to keep the answer's bytes as evidence. pymodbus 3.x's clients
drop such frames inside their transaction layer with only a log line, take an RTU answer
that arrives after the timeout as the answer to the retry, and changed their API in every
3.x minor release. The protocol part is small (``pdu.py``, ``framing.py``); pymodbus stays
the simulator's server and the tests' independent peer.

:class:`TcpLink`
    MBAP transaction identifiers match answers to requests: an answer carrying an older
    identifier is a late reply (counted, discarded), one carrying another unit identifier
    for our transaction is a foreign answer (counted, discarded; the timeout keeps running).

:class:`SerialLink` (RTU and ASCII)
    Serial frames carry no transaction identifier (Serial Line V1.02 §2.1), so a late answer
    is told apart by time: after a request timed out, nothing more is sent to that slave
    until ``late_reply_window`` has passed; an answer arriving meanwhile, or found in the
    input before any request (the input is flushed before each request), is a late reply,
    counted and discarded, never the answer to the retry. A frame whose CRC (LRC) does not
    check is counted and the request retried (§2.4.1: "in case of an error detected on the
    frame, a retry may be performed"); an answer from an unexpected address is counted and
    ignored while the response timeout keeps running (§2.4.1). An answer arriving later
    than ``timeout + late_reply_window`` cannot be told from the answer to the next request
    to the same slave: set ``timeout`` above the slowest slave's turnaround.

Every fault goes to the ``report`` callback as ``(kind, unit, detail, raw)``; the driver
counts it and turns each streak into one event.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal

import serial

from drivers.base import DriverError
from drivers.modbus.config import ModbusConfig
from drivers.modbus.framing import (
    MAX_PDU,
    MBAP,
    MBAP_SIZE,
    ascii_frame,
    ascii_unwrap,
    rtu_answer_length,
    rtu_check,
    rtu_frame,
)

FaultKind = Literal["crc", "foreign", "late", "malformed"]
#: (kind, unit the fault is charged to or None for the bus, detail, the offending bytes)
FaultReport = Callable[[FaultKind, int | None, str, bytes], None]

#: below this a pty or USB adapter cannot resolve a gap: the shortest silence waited for
_MIN_QUIET = 0.005


class LinkLost(DriverError):
    """The connection or the port is gone; the driver reopens it."""


class NoAnswer(DriverError):
    """Nothing usable arrived within the timeout."""


class GarbledAnswer(DriverError):
    """A frame arrived but failed its check (already reported); the request may be retried."""


class Link(ABC):
    def __init__(self, cfg: ModbusConfig, report: FaultReport) -> None:
        self.cfg = cfg
        self.report = report

    @property
    @abstractmethod
    def where(self) -> str:
        """The peer or port, for messages."""

    @abstractmethod
    def open(self) -> None:
        """Connect or open the port; raises OSError (or anything pyserial raises) on failure."""

    @abstractmethod
    def close(self) -> None:
        """Idempotent."""

    @abstractmethod
    def exchange(self, unit: int, pdu: bytes) -> tuple[bytes, int]:
        """Send one request PDU to ``unit``; return the answer PDU and its arrival (UTC ns).

        Raises NoAnswer, GarbledAnswer or LinkLost.
        """


class TcpLink(Link):
    def __init__(self, cfg: ModbusConfig, report: FaultReport) -> None:
        super().__init__(cfg, report)
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._tid = 0

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def open(self) -> None:
        assert self.cfg.host is not None
        sock = socket.create_connection((self.cfg.host, self.cfg.port), timeout=self.cfg.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._buf.clear()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def exchange(self, unit: int, pdu: bytes) -> tuple[bytes, int]:
        sock = self._sock
        if sock is None:
            raise LinkLost("not connected")
        self._tid = tid = self._tid % 0xFFFF + 1
        try:
            sock.sendall(MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu)
        except OSError as exc:
            raise LinkLost(f"send failed: {exc}") from exc
        deadline = time.monotonic() + self.cfg.timeout
        while True:
            adu = self._next_adu(sock, deadline)
            if adu is None:
                raise NoAnswer(f"no answer within {self.cfg.timeout:g} s")
            answer_tid, answer_unit, answer = adu
            if answer_tid != tid:
                detail = f"answer to transaction {answer_tid} arrived after its timeout"
                self.report("late", answer_unit, detail, answer)
            elif answer_unit != unit:
                self.report("foreign", unit, f"answer to unit {unit} came from unit {answer_unit}", answer)
            else:
                return answer, time.time_ns()

    def _next_adu(self, sock: socket.socket, deadline: float) -> tuple[int, int, bytes] | None:
        buf = self._buf
        while True:
            if len(buf) >= MBAP_SIZE:
                tid, protocol, length, unit = MBAP.unpack_from(buf)
                if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                    # the stream is out of step (or not Modbus): only a new connection resynchronises it
                    raise LinkLost(f"not a Modbus TCP answer: {bytes(buf[:MBAP_SIZE]).hex(' ')}")
                end = MBAP_SIZE - 1 + length
                if len(buf) >= end:
                    answer = bytes(buf[MBAP_SIZE:end])
                    del buf[:end]
                    return tid, unit, answer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                return None
            except OSError as exc:
                raise LinkLost(f"receive failed: {exc}") from exc
            if not chunk:
                raise LinkLost("connection closed by the peer")
            buf += chunk


class SerialLink(Link):
    """One RS-485 / RS-232 line, RTU or ASCII framing."""

    def __init__(self, cfg: ModbusConfig, report: FaultReport) -> None:
        super().__init__(cfg, report)
        self._port: serial.Serial | None = None
        self._fd = -1
        self._rtu = cfg.transport == "rtu"
        self._silence = cfg.silent_interval
        self._quiet = max(3.5 * cfg.char_time, _MIN_QUIET) if self._rtu else 1.0
        self._bus_free_at = 0.0
        #: slaves whose last request timed out: unit -> when their late-reply window closes
        self._unanswered: dict[int, float] = {}
        self._pending = b""  # bytes read after an answer, classified before the next request

    @property
    def where(self) -> str:
        c = self.cfg
        return f"{c.serial_port} ({c.transport} {c.baudrate} {c.bytesize}{c.parity}{c.stopbits})"

    def open(self) -> None:
        c = self.cfg
        self._port = serial.Serial(
            c.serial_port,
            baudrate=c.baudrate,
            bytesize=c.bytesize,
            parity=c.parity,
            stopbits=c.stopbits,
            timeout=0,
            write_timeout=c.timeout,
            exclusive=True,
        )
        self._fd = self._port.fileno()
        self._bus_free_at = time.monotonic() + self._silence
        self._unanswered.clear()
        self._pending = b""

    def close(self) -> None:
        port, self._port = self._port, None
        self._fd = -1
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def exchange(self, unit: int, pdu: bytes) -> tuple[bytes, int]:
        if self._port is None:
            raise LinkLost("port not open")
        window_end = self._unanswered.get(unit, 0.0)
        if window_end > time.monotonic():
            self._drain(window_end)  # an answer still on its way is late, not the answer to this request
        self._flush()
        wait = self._bus_free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        frame = rtu_frame(unit, pdu) if self._rtu else ascii_frame(unit, pdu)
        self._write(frame)
        deadline = time.monotonic() + len(frame) * self.cfg.char_time + self.cfg.timeout
        buf = b""
        try:
            while True:
                got, buf = self._read_frame(buf, deadline)
                if got is None:
                    if buf:
                        self.report("crc", unit, f"answer from unit {unit} cut short", buf)
                    self._unanswered[unit] = time.monotonic() + self.cfg.late_window
                    raise NoAnswer(f"no answer within {self.cfg.timeout:g} s")
                body = self._unwrap(got)
                if body is None:
                    self.report("crc", unit, f"{self._check_name} error in an answer from unit {unit}", got)
                    buf = b""
                    self._drain_quiet(deadline)  # the rest of a garbled frame is no answer either
                    raise GarbledAnswer(f"{self._check_name} error")
                if body[0] != unit:
                    self._stray(body, got, unit)
                    continue  # §2.4.1: the response timeout keeps running
                self._unanswered.pop(unit, None)
                return body[1:], time.time_ns()
        finally:
            self._pending = buf
            self._bus_free_at = time.monotonic() + self._silence

    @property
    def _check_name(self) -> str:
        return "CRC" if self._rtu else "LRC"

    def _unwrap(self, frame: bytes) -> bytes | None:
        if self._rtu:
            return frame[:-2] if rtu_check(frame) else None
        return ascii_unwrap(frame)

    def _stray(self, body: bytes, frame: bytes, polled: int | None) -> None:
        """A sound frame that is not the awaited answer: late if its slave has one outstanding."""
        source = body[0]
        if source in self._unanswered:
            self.report("late", source, f"answer from unit {source} arrived after its timeout", frame)
        elif polled is None:
            self.report("foreign", None, f"frame from unit {source} while no request was outstanding", frame)
        else:
            self.report("foreign", polled, f"answer to unit {polled} came from unit {source}", frame)

    def _classify(self, data: bytes) -> None:
        """Frames found on the line while no request is outstanding: all discarded, each counted."""
        while data:
            if self._rtu:
                length = rtu_answer_length(data)
                frame = data if length is None or length <= 0 or length > len(data) else data[:length]
            else:
                end = data.find(b"\n")
                frame = data if end < 0 else data[: end + 1]
            data = data[len(frame) :]
            body = self._unwrap(frame)
            if body is None:
                self.report("crc", None, f"{len(frame)} byte(s) on the line that are no sound frame", frame)
                return  # without a sound frame boundary the rest cannot be split
            self._stray(body, frame, None)

    def _flush(self) -> None:
        data, self._pending = self._pending, b""
        while self._wait_readable(0):
            data += self._read_some()
        if data:
            self._classify(data)

    def _drain(self, until: float) -> None:
        """Listen until ``until``; whatever arrives is a late reply or noise."""
        data = b""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            if self._wait_readable(left):
                data += self._read_some()
        data += self._pending
        self._pending = b""
        if data:
            self._classify(data)

    def _drain_quiet(self, deadline: float) -> None:
        """Discard bytes until the line has been quiet for a frame gap (or the deadline passed)."""
        while time.monotonic() < deadline and self._wait_readable(self._quiet):
            self._read_some()

    def _read_frame(self, buf: bytes, deadline: float) -> tuple[bytes | None, bytes]:
        """The first complete frame in ``buf`` plus what arrives until ``deadline``: ``(frame, rest)``,
        or ``(None, buf)`` when the deadline passed first."""
        while True:
            if self._rtu:
                length = rtu_answer_length(buf)
                if length is not None and 0 < length <= len(buf):
                    return buf[:length], buf[length:]
                if length == -1:
                    # an answer layout this master does not know: it ends at the silence
                    while self._wait_readable(self._quiet):
                        buf += self._read_some()
                    return buf, b""
            else:
                end = buf.find(b"\n")
                if end >= 0:
                    return buf[: end + 1], buf[end + 1 :]
            left = deadline - time.monotonic()
            if left <= 0 or not self._wait_readable(left):
                return None, buf
            buf += self._read_some()

    def _wait_readable(self, timeout: float) -> bool:
        try:
            ready, _, _ = select.select([self._fd], [], [], max(timeout, 0.0))
        except (OSError, ValueError) as exc:
            raise LinkLost(f"port failed: {exc}") from exc
        return bool(ready)

    def _read_some(self) -> bytes:
        try:
            data = os.read(self._fd, 512)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise LinkLost(f"read failed: {exc}") from exc
        if not data:
            raise LinkLost("the device reports data but returns none (unplugged?)")
        return data

    def _write(self, frame: bytes) -> None:
        view = memoryview(frame)
        deadline = time.monotonic() + self.cfg.timeout
        try:
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LinkLost("write timed out (flow control or a hung adapter)")
                _, ready, _ = select.select([], [self._fd], [], left)
                if ready:
                    view = view[os.write(self._fd, view) :]
        except (OSError, ValueError) as exc:
            raise LinkLost(f"write failed: {exc}") from exc


def make_link(cfg: ModbusConfig, report: FaultReport) -> Link:
    return TcpLink(cfg, report) if cfg.transport == "tcp" else SerialLink(cfg, report)
