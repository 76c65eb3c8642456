"""Domain models: what an inspection is checked against, and what it produces.

Specification-side models (characteristic, plan, gauge) are pydantic models validated
once, when the configuration is loaded. The record-side models (one per record kind,
:class:`BlockModel`, :class:`Alert`) describe the JSON payloads of the evidence format
(``docs/evidence-format.md``): a record as it sits in its block, without the block's keys.
The gateway builds records as plain dicts in the hot path (see
:mod:`collector.inspection.records`) and the recorder validates every block's records
against these models. The JSON Schemas under ``config/schemas/`` are generated from this
module (``collector schemas``).

Why one module of this size: every record kind and the specification-side models in one place,
because the JSON Schemas, the recorder's checks and the record TypedDicts
(:mod:`collector.inspection.record_types`, kept in step by a test) follow this one module.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from decimal import Context, Decimal, localcontext
from functools import cached_property
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from collector.inspection import units
from drivers.base import Reading

#: decimals travel as strings in payloads: exact, and canonical for hashing
DecimalStr = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", examples=["12.345"])]
#: UTC, microseconds, always the same shape: part of the hashed canonical form
UtcTimestamp = Annotated[
    str,
    Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$", examples=["2026-11-21T10:15:30.123456Z"]),
]
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]

#: no control characters (C0, DEL, C1) and no Unicode line or paragraph separators: free text
#: in a record is one line, as line protocol, logs and screens need it
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
#: a person (operator, signer, who acknowledged) or "system"/"auto": a user id of the user
#: register, a badge code a station's label pattern read, a dashboard user name
PersonId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$", examples=["op-117"])]
#: a person's name as printed with a signature (21 CFR 11.50)
PersonName = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_CONTROL)]
#: free text a person types: a reason, a comment, a concession reference
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]
#: free text the station composes around a person's text ("invalidated: <reason>")
LongText = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Criticality(enum.StrEnum):
    """Characteristic class, as drawings and Q-DAS K2005 grade them."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INCIDENTAL = "incidental"


class Rounding(enum.StrEnum):
    """How a value is rounded to the characteristic's decimals before it is judged.

    ``half_even`` is ISO 80000-1 Annex B rule B (a trailing 5 goes to the even digit);
    ``half_up`` rounds a trailing 5 away from zero, as many drawings' general notes say.
    """

    HALF_EVEN = "half_even"
    HALF_UP = "half_up"


class Characteristic(_Frozen):
    """One feature of a part to be measured, with its specification.

    Give limits either absolutely (``lsl``/``usl``) or as tolerances around the nominal
    (``lower_tol``/``upper_tol``, signed: ``-0.02`` and ``+0.02``). Either limit may be
    absent for a one-sided specification, but not both.
    """

    id: Name
    name: Name
    nominal: Decimal | None = None
    lsl: Decimal | None = None
    usl: Decimal | None = None
    lower_tol: Decimal | None = None
    upper_tol: Decimal | None = None
    unit: str
    decimals: int = Field(ge=0, le=9)
    criticality: Criticality = Criticality.MAJOR
    rounding: Rounding = Rounding.HALF_EVEN
    gauge_types: tuple[str, ...] = ()  # empty: any gauge may measure it
    spc: SpcSettings | None = None
    #: the range a real value of this characteristic can have at all (wider than the
    #: tolerance): a reading outside it is refused as implausible (a gauge not on the part,
    #: a wrong unit, a dropped digit) and recorded as a refusal, never judged
    plausible_min: Decimal | None = None
    plausible_max: Decimal | None = None
    #: what may be chosen when an alarm about this characteristic is acknowledged (else the plan's)
    reaction_plan: ReactionPlan | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        if not units.known(v):
            raise ValueError(f"unknown unit {v!r}")
        return v

    @model_validator(mode="after")
    def _limits(self) -> Characteristic:
        # YAML reads 12.000 as the float 12.0: restore the drawing's decimals where exact,
        # so records show 11.980 rather than 11.98 (a value with more decimals is kept as is)
        quantum = Decimal(1).scaleb(-self.decimals)
        for name in ("nominal", "lsl", "usl", "lower_tol", "upper_tol"):
            v = getattr(self, name)
            if v is None:
                continue
            if not v.is_finite():
                raise ValueError(f"{name} must be a finite number, not {v}")
            with localcontext(Context(prec=60)):
                shown = v.quantize(quantum)
            if shown == v:
                object.__setattr__(self, name, shown)
        if (self.lower_tol is not None or self.upper_tol is not None) and self.nominal is None:
            raise ValueError("tolerances need a nominal")
        if self.lsl is not None and self.lower_tol is not None:
            raise ValueError("give either lsl or lower_tol, not both")
        if self.usl is not None and self.upper_tol is not None:
            raise ValueError("give either usl or upper_tol, not both")
        low, high = self.lower_limit, self.upper_limit
        if low is None and high is None:
            raise ValueError("a characteristic needs at least one limit")
        if low is not None and high is not None and low > high:
            raise ValueError(f"lower limit {low} is above upper limit {high}")
        pmin, pmax = self.plausible_min, self.plausible_max
        if pmin is not None and pmax is not None and pmin >= pmax:
            raise ValueError(f"plausible_min {pmin} is not below plausible_max {pmax}")
        below = pmin is not None and low is not None and pmin > low
        if below or (pmax is not None and high is not None and pmax < high):
            raise ValueError("the plausible range must contain the tolerance (a value in tolerance is plausible)")
        return self

    @cached_property
    def lower_limit(self) -> Decimal | None:
        if self.lsl is not None:
            return self.lsl
        if self.lower_tol is not None and self.nominal is not None:
            return self.nominal + self.lower_tol
        return None

    @cached_property
    def spec_texts(self) -> tuple[str | None, str | None, str | None]:
        """Nominal, lower and upper limit as the decimal strings records carry (made once)."""
        return tuple(None if v is None else format(v, "f") for v in (self.nominal, self.lower_limit, self.upper_limit))  # type: ignore[return-value]

    @cached_property
    def upper_limit(self) -> Decimal | None:
        if self.usl is not None:
            return self.usl
        if self.upper_tol is not None and self.nominal is not None:
            return self.nominal + self.upper_tol
        return None


