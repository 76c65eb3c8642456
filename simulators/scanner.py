"""A serial barcode scanner on a pty: one code per line, CR or CR LF after each.

Codes come from a :class:`ScanScenario`: GS1 element strings as a scanner transmits them
(symbology identifier, FNC1 as GS between variable-length fields), the parenthesised
human-readable form, or a shop's own label format; the serial number counts up so every
label is a new part. Codes can also be sent as given. Faults: garbage, truncated codes,
invalid bytes, silence (no scans while started), unplug and replug.

The GS1 encoding here follows the GS1 "predefined length" table by itself, independently
of the driver's parser, so round-trip tests compare two implementations.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from simulators.base import RecordingSimulator, SendListener, escaped_arg, printer, rate_arg, serve
from simulators.pty import PortUnplugged

log = logging.getLogger(__name__)

GS = "\x1d"
CodeFormat = Literal["gs1", "hri", "shop"]

#: GS1 General Specifications: AIs starting with these two digits have a predefined total
#: length (AI included) and need no FNC1 after them; every other AI does, unless it is last
PREDEFINED_LENGTH: dict[str, int] = {
    "00": 20,
    "01": 16,
    "02": 16,
    "03": 16,
    "04": 18,
    "11": 8,
    "12": 8,
    "13": 8,
    "14": 8,
    "15": 8,
    "16": 8,
    "17": 8,
    "18": 8,
    "19": 8,
    "20": 4,
    "31": 10,
    "32": 10,
    "33": 10,
    "34": 10,
    "35": 10,
    "36": 10,
    "41": 16,
}


def check_digit(digits: str) -> str:
    """GS1 mod-10: weights 3 and 1 alternate from the rightmost data digit."""
    weights = [3, 1] * len(digits)
    total = sum(int(d) * w for d, w in zip(reversed(digits), weights, strict=False))
    return str(-total % 10)


def element_string(fields: Sequence[tuple[str, str]], *, symbology: str | None = "]C1") -> str:
    """A GS1 element string as a scanner transmits it: ``]C1`` + ``01...`` + GS + ``10...``.

    Raises ValueError when a predefined-length field has the wrong length (the code would
    be misread).
    """
    parts: list[str] = [symbology or ""]
    for i, (ai, value) in enumerate(fields):
        predefined = PREDEFINED_LENGTH.get(ai[:2])
        if predefined is not None and len(ai) + len(value) != predefined:
            raise ValueError(f"AI ({ai}) needs {predefined - len(ai)} characters, got {value!r}")
        parts.append(ai + value)
        if predefined is None and i < len(fields) - 1:
            parts.append(GS)
    return "".join(parts)


def hri(fields: Sequence[tuple[str, str]]) -> str:
    """The parenthesised human-readable form: ``(01)09501101530003(10)ABC``."""
    return "".join(f"({ai}){value}" for ai, value in fields)


@dataclass(frozen=True, slots=True)
class ScanScenario:
    formats: tuple[CodeFormat, ...] = ("gs1",)  # cycled, one per code
    gtin: str = "09501101530003"
    lot: str = "L2026-1121"
    expiry: str | None = "271231"  # YYMMDD, DD 00 for the end of the month
    part_number: str = "HX-4711"
    serial_start: int = 1
    serial_template: str = "{n:06d}"
    shop_template: str = "{part_number}|HX{serial}|{lot}"
    symbology: str | None = "]C1"
    interval: float = 1.0  # seconds between scans when started
    bad_rate: float = 0.0  # probability that a code arrives with a garbled byte
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("formats must not be empty")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError(f"bad_rate must be within 0..1, got {self.bad_rate}")
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        if len(self.gtin) != 14 or not self.gtin.isdigit() or check_digit(self.gtin[:-1]) != self.gtin[-1]:
            raise ValueError(f"gtin must be 14 digits with a valid check digit, got {self.gtin!r}")
        self.code(self.serial_start)  # templates fail here, not in the simulator thread

    def fields(self, serial: str) -> list[tuple[str, str]]:
        out = [("01", self.gtin)]
        if self.expiry is not None:
            out.append(("17", self.expiry))
        out += [("10", self.lot), ("21", serial)]
        return out

    def code(self, n: int, fmt: CodeFormat | None = None) -> str:
        serial = self.serial_template.format(n=n)
        fmt = fmt or self.formats[0]
        if fmt == "gs1":
            return element_string(self.fields(serial), symbology=self.symbology)
        if fmt == "hri":
            return hri(self.fields(serial))
        return self.shop_template.format(part_number=self.part_number, serial=serial, lot=self.lot, n=n)


@dataclass(frozen=True, slots=True)
class Sent:
    data: bytes
    kind: str  # code, bad, garbage
    code: str | None = None


class ScannerSimulator(RecordingSimulator[Sent]):
    """The scanner on a pty (see :class:`~simulators.base.PtySimulator`); when started it
    scans every ``interval`` seconds, unless silent."""

    thread_name = "scanner-sim"

    def __init__(
        self,
        link: str | os.PathLike[str],
        scenario: ScanScenario | None = None,
        *,
        terminator: bytes = b"\r",
        codes: Sequence[str] | None = None,
        on_send: SendListener | None = None,
    ) -> None:
        if terminator not in (b"\r", b"\r\n", b"\n"):
            raise ValueError(f"terminator must be CR, LF or CR LF, got {terminator!r}")
        self.scenario = scenario if scenario is not None else ScanScenario()
        self.terminator = terminator
        super().__init__(link, seed=self.scenario.seed, on_send=on_send)
        self._codes = list(codes) if codes else None  # sent in turn instead of the scenario's
        self._count = 0

    @property
    def sent_codes(self) -> list[str]:
        return [s.code for s in self.sent if s.code is not None]

    # -- scanning ---------------------------------------------------------------------------

    def next_code(self) -> str:
        with self._lock:
            n = self._count
            self._count += 1
        if self._codes is not None:
            return self._codes[n % len(self._codes)]
        s = self.scenario
        return s.code(s.serial_start + n, s.formats[n % len(s.formats)])

    def scan(self, code: str | None = None) -> bytes:
        """Send one code now (the scenario's next one by default); returns the bytes sent."""
        code = self.next_code() if code is None else code
        data = code.encode("utf-8") + self.terminator
        self._write(Sent(data, "code", code))
        return data

    def send_garbage(self, data: bytes) -> None:
        self._write(Sent(data, "garbage"))

    def send_truncated(self, code: str | None = None, keep: int | None = None) -> bytes:
        """A code cut short (a label scanned as the scanner lost it), terminator still sent.

        By default a GS1 element string is cut inside its GTIN, so the cut is detectable;
        cutting a variable-length field can leave a valid, different code, which no
        parser could tell from a real one.
        """
        code = self.next_code() if code is None else code
        if keep is None:
            start = 3 if code.startswith("]") else 0
            keep = start + 2 + 7 if code[start : start + 2] == "01" else max(1, len(code) // 2)
        data = code[:keep].encode("utf-8") + self.terminator
        self._write(Sent(data, "bad"))
        return data

    def send_garbled(self, code: str | None = None) -> bytes:
        """A code with one byte garbled in transit (a parity error shows as 0xA7, invalid UTF-8)."""
        code = self.next_code() if code is None else code
        raw = code.encode("utf-8")
        with self._lock:
            at = self._rng.randrange(len(raw))
        data = raw[:at] + b"\xa7" + raw[at + 1 :] + self.terminator
        self._write(Sent(data, "bad"))
        return data

    # -- internals --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.scenario.interval):
            if self._silent.is_set() or not self.port.plugged:
                continue
            corrupt = self._chance(self.scenario.bad_rate)
            try:
                if corrupt:
                    self.send_garbled()
                else:
                    self.scan()
            except (PortUnplugged, TimeoutError):
                continue  # that scan is lost: nobody was listening


# -- command line --------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulators scanner``."""
    p = sub.add_parser("scanner", help="serial barcode scanner (GS1 with FNC1, parenthesised, shop labels)")
    p.add_argument("--link", required=True, help="path of the symlink to the pty (the driver's port)")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("gs1", "hri", "shop"),
        default=None,
        help="code format; repeat to alternate (default gs1)",
    )
    p.add_argument("--code", dest="codes", action="append", default=None, help="send these codes in turn instead")
    p.add_argument("--gtin", default="09501101530003")
    p.add_argument("--lot", default="L2026-1121")
    p.add_argument("--expiry", default="271231", help="YYMMDD; empty for none")
    p.add_argument("--part-number", default="HX-4711")
    p.add_argument("--serial-start", type=int, default=1)
    p.add_argument("--shop-template", default="{part_number}|HX{serial}|{lot}")
    p.add_argument("--symbology", default="]C1", help="AIM identifier before GS1 codes; empty for none")
    p.add_argument("--terminator", type=escaped_arg, default=b"\r", help="escapes allowed: '\\r\\n'")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between scans")
    p.add_argument("--bad-rate", type=rate_arg, default=0.0, help="probability of a garbled code")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_cli)


def _run_cli(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    def build() -> ScannerSimulator:
        scenario = ScanScenario(
            formats=tuple(args.formats or ("gs1",)),
            gtin=args.gtin,
            lot=args.lot,
            expiry=args.expiry or None,
            part_number=args.part_number,
            serial_start=args.serial_start,
            shop_template=args.shop_template,
            symbology=args.symbology or None,
            interval=args.interval,
            bad_rate=args.bad_rate,
            seed=args.seed,
        )
        return ScannerSimulator(args.link, scenario, terminator=args.terminator, codes=args.codes, on_send=printer(out))

    return serve("scanner", build, out, stop)
