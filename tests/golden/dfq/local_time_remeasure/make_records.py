"""How records.json of this case was made (run once; the expected file was written by hand).

Run from the repository root: ``.venv/bin/python tests/golden/dfq/local_time_remeasure/make_records.py``.
Each record is sealed into a block of its own with the HMAC key ``golden`` (gateway chain
from seq 1), so the block hashes are real, as in the other cases.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from collector.chain import blocks
from collector.chain.keys import HmacSigner
from collector.inspection.models import Characteristic, Criticality
from collector.inspection.records import format_utc_us, invalidation_record, measurement_record
from collector.inspection.tolerance import judge
from drivers.base import Reading

D1 = Characteristic(
    id="D1", name="Bore diameter", nominal=Decimal("12.000"), lower_tol=Decimal("-0.020"),
    upper_tol=Decimal("0.020"), unit="mm", decimals=3, criticality=Criticality.CRITICAL,
)  # fmt: skip
L1 = Characteristic(
    id="L1", name="Overall length", nominal=Decimal("45.00"), lower_tol=Decimal("-0.05"),
    upper_tol=Decimal("0.05"), unit="mm", decimals=2,
)  # fmt: skip
SITE = {"site": "plant-1", "line": "line-a", "station": "st-10"}


def at(text: str) -> int:
    """Nanoseconds since the epoch of a UTC time."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1_000_000) * 1000


def value(c: Characteristic, v: str, when: str, serial: str, **extra: Any) -> dict[str, Any]:
    reading = Reading("caliper-1", "01", Decimal(v), "mm", f"01A+{v}\r".encode(), at(when))
    context = {"part_number": "HX-4711", "serial": serial, "lot": "L-9", "operator": "op-42", "work_order": "WO-7"}
    return measurement_record(
        **SITE, context=context, plan_revision="C", characteristic=c, judgement=judge(c, Decimal(v), "mm"),
        reading=reading, gauge="CAL-0042", gauge_calibration_due="2027-06-30", calibration_status="valid", **extra,
    )  # fmt: skip


def main() -> None:
    records = [
        value(D1, "12.004", "2026-10-25T00:30:00.250", "HX000201"),  # 02:30 CEST
        value(L1, "45.01", "2026-10-25T00:59:59.900", "HX000201"),  # 02:59:59 CEST
        value(D1, "12.030", "2026-10-25T01:10:00.000", "HX000202"),  # 02:10 CET, the hour repeated
        value(L1, "44.98", "2026-10-25T01:11:00.000", "HX000202"),
    ]
    records.append(
        value(
            D1, "12.006", "2026-10-25T01:15:00.000", "HX000202", supersedes=records[2]["id"], reason="gauge not seated"
        )
    )
    records += [
        value(D1, "11.999", "2026-10-25T23:30:00.000", "HX000203"),  # 00:30 the next day, local
        value(L1, "45.00", "2026-10-25T23:31:00.000", "HX000203"),
    ]
    invalidation = invalidation_record(
        **SITE, context={"part_number": "HX-4711", "serial": "HX000203", "operator": "op-42"},
        target=records[-1]["id"], characteristic="L1", by="op-42", reason="gauge dropped",
    )  # fmt: skip
    records.append(invalidation)
    signer = HmacSigner(b"golden")
    prev, out = "0" * 64, []
    for seq, record in enumerate(records, start=1):
        body = {k: v for k, v in record.items() if k not in SITE}
        recorded = record.get("measured_at") or format_utc_us(at("2026-10-25T23:32:00.000") // 1000)
        block = blocks.seal(
            [body], gateway="gw-a", **SITE, first_seq=seq, recorded_at=str(recorded), clock_synced=True,
            prev_hash=prev, signer=signer,
        )  # fmt: skip
        prev = block.hash
        for r in block.materialise():
            r.update(
                block_hash=block.hash, verified=True, verification="verified: signed with key hmac of gateway gw-a"
            )
            out.append(dict(sorted(r.items())))
    path = Path(__file__).with_name("records.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
