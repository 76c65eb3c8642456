"""What every serial device simulator shares, so that each module keeps only its protocol.

:class:`PtySimulator` owns the :class:`~simulators.pty.PtyPort` and the one thread that
plays the device: start, stop, close, the context manager, unplug/replug of the cable,
silence, the seeded random source and the ``on_send`` listener. :class:`RecordingSimulator`
adds the record of everything written, one record per write; :class:`LineCommandSimulator`
is the transport of devices that answer command lines with CR LF lines (ID-H, MT-SICS).

The helpers at the end are the plumbing of the ``simulators`` subcommands: argument types,
the printer of sent frames, :func:`serve` (one simulator until stopped) and
:func:`run_until_signalled` (a parsed subcommand until Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import abc
import argparse
import codecs
import datetime
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from simulators.pty import PortUnplugged, PtyPort

log = logging.getLogger(__name__)

#: called after every write with the bytes and their kind (each simulator names its kinds)
SendListener = Callable[[bytes, str], None]


class PtySimulator(abc.ABC):
    """Owns a :class:`PtyPort` at ``link`` (created at once, so a driver can connect before
    :meth:`start`) and runs :meth:`_run` in a thread until :meth:`stop`.

    ``_lock`` (reentrant) guards the subclass's device state, its record of what was sent
    and the order of frames on the wire. ``_run`` must return soon after ``_stop`` is set;
    it waits on ``_stop`` rather than sleeping, and honours ``_silent``.
    """

    #: the thread is named ``f"{thread_name}:{link}"``
    thread_name: ClassVar[str] = "pty-sim"
    #: how long :meth:`stop` waits for the thread to end
    join_timeout: ClassVar[float] = 5.0

    def __init__(
        self, link: str | os.PathLike[str], *, seed: int | None = None, on_send: SendListener | None = None
    ) -> None:
        self.port = PtyPort(link)
        self._on_send = on_send
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._silent = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def link(self) -> str:
        return str(self.port.link)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("simulator already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.thread_name}:{self.link}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread. The port stays plugged; see :meth:`close`."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.join_timeout)

    def close(self) -> None:
        self.stop()
        self.port.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------------------

    def go_silent(self, silent: bool = True) -> None:
        """Send and answer nothing until called with False (what arrives is still read and recorded)."""
        if silent:
            self._silent.set()
        else:
            self._silent.clear()

    def unplug(self) -> None:
        self.port.unplug()

    def replug(self) -> None:
        self.port.replug()

    # -- internals --------------------------------------------------------------------------

    def _notify(self, data: bytes, kind: str) -> None:
        """Tell the ``on_send`` listener about a write."""
        if self._on_send is not None:
            self._on_send(data, kind)

    def _chance(self, rate: float) -> bool:
        """True with probability ``rate``; draws from ``_rng`` only when ``rate`` is not 0."""
        with self._lock:
            return bool(rate) and self._rng.random() < rate

    @abc.abstractmethod
    def _run(self) -> None:
        """The device: runs in the simulator's thread until ``_stop`` is set."""

    def _read_loop(
        self,
        take: Callable[[bytes], bytes],
        *,
        poll: float,
        push: Callable[[], object] | None = None,
        interval: float = 1.0,
    ) -> None:
        """A ``_run`` for devices that are talked to: hand what arrives to ``take`` (it acts
        on every complete command and returns what may still become one) until stopped.

        With ``push`` the device also sends by itself every ``interval`` seconds (a print
        key, auto print), unless silent; a push the cable or the driver loses is dropped.
        """
        pending = b""
        next_push = time.monotonic() + interval
        while not self._stop.is_set():
            if not self.port.plugged:
                pending = b""
                self._stop.wait(poll)
                continue
            wait = poll
            if push is not None:
                wait = max(0.0, min(wait, next_push - time.monotonic()))
            pending = take(pending + self.port.read_available(wait))
            now = time.monotonic()
            if push is not None and now >= next_push:
                next_push += (int((now - next_push) // interval) + 1) * interval
                if not self._silent.is_set():
                    try:
                        push()
                    except (PortUnplugged, TimeoutError):
                        continue  # as with a cable pulled mid-frame


class Record(Protocol):
    """One write as a :class:`RecordingSimulator` keeps it."""

    @property
    def data(self) -> bytes: ...

    @property
    def kind(self) -> str: ...


RecordT = TypeVar("RecordT", bound=Record)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Sent(Generic[V]):
    """A write and, for a frame that carries one, the value it carries."""

    data: bytes
    kind: str
    value: V | None = None


class RecordingSimulator(PtySimulator, Generic[RecordT]):
    """A :class:`PtySimulator` that keeps one record per write, in order.

    Records of the kinds ``bad`` and ``garbage`` are the faults: :attr:`bad_frames`.
    """

    def __init__(
        self, link: str | os.PathLike[str], *, seed: int | None = None, on_send: SendListener | None = None
    ) -> None:
        super().__init__(link, seed=seed, on_send=on_send)
        self._sent: list[RecordT] = []

    @property
    def sent(self) -> list[RecordT]:
        with self._lock:
            return list(self._sent)

    @property
    def sent_frames(self) -> list[bytes]:
        return [s.data for s in self.sent]

    @property
    def bad_frames(self) -> list[bytes]:
        return [s.data for s in self.sent if s.kind in ("bad", "garbage")]

    def _write(self, record: RecordT, *, timeout: float = 2.0) -> None:
        """Write ``record.data`` and keep the record. Raises PortUnplugged or TimeoutError."""
        with self._lock:
            self.port.write(record.data, timeout)
            self._sent.append(record)
        self._notify(record.data, record.kind)


class LineCommandSimulator(RecordingSimulator[Sent[V]]):
    """A device that reads command lines (ended by CR LF) and answers with CR LF lines, one
    of which is corrupted in transit now and then (``bad_rate``).

    Subclasses answer in :meth:`reply_to`, through :meth:`_send`: a reply the cable or the
    driver loses is dropped (and not recorded), as a real device does not notice either.
    """

    #: a longer run without a line end is noise: dropped
    max_command: ClassVar[int] = 64
    #: what ends a command line
    command_terminator: ClassVar[bytes] = b"\r\n"

    def __init__(
        self,
        link: str | os.PathLike[str],
        *,
        bad_rate: float = 0.0,
        seed: int | None = None,
        on_send: SendListener | None = None,
    ) -> None:
        super().__init__(link, seed=seed, on_send=on_send)
        self._bad_rate = bad_rate
        self._commands: list[str] = []  # every command line received
        self._reply_delay = 0.0

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._commands)

    def set_reply_delay(self, seconds: float) -> None:
        """Wait this long before every reply (a slow device, or a busy one)."""
        with self._lock:
            self._reply_delay = seconds

    def send_garbage(self, data: bytes) -> None:
        """Send arbitrary bytes; they are recorded as one bad frame."""
        self._send(data, "garbage")

    @abc.abstractmethod
    def reply_to(self, command: str) -> None:
        """Handle one command line (the thread calls this for every non-blank line)."""

    def _send(self, data: bytes, kind: str, *, value: V | None = None) -> None:
        with self._lock:
            if kind not in ("garbage", "bad") and self._chance(self._bad_rate):
                data, kind, value = self._corrupt(data), "bad", None
            try:
                # short: a reply nobody drains must not keep stop() waiting
                self._write(Sent(data, kind, value), timeout=0.5)
            except (PortUnplugged, TimeoutError) as exc:
                log.debug("%s: %r lost: %s", self.link, data, exc)

    def _truncate(self, line: bytes, pos: int) -> bytes:
        """``line`` (CR LF ended) that lost its end after ``pos``; its CR LF still arrives."""
        # never empty: a blank line is skipped by every reader, not seen as a fault
        return line[:-2][: max(pos, 1)] + b"\r\n"

    def _corrupt(self, line: bytes) -> bytes:
        body = line[:-2]
        pos = self._rng.randrange(0, len(body))
        how = self._rng.randrange(3)
        if how == 0:
            return self._truncate(line, pos)  # the end of the line was lost
        if how == 1:
            return body[:pos] + b"\xff" + body[pos + 1 :] + b"\r\n"  # a character garbled
        return body[:pos] + b"?" + body[pos:] + b"\r\n"  # noise inserted

    def _take_lines(self, pending: bytes) -> bytes:
        """Answers every complete command line in ``pending``; returns the incomplete rest.

        A command ends with :attr:`command_terminator` exactly; a line with control bytes
        in it (a lone CR or LF, noise) is no command, and the device ignores it.
        """
        term = self.command_terminator
        while (cut := pending.find(term)) >= 0:
            line, pending = pending[:cut], pending[cut + len(term) :]
            if line and all(0x20 <= b <= 0x7E for b in line):
                self.reply_to(line.decode("ascii"))
        return b"" if len(pending) > self.max_command else pending


# -- command line -----------------------------------------------------------------------------------


def decimal_arg(text: str) -> Decimal:
    """argparse type: a decimal number (``NaN`` and ``Infinity`` pass; see :func:`finite_decimal_arg`)."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None


def finite_decimal_arg(text: str) -> Decimal:
    """argparse type: a finite decimal number."""
    value = decimal_arg(text)
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def rate_arg(text: str) -> float:
    """argparse type: a probability, 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1: {text}")
    return value


def escaped_arg(text: str) -> bytes:
    """argparse type: shells pass ``'\\r\\n'`` with literal backslashes; decode C-style escapes into bytes."""
    try:
        return codecs.escape_decode(text.encode("latin-1"))[0]
    except (ValueError, UnicodeEncodeError) as exc:
        raise argparse.ArgumentTypeError(f"bad escape in {text!r}: {exc}") from None


def printer(out: Callable[[str], None], kind_width: int = 8) -> SendListener:
    """An ``on_send`` listener that prints every write: time (UTC), kind, bytes."""

    def on_send(data: bytes, kind: str) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        out(f"{now} {kind:<{kind_width}} {data!r}")

    return on_send


SimT = TypeVar("SimT", bound=PtySimulator)


def serve(
    name: str,
    build: Callable[[], SimT],
    out: Callable[[str], None],
    stop: threading.Event,
    *,
    note: str = "",
    mode: str | None = None,
    configure: Callable[[SimT], None] | None = None,
) -> int:
    """Run the simulator ``build`` makes until ``stop`` is set; the body of a subcommand.

    Options that make no simulator (``build`` or ``configure`` raising ValueError, or
    ``build`` failing to create the pty) end it with exit code 2 and the reason on stderr.
    ``note`` and ``mode`` go into the banner: ``<name> simulator<note> on <link> -> <pty>
    (<mode> mode)``. Closing the simulator removes the link.
    """
    try:
        sim = build()
    except (ValueError, KeyError, IndexError, OSError) as exc:
        print(f"simulators {name}: {exc}", file=sys.stderr)
        return 2
    with sim:
        if configure is not None:
            try:
                configure(sim)
            except ValueError as exc:
                print(f"simulators {name}: {exc}", file=sys.stderr)
                return 2
        shown_mode = f" ({mode} mode)" if mode else ""
        out(f"{name} simulator{note} on {sim.link} -> {sim.port.slave_name}{shown_mode}; Ctrl-C stops")
        sim.start()
        stop.wait()
    return 0


def run_until_signalled(args: argparse.Namespace) -> int:
    """Run the parsed subcommand (``args.run``) printing to stdout, until SIGINT or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGTERM too, so `kill` or a service manager removes the pty link like Ctrl-C does
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        code: int = args.run(args, out, stop)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
