"""SPC: capability indices, I-MR control limits and the Nelson / Western Electric run rules.

Reference values are worked by hand in the comments (4 decimals), so a wrong constant or
formula fails against arithmetic a quality engineer can redo, not against the module
itself. The run-rule checker is compared with a deliberately naive re-implementation that
re-reads each window from the definitions.
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.inspection.spc import (
    C4,
    D2,
    NELSON,
    WESTERN_ELECTRIC,
    Capability,
    ControlLimits,
    RuleChecker,
    RuleSet,
    Violation,
    capability,
    check_series,
    cp_index,
    cpk_index,
    cpl_index,
    cpm_index,
    cpu_index,
    moving_ranges,
    sigma_individuals,
    sigma_overall,
    sigma_rbar,
    sigma_sbar,
    subgroup_capability,
)

# Deviations from nominal in µm of ten consecutive bores.
DATA = [12, 15, 14, 12, 14, 13, 16, 14, 10, 10]
# mean  = 130 / 10 = 13.0
# MR    = 3, 1, 2, 2, 1, 3, 2, 4, 0  -> sum 18, MRbar = 18 / 9 = 2.0
# sigma_within = MRbar / d2(2) = 2 / 1.128 = 1.773050
# x - mean = -1, 2, 1, -1, 1, 0, 3, 1, -3, -3 -> squares sum 36
# sigma_overall = sqrt(36 / 9) = 2.0
LSL, USL, TARGET = 5.0, 20.0, 12.5
SIGMA_W = 2 / 1.128


def approx(x: float) -> object:
    # The hand arithmetic is carried to 4 decimals.
    return pytest.approx(x, abs=5e-5)


def fired(violations: list[Violation]) -> set[int]:
    return {v.rule for v in violations}


# -- sigma estimators ---------------------------------------------------------------------
def test_moving_ranges_and_individual_sigma() -> None:
    assert moving_ranges(DATA) == [3, 1, 2, 2, 1, 3, 2, 4, 0]
    assert sigma_individuals(DATA) == approx(1.7730)
    assert sigma_overall(DATA) == approx(2.0)


# Three subgroups of n = 4 (d2(4) = 2.059, c4(4) = 0.9213):
#   g1 10 12 11 13: R = 3, mean 11.5, sum sq 2.25+0.25+0.25+2.25 = 5,  s = sqrt(5/3)  = 1.290994
#   g2  9 12 10 13: R = 4, mean 11.0, sum sq 4+1+1+4            = 10, s = sqrt(10/3) = 1.825742
#   g3 11 11 12 14: R = 3, mean 12.0, sum sq 1+1+0+4            = 6,  s = sqrt(2)    = 1.414214
# Rbar = 10/3 = 3.333333 -> sigma = 3.333333 / 2.059 = 1.618909
# sbar = 4.530950/3 = 1.510317 -> sigma = 1.510317 / 0.9213 = 1.639332
GROUPS = [[10, 12, 11, 13], [9, 12, 10, 13], [11, 11, 12, 14]]


def test_subgroup_sigma_rbar_and_sbar() -> None:
    assert sigma_rbar(GROUPS) == approx(1.6189)
    assert sigma_sbar(GROUPS) == approx(1.6393)


def test_subgroup_capability() -> None:
    # mean 138/12 = 11.5 on target; Cp = (18 - 5) / (6 * 1.618909) = 13 / 9.713453 = 1.3384
    # (exactly 13 * 2.059 / 20 = 1.33835); with sbar: 13 / (6 * 1.639332) = 1.3217
    # overall: the 12 values about 11.5 deviate by 1.5 (x4), 2.5 (x2), 0.5 (x6):
    # sum sq 9 + 12.5 + 1.5 = 23, s = sqrt(23 / 11) = 1.445998, Pp = 13 / 8.675986 = 1.4984
    rbar = subgroup_capability(GROUPS, lsl=5, usl=18, target=11.5)
    assert rbar.sigma_method == "rbar"
    assert (rbar.n, rbar.mean) == (12, 11.5)
    assert rbar.cp == approx(1.33835)
    assert rbar.cpk == approx(1.33835)
    assert rbar.cpm == approx(1.33835)  # on target: Cpm == Cp
    assert rbar.sigma_overall == approx(1.4460)
    assert rbar.pp == approx(1.4984)
    sbar = subgroup_capability(GROUPS, lsl=5, usl=18, target=11.5, method="sbar")
    assert sbar.sigma_method == "sbar"
    assert sbar.cp == approx(1.3217)


def test_constant_tables() -> None:
    # c4(n) = sqrt(2/(n-1)) * Gamma(n/2) / Gamma((n-1)/2): the table is this, to 4 decimals.
    for n, c4 in C4.items():
        exact = math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)
        assert c4 == pytest.approx(exact, abs=5e-5), n
    # d2(2) = 2 / sqrt(pi) = 1.12838; the rest of the table rises with n.
    assert pytest.approx(2 / math.sqrt(math.pi), abs=5e-4) == D2[2]
    assert sorted(D2) == list(range(2, 11)) == sorted(C4)
    assert list(D2.values()) == sorted(D2.values())


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ([], "at least 1 subgroup"),
        ([[1, 2, 3], [1, 2]], "same size"),
        ([[1], [2]], "2..10"),
        ([list(range(11))], "2..10"),
        ([[1.0, float("nan")]], "not a finite"),
    ],
)
def test_subgroups_refused(groups: list[list[float]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sigma_rbar(groups)
    with pytest.raises(ValueError, match=match):
        sigma_sbar(groups)


# -- capability ---------------------------------------------------------------------------
def test_capability_two_sided_by_hand() -> None:
    c = capability(DATA, lsl=LSL, usl=USL, target=TARGET)
    assert isinstance(c, Capability)
    assert (c.n, c.mean, c.sigma_method) == (10, 13.0, "moving_range")
    assert c.sigma_within == approx(1.7730)
    assert c.sigma_overall == approx(2.0)
    # Cp  = 15 / (6 * 1.773050)      = 15 * 1.128 / 12 = 1.4100
    # Cpu = (20 - 13) / (3 * 1.773050) = 7 * 1.128 / 6 = 1.3160
    # Cpl = (13 - 5) / (3 * 1.773050)  = 8 * 1.128 / 6 = 1.5040
    assert c.cp == approx(1.4100)
    assert c.cpu == approx(1.3160)
    assert c.cpl == approx(1.5040)
    assert c.cpk == approx(1.3160)
    # Pp = 15 / (6 * 2) = 1.2500, Ppu = 7 / 6 = 1.1667, Ppl = 8 / 6 = 1.3333
    assert c.pp == approx(1.2500)
    assert c.ppu == approx(1.1667)
    assert c.ppl == approx(1.3333)
    assert c.ppk == approx(1.1667)
    # Cpm (sigma_within): (13 - 12.5) / 1.773050 = 0.5 * 1.128 / 2 = 0.282, squared 0.079524,
    # sqrt(1.079524) = 1.039001, Cpm = 1.41 / 1.039001 = 1.3571
    assert c.cpm == approx(1.3571)


def test_pure_index_functions_match_the_result() -> None:
    c = capability(DATA, lsl=LSL, usl=USL, target=TARGET)
    assert cp_index(lsl=LSL, usl=USL, sigma=SIGMA_W) == c.cp
    assert cpu_index(usl=USL, mean=13.0, sigma=SIGMA_W) == c.cpu
    assert cpl_index(lsl=LSL, mean=13.0, sigma=SIGMA_W) == c.cpl
    assert cpk_index(c.cpu, c.cpl) == c.cpk
    assert cpm_index(cp=c.cp, mean=13.0, target=TARGET, sigma=SIGMA_W) == c.cpm
    # the Pp family is the same functions with the overall sigma
    assert cp_index(lsl=LSL, usl=USL, sigma=2.0) == c.pp
    # Cpm as written equals the Taguchi form (USL - LSL) / (6 sqrt(sigma^2 + (mean - T)^2))
    assert c.cpm == pytest.approx(15 / (6 * math.sqrt(SIGMA_W**2 + 0.5**2)))


def test_cpm_equals_cp_on_target_and_needs_a_target() -> None:
    on = capability(DATA, lsl=LSL, usl=USL, target=13.0)
    assert on.cpm == on.cp
    assert capability(DATA, lsl=LSL, usl=USL).cpm is None
    # the mean outside the tolerance gives negative one-sided indices, not an error
    off = capability(DATA, lsl=14, usl=20)
    assert off.cpl == approx((13 - 14) * 1.128 / 6)  # -0.1880
    assert off.cpk == off.cpl


def test_one_sided_upper() -> None:
    c = capability(DATA, usl=USL, target=TARGET)
    assert (c.cp, c.cpl, c.pp, c.ppl, c.cpm) == (None, None, None, None, None)
    assert c.cpu == approx(1.3160)
    assert c.cpk == c.cpu
    assert c.ppk == c.ppu == approx(1.1667)


def test_one_sided_lower() -> None:
    c = capability(DATA, lsl=LSL)
    assert (c.cp, c.cpu, c.pp, c.ppu, c.cpm) == (None, None, None, None, None)
    assert c.cpl == approx(1.5040)
    assert c.cpk == c.cpl
    assert c.ppk == c.ppl == approx(1.3333)


def test_decimal_input_gives_the_same_result() -> None:
    as_decimal = [Decimal(x) for x in DATA]
    assert capability(as_decimal, lsl=Decimal(5), usl=Decimal(20)) == capability(DATA, lsl=5, usl=20)


def test_zero_spread_gives_none_not_infinity() -> None:
    c = capability([12.0] * 5, lsl=11, usl=13, target=12)
    assert (c.sigma_within, c.sigma_overall) == (0.0, 0.0)
    indices = (c.cp, c.cpu, c.cpl, c.cpk, c.pp, c.ppu, c.ppl, c.ppk, c.cpm)
    assert indices == (None,) * 9
    # constant within each subgroup but not between: only the within indices are undefined
    g = subgroup_capability([[10, 10], [12, 12], [11, 11]], lsl=5, usl=17)
    assert (g.sigma_within, g.cp, g.cpk) == (0.0, None, None)
    assert g.pp == approx(12 / (6 * math.sqrt(4 / 5)))  # sum sq 2 * (1 + 1) = 4, n - 1 = 5


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([], {"lsl": 0, "usl": 1}, "at least 2 values, got 0"),
        ([1.0], {"lsl": 0, "usl": 1}, "at least 2 values, got 1"),
        (DATA, {"lsl": 0, "usl": 1, "min_values": 25}, "at least 25 values, got 10"),
        (DATA, {}, "at least one specification limit"),
        (DATA, {"lsl": 20, "usl": 5}, "lsl must be below usl"),
        (DATA, {"lsl": 5, "usl": 5}, "lsl must be below usl"),
        (DATA, {"usl": float("inf")}, "usl must be finite"),
        ([*DATA, float("nan")], {"usl": 20}, "not a finite"),
        (DATA, {"usl": 20, "sigma_within": -1.0}, "sigma must be finite and >= 0"),
    ],
)
def test_capability_refused(values: list[float], kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        capability(values, **kwargs)  # type: ignore[arg-type]


def test_given_sigma() -> None:
    c = capability(DATA, lsl=LSL, usl=USL, sigma_within=2.5)
    assert c.sigma_method == "given"
    assert c.cp == approx(1.0)  # 15 / (6 * 2.5)


# -- control limits -----------------------------------------------------------------------
def test_control_limits_from_baseline() -> None:
    # centre 13, sigma 1.773050: UCL = 13 + 5.319149 = 18.3191, LCL = 7.6809. These are
    # unrelated to the 5..20 tolerance of the same data.
    lim = ControlLimits.from_baseline(DATA)
    assert lim.centre == 13.0
    assert lim.sigma == approx(1.7730)
    assert lim.ucl == approx(18.3191)
    assert lim.lcl == approx(7.6809)
    assert lim.upper_2sigma == approx(16.5461)
    assert lim.lower_2sigma == approx(9.4539)
    assert lim.upper_1sigma == approx(14.7730)
    assert lim.lower_1sigma == approx(11.2270)
    assert lim.boundaries == (
        lim.lcl,
        lim.lower_2sigma,
        lim.lower_1sigma,
        13.0,
        lim.upper_1sigma,
        lim.upper_2sigma,
        lim.ucl,
    )
    # moving-range chart: MRbar = 2.0, UCL = 3.267 * 2 = 6.534
    assert lim.mr_bar == approx(2.0)
    assert lim.mr_ucl == approx(6.534)


def test_control_limits_explicit_from_config() -> None:
    lim = ControlLimits(centre=12.003, sigma=0.004)
    assert lim.ucl == pytest.approx(12.015)
    assert lim.lcl == pytest.approx(11.991)
    assert ControlLimits(centre=Decimal("1.5"), sigma=Decimal("0.5")).centre == 1.5  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_control_limits_refuse_bad_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        ControlLimits(centre=0.0, sigma=sigma)


def test_control_limits_refuse_bad_baseline() -> None:
    with pytest.raises(ValueError, match="zero spread"):
        ControlLimits.from_baseline([5.0, 5.0, 5.0])
    with pytest.raises(ValueError, match="at least 2 values"):
        ControlLimits.from_baseline([5.0])
    with pytest.raises(ValueError, match="at least 20 values"):
        ControlLimits.from_baseline(DATA, min_values=20)


def test_zone_boundaries_are_strict() -> None:
    lim = ControlLimits(centre=0.0, sigma=1.0)
    assert [lim.zone(x) for x in (0, 1, 1.5, 2, 2.5, 3, 3.5)] == [0, 0, 1, 1, 2, 2, 3]
    assert [lim.zone(-x) for x in (0, 1, 1.5, 2, 2.5, 3, 3.5)] == [0, 0, -1, -1, -2, -2, -3]


# -- run rules: one hand-made series per rule, every rule on, exactly that rule fires -----
UNIT = ControlLimits(centre=0.0, sigma=1.0)

SINGLE_RULE = {
    # a lone point beyond +3 sigma; neighbours alternate inside 1 sigma
    1: ([0.5, -0.5, 3.5, -0.4, 0.3], 2),
    # nine above the centre line, inside 1 sigma, never six rising or falling
    2: ([-0.5, 0.2, 0.4, 0.3, 0.5, 0.2, 0.6, 0.4, 0.3, 0.5], 9),
    # six rising, crossing the centre line, inside 1 sigma
    3: ([0.3, -0.6, -0.4, -0.1, 0.1, 0.4, 0.6], 6),
    # fourteen alternating around the centre line inside 1 sigma (fifteen would add rule 7)
    4: ([0.1, -0.2, 0.3, -0.1, 0.2, -0.3, 0.4, -0.2, 0.1, -0.4, 0.2, -0.1, 0.3, -0.2], 13),
    # 2.5 and 2.4 beyond +2 sigma with 0.5 between: two of three
    5: ([0.3, 2.5, 0.5, 2.4, -0.3], 3),
    # 1.5, 1.2, 1.8, 1.3 beyond +1 sigma with 0.5 among them: four of five
    6: ([-0.2, 1.5, 1.2, 0.5, 1.8, 1.3], 5),
    # fifteen inside 1 sigma, sides mixed (no run of nine), no six-run, no 14-alternation
    7: ([0.2, -0.3, 0.5, 0.1, -0.4, -0.2, 0.6, 0.3, -0.1, 0.4, -0.5, 0.2, 0.7, -0.3, 0.1], 14),
    # eight beyond 1 sigma alternating sides: never 4 of 5 or 2 of 3 on one side
    8: ([1.5, -1.4, 1.3, -1.6, 1.2, -1.5, 1.4, -1.3], 7),
}


@pytest.mark.parametrize("rule", sorted(SINGLE_RULE))
def test_each_rule_alone(rule: int) -> None:
    values, at = SINGLE_RULE[rule]
    violations = check_series(values, UNIT, NELSON)
    assert [(v.rule, v.index) for v in violations] == [(rule, at)]
    (v,) = violations
    assert v.name == NELSON.name(rule)
    assert v.values == tuple(values[i] for i in v.indices)
    assert v.index == v.indices[-1]


def test_points_involved() -> None:
    (r5,) = check_series(SINGLE_RULE[5][0], UNIT, NELSON)
    assert (r5.indices, r5.values) == ((1, 3), (2.5, 2.4))  # the two beyond 2 sigma, not the window
    (r6,) = check_series(SINGLE_RULE[6][0], UNIT, NELSON)
    assert r6.indices == (1, 2, 4, 5)
    (r2,) = check_series(SINGLE_RULE[2][0], UNIT, NELSON)
    assert r2.indices == tuple(range(1, 10))
    assert r2.name == "nine points in a row on one side of the centre line"


# A realistic stable bore diameter (mm): limits from the first 25, then 15 more readings.
IN_CONTROL = [
    12.007, 11.997, 12.000, 12.004, 11.999, 12.003, 12.004, 12.000, 11.998, 12.004,
    12.007, 12.000, 12.002, 12.010, 12.001, 12.001, 12.013, 11.997, 12.006, 11.995,
    12.001, 12.009, 12.008, 11.999, 12.001, 12.003, 11.998, 12.005, 12.012, 11.998,
    11.995, 12.004, 12.003, 12.010, 12.002, 12.003, 12.002, 11.999, 12.006, 11.998,
]  # fmt: skip


def test_in_control_series_trips_nothing() -> None:
    lim = ControlLimits.from_baseline(IN_CONTROL[:25])
    assert lim.centre == pytest.approx(12.00264)
    assert check_series(IN_CONTROL, lim, NELSON) == []
    assert check_series(IN_CONTROL, lim) == []


def test_a_shift_in_the_realistic_series_is_caught() -> None:
    lim = ControlLimits.from_baseline(IN_CONTROL[:25])
    shifted = IN_CONTROL[:25] + [x + 2 * lim.sigma for x in IN_CONTROL[25:]]
    assert check_series(shifted, lim)  # the Western Electric rules see a 2-sigma shift


# -- firing semantics ---------------------------------------------------------------------
def test_western_electric_is_the_default_with_an_eight_point_run() -> None:
    eight_above = [0.2, 0.4, 0.3, 0.5, 0.2, 0.6, 0.4, 0.3]
    checker = RuleChecker(UNIT)
    assert checker.rule_set == WESTERN_ELECTRIC == RuleSet.parse(None) == RuleSet.parse("western_electric")
    results = [fired(checker.update(x)) for x in eight_above]
    assert results == [set()] * 7 + [{2}]
    assert check_series(eight_above, UNIT, NELSON) == []  # Nelson needs nine
    (v,) = check_series(eight_above, UNIT)
    assert v.name == "eight points in a row on one side of the centre line"
    # Western Electric does not check rules 3, 4, 7, 8
    for rule in (3, 4, 7, 8):
        assert check_series(SINGLE_RULE[rule][0], UNIT) == [], rule


def test_configurable_subset() -> None:
    subset = RuleSet.parse([1, 2, 5])
    assert subset == RuleSet(frozenset({1, 2, 5}), run_length=9)
    assert check_series(SINGLE_RULE[6][0], UNIT, subset) == []
    assert fired(check_series(SINGLE_RULE[5][0], UNIT, subset)) == {5}
    assert check_series([0.2, 0.4, 0.3, 0.5, 0.2, 0.6, 0.4, 0.3], UNIT, subset) == []
    eight = RuleSet.parse([2], run_length=8)
    assert fired(check_series([0.2, 0.4, 0.3, 0.5, 0.2, 0.6, 0.4, 0.3], UNIT, eight)) == {2}
    assert RuleSet.parse("nelson") == NELSON
    assert RuleSet.parse("nelson", run_length=8).run_length == 8
    assert RuleSet.parse("western_electric", run_length=9).rules == frozenset({1, 2, 5, 6})


@pytest.mark.parametrize(
    ("spec", "run_length", "match"),
    [
        ([0, 1], None, "1..8"),
        ([9], None, "1..8"),
        ([True], None, "1..8"),
        ([], None, "at least one rule"),
        ([2], 7, "8 or 9"),
        ("westinghouse", None, "unknown rule set"),
    ],
)
def test_rule_set_refused(spec: list[int] | str, run_length: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RuleSet.parse(spec, run_length=run_length)


def test_a_continuing_run_keeps_firing() -> None:
    eleven_above = [0.2, 0.4, 0.3, 0.5, 0.2, 0.6, 0.4, 0.3, 0.5, 0.2, 0.4]
    v = check_series(eleven_above, UNIT, RuleSet.parse([2]))
    assert [x.index for x in v] == [8, 9, 10]
    assert [x.indices for x in v] == [tuple(range(i - 8, i + 1)) for i in (8, 9, 10)]
    # rule 1 fires on every point beyond, rule 5 on each new point beyond 2 sigma
    assert [x.index for x in check_series([0, 3.5, 3.6, 0], UNIT, RuleSet.parse([1]))] == [1, 2]
    assert [x.index for x in check_series([0, 2.5, 2.6, 2.7, 0], UNIT, RuleSet.parse([5]))] == [2, 3]


def test_point_on_the_centre_line_is_on_neither_side() -> None:
    only2 = RuleSet.parse([2])
    # 4 above, one exactly on the centre line, 8 above: no run of nine
    broken = [0.2, 0.4, 0.3, 0.5, 0.0, 0.2, 0.6, 0.4, 0.3, 0.5, 0.2, 0.4, 0.3]
    assert check_series(broken, UNIT, only2) == []
    # one more above completes nine after the centre-line point, not counting it
    (v,) = check_series([*broken, 0.1], UNIT, only2)
    assert v.indices == tuple(range(5, 14))
    # a point on the centre line after a complete run does not fire: the run is over
    assert [v.index for v in check_series([0.5] * 9 + [0.0, 0.5], UNIT, only2)] == [8]
    # on the centre line nine times is no run at all
    assert check_series([0.0] * 9, UNIT, NELSON) == []


def test_ties_break_rising_and_alternating_runs() -> None:
    only34 = RuleSet.parse([3, 4])
    rising_with_tie = [-0.5, -0.3, -0.1, -0.1, 0.1, 0.3, 0.5]  # five rising, tie, then five rising
    assert check_series([*rising_with_tie, 0.7], UNIT, only34) == []
    (v,) = check_series([*rising_with_tie, 0.7, 0.9], UNIT, only34)  # the tied point starts the new run
    assert (v.rule, v.indices) == (3, tuple(range(3, 9)))
    falling = [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert fired(check_series(falling, UNIT, only34)) == {3}
    alternating = SINGLE_RULE[4][0]
    with_tie = [*alternating[:7], alternating[6], *alternating[7:]]
    assert check_series(with_tie, UNIT, only34) == []


def test_boundaries_exactly_on_the_limits() -> None:
    assert check_series([3.0, -3.0], UNIT, NELSON) == []  # on the control limit is not beyond
    assert check_series([2.0, 2.0, 2.0], UNIT, NELSON) == []  # on the 2-sigma line is not beyond
    # exactly on 1 sigma counts as within for rule 7
    assert fired(check_series([1.0, -1.0] * 7 + [1.0], UNIT, RuleSet.parse([7]))) == {7}
    assert check_series([1.0, -1.0] * 4, UNIT, RuleSet.parse([8])) == []


def test_rule_5_and_6_fire_only_on_a_point_beyond_and_without_a_full_window() -> None:
    only5 = RuleSet.parse([5])
    assert [v.index for v in check_series([2.5, 2.5], UNIT, only5)] == [1]
    assert [v.index for v in check_series([2.5, 2.5, 0.0], UNIT, only5)] == [1]
    assert check_series([2.5, -2.5, 0.0, 2.5, -2.5], UNIT, only5) == []  # never twice on a side within three
    assert [v.indices for v in check_series([2.5, -2.5, 2.5], UNIT, only5)] == [(0, 2)]
    only6 = RuleSet.parse([6])
    assert [v.index for v in check_series([1.5, 1.5, 1.5, 1.5], UNIT, only6)] == [3]
    assert [v.index for v in check_series([1.5, 1.5, 0.0, 1.5, 1.5, 0.0], UNIT, only6)] == [4]


def test_reset_and_indices() -> None:
    checker = RuleChecker(UNIT, RuleSet.parse([2], run_length=8), start_index=100)
    for x in [0.5] * 7:
        assert checker.update(x) == []
    checker.reset()  # e.g. a tool change: the run must not span it
    assert checker.next_index == 107
    results = [checker.update(0.5) for _ in range(8)]
    assert all(r == [] for r in results[:7])
    (v,) = results[7]
    assert (v.index, v.indices) == (114, tuple(range(107, 115)))
    with pytest.raises(ValueError, match="finite"):
        checker.update(float("nan"))


# -- properties ---------------------------------------------------------------------------
def naive(values: list[float], lim: ControlLimits, rs: RuleSet) -> list[tuple[int, int, tuple[int, ...]]]:
    """Every rule re-read from its definition over the window ending at each point."""
    c = lim.centre

    def beyond(x: float, k: int, side: int) -> bool:
        return x > c + k * lim.sigma if side > 0 else x < c - k * lim.sigma

    def out(x: float, k: int) -> bool:
        return beyond(x, k, 1) or beyond(x, k, -1)

    found: list[tuple[int, int, tuple[int, ...]]] = []
    for i, x in enumerate(values):
        for rule in sorted(rs.rules):
            n = rs.min_points(rule)
            w = values[i - n + 1 : i + 1] if i + 1 >= n else None
            run = tuple(range(i - n + 1, i + 1))
            # steps as signs, so that a product of two tiny differences cannot underflow to 0
            d = [(b > a) - (b < a) for a, b in itertools.pairwise(w)] if w else []
            if rule == 1 and out(x, 3):
                found.append((i, 1, (i,)))
            elif rule == 2 and w and (all(v > c for v in w) or all(v < c for v in w)):
                found.append((i, 2, run))
            elif rule == 3 and w and (all(s > 0 for s in d) or all(s < 0 for s in d)):
                found.append((i, 3, run))
            elif rule == 4 and w and all(p * q < 0 for p, q in itertools.pairwise(d)):
                found.append((i, 4, run))
            elif rule in (5, 6):
                level, size, k = (2, 3, 2) if rule == 5 else (1, 5, 4)
                for side in (1, -1):
                    start = max(0, i - size + 1)
                    hits = tuple(j for j in range(start, i + 1) if beyond(values[j], level, side))
                    if beyond(x, level, side) and len(hits) >= k:
                        found.append((i, rule, hits))
            elif rule == 7 and w and not any(out(v, 1) for v in w):
                found.append((i, 7, run))
            elif rule == 8 and w and all(out(v, 1) for v in w):
                found.append((i, 8, run))
    return found


# A half-sigma grid hits the centre line, every zone boundary and ties often.
grid = st.lists(st.integers(-8, 8).map(lambda k: k / 2), max_size=120)
rule_sets = st.one_of(
    st.just(NELSON),
    st.just(WESTERN_ELECTRIC),
    st.builds(
        RuleSet,
        st.frozensets(st.integers(1, 8), min_size=1),
        st.sampled_from([8, 9]),
    ),
)


@settings(max_examples=150, deadline=None)
@given(values=grid, rs=rule_sets)
def test_checker_matches_naive_definitions(values: list[float], rs: RuleSet) -> None:
    got = [(v.index, v.rule, v.indices) for v in check_series(values, UNIT, rs)]
    assert got == naive(values, UNIT, rs)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(-50, 50, allow_nan=False), max_size=150),
    centre=st.floats(-5, 5),
    sigma=st.floats(0.5, 20),
)
def test_incremental_equals_batch_and_needs_enough_points(values: list[float], centre: float, sigma: float) -> None:
    lim = ControlLimits(centre=centre, sigma=sigma)
    batch = check_series(values, lim, NELSON)
    checker = RuleChecker(lim, NELSON)
    incremental = [v for x in values for v in checker.update(x)]
    assert incremental == batch
    assert [(v.index, v.rule, v.indices) for v in batch] == naive(values, lim, NELSON)
    for v in batch:
        assert v.index + 1 >= NELSON.min_points(v.rule)
        assert len(v.indices) >= NELSON.min_points(v.rule)
        assert v.values == tuple(values[i] for i in v.indices)


def test_long_series_incremental_equals_batch() -> None:
    # deterministic noise with every single-rule pattern spliced in, over and over
    values: list[float] = []
    for k in range(200):
        values += [math.sin(i * 1.3 + k) * 0.9 + math.sin(i / 5) * 0.6 for i in range(12)]
        values += SINGLE_RULE[k % 8 + 1][0]
    lim = ControlLimits(centre=0.0, sigma=1.0)
    checker = RuleChecker(lim, NELSON)
    incremental = [v for x in values for v in checker.update(x)]
    batch = check_series(values, lim, NELSON)
    assert incremental == batch
    assert fired(batch) == set(range(1, 9))
    assert [(v.index, v.rule, v.indices) for v in batch] == naive(values, lim, NELSON)
