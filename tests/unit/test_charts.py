"""Control charts and capability intervals against independent computations (NumPy, SciPy, textbook values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from collector.inspection import charts
from collector.inspection.spc import RuleSet

RNG = np.random.default_rng(20261205)


def test_individuals_chart_limits_match_the_textbook_formulas() -> None:
    xs = RNG.normal(10.0, 0.02, 60)
    chart = charts.individuals_chart(xs)
    mr = np.abs(np.diff(xs))
    mr_bar = mr.mean()
    sigma = mr_bar / 1.128
    assert chart.location.centre == pytest.approx(xs.mean(), rel=1e-12)
    assert chart.location.ucl == pytest.approx(xs.mean() + 3 * sigma, rel=1e-12)
    assert chart.location.lcl == pytest.approx(xs.mean() - 3 * sigma, rel=1e-12)
    assert chart.dispersion.centre == pytest.approx(mr_bar, rel=1e-12)
    assert chart.dispersion.ucl == pytest.approx(3.267 * mr_bar, rel=1e-12)
    assert chart.dispersion.lcl == 0.0
    assert chart.baseline_short and chart.baseline_count == 60


def test_a_baseline_sets_the_limits_for_later_points_and_the_shift_is_flagged() -> None:
    base = RNG.normal(5.0, 0.01, 120)
    shifted = np.full(9, 5.0 + 0.015)  # nine points above the centre line: rule 2 (Nelson)
    xs = np.concatenate([base, shifted, [5.2]])
    chart = charts.individuals_chart(xs, baseline=120, rules=RuleSet.nelson())
    assert chart.location.centre == pytest.approx(base.mean(), rel=1e-12)
    assert not chart.baseline_short
    last = len(xs) - 1
    assert 1 in chart.location.flagged[last]  # 5.2 is far beyond 3 sigma
    assert any(2 in chart.location.flagged.get(i, ()) for i in range(120, last))
    # the MR chart flags the jump to 5.2
    assert chart.dispersion.flagged.get(last - 1) == (1,)


def _subgroups(k: int, n: int) -> np.ndarray:
    return RNG.normal(25.0, 0.05, (k, n))


@pytest.mark.parametrize("n", [2, 3, 5, 7, 10])
def test_xbar_r_limits(n: int) -> None:
    # factors computed independently: A2 = 3/(d2 sqrt(n)), D3/D4 = 1 -/+ 3 d3/d2, with d2, d3
    # integrated numerically from the range distribution of n standard normals
    d2, d3 = _range_moments(n)
    groups = _subgroups(30, n)
    chart = charts.subgroup_chart(groups.tolist(), method="r")
    r_bar = np.ptp(groups, axis=1).mean()
    grand = groups.mean()
    assert chart.location.centre == pytest.approx(grand, rel=1e-12)
    assert chart.location.ucl == pytest.approx(grand + 3 / (d2 * math.sqrt(n)) * r_bar, rel=2e-3)
    assert chart.dispersion.ucl == pytest.approx((1 + 3 * d3 / d2) * r_bar, rel=2e-3)
    assert chart.dispersion.lcl == pytest.approx(max(0.0, 1 - 3 * d3 / d2) * r_bar, abs=2e-3 * r_bar)


@pytest.mark.parametrize("n", [2, 4, 6, 9])
def test_xbar_s_limits(n: int) -> None:
    c4 = math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)
    groups = _subgroups(30, n)
    chart = charts.subgroup_chart(groups.tolist(), method="s")
    s_bar = groups.std(axis=1, ddof=1).mean()
    grand = groups.mean()
    assert chart.location.ucl == pytest.approx(grand + 3 / (c4 * math.sqrt(n)) * s_bar, rel=2e-3)
    assert chart.dispersion.ucl == pytest.approx((1 + 3 * math.sqrt(1 - c4 * c4) / c4) * s_bar, rel=2e-3)
    assert chart.dispersion.lcl == pytest.approx(
        max(0.0, 1 - 3 * math.sqrt(1 - c4 * c4) / c4) * s_bar, abs=2e-3 * s_bar
    )
    assert chart.baseline_count == 30 and not chart.baseline_short


def _range_moments(n: int) -> tuple[float, float]:
    """d2 = E[R], d3 = sd(R) of the range of n standard normal values, by numerical integration.

    F_R(w) = n * integral phi(x) (Phi(x + w) - Phi(x))^(n-1) dx; E[R] = integral (1 - F_R),
    E[R^2] = integral 2w (1 - F_R), on fine grids (trapezoid rule, error far below 1e-4).
    """
    x = np.linspace(-9, 9, 3601)
    w = np.linspace(0, 12, 2401)
    inner = stats.norm.pdf(x)[None, :] * (stats.norm.cdf(x[None, :] + w[:, None]) - stats.norm.cdf(x)[None, :]) ** (
        n - 1
    )
    survival = 1 - n * np.trapezoid(inner, x, axis=1)
    e1 = float(np.trapezoid(survival, w))
    e2 = float(np.trapezoid(2 * w * survival, w))
    return e1, math.sqrt(e2 - e1 * e1)


@pytest.mark.parametrize("nu", [1, 2, 5, 24, 99, 499])
@pytest.mark.parametrize("p", [0.025, 0.5, 0.975])
def test_chi_square_quantiles_match_scipy(nu: int, p: float) -> None:
    assert charts.chi2_quantile(p, nu) == pytest.approx(stats.chi2.ppf(p, nu), rel=1e-9)


def test_capability_intervals_follow_montgomery_and_bissell() -> None:
    xs = RNG.normal(84.2, 0.03, 125)
    summary = charts.capability_summary(xs.tolist(), lsl=84.1, usl=84.3, target=84.2)
    cap = summary.capability
    n = len(xs)
    sigma_overall = xs.std(ddof=1)
    pp = 0.2 / (6 * sigma_overall)
    assert cap.pp == pytest.approx(pp, rel=1e-12)
    assert summary.pp is not None
    assert summary.pp.low == pytest.approx(pp * math.sqrt(stats.chi2.ppf(0.025, n - 1) / (n - 1)), rel=1e-9)
    assert summary.pp.high == pytest.approx(pp * math.sqrt(stats.chi2.ppf(0.975, n - 1) / (n - 1)), rel=1e-9)
    ppk = min(84.3 - xs.mean(), xs.mean() - 84.1) / (3 * sigma_overall)
    half = stats.norm.ppf(0.975) * math.sqrt(1 / (9 * n) + ppk**2 / (2 * (n - 1)))
    assert summary.ppk is not None
    assert (summary.ppk.low, summary.ppk.high) == pytest.approx((ppk - half, ppk + half), rel=1e-9)
    assert summary.n == n and summary.cpk is not None and summary.cpk.low < cap.cpk < summary.cpk.high  # type: ignore[operator]


def test_one_sided_specifications_have_no_cp_interval() -> None:
    summary = charts.capability_summary(RNG.normal(1.0, 0.1, 50).tolist(), usl=1.5)
    assert summary.cp is None and summary.pp is None and summary.cpk is not None


def test_histogram_counts_every_value_and_spans_the_limits() -> None:
    xs = RNG.normal(0.0, 1.0, 500)
    hist = charts.histogram(xs, include=(-5.0, 5.0))
    counts, edges = np.histogram(xs, bins=len(hist.counts), range=(-5.0, 5.0))
    assert hist.edges[0] == -5.0 and hist.edges[-1] == 5.0
    assert list(hist.counts) == counts.tolist()
    assert hist.edges == pytest.approx(edges.tolist(), rel=1e-12, abs=1e-12)
    assert hist.mean == pytest.approx(xs.mean()) and hist.sigma == pytest.approx(xs.std(ddof=1))
