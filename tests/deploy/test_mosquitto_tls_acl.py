"""The shipped Mosquitto configuration, for real: TLS, passwords and the generated ACL.

deploy/mosquitto/mosquitto.conf runs with its paths moved into a temporary directory, a
test CA and server certificate made with openssl, a password file made with
mosquitto_passwd and an ACL made by deploy/mosquitto/make-acl.py. Measured on Debian 12's
Mosquitto 2.0.11: a publish the ACL denies gets a PUBACK with reason 0x87 (not
authorised) from an MQTT 5 client and reaches nobody; a subscription to a denied topic is
granted but delivers nothing; an anonymous client or a wrong password gets CONNACK 0x87.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collector import config as config_mod
from collector.gateway.daemon import Gateway
from collector.recorder.daemon import Recorder
from collector.store.factory import open_store
from collector.testing.services import InfluxD, Mosquitto, free_port
from simulators.mitutoyo import MitutoyoSimulator
from tests.conftest import require_binary
from tests.deploy.conftest import DEPLOY, need
from tests.helpers import wait_for
from tests.pipeline.conftest import build_config, count_all

MAKE_ACL = DEPLOY / "mosquitto" / "make-acl.py"
NOT_AUTHORISED = 0x87

CLIENTS = {
    "topic_prefix": "qc",
    "gateways": [{"id": "gw-02", "site": "plant-1", "line": "line-b", "stations": ["st-30"]}],
    "recorders": ["recorder-1"],
    "dashboards": ["dashboard-1"],
}
PASSWORDS = {"gw-test-1": "pw-gw1", "gw-02": "pw-gw2", "recorder-1": "pw-rec", "dashboard-1": "pw-dash"}


def make_acl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(MAKE_ACL), *args], capture_output=True, text=True, timeout=30)


def make_certificates(directory: Path) -> None:
    openssl = need("openssl", "openssl")
    directory.mkdir()

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Test plant CA")
    run("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (directory / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    run(
        *("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-days", "2", "-extfile", "ext.cnf", "-out", "broker.crt"),
    )


@dataclass
class Broker:
    plain_port: int
    tls_port: int
    ca: Path
    acl: Path
    log: Path


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    mosquitto = require_binary("mosquitto")
    mosquitto_passwd = require_binary("mosquitto_passwd")
    tmp = tmp_path_factory.mktemp("mosquitto-tls")
    make_certificates(tmp / "certs")
    passwd = tmp / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([mosquitto_passwd, *create, "-b", str(passwd), user, password], check=True, timeout=30)
    # the ACL from both kinds of input: a clients list, and a gateway's own configuration
    clients = tmp / "clients.yaml"
    clients.write_text(yaml.safe_dump(CLIENTS))
    gateway_config = tmp / "gw-test-1.yaml"
    gateway_config.write_text(
        yaml.safe_dump(
            {
                "gateway": {"id": "gw-test-1", "site": "plant-1", "line": "line-a"},
                "mqtt": {"topic_prefix": "qc", "username": "gw-test-1", "password": {"file": "/nonexistent"}},
                "stations": [{"id": "st-10", "plan": "HX-4711"}],
            }
        )
    )
    acl = tmp / "acl"
    made = make_acl(str(clients), "--gateway-config", str(gateway_config), "-o", str(acl))
    assert made.returncode == 0, made.stderr

    plain_port, tls_port = free_port(), free_port()
    while tls_port == plain_port:
        tls_port = free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for old, new in {
        "listener 1883 127.0.0.1\n": f"listener {plain_port} 127.0.0.1\n",
        "listener 8883\n": f"listener {tls_port} 127.0.0.1\n",
        "/etc/mosquitto/certs/": f"{tmp}/certs/",
        "/etc/mosquitto/passwd": str(passwd),
        "/etc/mosquitto/acl": str(acl),
        "/var/lib/mosquitto/": f"{tmp}/",
        "/var/log/mosquitto/mosquitto.log": str(tmp / "mosquitto.log"),
    }.items():
        assert old in text, f"the template no longer has {old!r}"
        text = text.replace(old, new)
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        text + "\n# started as root, Mosquitto would switch to the mosquitto user\n"
        f"user {getpass.getuser()}\n"
        "# denied publishes are logged at debug level only\nlog_type debug\n"
    )
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {(tmp / 'mosquitto.log').read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", tls_port), 0.2):
                return True
            return False

        wait_for(up, what="mosquitto with the production configuration")
        yield Broker(plain_port, tls_port, tmp / "certs" / "ca.crt", acl, tmp / "mosquitto.log")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@dataclass
class Client:
    mqtt: mqtt.Client
    connack: list[Any] = field(default_factory=list)
    pubacks: dict[int, Any] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, payload: bytes) -> Any:
        info = self.mqtt.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, what=f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, *filters: str) -> None:
        self.subscribed.clear()
        self.mqtt.subscribe([(f, 1) for f in filters])
        wait_for(self.subscribed.is_set, what="SUBACK")

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@contextlib.contextmanager
def connect(
    broker: Broker, user: str | None, password: str | None = None, *, expect_ok: bool = True
) -> Iterator[Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    if user is not None:
        c.username_pw_set(user, password if password is not None else PASSWORDS[user])
    c.tls_set(ca_certs=str(broker.ca), cert_reqs=ssl.CERT_REQUIRED)  # verifies the host name too
    client = Client(c)
    c.on_connect = lambda cl, u, f, rc, p: client.connack.append(rc)
    c.on_publish = lambda cl, u, mid, rc, p: client.pubacks.__setitem__(mid, rc)
    c.on_subscribe = lambda cl, u, mid, rcs, p: client.subscribed.set()
    c.on_message = lambda cl, u, m: client.messages.append((m.topic, bytes(m.payload)))
    c.reconnect_delay_set(5, 5)
    c.connect("localhost", broker.tls_port)
    c.loop_start()
    try:
        wait_for(lambda: client.connack, what="CONNACK")
        if expect_ok:
            assert not client.connack[0].is_failure, client.connack[0]
        yield client
    finally:
        client.close()


def test_anonymous_and_wrong_passwords_are_refused(secured_broker: Broker) -> None:
    with connect(secured_broker, None, expect_ok=False) as anon:
        assert anon.connack[0].is_failure and anon.connack[0].value == NOT_AUTHORISED
    with connect(secured_broker, "gw-02", "wrong", expect_ok=False) as wrong:
        assert wrong.connack[0].is_failure and wrong.connack[0].value == NOT_AUTHORISED


def test_the_tls_port_speaks_only_tls(secured_broker: Broker) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    c.username_pw_set("gw-02", PASSWORDS["gw-02"])
    connacks: list[Any] = []
    c.on_connect = lambda cl, u, f, rc, p: connacks.append(rc)
    c.connect("127.0.0.1", secured_broker.tls_port)
    c.loop_start()
    try:
        time.sleep(0.5)
        assert connacks == []
    finally:
        c.disconnect()
        c.loop_stop()


def test_a_gateway_may_publish_only_for_its_own_stations(secured_broker: Broker) -> None:
    with (
        connect(secured_broker, "recorder-1") as recorder,
        connect(secured_broker, "dashboard-1") as dashboard,
        connect(secured_broker, "gw-02") as gw,
    ):
        recorder.subscribe("$share/recorders/qc/+/+/+/record")
        dashboard.subscribe("qc/#")
        assert not gw.publish("qc/plant-1/line-b/st-30/record", b"mine").is_failure
        assert not gw.publish("qc/gateways/gw-02/status", b"online").is_failure
        for topic in (
            "qc/plant-1/line-a/st-10/record",  # another gateway's station
            "qc/plant-1/line-b/st-31/record",  # a station of its line it does not serve
            "qc/gateways/gw-test-1/status",  # another gateway's status
            "qc/gateways/gw-02/stored",  # confirmations come from recorders only
            "qc/plant-1/line-b/st-30/command",  # commands come from dashboards only
        ):
            reason = gw.publish(topic, b"forged")
            assert reason.is_failure and reason.value == NOT_AUTHORISED, topic
        wait_for(lambda: len(recorder.messages) == 1, what="the record at the recorder")
        time.sleep(0.3)
        assert recorder.messages == [("qc/plant-1/line-b/st-30/record", b"mine")]
        assert all(payload != b"forged" for _, payload in dashboard.messages)


def test_commands_reach_only_the_gateway_serving_the_station(secured_broker: Broker) -> None:
    with (
        connect(secured_broker, "dashboard-1") as dashboard,
        connect(secured_broker, "gw-02") as gw2,
        connect(secured_broker, "gw-test-1") as gw1,
    ):
        gw2.subscribe("qc/plant-1/line-b/st-30/command")
        gw1.subscribe("qc/plant-1/line-b/st-30/command")  # granted, but the ACL delivers nothing
        assert not dashboard.publish("qc/plant-1/line-b/st-30/command", b'{"command": "andon_off"}').is_failure
        wait_for(lambda: gw2.messages, what="the command at gw-02")
        time.sleep(0.3)
        assert gw1.messages == []
        reason = dashboard.publish("qc/gateways/gw-02/stored", b"{}")  # dashboards cannot confirm records
        assert reason.is_failure and reason.value == NOT_AUTHORISED


def test_a_real_gateway_and_recorder_work_through_tls_and_the_acl(
    secured_broker: Broker,
    influxd: InfluxD,
    database: str,
    tmp_path: Path,
    caliper: MitutoyoSimulator,
) -> None:
    """Everything the collector publishes and subscribes to is granted: records, alerts,
    station and gateway status, confirmations, the recorder's status. A topic the ACL forgot
    would show as a refused PUBACK or as records never confirmed."""
    data = build_config(
        tmp_path,
        cast(Mosquitto, SimpleNamespace(host="localhost", port=secured_broker.tls_port)),  # host and port only
        influxd,
        database,
        "qc",
        mqtt={"tls": {"ca_file": str(secured_broker.ca)}},
    )
    (tmp_path / "gw-password").write_text(PASSWORDS["gw-test-1"])
    (tmp_path / "rec-password").write_text(PASSWORDS["recorder-1"] + "\n")
    gw_data = {
        **data,
        "mqtt": {**data["mqtt"], "username": "gw-test-1", "password": {"file": str(tmp_path / "gw-password")}},
    }
    rec_data = {
        **data,
        "mqtt": {**data["mqtt"], "username": "recorder-1", "password": {"file": str(tmp_path / "rec-password")}},
    }
    gw_cfg = config_mod.parse(yaml.safe_dump(gw_data), "gateway.yaml")
    rec_cfg = config_mod.parse(yaml.safe_dump(rec_data), "recorder.yaml")
    assert rec_cfg.influxdb is not None
    recorder = Recorder(rec_cfg, open_store(rec_cfg.influxdb))
    gateway = Gateway(gw_cfg)
    recorder.start()
    gateway.start()
    try:
        wait_for(recorder.subscribed.is_set, timeout=20, what="recorder subscribed over TLS")
        wait_for(lambda: gateway.publisher.connected, timeout=20, what="gateway connected over TLS")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        for value in ("12.001", "12.09"):  # a pass and an out-of-tolerance value (an alert)
            caliper.send_value(Decimal(value))
        wait_for(lambda: gateway.stats.measurements == 2, what="two measurements")
        journaled = gateway.stats.records
        wait_for(
            lambda: gateway.publisher.stats.records_confirmed >= journaled,
            timeout=20,
            what="every record confirmed by the recorder (the stored topic is granted)",
        )
        assert gateway.stats.alerts >= 1
        assert gateway.publisher.stats.refused == 0
        assert recorder.stats.records_written >= journaled and recorder.stats.dead_letters == 0
        assert count_all(recorder.store) == journaled  # type: ignore[arg-type]
    finally:
        gateway.stop()
        recorder.stop()
    # and the broker denied them nothing: not the alerts, statuses and confirmations either,
    # whose PUBACKs nobody counts (it logs each denied publish with the client id)
    denied = [line for line in secured_broker.log.read_text(errors="replace").splitlines() if "Denied" in line]
    assert not [line for line in denied if "gateway-gw-test-1" in line or "rec-qc" in line], denied


def test_acl_example_is_what_make_acl_writes_for_the_clients_example() -> None:
    made = make_acl(str(DEPLOY / "mosquitto" / "clients.example.yaml"))
    assert made.returncode == 0, made.stderr
    assert made.stdout == (DEPLOY / "mosquitto" / "acl.example").read_text()


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        ({"gateways": [{"id": "gw+1", "site": "s", "line": "l", "stations": ["a"]}]}, "not a valid name"),
        ({"gateways": [{"id": "gw-1", "site": "s", "line": "l", "stations": ["a/#"]}]}, "not a valid name"),
        (
            {
                "gateways": [
                    {"id": "gw-1", "site": "s", "line": "l", "stations": ["a"]},
                    {"id": "gw-2", "site": "s", "line": "l", "stations": ["a"]},
                ]
            },
            "served by both gw-1 and gw-2",
        ),
        ({"gateways": [{"id": "x", "site": "s", "line": "l"}], "recorders": ["x"]}, "appears twice"),
        ({"gatways": []}, "unknown key"),
    ],
)
def test_make_acl_refuses_what_would_grant_too_much(tmp_path: Path, clients: dict[str, Any], message: str) -> None:
    path = tmp_path / "clients.yaml"
    path.write_text(yaml.safe_dump(clients))
    made = make_acl(str(path), "-o", str(tmp_path / "acl"))
    assert made.returncode == 2 and message in made.stderr, made.stderr
    assert not (tmp_path / "acl").exists()


def test_make_acl_needs_the_gateway_id_as_user_name(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        yaml.safe_dump({"gateway": {"id": "gw-1", "site": "s", "line": "l"}, "mqtt": {"username": "someone"}})
    )
    made = make_acl("--gateway-config", str(path))
    assert made.returncode == 2 and "must be the gateway id" in made.stderr
