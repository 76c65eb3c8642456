"""Real, signed evidence for tests and benchmarks: a gateway's chain of blocks.

Blocks are sealed with :func:`collector.chain.blocks.seal` and an Ed25519 key made by
:func:`collector.chain.keys.generate` in a directory of the caller's, exactly as a gateway
seals them; records have the keys of the record schemas, without the block's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.chain import blocks, checkpoints
from collector.chain.blocks import Block, format_utc_us
from collector.chain.keys import Ed25519Signer, Signer, generate

#: a fixed, recent instant: inside InfluxDB's default (infinite) retention
BASE_US = 1_795_000_000_000_000

Record = dict[str, Any]


def record_id(n: int) -> str:
    """A UUIDv7-shaped id, unique per ``n`` (tests want ids they can predict)."""
    return str(uuid.UUID(int=(0x0193A0A0_0000_7000_8000_000000000000 | n)))


_ids = iter(range(1, 1 << 40))


def measurement(
    serial: str | None = "SN-000001",
    characteristic: str = "bore-d",
    value: str = "12.004",
    *,
    verdict: str = "pass",
    part_number: str = "P-100",
    lot: str | None = "L-7",
    work_order: str | None = "WO-1",
    gauge: str | None = "G-17",
    measured_at_us: int = BASE_US,
    **overrides: Any,
) -> Record:
    """A measurement record as a gateway puts it in a block (no block keys)."""
    r: Record = {
        "kind": "measurement",
        "id": record_id(next(_ids)),
        "operator": "op-12",
        "part_number": part_number,
        "plan_revision": "C",
        "serial": serial,
        "lot": lot,
        "work_order": work_order,
        "characteristic": characteristic,
        "characteristic_name": "Bore diameter",
        "nominal": "12.000",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "decimals": 3,
        "criticality": "major",
        "gauge": gauge,
        "gauge_calibration_due": "2027-01-31",
        "calibration_status": None,
        "device": "caliper-1",
        "channel": "0",
        "measured_at": format_utc_us(measured_at_us),
        "raw": f"+{value}\r",
        "raw_encoding": "text",
        "reading_value": value,
        "reading_unit": "mm",
        "value": value,
        "judged_value": value,
        "deviation": "0.004",
        "verdict": verdict,
        "limit": None,
        "reason_for_test": "ongoing",
        "supersedes": None,
        "reason": None,
    }
    r.update(overrides)
    return r


def part(serial: str, records: Sequence[str], *, verdict: str = "accept", **overrides: Any) -> Record:
    r: Record = {
        "kind": "part",
        "id": record_id(next(_ids)),
        "operator": "op-12",
        "part_number": "P-100",
        "plan_revision": "C",
        "serial": serial,
        "lot": "L-7",
        "work_order": "WO-1",
        "verdict": verdict,
        "records": list(records),
        "failed": [],
        "missing": [],
        "released_by": "op-12",
        "reason": None,
        "reason_for_test": "ongoing",
    }
    r.update(overrides)
    return r


def event(kind: str, **fields: Any) -> Record:
    """An invalidation, nonconformance, disposition, refusal or audit record."""
    return {"kind": kind, "id": record_id(next(_ids)), **fields}


@dataclass
class GatewayChain:
    """A gateway's chain, sealed block by block, with its key in ``keydir``."""

    gateway: str
    keydir: Path
    site: str = "plant-a"
    line: str = "line-2"
    next_us: int = BASE_US
    next_seq: int = 1
    head: str = blocks.GENESIS_HASH
    signer: Signer | None = None
    sealed: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.signer is None:
            key = self.keydir / f"{self.gateway}.key"
            if not key.exists():
                generate(self.gateway, self.keydir)
            self.signer = Ed25519Signer.from_file(key)

    def seal(self, records: Sequence[Record], station: str = "st-10", *, at_us: int | None = None) -> Block:
        """The next block of this gateway (at ``at_us``, or right after the previous one)."""
        at = self.next_us if at_us is None else at_us
        block = blocks.seal(
            records,
            gateway=self.gateway,
            site=self.site,
            line=self.line,
            station=station,
            first_seq=self.next_seq,
            recorded_at=format_utc_us(at),
            clock_synced=True,
            prev_hash=self.head,
            signer=self.signer,
        )
        self.next_seq += len(records)
        self.next_us = at + len(records) + 1000
        self.head = block.hash
        self.sealed.append(block)
        return block

    def checkpoint(self, at_us: int | None = None) -> checkpoints.Checkpoint:
        """The gateway's checkpoint of its newest block."""
        last = self.sealed[-1]
        at = self.next_us if at_us is None else at_us
        return checkpoints.make(self.gateway, last.last_seq, last.hash, at, self.signer)


def forge(like: Block, records: Sequence[Record], signer: Signer | None, **header: Any) -> Block:
    """A block sealed as an attacker would: ``like``'s header with ``header``'s changes, their key."""
    fields: dict[str, Any] = {
        "gateway": like.gateway,
        "site": like.site,
        "line": like.line,
        "station": like.station,
        "first_seq": like.first_seq,
        "recorded_at": like.recorded_at,
        "clock_synced": like.clock_synced,
        "prev_hash": like.prev_hash,
    }
    fields.update(header)
    return blocks.seal(records, signer=signer, **fields)
