"""A Mitutoyo ID-H digimatic indicator answering its RS-232C commands, on a pty.

Written from Mitutoyo's ID-H0530/0560 User's Manual No. 99MAH016B, §4.2.4 "Communication
command (I/O format)". Commands and replies are lines ended by CR LF; ``**`` is the
indicator's ID No. (00-99). What this indicator does with each row of that table:

* ``GA**`` (data output): samples the spindle and answers with the value of the current
  measurement mode, its header naming the mode: ``GN**,+0016.2345`` normal, ``GX**`` max,
  ``GM**`` min, ``GW**`` TIR (run-out, max - min).
* ``CN**`` / ``CX**`` / ``CM**`` / ``CW**`` (measurement mode switching): ``CH**``.
* ``CR**`` (zero-setting, moves to the INC system): the display reads zero here; ``CH**``.
* ``CL**`` (peak hold cancel, peak hold start): max and min start again; ``CH**``.
* ``CP**,+0016.2345`` (preset value setting): ``CH**``; ``DP**,OUT``: ``DH**,+0016.2345``.
* ``DJ**,ON`` / ``DJ**,OFF`` (judgement on, cancel): ``DH**``. ``CG**,<value>`` /
  ``CD**,<value>`` (upper, lower limit input): ``CH**``. ``DJ**,GOUT`` / ``DJ**,DOUT``:
  ``DG**,<value>`` / ``DD**,<value>``. ``DJ**,OUT`` (result output): ``DH**,OK``,
  ``DH**,+NG``, ``DH**,-NG``, or ``DH**,JOFF`` while judgement is cancelled.

Values are written like the manual's only example, ``+0016.2345``: a sign and ``width``
characters, zero-padded, with ``decimals`` after the point. The manual at hand gives no
reply to an unknown command: by default the indicator stays silent (``error_reply`` makes
it answer something, to exercise a host). Commands for another ID No. are ignored, as on a
shared line.

Faults: garbage bytes, truncated replies, silence, slow replies, replies carrying a wrong
ID No., corrupted replies at a rate, unplug/replug of the cable.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from simulators.base import LineCommandSimulator, SendListener, finite_decimal_arg, printer, rate_arg, serve

VALUE_WIDTH = 9  # characters after the sign in the manual's example, point included: 0016.2345
MAX_COMMAND = 64
#: measurement mode letter -> data reply header
HEADERS = {"N": "GN", "X": "GX", "M": "GM", "W": "GW"}
_COMMAND = re.compile(r"([A-Z]{2})([0-9]{2})(?:,(.*))?")


def format_value(header: str, device_id: int, value: Decimal, decimals: int, width: int = VALUE_WIDTH) -> bytes:
    """A reply carrying a value: ``format_value("GN", 1, Decimal("16.2345"), 4)`` is
    ``b"GN01,+0016.2345\\r\\n"``.

    Raises ValueError if the value has more decimals than the display shows or does not fit
    in ``width`` characters.
    """
    if header not in ("GN", "GX", "GM", "GW", "DH", "DG", "DD"):
        raise ValueError(f"not a header that carries a value: {header!r}")
    if not 0 <= device_id <= 99:
        raise ValueError(f"ID No. must be 0..99, got {device_id}")
    if not 1 <= decimals <= width - 2:
        raise ValueError(f"decimals must be 1..{width - 2}, got {decimals}")
    if not value.is_finite():
        raise ValueError(f"value {value} is not finite")
    shown = value.quantize(Decimal(1).scaleb(-decimals))
    if shown != value:
        raise ValueError(f"value {value} has more than {decimals} decimals")
    digits = format(abs(shown), f"0{width}.{decimals}f")
    if len(digits) != width:
        raise ValueError(f"value {value} does not fit in {width} characters with {decimals} decimals")
    # is_signed keeps -0.0000 as the indicator showed it, so a reply round-trips exactly
    sign = "-" if shown.is_signed() else "+"
    return f"{header}{device_id:02d},{sign}{digits}\r\n".encode("ascii")


def format_ack(device_id: int, header: str = "CH") -> bytes:
    """``CH**`` (C-commands) or ``DH**`` (D-commands)."""
    return f"{header}{device_id:02d}\r\n".encode("ascii")


def format_judgement(device_id: int, judgement: str) -> bytes:
    """``DH**,OK``, ``DH**,+NG``, ``DH**,-NG`` or ``DH**,JOFF``."""
    if judgement not in ("OK", "+NG", "-NG", "JOFF"):
        raise ValueError(f"judgement must be OK, +NG, -NG or JOFF, got {judgement!r}")
    return f"DH{device_id:02d},{judgement}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the indicator measures. Floats are fine for noise: values are quantised to
    ``decimals`` before they become digits, as on the display."""

    device_id: int = 1
    nominal: Decimal = Decimal("16.2345")  # spindle position, display units
    noise: float = 0.0005  # standard deviation
    drift: float = 0.0  # added per sample
    decimals: int = 4
    width: int = VALUE_WIDTH
    mode: str = "N"  # N normal, X max, M min, W TIR, as after power-on
    lower: Decimal | None = None  # the indicator's own judgement limits (CD, CG)
    upper: Decimal | None = None
    judging: bool = False  # DJ,ON already given
    error_reply: str | None = None  # answer to an unknown command; None: silence
    bad_rate: float = 0.0  # probability that a reply is corrupted in transit
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.device_id <= 99:
            raise ValueError(f"device_id must be 0..99, got {self.device_id}")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within 0..1, got {self.bad_rate}")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.mode not in HEADERS:
            raise ValueError(f"mode must be one of {', '.join(HEADERS)}, got {self.mode!r}")
        if self.judging and (self.lower is None or self.upper is None):
            raise ValueError("judging needs lower and upper limits")
        # a scenario the reply cannot express fails here, not in the middle of a run
        format_value(
            "GN", self.device_id, self.nominal.quantize(Decimal(1).scaleb(-self.decimals)), self.decimals, self.width
        )


