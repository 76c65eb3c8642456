"""Domain models: what an inspection is checked against, and what it produces.

Specification-side models (characteristic, plan, gauge) are pydantic models validated
once, when the configuration is loaded. The record-side models (:class:`InspectionRecord`,
:class:`Alert`) describe the JSON payloads; the gateway builds records as plain dicts in
the hot path (see :mod:`collector.records`) and the recorder validates every payload it
receives against these models. The JSON Schemas under ``config/schemas/`` are generated
from this module (``collector schemas``).
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Context, Decimal, localcontext
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from collector import units
from drivers.base import Reading

SCHEMA_VERSION = 1

#: decimals travel as strings in payloads: exact, and canonical for hashing
DecimalStr = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", examples=["12.345"])]
#: UTC, microseconds, always the same shape: part of the hashed canonical form
UtcTimestamp = Annotated[
    str,
    Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$", examples=["2026-11-21T10:15:30.123456Z"]),
]
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]


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
        return self

    @property
    def lower_limit(self) -> Decimal | None:
        if self.lsl is not None:
            return self.lsl
        if self.lower_tol is not None and self.nominal is not None:
            return self.nominal + self.lower_tol
        return None

    @property
    def upper_limit(self) -> Decimal | None:
        if self.usl is not None:
            return self.usl
        if self.upper_tol is not None and self.nominal is not None:
            return self.nominal + self.upper_tol
        return None


class InspectionPlan(_Frozen):
    """What to measure on a part number, at one revision, in order."""

    part_number: Name
    revision: Name
    description: str = ""
    characteristics: tuple[Characteristic, ...] = Field(min_length=1)

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
    MEASUREMENT = "measurement"


class InspectionRecord(_Frozen):
    """One judged measurement: everything an auditor needs, frozen at the time it was taken.

    ``hash = sha256(bytes.fromhex(prev_hash) + canonical_bytes(record))`` where the
    canonical bytes are the record without ``hash`` and ``signature`` as compact JSON with
    sorted keys (see :func:`collector.records.canonical_bytes`).
    """

    schema_version: Literal[1]
    kind: Literal[RecordKind.MEASUREMENT]
    id: Annotated[str, Field(min_length=26, max_length=36)]
    gateway: Name
    seq: int = Field(ge=1)
    prev_hash: HexDigest
    hash: HexDigest
    signature: HexDigest | None = None
    recorded_at: UtcTimestamp
    clock_synced: bool
    site: Name
    line: Name
    station: Name
    operator: str | None
    part_number: Name
    plan_revision: Name
    serial: str | None
    lot: str | None
    work_order: str | None
    characteristic: Name
    characteristic_name: Name
    nominal: DecimalStr | None
    lsl: DecimalStr | None
    usl: DecimalStr | None
    unit: str
    decimals: int = Field(ge=0, le=9)
    criticality: Criticality
    gauge: str | None
    gauge_calibration_due: str | None
    device: Name
    channel: str
    measured_at: UtcTimestamp
    raw: str  # the device frame, bytes mapped 1:1 to code points 0-255 (latin-1)
    reading_value: DecimalStr
    reading_unit: str
    value: DecimalStr  # in the characteristic's unit, exact (never rounded, never clamped)
    judged_value: DecimalStr  # rounded to ``decimals``: the value the verdict is based on
    deviation: DecimalStr | None  # judged_value - nominal
    verdict: Verdict
    limit: Literal["lower", "upper"] | None  # the limit that was violated
    supersedes: str | None = None
    reason: str | None = None


class AlertSeverity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(_Frozen):
    """A live notice for supervisors (published at once on the station's alert topic)."""

    schema_version: Literal[1]
    kind: Literal["out_of_tolerance"]
    severity: AlertSeverity
    record_id: str
    gateway: Name
    seq: int
    site: Name
    line: Name
    station: Name
    part_number: Name
    serial: str | None
    characteristic: Name
    judged_value: DecimalStr
    lsl: DecimalStr | None
    usl: DecimalStr | None
    unit: str
    limit: Literal["lower", "upper"] | None
    at: UtcTimestamp


RECORD_ADAPTER: TypeAdapter[InspectionRecord] = TypeAdapter(InspectionRecord)
READING_ADAPTER: TypeAdapter[Reading] = TypeAdapter(Reading)
