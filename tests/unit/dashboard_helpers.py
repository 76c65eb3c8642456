"""What the dashboard's unit tests share: a clock to set by hand, users with cheap hashes,
records as gateways seal them into blocks, and alert messages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from collector.chain import blocks
from collector.people.accounts import DashboardUser, hash_password

CHEAP = {"n": 2**8, "r": 8, "p": 1}  # the stored parameters are used to verify: fast tests


def cheap_hash(password: str) -> str:
    return hash_password(password, **CHEAP)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def users() -> list[DashboardUser]:
    return [
        DashboardUser(name="sam", role="supervisor", password_hash=cheap_hash("sam-pw")),
        DashboardUser(name="vera", role="viewer", password_hash=cheap_hash("vera-pw")),
    ]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


NOW = utc(2026, 11, 21, 10, 0).timestamp()


def at(minutes: float) -> str:
    t = dt.datetime.fromtimestamp(NOW + minutes * 60, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(seq: int, minutes: float = 0, **fields: Any) -> dict[str, Any]:
    """A record as the dashboard sees it once its block is read (seq and time from the block)."""
    base = {
        "kind": "measurement",
        "id": f"r{seq}",
        "gateway": "gw-1",
        "seq": seq,
        "recorded_at": at(minutes),
        "serial": "SN1",
        "characteristic": "D1",
        "judged_value": "12.001",
        "unit": "mm",
        "verdict": "pass",
    }
    return {**base, **fields}


def block_line(*records: dict[str, Any], station: str = "st-10") -> bytes:
    """Consecutive records (one gateway, one station) sealed into one block, as a message line."""
    first = records[0]
    own = [{k: v for k, v in r.items() if k not in blocks.MATERIALISED_KEYS} for r in records]
    block = blocks.seal(
        own,
        gateway=str(first["gateway"]),
        site="s",
        line="l",
        station=station,
        first_seq=int(first["seq"]),
        recorded_at=str(first["recorded_at"]),
        clock_synced=True,
        prev_hash=blocks.GENESIS_HASH,
        signer=None,
    )
    return block.text.encode()


def alert(record_id: str, minutes: float = 0, kind: str = "out_of_tolerance") -> dict[str, Any]:
    return {
        "kind": kind,
        "severity": "critical",
        "record_id": record_id,
        "gateway": "gw-1",
        "seq": 1,
        "site": "s",
        "line": "l",
        "station": "st-10",
        "serial": "SN1",
        "characteristic": "D1",
        "judged_value": "12.035",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "limit": "upper",
        "at": at(minutes),
    }