class ReactionPlan(_Frozen):
    """The assignable causes and corrective actions one chooses from when acknowledging an alarm."""

    causes: tuple[Name, ...] = Field(min_length=1)
    actions: tuple[Name, ...] = Field(min_length=1)


class SpcSettings(_Frozen):
    """Statistical process control for a characteristic: control limits and the rules to watch.

    Control limits are not the tolerance limits: they describe what the process does when
    stable. Give ``centre`` and ``sigma`` from a capability study, or let the station take
    them from the first ``baseline`` values it judges.
    """

    rules: str | list[int] = "western_electric"  # or "nelson", or a list of rule numbers 1..8
    run_length: Literal[8, 9] | None = None
    centre: Decimal | None = None
    sigma: Decimal | None = Field(default=None, gt=0)
    baseline: int = Field(default=25, ge=5, le=1000)
    #: limits from fewer values are provisional (flagged) and recomputed once this many exist;
    #: None: the AIAG manual's 100 individuals (or 25 subgroups when charted in subgroups)
    min_baseline: int | None = Field(default=None, ge=5, le=1000)
    #: charts plot consecutive values in rational subgroups of this size (X-bar/R or X-bar/S)
    subgroup_size: int | None = Field(default=None, ge=2, le=10)
    subgroup_chart: Literal["r", "s"] = "r"

    @property
    def minimum(self) -> int:
        """How many individual values the limits must rest on before they are final."""
        if self.min_baseline is not None:
            return self.min_baseline
        return 25 * self.subgroup_size if self.subgroup_size else 100

    @model_validator(mode="after")
    def _both(self) -> SpcSettings:
        if (self.centre is None) != (self.sigma is None):
            raise ValueError("give centre and sigma together, or neither (then the baseline sets them)")
        from collector.inspection.spc import RuleSet

        RuleSet.parse(self.rules, run_length=self.run_length)  # fail at load time, not at the first value
        return self


class InspectionPlan(_Frozen):
    """What to measure on a part number, at one revision, in order."""

    part_number: Name
    revision: Name
    description: str = ""
    characteristics: tuple[Characteristic, ...] = Field(min_length=1)
    #: for every characteristic that has none of its own
    reaction_plan: ReactionPlan | None = None

    def reaction_plan_for(self, characteristic: str) -> ReactionPlan | None:
        c = next((c for c in self.characteristics if c.id == characteristic), None)
        return (c.reaction_plan if c is not None else None) or self.reaction_plan

    @model_validator(mode="after")
    def _unique_ids(self) -> InspectionPlan:
        seen: set[str] = set()
        for c in self.characteristics:
            if c.id in seen:
                raise ValueError(f"characteristic id {c.id!r} appears twice")
            seen.add(c.id)
        return self


