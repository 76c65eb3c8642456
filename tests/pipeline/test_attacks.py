"""The recorder against blocks that must not be stored, on a real Mosquitto and InfluxDB.

A block on gateway A's topic claiming gateway B, a gateway that is not in the register, a
forged "next" block, a block re-using stored seq numbers with other content: each is refused
and dead-lettered whole, and what is stored does not change. Only a refusal of a block whose
signature proved its gateway is reported to that gateway.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.chain import blocks
from collector.chain.blocks import GENESIS_HASH
from collector.chain.keys import Ed25519Signer, KeyRing
from collector.config import Config
from collector.recorder.daemon import Recorder
from collector.store.base import quote_literal
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import Mosquitto
from tests.helpers import wait_for
from tests.pipeline.blockmaker import T0_US, Wire, make_block, measurement, signer_for
from tests.pipeline.conftest import store_of


def stored_blocks(store: InfluxV1Store, gateway: str) -> list[dict[str, Any]]:
    return store.query(f"SELECT first_seq, last_seq, hash, payload FROM block WHERE gateway = {quote_literal(gateway)}")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Ed25519Signer]:
    """Gateways gw-a and gw-b in the register; gw-stranger has a key but is not registered."""
    out = {}
    for gw in ("gw-a", "gw-b", "gw-stranger"):
        out[gw] = signer_for(tmp_path / f"private-{gw}", gw)
    return out


@pytest.fixture
def recorder_and_wire(
    stack_config: Callable[..., tuple[Path, Config]],
    keys: dict[str, Ed25519Signer],
    tmp_path: Path,
    broker: Mosquitto,
    topic_prefix: str,
) -> Iterator[tuple[Recorder, Wire, Config]]:
    _, cfg = stack_config()
    for gw in ("gw-a", "gw-b"):
        shutil.copy(tmp_path / f"private-{gw}" / f"{gw}.pub", tmp_path / "keys" / f"{gw}.pub")
    recorder = Recorder(cfg, store_of(cfg))
    recorder.start()
    wire = Wire(broker, topic_prefix, "attacker")
    try:
        wait_for(recorder.subscribed.is_set, what="recorder subscribed")
        yield recorder, wire, cfg
    finally:
        wire.close()
        recorder.stop()


def genuine_first_block_of_b(wire: Wire, keys: dict[str, Ed25519Signer], store: InfluxV1Store) -> blocks.Block:
    b1 = make_block(
        [measurement(n=0), measurement("12.002", n=1)],
        gateway="gw-b", first_seq=1, prev_hash=GENESIS_HASH, signer=keys["gw-b"], at_us=T0_US,
    )  # fmt: skip
    wire.publish(b1.text)
    wait_for(lambda: wire.stored("gw-b") == [(1, 2)], what="gw-b's first block confirmed")
    assert [r["hash"] for r in stored_blocks(store, "gw-b")] == [b1.hash]
    return b1


def test_a_block_claiming_another_gateway_is_refused_and_its_data_unchanged(
    recorder_and_wire: tuple[Recorder, Wire, Config], keys: dict[str, Ed25519Signer], v1_store: InfluxV1Store
) -> None:
    _, wire, _ = recorder_and_wire
    b1 = genuine_first_block_of_b(wire, keys, v1_store)
    # gateway A (its own key) publishes a block that says it is B's, with B's numbers
    claim = make_block(
        [measurement("11.000", n=0)], gateway="gw-b", first_seq=1, prev_hash=GENESIS_HASH,
        signer=keys["gw-a"], at_us=T0_US,
    )  # fmt: skip
    wire.publish(claim.text)
    wait_for(lambda: wire.dead_about(lambda d: d["payload"] == claim.text), what="the claim dead-lettered")
    (entry,) = wire.dead_about(lambda d: d["payload"] == claim.text)
    assert entry["gateway"] == "gw-b" and (entry["first_seq"], entry["last_seq"]) == (1, 1)
    assert "is not one of gateway 'gw-b''s keys" in entry["reason"] and entry["reported"] is False
    assert wire.refused("gw-b") == []  # B is not told on a stranger's word
    assert [(r["hash"], r["payload"]) for r in stored_blocks(v1_store, "gw-b")] == [(b1.hash, b1.text)]
    values = sorted(r["value"] for r in v1_store.query('SELECT "value" FROM inspection'))
    assert values == [12.001, 12.002]


def test_a_block_on_a_station_the_register_does_not_bind_is_refused(
    recorder_and_wire: tuple[Recorder, Wire, Config], keys: dict[str, Ed25519Signer], v1_store: InfluxV1Store,
    tmp_path: Path,
) -> None:  # fmt: skip
    recorder, wire, _ = recorder_and_wire
    (tmp_path / "keys" / "register.yaml").write_text("gateways: {gw-a: {stations: [st-20]}}\n")
    recorder.keyring = KeyRing.load(tmp_path / "keys")  # as after a restart with the new register
    block = make_block(
        [measurement()], gateway="gw-a", first_seq=1, prev_hash=GENESIS_HASH, signer=keys["gw-a"], at_us=T0_US
    )
    wire.publish(block.text)  # on st-10, properly signed, but gw-a belongs to st-20
    wait_for(lambda: wire.dead_about(lambda d: d["gateway"] == "gw-a"), what="dead-lettered")
    assert "does not bind gateway 'gw-a' to station 'st-10'" in wire.dead[-1]["reason"]
    assert stored_blocks(v1_store, "gw-a") == []


def test_a_gateway_not_in_the_register_is_refused(
    recorder_and_wire: tuple[Recorder, Wire, Config], keys: dict[str, Ed25519Signer], v1_store: InfluxV1Store
) -> None:
    recorder, wire, _ = recorder_and_wire
    block = make_block(
        [measurement()], gateway="gw-stranger", first_seq=1, prev_hash=GENESIS_HASH,
        signer=keys["gw-stranger"], at_us=T0_US,
    )  # fmt: skip
    wire.publish(block.text)
    wait_for(lambda: wire.dead_about(lambda d: d["gateway"] == "gw-stranger"), what="dead-lettered")
    (entry,) = wire.dead
    assert "'gw-stranger' is not in the register" in entry["reason"] and entry["payload"] == block.text
    assert stored_blocks(v1_store, "gw-stranger") == [] and wire.refused("gw-stranger") == []
    assert recorder.stats.blocks_refused == 1 and recorder.stats.records_written == 0


def test_a_forged_next_block_is_refused_and_the_genuine_one_is_stored_and_verifies(
    recorder_and_wire: tuple[Recorder, Wire, Config], keys: dict[str, Ed25519Signer], v1_store: InfluxV1Store,
    tmp_path: Path,
) -> None:  # fmt: skip
    _, wire, _ = recorder_and_wire
    b1 = genuine_first_block_of_b(wire, keys, v1_store)
    impostor = Ed25519Signer.from_file(tmp_path / "private-gw-a" / "gw-a.key")
    # the forger knows B's head and key id, not its private key: the signature cannot match
    forged = make_block(
        [measurement("12.019", n=5)], gateway="gw-b", first_seq=3, prev_hash=b1.hash,
        signer=_Claiming(impostor, keys["gw-b"].key_id), at_us=T0_US + 10,
    )  # fmt: skip
    wire.publish(forged.text)
    wait_for(lambda: wire.dead_about(lambda d: d["payload"] == forged.text), what="the forgery dead-lettered")
    assert "signature does not match key" in wire.dead[-1]["reason"]
    genuine = make_block(
        [measurement("11.990", n=6)], gateway="gw-b", first_seq=3, prev_hash=b1.hash, signer=keys["gw-b"],
        at_us=T0_US + 10,
    )  # fmt: skip
    wire.publish(genuine.text)
    wait_for(lambda: (3, 3) in wire.stored("gw-b"), what="the genuine block confirmed")
    rows = sorted(stored_blocks(v1_store, "gw-b"), key=lambda r: r["first_seq"])
    assert [r["hash"] for r in rows] == [b1.hash, genuine.hash]
    ring = KeyRing.load(tmp_path / "keys")
    for row in rows:  # what is stored is the block as sealed, and its signature is B's
        block = blocks.read(row["payload"], strict=True)
        ring.verify("gw-b", block.key_id, block.digest, block.signature)
    assert rows[1]["payload"] == genuine.text


def test_a_seq_stored_with_other_content_is_refused_and_the_stored_point_unchanged(
    recorder_and_wire: tuple[Recorder, Wire, Config], keys: dict[str, Ed25519Signer], v1_store: InfluxV1Store
) -> None:
    recorder, wire, _ = recorder_and_wire
    b1 = genuine_first_block_of_b(wire, keys, v1_store)
    before = v1_store.query("SELECT * FROM inspection WHERE gateway = 'gw-b'")
    # B's own key (stolen, or a gateway whose journal was wiped): seq 1..2 again, other values,
    # even at the very same times
    again = make_block(
        [measurement("12.015", n=0), measurement("12.016", n=1)],
        gateway="gw-b", first_seq=1, prev_hash=GENESIS_HASH, signer=keys["gw-b"], at_us=T0_US,
    )  # fmt: skip
    wire.publish(again.text)
    wait_for(lambda: wire.refused("gw-b"), what="the gateway told of the refusal")
    (refusal,) = wire.refused("gw-b")
    assert (refusal["first"], refusal["last"]) == (1, 2)
    assert "already stored as block 1..2 with other content" in refusal["reason"]
    assert wire.dead[-1]["payload"] == again.text and wire.dead[-1]["reported"] is True
    assert v1_store.query("SELECT * FROM inspection WHERE gateway = 'gw-b'") == before
    assert [r["hash"] for r in stored_blocks(v1_store, "gw-b")] == [b1.hash]
    # the same block again (a redelivery) is confirmed and changes nothing
    wire.publish(b1.text)
    wait_for(lambda: wire.stored("gw-b").count((1, 2)) == 2, what="the redelivery confirmed")
    assert recorder.stats.blocks_again >= 1
    # a block at other seq numbers whose records would land on the stored records' times
    overlap = make_block(
        [measurement("12.010", n=2)], gateway="gw-b", first_seq=7, prev_hash=b1.hash, signer=keys["gw-b"],
        at_us=T0_US + 1,
    )  # fmt: skip
    wire.publish(overlap.text)
    wait_for(lambda: len(wire.refused("gw-b")) == 2, what="the overlap refused")
    assert "overlap stored block 1..2" in wire.refused("gw-b")[-1]["reason"]
    assert v1_store.query("SELECT * FROM inspection WHERE gateway = 'gw-b'") == before


class _Claiming:
    """Signs with one key while claiming another's key id (what a forger without the key does)."""

    def __init__(self, signer: Ed25519Signer, key_id: str) -> None:
        self._signer = signer
        self.key_id = key_id

    def sign(self, digest: bytes) -> str:
        return self._signer.sign(digest)
