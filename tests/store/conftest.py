"""Fixtures for the store tests: a real influxd, and sealed inspection records."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from collector.inspection.models import Characteristic
from collector.inspection.records import GENESIS_HASH, format_utc_us, measurement_record, seal
from collector.inspection.tolerance import judge
from drivers.base import Reading

#: a fixed, recent instant: inside InfluxDB's default (infinite) retention, easy to read
BASE_US = 1_795_000_000_000_000

RecordFactory = Callable[..., tuple[dict[str, Any], str]]


# influxd, v1_store and require_binary come from tests/conftest.py


CHARACTERISTIC = Characteristic(
    id="bore-d",
    name="Bore diameter",
    nominal=Decimal("12.000"),
    lower_tol=Decimal("-0.020"),
    upper_tol=Decimal("0.020"),
    unit="mm",
    decimals=3,
)


def make_record(
    seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    *,
    value: str = "12.0041",
    recorded_at_us: int | None = None,
    gateway: str = "gw-1",
    context: dict[str, str | None] | None = None,
    **overrides: Any,
) -> tuple[dict[str, Any], str]:
    """A sealed measurement record and its payload text, as the journal would make them.

    ``overrides`` replace record keys before sealing (so the payload and hash agree).
    """
    at_us = BASE_US + seq * 1000 if recorded_at_us is None else recorded_at_us
    reading = Reading(
        device="caliper-1",
        channel="0",
        value=Decimal(value),
        unit="mm",
        raw=f"+{value}\r".encode(),
        timestamp_ns=at_us * 1000 - 250_000,
    )
    ctx: dict[str, str | None] = {
        "part_number": "P-100",
        "serial": f"SN-{seq:06d}",
        "lot": "L-7",
        "work_order": "WO-1",
        "operator": "op-12",
    }
    ctx.update(context or {})
    record = measurement_record(
        site="plant-a",
        line="line-2",
        station="st-10",
        context=ctx,
        plan_revision="C",
        characteristic=CHARACTERISTIC,
        judgement=judge(CHARACTERISTIC, Decimal(value), "mm"),
        reading=reading,
        gauge="G-17",
        gauge_calibration_due="2027-01-31",
    )
    record.update(gateway=gateway, seq=seq, recorded_at=format_utc_us(at_us), clock_synced=True)
    record.update(overrides)
    payload = seal(record, prev_hash)
    return record, payload


@pytest.fixture
def record_factory() -> RecordFactory:
    return make_record
