"""The dashboard's reads of the store (:mod:`collector.dashboard.records`) against a real InfluxDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.chain.keys import Ed25519Signer, KeyRing, generate
from collector.dashboard.records import stored_acknowledgements
from collector.store.influx_v1 import InfluxV1Store
from collector.store.lineprotocol import lines_for_block
from tests.store.chains import BASE_US, GatewayChain, event, forge

pytestmark = pytest.mark.services


def ack(alert_id: str, by: str, comment: str) -> dict[str, object]:
    return event(
        "audit", event="alert_ack", by=by, subject=alert_id, detail=f"alert acknowledged: {comment}", operator=None
    )


def test_earlier_acknowledgements_come_from_verified_blocks_only(
    v1_store: InfluxV1Store, keydir: Path, tmp_path: Path
) -> None:
    gw = GatewayChain("gw-1", keydir)
    genuine = gw.seal([ack("r-9", "sam", "probe contaminated")])
    other = gw.seal([event("audit", event="sign_in", by="op-1", subject=None, detail="signed in")])
    # an acknowledgement sealed with a key that is not gw-1's (a rogue publisher)
    generate("gw-1", tmp_path / "rogue")
    rogue = Ed25519Signer.from_file(tmp_path / "rogue" / "gw-1.key")
    forged = forge(other, [ack("r-10", "sam", "forged")], rogue, first_seq=3, prev_hash=other.hash)
    v1_store.write_lines([line for b in (genuine, other, forged) for line in lines_for_block(b)])

    found = dict(stored_acknowledgements(v1_store, BASE_US - 1, KeyRing.load(keydir)))

    assert set(found) == {"r-9"}
    assert found["r-9"]["by"] == "sam" and found["r-9"]["comment"] == "probe contaminated"
    assert found["r-9"]["record"] == genuine.records[0]["id"]
    # without a register signatures are not checked: the rogue one counts too (the dashboard warns of it)
    assert set(dict(stored_acknowledgements(v1_store, BASE_US - 1))) == {"r-9", "r-10"}
