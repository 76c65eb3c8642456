"""The central stack's files: compose file, container configurations, Mosquitto limits,
example configurations, the Grafana provisioning and dashboard.

No container runs here (there is no Docker engine in CI); the compose file is checked by
the compose tool itself (``docker compose config`` or Debian's ``docker-compose config``,
which need no engine) and for its structure. The Grafana dashboard may name only
measurements, tags and fields the recorder writes (collector/store/lineprotocol.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector import config as config_mod
from collector.inspection.models import RecordKind, Verdict
from collector.store.lineprotocol import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    MEASUREMENTS,
    PAYLOAD_FIELD,
    STRING_FIELDS,
    TAG_KEYS,
)
from collector.testing.services import Mosquitto
from tests.deploy.conftest import DEPLOY, need

COMPOSE = DEPLOY / "compose"
GRAFANA = DEPLOY / "grafana"


def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_structure() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"mosquitto", "influxdb", "recorder", "dashboard", "grafana"}
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                # bind mounts: everything but the operator's own files (certificates, passwords)
                if source != "./mosquitto":
                    assert (COMPOSE / source).exists(), f"{name}: {source}"
            else:
                assert source in data["volumes"], f"{name}: volume {source} is not declared"
        for secret in svc.get("secrets", []):
            assert secret in data["secrets"], f"{name}: secret {secret}"
    # gateways reach the broker over TLS only; the database only from this host
    assert services["mosquitto"]["ports"] == ["8883:8883"]
    assert all(p.startswith("127.0.0.1:") for p in services["influxdb"]["ports"])
    env = services["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert "DOCKER_INFLUXDB_INIT_RETENTION" not in env  # unset: infinite retention
    assert services["recorder"]["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert services["recorder"]["build"]["dockerfile"] == "deploy/compose/Dockerfile"
    assert (DEPLOY.parent / services["recorder"]["build"]["dockerfile"]).is_file()


def test_compose_tool_accepts_the_file(tmp_path: Path) -> None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        command = [need("docker-compose", "docker-compose")]
    work = tmp_path / "deploy"
    shutil.copytree(DEPLOY, work)
    (work / "compose" / "secrets").mkdir()
    for name in yaml.safe_load((COMPOSE / "compose.yaml").read_text())["secrets"]:
        (work / "compose" / "secrets" / name).write_text("x")
    shutil.copy(work / "compose" / ".env.example", work / "compose" / ".env")
    out = subprocess.run(
        [*command, "-f", "compose.yaml", "config", "--quiet"],
        cwd=work / "compose",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # without .env the required passwords are missing, and the tool says so
    (work / "compose" / ".env").unlink()
    out = subprocess.run(
        [*command, "-f", "compose.yaml", "config", "--quiet"], cwd=work / "compose", capture_output=True, text=True
    )
    assert out.returncode != 0 and "INFLUXDB_ADMIN_PASSWORD" in out.stdout + out.stderr


def _directives(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value)
    return out


@pytest.mark.parametrize("path", [DEPLOY / "mosquitto" / "mosquitto.conf", COMPOSE / "mosquitto.conf"])
def test_every_shipped_mosquitto_configuration_sets_the_limits_deliberately(path: Path) -> None:
    d = _directives(path)
    assert d["persistence"] == "true"
    assert int(d["autosave_interval"]) <= 60
    assert int(d["max_queued_messages"]) == Mosquitto.MAX_QUEUED_MESSAGES  # the default 1000 loses records
    assert int(d["max_queued_bytes"]) == Mosquitto.MAX_QUEUED_BYTES
    assert int(d["max_inflight_messages"]) == Mosquitto.MAX_INFLIGHT_MESSAGES
    assert d["persistent_client_expiration"] == "14d"
    assert d["allow_anonymous"] == "false"
    assert "password_file" in d and "acl_file" in d
    text = path.read_text()
    assert re.search(r"^listener 8883$", text, re.M) and re.search(r"^tls_version tlsv1\.2$", text, re.M)
    for key in ("cafile", "certfile", "keyfile"):
        assert key in d


def _with_secrets(text: str, tmp_path: Path) -> str:
    """The configuration with every {file: ...} secret moved to an existing temporary file,
    and the gateway's user register to a copy of the shipped example."""

    def move(match: re.Match[str]) -> str:
        secret = tmp_path / Path(match.group(1)).name
        secret.write_text("s3cret-for-the-test")  # not a placeholder: those are refused
        return f"{{file: {secret}}}"

    register = tmp_path / "people.yaml"
    register.write_text((DEPLOY / "config" / "people.yaml.example").read_text())
    text = text.replace("register: /etc/inspection-collector/people.yaml", f"register: {register}")
    return re.sub(r"\{file: ([^}]+)\}", move, text)


