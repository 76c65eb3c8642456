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
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
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
from tests.pipeline.people import signer, write_register

MAKE_ACL = DEPLOY / "mosquitto" / "make-acl.py"
NOT_AUTHORISED = 0x87

CLIENTS = {
    "topic_prefix": "qc",
    "gateways": [{"id": "gw-02", "site": "plant-1", "line": "line-b", "stations": ["st-30"]}],
    "recorders": ["recorder-1", "recorder-2"],
    "dashboards": ["dashboard-1"],
    "operator_views": ["panel-1"],
}
PASSWORDS = {
    "gw-test-1": "pw-gw1",
    "gw-02": "pw-gw2",
    "recorder-1": "pw-rec",
    "recorder-2": "pw-rec2",
    "dashboard-1": "pw-dash",
    "panel-1": "pw-panel",
}


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
        assert not gw.publish("qc/gateways/gw-02/checkpoint", b"{}").is_failure
        for topic in (
            "qc/plant-1/line-a/st-10/record",  # another gateway's station
            "qc/plant-1/line-b/st-31/record",  # a station of its line it does not serve
            "qc/gateways/gw-test-1/status",  # another gateway's status
            "qc/gateways/gw-test-1/checkpoint",  # another gateway's checkpoint
            "qc/gateways/gw-02/stored",  # the gateway's own account confirms nothing
            "qc/plant-1/line-b/st-30/command",  # commands come from operator views, signed
            "qc/plant-1/line-b/st-30/ack",  # acknowledgements from dashboards
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
        connect(secured_broker, "panel-1") as panel,
        connect(secured_broker, "gw-02") as gw2,
        connect(secured_broker, "gw-test-1") as gw1,
    ):
        gw2.subscribe("qc/plant-1/line-b/st-30/command", "qc/plant-1/line-b/st-30/ack")
        gw1.subscribe("qc/plant-1/line-b/st-30/command")  # granted, but the ACL delivers nothing
        assert not panel.publish("qc/plant-1/line-b/st-30/command", b'{"command": "patrol"}').is_failure
        assert not dashboard.publish("qc/plant-1/line-b/st-30/ack", b'{"command": "ack_alert"}').is_failure
        wait_for(lambda: len(gw2.messages) == 2, what="the command and the acknowledgement at gw-02")
        time.sleep(0.3)
        assert gw1.messages == []
        for client, topic in (
            (dashboard, "qc/plant-1/line-b/st-30/command"),  # the dashboard sends acknowledgements only
            (dashboard, "qc/gateways/gw-02/stored"),  # dashboards cannot confirm records
            (panel, "qc/plant-1/line-b/st-30/ack"),  # an operator view cannot pass for a dashboard
            (panel, "qc/plant-1/line-b/st-30/record"),
        ):
            reason = client.publish(topic, b"{}")
            assert reason.is_failure and reason.value == NOT_AUTHORISED, topic
        assert len(gw2.messages) == 2


