"""The service launchers start the real Mosquitto and influxd, and leave nothing behind."""

from __future__ import annotations

import getpass
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.testing.services import (
    InfluxD,
    Mosquitto,
    ServiceError,
    ServiceUnavailable,
    find_binary,
    free_port,
    ping,
)
from tests.conftest import require_binary

pytestmark = pytest.mark.services

WAIT = 10.0  # generous for a loaded CI box; a passing wait returns at once


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies count: they were not reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Client:
    """A paho client (callback API 2) that records what it receives."""

    def __init__(self, port: int, client_id: str = "", clean_session: bool = True) -> None:
        self.port = port
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_connect = lambda *args: self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def __enter__(self) -> Client:
        self.mqtt.connect("127.0.0.1", self.port, keepalive=30)
        self.mqtt.loop_start()
        assert self.connected.wait(WAIT), "no CONNACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    require_binary("mosquitto")
    server = Mosquitto(tmp_path / "mosquitto")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def influxd_bin() -> str:
    return require_binary("influxd")


def test_find_binary_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServiceUnavailable, match=r"apt-get install no-such-daemon-x"):
        find_binary("no-such-daemon-x")
    # sbin is often missing from a user's PATH; the launcher looks there anyway
    require_binary("mosquitto")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_binary("mosquitto").startswith("/usr/")


def test_mosquitto_configuration_sets_every_limit_deliberately(tmp_path: Path) -> None:
    text = Mosquitto(tmp_path, port=free_port(), extra_conf="# extra line").config_text()
    directives = {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines() if line and line[0] != "#"}
    assert directives["listener"].endswith(" 127.0.0.1")
    assert directives["allow_anonymous"] == "true"
    assert directives["persistence"] == "true"
    assert directives["persistence_location"] == f"{tmp_path / 'persistence'}/"
    assert int(directives["max_queued_messages"]) >= 1_000_000  # the default 1000 loses messages
    assert int(directives["max_queued_bytes"]) > 0
    assert int(directives["max_inflight_messages"]) > 20
    for name in ("autosave_interval", "persistent_client_expiration", "log_dest", "log_type", "set_tcp_nodelay"):
        assert name in directives
    assert directives["log_dest"] == f"file {tmp_path / 'mosquitto.log'}"
    assert text.rstrip().endswith("# extra line")


def test_mosquitto_serves_stops_and_restarts_on_the_same_port_with_its_data(mosquitto: Mosquitto) -> None:
    mosquitto.start()
    port, pid = mosquitto.port, mosquitto.pid
    assert pid is not None and mosquitto.running
    with Client(port) as pub:
        pub.mqtt.publish("qc/status", b"online", qos=1, retain=True).wait_for_publish(WAIT)
        with Client(port) as sub:
            sub.mqtt.subscribe("qc/#", qos=1)
            assert wait_for(lambda: sub.count() == 1)
            assert sub.messages[0].payload == b"online" and sub.messages[0].retain

    mosquitto.stop()
    assert not mosquitto.running and mosquitto.pid is None
    assert group_members(pid) == [] and not port_open(port)
    mosquitto.stop()  # idempotent
    mosquitto.kill()

    mosquitto.start()
    assert mosquitto.port == port and mosquitto.pid != pid
    with Client(port) as sub:
        sub.mqtt.subscribe("qc/#", qos=1)
        assert wait_for(lambda: sub.count() == 1), "the retained message did not survive the restart"
        assert sub.messages[0].payload == b"online"
    assert "Saving in-memory database" in (mosquitto.workdir / "mosquitto.log").read_text()


