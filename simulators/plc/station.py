"""The PLC program of the simulated station: process images, parts, the handshake, churn.

No I/O here: :class:`Station` is the state every transport (TCP, RTU, ASCII) serves, guarded
by one lock. The station map and the handshake are described in the package docstring
(:mod:`simulators.plc`), which is this simulator's manual.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal, get_args

from pymodbus.constants import ExcCodes

Table = Literal["coil", "discrete", "holding", "input"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Handshake = Literal["write", "four_phase"]
TABLES: Final[tuple[str, ...]] = get_args(Table)

#: the table each function code works on
FC_TABLE: Final[dict[int, Table]] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
BIT_TABLES: Final = frozenset({"coil", "discrete"})


class Addr:
    """The station map (see the package docstring)."""

    PART_COUNTER: Final = 0
    STATUS: Final = 2
    CYCLE_TIME_MS: Final = 3
    SERIAL: Final = 10
    SERIAL_LENGTH: Final = 10  # registers
    FORCE: Final = 20
    TORQUE: Final = 22
    LENGTH: Final = 24
    ACK_COUNTER: Final = 30
    TEMPERATURE: Final = 0  # input register
    SPINDLE: Final = 1  # input register
    ANDON: Final = 0  # coil
    ACK: Final = 1  # coil
    PART_DONE: Final = 0  # discrete input
    RUNNING: Final = 1  # discrete input
    FREE: Final = 100  # first address of the general-purpose area of every table


class Status:
    RUNNING: Final = 1 << 0
    PART_DONE: Final = 1 << 1
    WAITING_FOR_ACK: Final = 1 << 2
    ANDON: Final = 1 << 3
    STUCK: Final = 1 << 4


def float32_registers(value: float, order: Order) -> list[int]:
    """Two registers of a float32 in the given order (written out here, independent of any driver)."""
    a, b, c, d = struct.pack(">f", value)
    wire = {"ABCD": (a, b, c, d), "CDAB": (c, d, a, b), "BADC": (b, a, d, c), "DCBA": (d, c, b, a)}[order]
    return [wire[0] << 8 | wire[1], wire[2] << 8 | wire[3]]


def string_registers(text: str, registers: int) -> list[int]:
    data = text.encode("ascii")[: 2 * registers].ljust(2 * registers, b"\x00")
    return list(struct.unpack(f">{registers}H", data))


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the station produces. Values are rounded to ``decimals`` like a PLC's display, so each
    fits a float32 exactly enough to read back as the same decimal (at most 7 significant digits)."""

    force: Decimal = Decimal("1250.0")  # N
    torque: Decimal = Decimal("12.50")  # N·m
    length: Decimal = Decimal("84.20")  # mm
    noise: float = 0.002  # relative standard deviation of each value
    decimals: int = 2
    seed: int | None = None
    #: seconds between finished parts; None: parts only by :meth:`PlcSimulator.new_part`
    cycle_time: float | None = None
    #: word order of the float32 values
    word_order: Order = "CDAB"
    #: block the station until the previous part is acknowledged
    wait_for_ack: bool = True
    #: how the PLC program reads the acknowledge coil (see the package docstring)
    handshake: Handshake = "write"
    serial_format: str = "SN{unit:02d}-{n:06d}"
    #: every this many seconds each register of ``churn_registers`` (holding) is incremented
    churn_every: float | None = None
    #: (first address, count) of the holding registers that churn
    churn_registers: tuple[int, int] = (Addr.FREE, 200)

    def __post_init__(self) -> None:
        if self.cycle_time is not None and self.cycle_time <= 0:
            raise ValueError("cycle_time must be positive")
        if not 0 <= self.decimals <= 4:
            raise ValueError("decimals must be 0..4")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.word_order not in get_args(Order):
            raise ValueError(f"word_order must be one of {', '.join(get_args(Order))}")
        if self.handshake not in get_args(Handshake):
            raise ValueError(f"handshake must be one of {', '.join(get_args(Handshake))}")
        if self.churn_every is not None and self.churn_every <= 0:
            raise ValueError("churn_every must be positive")
        start, count = self.churn_registers
        if start < 0 or count < 1 or start + count > 65536:
            raise ValueError("churn_registers must be (first address, count) inside the table")
        self.serial_format.format(unit=1, n=1)


