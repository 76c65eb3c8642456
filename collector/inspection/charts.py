"""What a control chart and a capability histogram show, computed once for every place that draws them.

The dashboard, the operator view, the part report and the exports draw the same figures; the
numbers behind them come from here, so a chart on a screen and a chart on paper never
disagree. Plain ``float`` arithmetic, as in :mod:`collector.inspection.spc`.

Charts (Montgomery, *Introduction to Statistical Quality Control*, 6th ed., §6.2-6.4 and
Appendix VI; the AIAG SPC reference manual uses the same factors):

- **Individuals / moving range (I-MR)**: X chart centre ``x̄`` (or the baseline's), limits
  ``centre ± 3·MR̄/d2(2)``; MR chart centre ``MR̄``, ``UCL = D4(2)·MR̄``, ``LCL = 0``.
- **X̄-R** (subgroups of 2 to 10): X̄ chart ``x̿ ± A2·R̄``; R chart ``UCL = D4·R̄``,
  ``LCL = D3·R̄``.
- **X̄-S**: X̄ chart ``x̿ ± A3·s̄``; S chart ``UCL = B4·s̄``, ``LCL = B3·s̄``.

Points on the location chart (X or X̄) are checked with the station's run rules
(:class:`~collector.inspection.spc.RuleChecker`, sigma of the plotted statistic = one third
of the distance to the control limit); points on a dispersion chart (MR, R, S) are flagged
beyond their limits only, as the AIAG manual does.

Limits from a *baseline* (the first values, or a study) are drawn for every later point:
"limits in force", not recomputed from the data on screen. Without a baseline the chart's
own data set them, and :attr:`Chart.baseline_short` says when there are fewer values than the
AIAG minimum (100 individuals or 25 subgroups).

Capability confidence intervals (Montgomery §8.3.5): for ``Cp`` (and ``Pp``)
``[Cp·sqrt(χ²(α/2, ν)/ν), Cp·sqrt(χ²(1-α/2, ν)/ν)]`` with ``ν = n - 1``; for ``Cpk`` (and
``Ppk``) Bissell's approximation ``Cpk ± z(1-α/2)·sqrt(1/(9n) + Cpk²/(2(n-1)))``. For
within-subgroup sigma these are approximations (the degrees of freedom of ``MR̄/d2`` or
``R̄/d2`` are fewer than ``n - 1``); they say how much a figure resting on few values can be
trusted, which is what a supervisor needs to see next to it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from collector.inspection.spc import (
    C4,
    D2,
    Capability,
    ControlLimits,
    RuleChecker,
    RuleSet,
    capability,
    moving_ranges,
    subgroup_capability,
)

# Montgomery, Appendix VI, "factors for constructing variables control charts", n = 2..10.
A2: Final[Mapping[int, float]] = MappingProxyType(
    {2: 1.880, 3: 1.023, 4: 0.729, 5: 0.577, 6: 0.483, 7: 0.419, 8: 0.373, 9: 0.337, 10: 0.308}
)
A3: Final[Mapping[int, float]] = MappingProxyType(
    {2: 2.659, 3: 1.954, 4: 1.628, 5: 1.427, 6: 1.287, 7: 1.182, 8: 1.099, 9: 1.032, 10: 0.975}
)
D3: Final[Mapping[int, float]] = MappingProxyType(
    {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.076, 8: 0.136, 9: 0.184, 10: 0.223}
)
D4: Final[Mapping[int, float]] = MappingProxyType(
    {2: 3.267, 3: 2.574, 4: 2.282, 5: 2.114, 6: 2.004, 7: 1.924, 8: 1.864, 9: 1.816, 10: 1.777}
)
B3: Final[Mapping[int, float]] = MappingProxyType(
    {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.030, 7: 0.118, 8: 0.185, 9: 0.239, 10: 0.284}
)
B4: Final[Mapping[int, float]] = MappingProxyType(
    {2: 3.267, 3: 2.568, 4: 2.266, 5: 2.089, 6: 1.970, 7: 1.882, 8: 1.815, 9: 1.761, 10: 1.716}
)

#: AIAG SPC manual: limits resting on fewer are provisional
MIN_INDIVIDUALS: Final = 100
MIN_SUBGROUPS: Final = 25

ChartKind = Literal["imr", "xbar_r", "xbar_s"]


@dataclass(frozen=True, slots=True)
class Panel:
    """One chart panel: the plotted points, its centre line and control limits, and what broke a rule."""

    name: str  # "X", "MR", "Xbar", "R", "S"
    points: tuple[float, ...]
    centre: float
    ucl: float
    lcl: float
    #: point index -> the rules it broke (location panels: run rules; dispersion panels: [1])
    flagged: Mapping[int, tuple[int, ...]]
    #: the ±1 and ±2 sigma lines of a location panel (zones), empty for dispersion panels
    zones: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Chart:
    kind: ChartKind
    location: Panel
    dispersion: Panel
    subgroup_size: int  # 1 for individuals
    #: how many values (individuals) or subgroups the limits rest on
    baseline_count: int
    #: fewer than the AIAG minimum: the limits are provisional and should say so
    baseline_short: bool
    lsl: float | None
    usl: float | None
    target: float | None


def _flag(values: Sequence[float], limits: ControlLimits, rules: RuleSet) -> dict[int, tuple[int, ...]]:
    checker = RuleChecker(limits, rules)
    flagged: dict[int, set[int]] = {}
    for v in values:
        for violation in checker.update(v):
            flagged.setdefault(violation.index, set()).add(violation.rule)
    return {i: tuple(sorted(r)) for i, r in sorted(flagged.items())}


def _beyond(points: Sequence[float], ucl: float, lcl: float) -> dict[int, tuple[int, ...]]:
    return {i: (1,) for i, p in enumerate(points) if p > ucl or p < lcl}


def _location(name: str, points: Sequence[float], centre: float, sigma: float, rules: RuleSet) -> Panel:
    limits = ControlLimits(centre, sigma)
    flagged = _flag(points, limits, rules) if sigma > 0 else {}
    zones = (centre - 2 * sigma, centre - sigma, centre + sigma, centre + 2 * sigma)
    return Panel(name, tuple(points), centre, limits.ucl, limits.lcl, flagged, zones)


def individuals_chart(
    values: Iterable[float],
    *,
    baseline: int | None = None,
    centre: float | None = None,
    sigma: float | None = None,
    rules: RuleSet | None = None,
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
) -> Chart:
    """I-MR chart. Limits from ``centre``/``sigma`` (a study), else the first ``baseline`` values, else all."""
    xs = [float(v) for v in values]
    if len(xs) < 2:
        raise ValueError("an individuals chart needs at least 2 values")
    rules = rules or RuleSet.western_electric()
    if centre is not None and sigma is not None:
        basis, count = None, len(xs)
        c, s = float(centre), float(sigma)
        mr_bar = s * D2[2]
    else:
        basis = xs[:baseline] if baseline else xs
        if len(basis) < 2:
            raise ValueError("the baseline needs at least 2 values")
        count = len(basis)
        mr_bar = statistics.fmean(moving_ranges(basis))
        c, s = statistics.fmean(basis), mr_bar / D2[2]
    # moving range i spans values i and i+1; charts draw it under the later value (x index i + 1)
    mrs = moving_ranges(xs)
    dispersion = Panel("MR", tuple(mrs), mr_bar, D4[2] * mr_bar, 0.0, _beyond(mrs, D4[2] * mr_bar, 0.0))
    short = basis is not None and count < MIN_INDIVIDUALS
    return Chart("imr", _location("X", xs, c, s, rules), dispersion, 1, count, short, lsl, usl, target)


def subgroup_chart(
    subgroups: Iterable[Sequence[float]],
    *,
    method: Literal["r", "s"] = "r",
    baseline: int | None = None,
    rules: RuleSet | None = None,
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
) -> Chart:
    """X̄-R (``method="r"``) or X̄-S (``"s"``) chart of equal-sized subgroups (2 to 10 values)."""
    groups = [[float(v) for v in g] for g in subgroups]
    if len(groups) < 2:
        raise ValueError("a subgroup chart needs at least 2 subgroups")
    n = len(groups[0])
    if n not in A2 or any(len(g) != n for g in groups):
        raise ValueError(
            f"subgroups must all have the same size, from 2 to 10 (got {sorted({len(g) for g in groups})})"
        )
    rules = rules or RuleSet.western_electric()
    means = [statistics.fmean(g) for g in groups]
    spreads = [max(g) - min(g) for g in groups] if method == "r" else [statistics.stdev(g) for g in groups]
    basis = slice(0, baseline) if baseline else slice(None)
    grand = statistics.fmean(means[basis])
    bar = statistics.fmean(spreads[basis])
    count = len(means[basis])
    if method == "r":
        half, ucl, lcl, name, kind = A2[n] * bar, D4[n] * bar, D3[n] * bar, "R", "xbar_r"
    else:
        half, ucl, lcl, name, kind = A3[n] * bar, B4[n] * bar, B3[n] * bar, "S", "xbar_s"
    location = _location("Xbar", means, grand, half / 3, rules)
    dispersion = Panel(name, tuple(spreads), bar, ucl, lcl, _beyond(spreads, ucl, lcl))
    return Chart(kind, location, dispersion, n, count, count < MIN_SUBGROUPS, lsl, usl, target)  # type: ignore[arg-type]


# -- capability with confidence intervals ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class CapabilitySummary:
    """Capability indices with the confidence intervals and the count they rest on."""

    capability: Capability
    confidence: float
    cp: Interval | None
    cpk: Interval | None
    pp: Interval | None
    ppk: Interval | None

    @property
    def n(self) -> int:
        return self.capability.n


def _chi2_interval(index: float | None, n: int, alpha: float) -> Interval | None:
    if index is None or n < 2:
        return None
    nu = n - 1
    return Interval(
        index * math.sqrt(chi2_quantile(alpha / 2, nu) / nu), index * math.sqrt(chi2_quantile(1 - alpha / 2, nu) / nu)
    )


def _bissell_interval(index: float | None, n: int, alpha: float) -> Interval | None:
    if index is None or n < 2:
        return None
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
    half = z * math.sqrt(1 / (9 * n) + index * index / (2 * (n - 1)))
    return Interval(index - half, index + half)


def capability_summary(
    values: Iterable[float] | None = None,
    *,
    subgroups: Iterable[Sequence[float]] | None = None,
    method: Literal["rbar", "sbar"] = "rbar",
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
    confidence: float = 0.95,
) -> CapabilitySummary:
    """Cp, Cpk, Pp, Ppk (and Cpm) with confidence intervals, from individuals or subgroups."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    if subgroups is not None:
        cap = subgroup_capability(subgroups, lsl=lsl, usl=usl, target=target, method=method)
    elif values is not None:
        cap = capability(values, lsl=lsl, usl=usl, target=target)
    else:
        raise ValueError("give values or subgroups")
    alpha = 1 - confidence
    return CapabilitySummary(
        cap,
        confidence,
        _chi2_interval(cap.cp, cap.n, alpha),
        _bissell_interval(cap.cpk, cap.n, alpha),
        _chi2_interval(cap.pp, cap.n, alpha),
        _bissell_interval(cap.ppk, cap.n, alpha),
    )


