"""Nothing is lost: gateway and recorder killed with SIGKILL, the broker stopped under load,
a recorder away while far more than Mosquitto's default 1,000 messages are queued for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from collector.config import Config
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import Mosquitto
from simulators.mitutoyo import MitutoyoSimulator
from tests.helpers import wait_for
from tests.pipeline.conftest import (
    Daemon,
    StackConfig,
    all_records,
    count_all,
    count_points,
    gateway_of,
    journal_head,
    journal_records,
    store_of,
    stored_seqs,
)


def journal_values(path: Path) -> list[str]:
    return [r["reading_value"] for r in journal_records(path) if r["kind"] == "measurement"]


def burst(sim: MitutoyoSimulator, n: int, start: int = 0) -> list[Decimal]:
    sent = []
    for i in range(start, start + n):
        v = Decimal("11.900") + Decimal(i % 200) / 1000
        sim.send_value(v)
        sent.append(v)
    return sent


def prime_session(cfg: Config) -> None:
    """Create the recorder's persistent session and subscription, so the broker queues from now on.

    A recorder in production has had its session for months; a test's recorder process
    starts fresh, and records published before its first SUBACK would go to nobody.
    """
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    recorder.stop()


def connected_count(daemon: Daemon) -> int:
    """How often the daemon's log says the caliper's port was opened (pyserial flushes on open)."""
    return daemon.log.read_text().count("device caliper-1 connected") if daemon.log.exists() else 0


def assert_exactly_once(store: InfluxV1Store, measurements: int, head: int) -> None:
    """Every record the gateway journaled (of every kind) is stored once, in chain order."""
    seqs = stored_seqs(store)
    assert len(seqs) == measurements, f"{len(seqs)} measurement points for {measurements} readings"
    everything = all_records(store)
    assert [seq for _, seq in everything] == list(range(1, head + 1)), "a gap, a duplicate or out of order"


def test_gateway_killed_mid_stream_loses_nothing(
    stack_config: StackConfig,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    daemons: Callable[[str, Path], Daemon],
) -> None:
    path, cfg = stack_config(mqtt={"max_records_per_message": 5, "max_inflight": 4})
    journal = Path(gateway_of(cfg).journal)
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    try:
        gw = daemons("gateway", path).start()
        wait_for(lambda: connected_count(gw) == 1, timeout=20, what="the gateway's driver opened the port")
        sent = burst(caliper, 400)
        wait_for(lambda: len(journal_values(journal)) == 400, timeout=20, what="400 measurements journaled")
        gw.kill()  # mid-stream: the recorder has not had all of them yet
        at_kill = count_points(v1_store)
        gw.start()
        wait_for(lambda: connected_count(gw) == 2, timeout=20, what="the restarted gateway opened the port")
        sent += burst(caliper, 300, start=400)
        wait_for(lambda: count_points(v1_store) == 700, timeout=30, what="all 700 measurements in InfluxDB")
        gw.stop()
        head = journal_head(journal)
        wait_for(lambda: count_all(v1_store) == head, timeout=30, what="every record in InfluxDB")
    finally:
        recorder.stop()
    assert at_kill < 700
    assert_exactly_once(v1_store, 700, head)
    assert journal_values(journal) == [str(v) for v in sent]


def test_recorder_killed_mid_stream_loses_nothing(
    stack_config: StackConfig,
    caliper: MitutoyoSimulator,
    v1_store: InfluxV1Store,
    daemons: Callable[[str, Path], Daemon],
) -> None:
    path, cfg = stack_config(mqtt={"max_records_per_message": 1}, recorder={"batch_size": 50})
    prime_session(cfg)
    gateway = Gateway(cfg)
    gateway.start()
    try:
        rec = daemons("recorder", path).start()
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        feeder = threading.Thread(target=burst, args=(caliper, 1500))
        feeder.start()
        wait_for(lambda: count_points(v1_store) >= 100, timeout=30, what="recorder writing")
        rec.kill()
        at_kill = count_points(v1_store)
        feeder.join()
        rec.start()
        wait_for(lambda: count_points(v1_store) == 1500, timeout=60, what="all 1500 measurements in InfluxDB")
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=30, what="every record in InfluxDB")
    finally:
        gateway.stop()
    assert at_kill < 1500
    assert_exactly_once(v1_store, 1500, head)


def test_broker_outage_under_load_loses_nothing_and_keeps_order(
    stack_config: StackConfig, broker: Mosquitto, caliper: MitutoyoSimulator, v1_store: InfluxV1Store
) -> None:
    _, cfg = stack_config(mqtt={"max_records_per_message": 20})
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wait_for(recorder.subscribed.is_set, what="recorder subscribed")
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        burst(caliper, 300)
        broker.stop()
        burst(caliper, 600, start=300)  # journaled while the broker is away
        wait_for(lambda: gateway.stats.measurements == 900, timeout=20, what="900 measurements journaled")
        assert gateway.journal.backlog() > 0
        broker.start()
        burst(caliper, 300, start=900)
        wait_for(lambda: count_points(v1_store) == 1200, timeout=60, what="all 1200 measurements in InfluxDB")
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=30, what="every record in InfluxDB")
    finally:
        gateway.stop()
        recorder.stop()
    assert_exactly_once(v1_store, 1200, head)


def test_recorder_away_while_thousands_of_messages_queue(
    stack_config: StackConfig, caliper: MitutoyoSimulator, v1_store: InfluxV1Store
) -> None:
    """Mosquitto's default would keep 1,000 and drop the rest silently; ours keeps all."""
    n = 3000
    # one record per block and per message: thousands of messages queue for the recorder
    _, cfg = stack_config(mqtt={"max_records_per_message": 1, "max_inflight": 100}, gateway={"max_block_records": 1})
    prime_session(cfg)
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        burst(caliper, n)
        wait_for(
            lambda: gateway.journal.backlog() == 0 and gateway.stats.measurements == n,
            timeout=60,
            what=f"{n} single-record messages acknowledged by the broker",
        )
        assert gateway.publisher.stats.messages_sent >= n
        assert count_points(v1_store) == 0
        recorder = Recorder(cfg, store_of(cfg))
        recorder.start()
        head = gateway.journal.head[0]
        wait_for(lambda: count_all(v1_store) == head, timeout=60, what=f"all {head} queued records written")
        recorder.stop()
    finally:
        gateway.stop()
    assert_exactly_once(v1_store, n, head)


