"""The gateway daemon: devices -> station sessions -> journal -> broker.

Drivers deliver readings and device events from their own threads into one queue. A
single processing thread drains it in batches: each reading goes through its station's
session (which binds and judges it), every resulting record is sealed into the journal in
one transaction per batch, and only then are alerts published and the publisher woken.
Batching is what keeps the cost per record low under load, while a lone reading is still
handled the moment it arrives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from collector import clock
from collector import mqtt as topics
from collector.config import Config
from collector.errors import ConfigError, JournalError, JournalFull
from collector.journal import Journal, Sealed
from collector.publisher import Publisher
from collector.session import Refusal, ScanError, Station
from drivers import registry
from drivers.base import DeviceEvent, Driver, EventKind, Reading

log = logging.getLogger(__name__)

_BATCH = 1000  # readings journaled per transaction at most


@dataclass
class GatewayStats:
    readings: int = 0
    records: int = 0
    alerts: int = 0
    refused: int = 0
    lost: int = 0  # readings that could not be journaled (disk full): counted and alarmed
    device_events: Counter[str] = field(default_factory=Counter)


class Gateway:
    def __init__(self, config: Config, *, start_drivers: bool = True) -> None:
        if config.gateway is None:
            raise ConfigError(config._source, [("gateway", "section is required")])
        self.config = config
        gw = config.gateway
        self.settings = gw
        self.stats = GatewayStats()
        key = gw.signing_key.get_secret_value().encode() if gw.signing_key is not None else None
        self.journal = Journal(gw.journal, gw.id, signing_key=key)
        gauges = {g.id: g for g in config.gauges}
        self.stations: dict[str, Station] = {}
        self._station_of_device: dict[str, Station] = {}
        self.drivers: list[Driver] = []
        self._driver_of: dict[str, Driver] = {}
        for st in config.stations:
            plan = config.plan_for(st.plan)
            assert plan is not None  # checked when the configuration was validated
            station = Station(
                st, plan, gauges, site=gw.site, line=gw.line, saved_state=self.journal.state(f"station:{st.id}")
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
        )
        self._queue: queue.SimpleQueue[Reading | DeviceEvent | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._clock = clock.SyncStatus()
        self._clock_was_synced: bool | None = None
        self._last_full_alarm = 0.0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        seq, _ = self.journal.head
        log.info(
            "gateway %s starting: %d station(s), %d device(s), journal %s (last seq %d, %d undelivered)",
            self.settings.id,
            len(self.stations),
            len(self.drivers),
            self.journal.path,
            seq,
            self.journal.backlog(),
        )
        self.publisher.start()
        self._thread = threading.Thread(target=self._run, name=f"gateway-{self.settings.id}", daemon=True)
        self._thread.start()
        for driver in self.drivers:
            driver.start(self.submit)

    def stop(self) -> None:
        for driver in self.drivers:
            try:
                driver.stop()
            except Exception as exc:  # a broken driver must not keep the others running
                log.error("device %s did not stop cleanly: %s", driver.device_id, exc)
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(10)
        self.publisher.stop()
        self.journal.close()
        self._stopped.set()
        log.info("gateway %s stopped", self.settings.id)

    def submit(self, item: Reading | DeviceEvent) -> None:
        """The drivers' sink: thread-safe, never blocks a driver."""
        self._queue.put(item)

    def scan(self, station_id: str, code: str) -> dict[str, str]:
        """A scanned label for a station (the scanner driver and the operator view call this)."""
        done = threading.Event()
        result: dict[str, Any] = {}

        def apply() -> None:
            try:
                result["ok"] = self.stations[station_id].scan(code)
            except Exception as exc:
                result["error"] = exc
            done.set()

        self._queue.put(_Call(apply, station_id))  # type: ignore[arg-type]
        done.wait(5)
        if "error" in result:
            raise result["error"]
        return dict(result.get("ok", {}))

    # -- processing ----------------------------------------------------------------------
    def _run(self) -> None:
        next_status = time.monotonic() + self.settings.status_interval
        next_prune = time.monotonic() + 60
        while True:
            timeout = max(0.0, next_status - time.monotonic())
            items: list[Any] = []
            with contextlib.suppress(queue.Empty):
                items.append(self._queue.get(timeout=timeout))
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            try:
                self._process([i for i in items if i is not None])
            except Exception:
                # a bug, not an expected fault: say so loudly, count what was in hand, keep going
                self.stats.lost += sum(isinstance(i, Reading) for i in items)
                log.exception("internal error while processing %d item(s); they are counted as lost", len(items))
            now = time.monotonic()
            if now >= next_status:
                next_status = now + self.settings.status_interval
                self._heartbeat()
            if now >= next_prune:
                next_prune = now + 3600
                self._prune()
            if stop:
                return

    def _process(self, items: list[Any]) -> None:
        drafts: list[dict[str, Any]] = []
        touched: dict[str, Station] = {}
        before: dict[str, str] = {}
        for item in items:
            if isinstance(item, _Call):
                item.fn()
                touched[item.station] = self.stations[item.station]
            elif isinstance(item, Reading):
                self.stats.readings += 1
                station = self._station_of_device.get(item.device)
                if station is None:
                    self.stats.refused += 1
                    log.warning("reading from unknown device %s ignored", item.device)
                    continue
                if station.id not in before:
                    before[station.id] = station.state()
                if item.text is not None and item.value is None:
                    self._label(station, item)
                    touched[station.id] = station
                    continue
                result = station.accept(item)
                if isinstance(result, Refusal):
                    self.stats.refused += 1
                    log.warning(
                        "station %s refused a reading from %s: %s", result.station, result.device, result.reason
                    )
                    continue
                drafts.append(result)
                touched[station.id] = station
            elif isinstance(item, DeviceEvent):
                self._device_event(item)
        if not touched:
            return
        state = {f"station:{sid}": st.state() for sid, st in touched.items()}
        try:
            sealed = self.journal.append(drafts, state, synced=self._clock.synchronised())
        except JournalError as exc:
            # the stations go back to where they were: the lost readings' slots are not skipped
            for sid, saved in before.items():
                self.stations[sid]._restore(saved)
            self.stats.lost += len(drafts)
            self._alarm(exc, len(drafts))
            return
        if sealed:
            self.stats.records += len(sealed)
            self._alerts(sealed)
            self.publisher.notify()

    def _label(self, station: Station, reading: Reading) -> None:
        """A scanned code: the part context changes; the code itself is not a measurement."""
        text = reading.text or ""
        driver = self._driver_of.get(reading.device)
        try:
            fields = driver.label_fields(reading) if driver is not None else None
            found = station.apply_label(fields) if fields is not None else station.scan(text)
        except ScanError as exc:
            self.stats.refused += 1
            log.warning("%s (scanned on %s)", exc, reading.device)
            return
        log.info("station %s: %s", station.id, ", ".join(f"{k} {v}" for k, v in sorted(found.items())))

    def _alerts(self, sealed: list[Sealed]) -> None:
        for rec in sealed:
            r = rec.record
            if r["verdict"] != "fail":
                continue
            self.stats.alerts += 1
            alert = {
                "schema_version": 1,
                "kind": "out_of_tolerance",
                "severity": "critical" if r["criticality"] == "critical" else "warning",
                "record_id": r["id"],
                "gateway": r["gateway"],
                "seq": r["seq"],
                "site": r["site"],
                "line": r["line"],
                "station": r["station"],
                "part_number": r["part_number"],
                "serial": r["serial"],
                "characteristic": r["characteristic"],
                "judged_value": r["judged_value"],
                "lsl": r["lsl"],
                "usl": r["usl"],
                "unit": r["unit"],
                "limit": r["limit"],
                "at": r["recorded_at"],
            }
            self.publisher.publish(self._alert_topic[rec.station], json.dumps(alert).encode())

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

    def _alarm(self, exc: JournalError, n: int) -> None:
        now = time.monotonic()
        if isinstance(exc, JournalFull):
            if now - self._last_full_alarm > 10:  # one line per burst, the count says the rest
                self._last_full_alarm = now
                log.error("%s; %d reading(s) lost so far", exc, self.stats.lost)
        else:
            log.error("%s; %d reading(s) lost so far", exc, self.stats.lost)
        self.publisher.publish_status()

    def _heartbeat(self) -> None:
        synced = self._clock.synchronised()
        if synced != self._clock_was_synced:  # one line per change, not one per heartbeat
            if synced:
                log.info("system clock is synchronised again")
            else:
                log.warning("system clock is not synchronised: records are marked clock_synced=false")
            self._clock_was_synced = synced
        self.publisher.publish_status()

    def _prune(self) -> None:
        days = self.settings.keep_delivered_days
        if days <= 0:
            return
        cutoff = time.time_ns() // 1000 - int(days * 86400e6)
        removed = self.journal.prune(cutoff)
        if removed:
            log.info("removed %d delivered record(s) older than %g days from the journal", removed, days)

    def _status_extra(self) -> dict[str, Any]:
        return {
            "backlog": self.journal.backlog(),
            "unconfirmed": self.journal.unconfirmed(),
            "readings": self.stats.readings,
            "records": self.stats.records,
            "refused": self.stats.refused,
            "lost": self.stats.lost,
            "clock_synced": self._clock.synchronised(),
        }

    def wait(self) -> None:
        self._stopped.wait()


@dataclass(frozen=True)
class _Call:
    """Work for the processing thread, which alone touches the stations' state."""

    fn: Any
    station: str

