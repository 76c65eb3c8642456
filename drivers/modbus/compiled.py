"""The register map compiled for the poll loop: planned requests, decoders, tasks, triggers.

Built once from the validated :class:`~drivers.modbus.config.ModbusConfig`, so that a poll
does no lookup or dispatch per point: each :class:`Read` carries its request PDU and, per
point, the byte range, the compiled decoder and the unit; a block of plain 16-bit integers
is unpacked with one ``struct`` call. :meth:`Read.decode_into` is the per-point hot path of
the driver.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from drivers.base import Reading, ReadingStatus, ok_reading
from drivers.modbus.codec import ORDER_FLAGS, CodecError, Decoder, make_decoder
from drivers.modbus.config import ModbusConfig, PointConfig, SlaveConfig, encode_point
from drivers.modbus.health import OverrunStreak, SilentSlave
from drivers.modbus.pdu import read_request
from drivers.modbus.planner import BIT_TABLES, Limits, Span, Table, plan_blocks
from drivers.modbus.triggers import Handshake

BIT_VALUE: Final = (Decimal(0), Decimal(1))
BIT_RAW: Final = (b"\x00", b"\x01")
_INT_BITS: Final = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
_TABLES: Final[tuple[Table, ...]] = ("coil", "discrete", "holding", "input")
# how a register point is decoded in the hot path: from the block's words, or by its decoder
_U16, _I16, _OTHER = 1, 2, 0


@dataclass(slots=True, eq=False)
class Point:
    cfg: PointConfig
    name: str
    table: Table
    count: int
    decode: Decoder | None  # None: a coil or discrete input
    unit: str | None
    emit: bool
    kind: int  # _U16, _I16 or _OTHER


@dataclass(slots=True, eq=False)
class Read:
    """One planned request and how its answer becomes readings."""

    table: Table
    start: int
    count: int
    request: bytes
    what: str
    #: registers: (name, first byte, end byte, word index, kind, decoder, unit) per point decoded
    plan: tuple[tuple[str, int, int, int, int, Decoder | None, str | None], ...]
    #: bits: (name, bit index, unit) per point decoded
    bit_plan: tuple[tuple[str, int, str | None], ...]
    words: struct.Struct | None  # unpacks the whole block when some point is a plain 16-bit integer
    offsets: dict[str, int]  # every point of the request -> its offset in the block

    def decode_into(self, device: str, data: bytes, ts: int, out: list[Reading]) -> None:
        """Readings of one answer's data bytes (checked against the request), appended to ``out``."""
        append = out.append
        if self.bit_plan:
            for name, index, unit in self.bit_plan:
                bit = (data[index >> 3] >> (index & 7)) & 1
                append(ok_reading(device, name, BIT_VALUE[bit], unit, BIT_RAW[bit], ts))
            return
        words = self.words.unpack(data) if self.words is not None else ()
        for name, lo, hi, index, kind, decode, unit in self.plan:
            if kind == _U16:
                append(ok_reading(device, name, Decimal(words[index]), unit, data[lo:hi], ts))
                continue
            if kind == _I16:
                word = words[index]
                append(
                    ok_reading(device, name, Decimal(word - 0x10000 if word & 0x8000 else word), unit, data[lo:hi], ts)
                )
                continue
            raw = data[lo:hi]
            assert decode is not None
            try:
                decoded = decode(raw)
            except CodecError as exc:
                append(Reading(device, name, None, unit, raw, ts, ReadingStatus.ERROR, str(exc)))
                continue
            if isinstance(decoded, str):
                append(Reading(device, name, None, None, raw, ts, text=decoded))
            else:
                append(ok_reading(device, name, decoded, unit, raw, ts))

    def value_of(self, data: bytes, point: Point) -> Decimal | None:
        """A number point's value in this answer (the trigger's); None if it does not decode."""
        off = self.offsets[point.name]
        if point.decode is None:
            return BIT_VALUE[(data[off >> 3] >> (off & 7)) & 1]
        try:
            value = point.decode(data[2 * off : 2 * (off + point.count)])
        except CodecError:
            return None
        return value if isinstance(value, Decimal) else None


@dataclass(slots=True, eq=False)
class Trigger:
    point: Point
    handshake: Handshake
    reads: list[Read]  # the on_trigger points (and part_id)
    order: list[str]  # emitted, in this order
    identity: list[str]  # whose bytes tell one part from the next
    identity_reads: list[Read] | None  # None: the acquisition's reads
    ack: Point | None
    ack_value: bytes | None  # None: write back the trigger value
    ack_reset: bytes | None


@dataclass(eq=False)
class Slave:
    cfg: SlaveConfig
    unit: int
    label: str
    points: dict[str, Point]
    health: SilentSlave
    trigger: Trigger | None = None
    mask_write_unsupported: bool = False


@dataclass(eq=False)
class Task:
    """One poll group of one slave, on its own schedule."""

    slave: Slave
    name: str
    interval: float
    reads: list[Read]
    overrun: OverrunStreak
    #: (request index, point) of the trigger point when this task reads it
    trigger_at: tuple[int, Point] | None = None
    next_slot: float = 0.0
    cycles: int = 0
    charged_mark: float = 0.0  # the bus's charged seconds at the end of the last poll
    own_mark: float = 0.0  # this slave's share of them


