"""A Mettler Toledo balance answering MT-SICS commands on a pty.

Written from Mettler Toledo's MT-SICS Interface Command Reference Manual (No. 11780711):
commands and replies are lines closed by CR LF ("Command formats"); a reply with a weight
is ``ID`` space ``Status`` space a ten-character, right-aligned ``WeightValue`` (sign
directly before the first digit, no leading zeros but the one before the point) space
``Unit`` ("Response formats"); errors are ``<ID> I``/``L``/``+``/``-`` and ``ES``/``ET``/
``EL`` ("Error messages"); the commands are those of the command descriptions of ``@``,
``I1``-``I4``, ``S``, ``SI``, ``SIR``, ``T``, ``TA``, ``TAC``, ``TI``, ``Z`` and ``ZI``.

The balance holds a load (:meth:`MtSicsSimulator.load`) that settles for
``Scenario.settle_time`` seconds after every change: meanwhile ``SI`` answers ``S D``
(dynamic) and ``S``, ``Z`` and ``T`` wait for stability as a real balance does, answering
``... I`` when it does not come within ``stable_timeout``. It keeps zero and tare memory,
streams for ``SIR`` until any other command arrives, answers ``@`` with its serial number
and unknown commands with ``ES``. Loads beyond ``capacity`` or below ``underload_limit``
give ``S +`` / ``S -``.

Faults: busy (every command answered ``... I``), a forced reply for the next command (``ET``,
``EL``, ``S L`` ...), garbage bytes, truncated lines, silence, slow replies, corrupted
replies at a rate, and unplug/replug of the cable. Unplugging also ends a running ``SIR``
stream, as on balances whose USB interface resets with the cable; the driver must ask for
the stream again after reconnecting.

Everything sent is recorded so tests can compare what the driver delivered.
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from simulators.base import LineCommandSimulator, SendListener, finite_decimal_arg, printer, rate_arg, serve

VALUE_WIDTH = 10  # MT-SICS right-aligns the weight in ten characters
MAX_COMMAND = 256  # a longer line without terminator is noise: dropped


def format_weight(reply_id: str, status: str, value: Decimal, unit: str, width: int = VALUE_WIDTH) -> bytes:
    """A weight reply line: ``format_weight("S", "S", Decimal("100.00"), "g")`` is
    ``b"S S     100.00 g\\r\\n"``. The value is written as given (its exponent sets the decimals).
    """
    if not value.is_finite():
        raise ValueError(f"value {value} is not finite")
    if not unit or not unit.isascii() or " " in unit:
        raise ValueError(f"bad unit {unit!r}")
    digits = format(value, "f")
    if len(digits) > width:
        raise ValueError(f"value {value} does not fit the {width}-character weight field")
    return f"{reply_id} {status} {digits:>{width}} {unit}\r\n".encode("ascii")


def format_status(reply_id: str, status: str) -> bytes:
    return f"{reply_id} {status}\r\n".encode("ascii")


def format_texts(reply_id: str, *texts: str) -> bytes:
    if any('"' in t for t in texts):
        raise ValueError("texts must not contain double quotes")
    quoted = " ".join(f'"{t}"' for t in texts)
    return f"{reply_id} A {quoted}\r\n".encode("ascii")


@dataclass(frozen=True, slots=True)
class Scenario:
    """The balance and what lies on it. Floats are fine for noise: values are quantised to
    ``decimals`` before they become digits, as on the balance's display."""

    nominal: Decimal = Decimal("100.00")  # gross load on the pan at start
    noise: float = 0.0  # standard deviation of stable readings
    settle_time: float = 0.0  # seconds a load change stays dynamic
    swing: float = 0.5  # largest deviation while settling (decays to zero)
    unit: str = "g"
    decimals: int = 2
    capacity: Decimal = Decimal("220.00")
    underload_limit: Decimal = Decimal("-10.00")  # gross below this: "S -" (pan removed)
    zero_range: Decimal = Decimal("4.40")  # Z refuses to zero a gross load beyond +/- this
    stable_timeout: float = 3.0  # S, Z and T give up waiting for stability after this
    sir_interval: float = 0.05  # seconds between streamed weights
    bad_rate: float = 0.0  # probability that a reply is corrupted in transit
    serial: str = "B012345678"
    model: str = "XS205DU"
    software: str = "2.20.0.4"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within 0..1, got {self.bad_rate}")
        if self.noise < 0 or self.swing < 0 or self.settle_time < 0:
            raise ValueError("noise, swing and settle_time must not be negative")
        if self.sir_interval <= 0 or self.stable_timeout <= 0:
            raise ValueError("sir_interval and stable_timeout must be positive")
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"decimals must be 0..6, got {self.decimals}")
        # a scenario the reply cannot express fails here, not in the middle of a run
        format_weight("S", "S", self.nominal, self.unit)
        format_texts("I2", f"{self.model} {self.capacity} {self.unit}", self.serial, self.software)


