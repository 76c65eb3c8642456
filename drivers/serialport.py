"""A reconnecting, line-framed serial reader shared by every serial driver.

:class:`SerialLink` owns one background thread that opens the port with pyserial, reads
bytes, cuts them into frames with a :class:`LineFramer` and hands each frame to the
driver. When the port disappears (USB adapter unplugged, pty master closed) it reports one
``DISCONNECTED`` per outage, retries with exponential backoff until the path comes back,
then reports ``CONNECTED``. Nothing raised by the port or by the driver's callbacks ever
escapes the thread: a collector must keep running through cable faults.

Drivers see two callbacks: ``on_frame(frame, raw, timestamp_ns)`` with the frame without
its terminator and the bytes as received, and ``on_event(kind, detail, raw, timestamp_ns)``
for ``CONNECTED``, ``DISCONNECTED`` and ``BAD_FRAME`` (framing faults only: a line too
long, or a partial line cut off by a disconnect). The same framing path is reachable
without a port through :meth:`SerialLink.feed`, which golden tests use.
"""

from __future__ import annotations

import contextlib
import logging
import random
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, runtime_checkable

import serial
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from drivers.base import DriverError, EventKind

log = logging.getLogger(__name__)

Terminator = Literal[b"\r", b"\r\n", b"\n"]

FrameCallback = Callable[[bytes, bytes, int], None]
"""``(frame without terminator, raw bytes as received, timestamp_ns)``"""

EventCallback = Callable[[EventKind, str, bytes, int], None]
"""``(kind, detail, raw, timestamp_ns)``"""


def _check_stopbits(value: float) -> float:
    if value not in (1, 1.5, 2):
        raise ValueError("stopbits must be 1, 1.5 or 2")
    return value


#: 1, 1.5 or 2 (Literal cannot hold 1.5, hence a validator)
StopBits = Annotated[float, AfterValidator(_check_stopbits)]


class LinkDown(DriverError):
    """A write was attempted while the port is not open (unplugged, not yet connected)."""


class SerialSettings(BaseModel):
    """How to open the port. Values are pyserial's, validated here so a typo fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: StopBits = 1
    #: bounds how long the reader thread is deaf to stop(); it is not a frame timeout
    read_timeout: float = Field(default=0.05, gt=0, le=0.5)
    #: a device that stops draining its input must not hang the caller of write()
    write_timeout: float = Field(default=1.0, gt=0)


class Backoff(BaseModel):
    """Reconnect delays: ``min_delay`` doubling up to ``max_delay``, each stretched by up to ``jitter``.

    Jitter keeps a cabinet of gateways from hammering a shared USB hub in lockstep after a
    power blip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_delay: float = Field(default=0.2, gt=0)
    max_delay: float = Field(default=10.0, gt=0)
    factor: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_delay < self.min_delay:
            raise ValueError("max_delay must not be smaller than min_delay")
        return self

    def delays(self, rng: random.Random) -> BackoffDelays:
        return BackoffDelays(self, rng)


