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
the wire, noise before a frame, corrupted frames) are left out, which skips those contract
tests for it. The Modbus cases (:class:`PlcPeer`, TCP and RTU on a pty) read a part's force
on the PLC's part-done trigger: a finished part is a value the device pushed.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
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
from simulators.plc import Addr, PlcSimulator
from simulators.plc import Scenario as PlcScenario
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
    * ``corrupts``: its simulator can corrupt frames (``plug(bad_rate=...)``); a TCP peer cannot.
    """

    id: str
    driver: str
    prepare: Callable[[Path], Setup]
    asks: bool
    key: Callable[[Reading], object]
    terminator: bytes | None
    cli: Callable[[Setup], list[str]]
    polling: dict[str, Any] = field(default_factory=dict)
    corrupts: bool = True


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


class PlcPeer:
    """A :class:`Peer` around the PLC simulator: the station finishes parts, the driver acquires
    each one on its part-done bit and acknowledges it (the trigger handshake).

    A finished part is the device "pushing" a value: ``push`` finishes the next one as soon as
    the previous one is acknowledged, ``start`` lets the station run its cycle (which waits for
    the acknowledge too) every ``cycle`` seconds. What was sent is each part's force, and its
    frame the force's two registers as the simulator's map puts them on the wire (float32,
    words swapped: CDAB), packed here with ``struct``, not with the driver's codec.
    """

    delay: Callable[[float], None] | None = None
    send_bytes: Callable[[bytes], None] | None = None

    def __init__(self, transport: str, where: int | Path, cycle: float) -> None:
        scenario = PlcScenario(seed=3, word_order="CDAB", wait_for_ack=True)
        if isinstance(where, int):
            self.sim = PlcSimulator((1,), scenario, port=where)
        else:
            self.sim = PlcSimulator((1,), scenario, port=None, rtu_link=where)
        self.transport = transport
        self._cycle = cycle
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.push: Callable[[], object] | None = self._next_part
        self.sim.start()

    def _next_part(self) -> object:
        """Finish the next part as soon as the PLC program may (the previous one acknowledged)."""
        deadline = time.monotonic() + 5.0
        while not (finished := self.sim.station.cycle()):
            if time.monotonic() > deadline:
                raise AssertionError("the PLC still waits for the previous part's acknowledge")
            time.sleep(0.002)
        return finished[0]

    def _run(self) -> None:
        while not self._halt.wait(self._cycle):
            self.sim.station.cycle()

    def start(self) -> None:
        if self._thread is None:
            self._halt.clear()
            self._thread = threading.Thread(target=self._run, name="plc-peer-cycle", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)

    def close(self) -> None:
        self.stop()
        self.sim.stop()

    def sent(self) -> list[object]:
        return [("force", part.force) for part in self.sim.parts(1)]

    def sent_frames(self) -> list[bytes]:
        frames = []
        for part in self.sim.parts(1):
            big = struct.pack(">f", float(part.force))
            frames.append(big[2:] + big[:2])  # CDAB: the low word first
        return frames

    def bad_frames(self) -> list[bytes]:
        return []

    def go_silent(self, silent: bool = True) -> None:
        self.sim.set_dead(1, silent)

    def unplug(self) -> None:
        if self.transport == "tcp":
            self.sim.stop_server()  # the PLC switched off: connections drop, nobody listens
        else:
            self.sim.unplug()

    def replug(self) -> None:
        if self.transport == "tcp":
            self.sim.start_server()
        else:
            self.sim.replug()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: the PLC simulator's station map: the part-done bit triggers the acquisition of the force,
#: the acknowledge coil completes the handshake (drivers/modbus/README.md, triggers)
PLC_SLAVE = {
    "unit": 1,
    "points": [
        {"name": "done", "table": "discrete", "address": Addr.PART_DONE},
        {"name": "ack", "table": "coil", "address": Addr.ACK},
        {"name": "force", "address": Addr.FORCE, "type": "float32", "order": "CDAB", "unit": "N"},
    ],
    "trigger": {"point": "done", "on_trigger": ["force"], "acknowledge": {"point": "ack", "value": 1}},
}


def _modbus(transport: str) -> Callable[[Path], Setup]:
    cycle = 0.02 if transport == "tcp" else 0.08

    def prepare(tmp: Path) -> Setup:
        slave = {**PLC_SLAVE, "poll_interval": 0.01 if transport == "tcp" else 0.02}
        where: int | Path
        if transport == "tcp":
            port = _free_port()
            settings: dict[str, Any] = {"transport": "tcp", "host": "127.0.0.1", "port": port}
            address, where = f"127.0.0.1:{port}", port
        else:
            link = _link(tmp)
            settings = {"transport": "rtu", "serial_port": str(link), "parity": "N"}  # ptys refuse parity
            address, where = str(link), link
        settings.update(timeout=0.3, slaves=[slave])
        return Setup(settings, lambda: PlcPeer(transport, where, cycle), address)

    return prepare


def _modbus_cli(transport: str) -> Callable[[Setup], list[str]]:
    def argv(setup: Setup) -> list[str]:
        if transport == "tcp":
            return ["plc", "--port", str(setup.settings["port"]), "--cycle-time", "0.05", "--seed", "3"]
        return ["plc", "--no-tcp", "--rtu-link", setup.address, "--cycle-time", "0.1", "--seed", "3"]

    return argv


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
    *(
        DriverCase(
            f"modbus-{transport}",
            "modbus",
            _modbus(transport),
            asks=False,
            key=lambda r: (r.channel, r.value),  # float32: the value, not its trailing zeros
            terminator=None,
            cli=_modbus_cli(transport),
            corrupts=False,
        )
        for transport in ("tcp", "rtu")
    ),
]
