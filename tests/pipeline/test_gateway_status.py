"""What supervisors and operators see of a gateway: its retained status and last will, and a
full disk that loses readings loudly and nothing else."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.gateway.daemon import Gateway
from collector.mqtt import topics
from collector.testing.services import Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import Daemon, StackConfig, gateway_of, recorder_of, store_of


def watch(broker: Mosquitto, *topic_filters: str) -> tuple[mqtt.Client, list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: seen.append((m.topic, json.loads(m.payload)))
    client.connect(broker.host, broker.port)
    client.subscribe([(t, 1) for t in topic_filters])
    client.loop_start()
    return client, seen


def test_status_is_retained_and_the_last_will_marks_a_killed_gateway_offline(
    stack_config: StackConfig,
    broker: Mosquitto,
    caliper: MitutoyoSimulator,
    daemons: Callable[[str, Path], Daemon],
    topic_prefix: str,
) -> None:
    path, _ = stack_config()
    gw = daemons("gateway", path).start()
    gw_topic = topics.gateway_status_topic(topic_prefix, "gw-test-1")
    st_topic = topics.station_topic(topic_prefix, "plant-1", "line-a", "st-10", "status")
    client, seen = watch(broker, gw_topic, st_topic)
    try:
        wait_for(
            lambda: any(t == gw_topic and m["state"] == "online" for t, m in seen), timeout=20, what="gateway online"
        )
        caliper.send_value(Decimal("12.001"))
        wait_for(
            lambda: any(t == gw_topic and m.get("last_seq") == 1 for t, m in seen),
            timeout=20,
            what="a heartbeat with the last sequence number",
        )
        assert any(
            t == st_topic and m == {"state": "online", "gateway": "gw-test-1", "station": "st-10"} for t, m in seen
        )
        gw.kill()
        wait_for(
            lambda: any(t == gw_topic and m["state"] == "offline" for t, m in seen), timeout=20, what="the last will"
        )
        will = [m for t, m in seen if t == gw_topic and m["state"] == "offline"][-1]
        assert will["reason"] == "connection lost (last will)"
    finally:
        client.disconnect()
        client.loop_stop()
    # retained: a dashboard that connects later still learns the gateway is offline
    late, late_seen = watch(broker, gw_topic)
    try:
        wait_for(lambda: late_seen, what="the retained status")
        assert late_seen[-1][1]["state"] == "offline"
    finally:
        late.disconnect()
        late.loop_stop()


def test_a_full_disk_loses_the_readings_loudly_and_nothing_else(
    stack_config: StackConfig, caliper: MitutoyoSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    _, cfg = stack_config()
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        caliper.send_value(Decimal("12.001"))  # D1 of part 1
        wait_for(lambda: gateway.stats.measurements == 1, what="first measurement")
        db = gateway.journal._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
        with caplog.at_level(logging.ERROR, logger="collector.gateway.daemon"):
            for v in ("12.01", "12.02", "12.03"):  # enough readings to need new pages
                for _ in range(40):
                    caliper.send_value(Decimal(v))
            wait_for(lambda: gateway.stats.readings == 121, timeout=20, what="121 readings processed")
        # some still fit in the journal's free pages (how many depends on how the readings were
        # batched into compressed blocks); the rest are lost, and every one is counted
        assert gateway.stats.lost > 121 // 2
        assert gateway.stats.lost + gateway.stats.measurements == 121
        assert any("disk or journal budget full" in r.getMessage() for r in caplog.records)
        assert sum("budget full" in r.getMessage() for r in caplog.records) < 10  # one line per burst
        stored = gateway.stats.measurements
        db.execute("PRAGMA max_page_count = 1073741823")
        caliper.send_value(Decimal("12.04"))
        wait_for(lambda: gateway.stats.measurements == stored + 1, what="recording resumes")
    finally:
        gateway.stop()
    from collector.gateway.journal import Journal

    journal = Journal(gateway_of(cfg).journal, "gw-test-1")
    try:
        rows = [r for block, _ in journal.iter_blocks() for r in block.materialise()]
    finally:
        journal.close()
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # no gap where readings were lost
    # the station did not skip the characteristics whose readings were lost: D1, L1, D1, L1 ...
    measured = [r for r in rows if r["kind"] == "measurement"]
    assert [(r["serial"], r["characteristic"]) for r in measured] == [
        (f"HX{i // 2 + 1:06d}", ("D1", "L1")[i % 2]) for i in range(stored + 1)
    ]


def test_recorder_status_is_retained_online_then_offline(
    stack_config: StackConfig, broker: Mosquitto, topic_prefix: str
) -> None:
    from collector.recorder.daemon import Recorder

    _, cfg = stack_config()
    recorder = Recorder(cfg, store_of(cfg))
    # the id the configuration names (the recorder makes one up only when it names none)
    assert recorder.client_id == recorder_of(cfg).client_id
    topic = topics.recorder_status_topic(topic_prefix, recorder.client_id)
    recorder.start()
    client, seen = watch(broker, topic)
    try:
        wait_for(lambda: any(m["state"] == "online" for _, m in seen), what="recorder online")
        online = next(m for _, m in seen if m["state"] == "online")
        assert online["group"] == "rec" and "records_written" in online
        recorder.stop()
        wait_for(lambda: any(m["state"] == "offline" for _, m in seen), what="recorder offline")
        assert [m for _, m in seen if m["state"] == "offline"][-1]["reason"] == "stopped"
    finally:
        client.disconnect()
        client.loop_stop()
