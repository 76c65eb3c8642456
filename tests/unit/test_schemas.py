"""The committed JSON Schemas are the ones the models generate (run `collector schemas`)."""

from __future__ import annotations

from pathlib import Path

from collector.schemas import render, schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "config" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    generated = schemas()
    assert {f"{name}.schema.json" for name in generated} == {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    stale = [
        name for name, schema in generated.items() if (SCHEMA_DIR / f"{name}.schema.json").read_text() != render(schema)
    ]
    assert not stale, f"regenerate with `collector schemas`: {stale}"


def test_record_schema_requires_every_evidence_field() -> None:
    required = set(schemas()["inspection-record"]["required"])
    for field in (
        "id",
        "kind",
        "serial",
        "lot",
        "part_number",
        "plan_revision",
        "characteristic",
        "lsl",
        "usl",
        "gauge",
        "gauge_calibration_due",
        "operator",
        "raw",
        "raw_encoding",
        "value",
        "verdict",
    ):
        assert field in required, field


def test_the_block_schema_holds_the_chain_and_every_record_kind() -> None:
    block = schemas()["block"]
    for field in ("schema_version", "gateway", "first_seq", "recorded_at", "prev_hash", "key_id", "records", "hash"):
        assert field in block["required"], field
    kinds = {d["properties"]["kind"]["const"] for d in block["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == {"measurement", "part", "refusal", "invalidation", "nonconformance", "disposition", "audit"}
