"""The store factory opens the configured backend and loads only that backend's client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# a fresh interpreter: this test process has imported every store already
PROBE = """
import json, sys
from collector import cli
from collector.config_file import InfluxV1Settings, InfluxV2Settings
from collector.recorder import daemon
from collector.store.factory import open_store
kind = sys.argv[1]
settings = (
    InfluxV1Settings(url="http://127.0.0.1:9", database="qc")
    if kind == "v1"
    else InfluxV2Settings(kind="v2", url="http://127.0.0.1:9", token="t0ken", org="plant", bucket="qc")
)
store = open_store(settings)
print(json.dumps({"store": type(store).__name__, "influxdb_client": "influxdb_client" in sys.modules}))
"""


def probe(kind: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout)
    assert isinstance(result, dict)
    return result


def test_a_v1_store_does_not_load_the_v2_client() -> None:
    # influxdb-client costs a recorder ~30 MiB and ~650 modules (BENCHMARKS.md, idle recorder memory)
    assert probe("v1") == {"store": "InfluxV1Store", "influxdb_client": False}


def test_a_v2_store_loads_it() -> None:
    assert probe("v2") == {"store": "InfluxV2Store", "influxdb_client": True}
