"""A Mitutoyo Digimatic interface adapter with a gauge attached, on a pty.

The frame follows Mitutoyo's QM-Height User's Manual No. 99MAF600B, §6.3 "USB Data Output
Specification": D1 code number ``0``, D2 channel number, D3 measurement item ``A``, D4 the
sign, D5-D12 eight characters of data with a floating decimal point, D13 CR (9600 baud,
8 data bits, no parity, 1 stop bit, §6.3.1). The §6.3.4 examples (``01A+0000.123``,
``01A+00.12345``, ``01A+000.1234``) are what :func:`format_frame` writes.

Push mode behaves like an operator pressing DATA every ``interval`` seconds; request mode
answers every request string it receives with one frame (the request string is adapter
specific and not in that manual: it is a parameter). Values follow a :class:`Scenario`
(nominal, noise, drift, out-of-tolerance and bad-frame rates) and are reproducible with a
seed. Everything sent is recorded so tests can compare what the driver delivered. Line
noise on plugging in is :meth:`MitutoyoSimulator.send_noise` before a frame.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from simulators.base import RecordingSimulator, SendListener, Sent
from simulators.pty import PortUnplugged

log = logging.getLogger(__name__)

Mode = Literal["push", "request"]

VALUE_WIDTH = 8  # D5..D12: characters of data, decimal point included


def format_frame(channel: str, value: Decimal, decimals: int) -> bytes:
    """The adapter's frame for ``value``: ``01A+0012.340\\r``, zero-padded to eight data
    characters as in every example of §6.3.4.

    Raises ValueError if the value has more decimals than the gauge shows, or does not fit
    in eight characters with its decimal point (every documented frame has one).
    """
    if len(channel) != 2 or not channel.isascii() or not channel.isdigit():
        raise ValueError(f"channel must be two digits, got {channel!r}")
    if not 1 <= decimals <= 6:
        raise ValueError(f"decimals must be 1..6, got {decimals}")
    if not value.is_finite():
        raise ValueError(f"value {value} is not finite")
    shown = value.quantize(Decimal(1).scaleb(-decimals))
    if shown != value:
        raise ValueError(f"value {value} has more than {decimals} decimals")
    digits = format(abs(shown), f"0{VALUE_WIDTH}.{decimals}f")
    if len(digits) != VALUE_WIDTH:
        raise ValueError(f"value {value} does not fit in {VALUE_WIDTH} characters with {decimals} decimals")
    # is_signed keeps -0.000 as the gauge showed it, so a frame round-trips exactly
    sign = "-" if shown.is_signed() else "+"
    return f"{channel}A{sign}{digits}\r".encode("ascii")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the simulated gauge measures. Floats are fine here: values are quantised to
    ``decimals`` before they become digits, exactly like a gauge's display."""

    nominal: Decimal = Decimal("12.000")
    noise: float = 0.004  # standard deviation
    drift: float = 0.0  # added per reading (tool wear)
    oot_rate: float = 0.0  # probability of an out-of-tolerance value
    oot_offset: float = 0.1  # added or subtracted for an out-of-tolerance value
    bad_rate: float = 0.0  # probability that a frame is corrupted instead
    decimals: int = 3
    channel: str = "01"
    interval: float = 0.5  # push mode: seconds between DATA presses
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("oot_rate", "bad_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {rate}")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        # a scenario the frame cannot express fails here, not in the middle of a run
        format_frame(self.channel, self.nominal.quantize(Decimal(1).scaleb(-self.decimals)), self.decimals)