class MtSicsSimulator(LineCommandSimulator[tuple[str, Decimal]]):
    """The balance on a pty (see :class:`~simulators.base.PtySimulator`).

    Kinds of what is sent: ``stable``, ``dynamic``, ``error``, ``reply``, ``garbage``, ``bad``.
    """

    thread_name = "mt-sics-sim"
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
        self._gross = self.scenario.nominal
        self._settled_at = time.monotonic() + self.scenario.settle_time
        self._zero = Decimal(0)
        self._tare = Decimal(0)
        self._streaming = False
        self._next_stream = 0.0
        self._busy = False
        self._forced: collections.deque[bytes] = collections.deque()

    # -- what was sent ------------------------------------------------------------------------

    @property
    def sent_weights(self) -> list[tuple[str, Decimal]]:
        """("S" | "D", value) of the weight replies, in order."""
        return [s.value for s in self.sent if s.value is not None]

    @property
    def streaming(self) -> bool:
        with self._lock:
            return self._streaming

    @property
    def tare(self) -> Decimal:
        with self._lock:
            return self._tare

    # -- the balance ----------------------------------------------------------------------------

    def load(self, gross: Decimal) -> None:
        """Put ``gross`` on the pan (replacing what was there); it settles for ``settle_time``."""
        with self._lock:
            self._gross = gross
            self._settled_at = time.monotonic() + self.scenario.settle_time

    def set_busy(self, busy: bool = True) -> None:
        """While busy every command but ``@`` is answered ``<id> I``."""
        with self._lock:
            self._busy = busy

    def force_reply(self, line: str) -> None:
        """Answer the next command with ``line`` (CR LF is added), whatever the command was."""
        with self._lock:
            self._forced.append(line.encode("ascii") + b"\r\n")

    # -- faults on the wire -------------------------------------------------------------------------

    def send_truncated(self) -> bytes:
        """Send a weight reply that lost its end in transit (its CR LF still arrives)."""
        line, _ = self._weight_line(immediate=True)
        with self._lock:
            bad = self._truncate(line)
        self._send(bad, "bad")
        return bad

    def unplug(self) -> None:
        """Pull the cable; a running ``SIR`` stream ends with it."""
        with self._lock:
            self._streaming = False
        super().unplug()

    # -- replies ------------------------------------------------------------------------------------

    def reply_to(self, command: str) -> None:
        """Handle one command line as the balance does (the thread calls this for every line)."""
        with self._lock:
            self._commands.append(command)
            # any command ends a SIR stream; SIR itself starts a new one below
            self._streaming = False
            forced = self._forced.popleft() if self._forced else None
            busy = self._busy
            delay = self._reply_delay
        if self._silent.is_set():
            return
        if delay and self._stop.wait(delay):
            return
        if forced is not None:
            self._send(forced, "error" if _is_error(forced) else "reply")
            return
        name, _, argument = command.partition(" ")
        if busy and name != "@" and name in _REPLY_ID:
            self._send(format_status(_REPLY_ID[name], "I"), "error")
            return
        handler = self._handlers().get(name)
        if handler is None or (argument and name != "TA"):
            self._send(b"ES\r\n", "error")
            return
        handler(argument)

    def _handlers(self) -> dict[str, Callable[[str], None]]:
        return {
            "S": lambda _: self._weigh(wait=True),
            "SI": lambda _: self._weigh(wait=False),
            "SIR": lambda _: self._start_stream(),
            "Z": lambda _: self._zero_cmd("Z", wait=True),
            "ZI": lambda _: self._zero_cmd("ZI", wait=False),
            "T": lambda _: self._tare_cmd("T", wait=True),
            "TI": lambda _: self._tare_cmd("TI", wait=False),
            "TA": self._tare_memory,
            "TAC": lambda _: self._clear_tare(),
            "@": lambda _: self._reset(),
            "I1": lambda _: self._send(format_texts("I1", "01", "2.20", "2.20", "1.00", "1.50"), "reply"),
            "I2": lambda _: self._send(
                format_texts("I2", f"{self.scenario.model} {self.scenario.capacity} {self.scenario.unit}"), "reply"
            ),
            "I3": lambda _: self._send(format_texts("I3", self.scenario.software), "reply"),
            "I4": lambda _: self._send(format_texts("I4", self.scenario.serial), "reply"),
        }

    def _gross_now(self) -> tuple[Decimal, bool]:
        """The gross weight the cell sees now, and whether it is stable."""
        s = self.scenario
        with self._lock:
            left = self._settled_at - time.monotonic()
            if left > 0 and s.settle_time > 0:
                # a damped swing, never exactly on the final value, so dynamic replies look it
                phase = self._rng.uniform(0.2, 1.0) * (1 if self._rng.random() < 0.5 else -1)
                offset = s.swing * (left / s.settle_time) * phase
                stable = False
            else:
                offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
                stable = True
            gross = self._gross
        return gross + Decimal(repr(offset)), stable

    def _wait_stable(self) -> bool:
        """Block like a balance waiting for stability; False when it did not come in time."""
        with self._lock:
            left = self._settled_at - time.monotonic()
        if left <= 0:
            return True
        if left > self.scenario.stable_timeout:
            self._stop.wait(self.scenario.stable_timeout)
            return False
        return not self._stop.wait(left)

    def _weight_line(self, *, immediate: bool) -> tuple[bytes, tuple[str, Decimal] | None]:
        """The ``S`` reply for the weight now, with (status, value) when it carries one."""
        gross, stable = self._gross_now()
        if gross > self.scenario.capacity:
            return format_status("S", "+"), None
        if gross < self.scenario.underload_limit:
            return format_status("S", "-"), None
        with self._lock:
            net = (gross - self._zero - self._tare).quantize(self._quantum)
        status = "S" if stable or not immediate else "D"
        return format_weight("S", status, net, self.scenario.unit), (status, net)

    def _weigh(self, *, wait: bool) -> None:
        if wait and not self._wait_stable():
            self._send(format_status("S", "I"), "error")
            return
        self._send_weight(*self._weight_line(immediate=not wait))

    def _send_weight(self, line: bytes, weight: tuple[str, Decimal] | None) -> None:
        if weight is None:
            self._send(line, "error")
        else:
            self._send(line, "stable" if weight[0] == "S" else "dynamic", value=weight)

    def _start_stream(self) -> None:
        with self._lock:
            self._streaming = True
            self._next_stream = time.monotonic()
        self._stream_tick()

    def _stream_tick(self) -> None:
        with self._lock:
            if not self._streaming:
                return
            interval = self.scenario.sir_interval
            now = time.monotonic()
            self._next_stream += (int((now - self._next_stream) // interval) + 1) * interval
        if not self._silent.is_set():
            self._send_weight(*self._weight_line(immediate=True))

    def _zero_cmd(self, reply_id: str, *, wait: bool) -> None:
        if wait and not self._wait_stable():
            self._send(format_status(reply_id, "I"), "error")
            return
        gross, stable = self._gross_now()
        if gross > self.scenario.zero_range:
            self._send(format_status(reply_id, "+"), "error")
            return
        if gross < -self.scenario.zero_range:
            self._send(format_status(reply_id, "-"), "error")
            return
        with self._lock:
            # zeroing also empties the tare memory
            self._zero = gross.quantize(self._quantum)
            self._tare = Decimal(0)
        status = "A" if reply_id == "Z" else ("S" if stable else "D")
        self._send(format_status(reply_id, status), "reply")

    def _tare_cmd(self, reply_id: str, *, wait: bool) -> None:
        if wait and not self._wait_stable():
            self._send(format_status(reply_id, "I"), "error")
            return
        gross, stable = self._gross_now()
        with self._lock:
            tare = (gross - self._zero).quantize(self._quantum)
        if tare > self.scenario.capacity:
            self._send(format_status(reply_id, "+"), "error")
            return
        if tare < 0:
            self._send(format_status(reply_id, "-"), "error")
            return
        with self._lock:
            self._tare = tare
        self._send(format_weight(reply_id, "S" if stable or wait else "D", tare, self.scenario.unit), "reply")

    def _tare_memory(self, argument: str) -> None:
        if argument:
            value, _, unit = argument.strip().partition(" ")
            try:
                preset = Decimal(value)
            except InvalidOperation:
                preset = Decimal("NaN")
            if not preset.is_finite() or unit.strip() != self.scenario.unit or preset < 0:
                self._send(format_status("TA", "L"), "error")
                return
            with self._lock:
                self._tare = preset.quantize(self._quantum)
        with self._lock:
            tare = self._tare.quantize(self._quantum)
        self._send(format_weight("TA", "A", tare, self.scenario.unit), "reply")

    def _clear_tare(self) -> None:
        with self._lock:
            self._tare = Decimal(0)
        self._send(format_status("TAC", "A"), "reply")

    def _reset(self) -> None:
        with self._lock:
            self._tare = Decimal(0)
            self._busy = False
        self._send(format_texts("I4", self.scenario.serial), "reply")

    # -- wire ------------------------------------------------------------------------------------

    def _truncate(self, line: bytes, pos: int = 0) -> bytes:
        """``line`` without its end (wherever ``pos`` is). At least the last field goes: a weight
        cut inside a unit such as ``ozt`` would still be a valid line, just with a wrong unit."""
        body = line[:-2]
        last_space = body.rfind(b" ")
        # never empty: a blank line is skipped by every reader, not seen as a fault
        cut = self._rng.randrange(1, last_space + 1) if last_space > 1 else 1
        return body[:cut] + b"\r\n"

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            if not self.port.plugged:
                pending = b""
                with self._lock:
                    self._streaming = False
                self._stop.wait(0.02)
                continue
            with self._lock:
                wait = max(0.0, min(0.02, self._next_stream - time.monotonic())) if self._streaming else 0.02
            pending = self._take_lines(pending + self.port.read_available(wait))
            with self._lock:
                due = self._streaming and time.monotonic() >= self._next_stream
            if due:
                self._stream_tick()


def _is_error(line: bytes) -> bool:
    body = line.strip()
    return body in (b"ES", b"ET", b"EL") or (len(body) >= 3 and body[-2:] in (b" I", b" L", b" +", b" -"))


#: command -> reply identifier (for busy replies)
_REPLY_ID = {
    "S": "S",
    "SI": "S",
    "SIR": "S",
    "Z": "Z",
    "ZI": "ZI",
    "T": "T",
    "TI": "TI",
    "TA": "TA",
    "TAC": "TAC",
    "I1": "I1",
    "I2": "I2",
    "I3": "I3",
    "I4": "I4",
}


# -- command line -----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators mt-sics``: a balance answering MT-SICS commands on a pty."""
    p = sub.add_parser("mt-sics", help="Mettler Toledo balance, MT-SICS (S, SI, SIR, Z, T, @ ...)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument("--nominal", type=finite_decimal_arg, default=Decimal("100.00"), help="gross load on the pan")
    p.add_argument("--noise", type=float, default=0.0, help="standard deviation of stable weights")
    p.add_argument("--settle-time", type=float, default=0.0, help="seconds a load stays dynamic")
    p.add_argument("--unit", default="g")
    p.add_argument("--decimals", type=int, default=2)
    p.add_argument("--capacity", type=finite_decimal_arg, default=Decimal("220.00"))
    p.add_argument("--sir-interval", type=float, default=0.1, help="seconds between streamed weights")
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a corrupted reply")
    p.add_argument("--serial", default="B012345678", help="answered to I4 and @")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> MtSicsSimulator:
        scenario = Scenario(
            nominal=args.nominal,
            noise=args.noise,
            settle_time=args.settle_time,
            unit=args.unit,
            decimals=args.decimals,
            capacity=args.capacity,
            sir_interval=args.sir_interval,
            bad_rate=args.bad_rate,
            serial=args.serial,
            seed=args.seed,
        )
        return MtSicsSimulator(args.link, scenario, on_send=printer(out, kind_width=7))

    return serve("mt-sics", build, out, stop)
