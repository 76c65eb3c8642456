"""The simulated PLC's transports: Modbus TCP (pymodbus's server) and RTU / ASCII on a pty.

Both serve the same :class:`~simulators.plc.station.Station`. The TCP side is pymodbus's own
``ModbusTcpServer``: an implementation of Modbus that shares no code with the driver. The
serial side frames with :mod:`simulators.plc.serial_line` (written from the serial line
specification) and answers each request PDU through pymodbus's request classes, the same
request handling as the TCP side.

A little over 500 lines: this is the simulator's whole public face (lifecycle, the process
image and fault methods the tests call, both transports and the serial line faults); the PLC
program and the framing already live in ``station.py`` and ``serial_line.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer

from simulators.plc.serial_line import (
    ascii_decode,
    ascii_frame,
    rtu_crc_ok,
    rtu_frame,
    rtu_request_length,
)
from simulators.plc.station import NoAnswer, Part, RequestRecord, Scenario, Station, Table
from simulators.pty import PortUnplugged, PtyPort

log = logging.getLogger(__name__)


class _Context(ModbusServerContext):
    """Routes pymodbus's datastore calls to the station.

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


@dataclass(slots=True)
class _LineFault:
    """What happens to one of a unit's next answers on the serial side."""

    kind: Literal["crc", "foreign", "late"]
    other: int = 0  # foreign: the address the answer carries
    also_answer: bool = False  # foreign: the unit's own answer follows
    delay: float = 0.0  # late: seconds after the request