class MitutoyoSimulator(RecordingSimulator[Sent[Decimal]]):
    """The adapter and its gauge on a pty (see :class:`~simulators.base.PtySimulator`).

    Kinds of what is sent: ``value``, ``bad`` (corrupted or truncated frames), ``garbage``.
    """

    thread_name = "mitutoyo-sim"

    def __init__(
        self,
        link: str | os.PathLike[str],
        scenario: Scenario | None = None,
        *,
        mode: Mode = "push",
        request: bytes = b"1\r",
        on_send: SendListener | None = None,
    ) -> None:
        if mode == "request" and not request:
            raise ValueError("request mode needs a request string")
        self.scenario = scenario if scenario is not None else Scenario()
        self.mode: Mode = mode
        self.request = request
        super().__init__(link, seed=self.scenario.seed, on_send=on_send)
        self._count = 0  # readings generated, for drift
        self._requests = 0  # request strings received
        self._reply_delay = 0.0

    # -- what was sent ----------------------------------------------------------------------

    @property
    def sent_values(self) -> list[Decimal]:
        """Values of the good frames, in order."""
        return [s.value for s in self.sent if s.value is not None]

    @property
    def requests_received(self) -> int:
        with self._lock:
            return self._requests

    # -- on demand --------------------------------------------------------------------------

    def next_value(self) -> Decimal:
        """Draw the scenario's next value (advances drift and the random sequence)."""
        s = self.scenario
        with self._lock:
            n = self._count
            self._count += 1
            offset = self._rng.gauss(0.0, s.noise) if s.noise else 0.0
            offset += s.drift * n
            if s.oot_rate and self._rng.random() < s.oot_rate:
                offset += s.oot_offset if self._rng.random() < 0.5 else -s.oot_offset
        quantum = Decimal(1).scaleb(-s.decimals)
        return (s.nominal + Decimal(repr(offset))).quantize(quantum)

    def send_value(self, value: Decimal) -> bytes:
        """Send one reading now; returns the frame. ValueError if the frame cannot hold it."""
        frame = format_frame(self.scenario.channel, value, self.scenario.decimals)
        self._write(Sent(frame, "value", value))
        return frame

    def send_garbage(self, data: bytes) -> None:
        """Send arbitrary bytes; they are recorded as one bad frame."""
        self._write(Sent(data, "garbage"))

    def set_reply_delay(self, seconds: float) -> None:
        """Request mode: answer a request only after ``seconds`` (a slow adapter)."""
        with self._lock:
            self._reply_delay = seconds

    def send_noise(self, data: bytes = b"\x00\xff") -> None:
        """Line noise without a terminator (a cable plugged in): it runs into the next frame."""
        self._write(Sent(data, "garbage"))

    def send_truncated(self) -> bytes:
        """Send a frame that lost characters in transit (its CR still arrives)."""
        frame = format_frame(self.scenario.channel, self.next_value(), self.scenario.decimals)
        with self._lock:
            cut = self._rng.randrange(1, len(frame) - 1)
        bad = frame[:cut] + b"\r"
        self._write(Sent(bad, "bad"))
        return bad

    # -- internals --------------------------------------------------------------------------

    def _corrupt(self, frame: bytes) -> bytes:
        with self._lock:
            kind = self._rng.randrange(4)
            pos = self._rng.randrange(0, len(frame) - 1)
        if kind == 0:
            return b"#E01\r"  # adapter error line
        if kind == 1:
            return frame[:pos] + frame[pos + 1 :]  # a character lost
        if kind == 2:
            return frame[:pos] + b"?" + frame[pos + 1 :]  # a character garbled
        return frame[:pos] + b"\xff" + frame[pos:]  # line noise inserted

    def _emit_one(self) -> None:
        """Send the scenario's next frame: usually a value, sometimes a corrupted one."""
        value = self.next_value()
        try:
            frame = format_frame(self.scenario.channel, value, self.scenario.decimals)
        except ValueError as exc:
            # drift walked the value off the display; a real gauge would show an overflow
            log.warning("mitutoyo simulator: nothing sent: %s", exc)
            return
        if self._chance(self.scenario.bad_rate):
            self._write(Sent(self._corrupt(frame), "bad"))
        else:
            self._write(Sent(frame, "value", value))

    def _run(self) -> None:
        pending = b""
        interval = self.scenario.interval
        while not self._stop.is_set():
            if self.mode == "push":
                if self._stop.wait(interval):
                    return
                if self._silent.is_set() or not self.port.plugged:
                    continue
                try:
                    self._emit_one()
                except (PortUnplugged, TimeoutError):
                    continue  # unplugged meanwhile, or nobody reading: that press is lost
            else:
                if not self.port.plugged:
                    pending = b""
                    self._stop.wait(0.05)
                    continue
                pending += self.port.read_available(0.05)
                while (at := pending.find(self.request)) >= 0:
                    pending = pending[at + len(self.request) :]
                    with self._lock:
                        self._requests += 1
                        delay = self._reply_delay
                    if delay and self._stop.wait(delay):
                        return
                    if not self._silent.is_set():
                        try:
                            self._emit_one()
                        except (PortUnplugged, TimeoutError):
                            break
                # keep only what could still be the start of a request
                pending = pending[-(len(self.request) - 1) :] if len(self.request) > 1 else b""
