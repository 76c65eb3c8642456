"""Benchmark: Modbus polling rate and CPU cost per point, driver against the PLC simulator.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/modbus_poll.py                     # the peer workload, 10 ms and 5 ms
    .venv/bin/python tests/perf/modbus_poll.py --intervals 0.01 --duration 20
    .venv/bin/python tests/perf/modbus_poll.py --slaves 10 --dead 1 --registers 100 --map mixed
    .venv/bin/python tests/perf/modbus_poll.py --sink-us 50        # a gateway slower than the PLC

The default is the peer workload: one Modbus TCP server whose 200 holding registers change
every 10 ms (``simulators plc --churn-every 10``), polled every 10 ms and then every 5 ms,
each register a uint16 point (200 points per poll: 20,000 points/s at 10 ms, 40,000 at 5 ms).

What it does, for each interval in ``--intervals``:

1. starts the PLC simulator (``python -m simulators.plc``) in a process of its own on a free
   loopback port, with ``--slaves`` units of which the last ``--dead`` never answer, and its
   registers 100.. churning every ``--churn-ms``;
2. gives every unit a map of ``--registers`` holding registers at 100..: all uint16 points
   (``--map uint16``), or three fifths uint16, a hole of 8 unused registers, then float32
   points in CDAB order (``--map mixed``);
3. runs one Modbus TCP driver into a sink that counts points (``--sink-us`` makes the sink
   spend that much CPU per point, like a gateway that cannot keep up; the driver must then
   poll late and report overruns, never lose points), discards a one-second warm-up, then
   measures for ``--duration`` seconds.

It prints exactly one JSON line on stdout with one entry per interval in ``runs``:

* ``polls`` (made) and ``polls_due`` (``duration / interval`` per poll task), ``overruns``
  (the driver's counter) and ``overrun_events``;
* ``points``, ``points_per_s`` and ``target_points_per_s``;
* ``cpu_us_per_point``: CPU time of this whole process (driver thread, sink, an idle main
  thread) per point; ``driver_cpu_us_per_point``: the driver thread alone, from
  ``/proc/self/task/<tid>/stat`` (10 ms resolution);
* ``poll_ms`` (one poll: requests, responses, decoding, the sink) mean / p50 / p99, and
  ``requests_per_poll``;
* ``rss_mb`` at the end of the run and ``peak_rss_mb`` (``ru_maxrss``) of this process;
* ``counters``: the driver's fault counters over the run.

Exit status 1 when a run delivered no point at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
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

from drivers import registry  # noqa: E402
from drivers.base import DeviceEvent, Item, Reading  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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


def thread_cpu(native_id: int) -> float:
    """User + system CPU seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20


def start_simulator(units: list[int], dead: list[int], churn_ms: float, registers: int) -> tuple[Any, int]:
    cmd = [sys.executable, "-m", "simulators.plc", "--port", "0", "--units", ",".join(map(str, units))]
    cmd += ["--cycle-time", "0", "--churn-every", str(churn_ms), "--churn-registers", f"100:{registers + 16}"]
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


