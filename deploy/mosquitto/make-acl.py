#!/usr/bin/env python3
"""Write Mosquitto's ACL file for the collector: each account may publish and read what its role needs.

Topics (collector/mqtt/topics.py, docs/evidence-format.md): ``<prefix>/<site>/<line>/<station>/
{record,alert,status,command,command/reply,ack,ack/reply}``, ``<prefix>/gateways/<id>/{status,
checkpoint,stored}``, ``<prefix>/recorders/<user>/status`` and ``<prefix>/dead-letter``.

One account per role and per instance (least privilege). MQTT 5 does not tell a subscriber who
published a message, so the topic an account may write is what binds a message to an account:

- **gateways** (user name = gateway id; a Mosquitto pattern cannot map a gateway to *its*
  stations, so each gets a ``user`` block): publish records, alerts, status and command
  replies of their own stations only, their own status (and last will) and checkpoint; read
  their own stations' command and acknowledgement topics and their own confirmations
  (``gateways/<id>/stored``). A gateway confirms nothing.
- **recorders**: read records (through the shared subscription), alerts, checkpoints and
  statuses; publish confirmations (``gateways/+/stored``: any recorder may take any
  gateway's records), dead letters, and their own status (``recorders/<user>/status``:
  give each recorder its user name as ``recorder.client_id``). Only recorders confirm.
- **dashboards**: read records, alerts, statuses and dead letters; publish alert
  acknowledgements only (``<station>/ack``, which the gateway takes as the dashboard's
  signed-in user's) and read their replies.
- **operator_views**: remote operator screens or MES clients that send commands signed with
  a person's credentials (``<station>/command``, checked by the gateway against its user
  register: use TLS) and read the replies. Nothing else.
- **monitors**: the broker's ``$SYS`` statistics only.

Nobody else may do anything: Mosquitto denies what the ACL file does not grant.

Input: a YAML list of the clients::

    topic_prefix: qc
    gateways:
      - {id: gw-01, site: plant-1, line: line-a, stations: [st-10, st-20]}
    recorders: [recorder-1, recorder-2]
    dashboards: [dashboard-1]
    operator_views: []            # optional
    monitors: [prometheus]        # optional

and/or gateway configuration files (``--gateway-config /etc/inspection-collector/gateway.yaml``,
repeatable), whose ``gateway`` and ``stations`` sections name the same things. Secrets in
those files are not read. Usage::

    make-acl.py clients.yaml [--gateway-config FILE ...] [-o /etc/mosquitto/acl]

then ``systemctl reload mosquitto`` (Mosquitto re-reads its ACL and password files on SIGHUP).
Needs Python 3.11 and PyYAML (Debian: python3-yaml), nothing else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: a topic level or user name: no MQTT wildcards, no separators, no white space
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AclError(Exception):
    pass


@dataclass
class GatewayEntry:
    id: str
    site: str
    line: str
    stations: list[str] = field(default_factory=list)
    source: str = ""


@dataclass
class Clients:
    prefix: str | None = None
    gateways: list[GatewayEntry] = field(default_factory=list)
    recorders: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    operator_views: list[str] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)


def _name(value: Any, what: str) -> str:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not _NAME.match(text):
        raise AclError(f"{what}: {value!r} is not a valid name (letters, digits, '.', '_', '-'; no MQTT wildcards)")
    return text


def _names(values: Any, what: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise AclError(f"{what}: expected a list")
    return [_name(v, f"{what}[{i}]") for i, v in enumerate(values)]


def _set_prefix(clients: Clients, prefix: Any, source: str) -> None:
    value = _name(prefix, f"{source}: topic_prefix")
    if clients.prefix is not None and clients.prefix != value:
        raise AclError(f"{source}: topic prefix {value!r} differs from {clients.prefix!r}")
    clients.prefix = value


def read_clients(path: Path, clients: Clients) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise AclError(f"{path}: expected a mapping")
    unknown = set(data) - {"topic_prefix", "gateways", "recorders", "dashboards", "operator_views", "monitors"}
    if unknown:
        raise AclError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    if "topic_prefix" in data:
        _set_prefix(clients, data["topic_prefix"], str(path))
    for i, gw in enumerate(data.get("gateways") or []):
        where = f"{path}: gateways[{i}]"
        if not isinstance(gw, dict):
            raise AclError(f"{where}: expected a mapping with id, site, line, stations")
        clients.gateways.append(
            GatewayEntry(
                id=_name(gw.get("id"), f"{where}.id"),
                site=_name(gw.get("site"), f"{where}.site"),
                line=_name(gw.get("line"), f"{where}.line"),
                stations=_names(gw.get("stations"), f"{where}.stations"),
                source=str(path),
            )
        )
    clients.recorders += _names(data.get("recorders"), f"{path}: recorders")
    clients.dashboards += _names(data.get("dashboards"), f"{path}: dashboards")
    clients.operator_views += _names(data.get("operator_views"), f"{path}: operator_views")
    clients.monitors += _names(data.get("monitors"), f"{path}: monitors")


def read_gateway_config(path: Path, clients: Clients) -> None:
    """A gateway's own configuration file: its id, site, line, stations and topic prefix."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    gw = data.get("gateway") if isinstance(data, dict) else None
    if not isinstance(gw, dict):
        raise AclError(f"{path}: no gateway section")
    stations = data.get("stations") or []
    if not isinstance(stations, list):
        raise AclError(f"{path}: stations must be a list")
    mqtt = data.get("mqtt") or {}
    _set_prefix(clients, mqtt.get("topic_prefix", "qc") if isinstance(mqtt, dict) else "qc", str(path))
    gateway_id = _name(gw.get("id"), f"{path}: gateway.id")
    username = mqtt.get("username") if isinstance(mqtt, dict) else None
    if username is not None and username != gateway_id:
        raise AclError(f"{path}: mqtt.username {username!r} must be the gateway id {gateway_id!r}")
    clients.gateways.append(
        GatewayEntry(
            id=gateway_id,
            site=_name(gw.get("site"), f"{path}: gateway.site"),
            line=_name(gw.get("line"), f"{path}: gateway.line"),
            stations=[
                _name(st.get("id") if isinstance(st, dict) else None, f"{path}: stations[{i}].id")
                for i, st in enumerate(stations)
            ],
            source=str(path),
        )
    )


