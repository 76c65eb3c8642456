"""The Modbus driver against the PLC simulator, over TCP and over RTU on a real pty (no mocks).

Expected register contents are built with ``struct`` and the vendors' byte tables written out
here, never with the driver's codec, so the codec and the test cannot share a mistake.
"""

from __future__ import annotations

import itertools
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import pytest

from drivers import registry
from drivers.base import DriverError, EventKind, Item, Reading, ReadingStatus
from drivers.modbus.config import ModbusConfig
from drivers.modbus.driver import ModbusDriver
from simulators.plc import Addr, PlcSimulator, Scenario
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.drivers.conftest import Collector

TRANSPORTS = ["tcp", "rtu"]

# -- independent encoding -------------------------------------------------------------------------

INT_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "uint64": ">Q"}
FLOAT_FORMATS = {"float32": ">f", "float64": ">d"}


def to_wire(canonical: bytes, order: str) -> bytes:
    """Big-endian bytes as a device with ``order`` sends them (CDAB: words swapped, BADC: bytes)."""
    regs = [canonical[i : i + 2] for i in range(0, len(canonical), 2)]
    if order in ("CDAB", "DCBA") and len(regs) > 1:
        regs.reverse()
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    return b"".join(regs)


def registers(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


def number_bytes(dtype: str, value: int | float, order: str) -> bytes:
    fmt = INT_FORMATS.get(dtype) or FLOAT_FORMATS[dtype]
    return to_wire(struct.pack(fmt, value), order)


# -- fixtures -------------------------------------------------------------------------------------


@dataclass
class Bus:
    transport: str
    sim: PlcSimulator
    settings: dict[str, Any]


MakeBus = Callable[..., Bus]
MakeDriver = Callable[..., ModbusDriver]


@pytest.fixture
def make_bus(tmp_path: Path) -> Iterator[MakeBus]:
    sims: list[PlcSimulator] = []

    def make(transport: str, units: tuple[int, ...] = (1,), scenario: Scenario | None = None, **kw: Any) -> Bus:
        link = tmp_path / "dev" / f"plc-{len(sims)}"
        if transport == "tcp":
            sim = PlcSimulator(units, scenario, port=0, **kw)
        else:
            framer: Literal["rtu", "ascii"] = "ascii" if transport == "ascii" else "rtu"
            sim = PlcSimulator(units, scenario, port=None, rtu_link=link, serial_framer=framer, **kw)
        sims.append(sim)
        sim.start()
        if transport == "tcp":
            settings: dict[str, Any] = {"transport": "tcp", "host": "127.0.0.1", "port": sim.port}
        else:
            # Linux ptys refuse parity (EINVAL): the serial tests run 8N1
            settings = {"transport": transport, "serial_port": str(link), "parity": "N"}
        return Bus(transport, sim, settings)

    yield make
    for sim in sims:
        sim.stop()


class CycleSink:
    """The driver's sink: keeps each delivered tuple (one poll cycle, one acquisition) and hands
    its readings, and every event, on to the test's collector one by one."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.cycles: list[tuple[Reading, ...]] = []

    def __call__(self, item: Item) -> None:
        if isinstance(item, tuple):
            self.cycles.append(item)
            for reading in item:
                self.collector(reading)
        else:
            self.collector(item)


@pytest.fixture
def sink(collector: Collector) -> CycleSink:
    return CycleSink(collector)


@pytest.fixture
def make_driver(sink: CycleSink) -> Iterator[MakeDriver]:
    """Builds a driver through the registry (as the gateway does) and starts it on ``sink``."""
    started: list[ModbusDriver] = []

    def make(bus: Bus, slaves: list[dict[str, Any]], start: bool = True, **settings: Any) -> ModbusDriver:
        raw = {
            "id": "plc-1",
            "driver": "modbus",
            **bus.settings,
            "timeout": 0.3,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "backoff_min": 0.3,
            "backoff_max": 1.0,
            **settings,
            "slaves": slaves,
        }
        drv = registry.create(registry.parse_config(raw))
        assert isinstance(drv, ModbusDriver)
        if start:
            drv.start(sink)
            started.append(drv)
        return drv

    yield make
    for drv in started:
        drv.stop()


def latest(collector: Collector, channel: str) -> Reading | None:
    found = [r for r in collector.readings() if r.channel == channel]
    return found[-1] if found else None


def by_channel(collector: Collector, channel: str) -> list[Reading]:
    return [r for r in collector.readings() if r.channel == channel]


def wait_channels(collector: Collector, channels: set[str], timeout: float = 10.0) -> dict[str, Reading]:
    collector.wait_for(lambda c: channels <= {r.channel for r in c.readings()}, timeout, f"readings of {channels}")
    return {ch: r for r in collector.readings() for ch in [r.channel] if ch in channels}


def poll_interval(transport: str) -> float:
    return 0.05 if transport == "tcp" else 0.15


# -- registry and configuration -----------------------------------------------------------------------


BASE: dict[str, Any] = {"id": "p", "driver": "modbus", "host": "10.0.0.5", "slaves": [{"unit": 1, "points": []}]}


def test_config_defaults() -> None:
    cfg = registry.parse_config(
        {
            **BASE,
            "slaves": [
                {"unit": 1, "points": [{"name": "a", "address": 0}, {"name": "c", "table": "coil", "address": 3}]}
            ],
        }
    )
    assert isinstance(cfg, ModbusConfig)
    assert (cfg.transport, cfg.port, cfg.timeout, cfg.retries, cfg.max_registers, cfg.max_bits) == (
        "tcp",
        502,
        1.0,
        1,
        125,
        2000,
    )
    a, c = cfg.slaves[0].points
    assert (a.table, a.type, a.resolved_order, str(a.scale), str(a.offset)) == ("holding", "uint16", "ABCD", "1", "0")
    assert (c.table, c.type) == ("coil", "bit")
    assert cfg.silent_interval == 0.0
    rtu = ModbusConfig.model_validate(
        {**BASE, "host": None, "transport": "rtu", "serial_port": "/dev/ttyUSB0", "baudrate": 9600}
    )
    assert rtu.parity == "E"  # the serial line specification's default
    assert rtu.silent_interval == pytest.approx(3.5 * 11 / 9600)
    fast = rtu.model_copy(update={"baudrate": 115200})
    assert fast.silent_interval == pytest.approx(0.00175)


def point(**kw: Any) -> dict[str, Any]:
    return {"name": "p", "address": 0, **kw}


TRIG = [point(), {"name": "d", "table": "discrete", "address": 0}]  # a register and a part-done bit


@pytest.mark.parametrize(
    "change",
    [
        {"host": None},  # tcp needs a host
        {"transport": "rtu"},  # rtu needs a serial port (and no host)
        {"slaves": []},
        {"slaves": [{"unit": 1}, {"unit": 1}]},
        {"transport": "rtu", "host": None, "serial_port": "/dev/x", "slaves": [{"unit": 0}]},  # broadcast
        {"slaves": [{"unit": 1, "points": [point(), point()]}]},  # a channel name twice
        {"slaves": [{"unit": 1, "points": [point()]}, {"unit": 2, "points": [point()]}]},
        {"slaves": [{"unit": 1, "points": [point(type="string")]}]},  # no length
        {"slaves": [{"unit": 1, "points": [point(type="uint16", length=2)]}]},
        {"slaves": [{"unit": 1, "points": [point(type="bit")]}]},  # which bit of the register?
        {"slaves": [{"unit": 1, "points": [point(table="coil", type="float32")]}]},
        {"slaves": [{"unit": 1, "points": [point(table="coil", bit=3)]}]},
        {"slaves": [{"unit": 1, "points": [point(order="CDAB", word_order="little")]}]},
        {"slaves": [{"unit": 1, "points": [point(type="string", length=126)]}]},
        {"slaves": [{"unit": 1, "max_registers": 8, "points": [point(type="string", length=9)]}]},
        {"slaves": [{"unit": 1, "points": [point(type="float32", address=65535)]}]},
        {"slaves": [{"unit": 1, "points": [point(scale=0)]}]},
        {"slaves": [{"unit": 1, "points": [point(type="string", length=2, scale=2)]}]},
        {"slaves": [{"unit": 1, "points": [point(label="serial")]}]},  # labels are strings
        {"slaves": [{"unit": 1, "points": [point(order="XYZW")]}]},
        {"slaves": [{"unit": 1, "points": [point(colour="red")]}]},  # typos fail at start-up
        {"slaves": [{"unit": 1, "trigger": {"point": "nope", "on_trigger": ["p"]}, "points": [point()]}]},
        {"slaves": [{"unit": 1, "trigger": {"point": "p", "on_trigger": []}, "points": [point()]}]},
        {"slaves": [{"unit": 1, "trigger": {"point": "p", "mode": "rise", "on_trigger": ["p"]}, "points": [point()]}]},
        {
            "slaves": [
                {
                    "unit": 1,
                    "trigger": {"point": "p", "on_trigger": ["p"], "acknowledge": {"point": "i"}},
                    "points": [point(), {"name": "i", "table": "input", "address": 1}],
                }
            ]
        },
        {
            "slaves": [
                {
                    "unit": 1,
                    "trigger": {"point": "p", "on_trigger": ["p"], "acknowledge": {"point": "p", "value": 70000}},
                    "points": [point()],
                }
            ]
        },
        {"slaves": [{"unit": 1, "groups": [{"name": "g", "poll_interval": 1, "points": ["x"]}], "points": [point()]}]},
        {"backoff_min": 5, "backoff_max": 1},
        {"max_registers": 126},
        {"late_reply_window": 0.5},  # TCP matches answers by transaction id
        {"slaves": [{"unit": 1, "bit_write": "sometimes", "points": [point()]}]},
        {"slaves": [{"unit": 1, "trigger": {"point": "d", "on_trigger": ["p"], "part_id": "p"}, "points": TRIG}]},
        {"slaves": [{"unit": 1, "trigger": {"point": "p", "on_trigger": ["d"], "part_id": "nope"}, "points": TRIG}]},
        {"slaves": [{"unit": 1, "trigger": {"point": "d", "on_trigger": ["p"], "stall_timeout": 0}, "points": TRIG}]},
    ],
)
def test_config_rejects(change: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        registry.parse_config({**BASE, **change})


# -- values ---------------------------------------------------------------------------------------------

TYPE_VALUES: dict[str, tuple[int | float, str]] = {
    "int16": (-12345, "-12345"),
    "uint16": (54321, "54321"),
    "int32": (-123456789, "-123456789"),
    "uint32": (3456789012, "3456789012"),
    "int64": (-1234567890123456789, "-1234567890123456789"),
    "uint64": (12345678901234567890, "12345678901234567890"),
    "float32": (-1234.56, "-1234.56"),
    "float64": (3.141592653589793, "3.141592653589793"),
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


@pytest.mark.parametrize("transport", [*TRANSPORTS, "ascii"])
def test_every_type_and_order_reads_exactly(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport)
    sim = bus.sim
    points: list[dict[str, Any]] = []
    expected: dict[str, tuple[str | None, str | None, bytes]] = {}  # name -> (value, text, raw)
    address = Addr.FREE
    for (dtype, (value, text)), order in itertools.product(TYPE_VALUES.items(), ORDERS):
        data = number_bytes(dtype, value, order)
        name = f"{dtype}_{order}"
        sim.set_registers(1, "holding", address, registers(data))
        points.append({"name": name, "address": address, "type": dtype, "order": order})
        expected[name] = (text, None, data)
        address += len(data) // 2
    for order in ORDERS:
        canonical = b"SN-000042/A".ljust(12, b"\x00")
        data = to_wire(canonical, order)
        sim.set_registers(1, "holding", address, registers(data))
        points.append({"name": f"serial_{order}", "address": address, "type": "string", "length": 6, "order": order})
        expected[f"serial_{order}"] = (None, "SN-000042/A", data)
        address += 6
    # byte_order / word_order spelled out instead of the combined name
    data = number_bytes("float32", 84.2, "CDAB")
    sim.set_registers(1, "input", Addr.FREE, registers(data))
    points.append({"name": "length", "table": "input", "address": Addr.FREE, "type": "float32", "word_order": "little"})
    expected["length"] = ("84.2", None, data)
    # scale and offset, exact: -1234 * 0.1 + 273.15
    sim.set_registers(1, "input", Addr.FREE + 2, registers(struct.pack(">h", -1234)))
    points.append(
        {"name": "temp", "table": "input", "address": Addr.FREE + 2, "type": "int16", "scale": "0.1", "offset": 273.15}
    )
    expected["temp"] = ("149.75", None, b"\xfb\x2e")
    sim.set_registers(1, "holding", 900, [0x8001])
    for bit, val in ((0, "1"), (1, "0"), (15, "1")):
        points.append({"name": f"status_bit{bit}", "address": 900, "type": "bit", "bit": bit})
        expected[f"status_bit{bit}"] = (val, None, b"\x80\x01")
    sim.set_bits(1, "coil", Addr.FREE, [True, False])
    sim.set_bits(1, "discrete", Addr.FREE + 7, [True])
    points += [
        {"name": "coil_on", "table": "coil", "address": Addr.FREE},
        {"name": "coil_off", "table": "coil", "address": Addr.FREE + 1},
        {"name": "di_on", "table": "discrete", "address": Addr.FREE + 7},
    ]
    expected |= {"coil_on": ("1", None, b"\x01"), "coil_off": ("0", None, b"\x00"), "di_on": ("1", None, b"\x01")}

    t0 = time.time_ns()
    drv = make_driver(bus, [{"unit": 1, "poll_interval": poll_interval(transport), "points": points}])
    got = wait_channels(collector, set(expected))
    drv.stop()
    for name, (want_value, want_text, want_raw) in expected.items():
        r = got[name]
        assert r.status is ReadingStatus.OK, (name, r)
        # str(): Decimal equality ignores trailing zeros and exponent spelling; the record must not
        assert (None if r.value is None else str(r.value), r.text, r.raw) == (want_value, want_text, want_raw), name
        assert r.device == "plc-1" and t0 <= r.timestamp_ns <= time.time_ns()
    # readings from one response share its arrival time
    assert got["int16_ABCD"].timestamp_ns == got["int16_CDAB"].timestamp_ns
    assert not collector.events(EventKind.BAD_FRAME)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_type_and_order_round_trips_through_writes(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    """request("write") then the next poll: the same value back, and the PLC holds the vendor's bytes."""
    bus = make_bus(transport)
    points: list[dict[str, Any]] = []
    wanted: dict[str, tuple[str, int, list[int]]] = {}  # name -> (value text, address, registers)
    address = Addr.FREE
    for (dtype, (value, text)), order in itertools.product(TYPE_VALUES.items(), ORDERS):
        data = number_bytes(dtype, value, order)
        points.append({"name": f"{dtype}_{order}", "address": address, "type": dtype, "order": order})
        wanted[f"{dtype}_{order}"] = (text, address, registers(data))
        address += len(data) // 2
    for order in ORDERS:
        points.append({"name": f"s_{order}", "address": address, "type": "string", "length": 3, "order": order})
        wanted[f"s_{order}"] = ("AB-12", address, registers(to_wire(b"AB-12\x00", order)))
        address += 3
    points.append({"name": "scaled", "address": address, "type": "int16", "scale": "0.1", "offset": "273.15"})
    wanted["scaled"] = ("149.75", address, [0xFB2E])
    drv = make_driver(bus, [{"unit": 1, "poll_interval": poll_interval(transport), "points": points}])
    collector.wait_events(EventKind.CONNECTED)
    for name, (text, _, _) in wanted.items():
        drv.request("write", point=name, value=text)
    for name, (_, addr, regs) in wanted.items():
        assert bus.sim.registers(1, "holding", addr, len(regs)) == regs, name

    def shown(c: Collector, name: str) -> str | None:
        r = latest(c, name)
        return None if r is None else r.text if r.text is not None else str(r.value)

    collector.wait_for(
        lambda c: all(shown(c, name) == text for name, (text, _, _) in wanted.items()), what="the written values"
    )


def test_non_finite_float_and_garbage_text_are_errors_not_values(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("tcp")
    bus.sim.set_registers(1, "holding", 100, registers(struct.pack(">f", float("nan"))))
    bus.sim.set_registers(1, "holding", 102, [0x4142, 0x0743])  # "AB\x07C"
    make_driver(
        bus,
        [
            {
                "unit": 1,
                "poll_interval": 0.05,
                "points": [
                    {"name": "force", "address": 100, "type": "float32", "unit": "N"},
                    {"name": "serial", "address": 102, "type": "string", "length": 2},
                ],
            }
        ],
    )
    got = wait_channels(collector, {"force", "serial"})
    for r in got.values():
        assert r.status is ReadingStatus.ERROR and r.value is None and r.text is None and r.error
    assert got["force"].raw == struct.pack(">f", float("nan")) and "finite" in (got["force"].error or "")


# -- planning -----------------------------------------------------------------------------------------------


def test_scattered_map_is_read_with_the_fewest_requests(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("tcp", units=(1, 2))
    # unit 1: 0..1, 2, 10..19, 20..25 and 30..31 -> one request with max_gap 16; 200 and 260 are
    # further than max_gap from everything -> two more; coils 0 and 1 -> one; discrete 0 -> one
    u1 = [
        {"name": "counter", "address": 0, "type": "uint32"},
        {"name": "status", "address": 2},
        {"name": "serial", "address": 10, "type": "string", "length": 10},
        {"name": "force", "address": 20, "type": "float32"},
        {"name": "torque", "address": 22, "type": "float32"},
        {"name": "length", "address": 24, "type": "float32"},
        {"name": "acked", "address": 30, "type": "uint32"},
        {"name": "far1", "address": 200},
        {"name": "far2", "address": 260, "type": "float64"},
        {"name": "andon", "table": "coil", "address": 0},
        {"name": "ack", "table": "coil", "address": 1},
        {"name": "done", "table": "discrete", "address": 0},
    ]
    # unit 2 allows only 64 registers per request: 100..299 as 100 float32 need four requests
    u2 = [{"name": f"v{i}", "address": 100 + 2 * i, "type": "float32"} for i in range(100)]
    bus.sim.set_max_registers(2, 64)
    drv = make_driver(
        bus,
        [
            {"unit": 1, "poll_interval": 0.02, "points": u1},
            {"unit": 2, "poll_interval": 0.02, "max_registers": 64, "points": u2},
        ],
    )
    assert [len(t.reads) for t in drv.tasks] == [5, 4]
    assert drv.requests_per_cycle == 9
    collector.wait_for(lambda c: drv.polls >= 20, what="20 polls")
    drv.stop()
    polls = {t.slave.unit: t.cycles for t in drv.tasks}
    # what the PLC saw: exactly the planned requests, every poll, nothing else (stop() may
    # cut the last poll short between two of its requests)
    assert 5 * polls[1] <= bus.sim.request_count(1) < 5 * (polls[1] + 1)
    assert 4 * polls[2] <= bus.sim.request_count(2) < 4 * (polls[2] + 1)
    assert max(r.count for r in bus.sim.requests if r.unit == 2) <= 64
    assert not collector.events(EventKind.BAD_FRAME)
    assert len(by_channel(collector, "v99")) == polls[2]


# -- exception responses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (1, "illegal function"),
        (2, "illegal data address"),
        (3, "illegal data value"),
        (4, "server device failure"),
        (5, "acknowledge"),
        (6, "server device busy"),
        (10, "gateway path unavailable"),
        (11, "gateway target device failed to respond"),
    ],
)
def test_exception_responses_are_events_never_values(
    code: int, meaning: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("tcp")
    bus.sim.set_exception(1, "holding", Addr.FORCE, 2, code)
    make_driver(
        bus,
        [
            {
                "unit": 1,
                "poll_interval": 0.05,
                "points": [
                    {"name": "force", "address": Addr.FORCE, "type": "float32", "unit": "N"},
                    {"name": "running", "table": "discrete", "address": Addr.RUNNING},
                ],
            }
        ],
    )
    (event, *_) = collector.wait_events(EventKind.BAD_FRAME)
    assert f"exception {code} ({meaning}" in event.detail
    assert "unit 1" in event.detail and "force" in event.detail
    assert event.raw == bytes([0x83, code])  # the exception PDU: function code | 0x80, code
    if code in (10, 11):
        # a gateway saying the slave behind it is silent: the slave is backed off, like a timeout
        (down,) = collector.wait_events(EventKind.TIMEOUT)
        assert "unit 1" in down.detail and f"exception {code}" in down.detail
    else:
        collector.wait_for(lambda c: len(by_channel(c, "running")) >= 3, what="the other table keeps coming")
    assert not by_channel(collector, "force")


# -- dead and slow slaves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_slave_does_not_stall_the_others(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport, units=(1, 2, 3, 4))
    bus.sim.set_dead(4)
    interval = poll_interval(transport)
    timeout = 0.05 if transport == "tcp" else 0.1
    slaves = [
        {"unit": u, "poll_interval": interval, "points": [{"name": f"status{u}", "address": Addr.STATUS}]}
        for u in (1, 2, 3, 4)
    ]
    drv = make_driver(bus, slaves, timeout=timeout, backoff_min=0.3, backoff_max=1.0)
    wait_channels(collector, {"status1", "status2", "status3"})
    start = time.monotonic()
    counts = {u: len(by_channel(collector, f"status{u}")) for u in (1, 2, 3)}
    window = 2.0
    collector.wait_for(lambda c: time.monotonic() - start >= window, window + 5, "the measuring window")
    elapsed = time.monotonic() - start
    drv.stop()

    nominal = elapsed / interval
    for u in (1, 2, 3):
        polled = len(by_channel(collector, f"status{u}")) - counts[u]
        # each probe of the dead slave costs the bus one timeout; the live rate must hold
        assert polled >= 0.7 * nominal, f"unit {u}: {polled} polls in {elapsed:.2f} s, nominal {nominal:.0f}"
    assert not by_channel(collector, "status4")
    (outage,) = [e for e in collector.events(EventKind.TIMEOUT) if "unit 4" in e.detail]
    assert "no response" in outage.detail
    # backed off: a handful of probes, not one per poll (2 attempts at first, then single probes)
    probes = bus.sim.request_count(4)
    assert probes <= 2 + 6, probes
    assert drv.slaves[3].health.down


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_dead_units_probes_are_charged_to_it_not_overruns_of_the_others(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport, units=(1, 2, 3))
    bus.sim.set_dead(3)
    interval = poll_interval(transport)
    slaves = [
        {"unit": u, "poll_interval": interval, "points": [{"name": f"status{u}", "address": Addr.STATUS}]}
        for u in (1, 2, 3)
    ]
    # every probe of unit 3 holds the bus for two poll intervals: the others' next slots pass meanwhile
    drv = make_driver(bus, slaves, timeout=2 * interval, backoff_min=0.2, backoff_max=0.4)
    collector.wait_for(lambda c: bus.sim.request_count(3) >= 6, 10, "a handful of probes")
    drv.stop()
    assert drv.counters()["delayed_by_other_slaves"] >= 3
    assert drv.overruns == 0 and not [e for e in collector.events(EventKind.TIMEOUT) if "overrun" in e.detail]
    assert drv.slaves[2].health.charged >= 6 * 2 * interval * 0.9  # the probes' time, charged to unit 3
    assert drv.slaves[0].health.charged == 0 and drv.slaves[1].health.charged == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slave_that_comes_back_is_polled_again(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport, units=(1, 2))
    bus.sim.set_dead(2)
    slaves = [
        {"unit": u, "poll_interval": poll_interval(transport), "points": [{"name": f"s{u}", "address": 2}]}
        for u in (1, 2)
    ]
    make_driver(bus, slaves, timeout=0.1, backoff_min=0.1, backoff_max=0.2)
    collector.wait_events(EventKind.TIMEOUT)
    bus.sim.set_dead(2, False)
    collector.wait_for(lambda c: len(by_channel(c, "s2")) >= 3, what="unit 2 polled again")
    back = [e for e in collector.events(EventKind.CONNECTED) if "unit 2" in e.detail]
    assert len(back) == 1 and "answering again" in back[0].detail
    # the polls skipped during the outage are not reported again as overruns of unit 2
    assert not [e for e in collector.events(EventKind.TIMEOUT) if e.detail.startswith("overrun: unit 2")]


def test_overrun_is_one_event_and_one_line_per_streak_and_no_poll_is_skipped_or_queued(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.modbus")
    bus = make_bus("tcp")
    bus.sim.set_delay(1, 0.05)  # each poll takes 50 ms, the configured interval is 20 ms
    interval = 0.02
    drv = make_driver(bus, [{"unit": 1, "poll_interval": interval, "points": [{"name": "status", "address": 2}]}])
    collector.wait_for(lambda c: drv.overruns >= 8, what="eight overruns")
    (event,) = collector.events(EventKind.TIMEOUT)  # one streak, one event
    assert event.detail.startswith("overrun: unit 1 main: poll took") and "interval 20.0 ms" in event.detail
    # every late poll still happened and delivered, back to back (the next starts at once)
    polls = by_channel(collector, "status")
    assert len(polls) >= drv.overruns
    gaps = [(b.timestamp_ns - a.timestamp_ns) / 1e9 for a, b in itertools.pairwise(polls[-5:])]
    assert all(g < 0.05 + 0.04 for g in gaps), gaps
    assert not [r for r in caplog.records if "overrun" in r.getMessage()]  # the line comes with the count

    bus.sim.set_delay(1, 0)
    recovered = len(by_channel(collector, "status"))

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "overrun streak" in r.getMessage()]

    collector.wait_for(lambda c: bool(lines()), 5, "the streak's line once the rate is met again")
    drv.stop()
    (line,) = lines()
    late = drv.overruns
    assert f"overrun streak over: {late} poll(s) late" in line, line
    assert len(collector.events(EventKind.TIMEOUT)) == 1 and drv.counters()["overruns"] == late
    # no burst to catch up on the slots missed while slow: the schedule restarted at the last poll.
    # A poll still in flight with the delay when it was lifted was late, so the one after it
    # starts at once: the first gap may be short, none after it
    later = by_channel(collector, "status")[recovered + 1 :]
    gaps = [(b.timestamp_ns - a.timestamp_ns) / 1e9 for a, b in itertools.pairwise(later)]
    assert len(later) > 12 and min(gaps[1:]) > interval * 0.5, gaps


@pytest.mark.parametrize(("baudrate", "delay"), [(1200, None), (19200, 0.04)])
def test_rtu_pacing_keeps_the_bus_silent_between_frames(
    baudrate: int, delay: float | None, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("rtu", units=(1, 2), baudrate=baudrate)
    settings: dict[str, Any] = {"baudrate": baudrate}
    if delay is not None:
        settings["inter_frame_delay"] = delay
    slaves = [
        {
            "unit": u,
            "poll_interval": 0.01,  # faster than the bus: requests follow each other as closely as allowed
            "points": [
                {"name": f"status{u}", "address": 2},
                {"name": f"andon{u}", "table": "coil", "address": 0},
                {"name": f"done{u}", "table": "discrete", "address": 0},
            ],
        }
        for u in (1, 2)
    ]
    drv = make_driver(bus, slaves, timeout=0.5, **settings)
    silence = delay if delay is not None else 3.5 * 10 / baudrate  # 8N1: 10 bits a character
    assert drv.silent_interval == pytest.approx(silence)
    collector.wait_for(lambda c: len(bus.sim.frame_gaps) >= 12, what="a dozen request gaps")
    drv.stop()
    gaps = list(bus.sim.frame_gaps)
    assert min(gaps) >= silence, f"{min(gaps) * 1e3:.2f} ms < {silence * 1e3:.2f} ms"
    assert bus.sim.overlaps == 0  # one request at a time
    assert bus.sim.garbage_frames == 0


# -- writes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_writes_land_in_the_plc(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport, units=(1, 2))
    sim = bus.sim
    sim.set_registers(1, "holding", 102, [0x8001])
    bus.sim.set_exception(1, "holding", 110, 1, 4)
    bus.sim.set_dead(2)
    points = [
        {"name": "andon", "table": "coil", "address": Addr.ANDON, "poll": False},
        {"name": "setpoint", "address": 100, "type": "float32", "order": "CDAB", "scale": "0.5", "unit": "N"},
        {"name": "flags3", "address": 102, "type": "bit", "bit": 3, "poll": False},
        {"name": "recipe", "address": 103, "type": "string", "length": 4, "poll": False},
        {"name": "batch", "address": 107, "type": "int32", "scale": "0.01", "order": "DCBA", "poll": False},
        {"name": "broken", "address": 110, "poll": False},
        {"name": "temp", "table": "input", "address": 0, "type": "int16", "poll": False},
    ]
    other = [{"name": "dead_andon", "table": "coil", "address": 0, "poll": False}]
    drv = make_driver(bus, [{"unit": 1, "poll_interval": 0.1, "points": points}, {"unit": 2, "points": other}])
    collector.wait_events(EventKind.CONNECTED)

    drv.request("write", point="andon", value=1)
    assert sim.bits(1, "coil", Addr.ANDON, 1) == [True]
    assert sim.registers(1, "holding", Addr.STATUS, 1)[0] & 0b1000  # the PLC saw its andon
    drv.request("write", point="andon", value=False)
    assert sim.bits(1, "coil", Addr.ANDON, 1) == [False]
    drv.request("write", point="setpoint", value=Decimal("12.5"))  # raw 25.0 as float32, words swapped
    assert sim.registers(1, "holding", 100, 2) == registers(number_bytes("float32", 25.0, "CDAB"))
    drv.request("write", point="flags3", value=1)  # FC22: only bit 3 changes
    assert sim.registers(1, "holding", 102, 1) == [0x8009]
    drv.request("write", point="recipe", value="R-17")
    assert sim.registers(1, "holding", 103, 4) == registers(b"R-17\x00\x00\x00\x00")
    drv.request("write", point="batch", value="-123.45")
    assert sim.registers(1, "holding", 107, 2) == registers(number_bytes("int32", -12345, "DCBA"))
    writes = [r.function_code for r in sim.requests if r.function_code > 4]
    assert writes == [5, 5, 16, 22, 16, 16]

    with pytest.raises(DriverError, match="no point named"):
        drv.request("write", point="nope", value=1)
    with pytest.raises(DriverError, match="read-only"):
        drv.request("write", point="temp", value=1)
    with pytest.raises(DriverError, match="whole number"):
        drv.request("write", point="batch", value="0.001")
    with pytest.raises(DriverError, match="needs point"):
        drv.request("write", value=1)
    with pytest.raises(DriverError, match="does not support"):
        drv.request("zero")
    with pytest.raises(DriverError, match=r"exception 4 \(server device failure\)"):
        drv.request("write", point="broken", value=7)
    assert any("exception 4" in e.detail for e in collector.events(EventKind.BAD_FRAME))
    with pytest.raises(DriverError, match="not answering"):
        drv.request("write", point="dead_andon", value=1)


def test_force_multiple_write(make_bus: MakeBus, make_driver: MakeDriver, collector: Collector) -> None:
    bus = make_bus("tcp")
    points = [
        {"name": "andon", "table": "coil", "address": 0, "poll": False},
        {"name": "word", "address": 100, "poll": False},
    ]
    drv = make_driver(bus, [{"unit": 1, "points": points}], force_multiple_write=True)
    collector.wait_events(EventKind.CONNECTED)
    drv.request("write", point="andon", value=1)
    drv.request("write", point="word", value=513)
    assert [r.function_code for r in bus.sim.requests if r.function_code > 4] == [15, 16]
    assert bus.sim.registers(1, "holding", 100, 1) == [513] and bus.sim.bits(1, "coil", 0, 1) == [True]


# -- trigger-based acquisition ----------------------------------------------------------------------------


STATION_POINTS: list[dict[str, Any]] = [
    {"name": "counter", "address": Addr.PART_COUNTER, "type": "uint32"},
    {"name": "status", "address": Addr.STATUS},
    {"name": "serial", "address": Addr.SERIAL, "type": "string", "length": 10, "label": "serial"},
    {"name": "force", "address": Addr.FORCE, "type": "float32", "order": "CDAB", "unit": "N"},
    {"name": "torque", "address": Addr.TORQUE, "type": "float32", "order": "CDAB", "unit": "N.m"},
    {"name": "length", "address": Addr.LENGTH, "type": "float32", "order": "CDAB", "unit": "mm"},
    {"name": "acked", "address": Addr.ACK_COUNTER, "type": "uint32"},
    {"name": "done", "table": "discrete", "address": Addr.PART_DONE},
    {"name": "ack", "table": "coil", "address": Addr.ACK},
]
ACQUIRED = ["counter", "serial", "force", "torque", "length"]


def acquisitions(sink: CycleSink) -> list[list[Reading]]:
    """The acquisitions delivered so far: one tuple of the on_trigger readings per part."""
    return [list(c) for c in list(sink.cycles) if [r.channel for r in c] == ACQUIRED]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trigger_bit_acquires_every_part_and_completes_the_handshake(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink
) -> None:
    cycle = 0.1 if transport == "tcp" else 0.3
    bus = make_bus(transport, scenario=Scenario(cycle_time=cycle, seed=4, wait_for_ack=True))
    slave = {
        "unit": 1,
        "poll_interval": 0.02 if transport == "tcp" else 0.05,
        "points": STATION_POINTS,
        "trigger": {"point": "done", "on_trigger": ACQUIRED, "acknowledge": {"point": "ack", "value": 1}},
    }
    drv = make_driver(bus, [slave])
    collector.wait_for(lambda c: len(bus.sim.acknowledged(1)) >= 5, 15, "five acknowledged parts")
    drv.stop()

    parts = {p.counter: p for p in bus.sim.parts(1)}
    acked = bus.sim.acknowledged(1)
    sets = acquisitions(sink)
    assert [int(s[0].value or 0) for s in sets] == acked  # every part once, in order, each acknowledged
    assert acked == list(range(1, len(acked) + 1))
    for s in sets:
        assert [r.channel for r in s] == ACQUIRED
        assert len({r.timestamp_ns for r in s}) == 1  # one acquisition, one timestamp
        part = parts[int(s[0].value or 0)]
        assert s[1].text == part.serial and drv.label_fields(s[1]) == {"serial": part.serial}
        assert [r.value for r in s[2:]] == [part.force, part.torque, part.length]
        assert [r.unit for r in s[2:]] == ["N", "N.m", "mm"]
    # the station never got ahead of the collector: at most the part in progress is not yet acknowledged
    assert len(parts) - len(acked) <= 1
    # four-phase handshake: every "ack = 1" was followed by "ack = 0" once the PLC dropped part-done
    ack_writes = [r for r in bus.sim.requests if r.function_code == 5 and r.address == Addr.ACK]
    assert len(acked) * 2 - 1 <= len(ack_writes) <= len(acked) * 2
    # quiet points: the trigger, the handshake and the acquired set are not polled as readings
    assert not by_channel(collector, "done") and not by_channel(collector, "ack")
    assert by_channel(collector, "status") and by_channel(collector, "acked")
    assert drv.triggers == len(sets)


def test_trigger_counter_with_write_back_and_missed_parts(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink
) -> None:
    bus = make_bus("tcp", scenario=Scenario(seed=9, wait_for_ack=False))
    points = [dict(p, poll=True) if p["name"] == "status" else p for p in STATION_POINTS]
    slave = {
        "unit": 1,
        "poll_interval": 0.02,
        "points": points,
        "trigger": {"point": "counter", "on_trigger": ACQUIRED, "acknowledge": {"point": "acked", "value": "trigger"}},
    }
    drv = make_driver(bus, [slave])
    collector.wait_for(lambda c: len(by_channel(c, "status")) >= 2, what="the baseline poll")
    assert not acquisitions(sink)  # a counter's first value is only the baseline

    bus.sim.new_part(1)
    collector.wait_for(lambda c: len(acquisitions(sink)) == 1, what="the first acquisition")
    collector.wait_for(lambda c: bus.sim.acknowledged(1) == [1], what="the counter written back")
    assert bus.sim.registers(1, "holding", Addr.ACK_COUNTER, 2) == [0, 1]

    bus.sim.new_parts(1, 3)  # three parts between two polls: two are lost, and that is said
    collector.wait_for(lambda c: len(acquisitions(sink)) == 2, what="the second acquisition")
    (missed,) = [e for e in collector.events(EventKind.TIMEOUT) if "trigger" in e.detail]
    assert missed.detail.startswith("overrun:") and "from 1 to 4" in missed.detail and "2 part(s)" in missed.detail
    assert drv.missed_triggers == 2
    last = acquisitions(sink)[-1]
    part = bus.sim.parts(1)[-1]
    assert (last[0].value, last[1].text, last[2].value) == (Decimal(4), part.serial, part.force)
    collector.wait_for(lambda c: bus.sim.acknowledged(1) == [1, 4], what="the second write-back")


def test_failed_acquisition_fires_again_on_the_next_poll(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink
) -> None:
    bus = make_bus("tcp")
    bus.sim.set_exception(1, "holding", Addr.FORCE, 2, 6)  # busy: the trigger set cannot be read
    slave = {
        "unit": 1,
        "poll_interval": 0.02,
        "points": STATION_POINTS,
        "trigger": {"point": "done", "on_trigger": ACQUIRED, "acknowledge": {"point": "ack"}},
    }
    drv = make_driver(bus, [slave])
    bus.sim.new_part(1)

    def reads_of_force() -> int:
        requests = list(bus.sim.requests)
        return sum(1 for r in requests if r.function_code == 3 and r.address <= Addr.FORCE < r.address + r.count)

    collector.wait_for(lambda c: reads_of_force() >= 3, what="repeated attempts")
    assert not acquisitions(sink) and bus.sim.acknowledged(1) == []  # no values, no acknowledge
    (refused,) = collector.events(EventKind.BAD_FRAME)  # one event for the refusal, however often
    assert "exception 6 (server device busy)" in refused.detail and refused.raw == bytes([0x83, 6])
    # the simulator logs a request before the driver has read its answer: wait for the count
    collector.wait_for(lambda c: drv.counters()["exception_responses"] >= 3, what="three refusals counted")
    bus.sim.clear_faults()
    collector.wait_for(lambda c: len(acquisitions(sink)) == 1, what="the acquisition once the PLC answers")
    collector.wait_for(lambda c: bus.sim.acknowledged(1) == [1], what="the acknowledge")


HANDSHAKE = {"point": "done", "on_trigger": ACQUIRED, "acknowledge": {"point": "ack", "value": 1}}


def every_part_once(sim: PlcSimulator, sink: CycleSink) -> list[int]:
    """Asserts each acknowledged part was acquired exactly once, in order, with its own values."""
    parts = {p.counter: p for p in sim.parts(1)}
    acked = sim.acknowledged(1)
    counters = [int(s[0].value or 0) for s in acquisitions(sink)]
    assert counters[: len(acked)] == acked, (counters, acked)
    assert len(counters) <= len(acked) + 1  # at most the part in hand, not yet acknowledged
    assert acked == list(range(1, len(acked) + 1))  # no part skipped
    for s in acquisitions(sink):
        part = parts[int(s[0].value or 0)]
        assert (s[1].text, s[2].value, s[3].value, s[4].value) == (part.serial, part.force, part.torque, part.length)
    return acked


@pytest.mark.parametrize("handshake", ["write", "four_phase"])
@pytest.mark.parametrize("cycle", [0.05, 0.02], ids=["cycle_equal_to_poll", "cycle_shorter_than_poll"])
def test_handshake_with_a_cycle_not_longer_than_the_poll_records_every_part_once(
    handshake: Literal["write", "four_phase"],
    cycle: float,
    make_bus: MakeBus,
    make_driver: MakeDriver,
    collector: Collector,
    sink: CycleSink,
) -> None:
    # "write": the PLC drops part-done on the acknowledge's write and may raise it for the next part
    # before the next poll, so the poll never sees it drop; "four_phase": it waits for the reset
    bus = make_bus("tcp", scenario=Scenario(cycle_time=cycle, seed=11, handshake=handshake))
    slave = {"unit": 1, "poll_interval": 0.05, "points": STATION_POINTS, "trigger": HANDSHAKE}
    drv = make_driver(bus, [slave])
    collector.wait_for(lambda c: len(bus.sim.acknowledged(1)) >= 12, 20, "twelve acknowledged parts")
    drv.stop()
    acked = every_part_once(bus.sim, sink)
    assert drv.triggers == len(acquisitions(sink)) >= len(acked)
    assert not collector.events(EventKind.STALLED) and not collector.events(EventKind.BAD_FRAME)
    assert bus.sim.blocked_cycles(1) > 0  # the station really was faster than the poll
    if handshake == "write":
        assert drv.counters()["lost_edges"] > 0  # and the drop between parts was missed, and handled
    else:
        assert drv.counters()["lost_edges"] == 0  # a four-phase PLC cannot get ahead of the reset


@pytest.mark.parametrize("handshake", ["write", "four_phase"])
def test_a_stuck_handshake_is_reported_after_its_timeout_and_recovers(
    handshake: Literal["write", "four_phase"],
    make_bus: MakeBus,
    make_driver: MakeDriver,
    collector: Collector,
    sink: CycleSink,
) -> None:
    bus = make_bus("tcp", scenario=Scenario(seed=12, handshake=handshake))  # parts only when the test says
    sim = bus.sim
    slave = {"unit": 1, "poll_interval": 0.02, "points": STATION_POINTS, "trigger": {**HANDSHAKE, "stall_timeout": 0.3}}
    drv = make_driver(bus, [slave])
    for n in (1, 2):
        sim.new_part(1)
        wait_for(lambda n=n: sim.acknowledged(1) == list(range(1, n + 1)), 5, f"part {n} acknowledged")  # type: ignore[misc]
    sim.set_stuck(1)  # the PLC program hangs: it takes no acknowledge
    sim.new_part(1)
    t0 = time.monotonic()
    (stalled,) = collector.wait_events(EventKind.STALLED)
    assert time.monotonic() - t0 >= 0.3 - 0.05  # not before its timeout
    assert "unit 1: handshake stalled" in stalled.detail and "still set for the same part" in stalled.detail
    assert drv.counters()["stalled_handshakes"] == 1
    # while stalled the acknowledge is repeated every stall_timeout (never the values again)
    collector.wait_for(lambda c: sim.ignored_acks(1) >= 3, 5, "the acknowledge repeated")
    assert len(acquisitions(sink)) == 3 and len(collector.events(EventKind.STALLED)) == 1

    sim.set_stuck(1, False)
    (resumed,) = collector.wait_events(EventKind.RESUMED)
    assert "handshake resumed after" in resumed.detail
    collector.wait_for(lambda c: sim.acknowledged(1) == [1, 2, 3], 5, "the stuck part acknowledged")
    sim.new_part(1)
    collector.wait_for(lambda c: sim.acknowledged(1) == [1, 2, 3, 4], 5, "the next part")
    drv.stop()
    every_part_once(sim, sink)
    assert len(acquisitions(sink)) == 4
    assert drv.counters()["handshake_stalls"] == 1 and drv.counters()["stalled_handshakes"] == 0
    kinds = [e.kind for e in collector.events() if e.kind in (EventKind.STALLED, EventKind.RESUMED)]
    assert kinds == [EventKind.STALLED, EventKind.RESUMED]


def test_part_id_tells_parts_apart(make_bus: MakeBus, make_driver: MakeDriver, sink: CycleSink) -> None:
    bus = make_bus("tcp", scenario=Scenario(cycle_time=0.02, seed=13))
    trigger = {**HANDSHAKE, "on_trigger": ["serial", "force", "torque", "length"], "part_id": "counter"}
    slave = {"unit": 1, "poll_interval": 0.05, "points": STATION_POINTS, "trigger": trigger}
    drv = make_driver(bus, [slave])
    sink.collector.wait_for(lambda c: len(bus.sim.acknowledged(1)) >= 8, 20, "eight acknowledged parts")
    drv.stop()
    serials = [s[0].text for s in list(sink.cycles) if s[0].channel == "serial"]
    acked = bus.sim.acknowledged(1)
    assert serials[: len(acked)] == [f"SN01-{n:06d}" for n in acked] and acked == list(range(1, len(acked) + 1))
    assert drv.counters()["lost_edges"] > 0


def test_a_poll_is_one_tuple(make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink) -> None:
    bus = make_bus("tcp")
    points = [
        {"name": "status", "address": Addr.STATUS},
        {"name": "temp", "table": "input", "address": Addr.TEMPERATURE, "type": "int16", "scale": "0.1"},
        {"name": "running", "table": "discrete", "address": Addr.RUNNING},
    ]
    make_driver(bus, [{"unit": 1, "poll_interval": 0.02, "points": points}])
    collector.wait_for(lambda c: len(sink.cycles) >= 3, what="three polls")
    for cycle in list(sink.cycles)[:3]:  # three requests (three tables), one item
        assert [r.channel for r in cycle] == ["status", "running", "temp"] or sorted(r.channel for r in cycle) == [
            "running",
            "status",
            "temp",
        ]
        assert isinstance(cycle, tuple) and len(cycle) == 3
    assert not [i for i in collector.snapshot() if isinstance(i, Reading) and i not in sum(sink.cycles, ())]


# -- RTU line faults --------------------------------------------------------------------------------------


def rtu_counter(bus: Bus, make_driver: MakeDriver, **settings: Any) -> ModbusDriver:
    """Unit 1 polled for its request counter (holding 100): each answer carries its own number."""
    bus.sim.count_requests(1, 100)
    slaves = [{"unit": 1, "poll_interval": 0.05, "points": [{"name": "n", "address": 100}]}]
    return make_driver(bus, slaves, **{"timeout": 0.15, **settings})


def test_rtu_crc_errors_are_counted_and_one_event_per_streak(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("rtu")
    drv = rtu_counter(bus, make_driver)
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= 2, what="polls")
    bus.sim.corrupt_crc(1, 3)
    collector.wait_for(lambda c: drv.counters()["crc_errors"] >= 3, what="three CRC errors")
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= 6, what="polls after the noise")
    (event,) = collector.events(EventKind.BAD_FRAME)
    assert "unit 1: checksum error: CRC error in an answer from unit 1" in event.detail
    assert len(event.raw) == 7 and event.raw[:3] == bytes([1, 3, 2])  # the garbled frame as evidence
    assert drv.counters()["crc_errors"] == 3
    assert not drv.slaves[0].health.down  # a garbling slave is alive: no silence reported
    values = [int(r.value or 0) for r in by_channel(collector, "n")]
    assert values == sorted(set(values))  # no value twice, none from a garbled frame


def test_rtu_foreign_answers_are_counted_and_ignored(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("rtu")
    drv = rtu_counter(bus, make_driver)
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= 2, what="polls")
    before = drv.counters()["timeouts"]
    bus.sim.answer_as(1, 7, also_answer=True)  # unit 7 answers first, then unit 1 itself
    collector.wait_for(lambda c: drv.counters()["foreign_answers"] == 1, what="the foreign answer")
    bus.sim.answer_as(1, 7)  # only unit 7 answers: no answer from unit 1 in time, then the retry
    collector.wait_for(lambda c: drv.counters()["foreign_answers"] == 2, what="the second foreign answer")
    collector.wait_for(lambda c: drv.counters()["timeouts"] == before + 1, what="the timeout it caused")
    n = len(by_channel(collector, "n"))
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= n + 2, what="polls after")
    # two streaks: unit 1's own answer right after the first foreign one ended the first
    events = collector.events(EventKind.BAD_FRAME)
    assert len(events) == 2
    assert all("foreign answer: answer to unit 1 came from unit 7" in e.detail and e.raw[0] == 7 for e in events)
    values = [int(r.value or 0) for r in by_channel(collector, "n")]
    assert values == sorted(set(values))


def test_rtu_late_reply_is_discarded_not_taken_for_the_retry(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus("rtu")
    drv = rtu_counter(bus, make_driver, timeout=0.15, retries=1)
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= 2, what="polls")
    bus.sim.reply_late(1, 0.25)  # after the 0.15 s timeout, while the master would send its retry
    collector.wait_for(lambda c: drv.counters()["late_replies"] == 1, what="the late reply counted")
    n = len(by_channel(collector, "n"))
    collector.wait_for(lambda c: len(by_channel(c, "n")) >= n + 3, what="polls after")
    (late,) = bus.sim.sent_late
    stale = int.from_bytes(late.frame[3:5], "big")  # the request number the late answer carries
    values = [int(r.value or 0) for r in by_channel(collector, "n")]
    assert stale not in values  # the stale value never became a reading
    assert values == sorted(set(values))
    (event,) = collector.events(EventKind.BAD_FRAME)
    assert "late reply: answer from unit 1 arrived after its timeout" in event.detail and event.raw == late.frame
    # the retry answered: unit 1 never went silent (its own slow poll is an overrun, and said so)
    assert [e.detail.split(":")[0] for e in collector.events(EventKind.TIMEOUT)] == ["overrun"]


# -- bit writes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bit_write_falls_back_to_read_modify_write(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport, units=(1, 2, 3))
    for unit in (1, 2, 3):
        bus.sim.set_unsupported(unit, 22)  # PLCs without mask write
        bus.sim.set_registers(unit, "holding", 102, [0x8001])

    def flags(u: int, mode: str) -> dict[str, Any]:
        return {
            "unit": u,
            "bit_write": mode,
            "points": [{"name": f"flag{u}", "address": 102, "type": "bit", "bit": 3, "poll": False}],
        }

    drv = make_driver(bus, [flags(1, "auto"), flags(2, "mask"), flags(3, "read_modify_write")])
    collector.wait_events(EventKind.CONNECTED)

    drv.request("write", point="flag1", value=1)  # 22 refused, then 3 + 6
    assert bus.sim.registers(1, "holding", 102, 1) == [0x8009]
    drv.request("write", point="flag1", value=0)  # straight to 3 + 6 now
    assert bus.sim.registers(1, "holding", 102, 1) == [0x8001]
    assert [r.function_code for r in bus.sim.requests if r.unit == 1] == [22, 3, 6, 3, 6]
    assert not collector.events(EventKind.BAD_FRAME)  # the expected refusal is no fault

    with pytest.raises(DriverError, match=r"exception 1 \(illegal function\)"):
        drv.request("write", point="flag2", value=1)  # mask only: refused, and said so
    assert bus.sim.registers(2, "holding", 102, 1) == [0x8001]

    drv.request("write", point="flag3", value=1)
    assert bus.sim.registers(3, "holding", 102, 1) == [0x8009]
    assert [r.function_code for r in bus.sim.requests if r.unit == 3] == [3, 6]
    assert drv.counters()["bit_writes_read_modify_write"] == 3


# -- link faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reconnects_after_the_plc_restarts(
    transport: str, make_bus: MakeBus, make_driver: MakeDriver, collector: Collector
) -> None:
    bus = make_bus(transport)
    make_driver(bus, [{"unit": 1, "poll_interval": poll_interval(transport), "points": [{"name": "s", "address": 2}]}])
    collector.wait_for(lambda c: len(by_channel(c, "s")) >= 2, what="polls")
    if transport == "tcp":
        bus.sim.stop_server()
    else:
        bus.sim.unplug()
    collector.wait_events(EventKind.DISCONNECTED)
    before = len(by_channel(collector, "s"))
    if transport == "tcp":
        bus.sim.start_server()  # the same port
    else:
        bus.sim.replug()
    collector.wait_events(EventKind.CONNECTED, 2)
    collector.wait_for(lambda c: len(by_channel(c, "s")) >= before + 3, what="polls after the restart")
    kinds = [e.kind for e in collector.events() if e.kind in (EventKind.CONNECTED, EventKind.DISCONNECTED)]
    assert kinds == [EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CONNECTED]  # once per outage
    assert not [e for e in collector.events(EventKind.TIMEOUT) if e.detail.startswith("overrun")]


