"""Tolerance evaluation, exact unit conversion and the Characteristic model.

Every expectation is an exact :class:`~decimal.Decimal` (compared by value *and*, where the
number of shown decimals matters, by its text), because a verdict at the limit must not
depend on binary floating point.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from collector.errors import SpecificationError
from collector.inspection import units
from collector.inspection.models import Characteristic, Rounding, Verdict
from collector.inspection.tolerance import judge, round_to

D = Decimal


def char(**kw: Any) -> Characteristic:
    base: dict[str, Any] = {"id": "D1", "name": "Bore diameter", "unit": "mm", "decimals": 3}
    base.update(kw)
    return Characteristic(**base)


# specifications used by the tables below
TOL = {"nominal": D("12.000"), "lower_tol": D("-0.020"), "upper_tol": D("0.020")}
ABS = {"nominal": D("12.000"), "lsl": D("11.980"), "usl": D("12.020")}
USL_ONLY = {"usl": D("0.050")}  # e.g. a runout: no lower limit
LSL_ONLY = {"lsl": D("30.0"), "decimals": 1}  # e.g. a minimum hardness: no upper limit


# -- limits are inclusive, one resolution step outside fails ------------------------------
@pytest.mark.parametrize(
    ("spec", "value", "verdict", "limit"),
    [
        # tolerances around the nominal
        (TOL, "12.020", Verdict.PASS, None),
        (TOL, "12.021", Verdict.FAIL, "upper"),
        (TOL, "11.980", Verdict.PASS, None),
        (TOL, "11.979", Verdict.FAIL, "lower"),
        (TOL, "12.000", Verdict.PASS, None),
        # absolute limits
        (ABS, "12.020", Verdict.PASS, None),
        (ABS, "12.021", Verdict.FAIL, "upper"),
        (ABS, "11.980", Verdict.PASS, None),
        (ABS, "11.979", Verdict.FAIL, "lower"),
        # the same with trailing digits the gauge may or may not send
        (ABS, "12.02", Verdict.PASS, None),
        (ABS, "11.98000", Verdict.PASS, None),
        # one-sided: only an upper limit
        (USL_ONLY, "0.050", Verdict.PASS, None),
        (USL_ONLY, "0.051", Verdict.FAIL, "upper"),
        (USL_ONLY, "-5.000", Verdict.PASS, None),
        (USL_ONLY, "-99999.999", Verdict.PASS, None),
        # one-sided: only a lower limit
        (LSL_ONLY, "30.0", Verdict.PASS, None),
        (LSL_ONLY, "29.9", Verdict.FAIL, "lower"),
        (LSL_ONLY, "99999.9", Verdict.PASS, None),
    ],
)
def test_limits_are_inclusive_and_one_step_outside_fails(
    spec: dict[str, Any], value: str, verdict: Verdict, limit: str | None
) -> None:
    j = judge(char(**spec), D(value), "mm")
    assert (j.verdict, j.limit) == (verdict, limit)


@pytest.mark.parametrize(
    ("spec", "lower", "upper"),
    [
        (TOL, "11.980", "12.020"),
        (ABS, "11.980", "12.020"),
        (USL_ONLY, None, "0.050"),
        (LSL_ONLY, "30.0", None),
        ({"nominal": D("6.350"), "lower_tol": D("-0.010"), "upper_tol": D("0.030")}, "6.340", "6.380"),
        # only one tolerance: a one-sided specification around the nominal
        ({"nominal": D("5.000"), "upper_tol": D("0.100")}, None, "5.100"),
        ({"nominal": D("5.000"), "lower_tol": D("-0.100")}, "4.900", None),
    ],
)
def test_effective_limits(spec: dict[str, Any], lower: str | None, upper: str | None) -> None:
    c = char(**spec)
    assert (None if c.lower_limit is None else str(c.lower_limit)) == lower
    assert (None if c.upper_limit is None else str(c.upper_limit)) == upper


# -- rounding to the declared decimals before judging -------------------------------------
@pytest.mark.parametrize(
    ("value", "decimals", "rounding", "expected"),
    [
        # ties: half_even goes to the even digit, half_up away from zero
        ("12.0205", 3, Rounding.HALF_EVEN, "12.020"),
        ("12.0205", 3, Rounding.HALF_UP, "12.021"),
        ("12.0215", 3, Rounding.HALF_EVEN, "12.022"),
        ("12.0215", 3, Rounding.HALF_UP, "12.022"),
        ("12.0195", 3, Rounding.HALF_EVEN, "12.020"),
        ("12.0195", 3, Rounding.HALF_UP, "12.020"),
        ("-12.0205", 3, Rounding.HALF_EVEN, "-12.020"),
        ("-12.0205", 3, Rounding.HALF_UP, "-12.021"),
        ("2.5", 0, Rounding.HALF_EVEN, "2"),
        ("2.5", 0, Rounding.HALF_UP, "3"),
        ("3.5", 0, Rounding.HALF_EVEN, "4"),
        ("-2.5", 0, Rounding.HALF_UP, "-3"),
        # not ties: both rules agree
        ("12.02049999", 3, Rounding.HALF_EVEN, "12.020"),
        ("12.02049999", 3, Rounding.HALF_UP, "12.020"),
        ("12.02050001", 3, Rounding.HALF_EVEN, "12.021"),
        ("12.02050001", 3, Rounding.HALF_UP, "12.021"),
        # fewer digits than declared are padded, not changed
        ("12.02", 3, Rounding.HALF_EVEN, "12.020"),
        ("7", 9, Rounding.HALF_UP, "7.000000000"),
    ],
)
def test_round_to(value: str, decimals: int, rounding: Rounding, expected: str) -> None:
    assert str(round_to(D(value), decimals, rounding)) == expected


@pytest.mark.parametrize(
    ("spec", "value", "rounding", "judged", "verdict", "limit"),
    [
        # 12.0205 against usl 12.020: the rounding rule decides the verdict
        ({"usl": D("12.020")}, "12.0205", Rounding.HALF_EVEN, "12.020", Verdict.PASS, None),
        ({"usl": D("12.020")}, "12.0205", Rounding.HALF_UP, "12.021", Verdict.FAIL, "upper"),
        ({"usl": D("12.020")}, "12.0215", Rounding.HALF_EVEN, "12.022", Verdict.FAIL, "upper"),
        # the mirror image at a negative lower limit
        ({"lsl": D("-12.020")}, "-12.0205", Rounding.HALF_EVEN, "-12.020", Verdict.PASS, None),
        ({"lsl": D("-12.020")}, "-12.0205", Rounding.HALF_UP, "-12.021", Verdict.FAIL, "lower"),
        # a value rounding *into* the tolerance passes under both rules
        ({"lsl": D("11.980")}, "11.9795", Rounding.HALF_EVEN, "11.980", Verdict.PASS, None),
        ({"lsl": D("11.980")}, "11.9795", Rounding.HALF_UP, "11.980", Verdict.PASS, None),
        ({"lsl": D("11.980")}, "11.97949", Rounding.HALF_UP, "11.979", Verdict.FAIL, "lower"),
    ],
)
def test_rounding_rule_decides_ties_at_the_limit(
    spec: dict[str, Any], value: str, rounding: Rounding, judged: str, verdict: Verdict, limit: str | None
) -> None:
    j = judge(char(rounding=rounding, **spec), D(value), "mm")
    assert str(j.judged_value) == judged
    assert (j.verdict, j.limit) == (verdict, limit)
    assert j.value == D(value)  # the unrounded value is kept beside the judged one
    assert str(j.value) == value


def test_default_rounding_is_half_even() -> None:
    c = char(usl=D("12.020"))
    assert c.rounding is Rounding.HALF_EVEN
    assert judge(c, D("12.0205"), "mm").verdict is Verdict.PASS


# -- the value is never clamped -----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "limit", "deviation"),
    [
        ("12020.000", "upper", "12008.000"),
        ("-12020.000", "lower", "-12032.000"),
        ("0.000", "lower", "-12.000"),
    ],
)
def test_value_far_outside_is_recorded_exactly(value: str, limit: str, deviation: str) -> None:
    j = judge(char(**TOL), D(value), "mm")
    assert str(j.value) == value
    assert str(j.judged_value) == value
    assert j.verdict is Verdict.FAIL
    assert j.limit == limit
    assert str(j.deviation) == deviation


@pytest.mark.parametrize(
    ("value", "rounding", "deviation"),
    [
        ("12.0205", Rounding.HALF_EVEN, "0.020"),  # from the judged value, not the raw one
        ("12.0205", Rounding.HALF_UP, "0.021"),
        ("11.9876", Rounding.HALF_EVEN, "-0.012"),
        ("12.000", Rounding.HALF_EVEN, "0.000"),
    ],
)
def test_deviation_is_judged_minus_nominal(value: str, rounding: Rounding, deviation: str) -> None:
    j = judge(char(rounding=rounding, **TOL), D(value), "mm")
    assert str(j.deviation) == deviation
    assert j.deviation == j.judged_value - D("12.000")


def test_no_nominal_no_deviation() -> None:
    assert judge(char(usl=D("0.050")), D("0.010"), "mm").deviation is None


# -- unit conversion ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        ("1", "in", "mm", "25.4"),
        ("1", "inch", "mm", "25.4"),
        ("0.50000", "in", "mm", "12.700000"),
        ("12.7", "mm", "in", "0.5"),
        ("25.4", "mm", "in", "1"),
        ("-25.4", "mm", "inch", "-1"),
        ("1000", "mil", "in", "1"),
        ("123", "um", "mm", "0.123"),
        ("5", "µm", "mm", "0.005"),
        ("0.123", "mm", "um", "123"),
        ("1", "m", "mm", "1000"),
        ("1.5", "cm", "mm", "15.0"),
        ("1500", "g", "kg", "1.5"),
        ("1.5", "kg", "g", "1500"),
        ("250", "mg", "g", "0.250"),
        ("1", "lb", "g", "453.59237"),
        ("1", "lb", "kg", "0.45359237"),
        ("16", "oz", "lb", "1"),
        ("2.5", "kN", "N", "2500"),
    ],
)
def test_convert_exact(value: str, from_unit: str, to_unit: str, expected: str) -> None:
    got = units.convert(D(value), from_unit, to_unit)
    assert got == D(expected)
    assert isinstance(got, Decimal)


def test_same_unit_returns_the_value_untouched() -> None:
    v = D("12.34500")
    assert units.convert(v, "mm", "mm") is v


def test_inch_is_exactly_25_4_mm_both_ways() -> None:
    # a conversion that terminates is exact; one that does not is kept at full precision
    assert units.convert(units.convert(D("0.4733"), "in", "mm"), "mm", "in") == D("0.4733")
    one_mm = units.convert(D("1"), "mm", "in")
    assert abs(one_mm * D("25.4") - 1) < D("1E-25")


@pytest.mark.parametrize(
    ("from_unit", "to_unit"),
    [("mm", "g"), ("kg", "in"), ("N", "Nm"), ("deg", "mm"), ("lb", "N")],
)
def test_incompatible_dimensions_raise(from_unit: str, to_unit: str) -> None:
    with pytest.raises(SpecificationError, match="cannot convert"):
        units.convert(D("1"), from_unit, to_unit)


@pytest.mark.parametrize(("from_unit", "to_unit"), [("furlong", "mm"), ("mm", "furlong"), ("MM", "mm")])
def test_unknown_unit_raises(from_unit: str, to_unit: str) -> None:
    with pytest.raises(SpecificationError, match="unknown unit"):
        units.convert(D("1"), from_unit, to_unit)


def test_dimension_and_known() -> None:
    assert units.dimension("µm") == "length"
    assert units.dimension("lb") == "mass"
    assert units.known("in") and not units.known("furlong")
    with pytest.raises(SpecificationError, match="unknown unit 'furlong'"):
        units.dimension("furlong")


def test_judge_converts_before_rounding() -> None:
    # an inch reading judged in mm: 0.4733 in = 12.02182 mm -> 12.022 > 12.020
    j = judge(char(**TOL), D("0.4733"), "in")
    assert str(j.value) == "12.02182"
    assert str(j.judged_value) == "12.022"
    assert (j.verdict, j.limit) == (Verdict.FAIL, "upper")


@pytest.mark.parametrize(
    ("reading_mm", "judged", "verdict"),
    [
        ("12.700", "0.5000", Verdict.PASS),  # exactly the limit, after conversion
        ("12.703", "0.5001", Verdict.FAIL),  # one step (0.0001 in) outside
        ("12.7012", "0.5000", Verdict.PASS),  # 0.500047... in rounds into the tolerance
    ],
)
def test_mm_reading_against_inch_limit(reading_mm: str, judged: str, verdict: Verdict) -> None:
    c = char(unit="in", decimals=4, usl=D("0.5000"))
    j = judge(c, D(reading_mm), "mm")
    assert str(j.judged_value) == judged
    assert j.verdict is verdict


def test_judge_refuses_incompatible_reading_unit() -> None:
    with pytest.raises(SpecificationError):
        judge(char(**TOL), D("12.000"), "g")


def test_gram_reading_against_kilogram_limits() -> None:
    c = char(id="W1", name="Weight", unit="kg", decimals=3, lsl=D("1.250"), usl=D("1.300"))
    assert judge(c, D("1250"), "g").verdict is Verdict.PASS
    j = judge(c, D("1249.4"), "g")  # 1.2494 kg -> 1.249
    assert (str(j.value), str(j.judged_value), j.limit) == ("1.2494", "1.249", "lower")
    assert judge(c, D("2.866"), "lb").verdict is Verdict.PASS  # 1.29996... kg -> 1.300


# -- the Characteristic model -------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nominal": D("12.000")}, "at least one limit"),
        ({}, "at least one limit"),
        ({"lsl": D("12.1"), "usl": D("12.0")}, "above upper limit"),
        ({"nominal": D("10"), "lower_tol": D("0.5"), "upper_tol": D("-0.5")}, "above upper limit"),
        ({"lower_tol": D("-0.1"), "upper_tol": D("0.1")}, "tolerances need a nominal"),
        ({"upper_tol": D("0.1")}, "tolerances need a nominal"),
        ({"nominal": D("12"), "lsl": D("11.9"), "lower_tol": D("-0.1")}, "either lsl or lower_tol"),
        ({"nominal": D("12"), "usl": D("12.1"), "upper_tol": D("0.1")}, "either usl or upper_tol"),
        ({"usl": D("1"), "unit": "furlong"}, "unknown unit"),
        ({"usl": D("1"), "decimals": 10}, "less than or equal to 9"),
        ({"usl": D("1"), "decimals": -1}, "greater than or equal to 0"),
        ({"usl": "NaN"}, "finite"),
        ({"usl": D("1"), "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_characteristic_rejects(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        char(**spec)


def test_equal_limits_are_allowed() -> None:
    c = char(lsl=D("5.000"), usl=D("5.000"))
    assert judge(c, D("5.0004"), "mm").verdict is Verdict.PASS
    assert judge(c, D("5.0006"), "mm").verdict is Verdict.FAIL


def test_yaml_floats_get_their_declared_decimals_back() -> None:
    data = yaml.safe_load(
        "{id: D1, name: Bore, nominal: 12.000, lower_tol: -0.020, upper_tol: 0.020, unit: mm, decimals: 3}"
    )
    assert data["nominal"] == 12.0 and isinstance(data["nominal"], float)  # what YAML gives us
    c = Characteristic.model_validate(data)
    assert (str(c.nominal), str(c.lower_tol), str(c.upper_tol)) == ("12.000", "-0.020", "0.020")
    assert c.nominal == D("12.000")
    assert (str(c.lower_limit), str(c.upper_limit)) == ("11.980", "12.020")


def test_yaml_absolute_limits_restored() -> None:
    c = Characteristic.model_validate(
        yaml.safe_load("{id: L1, name: L, lsl: 44.95, usl: 45.05, unit: mm, decimals: 2}")
    )
    assert (str(c.lsl), str(c.usl)) == ("44.95", "45.05")
    c = Characteristic.model_validate(yaml.safe_load("{id: L1, name: L, usl: 45, unit: mm, decimals: 3}"))
    assert str(c.usl) == "45.000"


def test_a_value_with_more_decimals_than_declared_is_kept() -> None:
    c = char(nominal=D("12.0005"), lower_tol=D("-0.0205"), upper_tol=D("0.02"))
    assert str(c.nominal) == "12.0005"
    assert str(c.lower_tol) == "-0.0205"
    assert str(c.upper_tol) == "0.020"
    assert str(c.lower_limit) == "11.9800"


def test_characteristic_is_frozen() -> None:
    c = char(**ABS)
    with pytest.raises(ValidationError):
        c.usl = D("13")  # type: ignore[misc]
    assert c.usl == D("12.020")


# -- bugs ---------------------------------------------------------------------------------
def test_huge_limit_is_a_validation_error_not_a_crash() -> None:
    try:
        c = char(usl=D("1E+25"), decimals=3)
    except ValidationError:
        return
    assert c.usl == D("1E+25")


def test_absurd_reading_is_judged_or_refused_never_crashes() -> None:
    c = char(**TOL)
    try:
        j = judge(c, D("3.4028235E+38"), "mm")  # float32 max, as a faulty PLC register may report
    except SpecificationError:
        return
    assert j.verdict is Verdict.FAIL
    assert j.value == D("3.4028235E+38")
