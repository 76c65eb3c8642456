"""Modbus TCP, RTU and ASCII masters: PLCs and controllers polled through a register map.

One driver instance owns one connection (a TCP socket to a PLC or gateway, or one serial
bus) and every slave (unit id) behind it. Configuration (validated once, by
:class:`ModbusConfig`) names each point of each slave's register map; every poll delivers
one :class:`~drivers.base.Reading` per point with ``channel`` = the point's name, the value
as an exact :class:`~decimal.Decimal` (strings in ``Reading.text``, bits as 0/1), ``raw`` =
the point's register bytes as received and ``timestamp_ns`` = when that response arrived.

How it polls
    Points are planned into the fewest read requests the protocol allows
    (:mod:`drivers.modbus.planner`): per slave, poll group and table, nearby addresses are
    merged into one request of at most ``max_registers`` / ``max_bits`` addresses bridging
    holes of at most ``max_gap`` / ``max_bit_gap``. One thread runs the bus: one request at
    a time, each slave's poll groups on their own schedule (earliest due first).

Slow or dead slaves
    A slave that does not answer (after ``retries``), or for which a TCP gateway answers
    exception 10/11, is reported once (``TIMEOUT`` event, one warning) and then skipped: it
    is probed with a single request after a backoff that doubles from ``backoff_min`` to
    ``backoff_max``. The other slaves keep their rate; a dead slave costs the bus one
    ``timeout`` per probe. Its return is a ``CONNECTED`` event ("slave N answering again").
    RTU frames carry no transaction id: set ``timeout`` above the slowest slave's turnaround,
    since a response arriving after it could be taken for the answer to the next request of
    the same slave and size (the input is flushed before each request, which catches most).

Exception responses
    Codes 1-11 become ``BAD_FRAME`` events naming the code and its meaning, the request and
    the points it carried, with the exception PDU as ``raw``; those points get no value in
    that poll. (``drivers.base.EventKind`` has no kind for "the device refused"; BAD_FRAME
    is the one that is counted and never a value.)

Overruns
    A poll that ends after its next slot is due (slot = previous slot + ``poll_interval``)
    is an overrun: a ``TIMEOUT`` event whose detail starts with ``"overrun:"``, counted in
    :attr:`ModbusDriver.overruns`, and the next poll starts at once. Polls are never queued
    up to catch up and never skipped.

RTU bus pacing
    Before each request the bus must have been silent for 3.5 character times
    (``(start + data + parity + stop bits) / baudrate``; above 19200 baud the fixed 1.75 ms
    of the Modbus serial line specification), or ``inter_frame_delay`` if configured.

Writes
    ``request("write", point=NAME, value=V)`` encodes ``V`` with the point's type, order,
    scale and offset and writes it (coil: FC5, or FC15 with ``force_multiple_write``;
    holding registers: FC6 for one register, FC16 for more; a ``bit`` of a holding register:
    FC22 mask write). It blocks until the device confirmed it and raises
    :class:`~drivers.base.DriverError` on refusal, timeout or a link that is down.

Trigger-based acquisition
    A slave's ``trigger`` names a point polled with the slave: a "part done" bit (fires on
    0 -> 1; a bit already set at start-up fires too, since the PLC is still waiting) or a
    counter (fires on any change; the first value read is the baseline; a jump by more than
    one is reported as an overrun event because parts were missed). When it fires, the
    ``on_trigger`` points are read in as few requests as possible and emitted in the
    configured order with one timestamp, then ``acknowledge`` is written: a fixed value, or
    ``"trigger"`` to write back the trigger's value (counter handshake). A bit acknowledge
    with ``reset: true`` is written back to 0 once the trigger bit has dropped (four-phase
    handshake). If the acquisition fails it fires again on the next poll; if only the
    acknowledge fails it is retried on the next poll, without emitting the values twice.

Why the synchronous pymodbus clients: the bus carries one request at a time anyway (RTU must;
pymodbus's asyncio client serialises ``execute`` with a lock as well), so an event loop
would add a second thread model, its shutdown and its exceptions, and buy nothing. The sync
client in one driver thread keeps timing (pacing, timeouts, overrun measurement) in plain
monotonic arithmetic, and :meth:`stop` joins exactly one thread. pymodbus's own retries are
disabled: the driver retries only healthy slaves, so a dead slave costs one timeout per
probe instead of ``retries + 1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from drivers import registry
from drivers.backoff import Backoff, BackoffDelays
from drivers.base import DeviceEvent, Driver, DriverConfig, DriverError, EventKind, Reading, ReadingStatus, Sink
from drivers.modbus.codec import (
    MAX_FACTOR_DIGITS,
    ORDER_FLAGS,
    CodecError,
    DataType,
    Decoder,
    Encoding,
    Endian,
    Order,
    bytes_to_registers,
    encode,
    make_decoder,
    order_of,
    register_count,
)
from drivers.modbus.planner import (
    BIT_TABLES,
    MAX_BITS,
    MAX_REGISTERS,
    READ_FUNCTION,
    Limits,
    Span,
    Table,
    plan_blocks,
)

log = logging.getLogger(__name__)

EXCEPTION_MEANINGS: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (request accepted, still processing)",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
#: a TCP gateway answering these says the slave behind it is silent: treated like a timeout
_GATEWAY_SILENT: Final = frozenset({10, 11})

#: what the station context keys a string point can set (drivers.base.Driver.label_fields)
LabelKey = Literal["serial", "lot", "part_number", "work_order", "operator"]

_BIT_VALUE: Final = (Decimal(0), Decimal(1))
_BIT_RAW: Final = (b"\x00", b"\x01")
#: above this baud rate the serial line specification fixes the frame gap at 1.75 ms
_FAST_BAUD: Final = 19200
_FAST_SILENCE: Final = 0.00175


def _check_factor(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if len(value.as_tuple().digits) > MAX_FACTOR_DIGITS:
        raise ValueError(f"at most {MAX_FACTOR_DIGITS} significant digits")
    return value


Factor = Annotated[Decimal, AfterValidator(_check_factor)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointConfig(_Model):
    """One named value in a slave's register map."""

    name: str = Field(min_length=1, max_length=120)
    table: Table = "holding"
    #: zero-based protocol (PDU) address; "40001" style references are address + 1
    address: int = Field(ge=0, le=65535)
    #: default: ``bit`` for coils and discrete inputs, ``uint16`` for registers
    type: DataType
    #: strings only: registers (two characters each)
    length: int | None = Field(default=None, ge=1, le=MAX_REGISTERS)
    #: combined byte/word order; or give byte_order and word_order. Default ABCD (big-endian).
    order: Order | None = None
    byte_order: Endian | None = None
    word_order: Endian | None = None
    #: type ``bit`` in a holding or input register: which bit (0 = least significant)
    bit: int | None = Field(default=None, ge=0, le=15)
    scale: Factor = Decimal(1)
    offset: Factor = Decimal(0)
    unit: str | None = None
    #: strings only
    encoding: Encoding = "ascii"
    #: read and emit on every poll; default: yes, unless the point is a trigger's point,
    #: one of its on_trigger points or its acknowledge point
    poll: bool | None = None
    #: strings only: the station context field this text sets (serial number read from the PLC)
    label: LabelKey | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") is None:
            data = dict(data)
            data["type"] = "bit" if data.get("table") in BIT_TABLES else "uint16"
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PointConfig:
        bits_table = self.table in BIT_TABLES
        if bits_table and self.type != "bit":
            raise ValueError(f"{self.name}: a {self.table} holds single bits; type must be 'bit'")
        if self.type == "bit" and not bits_table and self.bit is None:
            raise ValueError(f"{self.name}: a bit of a {self.table} register needs 'bit' (0..15)")
        if self.bit is not None and (bits_table or self.type != "bit"):
            raise ValueError(f"{self.name}: 'bit' is only for type bit in a holding or input register")
        if (self.type == "string") != (self.length is not None):
            raise ValueError(f"{self.name}: 'length' (registers) is required for strings and only for them")
        if self.order is not None and (self.byte_order is not None or self.word_order is not None):
            raise ValueError(f"{self.name}: give either 'order' or 'byte_order'/'word_order', not both")
        if self.type in ("string", "bit") and (self.scale != 1 or self.offset != 0):
            raise ValueError(f"{self.name}: scale and offset are for numbers")
        if self.scale == 0:
            raise ValueError(f"{self.name}: scale must not be 0")
        if self.type == "string" and self.unit is not None:
            raise ValueError(f"{self.name}: a string has no unit")
        if self.label is not None and self.type != "string":
            raise ValueError(f"{self.name}: only a string point can be a label")
        if bits_table and (self.order is not None or self.byte_order is not None or self.word_order is not None):
            raise ValueError(f"{self.name}: coils and discrete inputs have no byte order")
        if self.address + self.count > 65536:
            raise ValueError(f"{self.name}: runs past address 65535")
        return self

    @property
    def resolved_order(self) -> Order:
        if self.order is not None:
            return self.order
        return order_of(self.byte_order or "big", self.word_order or "big")

    @property
    def count(self) -> int:
        """Addresses the point occupies in its table (registers, or 1 for a coil/discrete input)."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)

    @property
    def writable(self) -> bool:
        return self.table in ("coil", "holding")


class AcknowledgeConfig(_Model):
    """The handshake written after a trigger's points were read."""

    point: str
    #: a number (1 sets a coil), or "trigger" to write back the trigger's value (a counter)
    value: Decimal | Literal["trigger"] = Decimal(1)
    #: bit acknowledge only: write 0 again once the trigger bit has dropped (four-phase handshake)
    reset: bool = True