class GaugeStatus(enum.StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"  # taken out of use (found out of calibration, damaged, lost)
    RETIRED = "retired"


class Gauge(_Frozen):
    """An entry of the gauge register."""

    id: Name
    type: Name  # caliper, micrometer, indicator, scale, plc-sensor ...
    resolution: Decimal | None = None
    unit: str | None = None
    calibration_due: dt.date
    status: GaugeStatus = GaugeStatus.ACTIVE
    description: str = ""


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"


class RecordKind(enum.StrEnum):
    MEASUREMENT = "measurement"  # one judged value
    PART = "part"  # the part's verdict when its plan is complete (or abandoned)
    REFUSAL = "refusal"  # a reading that was not accepted, and why
    INVALIDATION = "invalidation"  # a value declared void (it stays; this record points at it)
    NONCONFORMANCE = "nonconformance"  # opened for an out-of-tolerance value
    DISPOSITION = "disposition"  # the decision on a nonconformance
    AUDIT = "audit"  # sign-in/out, configuration in force, acknowledgements, overrides


class ReasonForTest(enum.StrEnum):
    """Why a part was measured (Q-DAS K0015)."""

    ONGOING = "ongoing"  # K0015 = 0
    SPECIAL = "special"  # 10
    AUDIT = "audit"  # 20
    FIRST_PIECE = "first_piece"  # 30
    RAW_MATERIAL = "raw_material"  # 40
    PRE_RUN = "pre_run"  # 50
    PATROL = "patrol"  # shop practice: a patrol inspection between first pieces


class CalibrationStatus(enum.StrEnum):
    VALID = "valid"
    DUE_SOON = "due_soon"  # within the warning period before the due date
    OVERDUE = "overdue"  # past due: accepted only under a warn/grace policy, and flagged


class SignatureMeaning(enum.StrEnum):
    """What a person's signature on a record means (21 CFR 11.50(a)(3))."""

    SIGNED_IN = "signed_in"  # takes responsibility for the station's measurements
    SIGNED_OUT = "signed_out"
    RELEASED = "released"  # an accepted part
    REJECTED = "rejected"  # a rejected part's verdict
    REMEASURED = "remeasured"  # the reason for a re-measure (on the new value)
    INVALIDATED = "invalidated"
    DISPOSITIONED = "dispositioned"  # a nonconformance decided (scrap, rework, concession ...)
    ABANDONED = "abandoned"
    PATROL_REQUESTED = "patrol_requested"
    ACKNOWLEDGED = "acknowledged"  # an alert
    ANDON_CLEARED = "andon_cleared"


class SignatureMethod(enum.StrEnum):
    """How the signer was authenticated for this signature."""

    SECRET = "secret"  # PIN or password entered for this very signature (with badge or user id)
    BADGE = "badge"  # the badge alone (sign-in, where the configuration allows it)
    SESSION = "session"  # within the signer's session, opened with badge and secret
    DASHBOARD = "dashboard"  # the dashboard authenticated its user; only dashboards may send it


def _absent(value: object) -> bool:
    return value is None


#: the values of the enums above as record payloads spell them (strict validation of JSON
#: takes the literal strings; a unit test keeps the two in step)
VerdictText = Literal["pass", "fail"]
CriticalityText = Literal["critical", "major", "minor", "incidental"]
ReasonForTestText = Literal["ongoing", "special", "audit", "first_piece", "raw_material", "pre_run", "patrol"]
CalibrationStatusText = Literal["valid", "due_soon", "overdue"]
SignatureMeaningText = Literal[
    "signed_in",
    "signed_out",
    "released",
    "rejected",
    "remeasured",
    "invalidated",
    "dispositioned",
    "abandoned",
    "patrol_requested",
    "acknowledged",
    "andon_cleared",
]
SignatureMethodText = Literal["secret", "badge", "session", "dashboard"]
Uuid = Annotated[str, Field(min_length=26, max_length=36)]


class _Entry(BaseModel):
    """What every record in a block carries itself: its kind and id.

    The block carries the rest for all its records (``schema_version``, ``gateway``,
    ``site``, ``line``, ``station``, ``clock_synced``; ``seq`` and ``recorded_at`` follow
    from the record's place in the block): see ``docs/evidence-format.md``. Strict: a
    record is checked as the JSON it is, so ``"3"`` is not an integer and ``1.5`` is not a
    decimal string.

    A record made by a person's command also carries the signature: who signed
    (``signed_by``, ``signer_name``), what the signature means and how the signer was
    authenticated (21 CFR 11.50). The four keys are absent from records nobody signed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: Uuid
    signed_by: PersonId | None = Field(default=None, exclude_if=_absent)
    signer_name: PersonName | None = Field(default=None, exclude_if=_absent)
    signature_meaning: SignatureMeaningText | None = Field(default=None, exclude_if=_absent)
    signature_method: SignatureMethodText | None = Field(default=None, exclude_if=_absent)


class _PartContext(_Entry):
    operator: PersonId | None
    part_number: str | None
    serial: str | None
    lot: str | None
    work_order: str | None


class _Frame(BaseModel):
    """The device's frame, as evidence: ``raw`` spelt as ``raw_encoding`` says.

    ``text``: a text protocol's frame of printable ASCII (CR, LF and TAB allowed, JSON
    escapes them); ``hex``: lower-case hex of the bytes (binary protocols such as Modbus,
    and any text frame with other bytes in it). See :func:`collector.inspection.records.raw_fields`.
    """

    raw: str
    raw_encoding: Literal["text", "hex"]

    @model_validator(mode="after")
    def _raw_as_encoded(self) -> Self:
        pattern = _RAW_TEXT if self.raw_encoding == "text" else _RAW_HEX
        if pattern.fullmatch(self.raw) is None:
            raise ValueError(f"raw is not {self.raw_encoding} as raw_encoding says")
        return self


_RAW_TEXT = re.compile(r"[\x20-\x7e\r\n\t]*")
_RAW_HEX = re.compile(r"(?:[0-9a-f]{2})*")


class InspectionRecord(_PartContext, _Frame):
    """One judged measurement: everything an auditor needs, frozen at the time it was taken.

    A re-measure is a new record whose ``supersedes`` names the earlier one, with the
    ``reason``. The record is sealed in a block with its station's other records of the
    same journal transaction; the block's hash and signature cover it.
    """

    kind: Literal["measurement"]
    part_number: Name
    plan_revision: Name
    characteristic: Name
    characteristic_name: Name
    nominal: DecimalStr | None
    lsl: DecimalStr | None
    usl: DecimalStr | None
    unit: str
    decimals: int = Field(ge=0, le=9)
    criticality: CriticalityText
    gauge: str | None
    gauge_calibration_due: str | None
    calibration_status: CalibrationStatusText | None = None
    device: Name
    channel: str
    measured_at: UtcTimestamp
    reading_value: DecimalStr
    reading_unit: str
    value: DecimalStr  # in the characteristic's unit, exact (never rounded, never clamped)
    judged_value: DecimalStr  # rounded to ``decimals``: the value the verdict is based on
    deviation: DecimalStr | None  # judged_value - nominal
    verdict: VerdictText
    limit: Literal["lower", "upper"] | None  # the limit that was violated
    reason_for_test: ReasonForTestText = "ongoing"
    supersedes: str | None = None
    reason: LongText | None = None


class PartRecord(_PartContext):
    """The part's verdict: accept only when every characteristic's latest value passed."""

    kind: Literal["part"]
    part_number: Name
    plan_revision: Name
    verdict: Literal["accept", "reject", "incomplete"]
    records: list[str]  # ids of the measurement records the verdict rests on (latest per characteristic)
    failed: list[str]  # characteristics whose latest value failed
    missing: list[str]  # characteristics never measured (incomplete parts)
    released_by: PersonId | None  # the operator who released it; "auto" for an automatic station
    reason: LongText | None = None  # why incomplete (abandoned, timed out, signed out ...)
    reason_for_test: ReasonForTestText = "ongoing"
    supersedes: str | None = None  # an earlier verdict for the same part, before a re-measure


class RefusalRecord(_PartContext, _Frame):
    """A reading that did not become a measurement: kept, because an auditor asks about them."""

    kind: Literal["refusal"]
    reason_code: Name  # gauge_overdue, gauge_locked, gauge_unknown, wrong_gauge, no_part, no_operator ...
    reason: str
    device: Name
    channel: str
    gauge: str | None
    gauge_calibration_due: str | None
    characteristic: str | None
    measured_at: UtcTimestamp
    reading_value: DecimalStr | None
    reading_unit: str | None


class InvalidationRecord(_PartContext):
    kind: Literal["invalidation"]
    target: str  # id of the record declared void; it is never changed or deleted
    characteristic: str | None
    by: PersonId
    reason: Text


class NonconformanceRecord(_PartContext):
    kind: Literal["nonconformance"]
    measurement_id: str  # id of the out-of-tolerance measurement
    characteristic: Name
    judged_value: DecimalStr
    lsl: DecimalStr | None
    usl: DecimalStr | None
    unit: str
    limit: Literal["lower", "upper"] | None


class DispositionRecord(_PartContext):
    kind: Literal["disposition"]
    nonconformance_id: str  # id of the nonconformance record decided on
    decision: Literal["scrap", "rework", "use_as_is", "return_to_supplier", "regrade"]
    concession: Text | None  # the concession / deviation permit for use-as-is
    by: PersonId
    comment: Text | None


class AuditRecord(_Entry):
    kind: Literal["audit"]
    event: Name  # sign_in, sign_out, idle_timeout, config_loaded, alert_ack, command_refused ...
    by: PersonId | None
    subject: str | None  # the id or name the event is about
    detail: str


AnyRecord = Annotated[
    InspectionRecord
    | PartRecord
    | RefusalRecord
    | InvalidationRecord
    | NonconformanceRecord
    | DispositionRecord
    | AuditRecord,
    Field(discriminator="kind"),
]

#: record kind -> its model (the JSON Schemas are generated one per kind)
RECORD_MODELS: dict[str, type[BaseModel]] = {
    "measurement": InspectionRecord,
    "part": PartRecord,
    "refusal": RefusalRecord,
    "invalidation": InvalidationRecord,
    "nonconformance": NonconformanceRecord,
    "disposition": DispositionRecord,
    "audit": AuditRecord,
}


class BlockModel(BaseModel):
    """A sealed block as it travels (one line): the link of a gateway's chain.

    The reference for what the keys mean, how the hash and signature are made and how a
    record is materialised is ``docs/evidence-format.md`` and :mod:`collector.chain.blocks`;
    this model is the same shape for JSON Schema users and for validation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_version: Literal[2]
    gateway: Name
    site: Name
    line: Name
    station: Name
    first_seq: int = Field(ge=1)
    recorded_at: UtcTimestamp
    clock_synced: bool
    prev_hash: HexDigest
    key_id: str | None
    records: list[AnyRecord] = Field(min_length=1)
    hash: HexDigest
    signature: Annotated[str, Field(pattern=r"^(?:[0-9a-f]{64}|[0-9a-f]{128})$")] | None = None