def test_records_the_broker_acknowledged_but_lost_are_sent_again(
    stack_config: StackConfig, broker: Mosquitto, caliper: MitutoyoSimulator, v1_store: InfluxV1Store
) -> None:
    """Mosquitto 2.0.11 forgets shared subscriptions when it restarts: what gateways publish
    before the recorders subscribe again is acknowledged and routed to nobody. The
    recorders' end-to-end confirmations let the gateway notice and send it again."""
    _, cfg = stack_config()
    prime_session(cfg)
    gateway = Gateway(cfg)
    gateway.start()
    try:
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        recorder = Recorder(cfg, store_of(cfg))
        recorder.start()
        burst(caliper, 100)
        wait_for(
            lambda: count_points(v1_store) == 100 and gateway.journal.unconfirmed() == 0,
            timeout=20,
            what="100 measurements stored and every record confirmed",
        )
        recorder.stop()
        broker.restart()
        burst(caliper, 200, start=100)
        wait_for(
            lambda: gateway.stats.measurements == 300 and gateway.journal.backlog() == 0,
            timeout=20,
            what="300 records acknowledged by the broker",
        )
        assert count_points(v1_store) == 100  # nobody received the last 200
        recorder = Recorder(cfg, store_of(cfg))
        recorder.start()
        wait_for(lambda: count_points(v1_store) == 300, timeout=30, what="the lost 200 sent again and stored")
        wait_for(lambda: gateway.journal.unconfirmed() == 0, timeout=10, what="every record settled")
        head = gateway.journal.head[0]
        recorder.stop()
    finally:
        gateway.stop()
    assert gateway.publisher.stats.probes >= 1
    assert_exactly_once(v1_store, 300, head)