class TriggerConfig(_Model):
    point: str
    #: rise: a bit going 0 -> 1 (default for bits); change: any new value (default otherwise)
    mode: Literal["rise", "change"] | None = None
    on_trigger: list[str] = Field(min_length=1)
    acknowledge: AcknowledgeConfig | None = None


class PollGroupConfig(_Model):
    """Points of a slave polled at their own rate (a fast status word, a slow recipe block)."""

    name: str = Field(min_length=1)
    poll_interval: float = Field(gt=0)
    points: list[str] = Field(min_length=1)


class SlaveConfig(_Model):
    unit: int = Field(ge=0, le=255)
    #: for logs and events; default "unit N"
    name: str | None = None
    #: seconds between polls of the points not in a group
    poll_interval: float = Field(default=1.0, gt=0)
    points: list[PointConfig] = Field(default_factory=list)
    groups: list[PollGroupConfig] = Field(default_factory=list)
    trigger: TriggerConfig | None = None
    #: per-slave limits (devices that allow fewer registers per request); default: the device's
    max_registers: int | None = Field(default=None, ge=1, le=MAX_REGISTERS)
    max_bits: int | None = Field(default=None, ge=1, le=MAX_BITS)
    max_gap: int | None = Field(default=None, ge=0, le=MAX_REGISTERS)
    max_bit_gap: int | None = Field(default=None, ge=0, le=MAX_BITS)

    @property
    def label(self) -> str:
        return f"unit {self.unit}" + (f" ({self.name})" if self.name else "")

    def point(self, name: str) -> PointConfig:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    @model_validator(mode="after")
    def _references(self) -> SlaveConfig:
        names = [p.name for p in self.points]
        known = set(names)
        grouped: set[str] = set()
        for g in self.groups:
            for n in g.points:
                if n not in known:
                    raise ValueError(f"{self.label}: group {g.name!r} names unknown point {n!r}")
                if n in grouped:
                    raise ValueError(f"{self.label}: point {n!r} is in more than one group")
                if self.point(n).poll is False:
                    raise ValueError(f"{self.label}: point {n!r} is in group {g.name!r} but has poll: false")
                grouped.add(n)
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError(f"{self.label}: group names must be unique")
        trig = self.trigger
        if trig is not None:
            for n in [trig.point, *trig.on_trigger]:
                if n not in known:
                    raise ValueError(f"{self.label}: trigger names unknown point {n!r}")
            tp = self.point(trig.point)
            if tp.type in ("string", "float32", "float64"):
                raise ValueError(f"{self.label}: trigger point {tp.name!r} must be a bit or an integer counter")
            if trig.mode == "rise" and tp.type != "bit":
                raise ValueError(f"{self.label}: trigger mode 'rise' needs a bit point")
            if len(set(trig.on_trigger)) != len(trig.on_trigger):
                raise ValueError(f"{self.label}: on_trigger names a point twice")
            ack = trig.acknowledge
            if ack is not None:
                if ack.point not in known:
                    raise ValueError(f"{self.label}: acknowledge names unknown point {ack.point!r}")
                ap = self.point(ack.point)
                if not ap.writable:
                    raise ValueError(f"{self.label}: acknowledge point {ap.name!r} is in a read-only table")
                if ap.type == "string":
                    raise ValueError(f"{self.label}: acknowledge point {ap.name!r} cannot be a string")
                if ack.value != "trigger":
                    try:
                        _encode_point(ap, ack.value)
                    except CodecError as exc:
                        raise ValueError(f"{self.label}: acknowledge value: {exc}") from None
        return self


