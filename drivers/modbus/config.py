"""The Modbus device configuration: connection, slaves, register maps, groups, triggers.

Validated once, when the configuration is loaded (pydantic, ``extra="forbid"``): a typo or
an inconsistent map is an error naming the field, never a silently ignored setting. The
sample configuration beside this module (``sample.yaml``) shows and explains every key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from drivers.base import DriverConfig
from drivers.modbus.codec import (
    MAX_FACTOR_DIGITS,
    CodecError,
    DataType,
    Encoding,
    Endian,
    Order,
    encode,
    order_of,
    register_count,
)
from drivers.modbus.planner import BIT_TABLES, MAX_BITS, MAX_REGISTERS, Limits, Table

#: what the station context keys a string point can set (drivers.base.Driver.label_fields)
LabelKey = Literal["serial", "lot", "part_number", "work_order", "operator"]

#: above this baud rate the serial line specification (V1.02 §2.5.1.1) fixes the frame gap at 1.75 ms
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
    #: one of its on_trigger points, its part_id or its acknowledge point
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
    #: a point that differs for every part (a part counter, a serial number): while the PLC still
    #: shows "part done" after the acknowledge, a new value here means a new part whose 0 the poll
    #: never saw. Default: the bytes of all on_trigger points together.
    part_id: str | None = None
    #: seconds an acknowledge may stay unanswered before the handshake is reported stalled
    stall_timeout: float = Field(default=5.0, gt=0, le=3600)


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
    #: writing one bit of a holding register: mask write (function 22), read-modify-write
    #: (function 3 then 6/16; not atomic: the PLC may change another bit in between), or
    #: auto: function 22, and read-modify-write from the first "illegal function" answer on
    bit_write: Literal["auto", "mask", "read_modify_write"] = "auto"

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
        if self.trigger is not None:
            self._check_trigger(self.trigger, known)
        return self

    def _check_trigger(self, trig: TriggerConfig, known: set[str]) -> None:
        for n in [trig.point, *trig.on_trigger, *([trig.part_id] if trig.part_id else [])]:
            if n not in known:
                raise ValueError(f"{self.label}: trigger names unknown point {n!r}")
        tp = self.point(trig.point)
        if tp.type in ("string", "float32", "float64"):
            raise ValueError(f"{self.label}: trigger point {tp.name!r} must be a bit or an integer counter")
        if trig.mode == "rise" and tp.type != "bit":
            raise ValueError(f"{self.label}: trigger mode 'rise' needs a bit point")
        if len(set(trig.on_trigger)) != len(trig.on_trigger):
            raise ValueError(f"{self.label}: on_trigger names a point twice")
        rise = (trig.mode or ("rise" if tp.type == "bit" else "change")) == "rise"
        ack = trig.acknowledge
        if trig.part_id is not None and (ack is None or not rise):
            raise ValueError(f"{self.label}: part_id is for a part-done bit with an acknowledge")
        if ack is None:
            return
        if ack.point not in known:
            raise ValueError(f"{self.label}: acknowledge names unknown point {ack.point!r}")
        ap = self.point(ack.point)
        if not ap.writable:
            raise ValueError(f"{self.label}: acknowledge point {ap.name!r} is in a read-only table")
        if ap.type == "string":
            raise ValueError(f"{self.label}: acknowledge point {ap.name!r} cannot be a string")
        if ack.value != "trigger":
            try:
                encode_point(ap, ack.value)
            except CodecError as exc:
                raise ValueError(f"{self.label}: acknowledge value: {exc}") from None


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
    #: rtu / ascii: after a timeout, how long an answer still counts as a late reply (discarded);
    #: no request goes to that slave before it has passed. Default: ``timeout``.
    late_reply_window: float | None = Field(default=None, ge=0, le=60)
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
            if self.late_reply_window is not None:
                raise ValueError("late_reply_window is for rtu and ascii (TCP matches answers by transaction id)")
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
    def char_time(self) -> float:
        """Seconds one character takes on the serial line (start, data, parity and stop bits)."""
        char_bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return char_bits / self.baudrate

    @property
    def silent_interval(self) -> float:
        """Seconds of bus silence before each request (0 for TCP and ASCII framing)."""
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        if self.transport != "rtu":
            return 0.0
        if self.baudrate > _FAST_BAUD:
            return _FAST_SILENCE
        return 3.5 * self.char_time

    @property
    def late_window(self) -> float:
        return self.timeout if self.late_reply_window is None else self.late_reply_window


def encode_point(p: PointConfig, value: object) -> bytes:
    """Wire bytes (registers) for a register point; b"\\x00"/b"\\x01" for a coil."""
    if p.table == "coil":
        return encode(value, "bit")[1:]
    return encode(value, p.type, p.resolved_order, length=p.length, scale=p.scale, offset=p.offset, encoding=p.encoding)
