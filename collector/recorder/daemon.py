"""The recorder daemon: signed blocks from MQTT into InfluxDB, acknowledged only after the write.

Several recorders share one subscription (``$share/<group>/...``), so the broker spreads
messages over them and a dead one's share goes to the others. Each recorder:

1. receives messages with paho's manual acknowledgement (MQTT 5, persistent session):
   record messages (one block per line), gateways' checkpoints and alerts;
2. checks every block (:mod:`collector.recorder.checks`: the topic names the block's
   station, its gateway is in the register, the line is a well-formed block whose hash
   matches, the signature is the gateway's, every record is valid for its kind) and that
   nothing stored would be overwritten by it (:mod:`collector.recorder.seqguard`); a
   refused block goes whole to the dead-letter file (fsynced) and topic, is counted, and
   never blocks the others;
3. writes the good ones to InfluxDB in batches: first the record and lookup points, then,
   for the blocks whose records were all accepted, the block points and the ``chain`` index,
   so a block point never stands without its records;
4. answers each gateway on ``<prefix>/gateways/<id>/stored``: which blocks InfluxDB now
   holds, and which it refused and why (only for blocks whose signature proved that gateway
   sent them); the gateway settles the first, alarms the second and never sends them again;
5. only then acknowledges the messages. A crash before that, and the broker sends them
   again; the guard finds them stored and confirms them without writing anything twice.

Nothing is confirmed that is not stored. A store that is down is retried with back-off
while the messages stay unacknowledged (the broker's receive-maximum window stops it
sending more meanwhile, and its queue keeps the rest). A write the store refuses as bad
data (HTTP 4xx, e.g. a field-type conflict) is split block by block until the refused
blocks are found: each is refused whole (dead-lettered, reported, counted, alarmed), the
rest written.

May import the inspection domain, the chain, configuration, MQTT plumbing and the stores;
never the gateway, the dashboard or the evidence tools.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from collector.alarms import Throttle
from collector.chain.blocks import format_utc_us
from collector.chain.keys import KeyRing
from collector.config import Config, RecorderSettings
from collector.errors import ConfigError, StoreError
from collector.inspection.models import ALERT_ADAPTER
from collector.mqtt import client as mqtt_client
from collector.mqtt import topics
from collector.recorder.checks import Checked, Refusal, check_block, check_checkpoint
from collector.recorder.deadletter import DeadLetters
from collector.recorder.seqguard import AGAIN, NEW, SeqGuard, chain_line
from collector.store.base import Store
from collector.store.lineprotocol import alert_line, checkpoint_line

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    messages: int = 0
    blocks: int = 0
    records_written: int = 0
    blocks_again: int = 0  # blocks found stored already (redeliveries, resends): confirmed, not written
    blocks_refused: int = 0
    records_refused: int = 0
    dead_letters: int = 0
    write_failures: int = 0
    store_refusals: int = 0  # writes the store refused as bad data (4xx), before splitting
    batches: int = 0
    checkpoints: int = 0
    alerts: int = 0
    seq_queries: int = 0


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]"""
    out: list[list[int]] = []
    for n in sorted(set(seqs)):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


