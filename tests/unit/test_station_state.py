"""The station's saved state: one model, every key mapped or converted, a round trip."""

from __future__ import annotations

import json

from collector.inspection.station_state import CONVERTED, SAVED_AS, SavedState


def test_every_saved_key_is_mapped_to_an_attribute_or_converted() -> None:
    assert set(SAVED_AS) | CONVERTED == set(SavedState.model_fields)
    assert not set(SAVED_AS) & CONVERTED


def test_a_state_from_another_version_restores() -> None:
    older = SavedState.model_validate_json(json.dumps({"number": 7, "next": 1, "context": {}, "plan": "P"}))
    assert (older.number, older.templated, older.sampled, older.disposed) == (7, None, True, [])
    newer = SavedState.model_validate_json(
        json.dumps({"number": 7, "next": 1, "context": {}, "plan": "P", "a_later_key": [1, 2]})
    )
    assert newer == older
