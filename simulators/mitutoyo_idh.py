"""A Mitutoyo ID-H style indicator answering read and zero commands on a pty.

Commands (ended by CR LF; CR or LF alone are accepted too) carry the indicator's two-digit
id. ``GN<id>`` samples the spindle and answers the current value, ``GX``/``GM`` the largest
and smallest value since the last zero, ``GW`` the run-out (max - min); ``CR<id>`` zeroes
the display at the current position and clears max/min, answered ``CH<id>``. Commands for
another id are ignored, as on a shared line. Values follow a :class:`Scenario` and are
reproducible with a seed.

With tolerance limits in the scenario the indicator judges: ``judgement="reply"`` answers
read commands with ``DH<id>,OK|+NG|-NG`` instead of the value, ``"append"`` sends the
judgement line after the value line. Unknown commands are answered with
``Scenario.error_reply`` (the real indicator's error reply is unverified; None: silence).

Faults: garbage bytes, truncated lines, silence, slow replies, replies carrying a wrong
device id, corrupted replies at a rate, unplug/replug of the cable.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from simulators.base import LineCommandSimulator, SendListener, finite_decimal_arg, printer, rate_arg, serve

VALUE_WIDTH = 9  # characters of value after the sign, decimal point included: 0016.2345
MAX_COMMAND = 64
_COMMAND = re.compile(r"(GN|GX|GM|GW|CR)([0-9]{2})")


def format_value(command: str, device_id: int, value: Decimal, decimals: int, width: int = VALUE_WIDTH) -> bytes:
    """The indicator's answer to a read: ``GN01,+0016.2345\\r\\n``.

    Raises ValueError if the value has more decimals than the display shows or does not fit
    in ``width`` characters.
    """
    if command not in ("GN", "GX", "GM", "GW"):
        raise ValueError(f"not a read command: {command!r}")
    if not 0 <= device_id <= 99:
        raise ValueError(f"device id must be 0..99, got {device_id}")
    if not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be 0..6, got {decimals}")
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
    return f"{command}{device_id:02d},{sign}{digits}\r\n".encode("ascii")


def format_ack(device_id: int) -> bytes:
    return f"CH{device_id:02d}\r\n".encode("ascii")


def format_judgement(device_id: int, judgement: str) -> bytes:
    if judgement not in ("OK", "+NG", "-NG"):
        raise ValueError(f"judgement must be OK, +NG or -NG, got {judgement!r}")
    return f"DH{device_id:02d},{judgement}\r\n".encode("ascii")


Judging = Literal["off", "reply", "append"]


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
    judgement: Judging = "off"
    lower: Decimal | None = None  # tolerance limits of the indicator's own judgement
    upper: Decimal | None = None
    error_reply: str | None = "ERR"  # answer to an unknown command (unverified for real units)
    bad_rate: float = 0.0  # probability that a reply is corrupted in transit
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.device_id <= 99:
            raise ValueError(f"device_id must be 0..99, got {self.device_id}")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within 0..1, got {self.bad_rate}")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.judgement != "off" and (self.lower is None or self.upper is None):
            raise ValueError("judging needs lower and upper limits")
        # a scenario the reply cannot express fails here, not in the middle of a run
        quantum = Decimal(1).scaleb(-self.decimals) if 0 <= self.decimals <= 6 else Decimal(1)
        format_value("GN", self.device_id, self.nominal.quantize(quantum), self.decimals, self.width)


class MitutoyoIdhSimulator(LineCommandSimulator[tuple[str, Decimal]]):
    """The indicator on a pty (see :class:`~simulators.base.PtySimulator`).

    Kinds of what is sent: ``value``, ``ack``, ``judgement``, ``error``, ``garbage``, ``bad``.
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
        self._quantum = Decimal(1).scaleb(-self.scenario.decimals)
        self._count = 0  # samples taken, for drift
        self._zero = Decimal(0)
        self._current: Decimal | None = None
        self._max: Decimal | None = None
        self._min: Decimal | None = None
        self._reply_id: int | None = None  # None: answer with the scenario's id

    # -- what was sent --------------------------------------------------------------------------

    @property
    def sent_values(self) -> list[tuple[str, Decimal]]:
        """(command, value) of the value replies, in order."""
        return [s.value for s in self.sent if s.value is not None]

    # -- faults ---------------------------------------------------------------------------------

    def answer_as(self, device_id: int | None) -> None:
        """Put ``device_id`` in every reply (a misaddressed indicator); None restores the real one."""
        with self._lock:
            self._reply_id = device_id

    def send_truncated(self) -> bytes:
        """Send a value reply that lost characters at its end (its CR LF still arrives)."""
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
        """Sample the spindle now (advances drift, max/min and the random sequence)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> Decimal:
        s = self.scenario
        n = self._count
        self._count += 1
        offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
        offset += s.drift * n
        value = (s.nominal + Decimal(repr(offset)) - self._zero).quantize(self._quantum)
        self._current = value
        self._max = value if self._max is None else max(self._max, value)
        self._min = value if self._min is None else min(self._min, value)
        return value

    def _judge(self, value: Decimal) -> str:
        s = self.scenario
        assert s.lower is not None and s.upper is not None
        if value < s.lower:
            return "-NG"
        if value > s.upper:
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
        if m is None:
            if self.scenario.error_reply is not None:
                self._send(self.scenario.error_reply.encode("ascii") + b"\r\n", "error")
            return
        name = m.group(1)
        with self._lock:
            answer_id = self.scenario.device_id if self._reply_id is None else self._reply_id
            if name == "CR":
                self._zero += self._current if self._current is not None else self._sample()
                self._max = self._min = self._current = None
                self._send(format_ack(answer_id), "ack")
                return
            current = self._sample()
            assert self._max is not None and self._min is not None
            value = {"GN": current, "GX": self._max, "GM": self._min, "GW": self._max - self._min}[name]
            judging = self.scenario.judgement
            if judging != "reply":
                line = format_value(name, answer_id, value, self.scenario.decimals, self.scenario.width)
                self._send(line, "value", value=(name, value))
            if judging != "off":
                self._send(format_judgement(answer_id, self._judge(value)), "judgement")

    def _run(self) -> None:
        self._read_loop(self._take_lines, poll=0.02)


# -- command line -----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators mitutoyo-idh``: an ID-H style indicator answering GN/GX/GM/GW/CR."""
    p = sub.add_parser("mitutoyo-idh", help="Mitutoyo ID-H style indicator (GN01 -> GN01,+0016.2345)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--device-id", type=int, default=1, help="0..99")
    p.add_argument("--nominal", type=finite_decimal_arg, default=Decimal("16.2345"))
    p.add_argument("--noise", type=float, default=0.0005, help="standard deviation")
    p.add_argument("--drift", type=float, default=0.0, help="added per sample")
    p.add_argument("--decimals", type=int, default=4)
    p.add_argument("--judgement", choices=("off", "reply", "append"), default="off")
    p.add_argument(
        "--lower", type=finite_decimal_arg, default=None, help="lower limit of the indicator's own judgement"
    )
    p.add_argument(
        "--upper", type=finite_decimal_arg, default=None, help="upper limit of the indicator's own judgement"
    )
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
            judgement=args.judgement,
            lower=args.lower,
            upper=args.upper,
            bad_rate=args.bad_rate,
            seed=args.seed,
        )
        return MitutoyoIdhSimulator(args.link, scenario, on_send=printer(out, kind_width=7))

    return serve("mitutoyo-idh", build, out, stop, note=f" (id {args.device_id:02d})")
