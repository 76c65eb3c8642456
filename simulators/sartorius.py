"""A Sartorius balance speaking SBI, on a pty.

Written from the "Data Output Format" sections of Sartorius balance manuals (FB series:
16 and 22 characters, special codes, error codes, unit symbols; LE/LP series: output
format with 16 characters; Master series: data output with ID code, status and error
strings). A value frame is position 1 the sign (``+`` or ``-``; a space instead of the
plus on models whose display shows none), 2 a space, 3-10 the weight right-aligned with
leading zeros as spaces and the decimal point suppressed without decimals, 11 a space,
12-14 the unit symbol left-aligned, CR LF. While the balance has not stabilised no unit
symbol is output. With an ID code six characters (``N``, ``G#`` ...) come first.

Special codes stand in positions 7-8 of the 16 characters (13-14 of the 22, after
``Stat``), error codes ``Err ###`` in positions 4-10 (``ERR ###`` in 10-16 of the 22), as
the Master series strings place them.

The commands are those of the Cubis MSE operating instructions, "SBI Commands (Data Input
Format)", format 1 (``Esc`` and one character, CR LF optional): the balance answers
``ESC P`` with one frame, tares on ``ESC T`` / ``ESC U``, zeroes on ``ESC V`` and counts
calibrations on ``ESC Z``. In push mode it also prints by itself every ``interval`` seconds (auto print).
After a tare, a zero, a calibration or a new load it settles: the next ``settle_frames``
frames have a blank unit field.

Faults on demand: a special or error code instead of values, garbage, truncated frames,
silence, slow answers, unplug and replug. Everything sent is recorded so tests can compare
what the driver delivered.

Serial settings (``9600 7O1``, ``19200 8N1``) mean nothing on a pty; the parameter exists so
a bench set-up documents what the real balance would need.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from simulators.base import RecordingSimulator, SendListener, decimal_arg, printer, rate_arg, serve
from simulators.pty import PortUnplugged

log = logging.getLogger(__name__)

Mode = Literal["push", "request"]

ESC = 0x1B
VALUE_WIDTH = 8
DATA_WIDTH = 14  # a 16-character frame without CR LF
IDENTIFIER_WIDTH = 6
_SERIAL = re.compile(r"(?P<baud>[0-9]+) (?P<bits>[5-8])(?P<parity>[NEOMS])(?P<stop>1|1\.5|2)")


def _printable(text: str) -> bool:
    return text.isascii() and all(" " <= c <= "~" for c in text)


#: special codes and error codes the manuals list
SPECIAL_CODES = ("H", "HH", "L", "LL", "C", "High", "Low")


def _with_identifier(data: str, identifier: str | None) -> bytes:
    if identifier is not None:
        if not identifier or len(identifier) > IDENTIFIER_WIDTH or not _printable(identifier) or identifier[0] == " ":
            raise ValueError(f"identifier must be 1 to {IDENTIFIER_WIDTH} printable characters: {identifier!r}")
        data = identifier.ljust(IDENTIFIER_WIDTH) + data
    return (data + "\r\n").encode("ascii")


def format_frame(
    value: Decimal, unit: str | None, decimals: int, identifier: str | None = None, plus: str = "+"
) -> bytes:
    """The balance's frame for ``value``: ``+    12.34 g  \\r\\n``; ``unit`` None blanks the
    unit field (not settled); ``identifier`` makes it the 22-character frame.

    Raises ValueError for a value with more decimals than shown, or too wide for the field.
    """
    if not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be 0..6, got {decimals}")
    if plus not in ("+", " "):
        raise ValueError(f"the plus sign is '+' or a space, got {plus!r}")
    if not value.is_finite():
        raise ValueError(f"value {value} is not finite")
    shown = value.quantize(Decimal(1).scaleb(-decimals))
    if shown != value:
        raise ValueError(f"value {value} has more than {decimals} decimals")
    digits = format(abs(shown), f".{decimals}f")
    if len(digits) > VALUE_WIDTH:
        raise ValueError(f"value {value} does not fit in {VALUE_WIDTH} characters")
    unit_text = unit or ""
    if len(unit_text) > 3 or " " in unit_text or not _printable(unit_text):
        raise ValueError(f"unit must be up to 3 printable characters without spaces: {unit!r}")
    sign = "-" if shown.is_signed() else plus
    return _with_identifier(f"{sign} {digits:>{VALUE_WIDTH}} {unit_text:<3}", identifier)


def format_special(text: str, identifier: str | None = None) -> bytes:
    """A frame with a special code (``H``, ``LL``, ``High`` ...) or an error code (``Err 123``)
    instead of a value; with ``identifier`` (``Stat``) the 22-character form."""
    words = text.split()
    if len(words) == 1 and text in SPECIAL_CODES:
        data = f"{'':6}{text:<8}"
    elif len(words) == 2 and words[0] in ("Err", "ERR") and words[1].isdigit() and len(words[1]) <= 3:
        data = f"{'':3}{words[0]} {words[1]:<3}{'':4}"
    else:
        raise ValueError(f"not a special or error code of the manuals: {text!r}")
    return _with_identifier(data, identifier)


def parse_serial_settings(text: str) -> tuple[int, int, str, float]:
    """``"9600 7O1"`` -> ``(9600, 7, "O", 1)``."""
    m = _SERIAL.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"serial settings must look like '9600 7O1', got {text!r}")
    return int(m["baud"]), int(m["bits"]), m["parity"], float(m["stop"])


@dataclass(frozen=True, slots=True)
class Scenario:
    """What lies on the pan. Floats are fine: values are quantised to ``decimals`` first."""

    nominal: Decimal = Decimal("100.00")
    noise: float = 0.01  # standard deviation
    decimals: int = 2
    unit: str = "g"
    identifier: str | None = None  # None: 16-character frames; "N": 22-character frames
    plus: str = "+"  # what position 1 holds for a positive weight: "+" or " "
    settle_frames: int = 0  # unstable frames after a tare, zero, calibration or new load
    bad_rate: float = 0.0  # probability that a frame is corrupted instead
    interval: float = 0.5  # push mode: seconds between prints
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within 0..1, got {self.bad_rate}")
        if self.noise < 0 or self.settle_frames < 0:
            raise ValueError("noise and settle_frames must not be negative")
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        format_frame(
            self.nominal.quantize(Decimal(1).scaleb(-self.decimals)),
            self.unit,
            self.decimals,
            self.identifier,
            self.plus,
        )


@dataclass(frozen=True, slots=True)
class Sent:
    data: bytes
    kind: str  # value, unstable, special, bad, garbage
    value: Decimal | None = None
    special: str | None = None


class SartoriusSimulator(RecordingSimulator[Sent]):
    """The balance on a pty (see :class:`~simulators.base.PtySimulator`)."""

    thread_name = "sartorius-sim"

    def __init__(
        self,
        link: str | os.PathLike[str],
        scenario: Scenario | None = None,
        *,
        mode: Mode = "request",
        serial_settings: str = "9600 7O1",
        on_send: SendListener | None = None,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        self.mode: Mode = mode
        self.serial_settings = parse_serial_settings(serial_settings)
        super().__init__(link, seed=self.scenario.seed, on_send=on_send)
        self._commands: list[str] = []  # command letters received, in order
        self._load = self.scenario.nominal
        self._tare = Decimal(0)
        self._zero = Decimal(0)
        self._settle_left = 0
        self._special: str | None = None
        self._delay = 0.0

    # -- what was sent ----------------------------------------------------------------------

    @property
    def sent_values(self) -> list[Decimal]:
        """Values of settled and unsettled value frames, in order."""
        return [s.value for s in self.sent if s.value is not None]

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._commands)

    @property
    def requests_received(self) -> int:
        return self.commands.count("P")

    @property
    def tare(self) -> Decimal:
        with self._lock:
            return self._tare

    # -- the balance ------------------------------------------------------------------------

    def put_load(self, weight: Decimal) -> None:
        """Put ``weight`` (gross) on the pan; the balance settles again."""
        with self._lock:
            self._load = weight
            self._settle_left = self.scenario.settle_frames

    def show_special(self, text: str | None) -> None:
        """Show a special text (``High``, ``Err 123``) instead of values until called with None."""
        if text is not None:
            format_special(text)  # refuse what no frame can carry, now rather than in the thread
        with self._lock:
            self._special = text

    def next_value(self) -> Decimal:
        """The displayed net value now (draws noise)."""
        s = self.scenario
        with self._lock:
            offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
            net = self._load + Decimal(repr(offset)) - self._zero - self._tare
        return net.quantize(Decimal(1).scaleb(-s.decimals))

    def print_frame(self) -> bytes | None:
        """Print what the display shows now, as ESC P would. Returns the bytes, or None when
        the value does not fit the display (a real balance would show High)."""
        s = self.scenario
        with self._lock:
            special = self._special
            if special is not None:
                frame = format_special(special, self._status_id())
                self._write(Sent(frame, "special", special=special))
                return frame
            value = self.next_value()
            stable = self._settle_left == 0
            if not stable:
                self._settle_left -= 1
            try:
                frame = format_frame(value, s.unit if stable else None, s.decimals, s.identifier, s.plus)
            except ValueError as exc:
                log.warning("sartorius simulator: nothing sent: %s", exc)
                return None
            if self._chance(s.bad_rate):
                bad = self._corrupt(frame)
                self._write(Sent(bad, "bad"))
                return bad
            self._write(Sent(frame, "value" if stable else "unstable", value=value))
            return frame

    # -- faults -----------------------------------------------------------------------------

    def send_value(self, value: Decimal, *, stable: bool = True) -> bytes:
        """Send one value frame now, whatever the pan holds."""
        s = self.scenario
        frame = format_frame(value, s.unit if stable else None, s.decimals, s.identifier, s.plus)
        self._write(Sent(frame, "value" if stable else "unstable", value=value))
        return frame

    def send_special(self, text: str) -> bytes:
        frame = format_special(text, self._status_id())
        self._write(Sent(frame, "special", special=text))
        return frame

    def send_garbage(self, data: bytes) -> None:
        self._write(Sent(data, "garbage"))

    def send_truncated(self) -> bytes:
        """A frame that lost characters in transit (its CR LF still arrives)."""
        s = self.scenario
        frame = format_frame(self.next_value(), s.unit, s.decimals, s.identifier, s.plus)
        with self._lock:
            cut = self._rng.randrange(1, len(frame) - 3)
        bad = frame[:cut] + b"\r\n"
        self._write(Sent(bad, "bad"))
        return bad

    def set_delay(self, seconds: float) -> None:
        """Answer ESC P only after ``seconds`` (a slow balance, or print-when-stable)."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._lock:
            self._delay = seconds

    # -- internals --------------------------------------------------------------------------

    def _status_id(self) -> str | None:
        """With ID codes on, special and error codes come with the ID code ``Stat``."""
        return "Stat" if self.scenario.identifier is not None else None

    def _corrupt(self, frame: bytes) -> bytes:
        with self._lock:
            kind = self._rng.randrange(3)
            pos = self._rng.randrange(0, len(frame) - 2)
        if kind == 0:
            return frame[:pos] + frame[pos + 1 :]  # a character lost
        if kind == 1:
            return frame[:pos] + b"\xa7" + frame[pos + 1 :]  # a character garbled (parity error)
        return frame[:pos] + b"\xff" + frame[pos:]  # line noise inserted

    def _command(self, letter: str) -> None:
        with self._lock:
            self._commands.append(letter)
            if letter in ("T", "U"):
                self._tare = self._load - self._zero
            elif letter == "V":
                self._zero, self._tare = self._load, Decimal(0)
            if letter in ("T", "U", "V", "Z"):
                self._settle_left = self.scenario.settle_frames
            # unknown letters are ignored, as a real balance ignores them
            if letter != "P":
                return
            delay = self._delay
        if self._silent.is_set():
            return
        if delay and self._stop.wait(delay):
            return
        if not self._silent.is_set():
            self.print_frame()

    def _take_commands(self, pending: bytes) -> bytes:
        """Runs every complete ESC command in ``pending``; returns what may still become one."""
        while True:
            at = pending.find(ESC)
            if at < 0:
                return b""  # CR LF after commands, or noise: nothing to keep
            if at + 1 >= len(pending):
                return pending[at:]
            letter = chr(pending[at + 1])
            pending = pending[at + 2 :]
            try:
                self._command(letter)
            except (PortUnplugged, TimeoutError):
                return b""  # unplugged meanwhile, or nobody reading: the answer is lost

    def _run(self) -> None:
        push = self.print_frame if self.mode == "push" else None
        self._read_loop(self._take_commands, poll=0.05, push=push, interval=self.scenario.interval)


