"""The gateway daemon: devices -> station sessions -> journal -> broker.

Drivers deliver readings and device events from their own threads into one bounded queue.
A single processing thread drains it in batches: each reading goes through its station's
session (which binds and judges it), the resulting records are sealed into signed blocks in
one journal transaction per batch, and only then are alerts published and the publisher
woken. Batching is what keeps the cost per record low under load, while a lone reading is
still handled the moment it arrives.

Nothing here grows without a bound. A full queue makes a driver wait (``queue_timeout``),
then the reading is lost, counted and alarmed; a full journal loses readings the same way.
A stop (SIGTERM) journals what is queued within a few seconds and counts the rest as lost.

Why one module of this size: the processing thread owns the stations, the journal batch and
the drivers; what it can hand off lives in ``intake``, ``inbox``, ``views``, ``journal`` and
``publisher``. What remains is that one thread's loop and the daemon's life cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import clock
from collector.alarms import Throttle
from collector.chain.keys import Ed25519Signer, HmacSigner, Signer
from collector.config import Config, GatewaySettings
from collector.errors import CollectorError, ConfigError, JournalError, JournalFull
from collector.gateway.episodes import Episodes
from collector.gateway.inbox import Inbox, readings_in, weight
from collector.gateway.intake import Intake
from collector.gateway.journal import Damaged, Journal, Sealed
from collector.gateway.publisher import Publisher
from collector.gateway.views import ViewHub
from collector.inspection import commands as cmds
from collector.inspection.station import CommandError, CommandRefused, Outcome, Station
from collector.mqtt import topics
from collector.people.register import Actor
from drivers import registry
from drivers.base import DeviceEvent, Driver, DriverError, EventKind, Item, Reading

log = logging.getLogger(__name__)

_BATCH = 1000  # readings journaled per transaction at most
_STOP_TIMEOUT = 4.0  # seconds a stop may take: SIGTERM finishes well within systemd's patience
_ALARM_EVERY = 10.0  # seconds between two log lines about the same loss


@dataclass
class GatewayStats:
    received: int = 0  # readings handed over by drivers (queued or lost at the queue)
    readings: int = 0  # readings judged by the stations
    records: int = 0
    alerts: int = 0
    refused: int = 0
    unstable: int = 0  # readings the device marked unsettled (or repeated errors): not records
    lost: int = 0  # readings that could not be journaled (queue or journal full, stop): counted and alarmed
    lost_queue_full: int = 0  # of these, readings for which the queue had no room in time
    damaged: int = 0  # records in journal blocks that failed the gateway's own check
    device_events: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)  # records journaled, by kind

    @property
    def measurements(self) -> int:
        return self.by_kind["measurement"]


class Gateway:
    def __init__(self, config: Config, *, start_drivers: bool = True) -> None:
        if config.gateway is None:
            raise ConfigError(config._source, [("gateway", "section is required")])
        self.config = config
        gw = config.gateway
        self.settings = gw
        self.stats = GatewayStats()
        self.signer = make_signer(gw)
        self.journal = Journal(
            gw.journal,
            gw.id,
            signer=self.signer,
            budget_bytes=int(gw.journal_budget),
            alarm_ratio=gw.journal_alarm,
            max_block_records=gw.max_block_records,
            max_block_bytes=int(gw.max_block_bytes),
        )
        gauges = {g.id: g for g in config.gauges}
        self.stations: dict[str, Station] = {}
        self._station_of_device: dict[str, Station] = {}
        self.drivers: list[Driver] = []
        self._driver_of: dict[str, Driver] = {}
        plans = {p.part_number: p for p in config.plans}
        self.intake = Intake(self)  # the user register, sign-in sessions, who may do what
        self.episodes = Episodes()  # one alarm per rule episode, not one per point
        for st in config.stations:
            station = Station(
                st,
                plans,
                gauges,
                site=gw.site,
                line=gw.line,
                saved_state=self.journal.state(f"station:{st.id}"),
                calibration=gw.calibration,
                people=self.intake.rules,
            )
            self.stations[st.id] = station
            for dev in st.devices:
                self._station_of_device[dev.id] = station
                if start_drivers:
                    driver = registry.create(dev.driver_config)
                    self.drivers.append(driver)
                    self._driver_of[dev.id] = driver
        prefix = config.mqtt.topic_prefix
        self._alert_topic = {s: topics.station_topic(prefix, gw.site, gw.line, s, "alert") for s in self.stations}
        self.publisher = Publisher(
            self.journal,
            config.mqtt,
            gateway_id=gw.id,
            site=gw.site,
            line=gw.line,
            stations=list(self.stations),
            status_extra=self._status_extra,
            confirm_timeout=gw.confirm_timeout,
            checkpoint_interval=gw.checkpoint_interval,
            max_resends=gw.max_resends,
            on_command=self._mqtt_command,
            on_alarm=self._on_publisher_alarm,
        )
        self._asked: dict[str, tuple[Any, ...]] = {}  # device -> what it was last asked for
        self.views = ViewHub()
        self.operator_view: Any = None
        for sid, station in self.stations.items():
            self.views.update(sid, {**station.view(), "last": None, "message": ""})
        self._queue = Inbox(gw.queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._drain_until = float("inf")  # monotonic time after which a stopping gateway stops journaling
        self._stopped = threading.Event()
        self._clock = clock.SyncStatus()
        self._clock_was_synced: bool | None = None
        self._throttle = Throttle(_ALARM_EVERY)
        self._count_lock = threading.Lock()
        self._budget_alarm = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        seq, _ = self.journal.head
        log.info(
            "gateway %s starting: %d station(s), %d device(s), journal %s (last seq %d, %d unsent, "
            "%.0f of %.0f MB in use), %s",
            self.settings.id,
            len(self.stations),
            len(self.drivers),
            self.journal.path,
            seq,
            self.journal.backlog(),
            self.journal.used_bytes / 1e6,
            self.journal.budget_bytes / 1e6,
            "signing with key " + self.signer.key_id if self.signer is not None else "NOT SIGNING",
        )
        if self.signer is None:
            log.warning(
                "gateway %s signs nothing (no gateway.signing key file, no signing_key): recorders that "
                "require signatures refuse its blocks; make a key with `collector keygen`",
                self.settings.id,
            )
        if self.journal.start_damaged:
            self._damaged(self.journal.start_damaged)
        self._config_in_force()
        if self.settings.operator_view is not None:
            from collector.gateway.operator_view import OperatorView

            ov = self.settings.operator_view
            self.operator_view = OperatorView(self, ov.bind, ov.port, ov)
            self.operator_view.start()
        self.publisher.start()
        self._thread = threading.Thread(target=self._run, name=f"gateway-{self.settings.id}", daemon=True)
        self._thread.start()
        for driver in self.drivers:
            driver.start(self.submit)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop within ``timeout`` seconds: devices first, then journal what is queued, then publish.

        Readings still queued when the time for journaling is up are counted as lost (and
        said so); everything journaled stays in the journal for the next start.
        """
        deadline = time.monotonic() + timeout
        if self.operator_view is not None:
            self.operator_view.stop()  # first: no command may wait on a processing thread that has ended
        self.intake.stop()
        for driver in self.drivers:
            try:
                driver.stop()
            except Exception as exc:  # a broken driver must not keep the others running
                log.error("device %s did not stop cleanly: %s", driver.device_id, exc)
        # journal what is queued while there is time, and leave a second for the broker
        self._drain_until = max(time.monotonic() + 0.2, deadline - 1.5)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - 1.0 - time.monotonic()))
        left = self._count_left()
        if left:
            with self._count_lock:  # drivers' threads count losses too
                self.stats.lost += left
            log.error(
                "gateway %s stopping: %d queued reading(s) not journaled in time, counted as lost",
                self.settings.id,
                left,
            )
        self.publisher.stop(drain_timeout=max(0.1, deadline - 0.5 - time.monotonic()))
        if self._thread is not None and self._thread.is_alive():
            log.error("gateway %s: the processing thread did not finish; the journal is left open", self.settings.id)
        else:
            self.journal.close()
        self._stopped.set()
        log.info(
            "gateway %s stopped: %d reading(s) received, %d judged, %d lost",
            self.settings.id,
            self.stats.received,
            self.stats.readings,
            self.stats.lost,
        )

    def _count_left(self) -> int:
        """Take what is still queued; the readings among it are lost (commands are refused)."""
        readings = 0
        while True:
            items = self._queue.take(10_000)
            if not items:
                return readings
            for item in items:
                readings += readings_in(item)
                if isinstance(item, _Call) and not item.done.is_set():
                    item.finish(error=CommandError("the gateway is stopping"))

    def submit(self, item: Item) -> None:
        """The drivers' sink: thread-safe; waits up to ``queue_timeout`` for room in the queue.

        Past that the reading is lost: counted and alarmed (one log line per burst).
        """
        n = readings_in(item)
        with self._count_lock:
            self.stats.received += n
        try:
            self._queue.put(item, timeout=self.settings.queue_timeout)
        except queue.Full:
            with self._count_lock:  # drivers' threads count losses too
                self.stats.lost += n
                self.stats.lost_queue_full += n
            self._throttle.log(
                log,
                logging.ERROR,
                "queue",
                "the gateway's reading queue is full (%d readings): %d reading(s) lost so far",
                self.settings.queue_size,
                self.stats.lost_queue_full,
            )

    # -- commands (operator view, MQTT command topics, tests) ----------------------------------
    COMMANDS = tuple(cmds.COMMANDS)

    def command(
        self,
        station_id: str,
        request: cmds.Request,
        actor: Actor | None = None,
        timeout: float = 10.0,
        *,
        channel: str = "local",
    ) -> Outcome:
        """Carry out a command (parsed, its actor authenticated and authorised: see intake.py)
        on a station; returns once its records are journaled.

        Raises :class:`CommandError` (or :class:`ScanError`) when the command cannot be done
        (:class:`CommandRefused` when it is refused: the refusal is on record), and
        :class:`JournalError` when its records could not be stored.
        """
        call = self.command_async(station_id, request.name, request, actor, channel=channel)
        if not call.done.wait(timeout):
            raise CommandError(f"station {station_id}: {request.name} timed out")
        if call.error is not None:
            raise call.error
        assert call.outcome is not None
        return call.outcome

    def command_async(
        self,
        station_id: str,
        name: str,
        request: cmds.Request | None,
        actor: Actor | None,
        on_done: Callable[[_Call], None] | None = None,
        *,
        channel: str = "local",
        args: dict[str, Any] | None = None,
    ) -> _Call:
        if station_id not in self.stations:
            raise CommandError(f"no station {station_id!r} on gateway {self.settings.id}")
        if request is None and name != "refused":
            raise CommandError(f"unknown command {name!r} (known: {', '.join(self.COMMANDS)})")
        if self._stopping.is_set():
            raise CommandError("the gateway is stopping")
        call = _Call(station_id, name, dict(args or {}), on_done, request=request, actor=actor, channel=channel)
        try:
            self._queue.put(call, timeout=5.0)
        except queue.Full:
            raise CommandError("the gateway is overloaded: try again") from None
        return call

    def _config_in_force(self) -> None:
        """An audit record per station whenever the configuration it runs under changes."""
        source = Path(self.config._source)
        digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else "(not from a file)"
        drafts = []
        for sid, station in self.stations.items():
            plans = {p.part_number: p.revision for p in station.plans.values()}
            gauges = {
                d.gauge: str(g.calibration_due)
                for d in station.settings.devices
                if d.gauge and (g := self.config.gauge(d.gauge)) is not None
            }
            in_force: dict[str, Any] = {"config_sha256": digest, "plans": plans, "gauges": gauges}
            if self.settings.people is not None:  # who could sign, with which qualifications
                register = Path(self.settings.people.register_file)
                in_force["register_sha256"] = hashlib.sha256(register.read_bytes()).hexdigest()
            summary = json.dumps(in_force, sort_keys=True)
            if self.journal.state(f"config:{sid}") == summary:
                continue
            drafts.append(station._audit("config_loaded", "system", str(source), summary))
            self.journal.append([drafts[-1]], {f"config:{sid}": summary}, synced=self._clock.synchronised())
        if drafts:
            self.stats.records += len(drafts)
            self.stats.by_kind["audit"] += len(drafts)
            log.info("configuration %s (sha256 %s…) recorded as in force", source, digest[:12])

    def _mqtt_command(self, station: str, topic: str, payload: bytes) -> None:
        """A message on a station's command or acknowledgement topic (see intake.py)."""
        self.intake.from_mqtt(station, topic, payload)

    def scan(self, station_id: str, code: str) -> Outcome:
        """A code scanned at the station (as a scanner device's), for in-process callers."""
        return self.command(station_id, cmds.parse_request({"command": "scan", "args": {"code": code}}))

    # -- processing ----------------------------------------------------------------------
    def _run(self) -> None:
        next_status = time.monotonic() + self.settings.status_interval
        next_tick = time.monotonic() + 1.0
        next_prune = time.monotonic() + 60
        while True:
            stopping = self._stopping.is_set()
            if stopping and (self._queue.empty() or time.monotonic() >= self._drain_until):
                return  # what is left is counted as lost by stop()
            timeout = 0.05 if stopping else max(0.0, min(next_status, next_tick) - time.monotonic())
            items: list[Any] = []
            with contextlib.suppress(queue.Empty):
                first = self._queue.get(timeout=min(timeout, 0.5))
                items = [first, *self._queue.take(_BATCH - weight(first))]
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 1.0
                items.extend(_Call(sid, "check_idle", {}, None) for sid in self.stations)
            flat: list[Any] = []
            for i in items:
                if isinstance(i, tuple):
                    flat.extend(i)  # one poll cycle's readings
                else:
                    flat.append(i)
            try:
                self._process(flat)
            except Exception:
                # a bug, not an expected fault: say so loudly, count what was in hand, keep going
                with self._count_lock:  # drivers' threads count losses too
                    self.stats.lost += sum(isinstance(i, Reading) for i in flat)
                log.exception("internal error while processing %d item(s); they are counted as lost", len(items))
                for call in items:
                    if isinstance(call, _Call) and not call.done.is_set():
                        call.finish(error=CommandError("internal error, see the gateway's log"))
            if now >= next_status:
                next_status = now + self.settings.status_interval
                self._heartbeat()
            if now >= next_prune:
                next_prune = now + 3600
                self._prune()

    def _process(self, items: list[Any]) -> None:  # noqa: C901 - the hot path: one loop over a batch and one journal append, no call per branch
        drafts: list[dict[str, Any]] = []
        outcomes: list[tuple[Station, Outcome]] = []
        calls: list[_Call] = []
        before: dict[str, str] = {}
        readings = 0
        for item in items:
            if isinstance(item, DeviceEvent):
                self._device_event(item)
                continue
            if isinstance(item, _Call):
                station = self.stations[item.station]
                if station.id not in before:  # (not setdefault: state() is not free)
                    before[station.id] = station.state()
                try:
                    out = self._run_command(station, item)
                except CollectorError as exc:
                    item.finish(error=exc)
                    continue
                except KeyError as exc:
                    item.finish(error=CommandError(f"{item.name}: missing argument {exc.args[0]!r}"))
                    continue
                except (TypeError, ValueError) as exc:
                    item.finish(error=CommandError(f"{item.name}: bad arguments: {exc}"))
                    continue
                item.outcome = out
                calls.append(item)
            elif isinstance(item, Reading):
                self.stats.readings += 1
                found = self._station_of_device.get(item.device)
                if found is None:
                    self.stats.refused += 1
                    log.warning("reading from unknown device %s ignored", item.device)
                    continue
                station = found
                if station.id not in before:  # (not setdefault: state() is not free)
                    before[station.id] = station.state()
                out = self._reading(station, item)
                if out.drafts:
                    readings += 1
            else:
                continue
            drafts.extend(out.drafts)
            outcomes.append((station, out))
        if not before:
            return
        state = {f"station:{sid}": self.stations[sid].state() for sid in before}
        try:
            sealed = self.journal.append(drafts, state, synced=self._clock.synchronised())
        except JournalError as exc:
            # the stations go back to where they were: the lost readings' slots are not skipped
            for sid, saved in before.items():
                self.stations[sid]._restore(saved)
            with self._count_lock:  # drivers' threads count losses too
                self.stats.lost += readings
            self._alarm(exc)
            for call in calls:
                call.finish(error=exc)
            return
        for call in calls:
            call.finish()
        self._refresh_views(outcomes)
        self._ask_devices({station.id: station for station, _ in outcomes})
        if sealed:
            for s in sealed:
                self.stats.records += len(s.block.records)
                self.stats.by_kind.update(r["kind"] for r in s.block.records)
            self._after(sealed, outcomes)
            self.publisher.notify()

    def _ask_devices(self, stations: dict[str, Station]) -> None:
        """Ask an on-demand device for a reading when its characteristic has become the next one."""
        for station in stations.values():
            if station.awaiting_label or not station.sampled:
                continue
            nxt = station.next_characteristic
            key: tuple[Any, ...] = (station.number, nxt, station.context.get("serial"))
            for dev in station.settings.devices:
                if not dev.ask_when_next or nxt not in dev.characteristics:
                    continue
                # with min_load: no load yet, or not stable, so ask again once a second (the
                # tick) until a part is on it; only a stable value above min_load is judged
                want = key if dev.min_load is None else (*key, int(time.monotonic()))
                if self._asked.get(dev.id) == want:
                    continue
                driver = self._driver_of.get(dev.id)
                if driver is None:
                    continue
                self._asked[dev.id] = want
                try:
                    driver.request("read")
                except (DriverError, OSError) as exc:
                    self._asked.pop(dev.id, None)  # ask again with the next batch
                    log.debug("could not ask %s for a reading: %s", dev.id, exc)

    def _refresh_views(self, outcomes: list[tuple[Station, Outcome]]) -> None:
        """Fresh snapshots for the live views of every station this batch touched."""
        latest: dict[str, tuple[Station, Outcome]] = {}
        for station, out in outcomes:
            if out.drafts or out.message or out.refusal is not None:
                latest[station.id] = (station, out)
            if out.drafts:  # every value of the batch for the trend charts, not only the last shown
                self.views.remember(station.id, [d for d in out.drafts if d["kind"] == "measurement"])
        for sid, (station, out) in latest.items():
            view = station.view()
            measured = [d for d in out.drafts if d["kind"] == "measurement"]
            parts = [d for d in out.drafts if d["kind"] == "part"]
            # a new part's label: its screen starts blank (no last value, no verdict of the part before)
            blank = bool(view.get("serial")) and view.get("serial") != self.views.field(sid, "serial")
            blank = blank and not measured and not parts
            view["last"] = (
                {
                    k: measured[-1].get(k)
                    for k in (
                        "characteristic",
                        "characteristic_name",
                        "judged_value",
                        "unit",
                        "verdict",
                        "limit",
                        "lsl",
                        "usl",
                        "nominal",
                        "id",
                    )
                }
                if measured
                else None
                if blank
                else self.views.field(sid, "last")
            )
            view["part_verdict"] = (
                {k: parts[-1].get(k) for k in ("serial", "verdict", "failed", "missing", "released_by", "id")}
                if parts
                else None
                if blank
                else self.views.field(sid, "part_verdict")
            )
            view["message"] = out.message
            view["refused"] = (
                out.refusal.reason
                if out.refusal is not None
                and out.refusal.reason_code
                not in (
                    "unstable",
                    "repeated",
                )
                else None
            )
            self.views.update(sid, view)

    def _run_command(self, station: Station, call: _Call) -> Outcome:
        if call.name == "check_idle":
            return station.check_idle()
        if call.name == "refused":  # the record of a command refused before it came here
            a = call.args
            return station.refused_command(str(a["command"]), a.get("by"), str(a["reason"]))
        if call.request is None:
            raise CommandError(f"unknown command {call.name!r}")
        try:
            return self._carry_out(station, call.request.command, call.actor, call.channel)
        except CommandRefused as exc:
            if exc.kind not in ("forbidden", "unauthenticated", "not_found"):
                raise
            # acting on another's record, or for someone no longer signed in: on record
            call.refusal = exc
            self.intake.refused[exc.kind] += 1
            log.warning("station %s: %s refused: %s", station.id, call.name, exc)
            left_out = self.intake.budget.take()
            if left_out is None:
                raise
            by = call.actor.user if call.actor is not None else None
            reason = str(exc) + (f" ({left_out} earlier refusal(s) were counted, not recorded)" if left_out else "")
            return station.refused_command(call.name, by, reason)

    def _carry_out(self, station: Station, cmd: cmds.Command, actor: Actor | None, channel: str) -> Outcome:
        signature = actor.signature if actor is not None else None
        by = actor.user if actor is not None else station.context.get("operator")
        ended = actor is not None and actor.method == "session" and station.context.get("operator") != actor.user
        if isinstance(cmd, cmds.Scan):  # from a page whose sign-in has ended: a badge still starts one
            trusted = (actor is not None and not ended) or channel == "local" or self.intake.register is None
            return station.scan(cmd.code, trusted=trusted)
        if ended:
            assert actor is not None
            raise CommandRefused(
                f"station {station.id}: the sign-in of {actor.user} has ended: sign in again", "unauthenticated"
            )
        if actor is None and not type(cmd).without_register:
            raise CommandRefused(f"{cmd.command} needs someone authenticated", "unauthenticated")
        if isinstance(cmd, cmds.SignIn):
            assert actor is not None
            return station.sign_in(actor.user, signature)
        if isinstance(cmd, cmds.SignOut):
            return station.sign_out(by, signature=signature)
        if isinstance(cmd, cmds.Patrol):
            return station.patrol(by, signature)
        if isinstance(cmd, cmds.Abandon):
            return station.abandon(by, cmd.reason, signature)
        assert signature is not None  # the rest need someone authenticated (see above)
        if isinstance(cmd, cmds.Remeasure):
            return station.remeasure(cmd.characteristic, cmd.reason, by, signature)
        if isinstance(cmd, cmds.Release):
            return station.release(signature)
        if isinstance(cmd, cmds.Invalidate):
            target = station.own(self.journal.find(cmd.record_id), cmd.record_id)
            return station.invalidate(target, cmd.reason, signature)
        if isinstance(cmd, cmds.Dispose):
            nc = station.own(self.journal.find(cmd.nonconformance_id), cmd.nonconformance_id)
            return station.dispose(nc, cmd.decision, signature, cmd.concession, cmd.comment)
        if isinstance(cmd, cmds.AndonOff):
            return station.andon_off(by, signature)
        if isinstance(cmd, cmds.AckAlert):
            target = station.own(self.journal.find(cmd.record_id), cmd.record_id)
            return station.ack_alert(target, signature, cmd.comment, cmd.cause, cmd.action)
        raise CommandError(f"unknown command {cmd.command!r}")

    def _reading(self, station: Station, reading: Reading) -> Outcome:
        if reading.text is not None and reading.value is None:
            device = station.settings.devices
            serial_channel = next((d.serial_channel for d in device if d.id == reading.device), None)
            if reading.channel != serial_channel:
                return self._label(station, reading)
        out = station.handle(reading)
        if out.refusal is not None:
            r = out.refusal
            if r.reason_code in ("unstable", "repeated", "not_sampled", "no_load"):  # no reading of a part
                self.stats.unstable += 1
            else:
                self.stats.refused += 1
                log.warning("station %s refused a reading from %s: %s", r.station, r.device, r.reason)
        return out

    def _label(self, station: Station, reading: Reading) -> Outcome:
        """A scanned code: the part context (or the operator) changes; the code is not a value."""
        driver = self._driver_of.get(reading.device)
        try:
            fields = driver.label_fields(reading) if driver is not None else None
            out = station.apply_label(fields) if fields else station.scan(reading.text or "")
        except CollectorError as exc:
            self.stats.refused += 1
            log.warning("%s (scanned on %s)", exc, reading.device)
            return Outcome()
        log.info("station %s: %s", station.id, out.message)
        return out

    def _after(self, sealed: list[Sealed], outcomes: list[tuple[Station, Outcome]]) -> None:
        """Alerts and the andon, once the records they are about are durable."""
        trends: dict[str, list[int]] = {}
        alerts: dict[str, tuple[str, str, str]] = {}  # the station's own (a refused sign-in)
        for _, out in outcomes:
            trends.update(out.trends)
            alerts.update(out.alerts)
        for item in sealed:
            for i, r in enumerate(item.block.records):
                if r["id"] in alerts:
                    self._alert((item, i), *alerts[r["id"]])
                self._alerts_for(item, i, r, trends)
        for station, out in outcomes:
            if out.andon is not None and station.settings.andon is not None:
                self._andon(station, out.andon)

    def _alerts_for(self, sealed: Sealed, index: int, r: dict[str, Any], trends: dict[str, list[int]]) -> None:
        at = (sealed, index)
        kind = r["kind"]
        if kind == "measurement":
            key = (sealed.block.station, str(r["characteristic"]))
            failed = r["verdict"] == "fail"
            episode = self.episodes.step((*key, "out_of_tolerance"), failed, r["id"])
            if failed:
                self._alert(
                    at,
                    "out_of_tolerance",
                    "critical" if r["criticality"] == "critical" else "warning",
                    f"{r['characteristic']} = {r['judged_value']} {r['unit']} beyond the {r['limit']} limit",
                    episode=episode,
                )
            elif episode is not None:
                self._alert(
                    at,
                    "out_of_tolerance",
                    "info",
                    f"{r['characteristic']} = {r['judged_value']} {r['unit']}: within tolerance again",
                    episode=episode,
                )
            if r.get("calibration_status") == "overdue":
                self._alert(
                    at,
                    "calibration",
                    "warning",
                    f"gauge {r['gauge']} is overdue for calibration (due {r['gauge_calibration_due']})",
                )
            if r.get("supersedes"):
                return  # a re-measure is not a point of the control chart
            rules = trends.get(r["id"])
            episode = self.episodes.step((*key, "trend"), bool(rules), r["id"])
            if episode is None:
                return
            station = self.stations.get(sealed.block.station)
            basis = station.spc_basis(str(r["characteristic"])) if station is not None else None
            text = (
                f"{r['characteristic']}: SPC rule(s) {', '.join(map(str, rules))} tripped"
                if rules
                else f"{r['characteristic']}: no rule broken any more, the run has ended"
            )
            if basis is not None and basis[1]:
                text += f" (provisional limits from {basis[0]} values)"
            self._alert(at, "trend", "warning" if rules else "info", text, rules, episode=episode, basis=basis)
        elif kind == "refusal":
            self._alert(at, "refused", "warning", f"reading refused: {r['reason']}")

    def _alert(
        self,
        at: tuple[Sealed, int],
        kind: str,
        severity: str,
        message: str,
        rules: list[int] | None = None,
        *,
        episode: tuple[str, str] | None = None,
        basis: tuple[int, bool] | None = None,
    ) -> None:
        sealed, index = at
        block = sealed.block
        r = block.records[index]
        self.stats.alerts += 1
        alert = {
            "schema_version": 1,
            "kind": kind,
            "severity": severity,
            "record_id": r["id"],
            "gateway": block.gateway,
            "seq": block.first_seq + index,
            "site": block.site,
            "line": block.line,
            "station": block.station,
            "part_number": r.get("part_number"),
            "serial": r.get("serial"),
            "characteristic": r.get("characteristic"),
            "judged_value": r.get("judged_value"),
            "lsl": r.get("lsl"),
            "usl": r.get("usl"),
            "unit": r.get("unit"),
            "limit": r.get("limit"),
            "rules": rules or [],
            "message": message,
            "at": sealed.recorded_at(index),
            # without an episode, each alert is its own (as before episodes)
            "episode": episode[0] if episode is not None else r["id"],
            "state": episode[1] if episode is not None else "opened",
            "baseline_n": basis[0] if basis is not None else None,
            "baseline_short": bool(basis[1]) if basis is not None else False,
        }
        # retained: a supervisor's screen that connects later still sees each station's latest alert
        self.publisher.publish(self._alert_topic[block.station], json.dumps(alert).encode(), retain=True)

    def _andon(self, station: Station, on: bool) -> None:
        andon = station.settings.andon
        assert andon is not None
        driver = self._driver_of.get(andon.device)
        if driver is None:
            return
        try:
            driver.request("write", point=andon.point, value=andon.on if on else andon.off)
        except (DriverError, OSError, ValueError) as exc:
            log.error("station %s: could not switch the andon %s: %s", station.id, "on" if on else "off", exc)
            return
        log.info("station %s: andon %s", station.id, "on" if on else "off")

    def _device_event(self, event: DeviceEvent) -> None:
        self.stats.device_events[f"{event.device}:{event.kind.value}"] += 1
        if event.kind is EventKind.BAD_FRAME:
            log.warning("device %s sent a bad frame (%s): %r", event.device, event.detail, event.raw[:80])
        elif event.kind is EventKind.DISCONNECTED:
            log.warning("device %s disconnected: %s", event.device, event.detail)
        elif event.kind is EventKind.CONNECTED:
            log.info("device %s connected: %s", event.device, event.detail)
        else:
            log.warning("device %s: %s %s", event.device, event.kind.value, event.detail)

    def _alarm(self, exc: JournalError) -> None:
        # one line per burst of the same fault; the count says the rest
        key = "journal-full" if isinstance(exc, JournalFull) else "journal"
        self._throttle.log(log, logging.ERROR, key, "%s; %d reading(s) lost so far", exc, self.stats.lost)
        self.publisher.publish_status()

    def _damaged(self, damaged: list[Damaged]) -> None:
        self.stats.damaged += sum(d.last_seq - d.first_seq + 1 for d in damaged)
        for d in damaged[:5]:
            log.error(
                "journal block seq %d..%d failed the gateway's own check at start (%s): it is not published; "
                "the journal file was edited or is damaged",
                d.first_seq,
                d.last_seq,
                d.reason,
            )

    def _on_publisher_alarm(self) -> None:
        self.publisher.publish_status()

    def _heartbeat(self) -> None:
        synced = self._clock.synchronised()
        if synced != self._clock_was_synced:  # one line per change, not one per heartbeat
            if synced:
                log.info("system clock is synchronised again")
            else:
                log.warning("system clock is not synchronised: records are marked clock_synced=false")
            self._clock_was_synced = synced
        journal = self.journal
        if journal.budget_alarm != self._budget_alarm:
            self._budget_alarm = journal.budget_alarm
            if journal.budget_alarm:
                log.error(
                    "journal %s holds %.0f of its %.0f MB budget in records no recorder has confirmed yet; "
                    "at the budget new readings are lost (is the broker or are the recorders away?)",
                    journal.path,
                    journal.used_bytes / 1e6,
                    journal.budget_bytes / 1e6,
                )
            else:
                log.info("journal %s is below its budget's alarm level again", journal.path)
        self.publisher.publish_status()

    def _prune(self) -> None:
        days = self.settings.keep_delivered_days
        if days <= 0:
            return
        cutoff = time.time_ns() // 1000 - int(days * 86400e6)
        try:
            removed = self.journal.prune(cutoff)
        except JournalError as exc:
            log.error("%s", exc)
            return
        if removed:
            log.info("removed %d settled record(s) older than %g days from the journal", removed, days)

    def _status_extra(self) -> dict[str, Any]:
        journal = self.journal
        return {
            "backlog": journal.backlog(),
            "unconfirmed": journal.unconfirmed(),
            "refused": journal.refused(),
            "damaged": journal.damaged(),
            "readings": self.stats.readings,
            "records": self.stats.records,
            "refused_readings": self.stats.refused,
            "lost": self.stats.lost,
            "journal_bytes": journal.used_bytes,
            "journal_budget": journal.budget_bytes,
            "journal_alarm": journal.budget_alarm,
            "clock_synced": self._clock.synchronised(),
            "key_id": None if self.signer is None else self.signer.key_id,
        }

    def wait(self) -> None:
        self._stopped.wait()


