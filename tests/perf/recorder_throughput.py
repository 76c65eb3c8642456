"""Benchmark: recorder throughput, MQTT into a real InfluxDB 1.x, acknowledging after the write.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/recorder_throughput.py [--records 200000] [--batch-size 5000]

What it does: fills a gateway journal with measurement records sealed in signed blocks (not
timed; ``--block-records`` per block), starts a real Mosquitto and InfluxDB
(``collector.testing.services``), a recorder with every check on (topic, register, Ed25519
signature, hash, each record against its model, the seq guard; batched line-protocol writes,
manual acks, end-to-end answers) and a publisher on the journal, and times from the
publisher's start until InfluxDB holds every record (``SELECT count``). The publisher, the recorder
and the InfluxDB process share this 2-core machine. The design target is
>= 50,000 records/s from MQTT into InfluxDB. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# the journal is filled exactly as in the backlog benchmark (this script's own folder is on sys.path)
from backlog_drain import fill, signed_journal  # noqa: E402

from collector import config as config_mod  # noqa: E402
from collector.gateway.publisher import Publisher  # noqa: E402
from collector.recorder.daemon import Recorder  # noqa: E402
from collector.store.factory import open_store  # noqa: E402
from collector.testing.services import InfluxD, Mosquitto  # noqa: E402


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of another process (its children not included)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name (numbered ones summed)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = t.name.split(" ")[0].rstrip("0123456789-")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def profiled(profiles: dict[str, cProfile.Profile], name: str, fn: Any) -> Any:
    """``fn`` run under a profile of its own thread's CPU time (cProfile sees one thread only)."""

    def run(*a: Any, **kw: Any) -> Any:
        prof = profiles.setdefault(f"{name}-{threading.get_ident()}", cProfile.Profile(time.thread_time))
        return prof.runcall(fn, *a, **kw)

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--max-records-per-message", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--block-records", type=int, default=200, help="records per block (a PLC's poll cycle)")
    ap.add_argument("--profile", default=None, help="cProfile the recorder's threads into PREFIX.<thread>.pstats")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        journal = signed_journal(Path(tmp), block_records=args.block_records)
        fill(journal, args.records)
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        influx = InfluxD(Path(tmp) / "influxdb").start(timeout=30)
        cfg = config_mod.parse(
            json.dumps(
                {
                    "mqtt": {
                        "host": broker.host,
                        "port": broker.port,
                        "topic_prefix": "bench",
                        "max_records_per_message": args.max_records_per_message,
                        "max_message_bytes": 64 * 1024 * 1024,
                    },
                    "influxdb": {"kind": "v1", "url": influx.url, "database": "bench"},
                    "recorder": {
                        "group": "bench",
                        "client_id": "rec-bench",
                        "keys": str(Path(tmp) / "keys"),
                        "batch_size": args.batch_size,
                        "dead_letter_file": str(Path(tmp) / "dead.jsonl"),
                    },
                }
            ),
            "bench",
        )
        assert cfg.influxdb is not None
        recorder = Recorder(cfg, open_store(cfg.influxdb))
        profiles: dict[str, cProfile.Profile] = {}
        if args.profile:
            for name in ("_run", "_write_loop", "_on_message"):
                setattr(recorder, name, profiled(profiles, name.strip("_"), getattr(recorder, name)))
        recorder.start()
        recorder.subscribed.wait(10)
        publisher = Publisher(
            journal, cfg.mqtt, gateway_id="gw-bench", site="plant-1", line="line-a", stations=["st-10"]
        )
        store = open_store(cfg.influxdb)
        stored = 0
        cpu0 = {"influxd": process_cpu(influx.pid), "mosquitto": process_cpu(broker.pid), **threads_cpu()}
        t0 = time.monotonic()
        publisher.start()
        try:
            while time.monotonic() - t0 < args.timeout:
                rows = store.query('SELECT count("seq") FROM "inspection"')
                stored = int(rows[0]["count"]) if rows else 0
                if stored >= args.records:
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - t0
            cpu1 = {"influxd": process_cpu(influx.pid), "mosquitto": process_cpu(broker.pid), **threads_cpu()}
        finally:
            publisher.stop()
            recorder.stop()
            store.close()
            journal.close()
            influx.stop()
            broker.stop()
            for name, prof in profiles.items():
                prof.dump_stats(f"{args.profile}.{name}.pstats")
        print(
            json.dumps(
                {
                    "benchmark": "recorder_throughput",
                    "ok": stored == args.records,
                    "records": args.records,
                    "stored": stored,
                    "seconds": round(seconds, 2),
                    "records_per_s": round(stored / seconds, 1),
                    "batches": recorder.stats.batches,
                    "block_records": args.block_records,
                    "seq_queries": recorder.stats.seq_queries,
                    "blocks_refused": recorder.stats.blocks_refused,
                    "records_per_batch": round(stored / max(1, recorder.stats.batches), 1),
                    "batch_size": args.batch_size,
                    "max_records_per_message": args.max_records_per_message,
                    "cpu_us_per_record": {
                        k: round((v - cpu0.get(k, 0.0)) / max(stored, 1) * 1e6, 2) for k, v in sorted(cpu1.items())
                    },
                    "python": platform.python_version(),
                }
            )
        )
        return 0 if stored == args.records else 1


if __name__ == "__main__":
    sys.exit(main())
