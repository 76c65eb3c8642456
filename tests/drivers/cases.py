"""The driver cases the contract suite (``test_contract.py``) runs, one per driver and set-up.

A case says how to plug in the device end (a simulator written from the manual, on a pty
or TCP), which settings make the driver talk to it, and what identifies a reading's
content. The contract tests then hold every driver to the same rules: it delivers exactly
what the device sent, a bad frame is an event and never a value, silence is a timeout,
an unplugged cable is one outage and recovery, stop() is prompt, and so on.

To add a driver: write a :class:`Peer` for its simulator (or use :class:`SimPeer`) and a
:class:`DriverCase`, and append it to :data:`CASES`. A driver on TCP (Modbus) fits the
same shape: ``Setup.settings`` carries host and port, ``Setup.address`` is ``host:port``,
``unplug``/``replug`` stop and restart the server, and capabilities it lacks (garbage on
the wire, noise before a frame) are left None, which skips those contract tests for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import yaml

from drivers.base import Reading
from simulators.ascii_line import OHAUS, SYLVAC, AsciiLineSimulator
from simulators.ascii_line import Scenario as AsciiScenario
from simulators.base import RecordingSimulator
from simulators.mitutoyo import MitutoyoSimulator
from simulators.mitutoyo import Scenario as MitutoyoScenario
from simulators.mitutoyo_idh import MitutoyoIdhSimulator
from simulators.mitutoyo_idh import Scenario as IdhScenario
from simulators.mt_sics import MtSicsSimulator
from simulators.mt_sics import Scenario as MtSicsScenario
from simulators.sartorius import SartoriusSimulator
from simulators.sartorius import Scenario as SbiScenario
from simulators.scanner import ScannerSimulator, ScanScenario

REPO = Path(__file__).resolve().parents[2]
SERIAL = REPO / "drivers" / "serial"
#: serial settings a pty takes on every reopen (Linux ptys refuse 7-bit and parity settings)
PTY_LINE = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}


class Peer(Protocol):
    """The device end of one contract run: a simulator speaking the real wire protocol.

    ``push`` makes a push device send one reading now; ``delay`` makes an asked device
    answer late; ``send_bytes`` puts raw bytes on the wire. None: the device cannot.
    """

    push: Callable[[], object] | None
    delay: Callable[[float], None] | None
    send_bytes: Callable[[bytes], None] | None

    def start(self) -> None:
        """Begin what the device does by itself: answer requests, push readings."""

    def stop(self) -> None:
        """Stop doing anything by itself; still plugged in."""

    def close(self) -> None: ...

    def sent(self) -> list[object]:
        """What the device sent in its value frames, in order, as :attr:`DriverCase.key` sees it."""

    def sent_frames(self) -> list[bytes]:
        """The bytes of those value frames, in order."""

    def bad_frames(self) -> list[bytes]:
        """The bytes of every corrupted frame and every piece of garbage sent, in order."""

    def go_silent(self, silent: bool = True) -> None: ...

    def unplug(self) -> None: ...

    def replug(self) -> None: ...


class SimPeer:
    """A :class:`Peer` around one of this project's recording simulators.

    ``key`` turns one record of what the simulator sent into what the driver's reading must
    show (None for records that are not value frames); ``push`` makes the device send one
    reading now (push devices); ``delay`` makes it answer slowly; ``garbage`` sends raw
    bytes. Each is the simulator's own method, so that this adapter adds no behaviour.
    """

    def __init__(
        self,
        sim: RecordingSimulator[Any],
        key: Callable[[Any], object | None],
        *,
        push: Callable[[], object] | None = None,
        delay: Callable[[float], None] | None = None,
    ) -> None:
        self.sim = sim
        self._key = key
        self.push = push
        self.delay = delay
        self.send_bytes: Callable[[bytes], None] | None = getattr(sim, "send_garbage", None)

    def start(self) -> None:
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()

    def close(self) -> None:
        self.sim.close()

    def sent(self) -> list[object]:
        return [k for rec in self.sim.sent if (k := self._key(rec)) is not None]

    def sent_frames(self) -> list[bytes]:
        return [rec.data for rec in self.sim.sent if self._key(rec) is not None]

    def bad_frames(self) -> list[bytes]:
        return self.sim.bad_frames

    def go_silent(self, silent: bool = True) -> None:
        self.sim.go_silent(silent)

    def unplug(self) -> None:
        self.sim.unplug()

    def replug(self) -> None:
        self.sim.replug()


@dataclass(frozen=True)
class Setup:
    """One contract run's wiring: the driver's settings and how to plug the device in."""

    settings: dict[str, Any]  # besides id and driver: where the device is, how to talk to it
    plug: Callable[..., Peer]  # creates the device end; keyword argument bad_rate: corrupted frames
    address: str  # what the simulator's command line takes as --link (or host:port)


@dataclass(frozen=True)
class DriverCase:
    """One driver in one set-up, as the contract suite runs it.

    * ``asks``: the driver asks and the device answers (``request("read")`` is awaited, so
      silence is a timeout); otherwise the device pushes readings by itself.
    * ``polling``: settings that make an asking driver poll by itself, fast.
    * ``key``: what must be equal between a reading and the frame the device sent.
    * ``terminator``: what ends a frame on the wire (None: not a line protocol); garbage and
      noise tests use it.
    * ``cli``: the simulator's command line for a set-up (``simulators <cli...>``).
    """

    id: str
    driver: str
    prepare: Callable[[Path], Setup]
    asks: bool
    key: Callable[[Reading], object]
    terminator: bytes | None
    cli: Callable[[Setup], list[str]]
    polling: dict[str, Any] = field(default_factory=dict)


def value_text(reading: Reading) -> object:
    # str(): Decimal equality ignores trailing zeros, the record must not
    return None if reading.value is None else str(reading.value)


def sample(folder: str, name: str = "sample.yaml") -> dict[str, Any]:
    """The first device of a shipped sample, without what a run decides (id, port, line settings)."""
    doc = yaml.safe_load((SERIAL / folder / name).read_text(encoding="utf-8"))
    device = dict(doc["devices"][0])
    for key in ("id", "driver", "port", "gauge", "poll_interval", "reconnect_min", "reconnect_max", *PTY_LINE):
        device.pop(key, None)
    return device


def link(argv: list[str]) -> Callable[[Setup], list[str]]:
    """A pty simulator's command line: ``argv`` and ``--link`` the set-up's path."""
    return lambda setup: [*argv, "--link", setup.address]


def _link(tmp: Path) -> Path:
    return tmp / "dev" / "device-1"


def _settings(link: Path, **settings: Any) -> dict[str, Any]:
    return {"port": str(link), **PTY_LINE, **settings}


# -- the cases ------------------------------------------------------------------------------------


def _mitutoyo(mode: str) -> Callable[[Path], Setup]:
    def prepare(tmp: Path) -> Setup:
        link = _link(tmp)

        def plug(bad_rate: float = 0.0) -> SimPeer:
            scenario = MitutoyoScenario(noise=0.3, interval=0.005, bad_rate=bad_rate, seed=3)
            sim = MitutoyoSimulator(link, scenario, mode="request" if mode == "request" else "push", request=b"1\r")
            return SimPeer(
                sim,
                lambda r: str(r.value) if r.kind == "value" else None,
                push=lambda: sim.send_value(sim.next_value()),
                delay=sim.set_reply_delay,
            )

        extra = {"request": "1\r", "response_timeout": 1.0} if mode == "request" else {}
        return Setup(_settings(link, **extra), plug, str(link))

    return prepare


def _idh(tmp: Path) -> Setup:
    link = _link(tmp)

    def plug(bad_rate: float = 0.0) -> SimPeer:
        sim = MitutoyoIdhSimulator(link, IdhScenario(noise=0.002, bad_rate=bad_rate, seed=3))
        return SimPeer(
            sim, lambda r: (r.value[0], str(r.value[1])) if r.value is not None else None, delay=sim.set_reply_delay
        )

    return Setup(_settings(link, poll_interval=None, response_timeout=1.0), plug, str(link))


def _mt_sics(tmp: Path) -> Setup:
    link = _link(tmp)

    def plug(bad_rate: float = 0.0) -> SimPeer:
        sim = MtSicsSimulator(link, MtSicsScenario(noise=0.02, bad_rate=bad_rate, seed=3))
        return SimPeer(sim, lambda r: str(r.value[1]) if r.value is not None else None, delay=sim.set_reply_delay)

    return Setup(
        _settings(link, **{**sample("mt_sics"), "poll_interval": None, "response_timeout": 1.0}), plug, str(link)
    )


def _sbi(frame: str) -> Callable[[Path], Setup]:
    def prepare(tmp: Path) -> Setup:
        link = _link(tmp)

        def plug(bad_rate: float = 0.0) -> SimPeer:
            identifier = "N" if frame == "22" else None
            scenario = SbiScenario(noise=0.3, identifier=identifier, bad_rate=bad_rate, interval=0.005, seed=3)
            sim = SartoriusSimulator(link, scenario, mode="push" if frame == "22" else "request")
            return SimPeer(
                sim,
                lambda r: str(r.value) if r.kind in ("value", "unstable") else None,
                push=sim.print_frame,
                delay=sim.set_delay,
            )

        settings = {**sample("sartorius_sbi"), "mode": "push", "frame": frame, "response_timeout": 1.0}
        return Setup(_settings(link, **settings), plug, str(link))

    return prepare


def _ascii(instrument: str) -> Callable[[Path], Setup]:
    preset = {"sylvac": SYLVAC, "ohaus": OHAUS}[instrument]

    def prepare(tmp: Path) -> Setup:
        link = _link(tmp)

        def plug(bad_rate: float = 0.0) -> SimPeer:
            scenario = AsciiScenario(
                nominal=Decimal("-3.500") if instrument == "sylvac" else Decimal("250.00"),
                noise=0.4,
                bad_rate=bad_rate,
                interval=0.005,
                seed=3,
            )
            sim = AsciiLineSimulator(link, preset, scenario)
            return SimPeer(
                sim, lambda r: str(r.value) if r.kind in ("value", "unstable") else None, delay=sim.set_delay
            )

        settings = {**sample("ascii", f"sample-{instrument}.yaml"), "response_timeout": 1.0}
        return Setup(_settings(link, **settings), plug, str(link))

    return prepare


def _scanner(tmp: Path) -> Setup:
    link = _link(tmp)

    def plug(bad_rate: float = 0.0) -> SimPeer:
        sim = ScannerSimulator(link, ScanScenario(formats=("gs1", "hri"), interval=0.005, bad_rate=bad_rate, seed=3))
        return SimPeer(sim, lambda r: r.code if r.kind == "code" else None, push=sim.scan)

    return Setup(_settings(link, format="gs1"), plug, str(link))


def _case(
    id: str,
    driver: str,
    prepare: Callable[[Path], Setup],
    cli: list[str],
    *,
    asks: bool,
    terminator: bytes,
    key: Callable[[Reading], object] = value_text,
    polling: dict[str, Any] | None = None,
) -> DriverCase:
    return DriverCase(id, driver, prepare, asks, key, terminator, link(cli), polling or {})


FAST = {"poll_interval": 0.01}
CASES: list[DriverCase] = [
    _case(
        "mitutoyo-push", "mitutoyo", _mitutoyo("push"), ["mitutoyo", "--interval", "0.01"], asks=False, terminator=b"\r"
    ),
    _case(
        "mitutoyo-request",
        "mitutoyo",
        _mitutoyo("request"),
        ["mitutoyo", "--mode", "request", "--request", "1\\r"],
        asks=True,
        terminator=b"\r",
        polling=FAST,
    ),
    _case(
        "mitutoyo-idh",
        "mitutoyo-idh",
        _idh,
        ["mitutoyo-idh"],
        asks=True,
        terminator=b"\r\n",
        key=lambda r: (r.channel, value_text(r)),
        polling=FAST,
    ),
    _case("mt-sics", "mt-sics", _mt_sics, ["mt-sics"], asks=True, terminator=b"\r\n", polling=FAST),
    _case(
        "sartorius-sbi-16",
        "sartorius-sbi",
        _sbi("16"),
        ["sartorius-sbi"],
        asks=True,
        terminator=b"\r\n",
        polling={"mode": "request", **FAST},
    ),
    _case(
        "sartorius-sbi-22-push",
        "sartorius-sbi",
        _sbi("22"),
        ["sartorius-sbi", "--frame", "22", "--mode", "push", "--interval", "0.01"],
        asks=False,
        terminator=b"\r\n",
    ),
    _case(
        "ascii-sylvac",
        "ascii",
        _ascii("sylvac"),
        ["ascii", "--preset", "sylvac"],
        asks=True,
        terminator=b"\r",
        polling=FAST,
    ),
    _case(
        "ascii-ohaus",
        "ascii",
        _ascii("ohaus"),
        ["ascii", "--preset", "ohaus"],
        asks=True,
        terminator=b"\r\n",
        polling=FAST,
    ),
    _case(
        "scanner-gs1",
        "scanner",
        _scanner,
        ["scanner", "--interval", "0.01"],
        asks=False,
        terminator=b"\r",
        key=lambda r: r.text,
    ),
]