@dataclass(frozen=True, slots=True)
class Part:
    unit: int
    counter: int
    serial: str
    force: Decimal
    torque: Decimal
    length: Decimal
    finished: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    unit: int
    function_code: int
    address: int
    count: int
    at: float  # time.monotonic() when the simulator saw it


@dataclass(slots=True)
class _Image:
    """One unit's process image and the state of its PLC program."""

    holding: list[int]
    input: list[int]
    coil: list[bool]
    discrete: list[bool]
    counter: int = 0
    parts: list[Part] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)  # counters of acknowledged parts
    blocked_cycles: int = 0
    stuck: bool = False
    ignored_acks: int = 0
    request_counter: int | None = None  # holding address counting the read requests served

    def regs(self, table: str) -> list[int]:
        return self.holding if table == "holding" else self.input

    def bits(self, table: str) -> list[bool]:
        return self.coil if table == "coil" else self.discrete


@dataclass(frozen=True, slots=True)
class _Fault:
    table: Table
    start: int
    count: int
    code: int


class NoAnswer(Exception):
    """The unit does not answer this request at all (unknown or dead): silence on the wire."""


class Station:
    """Every unit's process image and PLC program, and the request handling they share."""

    def __init__(self, units: Sequence[int], scenario: Scenario, table_size: int) -> None:
        self.units = tuple(units)
        self.scenario = scenario
        self.table_size = table_size
        self.lock = threading.Lock()
        self._rng = random.Random(scenario.seed)
        self._images = {u: self._blank_image(u) for u in self.units}
        self._faults: dict[int, list[_Fault]] = {}
        self._dead: set[int] = set()
        self._unsupported: dict[int, set[int]] = {}
        self.delay: dict[int, float] = {}
        self._max_registers: dict[int, int] = {}
        #: every request seen, oldest first (bounded)
        self.requests: deque[RequestRecord] = deque(maxlen=200_000)

    # -- request handling -------------------------------------------------------------------------

    def check_unit(self, unit: int, fc: int, address: int, count: int, is_write: bool) -> float:
        """Log the request; raise NoAnswer for a unit that stays silent; return its reply delay."""
        with self.lock:
            # one record per request: pymodbus reads back what a write wrote, and reads the
            # register of a mask write (22) before writing it; neither is a request of its own
            if fc <= 4 or is_write != (fc == 22):
                self.requests.append(RequestRecord(unit, fc, address, count, time.monotonic()))
            if unit not in self._images or unit in self._dead:
                raise NoAnswer(f"unit {unit} does not answer")
            return self.delay.get(unit, 0.0)

    def serve(
        self, unit: int, fc: int, address: int, count: int, values: list[int] | list[bool] | None
    ) -> list[int] | list[bool] | ExcCodes:
        """Read (``values`` None) or write one request's addresses; an exception code on refusal."""
        table = FC_TABLE.get(fc)
        with self.lock:
            if table is None or fc in self._unsupported.get(unit, ()):
                return ExcCodes.ILLEGAL_FUNCTION
            limit = self._max_registers.get(unit)
            if limit is not None and table not in BIT_TABLES and count > limit:
                return ExcCodes.ILLEGAL_VALUE
            for f in self._faults.get(unit, ()):
                if f.table == table and address < f.start + f.count and f.start < address + count:
                    return ExcCodes(f.code)
            if address + count > self.table_size:
                return ExcCodes.ILLEGAL_ADDRESS
            image = self._images[unit]
            if table in BIT_TABLES:
                bits = image.bits(table)
                if values is None:
                    return bits[address : address + count]
                bits[address : address + count] = [bool(v) for v in values]
            else:
                regs = image.regs(table)
                if values is None:
                    if fc <= 4 and image.request_counter is not None:
                        # counts the read requests as they arrive: each answer carries its own number
                        image.holding[image.request_counter] = (image.holding[image.request_counter] + 1) & 0xFFFF
                    return regs[address : address + count]
                regs[address : address + count] = [int(v) for v in values]
            self._after_write(image, table, address, count)
            return []

    def _after_write(self, image: _Image, table: str, address: int, count: int) -> None:
        """The PLC program's reaction to a write (called with the lock held)."""
        if table == "coil":
            acting = self.scenario.handshake == "four_phase" or image.coil[Addr.ACK]
            if address <= Addr.ACK < address + count and acting:
                self._acknowledge(image)
            self._update_status(image)
        elif table == "holding" and address < Addr.ACK_COUNTER + 2 and address + count > Addr.ACK_COUNTER:
            written = image.holding[Addr.ACK_COUNTER] << 16 | image.holding[Addr.ACK_COUNTER + 1]
            if written == image.counter:
                self._acknowledge(image)

    def _acknowledge(self, image: _Image) -> None:
        """The handshake: drop part-done for the part in hand (called with the lock held)."""
        if self.scenario.handshake == "four_phase" and not image.coil[Addr.ACK]:
            return  # the master dropped its acknowledge: that allows the next part, it acknowledges nothing
        if not image.discrete[Addr.PART_DONE]:
            return
        if image.stuck:
            image.ignored_acks += 1
            return
        image.discrete[Addr.PART_DONE] = False
        image.acknowledged.append(image.counter)
        self._update_status(image)

    def _update_status(self, image: _Image) -> None:
        word = Status.RUNNING if image.discrete[Addr.RUNNING] else 0
        if image.discrete[Addr.PART_DONE]:
            word |= Status.PART_DONE
            if self.scenario.wait_for_ack:
                word |= Status.WAITING_FOR_ACK
        if image.coil[Addr.ANDON]:
            word |= Status.ANDON
        if image.stuck:
            word |= Status.STUCK
        image.holding[Addr.STATUS] = word

    # -- the station ------------------------------------------------------------------------------

    def _blank_image(self, unit: int) -> _Image:
        n = self.table_size
        image = _Image(holding=[0] * n, input=[0] * n, coil=[False] * n, discrete=[False] * n)
        image.discrete[Addr.RUNNING] = True
        image.holding[Addr.CYCLE_TIME_MS] = int((self.scenario.cycle_time or 0) * 1000) & 0xFFFF
        image.input[Addr.TEMPERATURE] = 235 + unit  # 23.5 °C and a bit
        image.input[Addr.SPINDLE] = 1450
        self._update_status(image)
        return image

    def _value(self, nominal: Decimal) -> Decimal:
        sc = self.scenario
        noisy = float(nominal) * (1.0 + self._rng.gauss(0.0, sc.noise))
        return Decimal(f"{noisy:.{sc.decimals}f}")

    def finish_part(self, unit: int) -> Part:
        """Called with the lock held."""
        sc = self.scenario
        image = self._images[unit]
        image.counter = (image.counter + 1) & 0xFFFFFFFF
        part = Part(
            unit=unit,
            counter=image.counter,
            serial=sc.serial_format.format(unit=unit, n=image.counter),
            force=self._value(sc.force),
            torque=self._value(sc.torque),
            length=self._value(sc.length),
            finished=time.monotonic(),
        )
        h = image.holding
        h[Addr.PART_COUNTER : Addr.PART_COUNTER + 2] = [image.counter >> 16, image.counter & 0xFFFF]
        h[Addr.SERIAL : Addr.SERIAL + Addr.SERIAL_LENGTH] = string_registers(part.serial, Addr.SERIAL_LENGTH)
        h[Addr.FORCE : Addr.FORCE + 2] = float32_registers(float(part.force), sc.word_order)
        h[Addr.TORQUE : Addr.TORQUE + 2] = float32_registers(float(part.torque), sc.word_order)
        h[Addr.LENGTH : Addr.LENGTH + 2] = float32_registers(float(part.length), sc.word_order)
        image.discrete[Addr.PART_DONE] = True
        image.parts.append(part)
        self._update_status(image)
        return part

    def cycle(self) -> list[Part]:
        """One station cycle: every unit that may start a part finishes one."""
        finished: list[Part] = []
        four_phase = self.scenario.handshake == "four_phase"
        with self.lock:
            for unit, image in self._images.items():
                waiting = self.scenario.wait_for_ack and image.discrete[Addr.PART_DONE]
                # four-phase: the next part only once the master has dropped its acknowledge again
                if waiting or (four_phase and image.coil[Addr.ACK]) or image.stuck:
                    image.blocked_cycles += 1
                    continue
                finished.append(self.finish_part(unit))
        return finished

    def churn(self) -> None:
        """Increment every churning register of every unit (the benchmark's changing values)."""
        start, count = self.scenario.churn_registers
        end = min(start + count, self.table_size)
        with self.lock:
            for image in self._images.values():
                h = image.holding
                h[start:end] = [(v + 1) & 0xFFFF for v in h[start:end]]

    # -- process image access ----------------------------------------------------------------------

    def set_registers(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        if table in BIT_TABLES:
            raise ValueError(f"{table} holds bits: use set_bits")
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values are 0..65535")
        with self.lock:
            self._check_range(address, len(values))
            self._images[unit].regs(table)[address : address + len(values)] = list(values)

    def registers(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        with self.lock:
            self._check_range(address, count)
            return list(self._images[unit].regs(table)[address : address + count])

    def set_bits(self, unit: int, table: Table, address: int, values: Sequence[bool]) -> None:
        if table not in BIT_TABLES:
            raise ValueError(f"{table} holds registers: use set_registers")
        with self.lock:
            self._check_range(address, len(values))
            self._images[unit].bits(table)[address : address + len(values)] = [bool(v) for v in values]

    def bits(self, unit: int, table: Table, address: int, count: int) -> list[bool]:
        with self.lock:
            self._check_range(address, count)
            return list(self._images[unit].bits(table)[address : address + count])

    def parts(self, unit: int) -> list[Part]:
        with self.lock:
            return list(self._images[unit].parts)

    def acknowledged(self, unit: int) -> list[int]:
        with self.lock:
            return list(self._images[unit].acknowledged)

    def blocked_cycles(self, unit: int) -> int:
        with self.lock:
            return self._images[unit].blocked_cycles

    def ignored_acks(self, unit: int) -> int:
        with self.lock:
            return self._images[unit].ignored_acks

    def set_stuck(self, unit: int, stuck: bool) -> None:
        """A PLC program hung in a step: acknowledges are ignored and no part starts.

        On release a four-phase PLC sees the acknowledge coil's level at once; a PLC that acts
        on the write of the acknowledge needs a new write (the one it ignored is gone).
        """
        with self.lock:
            image = self._images[unit]
            image.stuck = stuck
            if not stuck and self.scenario.handshake == "four_phase" and image.coil[Addr.ACK]:
                self._acknowledge(image)
            self._update_status(image)

    def count_requests(self, unit: int, address: int | None) -> None:
        """Make holding ``address`` count the read requests the unit serves (None: stop)."""
        with self.lock:
            if address is not None:
                self._check_range(address, 1)
            self._images[unit].request_counter = address

    # -- faults ------------------------------------------------------------------------------------

    def set_exception(self, unit: int, table: Table, start: int, count: int, code: int) -> None:
        if code not in {c.value for c in ExcCodes}:
            raise ValueError(f"not a Modbus exception code: {code}")
        with self.lock:
            self._faults.setdefault(unit, []).append(_Fault(table, start, count, code))

    def set_unsupported(self, unit: int, function_code: int, unsupported: bool = True) -> None:
        with self.lock:
            codes = self._unsupported.setdefault(unit, set())
            (codes.add if unsupported else codes.discard)(function_code)

    def set_dead(self, unit: int, dead: bool = True) -> None:
        with self.lock:
            (self._dead.add if dead else self._dead.discard)(unit)

    def set_delay(self, unit: int, seconds: float) -> None:
        with self.lock:
            if seconds > 0:
                self.delay[unit] = seconds
            else:
                self.delay.pop(unit, None)

    def set_max_registers(self, unit: int, count: int | None) -> None:
        with self.lock:
            if count is None:
                self._max_registers.pop(unit, None)
            else:
                self._max_registers[unit] = count

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._dead.clear()
            self.delay.clear()
            self._max_registers.clear()
            self._unsupported.clear()

    def _check_range(self, address: int, count: int) -> None:
        if address < 0 or count < 0 or address + count > self.table_size:
            raise ValueError(f"{address}+{count} is outside the tables (size {self.table_size})")