# -- histogram ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Histogram:
    edges: tuple[float, ...]  # len(counts) + 1 bin edges, ascending
    counts: tuple[int, ...]
    mean: float
    sigma: float  # overall (n - 1): the normal curve drawn over the bars

    def density(self, x: float) -> float:
        """Expected count per bin width at ``x`` under the fitted normal curve."""
        if self.sigma <= 0:
            return 0.0
        width = self.edges[1] - self.edges[0]
        return sum(self.counts) * width * statistics.NormalDist(self.mean, self.sigma).pdf(x)


def histogram(values: Iterable[float], *, bins: int | None = None, include: Iterable[float | None] = ()) -> Histogram:
    """Equal-width bins (Sturges' rule unless ``bins``) spanning the values and the ``include`` points (limits)."""
    xs = sorted(float(v) for v in values)
    if len(xs) < 2:
        raise ValueError("a histogram needs at least 2 values")
    k = bins or max(5, math.ceil(math.log2(len(xs))) + 1)
    extra = [float(v) for v in include if v is not None]
    lo, hi = min(xs[0], *extra) if extra else xs[0], max(xs[-1], *extra) if extra else xs[-1]
    if hi == lo:
        hi, lo = hi + 0.5, lo - 0.5
    width = (hi - lo) / k
    edges = (*(lo + i * width for i in range(k)), hi)
    counts = [0] * k
    for x in xs:
        counts[min(int((x - lo) / width), k - 1)] += 1
    return Histogram(edges, tuple(counts), statistics.fmean(xs), statistics.stdev(xs))