def test_dropped_connection_is_reconnected(make_bus: MakeBus, make_driver: MakeDriver, collector: Collector) -> None:
    bus = make_bus("tcp")
    make_driver(bus, [{"unit": 1, "poll_interval": 0.02, "points": [{"name": "s", "address": 2}]}])
    collector.wait_for(lambda c: len(by_channel(c, "s")) >= 2, what="polls")
    bus.sim.disconnect_clients()
    before = len(by_channel(collector, "s"))
    collector.wait_for(lambda c: len(by_channel(c, "s")) >= before + 5, what="polls on a new connection")


# -- groups, lifecycle, sink -----------------------------------------------------------------------------------


def test_poll_groups_run_at_their_own_rate(make_bus: MakeBus, make_driver: MakeDriver, collector: Collector) -> None:
    bus = make_bus("tcp")
    slave = {
        "unit": 1,
        "poll_interval": 0.3,
        "points": [{"name": "counter", "address": 0, "type": "uint32"}, {"name": "status", "address": 2}],
        "groups": [{"name": "fast", "poll_interval": 0.02, "points": ["status"]}],
    }
    drv = make_driver(bus, [slave])
    collector.wait_for(lambda c: len(by_channel(c, "counter")) >= 2, what="two slow polls")
    drv.stop()
    assert [t.name for t in drv.tasks] == ["main", "fast"]
    assert len(by_channel(collector, "status")) >= 5 * len(by_channel(collector, "counter"))