class MitutoyoIdhSimulator(LineCommandSimulator[tuple[str, Decimal]]):
    """The indicator on a pty (see :class:`~simulators.base.PtySimulator`).

    Kinds of what is sent: ``value``, ``ack``, ``judgement``, ``setting``, ``error``,
    ``garbage``, ``bad``.
    """

    thread_name = "idh-sim"
    max_command = MAX_COMMAND

    def __init__(
        self,
        link: str | os.PathLike[str],
        scenario: Scenario | None = None,
        *,
        on_send: SendListener | None = None,
    ) -> None:
        self.scenario = scenario if scenario is not None else Scenario()
        super().__init__(link, bad_rate=self.scenario.bad_rate, seed=self.scenario.seed, on_send=on_send)
        s = self.scenario
        self._quantum = Decimal(1).scaleb(-s.decimals)
        self._count = 0  # samples taken, for drift
        self._origin = Decimal(0)  # where the display reads zero (CR), or preset offset
        self._preset = Decimal(0)
        self._mode = s.mode
        self._max: Decimal | None = None
        self._min: Decimal | None = None
        self._lower, self._upper, self._judging = s.lower, s.upper, s.judging
        self._reply_id: int | None = None  # None: answer with the scenario's ID No.

    # -- what was sent --------------------------------------------------------------------------

    @property
    def sent_values(self) -> list[tuple[str, Decimal]]:
        """(header, value) of the data replies, in order."""
        return [s.value for s in self.sent if s.value is not None]

    @property
    def mode(self) -> str:
        """The measurement mode: N, X, M or W."""
        with self._lock:
            return self._mode

    # -- faults ---------------------------------------------------------------------------------

    def answer_as(self, device_id: int | None) -> None:
        """Put ``device_id`` in every reply (a misaddressed indicator); None restores the real one."""
        with self._lock:
            self._reply_id = device_id

    def send_truncated(self) -> bytes:
        """Send a data reply that lost characters at its end (its CR LF still arrives)."""
        with self._lock:
            line = format_value(
                "GN", self.scenario.device_id, self._sample(), self.scenario.decimals, self.scenario.width
            )
            cut = self._rng.randrange(1, len(line) - 3)
        bad = line[:cut] + b"\r\n"
        self._send(bad, "bad")
        return bad

    # -- the indicator ------------------------------------------------------------------------------

    def next_value(self) -> Decimal:
        """Sample the spindle now (advances drift, peak hold and the random sequence)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> Decimal:
        s = self.scenario
        n = self._count
        self._count += 1
        offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
        offset += s.drift * n
        value = (s.nominal + Decimal(repr(offset)) - self._origin + self._preset).quantize(self._quantum)
        self._max = value if self._max is None else max(self._max, value)
        self._min = value if self._min is None else min(self._min, value)
        return value

    def _shown(self) -> Decimal:
        """What the display shows in the current mode (samples the spindle)."""
        current = self._sample()
        assert self._max is not None and self._min is not None
        return {"N": current, "X": self._max, "M": self._min, "W": self._max - self._min}[self._mode]

    def _judge(self, value: Decimal) -> str:
        if not self._judging or self._lower is None or self._upper is None:
            return "JOFF"
        if value < self._lower:
            return "-NG"
        if value > self._upper:
            return "+NG"
        return "OK"

    def reply_to(self, command: str) -> None:
        """Handle one command line as the indicator does (the thread calls this for every line)."""
        with self._lock:
            self._commands.append(command)
            delay = self._reply_delay
        m = _COMMAND.fullmatch(command)
        if m is not None and int(m.group(2)) != self.scenario.device_id:
            return  # addressed to another indicator
        if self._silent.is_set():
            return
        if delay and self._stop.wait(delay):
            return
        answer = self._answer(m.group(1), m.group(3)) if m is not None else None
        if answer is None:
            if self.scenario.error_reply is not None:
                self._send(self.scenario.error_reply.encode("ascii") + b"\r\n", "error")
            return
        data, kind, value = answer
        self._send(data, kind, value=value)

    def _answer(self, code: str, argument: str | None) -> tuple[bytes, str, tuple[str, Decimal] | None] | None:
        """The reply to one command of §4.2.4, or None for a command the table does not have."""
        s = self.scenario
        with self._lock:
            reply_id = s.device_id if self._reply_id is None else self._reply_id
            if argument is None:
                if code == "GA":
                    header = HEADERS[self._mode]
                    value = self._shown()
                    return format_value(header, reply_id, value, s.decimals, s.width), "value", (header, value)
                if code in ("CN", "CX", "CM", "CW"):
                    self._mode = code[1]
                    return format_ack(reply_id), "ack", None
                if code == "CR":
                    self._origin += self._sample() - self._preset
                    self._preset = Decimal(0)
                    self._max = self._min = None
                    return format_ack(reply_id), "ack", None
                if code == "CL":
                    self._max = self._min = None
                    return format_ack(reply_id), "ack", None
                return None
            if code == "DJ" and argument in ("ON", "OFF"):
                self._judging = argument == "ON"
                return format_ack(reply_id, "DH"), "ack", None
            if code == "DJ" and argument == "OUT":
                return format_judgement(reply_id, self._judge(self._shown())), "judgement", None
            if code == "DJ" and argument in ("GOUT", "DOUT"):
                limit = self._upper if argument == "GOUT" else self._lower
                header = "DG" if argument == "GOUT" else "DD"
                return format_value(header, reply_id, limit or Decimal(0), s.decimals, s.width), "setting", None
            if code == "DP" and argument == "OUT":
                return format_value("DH", reply_id, self._preset, s.decimals, s.width), "setting", None
            if code in ("CG", "CD", "CP"):
                try:
                    number = Decimal(argument)
                except InvalidOperation:
                    return None
                if code == "CG":
                    self._upper = number
                elif code == "CD":
                    self._lower = number
                else:
                    self._preset = number
                return format_ack(reply_id), "ack", None
            return None

    def _run(self) -> None:
        self._read_loop(self._take_lines, poll=0.02)


# -- command line -----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators mitutoyo-idh``: an ID-H indicator answering the §4.2.4 commands."""
    p = sub.add_parser("mitutoyo-idh", help="Mitutoyo ID-H indicator (GA01 -> GN01,+0016.2345)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--device-id", type=int, default=1, help="ID No., 0..99")
    p.add_argument("--nominal", type=finite_decimal_arg, default=Decimal("16.2345"))
    p.add_argument("--noise", type=float, default=0.0005, help="standard deviation")
    p.add_argument("--drift", type=float, default=0.0, help="added per sample")
    p.add_argument("--decimals", type=int, default=4)
    p.add_argument("--mode", choices=sorted(HEADERS), default="N", help="measurement mode at power-on")
    p.add_argument("--lower", type=finite_decimal_arg, default=None, help="lower judgement limit")
    p.add_argument("--upper", type=finite_decimal_arg, default=None, help="upper judgement limit")
    p.add_argument("--judging", action="store_true", help="judgement on (needs --lower and --upper)")
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a corrupted reply")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> MitutoyoIdhSimulator:
        scenario = Scenario(
            device_id=args.device_id,
            nominal=args.nominal,
            noise=args.noise,
            drift=args.drift,
            decimals=args.decimals,
            mode=args.mode,
            lower=args.lower,
            upper=args.upper,
            judging=args.judging,
            bad_rate=args.bad_rate,
            seed=args.seed,
        )
        return MitutoyoIdhSimulator(args.link, scenario, on_send=printer(out, kind_width=7))

    return serve("mitutoyo-idh", build, out, stop, note=f" (ID {args.device_id:02d})")
