"""Cross-checks with peers that share no code with this project's Modbus stack.

* Debian's ``mbpoll`` (libmodbus) reads and writes the PLC simulator, over TCP and over RTU
  on the simulator's pty: the simulator speaks Modbus, not just "what pymodbus accepts".
* The driver reads a Modbus TCP server written here with ``socketserver`` and ``struct``
  from the specification (MBAP header, function codes 1-4, exception responses): the
  driver speaks Modbus, not just "what pymodbus serves".
"""

from __future__ import annotations

import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import pytest

from drivers import registry
from drivers.base import EventKind, Item, Sink
from simulators.plc import Addr, PlcSimulator, Scenario
from tests.conftest import require_binary
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector

REPO = Path(__file__).resolve().parents[2]
_VALUE_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)\s*$", re.MULTILINE)


def mbpoll(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    binary = require_binary("mbpoll")
    return subprocess.run([binary, "-1", *args], capture_output=True, text=True, timeout=timeout, check=False)


def values(result: subprocess.CompletedProcess[str]) -> dict[int, str]:
    """``{reference: printed value}`` from mbpoll's ``[21]: 1250.24`` lines."""
    assert result.returncode == 0, result.stdout + result.stderr
    return {int(ref): text for ref, text in _VALUE_LINE.findall(result.stdout)}


@pytest.fixture
def plc() -> Iterator[PlcSimulator]:
    sim = PlcSimulator((1, 2), Scenario(seed=21, word_order="CDAB"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def one_by_one(collector: Collector) -> Sink:
    """The driver's sink: a poll's readings arrive as one tuple; the collector takes them singly."""

    def sink(item: Item) -> None:
        for one in item if isinstance(item, tuple) else (item,):
            collector(one)

    return sink


def tcp(sim: PlcSimulator, unit: int = 1) -> list[str]:
    return ["-m", "tcp", "-p", str(sim.port), "-a", str(unit)]


# -- mbpoll against the simulator -----------------------------------------------------------------------
# mbpoll counts references from 1: reference = protocol address + 1


def test_mbpoll_reads_the_station_registers(plc: PlcSimulator) -> None:
    part = plc.new_part(1)
    regs = values(mbpoll(*tcp(plc), "-t", "4", "-r", str(Addr.PART_COUNTER + 1), "-c", "4", "127.0.0.1"))
    # counter 1 (ABCD); status: running, part done, waiting for the acknowledge
    assert regs == {1: "0", 2: "1", 3: str(0b111), 4: "0"}
    # mbpoll's default float word order is little-endian word first: CDAB, as the scenario writes
    floats = values(mbpoll(*tcp(plc), "-t", "4:float", "-r", str(Addr.FORCE + 1), "-c", "3", "127.0.0.1"))
    assert [Decimal(floats[r]) for r in (21, 23, 25)] == [part.force, part.torque, part.length]
    counter = values(mbpoll(*tcp(plc), "-t", "4:int", "-B", "-r", "1", "-c", "1", "127.0.0.1"))
    assert counter == {1: "1"}
    hexed = values(mbpoll(*tcp(plc), "-t", "4:hex", "-r", str(Addr.SERIAL + 1), "-c", "10", "127.0.0.1"))
    text = b"".join(int(hexed[r], 16).to_bytes(2, "big") for r in range(11, 21)).rstrip(b"\x00").decode()
    assert text == part.serial


def test_mbpoll_reads_big_endian_floats() -> None:
    with PlcSimulator((1,), Scenario(seed=5, word_order="ABCD")) as sim:
        part = sim.new_part(1)
        floats = values(mbpoll(*tcp(sim), "-t", "4:float", "-B", "-r", str(Addr.FORCE + 1), "-c", "3", "127.0.0.1"))
        assert [Decimal(floats[r]) for r in (21, 23, 25)] == [part.force, part.torque, part.length]


def test_mbpoll_reads_bits_and_input_registers(plc: PlcSimulator) -> None:
    plc.new_part(2)
    plc.set_bits(2, "coil", Addr.FREE, [True, False, True])
    assert values(mbpoll(*tcp(plc, 2), "-t", "1", "-r", "1", "-c", "2", "127.0.0.1")) == {1: "1", 2: "1"}
    assert values(mbpoll(*tcp(plc, 2), "-t", "0", "-r", str(Addr.FREE + 1), "-c", "3", "127.0.0.1")) == {
        101: "1",
        102: "0",
        103: "1",
    }
    assert values(mbpoll(*tcp(plc, 2), "-t", "3", "-r", "1", "-c", "2", "127.0.0.1")) == {1: "237", 2: "1450"}


def test_mbpoll_writes_reach_the_plc_program(plc: PlcSimulator) -> None:
    plc.new_part(1)
    result = mbpoll(*tcp(plc), "-t", "0", "-r", str(Addr.ANDON + 1), "127.0.0.1", "1")
    assert result.returncode == 0, result.stderr
    assert plc.bits(1, "coil", Addr.ANDON, 1) == [True]
    result = mbpoll(*tcp(plc), "-t", "0", "-r", str(Addr.ACK + 1), "127.0.0.1", "1")
    assert result.returncode == 0, result.stderr
    assert plc.acknowledged(1) == [1]
    assert plc.bits(1, "discrete", Addr.PART_DONE, 1) == [False]
    result = mbpoll(*tcp(plc), "-t", "4", "-r", str(Addr.FREE + 1), "127.0.0.1", "--", "513", "7")
    assert result.returncode == 0, result.stderr
    assert plc.registers(1, "holding", Addr.FREE, 2) == [513, 7]


def test_mbpoll_sees_exceptions_and_silence(plc: PlcSimulator) -> None:
    plc.set_exception(1, "holding", 500, 10, 2)
    refused = mbpoll(*tcp(plc), "-t", "4", "-r", "503", "-c", "2", "127.0.0.1")
    assert refused.returncode != 0 and "illegal data address" in (refused.stdout + refused.stderr).lower()
    plc.set_dead(2)
    silent = mbpoll(*tcp(plc, 2), "-o", "0.2", "-t", "4", "-r", "1", "127.0.0.1")
    assert silent.returncode != 0 and "timed out" in (silent.stdout + silent.stderr).lower()


def test_the_command_line_simulator_serves_until_sigterm(tmp_path: Path) -> None:
    """``simulators plc`` (here as ``python -m simulators.plc``): parts every cycle, a dead unit,
    TCP and RTU at once, and a clean exit on SIGTERM that removes the pty link."""
    require_binary("mbpoll")
    link = tmp_path / "plc-cli"
    cmd = [sys.executable, "-m", "simulators.plc", "--port", "0", "--units", "1,2", "--dead", "2"]
    cmd += ["--cycle-time", "0.05", "--no-ack-wait", "--rtu-link", str(link)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"tcp 127\.0\.0\.1:(\d+) and rtu", banner)
        assert found, banner
        port = found.group(1)
        counter = wait_for(
            lambda: int(values(mbpoll("-m", "tcp", "-p", port, "-t", "4:int", "-B", "-r", "1", "127.0.0.1"))[1]) >= 3,
            what="three parts",
        )
        assert counter
        rtu = values(mbpoll("-m", "rtu", "-b", "19200", "-P", "none", "-a", "1", "-t", "1", "-r", "2", str(link)))
        assert rtu == {2: "1"}  # running
        dead = mbpoll("-m", "tcp", "-p", port, "-a", "2", "-o", "0.2", "127.0.0.1")
        assert dead.returncode != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert re.search(r"unit 1 part 1 SN01-000001 force [\d.]+ N", out)
    assert not link.exists()


def test_mbpoll_reads_the_rtu_side_over_the_pty(tmp_path: Path) -> None:
    link = tmp_path / "plc-rtu"
    with PlcSimulator((3,), Scenario(seed=8), port=None, rtu_link=link) as sim:
        part = sim.new_part(3)
        rtu = ["-m", "rtu", "-b", "19200", "-P", "none", "-a", "3"]
        floats = values(mbpoll(*rtu, "-t", "4:float", "-r", str(Addr.FORCE + 1), "-c", "3", str(link)))
        assert [Decimal(floats[r]) for r in (21, 23, 25)] == [part.force, part.torque, part.length]
        assert values(mbpoll(*rtu, "-t", "1", "-r", "1", "-c", "1", str(link))) == {1: "1"}
        assert mbpoll(*rtu, "-t", "0", "-r", str(Addr.ACK + 1), str(link), "1").returncode == 0
        assert sim.acknowledged(3) == [1]
        assert sim.garbage_frames == 0


# -- the driver against a Modbus server that is not pymodbus ------------------------------------------------


class _Image:
    """A fixed process image: what the independent server serves."""

    holding: Final = MappingProxyType({0: 0x1234, 1: 0x5678, 2: 0xFFFF, 10: 0x4142, 11: 0x4300, 20: 0x6666, 21: 0x4148})
    input: Final = MappingProxyType({0: 0xFF85, 5: 0x0001, 6: 0x0000, 7: 0x0000, 8: 0x0002})
    coils: Final = MappingProxyType({0: True, 3: True, 1999: True})
    discrete: Final = MappingProxyType({7: True})
    units: Final = frozenset({1, 2})  # unit 2 exists; anything else gets no answer


class _Handler(socketserver.BaseRequestHandler):
    """Modbus TCP from the specification: 7-byte MBAP header (transaction, protocol 0, length,
    unit), then the PDU. Function codes 1-4 only; anything else is exception 1."""

    server: _IndependentServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(0.1)
        buf = b""
        while not self.server.closing.is_set():
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 7:
                tid, proto, length, unit = struct.unpack(">HHHB", buf[:7])
                if len(buf) < 6 + length:
                    break
                pdu, buf = buf[7 : 6 + length], buf[6 + length :]
                self.server.requests.append((unit, pdu))
                if proto != 0 or unit not in _Image.units:
                    continue  # not ours: a gateway with no such slave stays silent here
                if self.server.delays:
                    time.sleep(self.server.delays.pop(0))  # a slow answer; later requests wait in the socket
                answer = self.answer(pdu)
                sock.sendall(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)

    @staticmethod
    def answer(pdu: bytes) -> bytes:
        fc = pdu[0]
        if fc not in (1, 2, 3, 4) or len(pdu) != 5:
            return bytes([fc | 0x80, 1])
        address, count = struct.unpack(">HH", pdu[1:5])
        if fc in (3, 4):
            if not 1 <= count <= 125:
                return bytes([fc | 0x80, 3])
            image = _Image.holding if fc == 3 else _Image.input
            words = [image.get(a, 0) for a in range(address, address + count)]
            return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
        if not 1 <= count <= 2000:
            return bytes([fc | 0x80, 3])
        bits = _Image.coils if fc == 1 else _Image.discrete
        packed = bytearray((count + 7) // 8)
        for i in range(count):
            if bits.get(address + i):
                packed[i // 8] |= 1 << (i % 8)  # the first coil is the least significant bit
        return bytes([fc, len(packed)]) + bytes(packed)


class _IndependentServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True  # server_close() joins the connection threads

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.closing = threading.Event()
        self.requests: list[tuple[int, bytes]] = []
        self.delays: list[float] = []  # seconds to wait before each of the next answers


@pytest.fixture
def independent_server() -> Iterator[_IndependentServer]:
    server = _IndependentServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="modbus-ref")
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_driver_reads_a_server_written_from_the_specification(
    independent_server: _IndependentServer, collector: Collector
) -> None:
    port = independent_server.server_address[1]
    points: list[dict[str, Any]] = [
        {"name": "u32", "address": 0, "type": "uint32"},  # 0x12345678
        {"name": "i16", "address": 2, "type": "int16"},  # -1
        {"name": "text", "address": 10, "type": "string", "length": 2},  # "ABC"
        {"name": "f32", "address": 20, "type": "float32", "order": "CDAB", "unit": "N"},  # 0x41486666 = 12.525
        {"name": "temp", "table": "input", "address": 0, "type": "int16", "scale": "0.1", "unit": "degC"},
        {"name": "big", "table": "input", "address": 5, "type": "uint64", "order": "CDAB"},
        {"name": "c0", "table": "coil", "address": 0},
        {"name": "c1", "table": "coil", "address": 1},
        {"name": "c3", "table": "coil", "address": 3},
        {"name": "c1999", "table": "coil", "address": 1999},
        {"name": "d7", "table": "discrete", "address": 7},
    ]
    cfg = registry.parse_config(
        {
            "id": "ref",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout": 0.2,
            "backoff_min": 5,
            "max_bit_gap": 2000,  # bridge coils 4..1998: one request up to the 2000-bit limit
            "slaves": [
                {"unit": 1, "poll_interval": 0.05, "points": points},
                {"unit": 2, "points": [{"name": "odd", "table": "holding", "address": 0, "type": "uint16"}]},
                {"unit": 9, "points": [{"name": "nobody", "address": 0}]},
            ],
        }
    )
    drv = registry.create(cfg)
    drv.start(one_by_one(collector))
    try:
        names = {p["name"] for p in points}
        collector.wait_for(lambda c: names <= {r.channel for r in c.readings()}, what="every point")
        collector.wait_for(lambda c: any("unit 9" in e.detail for e in c.events(EventKind.TIMEOUT)), what="unit 9")
    finally:
        drv.stop()
    got = {r.channel: r for r in collector.readings()}
    assert got["u32"].value == 0x12345678 and got["u32"].raw == bytes.fromhex("12345678")
    assert got["i16"].value == -1
    assert got["text"].text == "ABC" and got["text"].value is None
    assert str(got["f32"].value) == "12.525" and got["f32"].unit == "N"
    assert str(got["temp"].value) == "-12.3"
    assert got["big"].value == 2 << 48 | 1  # registers 5..8 = 0001 0000 0000 0002, words reversed
    assert [got[c].value for c in ("c0", "c1", "c3", "c1999", "d7")] == [1, 0, 1, 1, 1]
    assert got["odd"].value == 0x1234
    assert "nobody" not in got
    # one request per table for unit 1: coils 0..1999 fit the 2000-bit limit exactly
    fcs = sorted(pdu[0] for unit, pdu in independent_server.requests[:6] if unit == 1)
    assert fcs == [1, 2, 3, 4]
    coil_read = next(pdu for unit, pdu in independent_server.requests if unit == 1 and pdu[0] == 1)
    assert struct.unpack(">HH", coil_read[1:5]) == (0, 2000)


def test_a_late_tcp_answer_is_told_apart_by_its_transaction(
    independent_server: _IndependentServer, collector: Collector
) -> None:
    cfg = registry.parse_config(
        {
            "id": "ref",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": independent_server.server_address[1],
            "timeout": 0.1,
            "retries": 1,
            "slaves": [{"unit": 1, "poll_interval": 0.05, "points": [{"name": "word", "address": 0}]}],
        }
    )
    drv = registry.create(cfg)
    drv.start(one_by_one(collector))
    try:
        collector.wait_for(lambda c: len(c.readings()) >= 2, what="polls")
        independent_server.delays.append(0.15)  # the answer comes after the timeout, before the retry's
        wait_for(lambda: drv.counters()["late_replies"] == 1, what="the late answer counted")
        n = len(collector.readings())
        collector.wait_for(lambda c: len(c.readings()) >= n + 3, what="polls after")
    finally:
        drv.stop()
    assert drv.counters()["timeouts"] == 1
    assert {r.value for r in collector.readings()} == {0x1234}
    (late,) = collector.events(EventKind.BAD_FRAME)
    assert "late reply: answer to transaction" in late.detail and late.raw == bytes.fromhex("03 02 12 34")
