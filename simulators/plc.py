"""A PLC of an in-line assembly station, as a Modbus TCP server and an RTU/ASCII slave on a pty.

The TCP side is pymodbus's own ``ModbusTcpServer``. pymodbus's serial server wants to open a
device path itself, while :class:`~simulators.pty.PtyPort` hands the simulator the *master*
side of a pty, so the serial side is a small loop over the pty that frames with pymodbus's
``FramerRTU`` / ``FramerAscii`` (a frame ends at 3.5 characters of silence, as on a real
bus) and answers through the very same request handling as the TCP server. Both serve
every configured unit id (slave) from one process image per unit.

Station map (every unit; zero-based protocol addresses, "4xxxx" = address + 40001)
==========  ========  =========  ===========================================================
table       address   type       meaning
==========  ========  =========  ===========================================================
holding     0-1       uint32     part counter (ABCD), +1 per finished part
holding     2         uint16     status word: bit 0 running, bit 1 part done, bit 2 waiting
                                 for acknowledge (station blocked), bit 3 andon on
holding     3         uint16     cycle time in ms
holding     10-19     string     serial number of the last part, 20 ASCII chars, NUL padded
holding     20-21     float32    press-in force, N          (word order: ``Scenario.word_order``)
holding     22-23     float32    tightening torque, N·m     (same word order)
holding     24-25     float32    measured length, mm        (same word order)
holding     30-31     uint32     acknowledged counter: the gateway writes back the part
                                 counter it collected; equal to the counter = acknowledged
input       0         int16      cabinet temperature, 0.1 °C
input       1         uint16     spindle speed, rpm
coil        0         bit        andon light (written by the gateway)
coil        1         bit        part acknowledge: writing 1 acknowledges the part
discrete    0         bit        part done: set with each new part, cleared by its acknowledge
discrete    1         bit        running
any         100-      (free)     general-purpose area for tests and benchmarks
==========  ========  =========  ===========================================================

Every ``Scenario.cycle_time`` seconds each unit finishes a part: counter + 1, a new serial
number, new force / torque / length (nominal + Gaussian noise, rounded to
``Scenario.decimals`` like a display), part-done set. With ``wait_for_ack`` the station
blocks while the previous part is not acknowledged (as a real line waits for the quality
gate); without it parts keep coming and a slow collector misses some.

Fault injection: an exception code for a unit / table / address range, a dead unit (no reply
at all), slow replies, a per-unit request size limit (devices that allow only 64 registers
answer larger requests with exception 3), dropping every TCP connection, and stopping and
restarting the listener on the same port. Every request is logged with its arrival time
(``requests``); on the serial side the silence before each request is recorded too
(``frame_gaps``), so tests can check a master's bus pacing.

Linux ptys refuse parity settings (EINVAL): a master on the pty must use parity N (8N1),
whatever the real bus would use.

Command line (wired in by ``simulators.cli`` as ``simulators plc``; also ``python -m
simulators.plc``)::

    simulators plc --port 5020 --units 1,2 --cycle-time 2 [--rtu-link /tmp/bench/plc-rtu]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import random
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, get_args

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ModbusIOException, NoSuchIdException
from pymodbus.framer import FramerAscii, FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer

from simulators.base import run_until_signalled
from simulators.pty import PortUnplugged, PtyPort

log = logging.getLogger(__name__)

Table = Literal["coil", "discrete", "holding", "input"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
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
_BIT_TABLES: Final = frozenset({"coil", "discrete"})


class Addr:
    """The station map (see the module docstring)."""

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


def _float32_registers(value: float, order: Order) -> list[int]:
    """Two registers of a float32 in the given order (written out here, independent of any driver)."""
    a, b, c, d = struct.pack(">f", value)
    wire = {"ABCD": (a, b, c, d), "CDAB": (c, d, a, b), "BADC": (b, a, d, c), "DCBA": (d, c, b, a)}[order]
    return [wire[0] << 8 | wire[1], wire[2] << 8 | wire[3]]


def _string_registers(text: str, registers: int) -> list[int]:
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
    serial_format: str = "SN{unit:02d}-{n:06d}"

    def __post_init__(self) -> None:
        if self.cycle_time is not None and self.cycle_time <= 0:
            raise ValueError("cycle_time must be positive")
        if not 0 <= self.decimals <= 4:
            raise ValueError("decimals must be 0..4")
        if self.noise < 0:
            raise ValueError("noise must not be negative")
        if self.word_order not in get_args(Order):
            raise ValueError(f"word_order must be one of {', '.join(get_args(Order))}")
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
    """One unit's process image."""

    holding: list[int]
    input: list[int]
    coil: list[bool]
    discrete: list[bool]
    counter: int = 0
    parts: list[Part] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)  # counters of acknowledged parts
    blocked_cycles: int = 0

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


