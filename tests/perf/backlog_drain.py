"""Benchmark: draining a journal backlog after an outage, against a real Mosquitto.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/backlog_drain.py [--records 1000000] [--max-records-per-message 500]

What it does:

1. fills a fresh gateway journal with ``--records`` measurement records sealed in signed
   blocks (Ed25519, a key made for the run; ``--block-records`` per block), as a gateway
   does while its broker is away (the fill is not timed: it is the outage);
2. starts a real Mosquitto (``collector.testing.services.Mosquitto``) on a free loopback port and
   a :class:`collector.gateway.publisher.Publisher` on that journal;
3. times from the publisher's start until every record is acknowledged by the broker and
   marked delivered (``journal.backlog() == 0``), sampling the process's resident memory
   every 0.2 s, so a backlog read into memory would show as growth.

The design target: a backlog of 1,000,000 records drains at >= 20,000
records/s without memory growing (stream from the journal, never load it). It prints one
JSON line: records, seconds, records_per_s, rss at start / peak / growth, messages sent.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from collector.chain.keys import Ed25519Signer, generate  # noqa: E402
from collector.config import MqttSettings  # noqa: E402
from collector.gateway.journal import Journal  # noqa: E402
from collector.gateway.publisher import Publisher  # noqa: E402
from collector.inspection.models import Characteristic  # noqa: E402
from collector.inspection.records import measurement_record  # noqa: E402
from collector.inspection.tolerance import judge  # noqa: E402
from collector.testing.services import Mosquitto  # noqa: E402
from drivers.base import Reading  # noqa: E402

CHAR = Characteristic(
    id="D1", name="Bore", nominal=Decimal("12.000"), lower_tol=Decimal("-0.02"), upper_tol=Decimal("0.02"),
    unit="mm", decimals=3,
)  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def signed_journal(directory: Path, gateway: str = "gw-bench", block_records: int = 1000) -> Journal:
    """A fresh journal whose blocks are signed with a new Ed25519 key (``directory/keys``)."""
    private, _, _ = generate(gateway, directory / "keys")
    signer = Ed25519Signer.from_file(private)
    return Journal(directory / "journal.sqlite", gateway, signer=signer, max_block_records=block_records)


def fill(journal: Journal, n: int, batch: int = 2000) -> None:
    t0 = time.time_ns()
    for start in range(0, n, batch):
        drafts = []
        for i in range(start, min(n, start + batch)):
            value = Decimal(11990 + i % 21) / 1000
            reading = Reading("caliper-1", "01", value, "mm", b"01A+0012.000\r", t0 + i * 1000)
            drafts.append(
                measurement_record(
                    site="plant-1",
                    line="line-a",
                    station="st-10",
                    context={"part_number": "HX-4711", "serial": f"SN{i // 5:07d}", "lot": "L-1", "operator": "op-1"},
                    plan_revision="C",
                    characteristic=CHAR,
                    judgement=judge(CHAR, value, "mm"),
                    reading=reading,
                    gauge="CAL-0042",
                    gauge_calibration_due="2027-06-30",
                )
            )
        journal.append(drafts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--max-records-per-message", type=int, default=500)
    ap.add_argument("--max-inflight", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--block-records", type=int, default=1000, help="records per block (gateway.max_block_records)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="backlog-drain-") as tmp:
        journal = signed_journal(Path(tmp), block_records=args.block_records)
        t_fill = time.monotonic()
        fill(journal, args.records)
        fill_s = time.monotonic() - t_fill
        print(f"filled {args.records} records in {fill_s:.1f} s", file=sys.stderr)
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        settings = MqttSettings(
            host=broker.host,
            port=broker.port,
            topic_prefix="bench",
            max_records_per_message=args.max_records_per_message,
            max_inflight=args.max_inflight,
            max_message_bytes=64 * 1024 * 1024,
        )
        publisher = Publisher(
            journal, settings, gateway_id="gw-bench", site="plant-1", line="line-a", stations=["st-10"]
        )
        rss_start = rss_mb()
        peak = [rss_start]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        publisher.start()
        ok = False
        try:
            while time.monotonic() - t0 < args.timeout:
                if journal.backlog() == 0:
                    ok = True
                    break
                time.sleep(0.1)
            seconds = time.monotonic() - t0
        finally:
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            done.set()
            sampler.join()
            publisher.stop()
            journal.close()
            broker.stop()
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(
            json.dumps(
                {
                    "benchmark": "backlog_drain",
                    "ok": ok,
                    "records": args.records,
                    "seconds": round(seconds, 2),
                    "records_per_s": round(args.records / seconds, 1),
                    "cpu_us_per_record": round(cpu_s * 1e6 / args.records, 2),
                    "rss_start_mb": round(rss_start, 1),
                    "rss_peak_mb": round(peak[0], 1),
                    "rss_growth_mb": round(peak[0] - rss_start, 1),
                    "messages_sent": publisher.stats.messages_sent,
                    "blocks_sent": publisher.stats.blocks_sent,
                    "block_records": args.block_records,
                    "journal_bytes_per_record": round(journal.used_bytes / args.records, 1),
                    "records_per_message": round(args.records / max(1, publisher.stats.messages_sent), 1),
                    "fill_seconds": round(fill_s, 1),
                    "max_records_per_message": args.max_records_per_message,
                    "python": platform.python_version(),
                }
            )
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
