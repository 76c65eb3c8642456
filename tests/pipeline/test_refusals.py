"""Nothing is confirmed that is not stored, and nothing damaged is published.

A field-type conflict makes InfluxDB refuse the gateway's measurement blocks (HTTP 400): the
recorder dead-letters each whole block with gateway, seq and reason, tells the gateway, and
the gateway marks them refused, alarms and never sends them again. A block edited in the
gateway's journal on disk is not published at all, and alarmed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from collector.config import Config
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.store.influx_v1 import InfluxV1Store
from drivers.base import Reading
from tests.helpers import wait_for
from tests.pipeline.conftest import gateway_of, journal_records, recorder_of, store_of


def reading(value: str, n: int) -> Reading:
    v = Decimal(value)
    return Reading("caliper-1", "01", v, "mm", f"01A+{v:08.3f}\r".encode(), time.time_ns() + n * 1000)


def test_a_refused_write_loses_nothing_is_never_confirmed_and_is_alarmed(
    stack_config: Callable[..., tuple[Path, Config]],
    v1_store: InfluxV1Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, cfg = stack_config()
    # someone wrote `value` as a string into this week's shard: every float `value` is refused
    v1_store.write_lines([f'inspection,gateway=elsewhere value="twelve" {time.time_ns() // 1000 - 1_000_000}'])
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    gateway = Gateway(cfg, start_drivers=False)
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        gateway.start()
        with caplog.at_level(logging.ERROR):
            for i, v in enumerate(("12.001", "12.002", "12.003")):
                gateway.submit(reading(v, i))

                def journaled(n: int = i + 1) -> bool:
                    return gateway.stats.measurements == n

                wait_for(journaled, what="journaled")  # one block each
            wait_for(lambda: gateway.journal.refused() >= 3, timeout=20, what="the gateway learns of the refusals")
            wait_for(lambda: gateway.journal.unconfirmed() == 0 and gateway.journal.backlog() == 0, what="settled")
        sent = gateway.publisher.stats.messages_sent
        dead = recorder.stats.dead_letters
        time.sleep(2.5)  # ten times the resend check's period (confirm_timeout 1 s): nothing goes out again
        assert gateway.publisher.stats.messages_sent == sent and recorder.stats.dead_letters == dead
    finally:
        gateway.stop()
        recorder.stop()
    counts = gateway.journal.counts()
    measured = [r for r in journal_records(Path(gateway_of(cfg).journal)) if r["kind"] == "measurement"]
    assert len(measured) == 3  # the records are kept in the journal, marked refused
    assert counts["refused"] >= 3 and counts["refused"] + counts["stored"] == gateway.journal.head[0]
    assert v1_store.query("SELECT count(seq) FROM inspection WHERE gateway = 'gw-test-1'") == []
    # nothing refused was confirmed: what the gateway counts as confirmed is what InfluxDB has
    stored = v1_store.query("SELECT first_seq, last_seq FROM block WHERE gateway = 'gw-test-1'")
    assert gateway.publisher.stats.records_confirmed == sum(r["last_seq"] - r["first_seq"] + 1 for r in stored)
    # alarmed: a log line naming the ranges and the store's reason, counters, the status
    assert any("refused" in r.getMessage() and "field type conflict" in r.getMessage() for r in caplog.records)
    assert gateway.publisher.stats.records_refused >= 3 and recorder.stats.blocks_refused >= 3
    # the dead-letter file holds each whole block with gateway, seq and reason, once
    entries = [json.loads(x) for x in Path(recorder_of(cfg).dead_letter_file).read_text().splitlines()]
    blocks_ = {(e["first_seq"], e["last_seq"]) for e in entries}
    assert len(entries) == len(blocks_) >= 3
    for e in entries:
        assert e["gateway"] == "gw-test-1" and e["reported"] is True and "store refused" in e["reason"]
        assert json.loads(e["payload"])["first_seq"] == e["first_seq"]  # the complete block line


def test_a_block_edited_in_the_journal_is_not_published_and_is_alarmed(
    stack_config: Callable[..., tuple[Path, Config]],
    v1_store: InfluxV1Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # journal three readings with no broker to publish to, then edit the middle block on disk
    _, offline = stack_config(mqtt={"port": 1})
    gateway = Gateway(offline, start_drivers=False)
    gateway.start()
    try:
        for i, v in enumerate(("12.001", "12.002", "12.003")):
            gateway.submit(reading(v, i))

            def journaled(n: int = i + 1) -> bool:
                return gateway.stats.measurements == n

            wait_for(journaled, what="journaled")
    finally:
        gateway.stop()
    path = Path(gateway_of(offline).journal)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT b.first_seq, b.last_seq, p.body FROM blocks b JOIN payloads p USING (first_seq)")
        texts = {(a, b): zlib.decompress(body).decode() for a, b, body in rows}
        # the block of the second reading: neither the first block nor the head
        middle = next(k for k, t in texts.items() if '"reading_value":"12.002"' in t)
        assert middle[0] > 1 and middle[1] < max(texts)[1]
        text = texts[middle].replace('"reading_value":"12.002"', '"reading_value":"12.020"')
        db.execute("UPDATE payloads SET body = ? WHERE first_seq = ?", (zlib.compress(text.encode()), middle[0]))
    spans = list(texts)

    _, cfg = stack_config()
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    gateway = Gateway(cfg, start_drivers=False)
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        with caplog.at_level(logging.ERROR, logger="collector.gateway.publisher"):
            gateway.start()
            wait_for(lambda: gateway.journal.damaged() > 0, what="the edited block found")
            wait_for(
                lambda: gateway.journal.backlog() == 0 and gateway.journal.unconfirmed() == 0,
                timeout=20,
                what="everything else stored",
            )
    finally:
        gateway.stop()
        recorder.stop()
    first, last = middle
    assert any(
        f"seq {first}..{last} failed the gateway's own check" in r.getMessage() and "not published" in r.getMessage()
        for r in caplog.records
    )
    assert gateway.publisher.stats.records_damaged == last - first + 1
    assert recorder.stats.dead_letters == 0  # it never reached the recorder
    stored = {(r["first_seq"], r["last_seq"]) for r in v1_store.query("SELECT first_seq, last_seq FROM block")}
    assert middle not in stored and {r for r in spans if r != middle} <= stored
    values = sorted(r["value"] for r in v1_store.query("SELECT value FROM inspection"))
    assert values == [12.001, 12.003]