# -- everything one characteristic's page shows -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Figures:
    """The chart, histogram and capability of one characteristic (``None`` where too few values)."""

    chart: Chart | None
    histogram: Histogram | None
    capability: CapabilitySummary | None
    #: why something is missing or provisional, in words for the page
    note: str = ""


def characteristic_figures(
    values: Sequence[float],
    *,
    lsl: float | None,
    usl: float | None,
    target: float | None = None,
    subgroup_size: int | None = None,
    method: Literal["r", "s"] = "r",
    baseline: int | None = None,
    centre: float | None = None,
    sigma: float | None = None,
    limits_from: int | None = None,
    rules: RuleSet | None = None,
) -> Figures:
    """What to draw for ``values`` (oldest first): a chart with the limits in force, a histogram, capability.

    ``centre``/``sigma`` are the limits in force (a study, or the gateway's recorded limits,
    resting on ``limits_from`` values); without them the first ``baseline`` values (or all)
    set the limits. Subgroups are consecutive values in groups of ``subgroup_size``; an
    incomplete last group is left out of the subgroup chart until it is complete.
    """
    xs = [float(v) for v in values]
    if len(xs) < 2:
        return Figures(None, None, None, f"{len(xs)} value(s): a chart needs at least 2")
    notes: list[str] = []
    chart: Chart | None
    groups: list[list[float]] | None = None
    if subgroup_size and subgroup_size > 1:
        k = len(xs) // subgroup_size
        if k < 2:
            chart = None
            notes.append(f"{k} complete subgroup(s) of {subgroup_size}: a subgroup chart needs at least 2")
        else:
            groups = [xs[i * subgroup_size : (i + 1) * subgroup_size] for i in range(k)]
            sub_base = max(2, baseline // subgroup_size) if baseline else None
            chart = subgroup_chart(
                groups, method=method, baseline=sub_base, rules=rules, lsl=lsl, usl=usl, target=target
            )
    else:
        try:
            chart = individuals_chart(
                xs, baseline=baseline, centre=centre, sigma=sigma, rules=rules, lsl=lsl, usl=usl, target=target
            )
        except ValueError as exc:
            return Figures(None, None, None, str(exc))
        if centre is not None and sigma is not None and limits_from is not None:
            chart = Chart(
                chart.kind,
                chart.location,
                chart.dispersion,
                1,
                limits_from,
                limits_from < MIN_INDIVIDUALS,
                lsl,
                usl,
                target,
            )
    if chart is not None and chart.baseline_short:
        minimum = MIN_INDIVIDUALS if chart.subgroup_size == 1 else MIN_SUBGROUPS
        notes.append(
            f"the control limits rest on {chart.baseline_count} "
            f"{'values' if chart.subgroup_size == 1 else 'subgroups'}, fewer than the {minimum} the AIAG manual "
            "asks for: they are provisional"
        )
    hist = histogram(xs, include=(lsl, usl))
    summary: CapabilitySummary | None = None
    if lsl is not None or usl is not None:
        try:
            if groups is not None:  # within-subgroup sigma: R-bar/d2 or s-bar/c4, as the chart
                sigma_by: Literal["rbar", "sbar"] = "rbar" if method == "r" else "sbar"
                summary = capability_summary(subgroups=groups, method=sigma_by, lsl=lsl, usl=usl, target=target)
            else:
                summary = capability_summary(xs, lsl=lsl, usl=usl, target=target)
        except ValueError as exc:
            notes.append(f"no capability: {exc}")
    return Figures(chart, hist, summary, "; ".join(notes))


# -- the chi-square quantile (no SciPy on a gateway) -----------------------------------------------
def _lower_gamma_regularised(a: float, x: float) -> float:
    """P(a, x), by the series for x < a + 1 and Lentz's continued fraction otherwise (Numerical Recipes §6.2)."""
    if x <= 0:
        return 0.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return total * math.exp(log_prefix)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return 1 - math.exp(log_prefix) * h


def chi2_cdf(x: float, nu: int) -> float:
    return _lower_gamma_regularised(nu / 2, x / 2)


def chi2_quantile(p: float, nu: int) -> float:
    """The ``p`` quantile of the chi-square distribution with ``nu`` degrees of freedom."""
    if not 0 < p < 1 or nu < 1:
        raise ValueError("p must be in (0, 1) and nu >= 1")
    lo, hi = 0.0, max(1.0, float(nu))
    while chi2_cdf(hi, nu) < p:
        hi *= 2
    for _ in range(200):  # bisection: slow to converge, but certain, and cheap at this size
        mid = (lo + hi) / 2
        if chi2_cdf(mid, nu) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


__all__ = [
    "A2",
    "A3",
    "B3",
    "B4",
    "C4",
    "D2",
    "D3",
    "D4",
    "MIN_INDIVIDUALS",
    "MIN_SUBGROUPS",
    "CapabilitySummary",
    "Chart",
    "Figures",
    "Histogram",
    "Interval",
    "Panel",
    "capability_summary",
    "characteristic_figures",
    "chi2_quantile",
    "histogram",
    "individuals_chart",
    "subgroup_chart",
]
