"""Publishing journaled blocks to the broker, and settling them on the recorders' answers.

The publisher never holds a block that is not already in the journal. It walks the
journal's unsent blocks in sequence order from a cursor (each checked by the journal
first: a row that no longer matches its hash, signature or chain link is never published,
and alarmed), packs consecutive blocks of one station into one message (one block per
line) when there is a backlog, and keeps at most ``max_inflight`` unacknowledged messages
on the wire. A PUBACK marks the message's blocks sent (in batched journal transactions); a
refused PUBACK (MQTT 5 reason code >= 0x80, e.g. the ACL) leaves them unsent and they are
sent again after a pause.

Within one process paho re-sends unacknowledged messages after a reconnect; across a
restart the journal replays whatever was never acknowledged. Either way a block may reach
the broker twice, never zero times; a recorder that already stored it confirms it again
and stores nothing twice.

End to end, recorders answer on ``<prefix>/gateways/<id>/stored``: which blocks InfluxDB
holds, and which they refused (never to be stored: the whole block is in the recorder's
dead-letter file, with the reason). The publisher subscribes there (a plain subscription
in its persistent session, which the broker keeps across its own restarts), marks blocks
stored or refused (a refusal is alarmed and the block is not sent again), and sends again
any block the broker acknowledged that stayed unanswered while later ones were answered:
the broker lost it.

It also publishes the gateway's signed checkpoint (retained, ``<prefix>/gateways/<id>/checkpoint``)
when it connects, every ``checkpoint_interval`` seconds and when it stops.

Why one module of this size: delivery, the recorders' answers and the checkpoint share one
MQTT session and one cursor over the journal; split, they would share that state across modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.alarms import Throttle
from collector.chain import checkpoints
from collector.config import MqttSettings
from collector.errors import JournalError
from collector.gateway.journal import Damaged, Journal, Pending
from collector.mqtt import client as mqtt_client
from collector.mqtt import topics

log = logging.getLogger(__name__)

_FETCH = 2000  # blocks read ahead per query when walking the backlog (and at most 256 KiB compressed)
_ALARM_EVERY = 10.0  # seconds between two log lines about the same kind of fault


@dataclass
class PublisherStats:
    messages_sent: int = 0
    blocks_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    refused: int = 0  # records whose message the broker refused (PUBACK >= 0x80); retried
    records_confirmed: int = 0
    records_refused: int = 0  # records in blocks a recorder refused: never stored, alarmed
    records_damaged: int = 0  # records in blocks that failed the gateway's own check
    records_unanswered: int = 0  # records sent max_resends times without an answer: not sent again
    records_resent: int = 0
    probes: int = 0
    checkpoints: int = 0
    connects: int = 0
    disconnects: int = 0
    last_ack_latency_ms: float = 0.0


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
        checkpoint_interval: float = 60.0,
        max_resends: int = 20,
        on_command: Callable[[str, str, bytes], None] | None = None,
        on_alarm: Callable[[], None] | None = None,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.gateway_id = gateway_id
        self.site = site
        self.line = line
        self.stations = stations
        self.stats = PublisherStats()
        self._status_extra = status_extra or (lambda: {})
        self._on_alarm = on_alarm or (lambda: None)
        prefix = settings.topic_prefix
        self._record_topic = {s: topics.station_topic(prefix, site, line, s, "record") for s in stations}
        self._status_topic = {s: topics.station_topic(prefix, site, line, s, "status") for s in stations}
        self._gateway_topic = topics.gateway_status_topic(prefix, gateway_id)
        self._stored_topic = topics.stored_topic(prefix, gateway_id)
        self._checkpoint_topic = topics.checkpoint_topic(prefix, gateway_id)
        self._on_command = on_command
        self._command_topic = {
            topics.station_topic(prefix, site, line, s, kind): s for s in stations for kind in topics.COMMAND_KINDS
        }
        self.confirm_timeout = confirm_timeout
        self.checkpoint_interval = checkpoint_interval
        self.max_resends = max_resends
        self._stored: list[tuple[int, int]] = []
        self._refused: list[tuple[int, int, str, str | None]] = []
        self._next_requeue = time.monotonic() + confirm_timeout
        self._next_checkpoint = time.monotonic() + checkpoint_interval
        self._cond = threading.Condition()
        self._inflight: dict[int, tuple[list[tuple[int, int]], int, float]] = {}  # mid -> (blocks, records, sent at)
        self._acked: list[tuple[int, int]] = []
        self._early: dict[int, Any] = {}  # PUBACKs that arrived before their mid was registered
        self._other_mids: set[int] = set()
        self._cursor = 0
        self._rewound = False
        self._connected = False
        self._stopping = False
        self._retry_at = 0.0
        self._thread: threading.Thread | None = None
        self._throttle = Throttle(_ALARM_EVERY)
        client_id = settings.client_id or f"gateway-{gateway_id}"
        self.client, self._props = mqtt_client.make_client(settings, client_id)
        self.link = mqtt_client.BrokerLink(f"{settings.host}:{settings.port}", log, settings.outage_reminder)
        self.client.will_set(self._gateway_topic, self._status_payload("offline", lost=True), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        mqtt_client.connect_async(self.client, self.settings, self._props)
        self._thread = threading.Thread(target=self._run, name=f"publisher-{self.gateway_id}", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout: float = 2.0) -> None:
        """Wait up to ``drain_timeout`` for in-flight acks, publish the checkpoint, say offline, disconnect."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            while self._inflight and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        self._flush_acks(requeue=False)
        if self._connected:
            infos = [self._publish_checkpoint(), self._publish_status("offline")]
            for info in infos:
                if info is not None:
                    with contextlib.suppress(RuntimeError, ValueError):
                        info.wait_for_publish(max(0.2, min(1.0, deadline + 1.0 - time.monotonic())))
        self.client.disconnect()
        self.client.loop_stop()

    def notify(self) -> None:
        """New blocks are in the journal."""
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
            self.link.down(f"the broker refused the connection: {reason}")
            return
        self.stats.connects += 1
        self.link.up(f" (session present: {bool(getattr(flags, 'session_present', False))})")
        client.subscribe([(self._stored_topic, 1), *((t, 1) for t in self._command_topic)])
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self._publish_status("online")
        self._publish_checkpoint()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.link.down(mqtt_client.error_text(getattr(client, "last_error", None)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and not self._stopping:
            self.stats.disconnects += 1
            self.link.lost(f"{reason}; records stay in the journal")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            span = self._inflight.pop(mid, None)
            if span is None:
                if mid not in self._other_mids:
                    self._early[mid] = reason
                self._other_mids.discard(mid)
                return
        self._settle(span, reason)

    def _settle(self, span: tuple[list[tuple[int, int]], int, float], reason: Any) -> None:
        ranges, records, sent = span
        with self._cond:
            if mqtt_client.reason_failed(reason):
                self.stats.refused += records
                # back off, then walk the journal again from the oldest unsent block
                self._retry_at = time.monotonic() + 5.0
                self._rewind()
                n = self._throttle.allow("puback")
                if n is not None:
                    log.error(
                        "broker refused records %d..%d (%s); they stay in the journal and are sent again",
                        ranges[0][0],
                        ranges[-1][1],
                        reason,
                    )
            else:
                self._acked.extend(ranges)
                self.stats.records_acked += records
                self.stats.last_ack_latency_ms = (time.monotonic() - sent) * 1000
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        station = self._command_topic.get(message.topic)
        if station is not None:
            if self._on_command is not None:
                self._on_command(station, message.topic, bytes(message.payload))
            return
        try:
            body = json.loads(message.payload)
            recorder = body.get("recorder")
            stored = [(int(a), int(b)) for a, b in body.get("stored", [])]
            refused = [(int(r["first"]), int(r["last"]), str(r["reason"])) for r in body.get("refused", [])]
        except (ValueError, TypeError, AttributeError, KeyError):
            log.warning("ignored a malformed answer on %s: %r", message.topic, message.payload[:200])
            return
        with self._cond:
            self._stored.extend(stored)
            self._refused.extend(
                (a, b, reason, None if recorder is None else str(recorder)) for a, b, reason in refused
            )
            self._cond.notify_all()

    # -- the publishing thread -------------------------------------------------------------
    def _run(self) -> None:
        last_flush = time.monotonic()
        backlog: list[Pending] = []  # read ahead from the journal, after the cursor
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
            backlog = [b for b in backlog if b.first_seq > cursor]
            if not backlog:
                try:
                    backlog, damaged = self.journal.pending(cursor, _FETCH)
                except JournalError as exc:
                    log.error("%s", exc)
                    time.sleep(1)
                    continue
                if damaged:
                    self._damaged(damaged)
                    if not backlog:
                        with self._cond:  # skip past them: they are never published
                            self._cursor = max(self._cursor, damaged[-1].last_seq)
                        continue
            if not backlog:
                with self._cond:
                    if self._cursor == cursor and not self._stopping and not self._rewound:
                        self._cond.wait(0.05 if (self._acked or self._stored or self._refused) else 0.5)
                continue
            batch, backlog = self._take_batch(backlog)
            self._send(batch)

    def _flush_due(self, last_flush: float) -> bool:
        now = time.monotonic()
        if now - last_flush <= 0.05:
            return False
        return bool(self._acked or self._stored or self._refused) or now >= min(
            self._next_requeue, self._next_checkpoint
        )

    def _rewind(self) -> None:
        """Walk the journal again from its oldest unsent block (call holding the lock)."""
        self._cursor = 0
        self._rewound = True

    def _take_batch(self, rows: list[Pending]) -> tuple[list[Pending], list[Pending]]:
        """Consecutive blocks of one station, within the message's size and record limits."""
        station = rows[0].station
        size = 0
        records = 0
        n = 0
        limit_n = self.settings.max_records_per_message
        limit_b = self.settings.max_message_bytes
        for row in rows:
            if row.station != station:
                break
            if n and (records + row.records > limit_n or size + len(row.text) + 1 > limit_b):
                break
            size += len(row.text) + 1
            records += row.records
            n += 1
        return rows[:n], rows[n:]

    def _send(self, batch: list[Pending]) -> None:
        station = batch[0].station
        body = "\n".join(b.text for b in batch).encode("utf-8")
        ranges = [(b.first_seq, b.last_seq) for b in batch]
        records = sum(b.records for b in batch)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/x-ndjson"
        sent_at = time.monotonic()
        # never call paho while holding our lock: paho calls on_publish holding its own
        info = self.client.publish(self._record_topic[station], body, qos=1, properties=props)
        with self._cond:
            self._cursor = batch[-1].last_seq
            early = self._early.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = (ranges, records, sent_at)
        if early is not None:  # the PUBACK beat us to the bookkeeping
            self._settle((ranges, records, sent_at), early)
        self.stats.messages_sent += 1
        self.stats.blocks_sent += len(batch)
        self.stats.records_sent += records

    def _flush_acks(self, *, requeue: bool = True) -> None:
        with self._cond:
            acked, self._acked = self._acked, []
            stored, self._stored = self._stored, []
            refused, self._refused = self._refused, []
        try:
            if acked:
                self.journal.mark_delivered(acked)
            if stored:
                self.stats.records_confirmed += self.journal.mark_stored(stored)
            if refused:
                self._mark_refused(refused)
        except JournalError as exc:
            # the blocks are sent again later; the recorder confirms what it already holds
            log.error("%s", exc)
        now = time.monotonic()
        if requeue and now >= self._next_checkpoint:
            self._next_checkpoint = now + self.checkpoint_interval
            if self._connected:
                self._publish_checkpoint()
        if requeue and now >= self._next_requeue:
            self._next_requeue = now + max(0.2, self.confirm_timeout / 4)
            self._requeue()

    def _mark_refused(self, refused: list[tuple[int, int, str, str | None]]) -> None:
        by_recorder: dict[str | None, list[tuple[int, int, str]]] = {}
        for a, b, reason, recorder in refused:
            by_recorder.setdefault(recorder, []).append((a, b, reason))
        for recorder, items in by_recorder.items():
            changed = self.journal.mark_refused(items, recorder)
            if not changed:
                continue
            n = sum(b - a + 1 for a, b in changed)
            self.stats.records_refused += n
            reasons = sorted({reason for a, b, reason in items})
            said = self._throttle.allow("refused", n)
            if said is not None:
                log.error(
                    "recorder %s refused %d record(s) of this gateway (seq %s): %s; they will not be sent "
                    "again and are in the recorder's dead-letter file",
                    recorder or "?",
                    said,
                    ", ".join(f"{a}..{b}" for a, b in changed[:5]) + (" ..." if len(changed) > 5 else ""),
                    "; ".join(reasons[:3]),
                )
            self._on_alarm()

    def _damaged(self, damaged: list[Damaged]) -> None:
        n = sum(d.last_seq - d.first_seq + 1 for d in damaged)
        self.stats.records_damaged += n
        for d in damaged[:5]:
            log.error(
                "journal block seq %d..%d failed the gateway's own check (%s): it is not published; "
                "the journal file was edited or is damaged",
                d.first_seq,
                d.last_seq,
                d.reason,
            )
        self._on_alarm()

    def _requeue(self) -> None:
        cutoff = time.time_ns() // 1000 - int(self.confirm_timeout * 1e6)
        try:
            resend, probes, given_up = self.journal.requeue_unconfirmed(cutoff, self.max_resends)
        except JournalError as exc:
            log.error("%s", exc)
            return
        if resend:
            self.stats.records_resent += resend
            log.warning(
                "%d record(s) acknowledged by the broker were never answered by a recorder while later "
                "ones were (lost by the broker); sending them again",
                resend,
            )
        if probes:
            self.stats.probes += probes
            log.debug("no answer for the newest records yet; probing with the last block")
        if given_up:
            n = sum(b - a + 1 for a, b in given_up)
            self.stats.records_unanswered += n
            log.error(
                "%d record(s) (seq %s) were sent %d times and no recorder ever answered: not sending them "
                "again. A recorder that cannot check this gateway's signature refuses without answering: "
                "check the recorders' key directory and dead-letter files",
                n,
                ", ".join(f"{a}..{b}" for a, b in given_up[:5]),
                self.max_resends,
            )
            self._on_alarm()
        if resend or probes:
            with self._cond:
                self._rewind()

    # -- status and checkpoints -----------------------------------------------------------
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

    def _publish_checkpoint(self) -> mqtt.MQTTMessageInfo | None:
        seq, digest = self.journal.head
        try:
            cp = checkpoints.make(self.gateway_id, seq, digest, time.time_ns() // 1000, self.journal.signer)
        except Exception as exc:  # a signer that fails must not stop publishing records
            log.error("could not make a checkpoint: %s", exc)
            return None
        self.stats.checkpoints += 1
        return self._track_other(self.client.publish(self._checkpoint_topic, cp.text.encode(), qos=1, retain=True))

    def _track_other(self, info: mqtt.MQTTMessageInfo) -> mqtt.MQTTMessageInfo:
        """Remember a non-record message, so its PUBACK is not taken for an early record ack."""
        with self._cond:
            if self._early.pop(info.mid, None) is None:
                self._other_mids.add(info.mid)
        return info

    def publish_status(self) -> None:
        """Heartbeat: refresh the retained status (backlog, last sequence number)."""
        if self._connected:
            self._publish_status("online")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish something other than records (alerts): QoS 1, fire and forget."""
        self._track_other(self.client.publish(topic, payload, qos=1, retain=retain))
