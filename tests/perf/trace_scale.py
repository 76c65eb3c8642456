"""Benchmark: ``collector trace --serial`` among 1,000,000 and 10,000,000 stored records.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/trace_scale.py [--sizes 1000000,10000000] [--serials 20] [--workdir DIR]

What it does:

1. starts a real InfluxDB 1.x (``collector.testing.services.InfluxD``) with its data in
   ``--workdir`` (a temporary directory by default; 10 M records take ~10 GB there);
2. fills it, untimed, with the schema-2 points of real signed blocks, written as line
   protocol straight to ``/write`` (``lines_for_block``): four gateways, each with a manual
   station (a caliper: one record per block, the part verdict in the part's last block) and
   an automatic one (a PLC: one block per poll cycle of up to 40 values), parts of 5 to 200
   records, values around the nominal (about 1 in 1,000 out of tolerance, each with its
   nonconformance), a lot per 400 parts, a work order per 2,000, re-measures (1 %), and
   invalidations (0.3 %) written later without the part's context (found only
   through the ``ref`` index). Records are about one second apart per gateway, so 10 M span
   a month (several shards);
3. at each size in ``--sizes`` (cumulative: the store grows to the next size), runs
   ``collector trace --config F --keys DIR --serial SN`` as a subprocess for ``--serials``
   serials spread over the whole fill, and checks that each printed exactly the serial's
   records plus the invalidations that point at them, all verified;
4. times the whole command (process start, imports, configuration, queries, verification,
   printing) and, in this process on a warm connection, the trace itself
   (:func:`collector.evidence.trace.trace_evidence` with the key directory).

It prints one JSON line per size: records stored, series in the database, and p50/p95/max
of the command's wall time and of the query part, and python's start-up with the imports of
``collector trace``. Targets (issue): <= 200 ms at 1 M, <= 300 ms at 10 M, not growing with
the total stored. Exit status 1 when a trace printed anything else than expected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from collector.chain import blocks  # noqa: E402
from collector.chain.blocks import Block, format_utc_us  # noqa: E402
from collector.chain.canonical import dumps_sorted  # noqa: E402
from collector.chain.keys import Ed25519Signer, KeyRing, generate  # noqa: E402
from collector.evidence.trace import TraceFilter, trace_evidence  # noqa: E402
from collector.store import queries  # noqa: E402
from collector.store.influx_v1 import InfluxV1Store  # noqa: E402
from collector.store.lineprotocol import lines_for_block  # noqa: E402
from collector.testing.services import InfluxD  # noqa: E402

START_US = 1_795_000_000_000_000
GATEWAYS = 4
LINES_PER_WRITE = 20_000


@dataclass
class Gateway:
    id: str
    signer: Ed25519Signer
    n: int  # its number
    seq: int = 1
    head: str = blocks.GENESIS_HASH
    us: int = START_US
    parts: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # invalidations written later

    def seal(self, records: list[dict[str, Any]], station: str) -> Block:
        block = blocks.seal(
            records,
            gateway=self.id,
            site="plant-a",
            line=f"line-{self.n}",
            station=station,
            first_seq=self.seq,
            recorded_at=format_utc_us(self.us),
            clock_synced=True,
            prev_hash=self.head,
            signer=self.signer,
            encoded=[dumps_sorted(r) for r in records],
        )
        self.seq += len(records)
        self.head = block.hash
        self.us += len(records) * 1_000_000 + random.randrange(1000)  # ~1 record a second
        return block


class Fill:
    """Generates parts gateway by gateway, round robin, and remembers some serials to trace."""

    def __init__(self, keydir: Path, rng: random.Random) -> None:
        self.rng = rng
        self.gateways = []
        for n in range(1, GATEWAYS + 1):
            gid = f"gw-{n}"
            if not (keydir / f"{gid}.key").exists():
                generate(gid, keydir)
            self.gateways.append(Gateway(gid, Ed25519Signer.from_file(keydir / f"{gid}.key"), n))
        self.records = 0
        self.ids = 0
        self.expected: dict[str, int] = {}  # serial -> records a trace must print
        self.parts = 0

    def _id(self) -> str:
        self.ids += 1
        return f"0193a0a0-0000-7000-8000-{self.ids:012x}"

    def _measurement(self, gw: Gateway, serial: str, c: int, lot: str, wo: str, station: str) -> dict[str, Any]:
        value = f"{self.rng.gauss(12, 0.006):.3f}"  # Cp about 1.1: a value in a few hundred fails
        verdict = "pass" if abs(float(value) - 12) <= 0.02 else "fail"
        return {
            "kind": "measurement",
            "id": self._id(),
            "operator": f"op-{gw.n}{station[-1]}",
            "part_number": f"HX-{4700 + gw.n}",
            "plan_revision": "C",
            "serial": serial,
            "lot": lot,
            "work_order": wo,
            "characteristic": f"C{c:03d}",
            "characteristic_name": f"Characteristic {c}",
            "nominal": "12.000",
            "lsl": "11.980",
            "usl": "12.020",
            "unit": "mm",
            "decimals": 3,
            "criticality": "major",
            "gauge": f"G-{gw.n}{station[-1]}",
            "gauge_calibration_due": "2027-06-30",
            "calibration_status": "valid",
            "device": f"dev-{station}",
            "channel": f"{c:02d}",
            "measured_at": format_utc_us(gw.us - 300_000),
            "raw": f"01A+00{value}\r",
            "raw_encoding": "text",
            "reading_value": value,
            "reading_unit": "mm",
            "value": value,
            "judged_value": value,
            "deviation": f"{float(value) - 12:.3f}",
            "verdict": verdict,
            "limit": None if verdict == "pass" else ("upper" if float(value) > 12 else "lower"),
            "reason_for_test": "ongoing",
            "supersedes": None,
            "reason": None,
        }

    def part(self, gw: Gateway) -> list[Block]:
        """One part of gateway ``gw``: its blocks (and invalidations of earlier parts, written now)."""
        gw.parts += 1
        self.parts += 1
        automatic = gw.parts % 2 == 0
        station = f"st-{gw.n}{'a' if automatic else 'm'}"
        serial = f"SN-{gw.n}{gw.parts:08d}"
        lot, wo = f"L-{gw.n}-{gw.parts // 400}", f"WO-{gw.n}-{gw.parts // 2000}"
        n = self.rng.randint(5, 200) - 1  # values; the part verdict is the last record
        values: list[dict[str, Any]] = []
        extra: list[dict[str, Any]] = []
        for c in range(n):
            m = self._measurement(gw, serial, c, lot, wo, station)
            values.append(m)
            if m["verdict"] == "fail":
                extra.append({"kind": "nonconformance", "id": self._id(), "measurement_id": m["id"],
                              "serial": serial, "part_number": m["part_number"], "characteristic": m["characteristic"],
                              "judged_value": m["judged_value"], "lsl": "11.980", "usl": "12.020",
                              "unit": "mm", "limit": m["limit"], "lot": lot, "work_order": wo,
                              "operator": m["operator"]})  # fmt: skip
            if self.rng.random() < 0.01:
                again = self._measurement(gw, serial, c, lot, wo, station)
                again.update(supersedes=m["id"], reason="re-measure")
                values.append(again)
            if self.rng.random() < 0.003:
                gw.pending.append({"kind": "invalidation", "id": self._id(), "target": m["id"], "by": "qe-1",
                                   "reason": "gauge slipped", "characteristic": m["characteristic"]})  # fmt: skip
                self.expected[serial] = self.expected.get(serial, 0) + 1
        verdict = {"kind": "part", "id": self._id(), "operator": values[0]["operator"],
                   "part_number": values[0]["part_number"], "plan_revision": "C", "serial": serial, "lot": lot,
                   "work_order": wo, "verdict": "accept", "records": [v["id"] for v in values][:50], "failed": [],
                   "missing": [], "released_by": values[0]["operator"], "reason": None,
                   "reason_for_test": "ongoing"}  # fmt: skip
        records = values + extra + [verdict]
        self.expected[serial] = self.expected.get(serial, 0) + len(records)
        out: list[Block] = []
        if automatic:
            for i in range(0, len(records), 40):
                out.append(gw.seal(records[i : i + 40], station))
        else:
            for r in records[:-2]:
                out.append(gw.seal([r], station))
            out.append(gw.seal(records[-2:], station))
        if len(gw.pending) >= 3 or (gw.pending and self.rng.random() < 0.05):
            out.append(gw.seal(gw.pending, station))
            gw.pending = []
        self.records += sum(len(b.records) for b in out)
        return out

    def state(self) -> dict[str, Any]:
        """What a later run needs to carry on filling (``--workdir``): the chains' heads, the counters."""
        return {
            "records": self.records,
            "ids": self.ids,
            "parts": self.parts,
            "expected": self.expected,
            "rng": [self.rng.getstate()[0], list(self.rng.getstate()[1]), self.rng.getstate()[2]],
            "gateways": [{"seq": g.seq, "head": g.head, "us": g.us, "parts": g.parts} for g in self.gateways],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.records, self.ids, self.parts, self.expected = (
            state["records"],
            state["ids"],
            state["parts"],
            state["expected"],
        )
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        for g, saved in zip(self.gateways, state["gateways"], strict=True):
            g.seq, g.head, g.us, g.parts = saved["seq"], saved["head"], saved["us"], saved["parts"]

    def blocks_until(self, total: int) -> Any:
        while self.records < total:
            for gw in self.gateways:
                yield from self.part(gw)


def fill_to(fill: Fill, store: InfluxV1Store, total: int) -> float:
    """Write parts until ``total`` records are stored; returns the seconds it took."""
    started = time.monotonic()
    batches: queue.Queue[list[str] | None] = queue.Queue(maxsize=3)
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            while (lines := batches.get()) is not None:
                store.write_lines(lines)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
            while batches.get() is not None:
                pass

    thread = threading.Thread(target=writer, name="writer")
    thread.start()
    lines: list[str] = []
    last_report = time.monotonic()
    try:
        for block in fill.blocks_until(total):
            lines.extend(lines_for_block(block))
            if len(lines) >= LINES_PER_WRITE:
                batches.put(lines)
                lines = []
                if failure:
                    raise failure[0]
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(
                    f"fill: {fill.records:,} records, {fill.records / (last_report - started):,.0f}/s", file=sys.stderr
                )
        # the invalidations still pending are written too: a trace finds them
        for gw in fill.gateways:
            if gw.pending:
                lines.extend(lines_for_block(gw.seal(gw.pending, f"st-{gw.n}m")))
                fill.records += len(gw.pending)
                gw.pending = []
        if lines:
            batches.put(lines)
    finally:
        batches.put(None)
        thread.join()
    if failure:
        raise failure[0]
    return time.monotonic() - started


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def startup(cmd: list[str]) -> float:
    """Median wall time of python starting with ``collector trace``'s imports (5 runs)."""
    code = "import collector.cli, collector.config, collector.evidence.trace, collector.store.factory"
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated record counts, ascending")
    ap.add_argument("--serials", type=int, default=20, help="serials traced at each size")
    ap.add_argument(
        "--workdir",
        default=None,
        help="keep InfluxDB's data and the fill's state here, and carry on from them next time "
        "(default: a temporary directory, removed at the end)",
    )
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(args.seed)
    python = str(Path(sys.executable))
    script = Path(sys.executable).parent / "collector"  # the console script, as people run it
    collector_cmd = [str(script)] if script.exists() else [python, "-m", "collector.cli"]
    ok = True
    with tempfile.TemporaryDirectory(prefix="trace-scale-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        keydir = work / "keys"
        influx = InfluxD(work / "influxdb").start(timeout=120)
        store = InfluxV1Store(influx.url, "quality", timeout=120)
        try:
            store.ensure_database()
            config = work / "trace.yaml"
            config.write_text(f"influxdb:\n  kind: v1\n  url: {influx.url}\n  database: quality\n  timeout: 60\n")
            fill = Fill(keydir, rng)
            saved = work / "fill-state.json"
            if saved.exists():
                fill.restore(json.loads(saved.read_text()))
            keys = KeyRing.load(keydir)
            start_s = startup(collector_cmd)
            fill_s = 0.0
            for size in sizes:
                if fill.records < size:
                    fill_s += fill_to(fill, store, size)
                    saved.write_text(json.dumps(fill.state()))
                stored = queries.count_records(store)
                series = sum(1 for _ in store.iter_query("SHOW SERIES"))
                serials = sorted(fill.expected)
                chosen = [serials[int(i * (len(serials) - 1) / max(1, args.serials - 1))] for i in range(args.serials)]
                command, query = [], []
                for serial in chosen:
                    t = time.perf_counter()
                    found = trace_evidence(store, TraceFilter(serial=serial), keys)
                    query.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    proc = subprocess.run(
                        [*collector_cmd, "trace", "--config", str(config), "--keys", str(keydir), "--serial", serial],
                        capture_output=True,
                        text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO)},
                    )
                    command.append(time.perf_counter() - t)
                    printed = json.loads(proc.stdout) if proc.returncode == 0 else []
                    if (
                        proc.returncode != 0
                        or len(printed) != fill.expected[serial]
                        or len(found.records) != fill.expected[serial]
                        or not all(r["verified"] for r in printed)
                    ):
                        ok = False
                        print(
                            f"trace of {serial}: exit {proc.returncode}, {len(printed)} printed, "
                            f"{len(found.records)} in process, {fill.expected[serial]} expected: {proc.stderr[-500:]}",
                            file=sys.stderr,
                        )
                print(
                    json.dumps(
                        {
                            "benchmark": "trace_scale",
                            "records_stored": stored,
                            "parts": fill.parts,
                            "series": series,
                            "serials_traced": len(chosen),
                            "records_per_trace_mean": round(statistics.mean(fill.expected[s] for s in chosen), 1),
                            "command": percentiles(command),
                            "query": percentiles(query),
                            "python_start_and_imports_ms": round(start_s * 1000, 1),
                            "fill_s": round(fill_s, 1),
                            "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
                            "ok": ok,
                        }
                    ),
                    flush=True,
                )
        finally:
            store.close()
            influx.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