@dataclass(frozen=True, slots=True)
class SentLate:
    unit: int
    frame: bytes
    sent_at: float


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
        self.station = Station(self.units, self.scenario, table_size)
        self.host = host
        self._port_wanted = port
        self.port = 0
        self.rtu_link = Path(rtu_link) if rtu_link is not None else None
        self.serial_framer = serial_framer
        self.baudrate = baudrate
        self.table_size = table_size
        #: serial side: seconds of silence between the end of a response and the next request
        self.frame_gaps: deque[float] = deque(maxlen=100_000)
        #: serial side: requests that arrived while the previous one was still being answered
        self.overlaps = 0
        #: serial side: frames that were not requests (bad CRC / LRC, cut short)
        self.garbage_frames = 0
        #: serial side: answers sent late by :meth:`reply_late`, oldest first
        self.sent_late: deque[SentLate] = deque(maxlen=10_000)
        self._line_faults: dict[int, deque[_LineFault]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None
        self._context = _Context(self)
        self._timers: list[asyncio.TimerHandle] = []
        self._pty: PtyPort | None = None
        self._serial_thread: threading.Thread | None = None
        self._serial_stop = threading.Event()
        #: called with every part as it is finished (the CLI prints them)
        self.on_part: Callable[[Part], None] | None = None

    @property
    def requests(self) -> deque[RequestRecord]:
        """Every request seen, oldest first (bounded)."""
        return self.station.requests

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
                loop.call_soon_threadsafe(self._every, self.scenario.cycle_time, self._cycle)
            if self.scenario.churn_every is not None:
                loop.call_soon_threadsafe(self._every, self.scenario.churn_every, self.station.churn)
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

    # -- process image (see Station) ----------------------------------------------------------------

    def set_registers(self, unit: int, table: Table, address: int, values: Sequence[int]) -> None:
        self.station.set_registers(unit, table, address, values)

    def registers(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        return self.station.registers(unit, table, address, count)

    def set_bits(self, unit: int, table: Table, address: int, values: Sequence[bool]) -> None:
        self.station.set_bits(unit, table, address, values)

    def bits(self, unit: int, table: Table, address: int, count: int) -> list[bool]:
        return self.station.bits(unit, table, address, count)

    def parts(self, unit: int) -> list[Part]:
        return self.station.parts(unit)

    def acknowledged(self, unit: int) -> list[int]:
        """Counters of the parts that were acknowledged, in order."""
        return self.station.acknowledged(unit)

    def blocked_cycles(self, unit: int) -> int:
        """Cycles in which the station could not start a part because the last one was not acknowledged."""
        return self.station.blocked_cycles(unit)

    def ignored_acks(self, unit: int) -> int:
        """Acknowledges the unit ignored while stuck."""
        return self.station.ignored_acks(unit)

    def set_stuck(self, unit: int, stuck: bool = True) -> None:
        """Hang (or release) the unit's PLC program: see :meth:`Station.set_stuck`."""
        self.station.set_stuck(unit, stuck)

    def count_requests(self, unit: int, address: int | None) -> None:
        """Holding ``address`` counts the read requests the unit answers, as they arrive."""
        self.station.count_requests(unit, address)

    def new_part(self, unit: int) -> Part:
        """Finish a part now (whether or not the last one was acknowledged)."""
        return self.new_parts(unit, 1)[0]

    def new_parts(self, unit: int, n: int) -> list[Part]:
        """Finish ``n`` parts at once: no master can poll in between (a collector that was too slow)."""
        with self.station.lock:
            parts = [self.station.finish_part(unit) for _ in range(n)]
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
        self.station.set_exception(unit, table, start, count, code)

    def set_unsupported(self, unit: int, function_code: int, unsupported: bool = True) -> None:
        """Answer ``function_code`` with exception 1 (illegal function), as a PLC without it does."""
        self.station.set_unsupported(unit, function_code, unsupported)

    def set_dead(self, unit: int, dead: bool = True) -> None:
        """A dead unit never answers (no exception either: silence, as a broken slave on a bus)."""
        self.station.set_dead(unit, dead)

    def set_delay(self, unit: int, seconds: float) -> None:
        """Answer ``unit``'s requests only after ``seconds`` (a busy or slow device).

        Over TCP this is no faithful late reply: pymodbus's server (3.16) tags every answer
        with the transaction identifier of the newest request on the connection. The serial
        side's :meth:`reply_late` is one.
        """
        self.station.set_delay(unit, seconds)

    def set_max_registers(self, unit: int, count: int | None) -> None:
        """Refuse (exception 3) requests for more than ``count`` registers, as some devices do."""
        self.station.set_max_registers(unit, count)

    def corrupt_crc(self, unit: int, count: int = 1) -> None:
        """Serial side: the unit's next ``count`` answers go out with a wrong CRC (or LRC)."""
        self._add_line_faults(unit, count, _LineFault("crc"))

    def answer_as(self, unit: int, other: int, count: int = 1, *, also_answer: bool = False) -> None:
        """Serial side: the unit's next ``count`` answers carry address ``other`` (a foreign answer);
        with ``also_answer`` the unit's own answer follows each one."""
        if not 1 <= other <= 247:
            raise ValueError("other must be a slave address 1..247")
        self._add_line_faults(unit, count, _LineFault("foreign", other=other, also_answer=also_answer))

    def reply_late(self, unit: int, delay: float, count: int = 1) -> None:
        """Serial side: the unit's next ``count`` answers go out ``delay`` seconds after their request,
        while the simulator keeps listening (each is recorded in :attr:`sent_late`)."""
        if delay <= 0:
            raise ValueError("delay must be positive")
        self._add_line_faults(unit, count, _LineFault("late", delay=delay))

    def _add_line_faults(self, unit: int, count: int, fault: _LineFault) -> None:
        with self.station.lock:
            self._line_faults.setdefault(unit, deque()).extend([fault] * count)

    def clear_faults(self) -> None:
        self.station.clear_faults()
        with self.station.lock:
            self._line_faults.clear()

    # -- request handling (event loop) ------------------------------------------------------------

    async def _serve(
        self, unit: int, fc: int, address: int, count: int, values: list[int] | list[bool] | None
    ) -> list[int] | list[bool] | ExcCodes:
        try:
            delay = self.station.check_unit(unit, fc, address, count, values is not None)
        except NoAnswer as exc:
            # pymodbus answers nothing for this (ignore_missing_devices): a silent slave
            raise NoSuchIdException(str(exc)) from None
        if delay:
            await asyncio.sleep(delay)
        return self.station.serve(unit, fc, address, count, values)

    def _cycle(self) -> None:
        finished = self.station.cycle()
        if self.on_part is not None:
            for part in finished:
                with contextlib.suppress(Exception):
                    self.on_part(part)

    def _every(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` every ``seconds`` on the event loop, on a fixed grid (no drift)."""
        assert self._loop is not None
        loop = self._loop
        start = loop.time()
        n = 0

        def tick() -> None:
            nonlocal n
            action()
            n += 1
            due = start + (n + 1) * seconds
            if due < loop.time():  # the loop fell behind: skip the missed ticks, never burst
                n = int((loop.time() - start) / seconds)
                due = start + (n + 1) * seconds
            self._timers.append(loop.call_at(due, tick))
            if len(self._timers) > 16:
                del self._timers[:-2]

        self._timers.append(loop.call_at(start + seconds, tick))

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
        for timer in self._timers:
            timer.cancel()
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

    def _split_frame(self, buf: bytes, quiet: bool) -> tuple[bytes | None, bytes]:
        """``(frame, rest)``: the first complete frame in ``buf`` (None while incomplete).

        ``quiet``: the line has been silent for 3.5 characters, which ends any RTU frame.
        """
        if self.serial_framer == "ascii":
            start = buf.find(b":")
            if start < 0:
                return (buf, b"") if quiet and buf else (None, buf)  # junk without a start
            end = buf.find(b"\n", start)
            if end < 0:
                return (buf, b"") if quiet else (None, buf)
            if start:
                return buf[:start], buf[start:]  # junk before the start: a frame of its own
            return buf[: end + 1], buf[end + 1 :]
        length = rtu_request_length(buf)
        if length is not None and 0 < length <= len(buf):
            return buf[:length], buf[length:]
        return (buf, b"") if quiet and buf else (None, buf)

    def _deframe(self, frame: bytes) -> tuple[int, bytes] | None:
        if self.serial_framer == "ascii":
            return ascii_decode(frame)
        if not rtu_crc_ok(frame):
            return None
        return frame[0], frame[1:-2]

    def _frame(self, address: int, pdu: bytes) -> bytes:
        return ascii_frame(address, pdu) if self.serial_framer == "ascii" else rtu_frame(address, pdu)

    def _serial_serve(self) -> None:  # noqa: C901 - RTU framing by silence and the answer in one loop, as the serial line specification states it
        pty = self._pty
        assert pty is not None
        silence = self._serial_silence()
        decoder = DecodePDU(True)
        buf = b""
        last_byte = 0.0
        answered_at: float | None = None
        scheduled: list[tuple[float, int, bytes]] = []  # late answers: (due, unit, frame)
        while not self._serial_stop.is_set():
            wait = silence if buf else 0.05
            if scheduled:
                wait = max(0.0, min(wait, scheduled[0][0] - time.monotonic()))
            data = pty.read_available(wait)
            now = time.monotonic()
            while scheduled and scheduled[0][0] <= now:
                _, unit, late = scheduled.pop(0)
                with contextlib.suppress(PortUnplugged, TimeoutError, OSError):
                    pty.write(late)
                    self.sent_late.append(SentLate(unit, late, time.monotonic()))
            if data:
                if not buf and answered_at is not None:
                    self.frame_gaps.append(now - answered_at)
                    answered_at = None
                buf += data
                last_byte = now
            elif not buf:
                continue
            frame, buf = self._split_frame(buf, quiet=not data and now - last_byte >= silence)
            if frame is None:
                continue
            request = self._deframe(frame)
            if request is None:
                self.garbage_frames += 1  # a slave ignores a frame it cannot check (§2.4.2)
                continue
            address, pdu_bytes = request
            if address not in self.units and address != 0:
                continue  # for another slave on the bus
            pdu = decoder.decode(pdu_bytes)
            if pdu is None:
                answer: ModbusPDU | None = ExceptionResponse(pdu_bytes[0] & 0x7F, ExcCodes.ILLEGAL_FUNCTION)
            else:
                pdu.dev_id = address
                try:
                    answer = self._call(self._handle(pdu), timeout=30)
                except (RuntimeError, TimeoutError):
                    return  # shutting down
            if answer is None or address == 0:
                continue  # silent, or a broadcast: acted upon, never answered
            payload = bytes([answer.function_code]) + answer.encode()
            if buf or pty.read_available(0):
                self.overlaps += 1  # the master sent before we answered: two requests on the line
                buf = b""
            with self.station.lock:
                faults = self._line_faults.get(address)
                fault = faults.popleft() if faults else None
            frames = [self._frame(address, payload)]
            if fault is not None and fault.kind == "crc":
                frames = [frames[0][:-1] + bytes([frames[0][-1] ^ 0x5A])]
            elif fault is not None and fault.kind == "foreign":
                foreign = self._frame(fault.other, payload)
                frames = [foreign, frames[0]] if fault.also_answer else [foreign]
            elif fault is not None and fault.kind == "late":
                scheduled.append((now + fault.delay, address, frames[0]))
                scheduled.sort()
                continue
            try:
                for out in frames:
                    pty.write(out)
                    if len(frames) > 1:
                        time.sleep(max(silence, 0.005))  # two frames: the inter-frame silence between them
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
        response.dev_id = pdu.dev_id
        return response

    # -- pty cable (serial side) --------------------------------------------------------------------

    def unplug(self) -> None:
        if self._pty is not None:
            self._pty.unplug()

    def replug(self) -> None:
        if self._pty is not None:
            self._pty.replug()