def test_recorders_read_alerts_and_checkpoints_and_only_recorders_confirm(secured_broker: Broker) -> None:
    with (
        connect(secured_broker, "recorder-1") as recorder,
        connect(secured_broker, "recorder-2") as other_recorder,
        connect(secured_broker, "gw-02") as gw,
        connect(secured_broker, "dashboard-1") as dashboard,
    ):
        recorder.subscribe(
            "$share/recorders/qc/+/+/+/alert", "qc/gateways/+/checkpoint", "qc/gateways/+/status", "qc/+/+/+/status"
        )
        gw.subscribe("qc/gateways/gw-02/stored")
        for topic in (
            "qc/plant-1/line-b/st-30/alert",
            "qc/gateways/gw-02/checkpoint",
            "qc/gateways/gw-02/status",
            "qc/plant-1/line-b/st-30/status",
        ):
            assert not gw.publish(topic, b"{}").is_failure
        wait_for(lambda: len(recorder.messages) == 4, what="alert, checkpoint and statuses at the recorder")
        assert not recorder.publish("qc/gateways/gw-02/stored", b'{"stored": [[1, 1]]}').is_failure
        assert not recorder.publish("qc/recorders/recorder-1/status", b"online").is_failure
        assert not recorder.publish("qc/dead-letter", b"{}").is_failure
        wait_for(lambda: gw.messages, what="the confirmation at the gateway")
        for client, topic in (
            (recorder, "qc/recorders/recorder-2/status"),  # another recorder's status
            (recorder, "qc/plant-1/line-b/st-30/record"),  # recorders do not make records
            (recorder, "qc/plant-1/line-b/st-30/command"),
            (other_recorder, "qc/recorders/recorder-1/status"),
            (dashboard, "qc/gateways/gw-02/stored"),
        ):
            reason = client.publish(topic, b"{}")
            assert reason.is_failure and reason.value == NOT_AUTHORISED, topic
        time.sleep(0.3)
        assert gw.messages == [("qc/gateways/gw-02/stored", b'{"stored": [[1, 1]]}')]  # the recorder's only


def ask(client: Client, topic: str, command: str, *, signer: dict[str, str] | None = None, **args: Any) -> Any:
    """Send a command and wait for the gateway's reply (the client subscribed to ``topic/reply``)."""
    request_id = uuid.uuid4().hex
    body: dict[str, Any] = {"command": command, "args": args, "request_id": request_id}
    if signer is not None:
        body["signer"] = signer
    assert not client.publish(topic, json.dumps(body).encode()).is_failure

    def reply() -> dict[str, Any] | None:
        for t, payload in client.messages:
            answer = json.loads(payload)
            if t == topic + "/reply" and answer.get("request_id") == request_id:
                return dict(answer)
        return None

    return wait_for(reply, timeout=10, what=f"the reply to {command}")


