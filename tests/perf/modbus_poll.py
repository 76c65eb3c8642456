"""Benchmark: Modbus polling throughput and CPU cost per reading, driver against the PLC simulator.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/modbus_poll.py [--duration 10] [--interval 0.01]
        [--slaves 10] [--dead 1] [--registers 100] [--timeout 0.1]

What it does:

1. starts the PLC simulator (``python -m simulators.plc``) in a process of its own on a
   free loopback port, with ``--slaves`` units of which the last ``--dead`` never answer;
2. gives every unit a map of ``--registers`` holding registers at 100..: three fifths of
   them uint16 points, then a hole of 8 unused registers, then float32 points (CDAB) for the
   rest; with the default 100 registers that is 60 + 20 = 80 points per unit, 1,000
   registers across 10 units, and one read request per unit (the planner bridges the hole);
3. runs one Modbus TCP driver polling every unit every ``--interval`` seconds into a sink
   that only counts (the gateway's own cost per record is measured by
   ``gateway_throughput.py``), discards a one-second warm-up, then measures for
   ``--duration`` seconds.

It prints exactly one JSON line on stdout:

* ``requests_per_cycle``: planned read requests per round over all units, and the
  requests actually sent per round (the dead unit's backed-off probes included);
* ``poll_ms``: one unit's poll (request, response, decoding, emitting its readings):
  mean / p50 / p99;
* ``cycle_ms``: the realised period between two polls of the same unit (equal to
  ``--interval`` while the rate is met): mean / p50 / p99;
* ``readings_per_s`` and ``cpu_us_per_reading`` (CPU time of this process, i.e. the driver
  thread and the counting sink; the simulator's CPU is its own process's);
* ``overruns`` in the window (each one also a TIMEOUT event), ``dead_probes`` and the
  events by kind.

Exit status 1 when no reading arrived at all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pymodbus  # noqa: E402

from drivers import registry  # noqa: E402
from drivers.base import DeviceEvent, Reading  # noqa: E402
from drivers.modbus.driver import ModbusConfig, ModbusDriver  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan")}
    return {
        "mean": round(statistics.fmean(values) * 1e3, 3),
        "p50": round(percentile(values, 0.50) * 1e3, 3),
        "p99": round(percentile(values, 0.99) * 1e3, 3),
    }


def start_simulator(units: list[int], dead: list[int]) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable,
        "-m",
        "simulators.plc",
        "--port",
        "0",
        "--units",
        ",".join(map(str, units)),
        "--cycle-time",
        "0",
    ]
    if dead:
        cmd += ["--dead", ",".join(map(str, dead))]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"tcp [\d.]+:(\d+)", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, int(found.group(1))


def point_map(unit: int, registers: int) -> list[dict[str, Any]]:
    ints = (registers * 3 // 5) & ~1
    floats = (registers - ints) // 2
    points: list[dict[str, Any]] = [{"name": f"u{unit}_r{i}", "address": 100 + i} for i in range(ints)]
    base = 100 + ints + 8  # a hole of 8 unmapped registers, bridged (max_gap 16)
    points += [
        {"name": f"u{unit}_f{i}", "address": base + 2 * i, "type": "float32", "order": "CDAB", "unit": "N"}
        for i in range(floats)
    ]
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.01, help="poll interval of every unit, seconds")
    parser.add_argument("--slaves", type=int, default=10)
    parser.add_argument("--dead", type=int, default=1, help="how many of the units never answer")
    parser.add_argument("--registers", type=int, default=100, help="registers per unit (<= 117)")
    parser.add_argument("--timeout", type=float, default=0.1, help="response timeout, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    units = list(range(1, args.slaves + 1))
    dead = units[len(units) - args.dead :] if args.dead else []
    sim, port = start_simulator(units, dead)
    cfg = registry.parse_config(
        {
            "id": "bench",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout": args.timeout,
            "slaves": [
                {"unit": u, "poll_interval": args.interval, "points": point_map(u, args.registers)} for u in units
            ],
        }
    )
    assert isinstance(cfg, ModbusConfig)
    driver = registry.create(cfg)
    assert isinstance(driver, ModbusDriver)

    lock = threading.Lock()
    counts = {"readings": 0}
    events: dict[str, int] = {}
    probe_channel = f"u{units[0]}_r0"
    stamps: list[int] = []

    def sink(item: Reading | DeviceEvent) -> None:
        if isinstance(item, Reading):
            counts["readings"] += 1  # only the driver thread calls the sink
            if item.channel == probe_channel:
                stamps.append(item.timestamp_ns)
        else:
            with lock:
                events[item.kind.value] = events.get(item.kind.value, 0) + 1

    try:
        driver.start(sink)
        time.sleep(1.0)  # warm-up: connect, first polls, the dead unit found and backed off
        r0, q0, o0, p0 = counts["readings"], driver.requests_sent, driver.overruns, driver.polls
        s0, d0 = len(stamps), len(driver.poll_durations)
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(args.duration)
        cpu1, t1 = time.process_time(), time.monotonic()
        r1, q1, o1, p1 = counts["readings"], driver.requests_sent, driver.overruns, driver.polls
        s1, d1 = len(stamps), len(driver.poll_durations)
        durations = list(driver.poll_durations)[d0:d1]
        period = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps[s0:s1])]
    finally:
        driver.stop()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()

    elapsed = t1 - t0
    readings = r1 - r0
    rounds = max(1, (s1 - s0))  # polls of the first unit = rounds over all units
    live = len(units) - len(dead)
    out = {
        "benchmark": "modbus_poll",
        "ok": readings > 0,
        "python": platform.python_version(),
        "pymodbus": pymodbus.__version__,
        "cpus": os.cpu_count(),
        "slaves": len(units),
        "dead_slaves": len(dead),
        "registers": args.registers * len(units),
        "points": sum(len(s.points) for s in cfg.slaves),
        "interval_s": args.interval,
        "duration_s": round(elapsed, 3),
        "requests_per_cycle": {
            "planned": driver.requests_per_cycle,
            "planned_live": driver.requests_per_cycle * live // len(units),
            "sent": round((q1 - q0) / rounds, 2),
        },
        "poll_ms": summary_ms(durations),
        "cycle_ms": summary_ms(period),
        "readings": readings,
        "readings_per_s": round(readings / elapsed),
        "target_readings_per_s": round(live * len(point_map(1, args.registers)) / args.interval),
        "cpu_us_per_reading": round((cpu1 - cpu0) / readings * 1e6, 2) if readings else None,
        "polls": p1 - p0,
        "overruns": o1 - o0,
        "dead_probes": sum(s.probes + 1 for s in driver.slaves if s.down),
        "events": events,
    }
    print(json.dumps(out), flush=True)
    return 0 if readings > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