@pytest.mark.parametrize(
    "path",
    [
        DEPLOY / "config" / "gateway.yaml.example",
        DEPLOY / "config" / "recorder.yaml.example",
        DEPLOY / "config" / "dashboard.yaml.example",
        COMPOSE / "recorder.yaml",
        COMPOSE / "dashboard.yaml",
    ],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_shipped_configurations_are_valid(path: Path, tmp_path: Path) -> None:
    cfg = config_mod.parse(_with_secrets(path.read_text(), tmp_path), str(path))
    assert cfg.mqtt.topic_prefix == "qc"
    if cfg.gateway is not None:
        assert cfg.mqtt.username == cfg.gateway.id  # the ACL's rule
        assert cfg.mqtt.tls is not None and cfg.mqtt.port == 8883
        assert str(cfg.gateway.journal).startswith(
            "/var/lib/inspection-collector/gateway/"
        )  # the unit's StateDirectory
        assert cfg.gateway.people is not None and cfg.register is not None  # people sign what they do
    if cfg.recorder is not None:
        assert str(cfg.recorder.dead_letter_file).startswith("/var/lib/inspection-collector/")
        assert cfg.recorder.client_id == cfg.mqtt.username  # its status topic is granted by user name
    if path.parent.name == "config" and cfg.recorder is not None:
        assert str(cfg.recorder.dead_letter_file).startswith("/var/lib/inspection-collector/recorder/")


def test_compose_recorder_writes_where_grafana_reads() -> None:
    rec = yaml.safe_load((COMPOSE / "recorder.yaml").read_text())["influxdb"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "influxdb" and ds["jsonData"]["dbName"] == rec["database"]
    assert ds["url"] == rec["url"]
    assert ds["secureJsonData"]["httpHeaderValue1"] == "Token $__file{/tokens/influxdb-reader-token}"
    assert rec["token"] == {"file": "/tokens/influxdb-recorder-token"}


# -- the Grafana dashboard ------------------------------------------------------------------

FIELDS = {*INTEGER_FIELDS, *STRING_FIELDS, *FLOAT_FIELDS, PAYLOAD_FIELD}
KIND_VALUES = {str(k) for k in RecordKind}
VERDICT_VALUES = {str(v) for v in Verdict} | {"accept", "reject", "incomplete"}


def _dashboard() -> dict[str, Any]:
    data = json.loads((GRAFANA / "dashboards" / "quality.json").read_text())
    assert isinstance(data, dict)
    return data


def _queries(dash: dict[str, Any]) -> list[str]:
    out = [v["query"] for v in dash["templating"]["list"]]
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if "query" in target:
                out.append(target["query"])
    return out


def test_dashboard_uses_only_what_the_recorder_writes() -> None:
    dash = _dashboard()
    queries = _queries(dash)
    assert len(queries) >= 8
    for q in queries:
        assert "$timeFilter" in q or q.startswith("SHOW TAG VALUES"), q
        without_aliases = re.sub(r'\bAS "[^"]+"', "", q)
        measurements = re.findall(r'\bFROM "([^"]+)"', without_aliases)
        assert measurements and set(measurements) <= set(MEASUREMENTS.values()), q
        for name in re.findall(r'"([^"]+)"', without_aliases):
            assert name in set(MEASUREMENTS.values()) | set(TAG_KEYS) | FIELDS, f"{name!r} in {q}"
        group = re.search(r"GROUP BY (.*?)(?: fill\(\w+\))?(?: ORDER BY .*| LIMIT .*)?$", without_aliases)
        for part in group.group(1).split(", ") if group else []:
            if not part.startswith("time("):
                assert part.strip('"') in TAG_KEYS, f"group by {part} in {q}"
        for key, value in re.findall(r'"(\w+)" = \'([^\']*)\'', q):
            assert key in TAG_KEYS, q  # compared values are tags (fields would be scanned)
            allowed = {"verdict": VERDICT_VALUES, "kind": KIND_VALUES}.get(key)
            if allowed is not None:
                assert value in allowed, q
        for key in re.findall(r'"(\w+)" =~ /', q):
            assert key in TAG_KEYS, q
        for key in re.findall(r'WITH KEY = "(\w+)"', q):
            assert key in TAG_KEYS, q
        for field_name in re.findall(r'\w+\("(\w+)"\)', q):  # count("seq"), mean("value") ...
            assert field_name in FIELDS, q


def test_dashboard_structure_and_datasource() -> None:
    dash = _dashboard()
    assert dash["uid"] == "inspection-quality" and dash["title"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    uid = datasources["datasources"][0]["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"]}
    assert "Out-of-tolerance rate per station" in titles and "Trend: $characteristic" in titles
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            ds = target["datasource"]
            assert ds["uid"] in (uid, "__expr__"), panel["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(dash["panels"])))
    assert used - {"timeFilter", "__interval", "tag_station", "tag_verdict", "col", "__field", "A", "B"} <= names
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "quality.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
