"""Benchmark: resident memory of an idle recorder writing to InfluxDB 1.x.

Run on purpose, not by the test suite (pytest does not collect ``tests/perf``)::

    .venv/bin/python tests/perf/recorder_idle_rss.py [--settle 3]

It starts a real Mosquitto and a real InfluxDB 1.x (``collector.testing.services``), then
``collector recorder`` twice in its own process on a v1 store, idle (no gateway publishes):

* ``v1``: as shipped. ``influxdb-client`` (the InfluxDB 2.x/3.x client) is imported only by
  ``collector.store.influx_v2``, which only ``open_store`` loads for a v2 store;
* ``v1_with_v2_client``: the same process with ``collector.store.influx_v2`` (and so
  ``influxdb_client``) imported first: what every recorder pays if the v2 adapter is imported
  whatever the store is.

Each process's VmRSS is read from ``/proc/<pid>/status`` once it has been stable (two
samples 0.5 s apart within 0.25 MiB, at least ``--settle`` seconds after start); at exit the
process reports how many modules it had loaded and whether ``influxdb_client`` was among
them. It prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from collector.testing.services import InfluxD, Mosquitto  # noqa: E402

# the recorder's own entry point, with the module count written at exit
CHILD = """
import atexit, json, sys
if sys.argv[1] == "with-v2-client":
    import collector.store.influx_v2  # noqa: F401  (and so influxdb_client)
report = sys.argv[2]
def _report():
    with open(report, "w") as fh:
        json.dump({"modules": len(sys.modules), "influxdb_client": "influxdb_client" in sys.modules}, fh)
atexit.register(_report)
from collector.cli import main
sys.exit(main(sys.argv[3:]))
"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_recorder(config: Path, work: Path, mode: str, settle: float) -> dict[str, object]:
    report = work / f"{mode}.json"
    log = work / f"{mode}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", CHILD, mode, str(report), "recorder", "--config", str(config)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        t0 = time.monotonic()
        last = rss_mib(proc.pid)
        while True:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise RuntimeError(f"recorder exited early: {log.read_text()[-2000:]}")
            now = rss_mib(proc.pid)
            if time.monotonic() - t0 >= settle and abs(now - last) <= 0.25:
                break
            if time.monotonic() - t0 > settle + 30:
                raise RuntimeError("recorder memory did not settle within 30 s")
            last = now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    if proc.returncode != 0:
        raise RuntimeError(f"recorder exited with {proc.returncode}: {log.read_text()[-2000:]}")
    loaded = json.loads(report.read_text())
    return {"rss_mib": round(now, 1), "modules": loaded["modules"], "influxdb_client_loaded": loaded["influxdb_client"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait at least before reading RSS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="recorder-idle-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto").start()
        influx = InfluxD(work / "influxdb").start(timeout=30)
        try:
            (work / "keys").mkdir()
            config = work / "recorder.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "idle"},
                        "influxdb": {"kind": "v1", "url": influx.url, "database": "idle"},
                        "recorder": {
                            "group": "idle",
                            "client_id": "rec-idle",
                            "keys": str(work / "keys"),
                            "dead_letter_file": str(work / "dead.jsonl"),
                        },
                    }
                ),
                encoding="utf-8",
            )
            result = {
                "benchmark": "recorder_idle_rss",
                "store": "influxdb 1.x",
                "v1": idle_recorder(config, work, "as-shipped", args.settle),
                "v1_with_v2_client": idle_recorder(config, work, "with-v2-client", args.settle),
                "python": platform.python_version(),
                "machine": platform.machine(),
            }
        finally:
            influx.stop()
            broker.stop()
    v1, before = result["v1"], result["v1_with_v2_client"]
    assert isinstance(v1, dict) and isinstance(before, dict)
    result["saved_mib"] = round(before["rss_mib"] - v1["rss_mib"], 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
