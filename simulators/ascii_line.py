"""A configurable line-based ASCII instrument on a pty, with Sylvac and Ohaus presets.

The presets are written from the instruments' manuals, not from the driver's patterns:

* ``SYLVAC``: Sylvac "Power" instruments' user manual, "Data format" and "Remote
  commands": a reply is sign (``+``, ``-`` or space), the integral digits, ``.``, the
  decimals (their number depends on unit and resolution), CR; errors are ``ERR`` and a
  number (1: incorrect command, 3: measuring range exceeded). ``?`` and ``PRI`` ask for
  the displayed value (Sylvac remote command list, ``<PRI>, <?>``). 0.001 mm resolution: three
  decimals.
* ``OHAUS``: Ohaus RS232 Interface manual, EN-3 "Output examples" (``*****192.21_g``,
  ``*******0.01_g_?``): the weight right-aligned in eleven characters, a space, the unit, and
  `` ?`` while unstable, CR LF; Ohaus commands ``P``/``IP`` print (Courier 5000 manual §10.2,
  which also says invalid commands are answered ``ES``). ``Z``/``T`` are acknowledged
  ``OK!`` here, as earlier notes of this project have it; the manuals at hand do not say.

An :class:`Instrument` describes the protocol: a line template (``str.format`` with the
fields ``value``, ``unit`` and ``mark``), how numbers are printed (decimals, width, sign,
decimal comma), the stability marks, the line terminator, which commands are answered
with a value, which get a fixed reply (Ohaus ``Z`` -> ``OK!``) and what an unknown command
gets (Ohaus ``ES``). Commands arrive as text ended by CR and/or LF.

In request mode the instrument answers its read commands; in push mode it also sends a
value every ``interval`` seconds (a print key, a continuous output setting). Faults on
demand: an error line instead of values, garbage, truncated and garbled lines, silence,
slow answers, unplug and replug. Everything sent is recorded.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from simulators.base import (
    RecordingSimulator,
    SendListener,
    Sent,
    decimal_arg,
    escaped_arg,
    printer,
    rate_arg,
    serve,
)
from simulators.pty import PortUnplugged

log = logging.getLogger(__name__)

Mode = Literal["push", "request"]


@dataclass(frozen=True)
class Instrument:
    name: str = "generic"
    template: str = "{value}"
    decimals: int = 3
    width: int = 0  # the number right-aligned to this many characters; 0: as long as it is
    sign: Literal["always", "negative"] = "always"
    decimal_comma: bool = False
    unit: str = ""
    unstable_mark: str = ""  # {mark} while the value is not settled
    stable_mark: str = ""  # {mark} while it is
    terminator: bytes = b"\r"
    read_commands: tuple[str, ...] = ()  # commands answered with a value line
    replies: Mapping[str, str] = field(default_factory=dict)  # other commands and their fixed reply
    unknown_reply: str | None = None  # the reply to any other command; None: no reply
    serial_settings: str = "9600 8N1"  # what the real instrument needs; meaningless on a pty

    def __post_init__(self) -> None:
        if self.terminator not in (b"\r", b"\n", b"\r\n"):
            raise ValueError(f"terminator must be CR, LF or CR LF, got {self.terminator!r}")
        if not 0 <= self.decimals <= 9:
            raise ValueError("decimals must be 0..9")
        # a template with unknown fields fails here, not in the simulator thread
        try:
            self.template.format(value="0", unit=self.unit, mark="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template {self.template!r} is not valid (fields: value, unit, mark): {exc!r}") from None


SYLVAC = Instrument(
    name="sylvac",
    template="{value}",
    decimals=3,
    sign="always",
    terminator=b"\r",
    read_commands=("?", "PRI"),
    unknown_reply="ERR1",
    serial_settings="4800 7E2",
)

OHAUS = Instrument(
    name="ohaus",
    template="{value} {unit}{mark}",
    decimals=2,
    width=11,
    sign="negative",
    unit="g",
    unstable_mark=" ?",
    terminator=b"\r\n",
    read_commands=("IP", "P"),
    replies={"Z": "OK!", "T": "OK!"},
    unknown_reply="ES",
    serial_settings="9600 8N1",
)

PRESETS: dict[str, Instrument] = {"generic": Instrument(), "sylvac": SYLVAC, "ohaus": OHAUS}


def format_number(value: Decimal, instrument: Instrument) -> str:
    """The number as the instrument prints it (``+12.345``, ``    -1.20``, ``12,345``)."""
    if not value.is_finite():
        raise ValueError(f"value {value} is not finite")
    shown = value.quantize(Decimal(1).scaleb(-instrument.decimals))
    if shown != value:
        raise ValueError(f"value {value} has more than {instrument.decimals} decimals")
    digits = format(abs(shown), f".{instrument.decimals}f")
    if instrument.decimal_comma:
        digits = digits.replace(".", ",")
    sign = "-" if shown.is_signed() else ("+" if instrument.sign == "always" else "")
    return f"{sign}{digits}".rjust(instrument.width)


def format_line(value: Decimal, instrument: Instrument, *, stable: bool = True) -> bytes:
    mark = instrument.stable_mark if stable else instrument.unstable_mark
    text = instrument.template.format(value=format_number(value, instrument), unit=instrument.unit, mark=mark)
    return text.encode("latin-1") + instrument.terminator


@dataclass(frozen=True, slots=True)
class Scenario:
    nominal: Decimal = Decimal("12.345")
    noise: float = 0.002  # standard deviation
    unstable_rate: float = 0.0  # probability that a value is sent as not settled
    bad_rate: float = 0.0  # probability that a line is corrupted instead
    interval: float = 0.5  # push mode: seconds between lines
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("unstable_rate", "bad_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate}")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.interval <= 0:
            raise ValueError("interval must be positive")


class AsciiLineSimulator(RecordingSimulator[Sent[Decimal]]):
    """The instrument on a pty (see :class:`~simulators.base.PtySimulator`).

    Kinds of what is sent: ``value``, ``unstable``, ``reply``, ``error``, ``bad``, ``garbage``.
    """

    thread_name = "ascii-sim"

    def __init__(
        self,
        link: str | os.PathLike[str],
        instrument: Instrument = SYLVAC,
        scenario: Scenario | None = None,
        *,
        mode: Mode = "request",
        on_send: SendListener | None = None,
    ) -> None:
        if mode == "request" and not instrument.read_commands:
            raise ValueError("request mode needs an instrument with read commands")
        self.instrument = instrument
        self.scenario = scenario if scenario is not None else Scenario()
        self.mode: Mode = mode
        super().__init__(link, seed=self.scenario.seed, on_send=on_send)
        self._commands: list[str] = []
        self._error: str | None = None
        self._delay = 0.0

    # -- what was sent ----------------------------------------------------------------------

    @property
    def sent_values(self) -> list[Decimal]:
        return [s.value for s in self.sent if s.value is not None]

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._commands)

    @property
    def requests_received(self) -> int:
        return sum(1 for c in self.commands if c in self.instrument.read_commands)

    # -- on demand --------------------------------------------------------------------------

    def next_value(self) -> Decimal:
        s = self.scenario
        with self._lock:
            offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
        return (s.nominal + Decimal(repr(offset))).quantize(Decimal(1).scaleb(-self.instrument.decimals))

    def send_value(self, value: Decimal, *, stable: bool = True) -> bytes:
        line = format_line(value, self.instrument, stable=stable)
        self._write(Sent(line, "value" if stable else "unstable", value))
        return line

    def send_line(self, text: str, kind: str = "reply") -> bytes:
        """Send any protocol line (an error text, an acknowledgement) with the terminator."""
        line = text.encode("latin-1") + self.instrument.terminator
        self._write(Sent(line, kind))
        return line

    def send_garbage(self, data: bytes) -> None:
        self._write(Sent(data, "garbage"))

    def send_truncated(self) -> bytes:
        """A value line that lost its tail, terminator included, as a burst of lost bytes does:
        it runs into the next line, and that merged line is what the driver sees."""
        line = format_line(self.next_value(), self.instrument)
        body = line[: -len(self.instrument.terminator)]
        with self._lock:
            cut = self._rng.randrange(1, len(body))
        bad = body[:cut]
        self._write(Sent(bad, "bad"))
        return bad

    def send_garbled(self) -> bytes:
        """A value line with one digit garbled in transit (a parity error shows as 0xA7)."""
        line = format_line(self.next_value(), self.instrument)
        digits = [i for i, b in enumerate(line) if 0x30 <= b <= 0x39]
        with self._lock:
            at = self._rng.choice(digits)
        bad = line[:at] + b"\xa7" + line[at + 1 :]
        self._write(Sent(bad, "bad"))
        return bad

    def emit_one(self) -> bytes:
        """What a read command gets now: the error line, or the scenario's next value."""
        with self._lock:
            error = self._error
            unstable = self._chance(self.scenario.unstable_rate)
            corrupt = self._chance(self.scenario.bad_rate)
            if error is not None:
                return self.send_line(error, "error")
            if corrupt:
                return self.send_garbled()
            return self.send_value(self.next_value(), stable=not unstable)

    # -- faults -----------------------------------------------------------------------------

    def set_error(self, text: str | None) -> None:
        """Answer every read with the line ``text`` (an instrument in an error state) until None."""
        with self._lock:
            self._error = text

    def set_delay(self, seconds: float) -> None:
        """Answer read commands only after ``seconds``."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        with self._lock:
            self._delay = seconds

    # -- internals --------------------------------------------------------------------------

    def _command(self, command: str) -> None:
        inst = self.instrument
        with self._lock:
            self._commands.append(command)
            delay = self._delay
        if self._silent.is_set():
            return
        if command in inst.read_commands:
            if delay and self._stop.wait(delay):
                return
            if not self._silent.is_set():
                self.emit_one()
        elif command in inst.replies:
            self.send_line(inst.replies[command])
        elif inst.unknown_reply is not None:
            self.send_line(inst.unknown_reply, "error")

    def _take_commands(self, pending: bytes) -> bytes:
        """Runs every complete command line in ``pending``; returns the incomplete rest."""
        while True:
            ends = [i for i in (pending.find(b"\r"), pending.find(b"\n")) if i >= 0]
            if not ends:
                # a command line is short: a long unterminated run is noise, not worth keeping
                return pending[-64:]
            at = min(ends)
            line, pending = pending[:at], pending[at + 1 :]
            command = line.decode("latin-1").strip()
            if not command:
                continue
            try:
                self._command(command)
            except (PortUnplugged, TimeoutError):
                return b""

    def _run(self) -> None:
        push = self.emit_one if self.mode == "push" else None
        self._read_loop(self._take_commands, poll=0.05, push=push, interval=self.scenario.interval)


# -- command line --------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators ascii``."""
    p = sub.add_parser("ascii", help="line-based ASCII instrument (Sylvac, Ohaus presets)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="sylvac")
    p.add_argument("--mode", choices=("request", "push"), default="request")
    p.add_argument("--template", default=None, help="line template with {value}, {unit}, {mark}")
    p.add_argument("--decimals", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="right-align the number to this width")
    p.add_argument("--unit", default=None)
    p.add_argument("--unstable-mark", default=None, help="{mark} while unstable, e.g. ?")
    p.add_argument("--terminator", type=escaped_arg, default=None, help="escapes allowed: '\\r\\n'")
    p.add_argument("--read-command", action="append", default=None, help="answered with a value, e.g. '?'")
    p.add_argument("--decimal-comma", action="store_true")
    p.add_argument("--nominal", type=decimal_arg, default=Decimal("12.345"))
    p.add_argument("--noise", type=float, default=0.002, help="standard deviation")
    p.add_argument("--unstable-rate", type=rate_arg, default=0.0)
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a corrupted line")
    p.add_argument("--interval", type=float, default=0.5, help="push mode: seconds between lines")
    p.add_argument("--error", default=None, help="answer reads with this line instead of values")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before answering a read")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> AsciiLineSimulator:
        base = PRESETS[args.preset]
        instrument = replace(
            base,
            template=base.template if args.template is None else args.template,
            decimals=base.decimals if args.decimals is None else args.decimals,
            width=base.width if args.width is None else args.width,
            unit=base.unit if args.unit is None else args.unit,
            unstable_mark=base.unstable_mark if args.unstable_mark is None else args.unstable_mark,
            terminator=base.terminator if args.terminator is None else args.terminator,
            read_commands=base.read_commands if not args.read_command else tuple(args.read_command),
            decimal_comma=base.decimal_comma or args.decimal_comma,
        )
        scenario = Scenario(
            nominal=args.nominal,
            noise=args.noise,
            unstable_rate=args.unstable_rate,
            bad_rate=args.bad_rate,
            interval=args.interval,
            seed=args.seed,
        )
        format_line(scenario.nominal.quantize(Decimal(1).scaleb(-instrument.decimals)), instrument)
        return AsciiLineSimulator(args.link, instrument, scenario, mode=args.mode, on_send=printer(out))

    def configure(sim: AsciiLineSimulator) -> None:
        sim.set_error(args.error)
        sim.set_delay(args.delay)

    return serve("ascii", build, out, stop, note=f" ({args.preset})", mode=args.mode, configure=configure)