def test_offline_subscriber_gets_a_backlog_far_above_1000_across_a_broker_restart(mosquitto: Mosquitto) -> None:
    """Mosquitto's default would keep 1,000 of these and drop the rest without a word."""
    mosquitto.start()
    n = 3000
    with Client(mosquitto.port, client_id="recorder-1", clean_session=False) as rec:
        rec.mqtt.subscribe("qc/+/record", qos=1)[1]
        time.sleep(0.1)
    with Client(mosquitto.port) as gw:
        infos = [gw.mqtt.publish("qc/st-1/record", str(i).encode(), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(WAIT)
    mosquitto.stop()  # the queue must survive in the persistence file
    mosquitto.start()
    with Client(mosquitto.port, client_id="recorder-1", clean_session=False) as rec:
        assert wait_for(lambda: rec.count() >= n, 20.0), f"received {rec.count()} of {n}"
        time.sleep(0.1)
        assert sorted(int(m.payload) for m in rec.messages) == list(range(n))


def test_mosquitto_kill_is_a_crash_and_restart_still_works(mosquitto: Mosquitto) -> None:
    mosquitto.start()
    pid = mosquitto.pid
    assert pid is not None
    mosquitto.kill()
    assert group_members(pid) == [] and not mosquitto.running
    log = (mosquitto.workdir / "mosquitto.log").read_text()
    assert log.count("terminating") == 0  # SIGKILL: no orderly shutdown happened
    with mosquitto, Client(mosquitto.port) as c:
        c.mqtt.publish("qc/x", b"1", qos=1).wait_for_publish(WAIT)
    assert not mosquitto.running


def test_a_failed_start_reports_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    require_binary("mosquitto")
    server = Mosquitto(tmp_path / "m", extra_conf="no_such_option 1")
    with pytest.raises(ServiceError, match="exited with status") as info:
        server.start()
    assert "no_such_option" in str(info.value)  # the tail of its output explains why
    assert not server.running and server.pid is None


def test_a_port_in_use_is_refused_not_mistaken_for_the_service(tmp_path: Path) -> None:
    require_binary("mosquitto")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Mosquitto(tmp_path / "m", port=port)  # a caller's port is never swapped
        with pytest.raises(ServiceError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
    assert not server.running


def test_a_taken_port_of_our_own_choice_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_binary("mosquitto")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real_free_port = free_port

        def first_taken() -> int:
            return next(ports, None) or real_free_port()

        monkeypatch.setattr("collector.testing.services.free_port", first_taken)
        with Mosquitto(tmp_path / "m") as server:
            assert server.port != taken.getsockname()[1] and port_open(server.port)


def test_influxd_starts_answers_ping_and_stops(tmp_path: Path, influxd_bin: str) -> None:
    with InfluxD(tmp_path / "a") as a, InfluxD(tmp_path / "b") as b:  # two at once: no shared 8088
        for server in (a, b):
            assert ping(f"127.0.0.1:{server.port}")
            assert server.url == f"http://127.0.0.1:{server.port}"
            assert port_open(server.rpc_port) and server.rpc_port != server.port
        assert len({a.port, a.rpc_port, b.port, b.rpc_port}) == 4
        assert (tmp_path / "a" / "meta").is_dir()
        pids = [a.pid, b.pid]
        port = a.port
    for pid in pids:
        assert pid is not None and group_members(pid) == []
    assert not ping(f"127.0.0.1:{port}")

    server = InfluxD(tmp_path / "a", port=port)
    server.start()
    assert server.port == port and ping(f"127.0.0.1:{port}")
    pid = server.pid
    server.kill()
    assert pid is not None and group_members(pid) == []


def test_influxd_ignores_influxdb_environment_overrides(
    tmp_path: Path, influxd_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUXDB_HTTP_BIND_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("INFLUXDB_DATA_DIR", str(tmp_path / "elsewhere"))
    with InfluxD(tmp_path / "i") as server:
        assert ping(f"127.0.0.1:{server.port}")
    assert not (tmp_path / "elsewhere").exists()


DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf"


def test_the_production_template_runs_on_this_mosquitto(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, with its paths moved into a temporary directory."""
    binary = require_binary("mosquitto")
    passwd, acl, port = tmp_path / "passwd", tmp_path / "acl", free_port()
    mosquitto_passwd = require_binary("mosquitto_passwd")
    subprocess.run([mosquitto_passwd, "-c", "-b", str(passwd), "gw-1", "gw-secret"], check=True, capture_output=True)
    subprocess.run([mosquitto_passwd, "-b", str(passwd), "recorder", "rec-secret"], check=True, capture_output=True)
    acl.write_text("user gw-1\ntopic write qc/plant-a/#\n\nuser recorder\ntopic read qc/#\n")
    text = DEPLOY_CONF.read_text()
    for old, new in {
        "listener 1883 127.0.0.1\n": f"listener {port} 127.0.0.1\n",
        "/etc/mosquitto/passwd": str(passwd),
        "/etc/mosquitto/acl": str(acl),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "/var/log/mosquitto/mosquitto.log": str(tmp_path / "mosquitto.log"),
    }.items():
        assert old in text
        text = text.replace(old, new)
    # the TLS listener needs certificates: tests/deploy/test_mosquitto_tls_acl.py runs it
    text = re.sub(r"(?m)^listener 8883\n(?:(?:cafile|certfile|keyfile|tls_version) .*\n)+", "", text)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text + f"user {getpass.getuser()}\n")  # root would switch to "mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], start_new_session=True, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: port_open(port) or proc.poll() is not None) and proc.poll() is None, (
            proc.stderr.read() if proc.stderr else b""
        )
        refused: list[bool] = []
        anon = mqtt.Client(CallbackAPIVersion.VERSION2)
        anon.on_connect = lambda c, u, f, rc, p: refused.append(rc.is_failure)
        anon.connect("127.0.0.1", port)
        anon.loop_start()
        try:
            assert wait_for(lambda: bool(refused)) and refused == [True]
        finally:
            anon.loop_stop()

        rec = Client(port, client_id="recorder")
        rec.mqtt.username_pw_set("recorder", "rec-secret")
        gw = Client(port, client_id="gw-1")
        gw.mqtt.username_pw_set("gw-1", "gw-secret")
        with rec, gw:
            rec.mqtt.subscribe("qc/#", qos=1)
            time.sleep(0.1)
            gw.mqtt.publish("qc/plant-b/x", b"not mine", qos=1).wait_for_publish(WAIT)  # the ACL drops it
            gw.mqtt.publish("qc/plant-a/x", b"record", qos=1).wait_for_publish(WAIT)
            assert wait_for(lambda: rec.count() >= 1)
            time.sleep(0.1)
            assert [m.payload for m in rec.messages] == [b"record"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    assert group_members(proc.pid) == []