def point_map(unit: int, registers: int, kind: str) -> list[dict[str, Any]]:
    if kind == "uint16":
        return [{"name": f"u{unit}_r{i}", "address": 100 + i} for i in range(registers)]
    ints = (registers * 3 // 5) & ~1
    floats = (registers - ints) // 2
    points: list[dict[str, Any]] = [{"name": f"u{unit}_r{i}", "address": 100 + i} for i in range(ints)]
    base = 100 + ints + 8  # a hole of 8 unmapped registers, bridged (max_gap 16)
    points += [
        {"name": f"u{unit}_f{i}", "address": base + 2 * i, "type": "float32", "order": "CDAB", "unit": "N"}
        for i in range(floats)
    ]
    return points


def run(args: argparse.Namespace, interval: float) -> dict[str, Any]:
    units = list(range(1, args.slaves + 1))
    dead = units[len(units) - args.dead :] if args.dead else []
    sim, port = start_simulator(units, dead, args.churn_ms, args.registers)
    cfg = registry.parse_config(
        {
            "id": "bench",
            "driver": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout": args.timeout,
            "slaves": [
                {"unit": u, "poll_interval": interval, "points": point_map(u, args.registers, args.map)} for u in units
            ],
        }
    )
    driver: Any = registry.create(cfg)
    counts = {"points": 0}
    events: dict[str, int] = {}
    lock = threading.Lock()
    burn = args.sink_us / 1e6

    def sink(item: Item) -> None:
        if isinstance(item, tuple):
            n = len(item)
        elif isinstance(item, Reading):
            n = 1
        else:
            assert isinstance(item, DeviceEvent)
            with lock:
                key = item.kind.value + (":overrun" if item.detail.startswith("overrun") else "")
                events[key] = events.get(key, 0) + 1
            return
        counts["points"] += n  # only the driver thread calls the sink
        if burn:
            end = time.thread_time() + burn * n
            while time.thread_time() < end:
                pass

    def counters() -> dict[str, int]:
        get = getattr(driver, "counters", None)
        return dict(get()) if callable(get) else {}

    try:
        driver.start(sink)
        time.sleep(1.0)  # warm-up: connect, first polls, a dead unit found and backed off
        tid = next(t.native_id for t in threading.enumerate() if t.name.startswith("modbus:"))
        assert tid is not None
        p0, o0, pts0, d0, c0 = driver.polls, driver.overruns, counts["points"], len(driver.poll_durations), counters()
        ev0 = dict(events)
        q0 = driver.requests_sent
        cpu0, dcpu0, t0 = time.process_time(), thread_cpu(tid), time.monotonic()
        time.sleep(args.duration)
        cpu1, dcpu1, t1 = time.process_time(), thread_cpu(tid), time.monotonic()
        p1, o1, pts1, d1, c1 = driver.polls, driver.overruns, counts["points"], len(driver.poll_durations), counters()
        q1 = driver.requests_sent
        ev1 = dict(events)
        durations = list(driver.poll_durations)[d0:d1] if d1 <= driver.poll_durations.maxlen else []
        rss = rss_mb()
    finally:
        driver.stop()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()

    elapsed = t1 - t0
    points = pts1 - pts0
    polls = p1 - p0
    live = len(units) - len(dead)
    tasks = len(units)
    return {
        "interval_s": interval,
        "duration_s": round(elapsed, 3),
        "polls": polls,
        "polls_due": round(tasks * elapsed / interval),
        "polls_due_live": round(live * elapsed / interval),
        "overruns": o1 - o0,
        "overrun_events": ev1.get("timeout:overrun", 0) - ev0.get("timeout:overrun", 0),
        "requests_per_poll": round((q1 - q0) / polls, 2) if polls else None,
        "points": points,
        "points_per_s": round(points / elapsed),
        "target_points_per_s": round(live * len(point_map(1, args.registers, args.map)) / interval),
        "cpu_us_per_point": round((cpu1 - cpu0) / points * 1e6, 2) if points else None,
        "driver_cpu_us_per_point": round((dcpu1 - dcpu0) / points * 1e6, 2) if points else None,
        "poll_ms": summary_ms(durations),
        "rss_mb": round(rss, 1),
        "counters": {k: v - c0.get(k, 0) for k, v in c1.items() if v - c0.get(k, 0)},
        "events": {k: v - ev0.get(k, 0) for k, v in ev1.items() if v - ev0.get(k, 0)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per interval")
    parser.add_argument(
        "--intervals",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.01, 0.005],
        help="poll intervals to run, seconds, comma-separated (default 0.01,0.005)",
    )
    parser.add_argument("--slaves", type=int, default=1)
    parser.add_argument("--dead", type=int, default=0, help="how many of the units never answer")
    parser.add_argument("--registers", type=int, default=200, help="holding registers per unit")
    parser.add_argument("--map", choices=("uint16", "mixed"), default="uint16")
    parser.add_argument("--churn-ms", type=float, default=10.0, help="the simulator's registers change this often")
    parser.add_argument("--timeout", type=float, default=0.1, help="response timeout, seconds")
    parser.add_argument("--sink-us", type=float, default=0.0, help="CPU the sink spends per point (a slow gateway)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    runs = [run(args, interval) for interval in args.intervals]
    out = {
        "benchmark": "modbus_poll",
        "ok": all(r["points"] > 0 for r in runs),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "slaves": args.slaves,
        "dead_slaves": args.dead,
        "registers_per_slave": args.registers,
        "map": args.map,
        "churn_ms": args.churn_ms,
        "sink_us_per_point": args.sink_us,
        "runs": runs,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