class BackoffDelays:
    """The delay sequence of one outage."""

    def __init__(self, policy: Backoff, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._next = policy.min_delay

    def __next__(self) -> float:
        base = self._next
        self._next = min(base * self._policy.factor, self._policy.max_delay)
        return base * (1.0 + self._rng.uniform(0.0, self._policy.jitter))


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes  # without terminator
    raw: bytes  # as received, terminator included


@dataclass(frozen=True, slots=True)
class Overflow:
    raw: bytes  # the first max_length bytes of a line that never ended in time


class LineFramer:
    """Cuts a byte stream into terminator-delimited frames, with bounded memory.

    * With ``b"\\r"`` configured, an LF right after a CR is taken as the rest of a CR LF
      terminator: it is dropped from the start of the next frame (and from its raw bytes,
      since it belongs to the frame already delivered).
    * With ``b"\\n"`` configured, a CR before the LF is dropped from the frame (kept in raw).
    * Empty lines are skipped: blank lines carry nothing and some devices pad with them.
    * A line reaching ``max_length`` bytes without a terminator is reported as an
      :class:`Overflow` and discarded; the rest of that line, up to its terminator, is
      discarded too (reported again for every further ``max_length`` bytes), so a stream of
      garbage costs at most ``max_length`` bytes of memory.
    """

    def __init__(self, terminator: bytes = b"\r", max_length: int = 256) -> None:
        if terminator not in (b"\r", b"\r\n", b"\n"):
            raise ValueError(f"unsupported terminator {terminator!r}")
        if max_length < 1:
            raise ValueError("max_length must be positive")
        self.terminator = terminator
        self.max_length = max_length
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> bytes:
        """Bytes of the incomplete frame received so far."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[Frame | Overflow]:
        out: list[Frame | Overflow] = []
        self._buf += data
        term = self.terminator
        limit = self.max_length
        while True:
            if term == b"\r" and self._buf[:1] == b"\n":
                del self._buf[:1]
            # a terminator starting at index <= limit ends a frame of at most limit bytes
            end = self._buf.find(term, 0, limit + len(term))
            if end < 0:
                if len(self._buf) < limit + len(term):
                    return out
                out.append(Overflow(bytes(self._buf[:limit])))
                del self._buf[:limit]
                self._discarding = True
                continue
            raw = bytes(self._buf[: end + len(term)])
            del self._buf[: end + len(term)]
            if self._discarding:
                # the tail of a line already reported as overflow
                self._discarding = False
                continue
            frame = raw[:end]
            if term == b"\n" and frame.endswith(b"\r"):
                frame = frame[:-1]
            if frame:
                out.append(Frame(frame, raw))

    def flush(self) -> bytes:
        """Drop and return the incomplete frame (the stream ended or the link dropped)."""
        rest = b"" if self._discarding else bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        return rest


@runtime_checkable
class ByteStreamDriver(Protocol):
    """A driver whose input is a byte stream and can be fed without a port.

    ``feed`` must run the very code path that bytes read from the port take (framing and
    parsing), emitting to the driver's sink; ``end_of_stream`` reports a trailing incomplete
    frame as a disconnect would. The golden tests drive every such driver this way.
    """

    def feed(self, data: bytes, timestamp_ns: int | None = None) -> None: ...

    def end_of_stream(self, timestamp_ns: int | None = None) -> None: ...


class SerialLink:
    """One serial port, read by a background thread, reconnected forever until :meth:`stop`.

    ``name`` prefixes every log line (use the device id). ``rng`` only matters for tests
    that want reproducible jitter.
    """

    def __init__(
        self,
        settings: SerialSettings,
        on_frame: FrameCallback,
        on_event: EventCallback,
        *,
        terminator: Terminator = b"\r",
        max_frame_length: int = 256,
        backoff: Backoff | None = None,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.backoff = backoff if backoff is not None else Backoff()
        self.name = name if name is not None else settings.port
        self._on_frame = on_frame
        self._on_event = on_event
        self._framer = LineFramer(terminator, max_frame_length)
        self._rng = rng if rng is not None else random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # guards self._port against a write() racing the reader thread's close()
        self._port_lock = threading.Lock()
        self._port: serial.Serial | None = None
        self._connected = threading.Event()

    # -- public -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name}: link already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial:{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the reader and close the port. Idempotent; returns within about ``timeout``."""
        self._stop.set()
        # under the lock so the reader cannot close the port (and free its fds) meanwhile
        with self._port_lock:
            if self._port is not None:
                # wakes the select() in read() at once; if it fails, the read timeout is short anyway
                with contextlib.suppress(serial.SerialException, OSError):
                    self._port.cancel_read()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: reader thread did not stop within %.1f s", self.name, timeout)
            else:
                self._thread = None

    def write(self, data: bytes) -> None:
        """Send bytes to the device. Raises :class:`LinkDown` when the port is not usable."""
        with self._port_lock:
            port = self._port
            if port is None:
                raise LinkDown(f"{self.name}: port {self.settings.port} is not connected")
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                # the reader thread sees the same fault on its next read and reports it
                raise LinkDown(f"{self.name}: write failed: {exc}") from exc

    def feed(self, data: bytes, timestamp_ns: int | None = None) -> None:
        """Push bytes through framing as if read from the port (the reader thread calls this)."""
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        for item in self._framer.feed(data):
            if isinstance(item, Frame):
                self._deliver_frame(item.data, item.raw, ts)
            else:
                detail = f"no terminator within {self._framer.max_length} bytes"
                log.warning("%s: bad frame: %s: %r", self.name, detail, item.raw[:40])
                self._deliver_event(EventKind.BAD_FRAME, detail, item.raw, ts)

    def end_of_stream(self, timestamp_ns: int | None = None) -> None:
        """Report a pending incomplete frame as a bad frame (the stream was cut)."""
        rest = self._framer.flush()
        if rest:
            ts = time.time_ns() if timestamp_ns is None else timestamp_ns
            detail = "incomplete frame at end of stream"
            log.warning("%s: bad frame: %s: %r", self.name, detail, rest[:40])
            self._deliver_event(EventKind.BAD_FRAME, detail, rest, ts)

    # -- thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a cable fault: say so loudly, but never kill the gateway
            log.exception("%s: serial reader crashed", self.name)
        finally:
            self._close()

    def _loop(self) -> None:
        down_reported = False
        delays = self.backoff.delays(self._rng)
        while not self._stop.is_set():
            if self._port is None:
                error = self._open()
                if error is not None:
                    if not down_reported:
                        down_reported = True
                        log.warning("%s: disconnected: %s", self.name, error)
                        self._deliver_event(EventKind.DISCONNECTED, error, b"", time.time_ns())
                    self._stop.wait(next(delays))
                    continue
                down_reported = False
                delays = self.backoff.delays(self._rng)
                self._connected.set()
                log.info("%s: connected to %s", self.name, self.settings.port)
                self._deliver_event(EventKind.CONNECTED, f"opened {self.settings.port}", b"", time.time_ns())
            port = self._port
            assert port is not None
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                self._close()
                self.end_of_stream()
                down_reported = True
                detail = f"read failed: {exc}"
                log.warning("%s: disconnected: %s", self.name, detail)
                self._deliver_event(EventKind.DISCONNECTED, detail, b"", time.time_ns())
                # a device that vanished rarely returns within milliseconds
                self._stop.wait(next(delays))
                continue
            if data:
                self.feed(data, time.time_ns())

    def _open(self) -> str | None:
        s = self.settings
        try:
            port = serial.Serial(
                port=s.port,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=s.read_timeout,
                write_timeout=s.write_timeout,
            )
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            # termios.error: the port refused a setting (a pty forces 8 data bits); like a missing
            # port, a reason to retry with back-off, never to end the reader thread
            return f"cannot open {s.port}: {exc}"
        with self._port_lock:
            self._port = port
        return None

    def _close(self) -> None:
        self._connected.clear()
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            # closing a vanished device can fail; there is nothing left to release then
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    # -- callbacks ---------------------------------------------------------------------------

    def _deliver_frame(self, frame: bytes, raw: bytes, ts: int) -> None:
        try:
            self._on_frame(frame, raw, ts)
        except Exception:
            log.exception("%s: frame handler failed on %r", self.name, raw)

    def _deliver_event(self, kind: EventKind, detail: str, raw: bytes, ts: int) -> None:
        try:
            self._on_event(kind, detail, raw, ts)
        except Exception:
            log.exception("%s: event handler failed on %s", self.name, kind)
