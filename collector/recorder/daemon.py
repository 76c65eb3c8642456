"""The recorder daemon: records from MQTT into InfluxDB, acknowledged only after the write.

Several recorders share one subscription (``$share/<group>/...``), so the broker spreads
messages over them and a dead one's share goes to the others. Each recorder:

1. receives messages with paho's manual acknowledgement (MQTT 5, persistent session);
2. validates every record in a message (JSON, schema, its own hash); a bad one goes to the
   dead-letter file (fsynced) and topic and is counted, and never blocks the good ones;
3. writes the good ones to InfluxDB in batches;
4. confirms to each gateway which of its records InfluxDB now holds (or were
   dead-lettered), on ``<prefix>/gateways/<id>/stored``, so the gateway can settle them and
   send again what the broker lost;
5. only then acknowledges the messages. A crash before that, and the broker sends them
   again; since a record always lands on the same series and timestamp, the second write
   overwrites the first point with identical values.

A store that is down is retried with back-off while the messages stay unacknowledged; the
broker's receive-maximum window stops it sending more meanwhile, and its queue keeps the
rest. A write that the store refuses as bad data is split until the offending records are
found; those are dead-lettered, the rest written.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from collector.config import Config, RecorderSettings
from collector.errors import ConfigError, StoreError
from collector.inspection.models import ALERT_ADAPTER, RECORD_ADAPTER
from collector.inspection.records import recompute_hash
from collector.mqtt import client as mqtt_client
from collector.mqtt import topics
from collector.store.base import Store
from collector.store.lineprotocol import alert_line, record_line

log = logging.getLogger(__name__)


@dataclass
class RecorderStats:
    messages: int = 0
    records_written: int = 0
    dead_letters: int = 0
    write_failures: int = 0
    batches: int = 0


@dataclass
class _Pending:
    mid: int
    qos: int
    lines: list[str]
    seqs: list[tuple[str, int]]  # (gateway, seq) of the records in ``lines``


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]"""
    out: list[list[int]] = []
    for n in sorted(set(seqs)):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


