"""Malformed payloads go to the dead-letter file and topic, are counted, and cost nothing else."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.inspection.models import Characteristic
from collector.inspection.records import GENESIS_HASH, measurement_record, seal
from collector.inspection.tolerance import judge
from collector.mqtt import topics
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import Mosquitto
from drivers.base import Reading
from tests.helpers import wait_for
from tests.pipeline.conftest import count_points, stored_seqs

CHAR = Characteristic(
    id="D1",
    name="Bore",
    nominal=Decimal("12.000"),
    lower_tol=Decimal("-0.02"),
    upper_tol=Decimal("0.02"),
    unit="mm",
    decimals=3,
)


def sealed_chain(n: int, gateway: str = "gw-x") -> list[tuple[dict[str, Any], str]]:
    out = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        reading = Reading("caliper-1", "01", Decimal("12.001"), "mm", b"01A+0012.001\r", 1_795_000_000_000_000_000 + i)
        r = measurement_record(
            site="plant-1",
            line="line-a",
            station="st-10",
            context={"part_number": "HX-4711", "serial": f"SN{i}", "operator": "op-1"},
            plan_revision="C",
            characteristic=CHAR,
            judgement=judge(CHAR, reading.value, "mm"),
            reading=reading,
            gauge="CAL-1",
            gauge_calibration_due="2027-01-01",
        )
        r.update(gateway=gateway, seq=i, recorded_at=f"2026-11-21T10:00:{i:02d}.000000Z", clock_synced=True)
        payload = seal(r, prev)
        prev = r["hash"]
        out.append((r, payload))
    return out


def test_bad_payloads_are_dead_lettered_and_the_good_ones_written(
    stack_config, broker: Mosquitto, v1_store: InfluxV1Store, topic_prefix: str, tmp_path: Path
) -> None:
    _, cfg = stack_config()
    recorder = Recorder(cfg, open_store(cfg.influxdb))
    recorder.start()
    seen: dict[str, list[bytes]] = {"dead": [], "stored": []}
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{topic_prefix}")
    watcher.on_message = lambda c, u, m: seen["dead" if m.topic.endswith("dead-letter") else "stored"].append(m.payload)
    watcher.connect(broker.host, broker.port)
    watcher.subscribe([(topics.dead_letter_topic(topic_prefix), 1), (topics.stored_topic(topic_prefix, "gw-x"), 1)])
    watcher.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"p-{topic_prefix}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        topic = topics.station_topic(topic_prefix, "plant-1", "line-a", "st-10", "record")
        chain = sealed_chain(4)
        tampered = dict(chain[2][0], judged_value="12.000")
        bad = [
            b"this is not json",
            b"\xff\xfe\x00 not utf-8",
            b"[1, 2, 3]",
            json.dumps({"schema_version": 1, "kind": "measurement", "id": "x"}).encode(),
            json.dumps(tampered).encode(),  # content changed after sealing: hash mismatch
        ]
        for payload in bad:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        # one message with a good record, a broken line and another good record
        mixed = "\n".join([chain[0][1], '{"truncated": ', chain[1][1]]).encode()
        pub.publish(topic, mixed, qos=1).wait_for_publish(5)
        pub.publish(topic, chain[3][1].encode(), qos=1).wait_for_publish(5)
        wait_for(lambda: count_points(v1_store) == 3, timeout=15, what="the 3 good records written")
        wait_for(lambda: recorder.stats.dead_letters == 6, timeout=10, what="6 dead letters")
        wait_for(lambda: len(seen["dead"]) == 6, timeout=10, what="6 messages on the dead-letter topic")
        wait_for(lambda: seen["stored"], timeout=10, what="confirmations for gw-x")
    finally:
        recorder.stop()
        for c in (watcher, pub):
            c.disconnect()
            c.loop_stop()

    assert sorted(stored_seqs(v1_store)) == [1, 2, 4]
    lines = [json.loads(x) for x in Path(cfg.recorder.dead_letter_file).read_text().splitlines()]
    reasons = [e["reason"] for e in lines]
    assert len(lines) == 6
    assert any(r.startswith("not JSON") for r in reasons)
    assert any(r.startswith("not UTF-8") for r in reasons)
    assert any(r == "not a JSON object" for r in reasons)
    assert any(r.startswith("id: String should have at least 26 characters (37 problem(s))") for r in reasons)
    assert any("hash does not match" in r for r in reasons)
    assert all(e["topic"] == topic for e in lines)
    assert any(e["payload"] == '{"truncated": ' for e in lines)
    # a record that fails the checks names no gateway: it is not confirmed as dead-lettered
    confirmed = [json.loads(m) for m in seen["stored"]]
    assert sorted(n for c in confirmed for a, b in c["stored"] for n in range(a, b + 1)) == [1, 2, 4]
    assert all(c["dead_lettered"] == [] for c in confirmed)