def make_signer(settings: GatewaySettings) -> Signer | None:
    """The gateway's signer: its Ed25519 key file, else its HMAC secret, else none."""
    if settings.signing is not None:
        return Ed25519Signer.from_file(settings.signing.key_file)
    if settings.signing_key is not None:
        return HmacSigner(settings.signing_key.get_secret_value().encode("utf-8"))
    return None


@dataclass
class _Call:
    """A command for the processing thread, which alone touches the stations' state."""

    station: str
    name: str
    args: dict[str, Any]
    on_done: Callable[[_Call], None] | None
    outcome: Outcome | None = None
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)
    request: cmds.Request | None = None
    actor: Actor | None = None  # who gives it (None: nobody authenticated, where allowed)
    channel: str = "local"  # operator view, command topic, acknowledgement topic, local
    refusal: CommandRefused | None = None  # refused: its outcome is the record of the refusal

    def finish(self, error: Exception | None = None) -> None:
        if error is None and self.refusal is not None:
            error = self.refusal
        elif error is None and self.outcome is not None and self.outcome.refused:
            error = CommandRefused(self.outcome.refused, "forbidden")
        self.error = error
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception as exc:  # a reply that cannot be sent must not stop the gateway
                log.error("command %s on %s: could not report the result: %s", self.name, self.station, exc)
