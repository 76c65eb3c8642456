"""Fixtures shared by every test: real services on free loopback ports, leak checks.

Tests talk to a real Mosquitto and a real InfluxDB started here. Where a binary is
missing the test is skipped, except under ``CI=true``, where it fails: CI must never
pass by skipping what it was meant to check.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD, Mosquitto, ServiceUnavailable, find_binary


def require_binary(name: str) -> str:
    """The binary's path; a skip when it is missing, but a failure under ``CI=true``."""
    try:
        return find_binary(name)
    except ServiceUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and a required service is missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxD]:
    """One InfluxDB for the session; each test gets its own database (see ``v1_store``)."""
    require_binary("influxd")
    server = InfluxD(tmp_path_factory.mktemp("influxd"))
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def v1_store(influxd: InfluxD, database: str) -> Iterator[InfluxV1Store]:
    """A store on a fresh database of the shared server, so tests do not see each other's points."""
    store = InfluxV1Store(influxd.url, database)
    store.ensure_database()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own: tests stop, kill and restart it."""
    require_binary("mosquitto")
    server = Mosquitto(
        tmp_path / "mosquitto", extra_conf=os.environ.get("TEST_MOSQUITTO_EXTRA", "").replace("\\n", "\n")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to the test run, so no test sees another's messages."""
    return f"t{uuid.uuid4().hex[:10]}"


_BASELINE_THREADS = {"MainThread", "pydevd.Writer", "pydevd.Reader"}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (a driver, publisher or simulator not stopped)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"
