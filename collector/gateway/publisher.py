"""Publishing journaled records to the broker, and marking them delivered on PUBACK.

The publisher never holds a record that is not already in the journal. It walks the
journal's undelivered records in sequence order from a cursor, packs consecutive records
of one station into one message (newline-delimited JSON) when there is a backlog, and
keeps at most ``max_inflight`` unacknowledged messages on the wire. A PUBACK marks the
message's records delivered (in batched journal transactions); a refused PUBACK (MQTT 5
reason code >= 0x80) leaves them pending and they are sent again after a pause.

Within one process paho re-sends unacknowledged messages after a reconnect; across a
restart the journal replays whatever was never acknowledged. Either way a record may
reach the broker twice, never zero times, and the recorder's writes are idempotent.

End to end, recorders confirm on ``<prefix>/gateways/<id>/stored`` what InfluxDB holds.
The publisher subscribes there (a plain subscription in its persistent session, which the
broker keeps across its own restarts), marks those records settled, and sends again any
record the broker acknowledged but that stayed unconfirmed while later ones were
confirmed: the broker lost it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.config import MqttSettings
from collector.errors import JournalError
from collector.gateway.journal import Journal
from collector.mqtt import client as mqtt_client
from collector.mqtt import topics

log = logging.getLogger(__name__)

_FETCH = 2000  # journal rows read per query when walking the backlog


@dataclass
class PublisherStats:
    messages_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    refused: int = 0
    records_confirmed: int = 0
    records_dead_lettered: int = 0
    records_resent: int = 0
    probes: int = 0
    connects: int = 0
    disconnects: int = 0
    last_ack_latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Publisher:
    def __init__(
        self,
        journal: Journal,
        settings: MqttSettings,
        *,
        gateway_id: str,
        site: str,
        line: str,
        stations: list[str],
        status_extra: Callable[[], dict[str, Any]] | None = None,
        confirm_timeout: float = 30.0,
        on_command: Callable[[str, str, bytes], None] | None = None,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.gateway_id = gateway_id
        self.site = site
        self.line = line
        self.stations = stations
        self.stats = PublisherStats()
        self._status_extra = status_extra or (lambda: {})
        prefix = settings.topic_prefix
        self._record_topic = {s: topics.station_topic(prefix, site, line, s, "record") for s in stations}
        self._status_topic = {s: topics.station_topic(prefix, site, line, s, "status") for s in stations}
        self._gateway_topic = topics.gateway_status_topic(prefix, gateway_id)
        self._stored_topic = topics.stored_topic(prefix, gateway_id)
        self._on_command = on_command
        self._command_topic = {
            topics.station_topic(prefix, site, line, s, kind): s for s in stations for kind in topics.COMMAND_KINDS
        }
        self.confirm_timeout = confirm_timeout
        self._stored: list[tuple[int, int]] = []
        self._next_requeue = time.monotonic() + confirm_timeout
        self._cond = threading.Condition()
        self._inflight: dict[int, tuple[int, int, float]] = {}  # mid -> (first seq, last seq, sent at)
        self._acked: list[tuple[int, int]] = []
        self._early: dict[int, Any] = {}  # PUBACKs that arrived before their mid was registered
        self._status_mids: set[int] = set()
        self._cursor = 0
        self._rewound = False
        self._connected = False
        self._stopping = False
        self._retry_at = 0.0
        self._thread: threading.Thread | None = None
        client_id = settings.client_id or f"gateway-{gateway_id}"
        self.client, self._props = mqtt_client.make_client(settings, client_id)
        self.client.will_set(self._gateway_topic, self._status_payload("offline", lost=True), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_stored

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        mqtt_client.connect_async(self.client, self.settings, self._props)
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.gateway_id}", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Wait up to ``drain_timeout`` for in-flight acks, say offline, disconnect."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            while self._inflight and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        self._flush_acks()
        if self._connected:
            infos = [self._publish_status("offline")]
            for info in infos:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()

    def notify(self) -> None:
        """New records are in the journal."""
        with self._cond:
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        return self._connected

    def inflight(self) -> int:
        with self._cond:
            return len(self._inflight)

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if mqtt_client.reason_failed(reason):
            log.error("broker %s:%s refused the connection: %s", self.settings.host, self.settings.port, reason)
            return
        self.stats.connects += 1
        log.info(
            "connected to broker %s:%s (session present: %s)",
            self.settings.host,
            self.settings.port,
            bool(getattr(flags, "session_present", False)),
        )
        client.subscribe([(self._stored_topic, 1), *((t, 1) for t in self._command_topic)])
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self._publish_status("online")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and not self._stopping:
            self.stats.disconnects += 1
            log.warning("lost the broker connection (%s); records stay in the journal", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            span = self._inflight.pop(mid, None)
            if span is None:
                if mid not in self._status_mids:
                    self._early[mid] = reason
                self._status_mids.discard(mid)
                return
        self._settle(mid, span, reason)

    def _settle(self, mid: int, span: tuple[int, int, float], reason: Any) -> None:
        with self._cond:
            first, last, sent = span
            if mqtt_client.reason_failed(reason):
                self.stats.refused += last - first + 1
                # back off, then walk the journal again from the oldest undelivered record
                self._retry_at = time.monotonic() + 5.0
                self._rewind()
                log.error("broker refused records %d..%d: %s; will retry", first, last, reason)
            else:
                self._acked.append((first, last))
                self.stats.records_acked += last - first + 1
                self.stats.last_ack_latency_ms = (time.monotonic() - sent) * 1000
            self._cond.notify_all()

    def _on_stored(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        station = self._command_topic.get(message.topic)
        if station is not None:
            if self._on_command is not None:
                self._on_command(station, message.topic, bytes(message.payload))
            return
        try:
            body = json.loads(message.payload)
            stored = [(int(a), int(b)) for a, b in body.get("stored", [])]
            dead = [(int(a), int(b)) for a, b in body.get("dead_lettered", [])]
        except (ValueError, TypeError, AttributeError):
            log.warning("ignored a malformed confirmation on %s: %r", message.topic, message.payload[:200])
            return
        if dead:
            n = sum(b - a + 1 for a, b in dead)
            self.stats.records_dead_lettered += n
            log.error(
                "recorder %s dead-lettered %d record(s) of this gateway (%s): see its dead-letter file",
                body.get("recorder"),
                n,
                ", ".join(f"{a}..{b}" for a, b in dead[:5]),
            )
        with self._cond:
            self._stored.extend(stored + dead)
            self._cond.notify_all()

    # -- the publishing thread -------------------------------------------------------------
    def _run(self) -> None:
        last_flush = time.monotonic()
        backlog: list[tuple[int, str, str]] = []  # read ahead from the journal, after the cursor
        while True:
            with self._cond:
                while not self._stopping and not (
                    self._connected
                    and len(self._inflight) < self.settings.max_inflight
                    and time.monotonic() >= self._retry_at
                ):
                    self._cond.wait(0.2)
                    if self._flush_due(last_flush):
                        break
                if self._stopping:
                    return
                if self._rewound:
                    self._rewound = False
                    backlog = []
                cursor = self._cursor
                can_send = self._connected and len(self._inflight) < self.settings.max_inflight
            if self._flush_due(last_flush) or len(self._acked) > 64:
                self._flush_acks()
                last_flush = time.monotonic()
                continue  # the flush may have rewound the cursor
            if not can_send:
                continue
            backlog = [row for row in backlog if row[0] > cursor]
            if not backlog:
                try:
                    backlog = self.journal.pending(cursor, _FETCH)
                except JournalError as exc:
                    log.error("%s", exc)
                    time.sleep(1)
                    continue
            if not backlog:
                with self._cond:
                    if self._cursor == cursor and not self._stopping and not self._rewound:
                        self._cond.wait(0.05 if (self._acked or self._stored) else 0.5)
                continue
            batch, backlog = self._take_batch(backlog)
            self._send(batch)

    def _flush_due(self, last_flush: float) -> bool:
        now = time.monotonic()
        return now - last_flush > 0.05 and bool(self._acked or self._stored or now >= self._next_requeue)

    def _rewind(self) -> None:
        """Walk the journal again from its oldest undelivered record (call holding the lock)."""
        self._cursor = 0
        self._rewound = True

    def _take_batch(
        self, rows: list[tuple[int, str, str]]
    ) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
        """Consecutive records of one station, within the message size and count limits."""
        station = rows[0][1]
        size = 0
        n = 0
        limit_n = self.settings.max_records_per_message
        limit_b = self.settings.max_message_bytes
        for _seq, st, payload in rows:
            if st != station or n >= limit_n or (n and size + len(payload) + 1 > limit_b):
                break
            size += len(payload) + 1
            n += 1
        return rows[:n], rows[n:]

    def _send(self, batch: list[tuple[int, str, str]]) -> None:
        first, last, station = batch[0][0], batch[-1][0], batch[0][1]
        body = "\n".join(p for _, _, p in batch).encode("utf-8")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/x-ndjson"
        sent_at = time.monotonic()
        # never call paho while holding our lock: paho calls on_publish holding its own
        info = self.client.publish(self._record_topic[station], body, qos=1, properties=props)
        with self._cond:
            self._cursor = last
            early = self._early.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = (first, last, sent_at)
        if early is not None:  # the PUBACK beat us to the bookkeeping
            self._settle(info.mid, (first, last, sent_at), early)
        self.stats.messages_sent += 1
        self.stats.records_sent += len(batch)

    def _flush_acks(self) -> None:
        with self._cond:
            acked, self._acked = self._acked, []
            stored, self._stored = self._stored, []
        try:
            if acked:
                self.journal.mark_delivered(acked)
            if stored:
                self.stats.records_confirmed += self.journal.mark_stored(stored)
        except JournalError as exc:
            # the records are sent again later; the recorder overwrites the identical points
            log.error("%s", exc)
        now = time.monotonic()
        if now >= self._next_requeue:
            self._next_requeue = now + max(0.2, self.confirm_timeout / 4)
            cutoff = time.time_ns() // 1000 - int(self.confirm_timeout * 1e6)
            try:
                resend, probes = self.journal.requeue_unconfirmed(cutoff)
            except JournalError as exc:
                log.error("%s", exc)
                return
            if resend:
                self.stats.records_resent += resend
                log.warning(
                    "%d record(s) acknowledged by the broker were never confirmed in the store "
                    "while later ones were (lost by the broker); sending them again",
                    resend,
                )
            if probes:
                self.stats.probes += probes
                log.debug("no confirmation for the newest records yet; probing with the last one")
            if resend or probes:
                with self._cond:
                    self._rewind()

    # -- status ------------------------------------------------------------------------------
    def _status_payload(self, state: str, *, lost: bool = False) -> bytes:
        seq, digest = self.journal.head
        body: dict[str, Any] = {
            "state": state,
            "gateway": self.gateway_id,
            "site": self.site,
            "line": self.line,
            "stations": self.stations,
            "at_us": time.time_ns() // 1000,
        }
        if not lost:
            body.update({"last_seq": seq, "last_hash": digest})
            body.update(self._status_extra())
        if lost:
            body["reason"] = "connection lost (last will)"
        return json.dumps(body, separators=(",", ":")).encode()

    def _publish_status(self, state: str) -> mqtt.MQTTMessageInfo:
        payload = self._status_payload(state)
        for station in self.stations:
            station_body = json.dumps({"state": state, "gateway": self.gateway_id, "station": station}).encode()
            self._track_other(self.client.publish(self._status_topic[station], station_body, qos=1, retain=True))
        return self._track_other(self.client.publish(self._gateway_topic, payload, qos=1, retain=True))

    def _track_other(self, info: mqtt.MQTTMessageInfo) -> mqtt.MQTTMessageInfo:
        """Remember a non-record message, so its PUBACK is not taken for an early record ack."""
        with self._cond:
            if self._early.pop(info.mid, None) is None:
                self._status_mids.add(info.mid)
        return info

    def publish_status(self) -> None:
        """Heartbeat: refresh the retained status (backlog, last sequence number)."""
        if self._connected:
            self._publish_status("online")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish something other than records (alerts): QoS 1, fire and forget."""
        self._track_other(self.client.publish(topic, payload, qos=1, retain=retain))