# -- command line --------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators sartorius-sbi``."""
    p = sub.add_parser("sartorius-sbi", help="Sartorius balance, SBI protocol (ESC P, 16/22-character frames)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--mode", choices=("request", "push"), default="request", help="push = auto print")
    p.add_argument("--frame", choices=("16", "22"), default="16")
    p.add_argument("--identifier", default="N", help="22-character frames: the identifier (N, G, T)")
    p.add_argument("--nominal", type=decimal_arg, default=Decimal("100.00"), help="load on the pan")
    p.add_argument("--noise", type=float, default=0.01, help="standard deviation")
    p.add_argument("--decimals", type=int, default=2)
    p.add_argument("--unit", default="g")
    p.add_argument("--interval", type=float, default=0.5, help="push mode: seconds between prints")
    p.add_argument("--settle-frames", type=int, default=0, help="unstable frames after tare, zero or load")
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a corrupted frame")
    p.add_argument("--special", default=None, help="show this text instead of values: High, Low, 'Err 123'")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before answering ESC P")
    p.add_argument("--serial", default="9600 7O1", help="what the real balance would need; unused on a pty")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> SartoriusSimulator:
        scenario = Scenario(
            nominal=args.nominal,
            noise=args.noise,
            decimals=args.decimals,
            unit=args.unit,
            identifier=args.identifier if args.frame == "22" else None,
            settle_frames=args.settle_frames,
            bad_rate=args.bad_rate,
            interval=args.interval,
            seed=args.seed,
        )
        return SartoriusSimulator(
            args.link, scenario, mode=args.mode, serial_settings=args.serial, on_send=printer(out)
        )

    def configure(sim: SartoriusSimulator) -> None:
        sim.show_special(args.special)
        sim.set_delay(args.delay)

    return serve("sartorius-sbi", build, out, stop, mode=args.mode, configure=configure)
