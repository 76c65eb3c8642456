"""Modbus TCP, RTU and ASCII master: PLCs and controllers polled through a register map.

Over ~500 lines on purpose: this module is the bus thread (scheduling, polls, retries and
their accounting, writes, running the trigger handshake over the bus), and each of those
needs the others' state (the link, the slaves' health, the charged bus time); splitting it
would only pass that state around. Configuration, the compiled map and its decoding,
framing, the wire, fault accounting and the handshake's logic live in their own modules
(see ``README.md``).

One driver instance owns one link (a TCP socket to a PLC or gateway, or one serial bus) and
every slave (unit id) behind it. One thread runs the link: one request at a time, each
slave's poll tasks on their own schedule (earliest due first), writes asked for by
:meth:`ModbusDriver.request` in between. Every poll delivers the readings of all its
requests as one tuple (``channel`` = point name, ``value`` an exact Decimal, strings in
``text``, bits 0/1, ``raw`` = the point's register bytes as received, ``timestamp_ns`` = the
arrival of the answer that carried it); a trigger's acquisition is one tuple too.

Slow or dead slaves
    A slave that does not answer (after ``retries``), or for which a TCP gateway answers
    exception 10/11, is reported once (``TIMEOUT`` event) and then only probed, one request
    after a back-off from ``backoff_min`` doubling to ``backoff_max``; its return is a
    ``CONNECTED`` event. The bus time its failing requests take is charged to it: a healthy
    slave's poll that is late only because of it is not an overrun (counted in
    ``delayed_by_other_slaves``).

Faults
    Exception responses are ``BAD_FRAME`` events (code and meaning), never values; CRC (LRC)
    errors, answers from another address, late replies and malformed answers are counted per
    kind and reported as one ``BAD_FRAME`` event per streak (``health.py``, ``link.py``).

Overruns
    A poll that ends after its next slot (previous slot + interval) is an overrun: counted in
    :attr:`ModbusDriver.overruns`, one ``TIMEOUT`` event ``"overrun: ..."`` and, when the
    task meets its rate again, one log line with the streak's count. The next poll starts at
    once; polls are never queued up to catch up, never skipped, and a sink that blocks (the
    gateway's bounded queue is full) makes polls late, never lost.

Writes
    ``request("write", point=NAME, value=V)`` encodes ``V`` with the point's type, order,
    scale and offset and waits until the device confirmed it: a coil with function 5 (15
    with ``force_multiple_write``), registers with 6 or 16, one bit of a holding register
    with 22 (mask write) or, per the slave's ``bit_write``, read-modify-write (3, then 6).

RTU pacing
    Before each request the line stays silent for 3.5 character times (1.75 ms above 19200
    baud), or ``inter_frame_delay``; see ``link.py`` for flushing and late replies.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from drivers import registry
from drivers.backoff import Backoff, BackoffDelays
from drivers.base import DeviceEvent, Driver, DriverConfig, DriverError, EventKind, Item, Reading, Sink
from drivers.modbus.codec import ORDER_FLAGS, CodecError
from drivers.modbus.compiled import Point, Read, Slave, Task, Trigger, compile_map
from drivers.modbus.config import ModbusConfig, PointConfig, encode_point
from drivers.modbus.health import FaultStreaks
from drivers.modbus.link import FaultKind, GarbledAnswer, Link, LinkLost, NoAnswer, make_link
from drivers.modbus.pdu import (
    EXCEPTION_MEANINGS,
    PduError,
    check_write_echo,
    exception_code,
    mask_write_request,
    read_data,
    read_request,
    write_coil_request,
    write_coils_request,
    write_register_request,
    write_registers_request,
)
from drivers.modbus.triggers import Note, Step

log = logging.getLogger(__name__)

#: a TCP gateway answering these says the slave behind it is silent: treated like a timeout
_GATEWAY_SILENT: Final = frozenset({10, 11})

COUNTERS: Final = (
    "requests",
    "polls",
    "overruns",
    "delayed_by_other_slaves",
    "timeouts",
    "exception_responses",
    "triggers",
    "missed_triggers",
    "lost_edges",
    "handshake_stalls",
    "bit_writes_read_modify_write",
)


@dataclass(eq=False)
class _WriteJob:
    slave: Slave
    point: Point
    payload: bytes
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cancelled: bool = False


class _SlaveDown(DriverError):
    pass


class _Refused(DriverError):
    """The request got no usable answer (the event, if any, was already emitted)."""


class _DeviceException(DriverError):
    def __init__(self, code: int, what: str, function: int) -> None:
        self.code = code
        self.meaning = EXCEPTION_MEANINGS.get(code, "unknown exception code")
        self.function = function
        super().__init__(f"exception {code} ({self.meaning}): {what}")


@registry.register
class ModbusDriver(Driver):
    name = "modbus"
    config_model = ModbusConfig
    binary = True

    def __init__(self, config: DriverConfig) -> None:
        if not isinstance(config, ModbusConfig):
            raise TypeError(f"{type(self).__name__} needs a ModbusConfig, got {type(config).__name__}")
        super().__init__(config)
        self.cfg = config
        self.silent_interval = config.silent_interval
        compiled = compile_map(config, config.id)
        self.slaves: list[Slave] = compiled.slaves
        self.tasks: list[Task] = compiled.tasks
        self._points = compiled.points
        self._labels = compiled.labels
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._faults = FaultStreaks(config.id, self._event, self._counters)
        #: hot-path counters, kept as attributes (see counters())
        self.polls = 0
        self.requests_sent = 0
        self.overruns = 0
        self.triggers = 0
        self.missed_triggers = 0
        #: wall-clock seconds of recent polls (bounded), for benchmarks and status pages
        self.poll_durations: deque[float] = deque(maxlen=10_000)
        # bounded by its callers: each write() waits for its job (or its timeout, which marks
        # the job cancelled, skipped by the bus thread), and a stopped driver fails them all
        self._jobs: queue.SimpleQueue[_WriteJob] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._link: Link | None = None
        self._refusals: dict[str, int] = {}
        self._charged = 0.0  # bus seconds taken by failing requests, all slaves
        self._rng = random.Random()
        self._link_backoff = Backoff(min_delay=config.reconnect_min, max_delay=config.reconnect_max)
        self._slave_backoff = Backoff(min_delay=config.backoff_min, max_delay=config.backoff_max)

    # -- configuration -----------------------------------------------------------------------

    @property
    def requests_per_cycle(self) -> int:
        """Read requests one poll of every group of every slave needs (without trigger reads)."""
        return sum(len(t.reads) for t in self.tasks)

    def counters(self) -> dict[str, int]:
        counts = dict(self._counters)
        counts.update(
            requests=self.requests_sent,
            polls=self.polls,
            overruns=self.overruns,
            triggers=self.triggers,
            missed_triggers=self.missed_triggers,
            slaves_silent=sum(s.health.down for s in self.slaves),
            stalled_handshakes=sum(1 for s in self.slaves if s.trigger and s.trigger.handshake.stalled),
        )
        return counts

    # -- Driver ------------------------------------------------------------------------------

    def start(self, sink: Sink) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise DriverError(f"{self.device_id}: already started")
        self._sink = sink
        self._stop.clear()
        now = time.monotonic()
        for slave in self.slaves:
            slave.health.reset()
            if slave.trigger is not None:
                slave.trigger.handshake.restart()
        for task in self.tasks:
            task.next_slot = now
        self._thread = threading.Thread(target=self._run, name=f"modbus:{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # the thread may be inside one request (and a late-reply window), or in a sink the gateway releases
            thread.join(self.cfg.timeout * (self.cfg.retries + 2) + 2.0)
            if thread.is_alive():
                log.warning("%s: poll thread did not stop in time", self.device_id)
        now = time.monotonic()
        for task in self.tasks:
            task.overrun.close(now)
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
            payload = encode_point(point.cfg, kwargs["value"])
        except CodecError as exc:
            raise DriverError(f"{self.device_id}: cannot write {kwargs['value']!r} to {name}: {exc}") from exc
        thread = self._thread
        if thread is None or not thread.is_alive():
            raise DriverError(f"{self.device_id}: driver is not running")
        if self._link is None:
            raise DriverError(f"{self.device_id}: link down ({self._where()})")
        timeout = kwargs.get("timeout")
        if timeout is None:
            # the bus may be busy with one request (plus retries and a late-reply window) before ours
            timeout = 2 * self.cfg.timeout * (self.cfg.retries + 2) + 1.0
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
            if self._link is None:
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
            except LinkLost as exc:
                self._close()
                reported_up = False
                log.warning("%s: disconnected: %s", self.device_id, exc)
                self._event(EventKind.DISCONNECTED, f"{self._where()}: {exc}")
                delays = self._link_backoff.delays(self._rng)
                self._stop.wait(next(delays))

    def _where(self) -> str:
        c = self.cfg
        if c.transport == "tcp":
            return f"{c.host}:{c.port}"
        return f"{c.serial_port} ({c.transport} {c.baudrate} {c.bytesize}{c.parity}{c.stopbits})"

    def _open(self) -> str | None:
        link = make_link(self.cfg, self._on_fault)
        try:
            link.open()
        except Exception as exc:  # pyserial raises undocumented types (termios.error)
            link.close()
            log.debug("%s: open failed: %r", self.device_id, exc)
            if self.cfg.transport == "tcp":
                return f"cannot connect to {self._where()}"
            port = self.cfg.serial_port
            missing = port is not None and not os.path.exists(port)
            return f"cannot open {self._where()}" + (": no such device" if missing else "")
        self._link = link
        return None

    def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _step(self) -> None:
        """One unit of work: pending writes, else the most overdue poll, else a wait."""
        if self._run_jobs():
            return
        now = time.monotonic()
        best: Task | None = None
        best_due = 0.0
        for task in self.tasks:
            health = task.slave.health
            due = max(task.next_slot, health.retry_at) if health.down else task.next_slot
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
            except LinkLost as exc:
                job.error = DriverError(f"{self.device_id}: link lost during write: {exc}")
                job.done.set()
                raise
            except DriverError as exc:
                job.error = DriverError(str(exc)) if isinstance(exc, _SlaveDown) else exc
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

    def _poll(self, task: Task, now: float) -> None:
        slave = task.slave
        # a probe of a silent slave starts a fresh schedule: its skipped slots are not overruns
        slot = now if slave.health.down else task.next_slot
        readings: list[Reading] = []
        trigger_value: Decimal | None = None
        sink_wait = 0.0
        trigger_at = task.trigger_at
        try:
            for i, read in enumerate(task.reads):
                if self._stop.is_set():
                    return
                got = self._read(slave, read)
                if got is None:
                    continue
                data, ts = got
                read.decode_into(self.config.id, data, ts, readings)
                if trigger_at is not None and trigger_at[0] == i:
                    trigger_value = read.value_of(data, trigger_at[1])
        except _SlaveDown:
            return
        finally:
            if readings:
                started = time.monotonic()
                self._deliver(tuple(readings))
                sink_wait = time.monotonic() - started
        trigger = slave.trigger
        if trigger is not None and trigger_value is not None:
            try:
                self._run_handshake(slave, trigger, trigger_value)
            except _SlaveDown:
                return
        self._account(task, slot, now, sink_wait)

    def _account(self, task: Task, slot: float, started: float, sink_wait: float) -> None:
        end = time.monotonic()
        task.cycles += 1
        self.polls += 1
        self.poll_durations.append(end - started)
        # bus time other slaves' failing requests took since this task's last poll
        others = (self._charged - task.charged_mark) - (task.slave.health.charged - task.own_mark)
        task.charged_mark, task.own_mark = self._charged, task.slave.health.charged
        next_slot = slot + task.interval
        if end <= next_slot:
            task.next_slot = next_slot
            task.overrun.on_time(end)
            return
        # the configured rate was not met: start the next poll now (no catch-up burst)
        task.next_slot = end
        lateness = end - next_slot
        if others >= lateness:
            self._counters["delayed_by_other_slaves"] += 1
            return
        self.overruns += 1
        cause = "waiting for the gateway" if sink_wait >= lateness else "bus and device time"
        if task.overrun.late(end, lateness, cause):
            self._event(
                EventKind.TIMEOUT,
                f"overrun: {task.slave.label} {task.name}: poll took {(end - started) * 1e3:.1f} ms "
                f"({sink_wait * 1e3:.1f} ms of it waiting for the gateway), started {(started - slot) * 1e3:.1f} ms "
                f"after its slot, interval {task.interval * 1e3:.1f} ms; the next poll starts now "
                "(further overruns are counted until the rate is met again)",
            )

    def _read(self, slave: Slave, read: Read) -> tuple[bytes, int] | None:
        """The data bytes of one planned request and their arrival time; None if refused."""
        try:
            answer, ts = self._execute(slave, read.request, read.what)
        except _DeviceException as exc:
            self._refused(slave, exc)
            return None
        except _Refused:
            return None
        try:
            return read_data(answer, read.request), ts
        except PduError as exc:
            self._on_fault("malformed", slave.unit, f"{read.what}: {exc}", answer)
            return None

    # -- requests ----------------------------------------------------------------------------------

    def _execute(self, slave: Slave, request: bytes, what: str) -> tuple[bytes, int]:
        """One request with retries; returns ``(answer PDU, arrival ns)``.

        Raises _DeviceException (an exception response), _Refused (garbled answers only),
        _SlaveDown (the slave is silent) or LinkLost.
        """
        link = self._link
        if link is None:
            raise LinkLost("link down")
        health = slave.health
        attempts = 1 if health.down else 1 + self.cfg.retries
        started = time.monotonic()
        silent = True
        function = request[0]
        for attempt in range(attempts):
            self.requests_sent += 1
            try:
                answer, ts = link.exchange(slave.unit, request)
            except NoAnswer:
                self._counters["timeouts"] += 1
                continue
            except GarbledAnswer:
                silent = False
                continue
            code = exception_code(answer, function)
            if code is None and answer[:1] != request[:1]:
                self._on_fault("malformed", slave.unit, f"{what}: answer carries function {answer[0]}", answer)
                silent = False
                continue
            self._faults.sound(slave.unit, time.monotonic())
            if attempt or health.down:
                self._charge(slave, time.monotonic() - started)
            if health.down:
                self._came_back(slave)
            if code is not None:
                raise _DeviceException(code, what, function)
            return answer, ts
        self._charge(slave, time.monotonic() - started)
        if silent:
            self._went_silent(
                slave, f"no response within {self.cfg.timeout:g} s ({attempts} attempt(s)) to {what.split(': ', 1)[-1]}"
            )
            raise _SlaveDown(f"{slave.label} is not answering")
        raise _Refused(f"{what}: no sound answer in {attempts} attempt(s)")

    def _charge(self, slave: Slave, seconds: float) -> None:
        slave.health.charged += seconds
        self._charged += seconds

    def _refused(self, slave: Slave, exc: _DeviceException) -> None:
        """An exception response: one event and one log line per request until it is answered again."""
        self._counters["exception_responses"] += 1
        what = str(exc)
        streak = self._refusals.get(what, 0) + 1
        self._refusals[what] = streak
        if streak == 1:
            log.warning("%s: %s", self.device_id, what)
            self._event(EventKind.BAD_FRAME, what, bytes([(exc.function | 0x80) & 0xFF, exc.code & 0xFF]))
        if exc.code in _GATEWAY_SILENT:
            self._went_silent(slave, f"gateway reports exception {exc.code} ({exc.meaning})")
            raise _SlaveDown(what)

    def _on_fault(self, kind: FaultKind, unit: int | None, detail: str, raw: bytes) -> None:
        label = next((s.label for s in self.slaves if s.unit == unit), "the line" if unit is None else f"unit {unit}")
        self._faults.fault(kind, unit, label, detail, raw, time.monotonic())

    def _went_silent(self, slave: Slave, why: str) -> None:
        now = time.monotonic()
        first, delay = slave.health.went_silent(now, self._slave_backoff, self._rng)
        if first:
            detail = (
                f"{slave.label}: {why}; polled again in {delay:.2f} s, then backing off up to "
                f"{self.cfg.backoff_max:g} s while it stays silent"
            )
            log.warning("%s: %s", self.device_id, detail)
            self._event(EventKind.TIMEOUT, detail)
        else:
            log.debug("%s: %s still silent (%d probes)", self.device_id, slave.label, slave.health.probes)
        if self.cfg.transport == "tcp" and all(s.health.down for s in self.slaves):
            # Nobody answers on this socket: maybe the peer vanished without a reset. The next
            # probe reconnects; only a failing reconnect is reported (as DISCONNECTED).
            self._close()

    def _came_back(self, slave: Slave) -> None:
        probes = slave.health.probes
        silent_for = slave.health.came_back(time.monotonic())
        self._reanchor(slave)
        detail = f"{slave.label}: answering again after {silent_for:.1f} s ({probes + 1} probe(s))"
        log.info("%s: %s", self.device_id, detail)
        self._event(EventKind.CONNECTED, detail)

    def _reanchor(self, slave: Slave | None) -> None:
        """Polls missed during an outage (reported as such) are not overruns: restart their schedule."""
        now = time.monotonic()
        for task in self.tasks:
            if (slave is None or task.slave is slave) and task.next_slot < now:
                task.next_slot = now
            task.charged_mark, task.own_mark = self._charged, task.slave.health.charged

    # -- trigger-based acquisition ---------------------------------------------------------------

    def _run_handshake(self, slave: Slave, trig: Trigger, value: Decimal) -> None:
        hs = trig.handshake
        step = hs.poll(value, time.monotonic())
        cached: tuple[tuple[Reading, ...], bytes] | None = None
        try:
            for _ in range(6):  # at most: check, acquire, reset, acknowledge
                for note in hs.take_notes():  # before the requests they precede
                    self._note(slave, note)
                if step is Step.NONE:
                    return
                if step is Step.ACQUIRE:
                    got = cached if cached is not None else self._read_part(slave, trig, trig.reads)
                    if got is None:  # the refusal is an event; the next poll fires again
                        step = hs.failed(time.monotonic())
                        continue
                    self.triggers += 1
                    self._deliver(got[0])
                    step = hs.acquired(got[1], time.monotonic())
                elif step is Step.CHECK_IDENTITY:
                    if trig.identity_reads is None:
                        cached = self._read_part(slave, trig, trig.reads)
                        identity = cached[1] if cached is not None else None
                    else:
                        part = self._read_part(slave, trig, trig.identity_reads)
                        identity = part[1] if part is not None else None
                    step = hs.identity_read(identity, time.monotonic())
                else:
                    assert trig.ack is not None
                    payload = trig.ack_reset if step is Step.WRITE_RESET else self._ack_payload(slave, trig)
                    purpose = "acknowledge reset" if step is Step.WRITE_RESET else "acknowledge"
                    ok = payload is not None and self._try_write(slave, trig.ack, payload, purpose)
                    step = hs.written(ok, time.monotonic())
        finally:
            for note in hs.take_notes():
                self._note(slave, note)

    def _read_part(self, slave: Slave, trig: Trigger, reads: list[Read]) -> tuple[tuple[Reading, ...], bytes] | None:
        """The on_trigger readings in their order with one timestamp, and the part's identity bytes."""
        answers: list[tuple[Read, bytes]] = []
        ts = 0
        for read in reads:
            got = self._read(slave, read)
            if got is None:
                return None
            answers.append((read, got[0]))
            ts = max(ts, got[1])
        decoded: list[Reading] = []
        for read, data in answers:
            read.decode_into(self.config.id, data, ts, decoded)
        by_name = {r.channel: r for r in decoded}
        identity = b"".join(by_name[n].raw for n in trig.identity if n in by_name)
        if reads is trig.identity_reads:
            return (), identity
        return tuple(by_name[n] for n in trig.order), identity

    def _ack_payload(self, slave: Slave, trig: Trigger) -> bytes | None:
        if trig.ack_value is not None:
            return trig.ack_value
        assert trig.ack is not None
        value = trig.handshake.value
        try:
            return encode_point(trig.ack.cfg, value)
        except CodecError as exc:
            self._bad(f"{slave.label}: cannot acknowledge {value} in {trig.ack.name}: {exc}")
            return None

    def _note(self, slave: Slave, note: Note) -> None:
        if note.kind == "missed":
            self.missed_triggers += note.count
            log.warning("%s: %s", self.device_id, note.detail)
            self._event(EventKind.TIMEOUT, note.detail)
        elif note.kind == "stalled":
            self._counters["handshake_stalls"] += 1
            log.warning("%s: %s", self.device_id, note.detail)
            self._event(EventKind.STALLED, note.detail)
        elif note.kind == "resumed":
            log.info("%s: %s", self.device_id, note.detail)
            self._event(EventKind.RESUMED, note.detail)
        else:
            self._counters["lost_edges"] += 1
            first = self._counters["lost_edges"] == 1
            log.log(logging.INFO if first else logging.DEBUG, "%s: %s", self.device_id, note.detail)

    def _try_write(self, slave: Slave, point: Point, payload: bytes, purpose: str) -> bool:
        try:
            self._write(slave, point, payload)
        except _Refused:
            return False  # the exception response is already an event
        except (_SlaveDown, LinkLost):
            raise
        except DriverError as exc:
            self._bad(f"{slave.label}: {purpose} {point.name}: {exc}")
            return False
        return True

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, slave: Slave, point: Point, payload: bytes) -> None:
        cfg = point.cfg
        what = f"{slave.label}: write {point.name} ({cfg.table} {cfg.address})"
        if point.table == "coil":
            on = payload != b"\x00"
            if self.cfg.force_multiple_write:
                self._confirm(slave, write_coils_request(cfg.address, [on]), what)
            else:
                self._confirm(slave, write_coil_request(cfg.address, on), what)
        elif cfg.type == "bit":
            self._write_bit(slave, cfg, any(payload), what)
        else:
            self._write_registers(slave, cfg.address, payload, what)

    def _write_registers(self, slave: Slave, address: int, payload: bytes, what: str) -> None:
        if len(payload) == 2 and not self.cfg.force_multiple_write:
            self._confirm(slave, write_register_request(address, int.from_bytes(payload, "big")), what)
        else:
            self._confirm(slave, write_registers_request(address, payload), what)

    def _write_bit(self, slave: Slave, cfg: PointConfig, on: bool, what: str) -> None:
        assert cfg.bit is not None
        # a register travels big-endian: a byte-swapped device's bit n is wire bit n ^ 8
        mask = 1 << (cfg.bit ^ 8 if ORDER_FLAGS[cfg.resolved_order][0] == "little" else cfg.bit)
        mode = slave.cfg.bit_write
        if mode == "mask" or (mode == "auto" and not slave.mask_write_unsupported):
            request = mask_write_request(cfg.address, 0xFFFF & ~mask, mask if on else 0)
            try:
                self._confirm(slave, request, what, refusal_ok=mode == "auto")
                return
            except _DeviceException:  # exception 1 in auto mode: the device has no function 22
                slave.mask_write_unsupported = True
                log.info(
                    "%s: %s answers function 22 (mask write) with 'illegal function': bit writes use "
                    "read-modify-write (functions 3 and 6/16) from now on",
                    self.device_id,
                    slave.label,
                )
        # read-modify-write: not atomic, the PLC may change another bit of the register in between
        self._counters["bit_writes_read_modify_write"] += 1
        request = read_request("holding", cfg.address, 1)
        try:
            answer, _ = self._execute(slave, request, f"{what}: read before write")
        except _DeviceException as exc:
            self._refused(slave, exc)
            raise _Refused(str(exc)) from None
        try:
            current = int.from_bytes(read_data(answer, request), "big")
        except PduError as exc:
            self._on_fault("malformed", slave.unit, f"{what}: {exc}", answer)
            raise _Refused(str(exc)) from None
        updated = (current | mask) if on else (current & ~mask)
        self._write_registers(slave, cfg.address, updated.to_bytes(2, "big"), what)

    def _confirm(self, slave: Slave, request: bytes, what: str, *, refusal_ok: bool = False) -> None:
        """Send a write and check its echo. ``refusal_ok``: exception 1 is raised for the caller to handle."""
        try:
            answer, _ = self._execute(slave, request, what)
        except _DeviceException as exc:
            if refusal_ok and exc.code == 1:
                raise
            self._refused(slave, exc)
            raise _Refused(str(exc)) from None
        try:
            check_write_echo(answer, request)
        except PduError as exc:
            self._on_fault("malformed", slave.unit, f"{what}: {exc}", answer)
            raise DriverError(f"{what}: {exc}") from None

    # -- sink ------------------------------------------------------------------------------------

    def _deliver(self, item: Item) -> None:
        try:
            self.emit(item)
        except Exception:  # a failing sink must not stop the bus
            log.exception("%s: sink failed on %s", self.device_id, type(item).__name__)

    def _event(self, kind: EventKind, detail: str, raw: bytes = b"", ts: int | None = None) -> None:
        self._deliver(DeviceEvent(self.device_id, kind, detail, raw, time.time_ns() if ts is None else ts))

    def _bad(self, detail: str) -> None:
        log.warning("%s: %s", self.device_id, detail)
        self._event(EventKind.BAD_FRAME, detail)
