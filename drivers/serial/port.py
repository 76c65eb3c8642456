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

The drivers themselves share more than the link: :class:`SerialDriverConfig` holds the
settings every serial driver has, :func:`link_for` builds the link from them,
:class:`SerialLineDriver` is the base class that runs it, and :class:`Requester` is the
poll loop with response timeouts of the drivers that send a request and await one answer.

The module is longer than most because these four share one life cycle (open, read,
drop, reopen, stop) and its threading rules; split, each piece would need the others'
internals. The frame rules are apart, in :mod:`drivers.serial.frames`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import termios
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, cast, runtime_checkable

import serial
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from drivers.backoff import Backoff
from drivers.base import DeviceEvent, Driver, DriverConfig, DriverError, EventKind, FrameError, Sink
from drivers.serial.frames import every_start, find_frame

log = logging.getLogger(__name__)

Terminator = Literal[b"\r", b"\r\n", b"\n"]
#: a terminator as written in a configuration file
TerminatorText = Literal["\r", "\n", "\r\n"]
TERMINATORS: dict[TerminatorText, Terminator] = {"\r": b"\r", "\n": b"\n", "\r\n": b"\r\n"}

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


# -- requests and timeouts ----------------------------------------------------------------------


class Requester:
    """Writes requests to a :class:`SerialLink` and reports the ones nobody answered.

    One thread, started by :meth:`start`, sends ``poll`` every ``poll_interval`` seconds
    (when both are given) and watches the deadline of the oldest unanswered request. The
    driver calls :meth:`answered` for every frame that answers (any answer, even a bad one,
    shows the device heard) and :meth:`cancel` when the link drops (the outage is already
    reported; a timeout on top of it would be noise). Requests are not queued: one deadline
    stands for all unanswered ones, and any answer retires it.

    ``logger`` is where its lines go (the driver's own logger); ``name`` prefixes them.
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
        logger: logging.Logger | None = None,
    ) -> None:
        if (poll is None) != (poll_interval is None):
            raise ValueError("poll and poll_interval go together")
        self.link = link
        self.name = name
        self.response_timeout = response_timeout
        self._on_timeout = on_timeout
        self._poll = poll
        self._interval = poll_interval
        self._log = logger if logger is not None else log
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

        Raises :class:`LinkDown` when the port is not connected.
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
            self._log.info("%s: answering again after %d timeouts", self.name, silent_for)

    def cancel(self) -> None:
        with self._cond:
            self._deadline = None

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a device fault: say so, but never kill the gateway
            self._log.exception("%s: requester crashed", self.name)

    def _loop(self) -> None:
        interval = self._interval
        next_poll = time.monotonic() if interval is not None else None
        while not self._stop.is_set():
            now = time.monotonic()
            if next_poll is not None and interval is not None and now >= next_poll:
                next_poll = next_slot(next_poll, now, interval)
                if self.link.connected and self._poll is not None:
                    try:
                        self.send(self._poll)
                    except LinkDown as exc:
                        self._log.debug("%s: poll skipped: %s", self.name, exc)
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
                log_timeout(self._log, self.name, detail, first=first)
                self._on_timeout(detail)


def next_slot(next_poll: float, now: float, interval: float) -> float:
    """The first poll time after ``now`` on the schedule ``next_poll + k * interval``.

    Slots missed during a stall are skipped instead of sent in a burst.
    """
    return next_poll + (int((now - next_poll) // interval) + 1) * interval


def log_timeout(logger: logging.Logger, name: str, detail: str, *, first: bool) -> None:
    """Every timeout is an event; only the first of a silence is worth a warning line."""
    logger.log(logging.WARNING if first else logging.DEBUG, "%s: timeout: %s", name, detail)


# -- drivers on a serial line -------------------------------------------------------------------


class SerialDriverConfig(DriverConfig):
    """The settings every line-framed serial driver has: the port, reconnect delays, a frame bound.

    Field types are the widest pyserial takes. A driver narrows them and sets its own
    defaults by declaring the field again (``bytesize: Literal[7, 8] = 7``); a field declared
    again keeps its place. A driver's own cross-field checks extend :meth:`_check`, calling
    ``super()._check()`` where the check of the reconnect delays belongs in their order.
    """

    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: StopBits = 1
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=10.0, gt=0)
    #: a line longer than this without terminator is garbage (wrong baud rate, noise)
    max_frame_length: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self._check()
        return self

    def _check(self) -> None:
        """Cross-field checks; raise ValueError."""
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be smaller than reconnect_min")


def link_for(
    config: SerialDriverConfig,
    on_frame: FrameCallback,
    on_event: EventCallback,
    *,
    terminator: Terminator,
) -> SerialLink:
    """The :class:`SerialLink` of a device: its port settings, frame bound and back-off, named by its id."""
    return SerialLink(
        SerialSettings(
            port=config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
        ),
        on_frame,
        on_event,
        terminator=terminator,
        max_frame_length=config.max_frame_length,
        backoff=Backoff(min_delay=config.reconnect_min, max_delay=config.reconnect_max),
        name=config.id,
    )


ConfigT = TypeVar("ConfigT", bound=SerialDriverConfig)
ParsedT = TypeVar("ParsedT")


class SerialLineDriver(Driver, Generic[ConfigT]):
    """Base of the drivers that read one line-framed serial port (a :class:`ByteStreamDriver`).

    It checks the configuration's type, builds ``self.link`` with :func:`link_for` and does
    what all these drivers do alike: start and stop the link, ``feed`` and ``end_of_stream``,
    pass the link's events on and report bad frames. Along with the link, start() and stop()
    run the driver's background work, of one of two kinds:

    * ``self.requester``, a :class:`Requester` (made by :meth:`_make_requester` or
      :meth:`_request_string`), for a driver that sends a request and takes the next line as
      its answer (it calls :meth:`_request_answered`);
    * :meth:`_work`, a loop of the driver's own, when :attr:`worker_name` is set: it runs in a
      thread until ``self._stop`` is set and waits on ``self._cond``, which stop() notifies.

    A driver sets :attr:`terminator` (or overrides :meth:`_terminator` when it is configured)
    and implements :meth:`_on_frame`. :meth:`_starting` runs before the link starts and
    :meth:`_stopped` after it stopped.
    """

    config_model: ClassVar[type[SerialDriverConfig]]
    #: what ends a frame on the wire
    terminator: ClassVar[Terminator]
    #: the prefix of the name of the thread that runs :meth:`_work`; None: no such loop
    worker_name: ClassVar[str | None] = None
    #: the poll loop of a driver that awaits answers through one
    requester: Requester | None = None

    def __init__(self, config: DriverConfig) -> None:
        model = self.config_model
        if not isinstance(config, model):
            article = "an" if model.__name__[:1] in "AEIOU" else "a"
            raise TypeError(f"{type(self).__name__} needs {article} {model.__name__}, got {type(config).__name__}")
        super().__init__(config)
        self.cfg = cast(ConfigT, config)
        # the driver module's logger: a line names the driver that wrote it
        self._log = logging.getLogger(type(self).__module__)
        self.link = link_for(config, self._on_frame, self._on_link_event, terminator=self._terminator())
        # guards the state the worker loop watches; the loop waits on it for deadlines and new work
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    def _terminator(self) -> Terminator:
        """What ends a frame (``self.cfg`` is set): :attr:`terminator` unless overridden."""
        return self.terminator

    def _make_requester(
        self, *, response_timeout: float, poll: bytes | None = None, poll_interval: float | None = None
    ) -> Requester:
        """A :class:`Requester` on this driver's link that reports timeouts as TIMEOUT events."""
        return Requester(
            self.link,
            self.cfg.id,
            response_timeout=response_timeout,
            on_timeout=self._timed_out,
            poll=poll,
            poll_interval=poll_interval,
            logger=self._log,
        )

    def _request_string(
        self, request: str | None, *, poll_interval: float | None, response_timeout: float
    ) -> bytes | None:
        """For a driver configured with a request string: its bytes, and ``self.requester`` to
        await its answers and send it every ``poll_interval`` seconds (if set). Without a
        request string: None, and no requester."""
        if request is None:
            return None
        data = request.encode("ascii")
        self.requester = self._make_requester(
            response_timeout=response_timeout,
            poll=data if poll_interval is not None else None,
            poll_interval=poll_interval,
        )
        return data

    # -- Driver -----------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        if self.link.running:
            raise DriverError(f"{self.device_id}: already started")
        self._starting()
        self._sink = sink
        self._stop.clear()
        self.link.start()
        if self.requester is not None:
            self.requester.start()
        if self.worker_name is not None:
            self._worker = threading.Thread(target=self._work, name=f"{self.worker_name}:{self.device_id}", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(2.0)
        if self.requester is not None:
            self.requester.stop()
        self.link.stop()
        self._stopped()

    # -- byte stream (also used by golden tests) ----------------------------------------------

    def feed(self, data: bytes, timestamp_ns: int | None = None) -> None:
        self.link.feed(data, timestamp_ns)

    def end_of_stream(self, timestamp_ns: int | None = None) -> None:
        self.link.end_of_stream(timestamp_ns)

    # -- for drivers --------------------------------------------------------------------------

    @abstractmethod
    def _on_frame(self, frame: bytes, raw: bytes, timestamp_ns: int) -> None:
        """One frame from the link (without terminator; ``raw`` as received)."""

    def _on_link_event(self, kind: EventKind, detail: str, raw: bytes, timestamp_ns: int) -> None:
        if kind is EventKind.DISCONNECTED and self.requester is not None:
            self.requester.cancel()  # the outage is reported; a timeout on top of it would be noise
        self.emit(DeviceEvent(self.device_id, kind, detail, raw, timestamp_ns))

    def command_bytes(self, command: str, **kwargs: Any) -> bytes:
        """The exact bytes :meth:`request` writes for ``command`` (golden cases check them).

        Raises :class:`~drivers.base.DriverError` for a request the driver does not know.
        """
        raise DriverError(f"driver {self.name!r} does not support request {command!r}")

    def _request_answered(self) -> None:
        """A frame answered the pending request: the requester (if any) stops waiting for it."""
        if self.requester is not None:
            self.requester.answered()

    def _find(
        self,
        frame: bytes,
        raw: bytes,
        timestamp_ns: int,
        parse: Callable[[bytes], ParsedT],
        starts: Callable[[bytes], Iterable[int]] = every_start,
    ) -> tuple[ParsedT, bytes] | None:
        """The frame in a line and its raw bytes, noise before it reported as a bad frame.

        ``parse`` is the codec's strict parser; ``starts`` where a frame may begin after
        noise (see :mod:`drivers.serial.frames`). None: the line holds no frame, reported.
        """
        try:
            found = find_frame(frame, parse, starts)
        except FrameError as exc:
            self._bad_frame(exc.reason, raw, timestamp_ns)
            return None
        if found.skip:
            self._bad_frame(f"{found.skip} bytes of noise before a frame", raw[: found.skip], timestamp_ns)
        return found.parsed, raw[found.skip :]

    def _bad_frame(self, reason: str, raw: bytes, timestamp_ns: int) -> None:
        self._log.warning("%s: bad frame: %s: %r", self.device_id, reason, raw)
        self.emit(DeviceEvent(self.device_id, EventKind.BAD_FRAME, reason, raw, timestamp_ns))

    def _timed_out(self, detail: str) -> None:
        self.emit(DeviceEvent(self.device_id, EventKind.TIMEOUT, detail))

    def _work(self) -> None:
        """The driver's own loop, if :attr:`worker_name` is set."""

    def _starting(self) -> None:
        """Before the link starts (no thread of the driver runs): reset state, check settings."""

    def _stopped(self) -> None:
        """After the link and the driver's threads stopped: drop what was in flight."""
