"""Loading and validating the YAML configuration.

One file describes a site's piece of the system: the gateway (its stations, devices,
gauge register and inspection plans), the MQTT broker, the recorder and the store.
Each command uses the sections it needs and refuses to start without them.

Every error names the file, the field path (``stations[0].devices[1].baudrate``), the
line in the file where that can be found, and the reason. Secrets (MQTT password,
InfluxDB token, the gateway's signing key) may be given inline, as ``{env: NAME}`` or as
``{file: PATH}``; they are held as :class:`pydantic.SecretStr` and never logged.

Why one module of this size: it is the configuration file's schema (one pydantic model per
section), its cross-reference checks and the errors that name file, field and line; one module,
so that the schema reads top to bottom as the file does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from collector.config_file import Identifier, InfluxSettings, Secret, _Section, format_errors, read_yaml, where
from collector.errors import ConfigError
from collector.inspection.commands import ALWAYS_SIGNED, COMMANDS
from collector.inspection.models import Gauge, InspectionPlan, PersonId
from collector.people.accounts import DashboardSettings
from collector.people.register import UserRegister
from drivers import registry
from drivers.base import DriverConfig


class TlsSettings(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip host name verification (self-signed test brokers only)


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: Identifier = "qc"
    client_id: str | None = None
    username: str | None = None
    password: Secret | None = None
    tls: TlsSettings | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)
    #: unacknowledged record messages allowed on the wire at once
    max_inflight: int = Field(default=32, ge=1, le=65535)
    #: several records share a message when there is a backlog
    max_records_per_message: int = Field(default=500, ge=1, le=100_000)
    max_message_bytes: int = Field(default=256 * 1024, ge=4096, le=64 * 1024 * 1024)
    reconnect_min_delay: float = Field(default=0.5, gt=0)
    #: the reconnect back-off doubles up to this (jittered 50-100 %): a few seconds, so that a
    #: gateway is back within seconds of its broker
    reconnect_max_delay: float = Field(default=3.0, gt=0, le=60)
    #: while the broker cannot be reached, a reminder in the log every this many seconds
    outage_reminder: float = Field(default=60.0, ge=1)


class CalibrationPolicy(_Section):
    """What happens to a reading from a gauge whose calibration is due or overdue.

    ``block`` (the default, ISO 9001 7.1.5.2): a reading from an overdue, locked or
    unregistered gauge is refused, and the refusal is recorded and alerted. ``warn``:
    the reading is accepted, flagged ``calibration_status: overdue`` in its record and
    alerted. ``grace_days`` accepts (flagged) for that many days past the due date even
    under ``block``.
    """

    policy: Literal["block", "warn"] = "block"
    grace_days: int = Field(default=0, ge=0)
    warn_days: int = Field(default=14, ge=0)
    #: readings from a device with no gauge in the register are refused under ``block``
    require_registered_gauge: bool = True


class MetricsSettings(_Section):
    """A Prometheus endpoint (GET /metrics), see collector/metrics.py."""

    bind: str = "127.0.0.1"
    port: int = Field(default=9810, ge=0, le=65535)  # 0: any free port (tests)


class OperatorViewSettings(_Section):
    """The inspector's screen: a local web page served by the gateway.

    ``allowed_hosts``: the names and addresses browsers reach it under (what they send as
    ``Host``); a request naming another host is refused (DNS rebinding, a foreign page).
    The loopback names and a specific bind address are allowed as well; bound to every
    address, the list is required.
    """

    bind: str = "127.0.0.1"  # the workstation's own browser; another address to serve a panel PC
    port: int = Field(default=8081, ge=0, le=65535)  # 0: any free port (tests)
    allowed_hosts: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\[\]_-]{1,253}$")], ...] = ()
    #: the session cookie's Secure flag (behind a TLS reverse proxy)
    secure_cookie: bool = False

    @model_validator(mode="after")
    def _hosts(self) -> OperatorViewSettings:
        if self.bind in ("", "0.0.0.0", "::") and not self.allowed_hosts:
            raise ValueError(
                f"bound to every address ({self.bind or 'empty'}), the view needs allowed_hosts: the names "
                "the panels' browsers use for it (a request naming another host is refused)"
            )
        return self


CommandName = Literal[
    "scan", "sign_in", "sign_out", "remeasure", "invalidate", "dispose", "abandon", "patrol", "andon_off",
    "ack_alert", "release",
]  # fmt: skip


class PeopleSettings(_Section):
    """Who may sign at the stations, and what needs a signature (docs/people.md).

    ``register``: the user register (YAML: ids, names, badges, roles, hashed PINs or
    passwords, qualifications), loaded and checked with the configuration.
    ``secret_required``: the commands whose signer must enter a PIN or password each time;
    ``remeasure``, ``invalidate``, ``dispose`` and ``release`` always do. Without
    ``sign_in`` here a registered badge alone signs in; with ``release``, every completed
    part waits for its release to be signed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    #: ``register`` in the file (the name pydantic's BaseModel.register would shadow)
    register_file: Path = Field(alias="register")
    secret_required: tuple[CommandName, ...] = ("sign_in", "remeasure", "invalidate", "dispose")
    #: seconds a sign-in session of the operator view lasts without use
    session_idle_timeout: float = Field(default=900.0, gt=0)
    #: wrong PINs/passwords in a row before the user is locked out for ``lockout`` seconds
    max_failures: int = Field(default=5, ge=1, le=100)
    lockout: float = Field(default=300.0, gt=0)
    #: secrets checked per second at most, for the whole gateway (each check costs a scrypt hash)
    checks_per_second: float = Field(default=2.0, gt=0, le=100)
    #: refuse a sign-in, and readings, of a person with no valid qualification for the plan
    competence_gate: bool = True
    #: refused commands recorded individually per minute at most (the rest are counted)
    refusal_records_per_minute: int = Field(default=30, ge=1, le=10_000)

    @field_validator("secret_required")
    @classmethod
    def _floor(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if name not in COMMANDS:
                raise ValueError(f"unknown command {name!r}")
        if "release" in v:
            return tuple(dict.fromkeys(v))
        return tuple(dict.fromkeys((*v, *sorted(ALWAYS_SIGNED - {"release"}))))

    @property
    def signed_release(self) -> bool:
        return "release" in self.secret_required


class SigningSettings(_Section):
    """The gateway's Ed25519 private key (``collector keygen``), readable by the gateway only."""

    key_file: Path


class GatewaySettings(_Section):
    id: Identifier
    site: Identifier
    line: Identifier
    journal: Path = Path("var/journal.sqlite")
    #: the Ed25519 key that signs every block and checkpoint (recorders hold the public key)
    signing: SigningSettings | None = None
    #: an HMAC-SHA256 shared secret instead (older set-ups: whoever checks can also forge)
    signing_key: Secret | None = None
    #: seconds between status heartbeats (retained) on the status topics
    status_interval: float = Field(default=10.0, gt=0)
    #: seconds between two signed checkpoints (also one at start and one at stop)
    checkpoint_interval: float = Field(default=60.0, gt=0)
    #: settled blocks (stored or refused) older than this leave the journal (0: only for the budget)
    keep_delivered_days: float = Field(default=30.0, ge=0)
    #: the journal's disk budget ("8 GiB"); settled blocks leave first; at the budget new
    #: readings are refused as lost (counted, alarmed)
    journal_budget: ByteSize = Field(default=ByteSize(8 * 1024**3), ge=1024 * 1024)
    #: share of the budget at which settled blocks are pruned early and, if that does not
    #: help, an alarm is raised
    journal_alarm: float = Field(default=0.8, gt=0, lt=1)
    #: a block holds at most this many records and bytes (it must fit in one MQTT message)
    max_block_records: int = Field(default=1000, ge=1, le=10_000)
    max_block_bytes: ByteSize = Field(default=ByteSize(256 * 1024), ge=4096)
    #: readings waiting for the gateway's processing thread; a driver waits up to
    #: ``queue_timeout`` seconds for room, then the reading is lost (counted, alarmed)
    queue_size: int = Field(default=10_000, ge=10)
    queue_timeout: float = Field(default=1.0, ge=0)
    calibration: CalibrationPolicy = CalibrationPolicy()
    #: the user register and the signature rules; without it nobody can be authenticated, and
    #: the commands that need a signature are refused
    people: PeopleSettings | None = None
    operator_view: OperatorViewSettings | None = None
    metrics: MetricsSettings | None = None
    #: seconds a block acknowledged by the broker may stay unanswered by a recorder, while
    #: later blocks are answered, before it is sent again (the broker lost it)
    confirm_timeout: float = Field(default=30.0, gt=0)
    #: a block sent this many times without any recorder answering is not sent again (alarmed)
    max_resends: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _one_key(self) -> GatewaySettings:
        if self.signing is not None and self.signing_key is not None:
            raise ValueError("give signing (an Ed25519 key file) or signing_key (an HMAC secret), not both")
        return self


class RecorderSettings(_Section):
    group: Identifier = "recorders"
    client_id: str | None = None
    #: records per InfluxDB write when messages are waiting
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    #: the longest a received record waits for its batch to fill, in seconds
    batch_interval: float = Field(default=0.1, gt=0, le=10)
    #: messages the broker may have in flight to this recorder (MQTT 5 receive maximum)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: the register of gateways: a key directory (``<gateway>.pub``, ``<gateway>.hmac``,
    #: optional ``register.yaml``); a block from a gateway not in it is refused
    keys: Path
    #: refuse unsigned blocks (and checkpoints)
    require_signature: bool = True
    dead_letter_file: Path = Path("var/dead-letter.jsonl")
    #: the dead-letter file is rotated at this size (``.1``, ``.2`` ...), and this many kept
    dead_letter_max_bytes: ByteSize = Field(default=ByteSize(64 * 1024**2), ge=4096)
    dead_letter_keep: int = Field(default=4, ge=1, le=100)
    metrics: MetricsSettings | None = None
    retry_min_delay: float = Field(default=0.5, gt=0)
    retry_max_delay: float = Field(default=30.0, gt=0)


class PartContext(_Section):
    """The part under inspection when nothing has been scanned.

    ``serial`` may contain ``{n}`` (with a format, e.g. ``SN-{n:05d}``): the station then
    numbers parts itself, starting at ``first_number`` and counting up each time the plan
    is complete, and carries on after a restart from the last serial it journaled.
    """

    part_number: str
    serial: str | None = None
    lot: str | None = None
    work_order: str | None = None
    #: a user id (records carry it; with a user register, a person of the register)
    operator: PersonId | None = None
    first_number: int = Field(default=1, ge=0)

    @field_validator("serial")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{" in v:
            try:
                v.format(n=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"serial template {v!r} is not valid: {exc}") from None
        return v


#: the keys of a device entry that belong to the collector, not to the driver
DEVICE_KEYS = ("gauge", "characteristics", "channels", "serial_channel", "ask_when_next", "min_load")


class DeviceSettings(_Section):
    """A device at a station: the collector's part (which gauge it is, what it may measure)
    and the driver's part.

    - ``gauge``: its entry in the gauge register (calibration gate, traceability);
    - ``characteristics``: the only characteristics it may measure (a reading for another
      one is refused as from the wrong gauge); empty: any;
    - ``channels``: for automatic stations, channel -> characteristic: a reading on a bound
      channel fills that characteristic directly instead of the next one in the plan;
    - ``serial_channel``: a text reading on this channel (a serial number read from PLC
      registers) starts a new part with that serial;
    - ``ask_when_next``: when one of its ``characteristics`` is next, the gateway asks the
      device for a reading (a balance polled on demand: no stream of weights to sort out);
    - ``min_load``: the least value (in the characteristic's unit) that shows a part is on
      the device: a reading below it is "no load", refused and not judged. With
      ``ask_when_next`` the gateway then asks for the immediate value once a second until a
      stable value at or above ``min_load`` comes, and only that one is judged (an empty
      balance weighed is not a light part).

    Every other key belongs to the driver and is validated by the driver's own model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    gauge: str | None = None
    characteristics: tuple[str, ...] = ()
    channels: dict[str, str] = Field(default_factory=dict)
    serial_channel: str | None = None
    ask_when_next: bool = False
    min_load: Decimal | None = Field(default=None, gt=0)
    driver_config: SerializeAsAny[DriverConfig]

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "driver_config" in data:
            return data
        data = dict(data)
        ours = {k: data.pop(k) for k in DEVICE_KEYS if k in data}
        if "driver" not in data:
            raise ValueError("a device needs a driver (one of: " + ", ".join(registry.names()) + ")")
        try:
            cfg = registry.parse_config(data)
        except registry.UnknownDriver as exc:
            raise ValueError(str(exc)) from None
        return {**ours, "driver_config": cfg}

    @property
    def id(self) -> str:
        return self.driver_config.id


class AndonSettings(_Section):
    """A light, horn or line stop driven through a device (a PLC coil or register)."""

    device: str
    point: str
    on: int = 1
    off: int = 0
    #: "on_pass": the next accepted part switches it off; "manual": only a command does
    clear: Literal["on_pass", "manual"] = "on_pass"


class SamplingSettings(_Section):
    """Inspect ``inspect`` parts of every ``every`` (counted by the parts' labels or PLC serials)."""

    inspect: int = Field(ge=1)
    every: int = Field(ge=1)

    @model_validator(mode="after")
    def _fraction(self) -> SamplingSettings:
        if self.inspect > self.every:
            raise ValueError(f"cannot inspect {self.inspect} of every {self.every} parts")
        return self


class StationSettings(_Section):
    id: Identifier
    plan: str  # the part number measured here until a label names another one
    part: PartContext | None = None
    #: the first part after start-up or a change of lot / work order is a first-piece inspection
    first_piece: bool = False
    #: an operator signed in by badge is signed out after this many idle seconds
    operator_idle_timeout: float | None = Field(default=None, gt=0)
    #: refuse readings while no operator is signed in (the default: every record names who
    #: measured; set false only for an automatic station whose records name no person)
    require_operator: bool = True
    andon: AndonSettings | None = None
    #: a sample plan: only some parts are inspected; the others are recorded as not sampled
    sampling: SamplingSettings | None = None
    #: regular expression with named groups (part_number, serial, lot, work_order, operator)
    scan_pattern: str | None = None
    devices: list[DeviceSettings] = Field(default_factory=list)

    @field_validator("scan_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class Config(_Section):
    gateway: GatewaySettings | None = None
    dashboard: DashboardSettings | None = None
    mqtt: MqttSettings = MqttSettings()
    influxdb: InfluxSettings | None = None
    recorder: RecorderSettings | None = None
    gauges: list[Gauge] = Field(default_factory=list)
    plans: list[InspectionPlan] = Field(default_factory=list)
    stations: list[StationSettings] = Field(default_factory=list)
    _source: str = PrivateAttr(default="<config>")
    _register: UserRegister | None = PrivateAttr(default=None)

    @property
    def register(self) -> UserRegister | None:
        """The user register ``gateway.people.register`` names (loaded with the configuration)."""
        return self._register

    def plan_for(self, part_number: str) -> InspectionPlan | None:
        for p in self.plans:
            if p.part_number == part_number:
                return p
        return None

    def gauge(self, gauge_id: str) -> Gauge | None:
        for g in self.gauges:
            if g.id == gauge_id:
                return g
        return None

    def require(self, *sections: str) -> None:
        """Raise ConfigError unless every named section is present (a command's needs)."""
        missing = [s for s in sections if getattr(self, s) in (None, [])]
        if missing:
            raise ConfigError(self._source, [(s, "section is required") for s in missing])


Loc = list[int | str]


def reference_problems(cfg: Config) -> list[tuple[Loc, str]]:
    """Cross-references the models cannot check alone: unique ids, plans and gauges that exist."""
    problems: list[tuple[Loc, str]] = []
    plans: set[str] = set()
    for i, plan in enumerate(cfg.plans):
        if plan.part_number in plans:
            problems.append((["plans", i, "part_number"], f"part number {plan.part_number!r} has a plan already"))
        plans.add(plan.part_number)
    gauges: set[str] = set()
    for i, gauge in enumerate(cfg.gauges):
        if gauge.id in gauges:
            problems.append((["gauges", i, "id"], f"gauge id {gauge.id!r} appears twice"))
        gauges.add(gauge.id)
    stations: set[str] = set()
    devices: set[str] = set()
    for i, st in enumerate(cfg.stations):
        if st.id in stations:
            problems.append((["stations", i, "id"], f"station id {st.id!r} appears twice"))
        stations.add(st.id)
        if st.plan not in plans:
            problems.append((["stations", i, "plan"], f"no plan for part number {st.plan!r}"))
        for j, dev in enumerate(st.devices):
            if dev.id in devices:
                problems.append((["stations", i, "devices", j, "id"], f"device id {dev.id!r} appears twice"))
            devices.add(dev.id)
            if dev.gauge is not None and dev.gauge not in gauges:
                problems.append(
                    (["stations", i, "devices", j, "gauge"], f"gauge {dev.gauge!r} is not in the gauge register")
                )
            st_plan = cfg.plan_for(st.plan)
            known = {c.id for c in st_plan.characteristics} if st_plan else set()
            for k, cid in enumerate(dev.characteristics):
                if st_plan and cid not in known:
                    problems.append(
                        (["stations", i, "devices", j, "characteristics", k], f"{cid!r} is not in the plan")
                    )
            for channel, cid in dev.channels.items():
                if st_plan and cid not in known:
                    problems.append((["stations", i, "devices", j, "channels", channel], f"{cid!r} is not in the plan"))
        if st.andon is not None and st.andon.device not in {d.id for d in st.devices}:
            problems.append((["stations", i, "andon", "device"], f"device {st.andon.device!r} is not at this station"))
    if cfg.gateway is not None and cfg.gateway.max_block_bytes > cfg.mqtt.max_message_bytes:
        problems.append(
            (
                ["gateway", "max_block_bytes"],
                f"{cfg.gateway.max_block_bytes} is more than mqtt.max_message_bytes "
                f"({cfg.mqtt.max_message_bytes}): a block must fit in one message",
            )
        )
    return problems


#: what each daemon needs from a configuration file
ROLES: dict[str, tuple[str, ...]] = {
    "gateway": ("gateway",),
    "recorder": ("recorder", "influxdb"),
    "dashboard": ("dashboard", "influxdb"),
}


def _path_problem(path: Path, what: str, *, directory: bool = False) -> str | None:
    """Why ``path`` cannot be used (or created) as a file (or a directory), without creating it."""
    target = path if directory else path.parent
    for ancestor in (target, *target.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{what} {path}: {ancestor} is not a directory"
            break
    if not directory and path.is_dir():
        return f"{what} {path} is a directory"
    return None


def runtime_problems(cfg: Config, role: str) -> list[tuple[str, str]]:
    """What a daemon of ``role`` would refuse at start beyond the file's own validity:
    missing sections, paths it cannot use, keys it cannot load. ``collector check-config``
    runs the same checks, so that it and the daemons agree on what is valid."""
    from collector.chain.keys import Ed25519Signer, KeyFileError, KeyRing

    problems = [(section, "section is required") for section in ROLES[role] if getattr(cfg, section) is None]
    if problems:
        return [(where, f"{reason} to run the {role}") for where, reason in problems]
    if role == "gateway":
        gw = cfg.gateway
        assert gw is not None
        if (why := _path_problem(gw.journal, "journal")) is not None:
            problems.append(("gateway.journal", why))
        if gw.signing is not None:
            try:
                Ed25519Signer.from_file(gw.signing.key_file)
            except KeyFileError as exc:
                problems.append(("gateway.signing.key_file", str(exc)))
    if role == "recorder":
        rec = cfg.recorder
        assert rec is not None
        try:
            KeyRing.load(rec.keys)
        except KeyFileError as exc:
            problems.append(("recorder.keys", str(exc)))
        except OSError as exc:
            problems.append(("recorder.keys", f"{rec.keys}: {exc.strerror or exc}"))
        if (why := _path_problem(rec.dead_letter_file, "dead-letter file")) is not None:
            problems.append(("recorder.dead_letter_file", why))
    return problems


def check_role(cfg: Config, role: str) -> None:
    """Raise :class:`ConfigError` (exit 2) unless a daemon of ``role`` can start with ``cfg``."""
    problems = runtime_problems(cfg, role)
    if problems:
        raise ConfigError(cfg._source, problems)


def parse(text: str, source: str = "<config>") -> Config:
    """Parse and validate YAML text; raise :class:`ConfigError` naming source, field, reason."""
    root, data = read_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping of sections")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc, root)) from None
    refs = reference_problems(cfg)
    if refs:
        raise ConfigError(source, [(where(root, loc), msg) for loc, msg in refs])
    cfg._source = source
    if cfg.gateway is not None and cfg.gateway.people is not None:
        cfg._register = load_register(cfg.gateway.people.register_file)
    return cfg


def parse_register(text: str, source: str) -> UserRegister:
    """A user register from YAML text; ConfigError naming the file, line, field and reason."""
    root, data = read_yaml(text, source)
    if not isinstance(data, dict) or set(data) - {"users"}:
        raise ConfigError(source, [("(top level)", "a user register is a mapping with one key, users")])
    try:
        return UserRegister.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc, root)) from None


def load_register(path: str | os.PathLike[str]) -> UserRegister:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", f"cannot read the user register: {exc.strerror or exc}")]) from None
    return parse_register(text, str(p))


def load(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", exc.strerror or str(exc))]) from None
    return parse(text, str(p))
