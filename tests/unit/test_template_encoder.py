"""The journal's template encoder gives byte for byte the canonical text of every entry.

The journal hashes and signs what the encoder gives, so a difference of one byte would be a
block whose text is not the canonical encoding of its content (``collector verify`` fails it).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.chain.canonical import TemplateEncoder, canonical_text, dumps_sorted
from collector.inspection.records import MEASUREMENT_CONSTANT, MEASUREMENT_VARIABLE, measurement_record
from collector.inspection.tolerance import judge
from tests.unit.test_records import CHAR, reading

D = Decimal


def entry(
    value: str = "12.0205", raw: bytes = b"01A+0012.0205\r", *, binary: bool = False, **context: Any
) -> dict[str, Any]:
    ctx: dict[str, str | None] = {
        "part_number": "HX-4711",
        "serial": "HX000001",
        "lot": "L1",
        "work_order": "WO-1",
        "operator": "op",
    }
    ctx.update(context)
    draft = measurement_record(
        site="plant-1",
        line="line-a",
        station="st-10",
        context=ctx,
        plan_revision="C",
        characteristic=CHAR,
        judgement=judge(CHAR, D(value), "mm"),
        reading=reading(value, raw),
        gauge="CAL-0042",
        gauge_calibration_due="2027-06-30",
        binary=binary,
    )
    for key in ("site", "line", "station"):
        del draft[key]
    return draft


def encoder() -> TemplateEncoder:
    return TemplateEncoder(MEASUREMENT_CONSTANT, MEASUREMENT_VARIABLE)


def test_the_key_sets_are_a_measurement_entry_exactly() -> None:
    assert sorted(MEASUREMENT_CONSTANT + MEASUREMENT_VARIABLE) == sorted(entry())


def test_a_template_is_made_once_and_filled_with_the_canonical_text() -> None:
    enc = encoder()
    values = ["12.0205", "11.9", "12.5", "0.000001", "-3", "12.020"]
    for i, value in enumerate(values):
        e = entry(value, serial=f"HX{i:06d}")
        assert enc.encode(e) == canonical_text(e)
    assert enc.made == 1  # the serial and the values change, the template stays
    assert enc.fallbacks == 0


def test_a_changed_repeating_value_makes_another_template() -> None:
    enc = encoder()
    for operator in ("op-1", "op-2"):
        e = entry(operator=operator)
        assert enc.encode(e) == canonical_text(e)
    assert enc.made == 2


def test_other_shapes_are_encoded_by_the_reference_encoder() -> None:
    enc = encoder()
    extra = {**entry(), "signed_by": "op"}  # a re-measure signed by a person
    missing = entry()
    del missing["reason"]
    number = {**entry(), "raw": 7}  # a changing value that is not a string
    listed = {**entry(), "lot": ["L1"]}  # an unhashable repeating value
    for e in (extra, missing, number, listed):
        assert enc.encode(e) == dumps_sorted(e)
    assert enc.fallbacks == 4


def test_templates_are_bounded() -> None:
    enc = TemplateEncoder(MEASUREMENT_CONSTANT, MEASUREMENT_VARIABLE, max_templates=3)
    for i in range(10):
        e = entry(lot=f"L{i}")
        assert enc.encode(e) == canonical_text(e)
    assert len(enc._templates) <= 3


_text = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["%", "%s", "%%(x)s", "\ue000", '"\ue0000\ue000"', "\\", "\u2028", "é"]),
)


@settings(max_examples=300, deadline=None)
@given(
    variable=st.fixed_dictionaries({k: _text for k in MEASUREMENT_VARIABLE}),
    constant=st.fixed_dictionaries({k: _text for k in MEASUREMENT_CONSTANT}),
)
def test_any_strings_give_the_reference_bytes(variable: dict[str, Any], constant: dict[str, Any]) -> None:
    enc = encoder()
    e = {**constant, **variable}
    assert enc.encode(e) == dumps_sorted(e)
    assert enc.encode(dict(e)) == dumps_sorted(e)  # from the template, once there is one


@pytest.mark.parametrize("binary", [False, True])
def test_frames_as_text_and_as_hex(binary: bool) -> None:
    enc = encoder()
    for raw in (b"01A+0012.0205\r", b"01A+0012.0205\x85\r", b'"\\\t'):
        e = entry(raw=raw, binary=binary)
        assert enc.encode(e) == canonical_text(e)