@dataclass
class Map:
    slaves: list[Slave] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    points: dict[str, tuple[Slave, Point]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # point -> station context key


def compile_point(p: PointConfig, emit: bool) -> Point:
    decoder: Decoder | None = None
    kind = _OTHER
    if p.table not in BIT_TABLES:
        decoder = make_decoder(
            p.type, p.resolved_order, length=p.length, bit=p.bit, scale=p.scale, offset=p.offset, encoding=p.encoding
        )
        plain = p.scale == 1 and p.offset == 0 and ORDER_FLAGS[p.resolved_order][0] == "big"
        if plain and p.type == "uint16":
            kind = _U16
        elif plain and p.type == "int16":
            kind = _I16
    return Point(p, p.name, p.table, p.count, decoder, p.unit, emit, kind)


def plan_reads(points: list[Point], decoded: set[str], limits: Limits, label: str) -> list[Read]:
    """The fewest requests for ``points``; the answers decode the points named in ``decoded``."""
    reads: list[Read] = []
    for table in _TABLES:
        members = [p for p in points if p.table == table]
        if not members:
            continue
        max_count, max_gap = limits.for_table(table)
        for b in plan_blocks([Span(p.cfg.address, p.count) for p in members], max_count, max_gap):
            items = [(members[i], members[i].cfg.address - b.start) for i in b.members]
            what = f"{label}: read {table} {b.start}..{b.end - 1} ({', '.join(p.name for p, _ in items)})"
            used = [(p, off) for p, off in items if p.name in decoded]
            plan = tuple((p.name, 2 * off, 2 * (off + p.count), off, p.kind, p.decode, p.unit) for p, off in used)
            bit_plan = tuple((p.name, off, p.unit) for p, off in used) if table in BIT_TABLES else ()
            words = struct.Struct(f">{b.count}H") if any(p.kind != _OTHER for p, _ in used) else None
            offsets = {p.name: off for p, off in items}
            request = read_request(table, b.start, b.count)
            reads.append(Read(table, b.start, b.count, request, what, plan, bit_plan, words, offsets))
    return reads


def compile_map(cfg: ModbusConfig, device: str) -> Map:
    compiled = Map()
    for sc in cfg.slaves:
        _compile_slave(compiled, cfg, sc, device)
    return compiled


def _compile_slave(compiled: Map, cfg: ModbusConfig, sc: SlaveConfig, device: str) -> None:
    trig = sc.trigger
    quiet: set[str] = set()
    if trig is not None:
        quiet.update([trig.point, *trig.on_trigger, *([trig.part_id] if trig.part_id else [])])
        if trig.acknowledge is not None:
            quiet.add(trig.acknowledge.point)
    points: dict[str, Point] = {}
    for pc in sc.points:
        points[pc.name] = compile_point(pc, pc.poll if pc.poll is not None else pc.name not in quiet)
        if pc.label is not None:
            compiled.labels[pc.name] = pc.label
    slave = Slave(sc, sc.unit, sc.label, points, SilentSlave(sc.label))
    for p in points.values():
        compiled.points[p.name] = (slave, p)
    limits = cfg.limits(sc)
    grouped = {n for g in sc.groups for n in g.points}
    emitted = {p.name for p in points.values() if p.emit}
    main = [p for p in points.values() if p.name not in grouped and p.emit]
    if trig is not None and trig.point not in grouped and points[trig.point] not in main:
        main.append(points[trig.point])  # read every poll, emitted only if poll: true
    groups = [("main", sc.poll_interval, main)] if main else []
    groups += [(g.name, g.poll_interval, [points[n] for n in g.points]) for g in sc.groups]
    for name, interval, members in groups:
        label = sc.label if name == "main" else f"{sc.label} {name}"
        reads = plan_reads(members, emitted, limits, label)
        task = Task(slave, name, interval, reads, OverrunStreak(f"{device}: {sc.label}", name, interval))
        if trig is not None:
            for i, read in enumerate(reads):
                if trig.point in read.offsets:
                    task.trigger_at = (i, points[trig.point])
        compiled.tasks.append(task)
    if trig is not None:
        slave.trigger = _compile_trigger(sc, points, limits)
    compiled.slaves.append(slave)


def _compile_trigger(sc: SlaveConfig, points: dict[str, Point], limits: Limits) -> Trigger:
    trig = sc.trigger
    assert trig is not None
    tp = points[trig.point]
    rise = (trig.mode or ("rise" if tp.cfg.type == "bit" else "change")) == "rise"
    ack = ack_value = ack_reset = None
    if trig.acknowledge is not None:
        ack = points[trig.acknowledge.point]
        if trig.acknowledge.value != "trigger":
            ack_value = encode_point(ack.cfg, trig.acknowledge.value)
        if trig.acknowledge.reset and ack.cfg.type == "bit" and rise:
            ack_reset = encode_point(ack.cfg, 0)
    identity = [trig.part_id] if trig.part_id else list(trig.on_trigger)
    members = [points[n] for n in dict.fromkeys([*trig.on_trigger, *identity])]
    decoded = {p.name for p in members}
    handshake = Handshake(
        label=sc.label,
        point=tp.name,
        rise=rise,
        acknowledge=ack is not None,
        reset=ack_reset is not None,
        stall_timeout=trig.stall_timeout,
        counter_bits=_INT_BITS.get(tp.cfg.type) if tp.cfg.scale == 1 and tp.cfg.offset == 0 else None,
    )
    identity_reads = None
    if trig.part_id:
        identity_reads = plan_reads([points[trig.part_id]], decoded, limits, f"{sc.label} part id")
    return Trigger(
        point=tp,
        handshake=handshake,
        reads=plan_reads(members, decoded, limits, f"{sc.label} trigger"),
        order=list(trig.on_trigger),
        identity=identity,
        identity_reads=identity_reads,
        ack=ack,
        ack_value=ack_value,
        ack_reset=ack_reset,
    )
