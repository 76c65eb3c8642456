"""The pipeline's pieces wired for a test: config file, simulator, stack control."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector import config as config_mod
from collector.chain import blocks
from collector.chain.keys import generate
from collector.store.base import Store
from collector.store.factory import open_store
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto
from simulators.mitutoyo import MitutoyoSimulator, Scenario

REPO = Path(__file__).resolve().parents[2]

StackConfig = Callable[..., tuple[Path, config_mod.Config]]
"""The ``stack_config`` fixture: overrides as keyword sections -> (path, config)."""


def store_of(cfg: config_mod.Config) -> Store:
    """The store a pipeline configuration names (``build_config`` always writes one)."""
    assert cfg.influxdb is not None, "the configuration has no influxdb section"
    return open_store(cfg.influxdb)


def gateway_of(cfg: config_mod.Config) -> config_mod.GatewaySettings:
    assert cfg.gateway is not None, "the configuration has no gateway section"
    return cfg.gateway


def recorder_of(cfg: config_mod.Config) -> config_mod.RecorderSettings:
    assert cfg.recorder is not None, "the configuration has no recorder section"
    return cfg.recorder


PLAN: dict[str, Any] = {
    "part_number": "HX-4711",
    "revision": "C",
    "characteristics": [
        {
            "id": "D1",
            "name": "Bore diameter",
            "nominal": "12.000",
            "lower_tol": "-0.020",
            "upper_tol": "0.020",
            "unit": "mm",
            "decimals": 3,
            "criticality": "critical",
        },
        {
            "id": "L1",
            "name": "Overall length",
            "nominal": "12.00",
            "lower_tol": "-0.05",
            "upper_tol": "0.05",
            "unit": "mm",
            "decimals": 2,
        },
    ],
}


def gateway_key(tmp_path: Path, gateway_id: str) -> Path:
    """A gateway's private key (made once per test), its public key in the recorders' key directory."""
    private = tmp_path / "gateway-keys" / f"{gateway_id}.key"
    if not private.exists():
        generate(gateway_id, private.parent)
        (tmp_path / "keys").mkdir(exist_ok=True)
        shutil.copy(private.parent / f"{gateway_id}.pub", tmp_path / "keys" / f"{gateway_id}.pub")
    return private


def build_config(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: InfluxD,
    database: str,
    prefix: str,
    *,
    gateway_id: str = "gw-test-1",
    mqtt: dict[str, Any] | None = None,
    recorder: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "gateway": {
            "id": gateway_id,
            "site": "plant-1",
            "line": "line-a",
            "journal": str(tmp_path / f"{gateway_id}.sqlite"),
            "signing": {"key_file": str(gateway_key(tmp_path, gateway_id))},
            "status_interval": 1,
            "confirm_timeout": 1,
            **(gateway or {}),
        },
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "topic_prefix": prefix,
            "reconnect_min_delay": 0.1,
            "reconnect_max_delay": 1.0,
            **(mqtt or {}),
        },
        "influxdb": {"kind": "v1", "url": influxd.url, "database": database},
        "recorder": {
            "group": "rec",
            "client_id": f"rec-{prefix}",
            "keys": str(tmp_path / "keys"),
            "batch_interval": 0.05,
            "dead_letter_file": str(tmp_path / "dead-letter.jsonl"),
            "retry_min_delay": 0.1,
            "retry_max_delay": 1.0,
            **(recorder or {}),
        },
        "gauges": [
            {"id": "CAL-0042", "type": "caliper", "resolution": "0.001", "unit": "mm", "calibration_due": "2027-06-30"}
        ],
        "plans": [PLAN],
        "stations": [
            {
                "id": "st-10",
                "plan": "HX-4711",
                "part": {
                    "part_number": "HX-4711",
                    "serial": "HX{n:06d}",
                    "lot": "L-1",
                    "work_order": "WO-1",
                    "operator": "op-117",
                },
                "devices": [
                    {
                        "id": "caliper-1",
                        "driver": "mitutoyo",
                        "gauge": "CAL-0042",
                        "port": str(tmp_path / "dev" / "caliper-1"),
                        "reconnect_min": 0.05,
                        "reconnect_max": 0.5,
                    }
                ],
            }
        ],
    }


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def stack_config(tmp_path: Path, broker: Mosquitto, influxd: InfluxD, database: str, topic_prefix: str) -> StackConfig:
    """Factory: write a pipeline configuration (overrides as keyword sections), return (path, config)."""

    def make(**overrides: Any) -> tuple[Path, config_mod.Config]:
        data = build_config(tmp_path, broker, influxd, database, topic_prefix, **overrides)
        path = write_config(tmp_path, data)
        return path, config_mod.load(path)

    return make


@pytest.fixture
def caliper(tmp_path: Path) -> Iterator[MitutoyoSimulator]:
    (tmp_path / "dev").mkdir(exist_ok=True)
    sim = MitutoyoSimulator(tmp_path / "dev" / "caliper-1", Scenario(nominal=Decimal("12.000"), noise=0.01, seed=11))
    try:
        yield sim
    finally:
        sim.close()


def journal_records(path: Path) -> list[dict[str, Any]]:
    """Every record in a gateway's journal, materialised, read the way any SQLite reader may
    (read-only: WAL allows it while the gateway writes)."""
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            rows = db.execute("SELECT body FROM payloads ORDER BY first_seq").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
    return [r for (body,) in rows for r in blocks.read(zlib.decompress(body).decode()).materialise()]


def journal_head(path: Path) -> int:
    """The last seq in a gateway's journal (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT coalesce(max(last_seq), 0) FROM blocks").fetchone()[0])


def count_points(store: InfluxV1Store) -> int:
    rows = store.query('SELECT count("seq") FROM "inspection"')
    return int(rows[0]["count"]) if rows else 0


def stored_seqs(store: InfluxV1Store) -> list[int]:
    """Sequence numbers of the measurement records (the ``inspection`` measurement)."""
    return [int(r["seq"]) for r in store.query('SELECT "seq" FROM "inspection"')]


def all_records(store: InfluxV1Store) -> list[tuple[int, int]]:
    """(time, seq) of every record of every kind, in time order."""
    rows = store.query('SELECT "seq" FROM "event", "inspection", "part"')
    return sorted((int(r["time"]), int(r["seq"])) for r in rows)


def count_all(store: InfluxV1Store) -> int:
    return len(all_records(store))


class Daemon:
    """A collector daemon in its own process, so that a test can SIGKILL it."""

    def __init__(self, command: str, config: Path, log: Path) -> None:
        self.command = command
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collector.cli", self.command, "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[str, Path], Daemon]]:
    made: list[Daemon] = []

    def make(command: str, config: Path) -> Daemon:
        d = Daemon(command, config, tmp_path / f"{command}.log")
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