def check(clients: Clients) -> None:
    users: dict[str, str] = {}
    for kind, names in (
        ("gateway", [g.id for g in clients.gateways]),
        ("recorder", clients.recorders),
        ("dashboard", clients.dashboards),
        ("operator view", clients.operator_views),
        ("monitor", clients.monitors),
    ):
        for name in names:
            if name in users:
                raise AclError(f"user {name!r} appears twice (as {users[name]} and {kind})")
            users[name] = kind
    owner: dict[tuple[str, str, str], str] = {}
    for gw in clients.gateways:
        for st in gw.stations:
            key = (gw.site, gw.line, st)
            if key in owner:
                raise AclError(f"station {'/'.join(key)} is served by both {owner[key]} and {gw.id}")
            owner[key] = gw.id


def render(clients: Clients) -> str:
    check(clients)
    p = clients.prefix or "qc"
    out = [
        "# Mosquitto ACL for the inspection collector, generated by deploy/mosquitto/make-acl.py:",
        "# regenerate it rather than editing it. Anything not granted here is denied.",
        f"# Topic prefix: {p}",
        "",
    ]
    for gw in sorted(clients.gateways, key=lambda g: g.id):
        out.append(f"# gateway {gw.id}: site {gw.site}, line {gw.line}, station(s) {', '.join(gw.stations) or '-'}")
        out.append(f"user {gw.id}")
        out.append(f"topic write {p}/gateways/{gw.id}/status")
        out.append(f"topic write {p}/gateways/{gw.id}/checkpoint")
        out.append(f"topic read {p}/gateways/{gw.id}/stored")
        for st in gw.stations:
            base = f"{p}/{gw.site}/{gw.line}/{st}"
            out += [
                f"topic write {base}/record",
                f"topic write {base}/alert",
                f"topic write {base}/status",
                f"topic read {base}/command",
                f"topic write {base}/command/reply",
                f"topic read {base}/ack",
                f"topic write {base}/ack/reply",
            ]
        out.append("")
    for rec in sorted(clients.recorders):
        out += [
            f"# recorder {rec}: reads records (shared subscription), alerts, checkpoints and statuses;",
            "# confirms what it stored, dead-letters what it refused",
            f"user {rec}",
            f"topic read {p}/+/+/+/record",
            f"topic read {p}/+/+/+/alert",
            f"topic read {p}/+/+/+/status",
            f"topic read {p}/gateways/+/status",
            f"topic read {p}/gateways/+/checkpoint",
            f"topic write {p}/gateways/+/stored",
            f"topic write {p}/dead-letter",
            f"topic write {p}/recorders/{rec}/status",
            "",
        ]
    for dash in sorted(clients.dashboards):
        out += [
            f"# dashboard {dash}: reads alerts, statuses and records; sends alert acknowledgements only",
            f"user {dash}",
            f"topic read {p}/+/+/+/record",
            f"topic read {p}/+/+/+/alert",
            f"topic read {p}/+/+/+/status",
            f"topic write {p}/+/+/+/ack",
            f"topic read {p}/+/+/+/ack/reply",
            f"topic read {p}/gateways/+/status",
            f"topic read {p}/recorders/+/status",
            f"topic read {p}/dead-letter",
            "",
        ]
    for view in sorted(clients.operator_views):
        out += [
            f"# operator view {view}: sends commands signed with a person's credentials (checked by the gateway)",
            f"user {view}",
            f"topic write {p}/+/+/+/command",
            f"topic read {p}/+/+/+/command/reply",
            "",
        ]
    for mon in sorted(clients.monitors):
        out += [f"# monitor {mon}: broker statistics only", f"user {mon}", "topic read $SYS/#", ""]
    return "\n".join(out)


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # not secret; Mosquitto reads it as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("clients", nargs="*", type=Path, help="YAML file(s) listing gateways, recorders, dashboards")
    parser.add_argument(
        "--gateway-config", action="append", type=Path, default=[], help="a gateway's configuration file (repeatable)"
    )
    parser.add_argument("--prefix", help="topic prefix (default: from the files, else qc)")
    parser.add_argument("-o", "--output", type=Path, help="write here (atomically) instead of to standard output")
    args = parser.parse_args(argv)
    clients = Clients(prefix=args.prefix)
    sources: Iterable[tuple[Path, Any]] = [
        *((p, read_clients) for p in args.clients),
        *((p, read_gateway_config) for p in args.gateway_config),
    ]
    try:
        any_source = False
        for path, reader in sources:
            any_source = True
            try:
                reader(path, clients)
            except (OSError, yaml.YAMLError) as exc:
                raise AclError(f"{path}: {exc}") from None
        if not any_source:
            raise AclError("give a clients file or --gateway-config")
        text = render(clients)
    except AclError as exc:
        print(f"make-acl: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
