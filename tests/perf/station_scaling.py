"""Benchmark: a station's work per reading against the size of its plan (it must stay flat).

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/station_scaling.py                     # plans of 5, 50, 200, 1000
    .venv/bin/python tests/perf/station_scaling.py --sizes 200 --parts 200

For each plan size N it builds an automatic station (fixed part number, serials numbered by
the station, no operator) whose one PLC device binds N channels to the N characteristics of
the plan, as ``tests/perf/peer_workload.py`` does, and feeds it whole parts: N readings each,
one per channel, so that every part completes and gets its part record. It times
``Station.handle`` alone (no journal, no broker, no gateway thread) and prints one JSON line:
per size, µs of CPU per reading (``time.process_time``), readings, parts and records made.
The station's state, which the gateway saves once per batch of readings, is timed apart
(``state_us_per_part``: one ``Station.state()`` per part, at the part's last reading, when it
is largest), since it is O(N) per batch by nature, not per reading.

``flat``: the cost per reading at the largest size is within 1.5x of the smallest. Exit
status 1 when not, or when a part did not come out complete with one record per reading.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from collector import config as config_mod  # noqa: E402
from collector.inspection.station import Station  # noqa: E402
from drivers.base import Reading, ok_reading  # noqa: E402

CONFIG = """\
gauges:
  - {{id: PLC-1, type: plc-sensor, calibration_due: "2099-01-01"}}
plans:
  - part_number: PW-1
    revision: A
    characteristics:
{characteristics}
stations:
  - id: st-plc
    plan: PW-1
    part: {{part_number: PW-1, serial: "PW{{n:08d}}", operator: null}}
    require_operator: false     # automatic: the PLC measures, nobody signs in
    devices:
      - id: plc-1
        driver: modbus
        gauge: PLC-1
        transport: tcp
        host: 127.0.0.1
        port: 502
        channels: {{{channels}}}
        slaves:
          - unit: 1
            poll_interval: 0.01
            points: [{points}]
"""


def build_station(n: int) -> Station:
    chars = "\n".join(
        f'      - {{id: C{i:04d}, name: "register {100 + i}", lsl: "0", usl: "65535", unit: N, decimals: 0}}'
        for i in range(n)
    )
    text = CONFIG.format(
        characteristics=chars,
        channels=", ".join(f"r{i}: C{i:04d}" for i in range(n)),
        points=", ".join(f"{{name: r{i}, address: {100 + i}, unit: N}}" for i in range(n)),
    )
    config = config_mod.parse(text, "<station_scaling>")
    gauges = {g.id: g for g in config.gauges}
    plans = {p.part_number: p for p in config.plans}
    return Station(config.stations[0], plans, gauges, site="plant-1", line="line-a")


def part_readings(n: int, part: int) -> list[Reading]:
    ts = time.time_ns()
    return [
        ok_reading("plc-1", f"r{i}", Decimal((part + i) % 65536), "N", ((part + i) % 65536).to_bytes(2, "big"), ts)
        for i in range(n)
    ]


def measure(n: int, parts: int) -> dict[str, Any]:
    station = build_station(n)
    cycles = [part_readings(n, p) for p in range(parts)]
    records = complete = 0
    handle = station.handle
    state_s = 0.0
    spent = 0.0
    for cycle in cycles:
        t0 = time.process_time()
        for reading in cycle:
            out = handle(reading)
            records += len(out.drafts)
            complete += sum(1 for d in out.drafts if d["kind"] == "part" and d["verdict"] == "accept")
        t1 = time.process_time()
        station.state()
        state_s += time.process_time() - t1
        spent += t1 - t0
    readings = n * parts
    return {
        "plan_size": n,
        "readings": readings,
        "parts_accepted": complete,
        "records": records,
        "us_per_reading": round(spent / readings * 1e6, 2),
        "state_us_per_part": round(state_s / parts * 1e6, 1),
        "ok": complete == parts and records == readings + parts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5,50,200,1000", help="plan sizes, comma-separated")
    parser.add_argument("--readings", type=int, default=100_000, help="readings per size (whole parts)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [measure(n, max(1, args.readings // n)) for n in sizes]
    small, large = runs[0]["us_per_reading"], runs[-1]["us_per_reading"]
    flat = large <= 1.5 * small
    out = {
        "benchmark": "station_scaling",
        "ok": flat and all(r["ok"] for r in runs),
        "flat": flat,
        "largest_over_smallest": round(large / small, 2) if small else None,
        "python": platform.python_version(),
        "runs": runs,
    }
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