class AlertSeverity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(_Frozen):
    """A live notice for supervisors (published at once on the station's alert topic)."""

    schema_version: Literal[1]
    kind: Literal["out_of_tolerance", "trend", "refused", "calibration"]
    severity: AlertSeverity
    record_id: str
    gateway: Name
    seq: int
    site: Name
    line: Name
    station: Name
    part_number: str | None
    serial: str | None
    characteristic: str | None
    judged_value: DecimalStr | None = None
    lsl: DecimalStr | None = None
    usl: DecimalStr | None = None
    unit: str | None = None
    limit: Literal["lower", "upper"] | None = None
    rules: list[int] = Field(default_factory=list)  # trend: the SPC rules that fired
    message: str
    at: UtcTimestamp
    #: one alarm per episode: the record id that opened it, and whether this message opens,
    #: updates or closes it (absent from gateways before episodes: each alert its own episode)
    episode: str | None = None
    state: Literal["opened", "updated", "closed"] | None = None
    #: trend: how many values the control limits rest on, and whether that is below the minimum
    baseline_n: int | None = None
    baseline_short: bool = False


RECORD_ADAPTER: TypeAdapter[AnyRecord] = TypeAdapter(AnyRecord)
#: a block's records, validated in one call (the recorder's check of every record)
RECORDS_ADAPTER: TypeAdapter[list[AnyRecord]] = TypeAdapter(list[AnyRecord])
ALERT_ADAPTER: TypeAdapter[Alert] = TypeAdapter(Alert)
READING_ADAPTER: TypeAdapter[Reading] = TypeAdapter(Reading)
