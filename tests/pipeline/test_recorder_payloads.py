"""Malformed payloads go to the dead-letter file and topic, whole, are counted, and cost nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from collector.chain.blocks import GENESIS_HASH
from collector.recorder.daemon import Recorder
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import Mosquitto
from tests.helpers import wait_for
from tests.pipeline.blockmaker import T0_US, Wire, make_block, measurement, signer_for
from tests.pipeline.conftest import StackConfig, recorder_of, store_of, stored_seqs


def test_bad_payloads_are_dead_lettered_and_the_good_ones_written(
    stack_config: StackConfig, broker: Mosquitto, v1_store: InfluxV1Store, topic_prefix: str, tmp_path: Path
) -> None:
    _, cfg = stack_config()
    signer = signer_for(tmp_path / "gw-x-private", "gw-x")
    shutil.copy(tmp_path / "gw-x-private" / "gw-x.pub", tmp_path / "keys" / "gw-x.pub")
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wire = Wire(broker, topic_prefix, "payloads")
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        prev = GENESIS_HASH
        good = []
        for i in range(4):
            b = make_block([measurement(n=i)], gateway="gw-x", first_seq=i + 1, prev_hash=prev, signer=signer,
                           at_us=T0_US + i)  # fmt: skip
            good.append(b)
            prev = b.hash
        tampered = good[2].text.replace('"serial":"SN-1"', '"serial":"SN-2"')
        # validly signed, but a record that is not valid for its kind: the gateway is told
        bad_record = dict(measurement(n=9), value="1.2001E+1")  # decimals travel in plain notation
        invalid = make_block([bad_record], gateway="gw-x", first_seq=9, prev_hash=good[3].hash, signer=signer,
                             at_us=T0_US + 9)  # fmt: skip
        for payload in (b"this is not json", b"\xff\xfe\x00 not utf-8", b"[1, 2, 3]", tampered.encode()):
            wire.publish(payload)
        # one message with a good block, a broken line and another good block
        wire.publish("\n".join([good[0].text, '{"truncated": ', good[1].text]))
        wire.publish(good[3].text)
        wire.publish(invalid.text)
        wait_for(lambda: sorted(stored_seqs(v1_store)) == [1, 2, 4], timeout=15, what="the 3 good blocks written")
        wait_for(lambda: recorder.stats.dead_letters == 6, timeout=10, what="6 dead letters")
        wait_for(lambda: len(wire.dead) == 6, timeout=10, what="6 messages on the dead-letter topic")
        wait_for(lambda: wire.refused("gw-x"), timeout=10, what="the invalid block reported")
    finally:
        recorder.stop()
        wire.close()

    lines = [json.loads(x) for x in Path(recorder_of(cfg).dead_letter_file).read_text().splitlines()]
    reasons = [e["reason"] for e in lines]
    assert len(lines) == 6
    assert sum(r.startswith("not a valid block: no hash at the end") for r in reasons) == 3  # text, list, fragment
    assert any(r.startswith("not UTF-8") for r in reasons)
    assert any("hash does not match" in r for r in reasons)
    assert any(r.startswith("records[0].value: String should match pattern") for r in reasons)
    assert all(e["topic"].endswith("/plant-1/line-a/st-10/record") for e in lines)
    assert any(e["payload"] == '{"truncated": ' for e in lines)
    assert any(e["payload"] == tampered for e in lines)
    # only the block whose signature proved its gateway is reported, whole
    assert [e["reported"] for e in lines].count(True) == 1
    (refusal,) = wire.refused("gw-x")
    assert (refusal["first"], refusal["last"]) == (9, 9) and "should match pattern" in refusal["reason"]
    assert sorted(n for a, b in wire.stored("gw-x") for n in range(a, b + 1)) == [1, 2, 4]
