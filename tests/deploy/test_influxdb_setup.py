"""deploy/influxdb/setup-influxdb1.sh against a real InfluxDB 1.x with authentication on.

setup-influxdb2.sh needs the influx CLI 2.x and a 2.x server, neither of which Debian
ships: it is only checked by bash -n and shellcheck (test_scripts.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.errors import StoreError
from collector.store.influx_v1 import InfluxV1Store
from collector.testing.services import InfluxD
from tests.conftest import require_binary
from tests.deploy.conftest import DEPLOY, need

SCRIPT = DEPLOY / "influxdb" / "setup-influxdb1.sh"
ADMIN = {"INFLUX_USERNAME": "admin", "INFLUX_PASSWORD": "it's a \\ secret"}  # quoting is exercised


@pytest.fixture
def secured_influxd(tmp_path: Path) -> Iterator[InfluxD]:
    require_binary("influxd")
    server = InfluxD(tmp_path / "influxd", auth_enabled=True)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


def setup(server: InfluxD, secrets: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    need("influx", "influxdb-client")
    base = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX")}
    return subprocess.run(
        ["bash", str(SCRIPT), "--port", str(server.port), "--secrets-dir", str(secrets)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def store(server: InfluxD, user: str, password: str) -> InfluxV1Store:
    return InfluxV1Store(server.url, "quality", username=user, password=password)


LINE = "inspection,gateway=gw-1,station=st-10 seq=1i,value=12.001 1700000000000000"


def test_database_retention_and_least_privilege_users(secured_influxd: InfluxD, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    result = setup(secured_influxd, secrets, ADMIN)
    assert result.returncode == 0, result.stderr
    assert "created the administrator admin" in result.stderr
    recorder_pw = (secrets / "influxdb-recorder-password").read_text()
    reader_pw = (secrets / "influxdb-reader-password").read_text()
    assert len(recorder_pw) >= 20 and recorder_pw != reader_pw and "\n" not in recorder_pw
    assert (secrets / "influxdb-recorder-password").stat().st_mode & 0o077 in (0, 0o040)

    admin = store(secured_influxd, ADMIN["INFLUX_USERNAME"], ADMIN["INFLUX_PASSWORD"])
    recorder = store(secured_influxd, "recorder", recorder_pw)
    reader = store(secured_influxd, "reader", reader_pw)
    try:
        policies = admin.query('SHOW RETENTION POLICIES ON "quality"')
        default = [p for p in policies if p.get("default")]
        assert len(default) == 1 and default[0]["name"] == "autogen"
        assert default[0]["duration"] == "0s"  # INF: keep everything
        assert default[0]["shardGroupDuration"] == "672h0m0s"  # 4 weeks
        users = {u["user"]: u["admin"] for u in admin.query("SHOW USERS")}
        assert users == {"admin": True, "recorder": False, "reader": False}

        recorder.ensure_database()  # what the recorder does at start-up
        recorder.write_lines([LINE])
        assert [r["seq"] for r in reader.query('SELECT "seq" FROM "inspection"')] == [1]
        with pytest.raises(StoreError) as refused:
            reader.write_lines([LINE])
        assert refused.value.status == 403
        with pytest.raises(StoreError):
            recorder.query('DROP DATABASE "quality"')  # not an administrator
    finally:
        for s in (admin, recorder, reader):
            s.close()

    # again: nothing changes; then with a new password in the file: the password rotates
    again = setup(secured_influxd, secrets, ADMIN)
    assert again.returncode == 0, again.stderr
    (secrets / "influxdb-reader-password").write_text("a-new-reader-password")
    rotated = setup(secured_influxd, secrets, ADMIN)
    assert rotated.returncode == 0, rotated.stderr
    old, new = store(secured_influxd, "reader", reader_pw), store(secured_influxd, "reader", "a-new-reader-password")
    try:
        with pytest.raises(StoreError):
            old.query('SELECT "seq" FROM "inspection"')
        assert len(new.query('SELECT "seq" FROM "inspection"')) == 1
        recorder = store(secured_influxd, "recorder", recorder_pw)  # unchanged
        recorder.write_lines([LINE])
        recorder.close()
    finally:
        old.close()
        new.close()


def test_refuses_to_run_without_an_administrator(secured_influxd: InfluxD, tmp_path: Path) -> None:
    result = setup(secured_influxd, tmp_path / "secrets", {})
    assert result.returncode == 2 and "INFLUX_USERNAME" in result.stderr
    assert not (tmp_path / "secrets").exists()


def test_warns_when_authentication_is_off(tmp_path: Path) -> None:
    require_binary("influxd")
    with InfluxD(tmp_path / "influxd", auth_enabled=False) as server:
        result = setup(server, tmp_path / "secrets", {})
    assert result.returncode == 0, result.stderr
    assert "WARNING: authentication is off" in result.stderr