def test_stop_is_prompt_and_joins_its_thread(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink
) -> None:
    bus = make_bus("tcp", units=(1, 2))
    bus.sim.set_dead(2)
    slaves = [{"unit": u, "poll_interval": 0.01, "points": [{"name": f"s{u}", "address": 2}]} for u in (1, 2)]
    drv = make_driver(bus, slaves, timeout=0.3)
    collector.wait_events(EventKind.TIMEOUT)
    t0 = time.monotonic()
    drv.stop()
    assert time.monotonic() - t0 < 1.0
    assert "modbus:plc-1" not in {t.name for t in threading.enumerate()}
    drv.stop()  # idempotent
    with pytest.raises(DriverError, match="not running"):
        drv.request("write", point="s1", value=1)
    drv.start(sink)  # and it starts again
    collector.wait_events(EventKind.CONNECTED, 2)
    drv.stop()


def test_a_blocking_sink_makes_polls_late_never_loses_them(
    make_bus: MakeBus, make_driver: MakeDriver, collector: Collector, sink: CycleSink
) -> None:
    """The gateway's sink blocks while its bounded queue is full: the driver polls late and says so."""
    bus = make_bus("tcp")
    points = [{"name": f"r{i}", "address": 100 + i} for i in range(10)]
    drv = make_driver(bus, [{"unit": 1, "poll_interval": 0.02, "points": points}], start=False)
    release = threading.Event()
    blocked = threading.Event()

    def full_queue(item: Item) -> None:
        if isinstance(item, tuple) and len(sink.cycles) % 3 == 2:
            blocked.set()
            release.wait(0.1)  # the gateway takes the item once its queue has room
        sink(item)

    drv.start(full_queue)
    try:
        collector.wait_for(lambda c: drv.overruns >= 3, what="overruns while the sink blocks")
        assert all(len(cycle) == 10 for cycle in list(sink.cycles))  # every poll whole
        assert len(sink.cycles) == drv.polls or len(sink.cycles) == drv.polls + 1
        (event,) = [e for e in collector.events(EventKind.TIMEOUT) if e.detail.startswith("overrun")]
        waited = re.search(r"\(([\d.]+) ms of it waiting for the gateway\)", event.detail)
        assert waited is not None and float(waited.group(1)) > 50, event.detail  # the cause is named
        # stop() while the driver is blocked in the sink returns once the gateway releases it
        blocked.clear()
        collector.wait_for(lambda c: blocked.is_set(), what="the sink blocking again")
        stopper = threading.Thread(target=drv.stop)
        stopper.start()
        release.set()
        stopper.join(2.0)
        assert not stopper.is_alive() and "modbus:plc-1" not in {t.name for t in threading.enumerate()}
    finally:
        release.set()
        drv.stop()


def test_label_fields_only_for_label_points(make_bus: MakeBus, make_driver: MakeDriver) -> None:
    bus = make_bus("tcp")
    drv = make_driver(bus, [{"unit": 1, "points": STATION_POINTS}], start=False)
    r = Reading("plc-1", "serial", None, None, b"", 0, text="SN01-000001")
    assert drv.label_fields(r) == {"serial": "SN01-000001"}
    assert drv.label_fields(Reading("plc-1", "counter", Decimal(1), None, b"", 0)) is None
    assert drv.label_fields(Reading("other", "serial", None, None, b"", 0, text="x")) is None