class DeadLetters:
    """Append-only JSONL file of rejected payloads; each entry is on disk before the ack."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life

    def write(self, entries: Sequence[dict[str, Any]]) -> None:
        for entry in entries:
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def check_record(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and validate one record line: (record, None) or (None, reason)."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    try:
        RECORD_ADAPTER.validate_python(record)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = list(first["loc"])
        if loc and loc[0] == record.get("kind"):
            loc = loc[1:]  # the union's tag: the record's kind, not a field
        where = ".".join(str(p) for p in loc) or "(record)"
        return None, f"{where}: {first['msg']} ({exc.error_count()} problem(s))"
    if recompute_hash(record) != record["hash"]:
        return None, "hash does not match the record's content (altered in transit?)"
    return record, None


class Recorder:
    def __init__(self, config: Config, store: Store) -> None:
        if config.recorder is None:
            raise ConfigError(config._source, [("recorder", "section is required")])
        self.settings: RecorderSettings = config.recorder
        self.mqtt = config.mqtt
        self.store = store
        self.stats = RecorderStats()
        self.dead = DeadLetters(self.settings.dead_letter_file)
        self._inbox: queue.SimpleQueue[mqtt.MQTTMessage | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription = f"$share/{self.settings.group}/{topics.records_filter(self.mqtt.topic_prefix)}"
        # alerts are kept too: a supervisor's history of what was raised, by station and shift
        self._alert_subscription = f"$share/{self.settings.group}/{self.mqtt.topic_prefix}/+/+/+/alert"
        self._dead_topic = topics.dead_letter_topic(self.mqtt.topic_prefix)
        self._client_id = self.settings.client_id or f"recorder-{self.settings.group}-{os.uname().nodename}"
        self.client, self._props = mqtt_client.make_client(
            self.mqtt, self._client_id, manual_ack=True, receive_maximum=self.settings.receive_maximum
        )
        self._status_topic = topics.recorder_status_topic(self.mqtt.topic_prefix, self._client_id)
        self.client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.connected = threading.Event()
        #: set once the broker confirmed the subscription: from then on it queues for us
        self.subscribed = threading.Event()

    @property
    def client_id(self) -> str:
        return self._client_id

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.store.ensure_database()
        log.info("recorder writing to %s, subscribing to %s", self.store.description, self._subscription)
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
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
            self._thread.join(15)
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
            log.error("broker %s:%s refused the connection: %s", self.mqtt.host, self.mqtt.port, reason)
            return
        log.info("connected to broker %s:%s", self.mqtt.host, self.mqtt.port)
        client.subscribe([(self._subscription, 1), (self._alert_subscription, 1)])
        client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
        self.connected.set()

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
        if any(mqtt_client.reason_failed(r) for r in reasons):
            log.error("broker refused the subscription to %s: %s", self._subscription, reasons)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("lost the broker connection (%s); unacknowledged messages will be sent again", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(message)

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch, stop = self._collect()
            if batch:
                self._handle(batch)
            if stop:
                return

    def _collect(self) -> tuple[list[mqtt.MQTTMessage], bool]:
        """Messages until the batch has enough records or the oldest has waited long enough."""
        first = self._inbox.get()
        if first is None:
            return [], True
        batch = [first]
        lines = first.payload.count(b"\n") + 1
        deadline = time.monotonic() + self.settings.batch_interval
        while lines < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            try:
                msg = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if msg is None:
                return batch, True
            batch.append(msg)
            lines += msg.payload.count(b"\n") + 1
        return batch, False

    def _handle(self, messages: list[mqtt.MQTTMessage]) -> None:
        pending: list[_Pending] = []
        rejects: list[dict[str, Any]] = []
        for msg in messages:
            self.stats.messages += 1
            good: list[str] = []
            seqs: list[tuple[str, int]] = []
            try:
                text = msg.payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                rejects.append(self._reject(msg.topic, msg.payload.decode("latin-1"), f"not UTF-8: {exc}"))
                pending.append(_Pending(msg.mid, msg.qos, [], []))
                continue
            if msg.topic.endswith("/alert"):
                line, reason = self._alert_line(text)
                if line is None:
                    rejects.append(self._reject(msg.topic, text, reason or "invalid alert"))
                pending.append(_Pending(msg.mid, msg.qos, [line] if line else [], []))
                continue
            for line in text.split("\n"):
                if not line.strip():
                    continue
                record, reason = check_record(line)
                if record is None:
                    rejects.append(self._reject(msg.topic, line, reason or "invalid"))
                    continue
                try:
                    good.append(record_line(record, line))
                    seqs.append((record["gateway"], record["seq"]))
                except ValueError as exc:
                    rejects.append(self._reject(msg.topic, line, str(exc), record))
            pending.append(_Pending(msg.mid, msg.qos, good, seqs))
        if not self._write(pending, rejects):
            return  # shutting down with the store away: unacknowledged, the broker keeps them
        if rejects:
            self._dead_letter(rejects)
        self._confirm(pending, rejects)
        for p in pending:
            self.client.ack(p.mid, p.qos)
        self.stats.batches += 1

    def _alert_line(self, text: str) -> tuple[str | None, str | None]:
        try:
            alert = json.loads(text)
            ALERT_ADAPTER.validate_python(alert)
            return alert_line(alert, text), None
        except ValueError as exc:  # JSON, schema (pydantic's ValidationError is a ValueError) or line protocol
            return None, str(exc).splitlines()[0]

    def _confirm(self, pending: list[_Pending], rejects: list[dict[str, Any]]) -> None:
        stored: dict[str, list[int]] = {}
        for p in pending:
            for gw, seq in p.seqs:
                stored.setdefault(gw, []).append(seq)
        dead: dict[str, list[int]] = {}
        for entry in rejects:
            if entry.get("gateway") is not None and entry.get("seq") is not None:
                dead.setdefault(str(entry["gateway"]), []).append(int(entry["seq"]))
                if entry["seq"] in stored.get(str(entry["gateway"]), ()):
                    stored[str(entry["gateway"])].remove(entry["seq"])
        for gw in sorted(set(stored) | set(dead)):
            body = {
                "recorder": self._client_id,
                "stored": seq_ranges(stored.get(gw, [])),
                "dead_lettered": seq_ranges(dead.get(gw, [])),
            }
            self.client.publish(topics.stored_topic(self.mqtt.topic_prefix, gw), json.dumps(body).encode(), qos=1)

    def _reject(self, topic: str, payload: str, reason: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
        log.warning("rejected a record from %s: %s", topic, reason)
        entry: dict[str, Any] = {"at_us": time.time_ns() // 1000, "topic": topic, "reason": reason}
        if record is not None:
            # a genuine record (its hash checked out) that cannot be stored is confirmed as
            # dead-lettered, so its gateway stops sending it and raises the alarm on its side;
            # a record that fails the checks names no gateway: anyone could have sent it
            entry["gateway"], entry["seq"] = record.get("gateway"), record.get("seq")
        entry["payload"] = payload
        return entry

    def _write(self, pending: list[_Pending], rejects: list[dict[str, Any]]) -> bool:
        """Write until the store accepts (True), or until stopping with the store away (False)."""
        lines = [line for p in pending for line in p.lines]
        if not lines:
            return True
        delay = self.settings.retry_min_delay
        while True:
            try:
                self._write_splitting(lines, rejects)
                self.stats.records_written += len(lines)
                return True
            except StoreError as exc:
                self.stats.write_failures += 1
                log.warning("store write failed (%s); retrying in %.1f s", exc, delay)
                if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                    log.warning("stopping: %d record(s) left unacknowledged for redelivery", len(lines))
                    return False
                delay = min(delay * 2, self.settings.retry_max_delay)

    def _write_splitting(self, lines: list[str], rejects: list[dict[str, Any]]) -> None:
        try:
            self.store.write_lines(lines)
        except StoreError as exc:
            if exc.retryable:
                raise
            if len(lines) == 1:
                payload = _payload_of(lines[0])
                rejects.append(self._reject("(store)", payload, f"store refused the record: {exc}", _identity(payload)))
                lines.clear()
                return
            mid = len(lines) // 2
            left, right = lines[:mid], lines[mid:]
            self._write_splitting(left, rejects)
            self._write_splitting(right, rejects)
            lines[:] = left + right

    def _dead_letter(self, rejects: list[dict[str, Any]]) -> None:
        self.dead.write(rejects)
        self.stats.dead_letters += len(rejects)
        for entry in rejects:
            self.client.publish(self._dead_topic, json.dumps(entry, ensure_ascii=False).encode(), qos=1)


def _identity(payload: str) -> dict[str, Any] | None:
    """Gateway and sequence number of a rejected record, if its JSON says so plainly."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("gateway"), str) and type(data.get("seq")) is int:
        return {"gateway": data["gateway"], "seq": data["seq"]}
    return None


def _payload_of(line: str) -> str:
    """The payload field of a line-protocol line (for the dead-letter entry)."""
    marker = 'payload="'
    i = line.find(marker)
    if i < 0:
        return line
    j = line.find('",', i)
    if j < 0:
        j = line.rfind('" ')
    return line[i + len(marker) : j].replace('\\"', '"').replace("\\\\", "\\")