@dataclass
class _Batch:
    """One batch's messages and what became of their payloads."""

    mids: list[tuple[int, int]] = field(default_factory=list)  # (mid, qos) to acknowledge
    checked: list[Checked] = field(default_factory=list)  # distinct good blocks
    copies: dict[tuple[str, str], int] = field(default_factory=dict)  # (gateway, hash) -> copies seen
    refusals: list[tuple[str, str, Refusal]] = field(default_factory=list)  # (topic, payload, why)
    topic_of: dict[tuple[str, str], str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # checkpoints and alerts
    stored: list[Checked] = field(default_factory=list)  # written now or found stored already


class Recorder:
    def __init__(self, config: Config, store: Store, keyring: KeyRing | None = None) -> None:
        if config.recorder is None:
            raise ConfigError(config._source, [("recorder", "section is required")])
        self.settings: RecorderSettings = config.recorder
        self.mqtt = config.mqtt
        self.store = store
        self.keyring = keyring if keyring is not None else KeyRing.load(self.settings.keys)
        self.stats = RecorderStats()
        self.guard = SeqGuard(store)
        self.dead = DeadLetters(
            self.settings.dead_letter_file, int(self.settings.dead_letter_max_bytes), self.settings.dead_letter_keep
        )
        self._throttle = Throttle()
        # bounded by MQTT flow control: acks are manual, so the broker sends at most
        # ``receive_maximum`` messages this recorder has not acknowledged yet
        self._inbox: queue.SimpleQueue[mqtt.MQTTMessage | None] = queue.SimpleQueue()
        self._checked: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        prefix = self.mqtt.topic_prefix
        group = self.settings.group
        self._subscriptions = [
            f"$share/{group}/{topics.records_filter(prefix)}",
            f"$share/{group}/{topics.checkpoints_filter(prefix)}",
            # alerts are kept too: a supervisor's history of what was raised, by station and shift
            f"$share/{group}/{topics.alerts_filter(prefix)}",
        ]
        self._dead_topic = topics.dead_letter_topic(prefix)
        self._client_id = self.settings.client_id or f"recorder-{group}-{os.uname().nodename}"
        self.client, self._props = mqtt_client.make_client(
            self.mqtt, self._client_id, manual_ack=True, receive_maximum=self.settings.receive_maximum
        )
        self.link = mqtt_client.BrokerLink(f"{self.mqtt.host}:{self.mqtt.port}", log, self.mqtt.outage_reminder)
        self._status_topic = topics.recorder_status_topic(prefix, self._client_id)
        self.client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.connected = threading.Event()
        #: set once the broker confirmed the subscriptions: from then on it queues for us
        self.subscribed = threading.Event()

    @property
    def client_id(self) -> str:
        return self._client_id

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.store.ensure_database()
        log.info(
            "recorder writing to %s, %d gateway(s) in the register %s, signatures %s",
            self.store.description,
            len(self.keyring.gateways),
            self.keyring.source,
            "required" if self.settings.require_signature else "checked when present",
        )
        self._thread = threading.Thread(target=self._run, name="recorder-checker", daemon=True)
        self._thread.start()
        mqtt_client.connect_async(self.client, self.mqtt, self._props)

    def stop(self) -> None:
        """Finish the batch in hand (written and acknowledged), then disconnect.

        Messages that arrive after the stop request are left unacknowledged: the broker
        sends them again to this group (another recorder, or this one after a restart).
        """
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(20)
        if self.connected.is_set():
            body = json.loads(self._status("online"))
            body.update(state="offline", reason="stopped")
            with contextlib.suppress(RuntimeError, ValueError):
                info = self.client.publish(self._status_topic, json.dumps(body).encode(), qos=1, retain=True)
                info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.dead.close()
        self.store.close()

    # -- paho callbacks ----------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if mqtt_client.reason_failed(reason):
            self.link.down(f"the broker refused the connection: {reason}")
            return
        self.link.up()
        client.subscribe([(s, 1) for s in self._subscriptions])
        client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.link.down(mqtt_client.error_text(getattr(client, "last_error", None)))

    def _status(self, state: str) -> bytes:
        """Retained recorder status; the broker's last will says offline if the recorder vanishes."""
        body: dict[str, Any] = {"state": state, "recorder": self._client_id, "group": self.settings.group}
        if state == "online":
            body.update(vars(self.stats))
            body["store"] = self.store.description
        else:
            body["reason"] = "connection lost (last will)"
        return json.dumps(body).encode()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failed = [s for s, r in zip(self._subscriptions, reasons, strict=False) if mqtt_client.reason_failed(r)]
        if failed:
            # e.g. the broker's ACL: say which, so that nobody wonders why alerts are not kept
            log.error("broker refused the subscription(s) %s: %s", ", ".join(failed), reasons)
        if len(failed) < len(self._subscriptions) and not mqtt_client.reason_failed(reasons[0]):
            self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            self.link.lost(f"{reason}; unacknowledged messages will be sent again")
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(message)

    # -- the checking and writing threads ------------------------------------------------------
    # Two stages, so that checking the next batch (parsing, signatures, models, line protocol:
    # the CPU work) overlaps with waiting for InfluxDB to take the previous one. At most two
    # checked batches wait for the writer; the broker's receive maximum bounds the rest.
    def _run(self) -> None:
        writer = threading.Thread(target=self._write_loop, name="recorder-writer", daemon=True)
        writer.start()
        try:
            while True:
                messages, stop = self._collect()
                if messages:
                    try:
                        self._checked.put(self._check(messages))
                    except Exception:  # a bug: the messages stay unacknowledged and come again
                        log.exception("internal error while checking %d message(s)", len(messages))
                if stop:
                    return
        finally:
            self._checked.put(None)
            writer.join(15)

    def _write_loop(self) -> None:
        while True:
            batch = self._checked.get()
            if batch is None:
                return
            try:
                if not self._store(batch):
                    return  # stopping with the store away: unacknowledged, the broker keeps them
            except Exception:  # a bug: the messages stay unacknowledged and come again
                log.exception("internal error while writing %d message(s)", len(batch.mids))

    def _collect(self) -> tuple[list[mqtt.MQTTMessage], bool]:
        """Messages until the batch has enough blocks' lines or the oldest has waited long enough."""
        first = self._inbox.get()
        if first is None:
            return [], True
        batch = [first]
        size = len(first.payload)
        deadline = time.monotonic() + self.settings.batch_interval
        # batch_size counts records; a record line is about 700 bytes on the wire
        while size < self.settings.batch_size * 700:
            remaining = deadline - time.monotonic()
            try:
                msg = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if msg is None:
                return batch, True
            batch.append(msg)
            size += len(msg.payload)
        return batch, False

    def _check(self, messages: list[mqtt.MQTTMessage]) -> _Batch:
        batch = _Batch()
        prefix = self.mqtt.topic_prefix
        for msg in messages:
            self.stats.messages += 1
            batch.mids.append((msg.mid, msg.qos))
            try:
                text = msg.payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                batch.refusals.append((msg.topic, msg.payload.decode("latin-1"), Refusal(f"not UTF-8: {exc}")))
                continue
            parts = topics.parse_station_topic(prefix, msg.topic)
            if parts is not None and parts[3] == "record":
                self._blocks(batch, msg.topic, text, parts[:3])
            elif parts is not None and parts[3] == "alert":
                self._alert(batch, msg.topic, text, parts[:3])
            elif msg.topic.startswith(f"{prefix}/gateways/") and msg.topic.endswith("/checkpoint"):
                self._checkpoint(batch, msg.topic, text, msg.topic.split("/")[-2])
            else:
                batch.refusals.append((msg.topic, text, Refusal("not a topic this recorder stores")))
        return batch

    def _store(self, batch: _Batch) -> bool:
        """Write, dead-letter, answer, acknowledge; False when stopping with the store away."""
        if not self._write(batch):
            return False
        if batch.refusals:
            self._dead_letter(batch.refusals)
        self._answer(batch)
        for mid, qos in batch.mids:
            self.client.ack(mid, qos)
        self.stats.batches += 1
        return True

    def _blocks(self, batch: _Batch, topic: str, text: str, where: tuple[str, str, str]) -> None:
        for line in text.split("\n"):
            if not line.strip():
                continue
            self.stats.blocks += 1
            result = check_block(line, where, self.keyring, require_signature=self.settings.require_signature)
            if isinstance(result, Refusal):
                batch.refusals.append((topic, line, result))
                continue
            key = (result.block.gateway, result.block.hash)
            if key in batch.copies:  # the same block twice in one batch: handled once
                batch.copies[key] += 1
                continue
            batch.copies[key] = 1
            batch.topic_of[key] = topic
            batch.checked.append(result)

    def _alert(self, batch: _Batch, topic: str, text: str, where: tuple[str, str, str]) -> None:
        try:
            alert = json.loads(text)
            ALERT_ADAPTER.validate_python(alert)
            if (alert["site"], alert["line"], alert["station"]) != where:
                raise ValueError("the alert is of another station than its topic")
            if alert["gateway"] not in self.keyring:
                raise ValueError(f"gateway {alert['gateway']!r} is not in the register")
            batch.lines.append(alert_line(alert, text))
            self.stats.alerts += 1
        except ValueError as exc:  # JSON, schema (pydantic's ValidationError is a ValueError) or line protocol
            batch.refusals.append((topic, text, Refusal(f"invalid alert: {str(exc).splitlines()[0]}")))

    def _checkpoint(self, batch: _Batch, topic: str, text: str, gateway: str) -> None:
        result = check_checkpoint(text, gateway, self.keyring, require_signature=self.settings.require_signature)
        if isinstance(result, str):
            batch.refusals.append((topic, text, Refusal(result, gateway)))
            return
        batch.lines.append(checkpoint_line(result))
        self.stats.checkpoints += 1

    # -- writing -----------------------------------------------------------------------------
    def _write(self, batch: _Batch) -> bool:
        """Classify and write until the store answers (True), or until stopping with the store away (False)."""
        delay = self.settings.retry_min_delay
        while True:
            try:
                self._classify_and_write(batch)
                return True
            except StoreError as exc:
                self.stats.write_failures += 1
                log.warning("store unavailable (%s); retrying in %.1f s", exc, delay)
                if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                    log.warning("stopping: %d message(s) left unacknowledged for redelivery", len(batch.mids))
                    return False
                delay = min(delay * 2, self.settings.retry_max_delay)

    def _classify_and_write(self, batch: _Batch) -> None:
        queries = self.guard.queries
        verdicts = self.guard.classify(batch.checked)
        self.stats.seq_queries += self.guard.queries - queries
        new: list[Checked] = []
        batch.stored = []
        refused_now: list[tuple[str, str, Refusal]] = []
        for c, verdict in zip(batch.checked, verdicts, strict=True):
            if verdict == NEW:
                new.append(c)
            elif verdict == AGAIN:
                batch.stored.append(c)
                self.stats.blocks_again += 1
            else:
                refused_now.append(self._refused(c, verdict, batch))
        # records first; a block whose records the store refused gets no block point
        written = self._write_split(new, lambda c: c.record_lines, refused_now, batch)
        written = self._write_split(written, lambda c: [*c.block_lines, chain_line(c)], refused_now, batch)
        if batch.lines:
            self._write_other(batch)
        self.guard.stored(written)
        self.stats.records_written += sum(len(c.block.records) for c in written)
        batch.stored += written
        # only now: a retry after a store error classifies the batch again from scratch
        batch.refusals += refused_now

    def _refused(self, c: Checked, reason: str, batch: _Batch) -> tuple[str, str, Refusal]:
        b = c.block
        topic = batch.topic_of[(b.gateway, b.hash)]
        return topic, b.text, Refusal(reason, b.gateway, b.first_seq, b.last_seq, reported=True)

    def _write_split(
        self,
        blocks: list[Checked],
        lines_of: Callable[[Checked], list[str]],
        refused: list[tuple[str, str, Refusal]],
        batch: _Batch,
    ) -> list[Checked]:
        """Write the blocks' lines; on a 4xx, halve until the refused blocks are found. Returns the written."""
        if not blocks:
            return []
        try:
            self.store.write_lines([line for c in blocks for line in lines_of(c)])
            return blocks
        except StoreError as exc:
            if exc.retryable:
                raise
            self.stats.store_refusals += 1
            if len(blocks) == 1:
                refused.append(self._refused(blocks[0], f"the store refused it: {exc}", batch))
                return []
            mid = len(blocks) // 2
            return self._write_split(blocks[:mid], lines_of, refused, batch) + self._write_split(
                blocks[mid:], lines_of, refused, batch
            )

    def _write_other(self, batch: _Batch) -> None:
        """Checkpoints and alerts; one the store refuses as bad data is dead-lettered alone."""
        try:
            self.store.write_lines(batch.lines)
        except StoreError as exc:
            if exc.retryable:
                raise
            for line in batch.lines:
                try:
                    self.store.write_lines([line])
                except StoreError as one:
                    if one.retryable:
                        raise
                    batch.refusals.append(("(store)", line, Refusal(f"the store refused it: {one}")))
        batch.lines = []

    def _dead_letter(self, refusals: list[tuple[str, str, Refusal]]) -> None:
        at = format_utc_us(time.time_ns() // 1000)
        entries = []
        for topic, payload, r in refusals:
            entries.append(
                {
                    "at": at,
                    "topic": topic,
                    "gateway": r.gateway,
                    "first_seq": r.first_seq,
                    "last_seq": r.last_seq,
                    "reason": r.reason,
                    "reported": r.reported,
                    "payload": payload,
                }
            )
            n = 0 if r.first_seq is None or r.last_seq is None else r.last_seq - r.first_seq + 1
            self.stats.blocks_refused += r.first_seq is not None
            self.stats.records_refused += n
            self._throttle.log(
                log,
                logging.ERROR,
                f"refused:{r.gateway}:{r.reason[:40]}",
                "refused {n} payload(s) from %s (gateway %s, seq %s): %s; dead-lettered%s",
                topic,
                r.gateway or "?",
                "?" if r.first_seq is None else f"{r.first_seq}..{r.last_seq}",
                r.reason,
                ", the gateway is told" if r.reported else "",
            )
        self.dead.write(entries)
        self.stats.dead_letters += len(entries)
        for entry in entries:
            self.client.publish(self._dead_topic, json.dumps(entry, ensure_ascii=False).encode(), qos=1)

    def _answer(self, batch: _Batch) -> None:
        """Tell each gateway which of its blocks are stored and which are refused (and why)."""
        stored: dict[str, list[int]] = {}
        for c in batch.stored:
            stored.setdefault(c.block.gateway, []).extend(range(c.block.first_seq, c.block.last_seq + 1))
        refused: dict[str, list[dict[str, Any]]] = {}
        for _, _, r in batch.refusals:
            if r.reported and r.gateway is not None:
                refused.setdefault(r.gateway, []).append({"first": r.first_seq, "last": r.last_seq, "reason": r.reason})
        for gw in sorted(set(stored) | set(refused)):
            body = {
                "recorder": self._client_id,
                "stored": seq_ranges(stored.get(gw, [])),
                "refused": refused.get(gw, []),
            }
            self.client.publish(topics.stored_topic(self.mqtt.topic_prefix, gw), json.dumps(body).encode(), qos=1)
