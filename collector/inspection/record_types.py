"""The records as the code holds them: one TypedDict per record kind.

Records travel and are stored as JSON objects and the gateway builds them as plain dicts on
its hot path (:mod:`collector.inspection.records`); the pydantic models of
:mod:`collector.inspection.models` validate them where they arrive (the recorder, the
tools). These TypedDicts give the same shape to the type checker at no cost at run time
(a TypedDict is a dict): the same keys as the models, required where the models require
them (``tests/unit/test_record_types.py`` keeps the two in step). Values are spelt as in
the JSON: decimals and times are strings, enums their string values.

``Record`` is a record of any kind before its ``kind`` is looked at (code that handles every
kind alike: a trace, an export); narrow it with ``record["kind"] == RecordKind.X``.
"""

# no ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated
# annotations only (a string annotation would make every key required at run time)
from typing import Any, Literal, NotRequired, TypedDict

from collector.inspection.models import (
    CalibrationStatusText,
    CriticalityText,
    ReasonForTestText,
    SignatureMeaningText,
    SignatureMethodText,
    VerdictText,
)
from collector.inspection.records import Record as Record  # a record of any kind (defined once)

#: a record of any kind, before its kind is looked at (defined once, with the record drafts)

Limit = Literal["lower", "upper"]


class _Entry(TypedDict):
    """What every record carries: its kind and id, and a signature when a person signed it."""

    id: str
    signed_by: NotRequired[str | None]
    signer_name: NotRequired[str | None]
    signature_meaning: NotRequired[SignatureMeaningText | None]
    signature_method: NotRequired[SignatureMethodText | None]


class _PartContext(_Entry):
    operator: str | None
    part_number: str | None
    serial: str | None
    lot: str | None
    work_order: str | None


class _Frame(TypedDict):
    raw: str
    raw_encoding: Literal["text", "hex"]


class Measurement(_PartContext, _Frame):
    """``kind: measurement``: one judged value (models: :class:`InspectionRecord`)."""

    kind: Literal["measurement"]
    plan_revision: str
    characteristic: str
    characteristic_name: str
    nominal: str | None
    lsl: str | None
    usl: str | None
    unit: str
    decimals: int
    criticality: CriticalityText
    gauge: str | None
    gauge_calibration_due: str | None
    calibration_status: NotRequired[CalibrationStatusText | None]
    device: str
    channel: str
    measured_at: str
    reading_value: str
    reading_unit: str
    value: str
    judged_value: str
    deviation: str | None
    verdict: VerdictText
    limit: Limit | None
    reason_for_test: NotRequired[ReasonForTestText]
    supersedes: NotRequired[str | None]
    reason: NotRequired[str | None]


class Part(_PartContext):
    """``kind: part``: the part's verdict."""

    kind: Literal["part"]
    plan_revision: str
    verdict: Literal["accept", "reject", "incomplete"]
    records: list[str]
    failed: list[str]
    missing: list[str]
    released_by: str | None
    reason: NotRequired[str | None]
    reason_for_test: NotRequired[ReasonForTestText]
    supersedes: NotRequired[str | None]


class Refusal(_PartContext, _Frame):
    """``kind: refusal``: a reading that did not become a measurement, and why."""

    kind: Literal["refusal"]
    reason_code: str
    reason: str
    device: str
    channel: str
    gauge: str | None
    gauge_calibration_due: str | None
    characteristic: str | None
    measured_at: str
    reading_value: str | None
    reading_unit: str | None


class Invalidation(_PartContext):
    kind: Literal["invalidation"]
    target: str
    characteristic: str | None
    by: str
    reason: str


class Nonconformance(_PartContext):
    kind: Literal["nonconformance"]
    measurement_id: str
    characteristic: str
    judged_value: str
    lsl: str | None
    usl: str | None
    unit: str
    limit: Limit | None


class Disposition(_PartContext):
    kind: Literal["disposition"]
    nonconformance_id: str
    decision: Literal["scrap", "rework", "use_as_is", "return_to_supplier", "regrade"]
    concession: str | None
    by: str
    comment: str | None


class Audit(_Entry):
    kind: Literal["audit"]
    event: str
    by: str | None
    subject: str | None
    detail: str


AnyRecord = Measurement | Part | Refusal | Invalidation | Nonconformance | Disposition | Audit

#: record kind -> its TypedDict (the same kinds as ``models.RECORD_MODELS``)
RECORD_TYPES: dict[str, type[Any]] = {
    "measurement": Measurement,
    "part": Part,
    "refusal": Refusal,
    "invalidation": Invalidation,
    "nonconformance": Nonconformance,
    "disposition": Disposition,
    "audit": Audit,
}