class _Context(ModbusServerContext):
    """Routes pymodbus's datastore calls to the simulator.

    The base initialiser is deliberately not called: it would build pymodbus's deprecated
    datastore and log warnings; only the attributes ModbusBaseServer inspects are set.
    """

    def __init__(self, sim: PlcSimulator) -> None:
        self.old_simulator = True  # "use this context as it is" to ModbusBaseServer
        self.simdevices = []
        self._sim = sim

    def device_ids(self) -> list[int]:
        return list(self._sim.units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        return await self._sim._serve(device_id, func_code, address, count, None)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        result = await self._sim._serve(device_id, func_code, address, len(values), list(values))
        return result if isinstance(result, ExcCodes) else None


class PlcSimulator:
    """The station PLC: TCP on ``host:port`` (port 0 picks a free one) and, optionally, a pty."""

    def __init__(
        self,
        units: Iterable[int] = (1,),
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = 0,
        rtu_link: str | os.PathLike[str] | None = None,
        serial_framer: Literal["rtu", "ascii"] = "rtu",
        baudrate: int = 19200,
        table_size: int = 2000,
    ) -> None:
        self.units = tuple(sorted(set(units)))
        if not self.units or not all(0 < u < 248 for u in self.units):
            raise ValueError("units must be slave addresses 1..247")
        if not 128 <= table_size <= 65536:
            raise ValueError("table_size must be 128..65536")
        if port is None and rtu_link is None:
            raise ValueError("nothing to serve: give a TCP port, an RTU link, or both")
        self.scenario = scenario or Scenario()
        self.host = host
        self._port_wanted = port
        self.port = 0
        self.rtu_link = Path(rtu_link) if rtu_link is not None else None
        self.serial_framer = serial_framer
        self.baudrate = baudrate
        self.table_size = table_size
        self._rng = random.Random(self.scenario.seed)
        self._lock = threading.Lock()
        self._images = {u: self._blank_image(u) for u in self.units}
        self._faults: dict[int, list[_Fault]] = {}
        self._dead: set[int] = set()
        self._delay: dict[int, float] = {}
        self._max_registers: dict[int, int] = {}
        #: every request seen, oldest first (bounded)
        self.requests: deque[RequestRecord] = deque(maxlen=200_000)
        #: serial side: seconds of silence between the end of a response and the next request
        self.frame_gaps: deque[float] = deque(maxlen=100_000)
        #: serial side: requests that arrived while the previous one was still being answered
        self.overlaps = 0
        self.garbage_frames = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None
        self._context = _Context(self)
        self._cycle_handle: asyncio.TimerHandle | None = None
        self._pty: PtyPort | None = None
        self._serial_thread: threading.Thread | None = None
        self._serial_stop = threading.Event()
        #: called with every part as it is finished (the CLI prints them)
        self.on_part: Callable[[Part], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PlcSimulator:
        if self._loop is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(target=loop.run_forever, name="plc-sim-loop", daemon=True)
        self._loop_thread.start()
        try:
            if self._port_wanted is not None:
                self.start_server()
            if self.scenario.cycle_time is not None:
                loop.call_soon_threadsafe(self._schedule_cycle)
            if self.rtu_link is not None:
                self._pty = PtyPort(self.rtu_link)
                self._serial_stop.clear()
                self._serial_thread = threading.Thread(target=self._serial_loop, name="plc-sim-serial", daemon=True)
                self._serial_thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop serving (both sides) and join every thread. Idempotent."""
        self._serial_stop.set()
        if self._pty is not None:
            self._pty.unplug()  # wakes the serial loop out of its select()
        thread, self._serial_thread = self._serial_thread, None
        if thread is not None:
            thread.join(5)
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown_all(), timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        loop.close()
        self._loop = None
        self._loop_thread = None

    close = stop

    def __enter__(self) -> PlcSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_server(self) -> None:
        """Start listening (again) on the same port: clients see the PLC come back."""
        if self._server is not None:
            return
        port = self.port or (self._port_wanted or 0)
        self._call(self._listen(port), timeout=5)

    def stop_server(self) -> None:
        """Stop listening and drop every TCP connection: the PLC is switched off."""
        self._call(self._unlisten(), timeout=5)

    def disconnect_clients(self) -> None:
        """Drop every TCP connection but keep listening (a switch port flapping)."""

        async def drop() -> None:
            if self._server is not None:
                for conn in list(self._server.active_connections.values()):
                    conn.close()

        self._call(drop(), timeout=5)

    @property
    def serving(self) -> bool:
        return self._server is not None

    # -- process image ----------------------------------------------------------------------------

    def set_registers(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        if table in _BIT_TABLES:
            raise ValueError(f"{table} holds bits: use set_bits")
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values are 0..65535")
        with self._lock:
            image = self._images[unit].regs(table)
            self._check_range(address, len(values))
            image[address : address + len(values)] = list(values)

    def registers(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        with self._lock:
            self._check_range(address, count)
            return list(self._images[unit].regs(table)[address : address + count])

    def set_bits(self, unit: int, table: Table, address: int, values: Sequence[bool]) -> None:
        if table not in _BIT_TABLES:
            raise ValueError(f"{table} holds registers: use set_registers")
        with self._lock:
            self._check_range(address, len(values))
            self._images[unit].bits(table)[address : address + len(values)] = [bool(v) for v in values]

    def bits(self, unit: int, table: Table, address: int, count: int) -> list[bool]:
        with self._lock:
            self._check_range(address, count)
            return list(self._images[unit].bits(table)[address : address + count])

    def parts(self, unit: int) -> list[Part]:
        with self._lock:
            return list(self._images[unit].parts)

    def acknowledged(self, unit: int) -> list[int]:
        """Counters of the parts that were acknowledged, in order."""
        with self._lock:
            return list(self._images[unit].acknowledged)

    def blocked_cycles(self, unit: int) -> int:
        """Cycles in which the station could not start a part because the last one was not acknowledged."""
        with self._lock:
            return self._images[unit].blocked_cycles

    def new_part(self, unit: int) -> Part:
        """Finish a part now (whether or not the last one was acknowledged)."""
        return self.new_parts(unit, 1)[0]

    def new_parts(self, unit: int, n: int) -> list[Part]:
        """Finish ``n`` parts at once: no master can poll in between (a collector that was too slow)."""
        with self._lock:
            parts = [self._finish_part(unit) for _ in range(n)]
        if self.on_part is not None:
            for part in parts:
                self.on_part(part)
        return parts

    def request_count(self, unit: int | None = None, since: float = 0.0, reads_only: bool = True) -> int:
        return sum(
            1
            for r in list(self.requests)
            if (unit is None or r.unit == unit) and r.at >= since and (not reads_only or r.function_code <= 4)
        )

    # -- faults -----------------------------------------------------------------------------------

    def set_exception(self, unit: int, table: Table, start: int, count: int, code: int) -> None:
        """Answer every request touching ``table[start:start+count]`` of ``unit`` with exception ``code``."""
        if code not in {c.value for c in ExcCodes}:
            raise ValueError(f"not a Modbus exception code: {code}")
        with self._lock:
            self._faults.setdefault(unit, []).append(_Fault(table, start, count, code))

    def set_dead(self, unit: int, dead: bool = True) -> None:
        """A dead unit never answers (no exception either: silence, as a broken slave on a bus)."""
        with self._lock:
            (self._dead.add if dead else self._dead.discard)(unit)

    def set_delay(self, unit: int, seconds: float) -> None:
        """Answer ``unit``'s requests only after ``seconds`` (a busy or slow device)."""
        with self._lock:
            if seconds > 0:
                self._delay[unit] = seconds
            else:
                self._delay.pop(unit, None)

    def set_max_registers(self, unit: int, count: int | None) -> None:
        """Refuse (exception 3) requests for more than ``count`` registers, as some devices do."""
        with self._lock:
            if count is None:
                self._max_registers.pop(unit, None)
            else:
                self._max_registers[unit] = count

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._dead.clear()
            self._delay.clear()
            self._max_registers.clear()

    # -- request handling (event loop) ------------------------------------------------------------

    async def _serve(
        self, unit: int, fc: int, address: int, count: int, values: list[int] | list[bool] | None
    ) -> list[int] | list[bool] | ExcCodes:
        with self._lock:
            if values is not None or fc <= 4:
                # pymodbus reads back what a write request wrote; that is not a request of its own
                self.requests.append(RequestRecord(unit, fc, address, count, time.monotonic()))
            if unit not in self._images or unit in self._dead:
                # pymodbus answers nothing for this (ignore_missing_devices): a silent slave
                raise NoSuchIdException(f"unit {unit} does not answer")
            delay = self._delay.get(unit, 0.0)
        if delay:
            await asyncio.sleep(delay)
        table = FC_TABLE.get(fc)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        with self._lock:
            limit = self._max_registers.get(unit)
            if limit is not None and table not in _BIT_TABLES and count > limit:
                return ExcCodes.ILLEGAL_VALUE
            for f in self._faults.get(unit, ()):
                if f.table == table and address < f.start + f.count and f.start < address + count:
                    return ExcCodes(f.code)
            if address + count > self.table_size:
                return ExcCodes.ILLEGAL_ADDRESS
            image = self._images[unit]
            if table in _BIT_TABLES:
                bits = image.bits(table)
                if values is None:
                    return bits[address : address + count]
                bits[address : address + count] = [bool(v) for v in values]
            else:
                regs = image.regs(table)
                if values is None:
                    return regs[address : address + count]
                regs[address : address + count] = [int(v) for v in values]
            self._after_write(unit, image, table, address, count)
            return []

    def _after_write(self, unit: int, image: _Image, table: str, address: int, count: int) -> None:
        """The PLC program's reaction to a write (called with the lock held)."""
        if table == "coil":
            if address <= Addr.ACK < address + count and image.coil[Addr.ACK]:
                self._acknowledge(image)
            self._update_status(image)
        elif table == "holding" and address < Addr.ACK_COUNTER + 2 and address + count > Addr.ACK_COUNTER:
            written = image.holding[Addr.ACK_COUNTER] << 16 | image.holding[Addr.ACK_COUNTER + 1]
            if written == image.counter:
                self._acknowledge(image)

    def _acknowledge(self, image: _Image) -> None:
        if image.discrete[Addr.PART_DONE]:
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

    def _finish_part(self, unit: int) -> Part:
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
        h[Addr.SERIAL : Addr.SERIAL + Addr.SERIAL_LENGTH] = _string_registers(part.serial, Addr.SERIAL_LENGTH)
        h[Addr.FORCE : Addr.FORCE + 2] = _float32_registers(float(part.force), sc.word_order)
        h[Addr.TORQUE : Addr.TORQUE + 2] = _float32_registers(float(part.torque), sc.word_order)
        h[Addr.LENGTH : Addr.LENGTH + 2] = _float32_registers(float(part.length), sc.word_order)
        image.discrete[Addr.PART_DONE] = True
        image.parts.append(part)
        self._update_status(image)
        return part

    def _schedule_cycle(self) -> None:
        assert self._loop is not None and self.scenario.cycle_time is not None
        self._cycle_handle = self._loop.call_later(self.scenario.cycle_time, self._cycle)

    def _cycle(self) -> None:
        finished: list[Part] = []
        with self._lock:
            for unit, image in self._images.items():
                if self.scenario.wait_for_ack and image.discrete[Addr.PART_DONE]:
                    image.blocked_cycles += 1
                    continue
                finished.append(self._finish_part(unit))
        if self.on_part is not None:
            for part in finished:
                with contextlib.suppress(Exception):
                    self.on_part(part)
        self._schedule_cycle()

    # -- TCP ----------------------------------------------------------------------------------------

    async def _listen(self, port: int) -> None:
        server = ModbusTcpServer(self._context, address=(self.host, port), ignore_missing_devices=True)
        await server.serve_forever(background=True)
        transport: Any = server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        self._server = server

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _shutdown_all(self) -> None:
        if self._cycle_handle is not None:
            self._cycle_handle.cancel()
        await self._unlisten()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, coro: Any, timeout: float) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(timeout)

    # -- serial (RTU / ASCII over the pty) ----------------------------------------------------------

    def _serial_silence(self) -> float:
        """How long a pause ends a frame: 3.5 characters (RTU), at least a few ms for the OS."""
        if self.serial_framer == "ascii":
            return 1.0  # ASCII frames end with CR LF; a second of silence only drops junk
        return max(3.5 * 11 / self.baudrate, 0.005)

    def _serial_loop(self) -> None:
        try:
            self._serial_serve()
        except Exception:  # a bug in the simulator: say so; tests then see a silent slave
            log.exception("plc simulator: serial loop crashed")

    def _serial_serve(self) -> None:
        pty = self._pty
        assert pty is not None
        framer = (FramerRTU if self.serial_framer == "rtu" else FramerAscii)(DecodePDU(True))
        silence = self._serial_silence()
        buf = b""
        answered_at: float | None = None
        while not self._serial_stop.is_set():
            data = pty.read_available(silence if buf else 0.05)
            now = time.monotonic()
            if not data:
                if buf:
                    # the line went quiet mid-frame: whatever arrived is not a request
                    self.garbage_frames += 1
                    buf = b""
                continue
            if not buf and answered_at is not None:
                self.frame_gaps.append(now - answered_at)
                answered_at = None
            buf += data
            try:
                used, pdu = framer.handleFrame(buf, 0, 0)
            except ModbusIOException:
                self.garbage_frames += 1
                buf = b""
                continue
            buf = buf[used:]
            if pdu is None:
                continue
            try:
                response = self._call(self._handle(pdu), timeout=30)
            except (RuntimeError, TimeoutError):
                return  # shutting down
            if response is None:
                continue
            frame = framer.buildFrame(response)
            if buf or pty.read_available(0):
                self.overlaps += 1  # the master sent before we answered: two requests on the line
                buf = b""
            try:
                pty.write(frame)
            except (PortUnplugged, TimeoutError, OSError):
                continue
            answered_at = time.monotonic()

    async def _handle(self, pdu: ModbusPDU) -> ModbusPDU | None:
        try:
            response = await pdu.datastore_update(self._context, pdu.dev_id)
        except NoSuchIdException:
            return None
        except Exception as exc:
            log.error("plc simulator: request %s failed: %s", pdu, exc)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        if pdu.dev_id == 0:
            return None  # broadcast: acted upon, never answered
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        return response

    # -- pty cable (serial side) --------------------------------------------------------------------

    def unplug(self) -> None:
        if self._pty is not None:
            self._pty.unplug()

    def replug(self) -> None:
        if self._pty is not None:
            self._pty.replug()

    def _check_range(self, address: int, count: int) -> None:
        if address < 0 or count < 0 or address + count > self.table_size:
            raise ValueError(f"{address}+{count} is outside the tables (size {self.table_size})")


# -- command line -------------------------------------------------------------------------------------


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of unit ids: {text!r}") from None
    if not units or not all(0 < u < 248 for u in units):
        raise argparse.ArgumentTypeError("unit ids are 1..247")
    return units


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``plc`` subcommand of ``simulators``."""
    p = sub.add_parser("plc", help="Modbus PLC of an assembly station (TCP, and RTU/ASCII on a pty)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=5020, help="Modbus TCP port (0: any free port)")
    p.add_argument("--no-tcp", action="store_true", help="serve only the serial side")
    p.add_argument("--rtu-link", help="also serve Modbus RTU on a pty published at this path")
    p.add_argument("--ascii", action="store_true", help="Modbus ASCII instead of RTU on the pty")
    p.add_argument("--baudrate", type=int, default=19200, help="serial side: sets the frame silence")
    p.add_argument("--units", type=_units, default=[1], help="comma-separated unit ids (default 1)")
    p.add_argument("--cycle-time", type=float, default=2.0, help="seconds per part (0: no parts)")
    p.add_argument("--word-order", choices=get_args(Order), default="CDAB", help="of the float32 values")
    p.add_argument("--no-ack-wait", action="store_true", help="keep producing parts without acknowledge")
    p.add_argument("--dead", type=_units, default=[], help="unit ids that never answer")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=_run_plc)


def _run_plc(args: argparse.Namespace, out: Callable[[str], None], stop: threading.Event) -> int:
    if args.no_tcp and not args.rtu_link:
        print("simulators plc: --no-tcp needs --rtu-link", file=sys.stderr)
        return 2
    try:
        scenario = Scenario(
            cycle_time=args.cycle_time or None,
            word_order=args.word_order,
            wait_for_ack=not args.no_ack_wait,
            seed=args.seed,
        )
        sim = PlcSimulator(
            args.units,
            scenario,
            host=args.host,
            port=None if args.no_tcp else args.port,
            rtu_link=args.rtu_link,
            serial_framer="ascii" if args.ascii else "rtu",
            baudrate=args.baudrate,
        )
    except ValueError as exc:
        print(f"simulators plc: {exc}", file=sys.stderr)
        return 2

    def on_part(part: Part) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        out(
            f"{now} unit {part.unit} part {part.counter} {part.serial} force {part.force} N "
            f"torque {part.torque} N·m length {part.length} mm"
        )

    sim.on_part = on_part
    for unit in args.dead:
        sim.set_dead(unit)
    try:
        sim.start()
    except (OSError, RuntimeError) as exc:
        print(f"simulators plc: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        where = [] if args.no_tcp else [f"tcp {args.host}:{sim.port}"]
        if args.rtu_link:
            where.append(f"{'ascii' if args.ascii else 'rtu'} {args.rtu_link}")
        out(f"plc simulator units {','.join(map(str, sim.units))} on {' and '.join(where)}; Ctrl-C stops")
        stop.wait()
    finally:
        sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.plc ...``: the subcommand on its own (same options)."""
    parser = argparse.ArgumentParser(prog="python -m simulators.plc", description="Modbus PLC simulator.")
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    add_parser(sub)
    return run_until_signalled(parser.parse_args(["plc", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