def test_a_real_gateway_and_recorder_work_through_tls_and_the_acl(
    secured_broker: Broker,
    influxd: InfluxD,
    database: str,
    tmp_path: Path,
    caliper: MitutoyoSimulator,
) -> None:
    """Everything the collector publishes and subscribes to is granted: records, alerts,
    station and gateway status, checkpoints, confirmations, the recorder's status, commands
    and their replies. A topic the ACL forgot would show as a refused PUBACK or as records
    never confirmed. And the attacks on the command topics are refused: by the broker where
    an account may not write, by the gateway (with a reply and a record) where it may."""
    data = build_config(
        tmp_path,
        cast(Mosquitto, SimpleNamespace(host="localhost", port=secured_broker.tls_port)),  # host and port only
        influxd,
        database,
        "qc",
        mqtt={"tls": {"ca_file": str(secured_broker.ca)}},
        recorder={"client_id": "recorder-1"},  # its status topic is granted by its user name
        gateway={"people": {"register": str(write_register(tmp_path)), "checks_per_second": 50}},
    )
    data["stations"][0]["part"]["operator"] = "op-42"
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
    cmd, ack = "qc/plant-1/line-a/st-10/command", "qc/plant-1/line-a/st-10/ack"
    try:
        wait_for(recorder.subscribed.is_set, timeout=20, what="recorder subscribed over TLS")
        wait_for(lambda: gateway.publisher.connected, timeout=20, what="gateway connected over TLS")
        wait_for(lambda: gateway.stats.device_events.get("caliper-1:connected"), what="caliper connected")
        for value in ("12.001", "12.09"):  # a pass and an out-of-tolerance value (an alert, an NC)
            caliper.send_value(Decimal(value))
        wait_for(lambda: gateway.stats.measurements == 2, what="two measurements")
        journal = [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]
        failed = next(r for r in journal if r["kind"] == "measurement" and r["verdict"] == "fail")
        nc = next(r for r in journal if r["kind"] == "nonconformance")
        with connect(secured_broker, "dashboard-1") as dashboard, connect(secured_broker, "panel-1") as panel:
            dashboard.subscribe(ack + "/reply")
            panel.subscribe(cmd + "/reply")
            # the dashboard's account ran sign_in, invalidate and andon_off: the broker refuses them now
            for attack in (
                {"command": "sign_in", "args": {"operator": "plant-manager"}},
                {"command": "invalidate", "args": {"record_id": failed["id"], "reason": "x", "by": "auditor"}},
                {"command": "andon_off", "args": {"by": "plant-manager"}},
            ):
                reason = dashboard.publish(cmd, json.dumps(attack).encode())
                assert reason.is_failure and reason.value == NOT_AUTHORISED, attack
            # on its own topic it acknowledges (and sends quality users' dispositions), nothing else
            wrong = ask(dashboard, ack, "invalidate", record_id=failed["id"], reason="x")
            assert (wrong["ok"], wrong["refused"]) == (False, "forbidden")
            only = "only ack_alert and dispose may be sent on the acknowledgement topic"
            assert wrong["error"] == f"{only} (acknowledgement topic)"
            name = ask(dashboard, ack, "ack_alert", record_id=failed["id"], by="plant\nmanager")
            assert name["error"] == "by is not a user id (letters, digits, '.', '_', '@', '-')"
            assert ask(dashboard, ack, "ack_alert", record_id=failed["id"], by="sam", comment="seen")["ok"]
            # an operator view's account: commands carry the signer's credentials
            unsigned = ask(panel, cmd, "andon_off")
            assert unsigned["error"] == "andon_off needs signer credentials ({user, secret}) on the command topic"
            guessed = ask(
                panel, cmd, "invalidate", signer={"user": "sv-3", "secret": "1234"}, record_id=nc["id"], reason="x"
            )
            assert guessed["error"] == "unknown user or wrong PIN/password" and guessed["refused"] == "unauthenticated"
            long_reason = ask(panel, cmd, "invalidate", signer=signer("sv-3"), record_id=failed["id"], reason="x" * 300)
            assert long_reason["error"] == "reason is longer than 200 characters"
            disposed = ask(panel, cmd, "dispose", signer=signer("qe-7"), nonconformance_id=nc["id"], decision="scrap")
            assert disposed["ok"] and len(disposed["records"]) == 1
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
        # the recorder reads alerts: a deployed system keeps them in InfluxDB
        alerts = wait_for(
            lambda: recorder.store.query(f'SELECT * FROM "alert" WHERE "record_id" = \'{failed["id"]}\''),
            what="the alert in InfluxDB",
        )
        assert alerts[0]["kind"] == "out_of_tolerance"
        journal = [r for block, _ in gateway.journal.iter_blocks() for r in block.materialise()]
    finally:
        gateway.stop()
        recorder.stop()
    audits = [(r["event"], r["by"], r.get("signature_method")) for r in journal if r["kind"] == "audit"]
    assert ("alert_ack", "sam", "dashboard") in audits
    refused = [(r["by"], r["subject"], r["detail"]) for r in journal if r.get("event") == "command_refused"]
    assert refused == [
        (
            None,
            "invalidate",
            "invalidate refused: only ack_alert and dispose may be sent on the acknowledgement topic"
            " (acknowledgement topic)",
        ),
        (
            None,
            "andon_off",
            "andon_off refused: andon_off needs signer credentials ({user, secret}) on the command topic",
        ),
        ("sv-3", "invalidate", "invalidate refused: wrong secret"),
    ]
    (disposition,) = [r for r in journal if r["kind"] == "disposition"]
    assert (disposition["signed_by"], disposition["signature_meaning"]) == ("qe-7", "dispositioned")
    # and the broker denied them nothing: not the alerts, statuses and confirmations either,
    # whose PUBACKs nobody counts (it logs each denied publish with the client id)
    denied = [line for line in secured_broker.log.read_text(errors="replace").splitlines() if "Denied" in line]
    ours = ("from gateway-gw-test-1 (", "from recorder-1 (")  # the daemons' client ids
    assert not [line for line in denied if any(who in line for who in ours)], denied


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
