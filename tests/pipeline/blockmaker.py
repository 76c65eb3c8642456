"""Blocks made by hand, and a plain MQTT client that publishes them and watches the answers.

The attack tests play gateways (honest and not) without a gateway process: they seal blocks
with :mod:`collector.chain` exactly as a gateway does, sign them with whatever key the attack
has, and publish them on whatever topic the attack uses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.chain import blocks
from collector.chain.blocks import Block
from collector.chain.keys import Ed25519Signer, Signer, generate
from collector.inspection.models import Characteristic
from collector.inspection.records import format_utc_us, measurement_record
from collector.inspection.tolerance import judge
from collector.mqtt import topics
from collector.testing.services import Mosquitto
from drivers.base import Reading

CHAR = Characteristic(
    id="D1", name="Bore", nominal=Decimal("12.000"), lower_tol=Decimal("-0.02"), upper_tol=Decimal("0.02"),
    unit="mm", decimals=3,
)  # fmt: skip
T0_US = 1_795_000_000_000_000


def signer_for(directory: Path, gateway: str) -> Ed25519Signer:
    """A new key pair for ``gateway`` in ``directory`` (its .pub is the register entry)."""
    generate(gateway, directory)
    return Ed25519Signer.from_file(directory / f"{gateway}.key")


def measurement(value: str = "12.001", n: int = 0, serial: str = "SN-1") -> dict[str, Any]:
    reading = Reading("caliper-1", "01", Decimal(value), "mm", b"01A+0012.001\r", (T0_US + n * 1000) * 1000)
    draft = measurement_record(
        site="plant-1", line="line-a", station="st-10",
        context={"part_number": "HX-4711", "serial": serial, "lot": "L-1", "operator": "op-1"},
        plan_revision="C", characteristic=CHAR, judgement=judge(CHAR, Decimal(value), "mm"), reading=reading,
        gauge="CAL-1", gauge_calibration_due="2027-01-01",
    )  # fmt: skip
    return {k: v for k, v in draft.items() if k not in ("site", "line", "station")}


def make_block(
    records: list[dict[str, Any]],
    *,
    gateway: str,
    first_seq: int,
    prev_hash: str,
    signer: Signer | None,
    at_us: int,
    station: str = "st-10",
) -> Block:
    return blocks.seal(
        records, gateway=gateway, site="plant-1", line="line-a", station=station, first_seq=first_seq,
        recorded_at=format_utc_us(at_us), clock_synced=True, prev_hash=prev_hash, signer=signer,
    )  # fmt: skip


class Wire:
    """Publishes on the broker and keeps what arrives on the dead-letter and stored topics."""

    def __init__(self, broker: Mosquitto, prefix: str, name: str) -> None:
        self.prefix = prefix
        self.dead: list[dict[str, Any]] = []
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{prefix}")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(topics.dead_letter_topic(prefix), 1), (f"{prefix}/gateways/+/stored", 1)])
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        body = json.loads(m.payload)
        with self._lock:
            if m.topic.endswith("dead-letter"):
                self.dead.append(body)
            else:
                self.answers.setdefault(m.topic.split("/")[-2], []).append(body)

    def publish(self, payload: bytes | str, station: str = "st-10", kind: str = "record") -> None:
        topic = topics.station_topic(self.prefix, "plant-1", "line-a", station, kind)
        data = payload.encode() if isinstance(payload, str) else payload
        self.client.publish(topic, data, qos=1).wait_for_publish(5)

    def stored(self, gateway: str) -> list[tuple[int, int]]:
        with self._lock:
            return [(a, b) for body in self.answers.get(gateway, []) for a, b in body["stored"]]

    def refused(self, gateway: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for body in self.answers.get(gateway, []) for r in body["refused"]]

    def dead_about(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in self.dead if predicate(d)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
