"""The record TypedDicts (what the type checker sees) agree with the pydantic models (what the
recorder validates): the same kinds, the same keys, required where the models require them."""

from __future__ import annotations

import typing
from decimal import Decimal

import pytest

from collector.inspection import record_types
from collector.inspection.models import RECORD_MODELS, RECORDS_ADAPTER, RecordKind


def test_every_kind_has_a_typed_dict() -> None:
    assert set(record_types.RECORD_TYPES) == set(RECORD_MODELS) == {k.value for k in RecordKind}
    assert set(typing.get_args(record_types.AnyRecord)) == set(record_types.RECORD_TYPES.values())


@pytest.mark.parametrize("kind", sorted(RECORD_MODELS))
def test_same_keys_and_required_keys_as_the_model(kind: str) -> None:
    model, typed = RECORD_MODELS[kind], record_types.RECORD_TYPES[kind]
    fields = model.model_fields
    assert typed.__required_keys__ | typed.__optional_keys__ == set(fields)
    assert typed.__required_keys__ == {name for name, f in fields.items() if f.is_required()}
    assert typed.__optional_keys__ == {name for name, f in fields.items() if not f.is_required()}
    assert typing.get_type_hints(typed)["kind"] == typing.Literal[kind]


def test_a_typed_record_validates_as_its_model() -> None:
    # built as the type checker allows, checked as the recorder checks
    record: record_types.Measurement = {
        "kind": "measurement",
        "id": "0193a0a0-0000-7000-8000-000000000001",
        "operator": "op-117",
        "part_number": "HX-4711",
        "serial": "SN-1",
        "lot": "L-1",
        "work_order": "WO-1",
        "raw": "01A+000012.005",
        "raw_encoding": "text",
        "plan_revision": "C",
        "characteristic": "D1",
        "characteristic_name": "Bore",
        "nominal": "12.000",
        "lsl": "11.980",
        "usl": "12.020",
        "unit": "mm",
        "decimals": 3,
        "criticality": "critical",
        "gauge": "CAL-0042",
        "gauge_calibration_due": "2027-06-30",
        "device": "caliper-1",
        "channel": "01",
        "measured_at": "2026-12-05T10:00:00.000001Z",
        "reading_value": "12.005",
        "reading_unit": "mm",
        "value": "12.005",
        "judged_value": "12.005",
        "deviation": str(Decimal("12.005") - Decimal("12.000")),
        "verdict": "pass",
        "limit": None,
    }
    (model,) = RECORDS_ADAPTER.validate_python([record])
    assert model.model_dump(exclude_defaults=True) == record