class ModbusConfig(DriverConfig):
    transport: Literal["tcp", "rtu", "ascii"] = "tcp"
    #: tcp: the PLC's or gateway's address
    host: str | None = None
    port: int = Field(default=502, ge=1, le=65535)
    #: rtu / ascii: the serial device (/dev/serial/by-id/...)
    serial_port: str | None = None
    baudrate: int = Field(default=19200, gt=0)
    bytesize: Literal[7, 8] = 8
    #: the Modbus serial line specification's default is even parity
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    #: rtu: silence before each request; default 3.5 characters (1.75 ms above 19200 baud)
    inter_frame_delay: float | None = Field(default=None, ge=0, le=1)
    #: seconds to wait for a response
    timeout: float = Field(default=1.0, gt=0, le=60)
    #: extra attempts for a slave that was answering; a silent slave's probe is never repeated
    retries: int = Field(default=1, ge=0, le=10)
    max_registers: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits: int = Field(default=MAX_BITS, ge=1, le=MAX_BITS)
    #: unused registers / bits a request may read to merge two runs of points
    max_gap: int = Field(default=16, ge=0, le=MAX_REGISTERS)
    max_bit_gap: int = Field(default=256, ge=0, le=MAX_BITS)
    #: a silent slave is probed again after backoff_min, doubling up to backoff_max seconds
    backoff_min: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    #: reconnecting the TCP socket / reopening the serial port
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=10.0, gt=0)
    #: FC15/FC16 even for a single coil or register (devices without FC5/FC6)
    force_multiple_write: bool = False
    slaves: list[SlaveConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusConfig:
        if self.transport == "tcp":
            if not self.host:
                raise ValueError("transport tcp needs a host")
            if self.serial_port is not None:
                raise ValueError("serial_port is for transport rtu or ascii")
        else:
            if not self.serial_port:
                raise ValueError(f"transport {self.transport} needs a serial_port")
            if self.host is not None:
                raise ValueError("host is for transport tcp")
            for s in self.slaves:
                if not 1 <= s.unit <= 247:
                    raise ValueError(f"{s.label}: a serial slave address is 1..247")
        if self.backoff_max < self.backoff_min:
            raise ValueError("backoff_max must not be smaller than backoff_min")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be smaller than reconnect_min")
        units = [s.unit for s in self.slaves]
        if len(set(units)) != len(units):
            raise ValueError("a unit id appears twice (use poll groups for different rates)")
        seen: set[str] = set()
        for s in self.slaves:
            limits = self.limits(s)
            for p in s.points:
                if p.name in seen:
                    # the name is the reading's channel: it must say which value it is
                    raise ValueError(f"point name {p.name!r} is used twice in this device")
                seen.add(p.name)
                max_count, _ = limits.for_table(p.table)
                if p.count > max_count:
                    raise ValueError(f"{s.label}: {p.name} spans {p.count} registers, a request reads {max_count}")
        return self

    def limits(self, slave: SlaveConfig) -> Limits:
        return Limits(
            max_registers=slave.max_registers or self.max_registers,
            max_bits=slave.max_bits or self.max_bits,
            max_gap=self.max_gap if slave.max_gap is None else slave.max_gap,
            max_bit_gap=self.max_bit_gap if slave.max_bit_gap is None else slave.max_bit_gap,
        )

    @property
    def silent_interval(self) -> float:
        """Seconds of bus silence before each request (0 for TCP and ASCII framing)."""
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        if self.transport != "rtu":
            return 0.0
        if self.baudrate > _FAST_BAUD:
            return _FAST_SILENCE
        char_bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return 3.5 * char_bits / self.baudrate


def _encode_point(p: PointConfig, value: object) -> bytes:
    """Wire bytes (registers) for a register point; b"\\x00"/b"\\x01" for a coil."""
    if p.table == "coil":
        return encode(value, "bit")[1:]
    return encode(value, p.type, p.resolved_order, length=p.length, scale=p.scale, offset=p.offset, encoding=p.encoding)


# -- compiled form ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Point:
    cfg: PointConfig
    name: str
    table: Table
    address: int
    count: int
    decode: Decoder | None  # None: a coil or discrete input
    unit: str | None
    emit: bool


@dataclass(slots=True, eq=False)
class _Read:
    table: Table
    start: int
    count: int
    items: tuple[tuple[_Point, int], ...]  # each point and its offset in the block
    what: str
    #: register values -> the bytes as they were on the wire; None for coils and discrete inputs
    to_bytes: Callable[..., bytes] | None = None
    #: each point and the byte range of its registers in the block
    cuts: tuple[tuple[_Point, int, int], ...] = ()


@dataclass(slots=True, eq=False)
class _Trigger:
    point: _Point
    rise: bool
    counter_bits: int | None  # width of an unsigned/signed counter, for the missed-part check
    reads: list[_Read]
    order: list[_Point]
    ack: _Point | None
    ack_value: bytes | None  # None: write back the trigger value
    ack_reset: bytes | None


@dataclass(eq=False)
class _Slave:
    cfg: SlaveConfig
    unit: int
    label: str
    points: dict[str, _Point]
    trigger: _Trigger | None = None
    down: bool = False
    down_since: float = 0.0
    retry_at: float = 0.0
    delays: BackoffDelays | None = None
    probes: int = 0
    trigger_prev: Decimal | None = None
    ack_due: bytes | None = None
    ack_reset_pending: bool = False


@dataclass(eq=False)
class _Task:
    slave: _Slave
    name: str
    interval: float
    reads: list[_Read]
    next_slot: float = 0.0
    cycles: int = 0
    overruns: int = 0
    late_streak: int = 0


@dataclass(eq=False)
class _WriteJob:
    slave: _Slave
    point: _Point
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cancelled: bool = False


class _LinkLost(DriverError):
    pass


class _SlaveDown(DriverError):
    pass


class _Refused(DriverError):
    """An exception response or an unusable response; the event was already emitted."""


_TABLES: Final[tuple[Table, ...]] = ("coil", "discrete", "holding", "input")


def _plan(points: list[_Point], limits: Limits, label: str) -> list[_Read]:
    reads: list[_Read] = []
    for table in _TABLES:
        members = [p for p in points if p.table == table]
        if not members:
            continue
        max_count, max_gap = limits.for_table(table)
        blocks = plan_blocks([Span(p.address, p.count) for p in members], max_count, max_gap)
        for b in blocks:
            items = tuple((members[i], members[i].address - b.start) for i in b.members)
            what = f"{label}: read {table} {b.start}..{b.end - 1} ({', '.join(p.name for p, _ in items)})"
            to_bytes = None if table in BIT_TABLES else struct.Struct(f">{b.count}H").pack
            cuts = tuple((p, 2 * off, 2 * (off + p.count)) for p, off in items)
            reads.append(_Read(table, b.start, b.count, items, what, to_bytes, cuts))
    return reads


def _compile_point(p: PointConfig, emit: bool) -> _Point:
    decoder: Decoder | None = None
    if p.table not in BIT_TABLES:
        decoder = make_decoder(
            p.type,
            p.resolved_order,
            length=p.length,
            bit=p.bit,
            scale=p.scale,
            offset=p.offset,
            encoding=p.encoding,
        )
    return _Point(p, p.name, p.table, p.address, p.count, decoder, p.unit, emit)


_INT_BITS: Final = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


@registry.register
class ModbusDriver(Driver):
    name = "modbus"
    config_model = ModbusConfig

    def __init__(self, config: DriverConfig) -> None:
        if not isinstance(config, ModbusConfig):
            raise TypeError(f"{type(self).__name__} needs a ModbusConfig, got {type(config).__name__}")
        super().__init__(config)
        self.cfg = config
        self.silent_interval = config.silent_interval
        self.slaves: list[_Slave] = []
        self.tasks: list[_Task] = []
        self._points: dict[str, tuple[_Slave, _Point]] = {}
        self._labels: dict[str, str] = {}
        for sc in config.slaves:
            self._compile_slave(sc)
        #: polls that ended after their next poll was due (each also a TIMEOUT "overrun:" event)
        self.overruns = 0
        #: trigger counter jumps: parts the PLC finished that were never acquired
        self.missed_triggers = 0
        self.triggers = 0
        self.requests_sent = 0
        self.exception_responses = 0
        self.polls = 0
        #: wall-clock seconds of recent polls (bounded), for benchmarks and status pages
        self.poll_durations: deque[float] = deque(maxlen=100_000)
        self._jobs: queue.SimpleQueue[_WriteJob] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._bus_free_at = 0.0
        self._refusals: dict[str, int] = {}
        self._rng = random.Random()
        self._link_backoff = Backoff(min_delay=config.reconnect_min, max_delay=config.reconnect_max)
        self._slave_backoff = Backoff(min_delay=config.backoff_min, max_delay=config.backoff_max)

    # -- configuration -----------------------------------------------------------------------

    def _compile_slave(self, sc: SlaveConfig) -> None:
        trig = sc.trigger
        quiet: set[str] = set()
        if trig is not None:
            quiet.update([trig.point, *trig.on_trigger])
            if trig.acknowledge is not None:
                quiet.add(trig.acknowledge.point)
        points: dict[str, _Point] = {}
        for pc in sc.points:
            emit = pc.poll if pc.poll is not None else pc.name not in quiet
            points[pc.name] = _compile_point(pc, emit)
            if pc.label is not None:
                self._labels[pc.name] = pc.label
        slave = _Slave(sc, sc.unit, sc.label, points)
        for p in points.values():
            self._points[p.name] = (slave, p)
        limits = self.cfg.limits(sc)
        grouped = {n for g in sc.groups for n in g.points}
        main = [p for p in points.values() if p.name not in grouped and p.emit]
        if trig is not None and trig.point not in grouped and points[trig.point] not in main:
            main.append(points[trig.point])  # read every poll, emitted only if poll: true
        if main:
            self.tasks.append(_Task(slave, "main", sc.poll_interval, _plan(main, limits, sc.label)))
        for g in sc.groups:
            members = [points[n] for n in g.points]
            self.tasks.append(_Task(slave, g.name, g.poll_interval, _plan(members, limits, f"{sc.label} {g.name}")))
        if trig is not None:
            tp = points[trig.point]
            rise = (trig.mode or ("rise" if tp.cfg.type == "bit" else "change")) == "rise"
            order = [points[n] for n in trig.on_trigger]
            ack = ack_value = ack_reset = None
            if trig.acknowledge is not None:
                ack = points[trig.acknowledge.point]
                if trig.acknowledge.value != "trigger":
                    ack_value = _encode_point(ack.cfg, trig.acknowledge.value)
                if trig.acknowledge.reset and ack.cfg.type == "bit" and rise:
                    ack_reset = _encode_point(ack.cfg, 0)
            slave.trigger = _Trigger(
                point=tp,
                rise=rise,
                counter_bits=_INT_BITS.get(tp.cfg.type) if tp.cfg.scale == 1 and tp.cfg.offset == 0 else None,
                reads=_plan(order, limits, f"{sc.label} trigger"),
                order=order,
                ack=ack,
                ack_value=ack_value,
                ack_reset=ack_reset,
            )
        self.slaves.append(slave)

    @property
    def requests_per_cycle(self) -> int:
        """Read requests one poll of every group of every slave needs (without trigger reads)."""
        return sum(len(t.reads) for t in self.tasks)

    # -- Driver ------------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise DriverError(f"{self.device_id}: already started")
        self._sink = sink
        self._stop.clear()
        now = time.monotonic()
        for slave in self.slaves:
            slave.down = False
            slave.delays = None
            slave.retry_at = 0.0
        for task in self.tasks:
            task.next_slot = now
        self._thread = threading.Thread(target=self._run, name=f"modbus:{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # the thread may be inside one request: at most one timeout, plus the pacing gap
            thread.join(self.cfg.timeout * (self.cfg.retries + 1) + 2.0)
            if thread.is_alive():
                log.warning("%s: poll thread did not stop in time", self.device_id)
        self._fail_jobs(DriverError(f"{self.device_id}: driver stopped"))

    def request(self, command: str, **kwargs: Any) -> None:
        """``request("write", point=NAME, value=V[, timeout=S])``: write one point, wait for the device.

        Raises :class:`~drivers.base.DriverError` for an unknown or read-only point, a value
        the point cannot hold, an exception response, no response, or a link that is down.
        """
        if command != "write":
            raise DriverError(f"driver 'modbus' does not support request {command!r}")
        unknown = set(kwargs) - {"point", "value", "timeout"}
        if unknown or "point" not in kwargs or "value" not in kwargs:
            raise DriverError("write needs point= and value= (and optionally timeout=)")
        name = kwargs["point"]
        found = self._points.get(name)
        if found is None:
            raise DriverError(f"{self.device_id}: no point named {name!r}")
        slave, point = found
        if not point.cfg.writable:
            raise DriverError(f"{self.device_id}: {name} is in the read-only {point.table} table")
        try:
            payload = _encode_point(point.cfg, kwargs["value"])
        except CodecError as exc:
            raise DriverError(f"{self.device_id}: cannot write {kwargs['value']!r} to {name}: {exc}") from exc
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise DriverError(f"{self.device_id}: driver is not running")
        if self._client is None:
            raise DriverError(f"{self.device_id}: link down ({self._where()})")
        timeout = kwargs.get("timeout")
        if timeout is None:
            # the bus may be busy with one request (plus retries) before ours, then ours
            timeout = 2 * self.cfg.timeout * (self.cfg.retries + 1) + 1.0
        job = _WriteJob(slave, point, payload)
        self._jobs.put(job)
        self._wake.set()
        if not job.done.wait(float(timeout)):
            job.cancelled = True
            raise DriverError(f"{self.device_id}: write of {name} not confirmed within {timeout} s")
        if job.error is not None:
            raise job.error

    def label_fields(self, reading: Reading) -> dict[str, str] | None:
        key = self._labels.get(reading.channel)
        if key is None or reading.device != self.device_id or not reading.text:
            return None
        return {key: reading.text}

    # -- the bus thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a device fault: say so loudly, never take the gateway down
            log.exception("%s: modbus poll loop crashed", self.device_id)
        finally:
            self._close()
            self._fail_jobs(DriverError(f"{self.device_id}: driver stopped"))

    def _loop(self) -> None:
        reported_up: bool | None = None  # None: nothing reported yet
        delays: BackoffDelays | None = None
        while not self._stop.is_set():
            if self._client is None:
                error = self._open()
                if error is not None:
                    self._fail_jobs(DriverError(f"{self.device_id}: link down: {error}"))
                    if reported_up is not False:
                        reported_up = False
                        log.warning("%s: disconnected: %s", self.device_id, error)
                        self._event(EventKind.DISCONNECTED, error)
                    if delays is None:
                        delays = self._link_backoff.delays(self._rng)
                    self._stop.wait(next(delays))
                    continue
                delays = None
                self._reanchor(None)
                if reported_up is not True:
                    reported_up = True
                    log.info("%s: connected: %s", self.device_id, self._where())
                    self._event(EventKind.CONNECTED, f"connected to {self._where()}")
            try:
                self._step()
            except _LinkLost as exc:
                self._close()
                reported_up = False
                log.warning("%s: disconnected: %s", self.device_id, exc)
                self._event(EventKind.DISCONNECTED, str(exc))
                delays = self._link_backoff.delays(self._rng)
                self._stop.wait(next(delays))

    def _where(self) -> str:
        c = self.cfg
        if c.transport == "tcp":
            return f"{c.host}:{c.port}"
        return f"{c.serial_port} ({c.transport} {c.baudrate} {c.bytesize}{c.parity}{c.stopbits})"

    def _open(self) -> str | None:
        c = self.cfg
        client: ModbusTcpClient | ModbusSerialClient
        if c.transport == "tcp":
            assert c.host is not None
            client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout, retries=0, name=self.device_id)
        else:
            assert c.serial_port is not None
            client = ModbusSerialClient(
                c.serial_port,
                framer=FramerType.RTU if c.transport == "rtu" else FramerType.ASCII,
                baudrate=c.baudrate,
                bytesize=c.bytesize,
                parity=c.parity,
                stopbits=c.stopbits,
                timeout=c.timeout,
                retries=0,
                name=self.device_id,
            )
        # pymodbus would otherwise give up on the link after a few silent requests; a silent
        # slave is this driver's business (backoff), not a reason to drop the others' link
        client.set_max_no_responses(2**31)
        try:
            ok = client.connect()
        except Exception as exc:  # pyserial raises undocumented types (termios.error)
            ok = False
            log.debug("%s: connect raised %r", self.device_id, exc)
        if not ok:
            with contextlib.suppress(Exception):
                client.close()  # type: ignore[no-untyped-call]
            if c.transport == "tcp":
                return f"cannot connect to {self._where()}"
            missing = c.serial_port is not None and not os.path.exists(c.serial_port)
            return f"cannot open {self._where()}" + (": no such device" if missing else "")
        self._client = client
        self._bus_free_at = time.monotonic() + self.silent_interval
        return None

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()  # type: ignore[no-untyped-call]

    def _step(self) -> None:
        """One unit of work: pending writes, else the most overdue poll, else a wait."""
        if self._run_jobs():
            return
        now = time.monotonic()
        best: _Task | None = None
        best_due = 0.0
        for task in self.tasks:
            due = max(task.next_slot, task.slave.retry_at) if task.slave.down else task.next_slot
            if best is None or due < best_due:
                best, best_due = task, due
        if best is None or best_due > now:
            self._wake.wait(1.0 if best is None else min(best_due - now, 1.0))
            self._wake.clear()
            return
        self._poll(best, now)

    def _run_jobs(self) -> bool:
        ran = False
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return ran
            ran = True
            if job.cancelled:
                continue
            try:
                self._write(job.slave, job.point, job.payload)
            except _LinkLost as exc:
                job.error = DriverError(f"{self.device_id}: link lost during write: {exc}")
                job.done.set()
                raise
            except _SlaveDown as exc:
                job.error = DriverError(str(exc))
            except DriverError as exc:
                job.error = exc
            job.done.set()

    def _fail_jobs(self, error: DriverError) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            job.error = error
            job.done.set()

    # -- polling -------------------------------------------------------------------------------

    def _poll(self, task: _Task, now: float) -> None:
        slave = task.slave
        # a probe of a silent slave starts a fresh schedule: its skipped slots are not overruns
        slot = now if slave.down else task.next_slot
        trig = slave.trigger
        trigger_value: Decimal | None = None
        try:
            if trig is not None and slave.ack_due is not None and not slave.down:
                self._acknowledge(slave, trig, slave.ack_due)
            for read in task.reads:
                if self._stop.is_set():
                    return
                got = self._read(slave, read)
                if got is None:
                    continue
                value = self._emit_block(read, got[0], got[1], trig.point if trig is not None else None)
                if value is not None:
                    trigger_value = value
            if trig is not None and trigger_value is not None:
                self._check_trigger(slave, trig, trigger_value)
        except _SlaveDown:
            return
        end = time.monotonic()
        task.cycles += 1
        self.polls += 1
        self.poll_durations.append(end - now)
        next_slot = slot + task.interval
        if end <= next_slot:
            task.next_slot = next_slot
            task.late_streak = 0
            return
        # the configured rate cannot be met: say so, and start the next poll now (no catch-up burst)
        task.next_slot = end
        task.overruns += 1
        task.late_streak += 1
        self.overruns += 1
        detail = (
            f"overrun: {slave.label} {task.name}: poll took {(end - now) * 1e3:.1f} ms, started "
            f"{(now - slot) * 1e3:.1f} ms after its slot, interval {task.interval * 1e3:.1f} ms; "
            f"next poll starts now ({task.overruns} overruns)"
        )
        # every overrun is an event (counted); one log line per streak is enough to read
        log.log(logging.WARNING if task.late_streak == 1 else logging.DEBUG, "%s: %s", self.device_id, detail)
        self._event(EventKind.TIMEOUT, detail)

    def _read(self, slave: _Slave, read: _Read) -> tuple[list[int] | list[bool], int] | None:
        """Registers or bits of one planned request and the arrival time; None if refused."""
        unit = slave.unit
        client = self._client
        assert client is not None
        call: Callable[[], Any]
        if read.table == "holding":
            call = lambda: client.read_holding_registers(read.start, count=read.count, device_id=unit)  # noqa: E731
        elif read.table == "input":
            call = lambda: client.read_input_registers(read.start, count=read.count, device_id=unit)  # noqa: E731
        elif read.table == "coil":
            call = lambda: client.read_coils(read.start, count=read.count, device_id=unit)  # noqa: E731
        else:
            call = lambda: client.read_discrete_inputs(read.start, count=read.count, device_id=unit)  # noqa: E731
        try:
            response, ts = self._execute(slave, call, read.what, READ_FUNCTION[read.table])
        except _Refused:
            return None
        if read.table in BIT_TABLES:
            bits = getattr(response, "bits", None)
            if not isinstance(bits, list) or len(bits) < read.count:
                self._bad(f"{read.what}: expected {read.count} bits, got {bits!r}"[:300], b"")
                return None
            return bits, ts
        registers = getattr(response, "registers", None)
        if not isinstance(registers, list) or len(registers) != read.count:
            self._bad(f"{read.what}: expected {read.count} registers, got {registers!r}"[:300], b"")
            return None
        return registers, ts

    def _execute(self, slave: _Slave, call: Callable[[], Any], what: str, fc: int) -> tuple[Any, int]:
        """Run one request with pacing and retries; returns ``(response, arrival ns)``.

        Raises _Refused (event emitted), _SlaveDown (the slave just went silent) or _LinkLost.
        """
        attempts = 1 if slave.down else 1 + self.cfg.retries
        for _ in range(attempts):
            wait = self._bus_free_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.requests_sent += 1
            try:
                response = call()
            except ConnectionException as exc:
                raise _LinkLost(f"{what}: {exc}") from exc
            except ModbusIOException as exc:
                self._bus_free_at = time.monotonic() + self.silent_interval
                if "No response" in str(exc):
                    continue  # a timeout: retry a slave that was answering
                self._bad(f"{what}: {exc}", b"")
                raise _Refused(str(exc)) from exc
            except ModbusException as exc:
                self._bus_free_at = time.monotonic() + self.silent_interval
                self._bad(f"{what}: {exc}", b"")
                raise _Refused(str(exc)) from exc
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # pyserial / socket faults pymodbus does not wrap: treat the link as broken
                raise _LinkLost(f"{what}: {type(exc).__name__}: {exc}") from exc
            ts = time.time_ns()
            self._bus_free_at = time.monotonic() + self.silent_interval
            if response is None:
                continue
            if response.isError():
                code = int(getattr(response, "exception_code", 0))
                meaning = EXCEPTION_MEANINGS.get(code, "unknown exception code")
                self.exception_responses += 1
                detail = f"exception {code} ({meaning}): {what}"
                raw = bytes([(fc | 0x80) & 0xFF, code & 0xFF])
                # every refusal is an event; the log gets one line per request until it is answered again
                streak = self._refusals.get(what, 0) + 1
                self._refusals[what] = streak
                log.log(logging.WARNING if streak == 1 else logging.DEBUG, "%s: %s", self.device_id, detail)
                self._event(EventKind.BAD_FRAME, detail, raw, ts)
                if code in _GATEWAY_SILENT:
                    self._went_silent(slave, f"gateway reports exception {code} ({meaning})")
                    raise _SlaveDown(detail)
                if slave.down:
                    self._came_back(slave)
                raise _Refused(detail)
            if slave.down:
                self._came_back(slave)
            if self._refusals.pop(what, None) is not None:
                log.info("%s: %s: answered again", self.device_id, what)
            return response, ts
        self._went_silent(slave, f"no response within {self.cfg.timeout:g} s ({attempts} attempt(s)) to {what}")
        raise _SlaveDown(f"{slave.label} is not answering")

    def _went_silent(self, slave: _Slave, why: str) -> None:
        now = time.monotonic()
        if not slave.down:
            slave.down = True
            slave.down_since = now
            slave.probes = 0
            slave.delays = self._slave_backoff.delays(self._rng)
            delay = next(slave.delays)
            detail = (
                f"{slave.label}: {why}; polled again in {delay:.2f} s, then backing off up to "
                f"{self.cfg.backoff_max:g} s while it stays silent"
            )
            log.warning("%s: %s", self.device_id, detail)
            self._event(EventKind.TIMEOUT, detail)
        else:
            assert slave.delays is not None
            delay = next(slave.delays)
            slave.probes += 1
            log.debug("%s: %s still silent (%d probes)", self.device_id, slave.label, slave.probes)
        slave.retry_at = now + delay
        if self.cfg.transport == "tcp" and all(s.down for s in self.slaves):
            # Nobody answers on this socket: maybe the peer vanished without a reset. The next
            # probe reconnects; only a failing reconnect is reported (as DISCONNECTED).
            self._close()

    def _reanchor(self, slave: _Slave | None) -> None:
        """Polls missed during an outage (reported as such) are not overruns: restart their schedule."""
        now = time.monotonic()
        for task in self.tasks:
            if (slave is None or task.slave is slave) and task.next_slot < now:
                task.next_slot = now

    def _came_back(self, slave: _Slave) -> None:
        silent_for = time.monotonic() - slave.down_since
        self._reanchor(slave)
        slave.down = False
        slave.delays = None
        slave.retry_at = 0.0
        detail = f"{slave.label}: answering again after {silent_for:.1f} s ({slave.probes + 1} probe(s))"
        log.info("%s: %s", self.device_id, detail)
        self._event(EventKind.CONNECTED, detail)

    def _emit_block(self, read: _Read, data: list[int] | list[bool], ts: int, trigger: _Point | None) -> Decimal | None:
        """Emit the readings of one response; returns the trigger point's value if it was in it.

        The per-reading hot path of the driver: kept free of helper calls on purpose.
        """
        device = self.device_id
        sink = self._sink
        trigger_value: Decimal | None = None
        if read.to_bytes is None:  # bits
            for point, off in read.items:
                bit = 1 if data[off] else 0
                if point is trigger:
                    trigger_value = _BIT_VALUE[bit]
                if point.emit and sink is not None:
                    try:
                        sink(Reading(device, point.name, _BIT_VALUE[bit], point.unit, _BIT_RAW[bit], ts))
                    except Exception:
                        log.exception("%s: sink failed", device)
            return trigger_value
        block = read.to_bytes(*data)
        for point, lo, hi in read.cuts:
            raw = block[lo:hi]
            if point is trigger:
                try:
                    value = point.decode(raw)  # type: ignore[misc]
                    trigger_value = value if isinstance(value, Decimal) else None
                except CodecError:
                    trigger_value = None
            if not point.emit or sink is None:
                continue
            reading = self._reading(point, raw, ts)
            try:
                sink(reading)
            except Exception:
                log.exception("%s: sink failed on %r", device, reading)
        return trigger_value

    def _reading(self, point: _Point, raw: bytes, ts: int) -> Reading:
        decode = point.decode
        assert decode is not None
        try:
            value = decode(raw)
        except CodecError as exc:
            return Reading(
                self.config.id, point.name, None, point.unit, raw, ts, status=ReadingStatus.ERROR, error=str(exc)
            )
        if isinstance(value, str):
            return Reading(self.config.id, point.name, None, None, raw, ts, text=value)
        return Reading(self.config.id, point.name, value, point.unit, raw, ts)

    # -- trigger-based acquisition ---------------------------------------------------------------

    def _check_trigger(self, slave: _Slave, trig: _Trigger, value: Decimal) -> None:
        prev = slave.trigger_prev
        if trig.rise:
            if value == 0:
                slave.trigger_prev = value
                if (
                    slave.ack_reset_pending
                    and trig.ack is not None
                    and trig.ack_reset is not None
                    and self._try_write(slave, trig.ack, trig.ack_reset, "acknowledge reset")
                ):
                    slave.ack_reset_pending = False
                return
            if prev == 1:
                return
        else:
            if prev is None:
                slave.trigger_prev = value  # a baseline: what happened before start-up is unknown
                return
            if value == prev:
                return
            if trig.counter_bits is not None:
                step = (int(value) - int(prev)) % (1 << trig.counter_bits)
                if step > 1 and step < (1 << (trig.counter_bits - 1)):
                    missed = step - 1
                    self.missed_triggers += missed
                    detail = (
                        f"overrun: {slave.label}: trigger {trig.point.name} went from {prev} to {value}; "
                        f"{missed} part(s) finished between two polls were not acquired"
                    )
                    log.warning("%s: %s", self.device_id, detail)
                    self._event(EventKind.TIMEOUT, detail)
        if self._acquire(slave, trig, value):
            slave.trigger_prev = value

    def _acquire(self, slave: _Slave, trig: _Trigger, value: Decimal) -> bool:
        got: dict[int, tuple[_Read, list[int] | list[bool]]] = {}
        ts = 0
        for read in trig.reads:
            result = self._read(slave, read)
            if result is None:
                return False  # refused: the event says why; the next poll fires again
            got[id(read)] = (read, result[0])
            ts = max(ts, result[1])
        where: dict[str, tuple[_Read, list[int] | list[bool], int]] = {}
        for read, data in got.values():
            for point, off in read.items:
                where[point.name] = (read, data, off)
        readings: list[Reading] = []
        for point in trig.order:
            read, data, off = where[point.name]
            if read.to_bytes is None:
                bit = 1 if data[off] else 0
                readings.append(Reading(self.device_id, point.name, _BIT_VALUE[bit], point.unit, _BIT_RAW[bit], ts))
            else:
                block = read.to_bytes(*data)
                readings.append(self._reading(point, block[2 * off : 2 * (off + point.count)], ts))
        self.triggers += 1
        for reading in readings:
            self._deliver(reading)
        if trig.ack is not None:
            payload = trig.ack_value
            if payload is None:
                try:
                    payload = _encode_point(trig.ack.cfg, value)
                except CodecError as exc:
                    self._bad(f"{slave.label}: cannot acknowledge {value} in {trig.ack.name}: {exc}", b"")
                    return True
            self._acknowledge(slave, trig, payload)
        return True

    def _acknowledge(self, slave: _Slave, trig: _Trigger, payload: bytes) -> None:
        assert trig.ack is not None
        if self._try_write(slave, trig.ack, payload, "acknowledge"):
            slave.ack_due = None
            slave.ack_reset_pending = trig.ack_reset is not None
        else:
            slave.ack_due = payload  # retried before the next poll; the values are not emitted twice

    def _try_write(self, slave: _Slave, point: _Point, payload: bytes, purpose: str) -> bool:
        try:
            self._write(slave, point, payload)
        except _Refused:
            return False  # the exception response is already an event
        except (_SlaveDown, _LinkLost):
            raise
        except DriverError as exc:
            self._bad(f"{slave.label}: {purpose} {point.name}: {exc}", b"")
            return False
        return True

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, slave: _Slave, point: _Point, payload: bytes) -> None:
        client = self._client
        if client is None:
            raise DriverError(f"{self.device_id}: link down")
        unit = slave.unit
        cfg = point.cfg
        what = f"{slave.label}: write {point.name} ({cfg.table} {cfg.address})"
        call: Callable[[], Any]
        if point.table == "coil":
            on = payload != b"\x00"
            if self.cfg.force_multiple_write:
                call, fc = (lambda: client.write_coils(cfg.address, [on], device_id=unit)), 15
            else:
                call, fc = (lambda: client.write_coil(cfg.address, on, device_id=unit)), 5
        elif cfg.type == "bit":
            assert cfg.bit is not None
            # the mask travels as a register value on the wire: a byte-swapped device's bit n is wire bit n ^ 8
            wire_bit = cfg.bit ^ 8 if ORDER_FLAGS[cfg.resolved_order][0] == "little" else cfg.bit
            set_bit = any(payload)
            and_mask = 0xFFFF & ~(1 << wire_bit)
            or_mask = (1 << wire_bit) if set_bit else 0
            call = lambda: client.mask_write_register(  # noqa: E731
                address=cfg.address, and_mask=and_mask, or_mask=or_mask, device_id=unit
            )
            fc = 22
        else:
            registers = bytes_to_registers(payload)
            if len(registers) == 1 and not self.cfg.force_multiple_write:
                call, fc = (lambda: client.write_register(cfg.address, registers[0], device_id=unit)), 6
            else:
                call, fc = (lambda: client.write_registers(cfg.address, registers, device_id=unit)), 16
        self._execute(slave, call, what, fc)

    # -- sink ------------------------------------------------------------------------------------

    def _deliver(self, item: Reading | DeviceEvent) -> None:
        try:
            self.emit(item)
        except Exception:  # a failing sink must not stop the bus
            log.exception("%s: sink failed on %r", self.device_id, item)

    def _event(self, kind: EventKind, detail: str, raw: bytes = b"", ts: int | None = None) -> None:
        self._deliver(DeviceEvent(self.device_id, kind, detail, raw, time.time_ns() if ts is None else ts))

    def _bad(self, detail: str, raw: bytes) -> None:
        log.warning("%s: %s", self.device_id, detail)
        self._event(EventKind.BAD_FRAME, detail, raw)
