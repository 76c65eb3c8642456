"""Statistical process control for one characteristic: capability indices, I-MR control
limits and the Nelson / Western Electric run rules.

Everything here is plain ``float`` arithmetic. Judging a single value against its
tolerance is exact (``collector.inspection.tolerance`` works in :class:`~decimal.Decimal`), but a
capability index or a 3-sigma limit is an estimate whose own uncertainty dwarfs binary
rounding, so inputs are accepted as anything with ``__float__`` (``Decimal`` included) and
converted once. Non-finite inputs are refused: a NaN compares false with every limit and
would silently count as "within 1 sigma, on neither side".

Capability
----------
``Cp  = (USL - LSL) / (6 sigma_within)``, ``Cpu = (USL - mean) / (3 sigma_within)``,
``Cpl = (mean - LSL) / (3 sigma_within)``, ``Cpk = min(Cpu, Cpl)``; ``Pp``, ``Ppu``,
``Ppl``, ``Ppk`` are the same formulas with the overall sample standard deviation
(``n - 1`` denominator).

* ``sigma_within`` for individual values is ``MRbar / d2(2)`` (``d2(2) = 1.128``); for
  rational subgroups ``Rbar / d2(n)`` or ``sbar / c4(n)``. The constants for n = 2..10 are
  the tabulated "factors for constructing variables control charts" (D. C. Montgomery,
  *Introduction to Statistical Quality Control*, Appendix VI; the same values are in
  ASTM E2587 and the AIAG SPC reference manual). The tabulated, not the exact, values are
  used so that results agree with hand calculations and other SPC software.
* ``Cpm = Cp / sqrt(1 + ((mean - T) / sigma)^2)`` uses **sigma_within**, the sigma of the
  ``Cp`` it scales. Only then is it the Taguchi index
  ``(USL - LSL) / (6 sqrt(sigma^2 + (mean - T)^2))``, equal to ``Cp`` on target and
  smaller off it. (Minitab reports Cpm beside the overall indices, with the overall
  sigma; the two agree for a stable process.) Cpm needs a target and both limits.
* One-sided specifications: only the index of the existing side is defined; ``Cp``,
  ``Pp`` and ``Cpm`` are ``None`` and ``Cpk``/``Ppk`` equal the one-sided index.
* Zero spread: every index that would divide by a zero sigma is ``None`` (the sigma itself
  is reported as ``0.0``). Infinity would pass every "Cpk >= 1.33" acceptance check,
  while zero spread almost always means a gauge resolution too coarse for the tolerance
  or a stuck reading, which is a finding in itself, not a capable process.
* Too few values (fewer than 2, or fewer than the caller's ``min_values``) is a
  ``ValueError``. Two values are the arithmetic minimum; whether a study is *large
  enough* (AIAG suggests 100 values or 25 subgroups) is the caller's policy.

Control limits
--------------
Control limits describe what the process *does* (centre +/- 3 sigma of a stable
baseline); tolerance limits describe what the part *must* do. They are unrelated: a
process can be in control and out of tolerance, or the reverse. Nothing in this module
ever uses one for the other.

Run rules and when they fire
----------------------------
Rules are numbered as Nelson (1984) numbers them; the Western Electric set is
Nelson 1, 5, 6 and 2 with a run of 8 instead of 9, and is the default.

* "Beyond k sigma" is strict: a point exactly on a zone boundary (or exactly on a control
  limit) is not beyond it. "Within 1 sigma" is the complement of "beyond 1 sigma", so a
  point exactly on the 1-sigma line counts as within.
* A point exactly on the centre line is on neither side: it ends a rule-2 run and the
  next run starts after it.
* Equal consecutive values are neither rising nor falling: a tie ends a rule-3 run and a
  rule-4 alternation, and a new one starts at the tied point.
* A rule fires on the point that completes its pattern, and it keeps firing on every
  following point for as long as the pattern still holds over the window ending at that
  point (ten points above the centre line fire rule 2 at the ninth *and* the tenth). Each
  signal therefore says "this point is part of an out-of-control pattern", as control
  chart software marks points; deduplicating alarms is the consumer's job.
* Rules 5 and 6 fire only on a point that is itself beyond the zone (a point inside the
  zone completes no new pattern: the same 2-of-3 was already signalled one point
  earlier). They need only the points that form the pattern, not a full window: the
  first two points both beyond 2 sigma on one side fire rule 5.
* Indices count the points fed to one :class:`RuleChecker`, starting at ``start_index``.

Why one module of this size: the capability indices, the control limits and the run rules share
the sigma estimators and the conventions stated above; apart, those would be restated.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, SupportsFloat

__all__ = [
    "C4",
    "D2",
    "NELSON",
    "RULE_NAMES",
    "RULE_POINTS",
    "WESTERN_ELECTRIC",
    "Capability",
    "ControlLimits",
    "RuleChecker",
    "RuleSet",
    "Violation",
    "capability",
    "check_series",
    "cp_index",
    "cpk_index",
    "cpl_index",
    "cpm_index",
    "cpu_index",
    "moving_ranges",
    "sigma_individuals",
    "sigma_overall",
    "sigma_rbar",
    "sigma_sbar",
    "subgroup_capability",
]

# Montgomery, Introduction to Statistical Quality Control, Appendix VI (also ASTM E2587,
# AIAG SPC manual): d2(n) = E[R]/sigma and c4(n) = E[s]/sigma for a normal subgroup of n.
D2: Final[Mapping[int, float]] = MappingProxyType(
    {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}
)
C4: Final[Mapping[int, float]] = MappingProxyType(
    {2: 0.7979, 3: 0.8862, 4: 0.9213, 5: 0.9400, 6: 0.9515, 7: 0.9594, 8: 0.9650, 9: 0.9693, 10: 0.9727}
)
# D4 for n = 2, the upper limit factor of the moving-range chart (same table).
_D4_2: Final = 3.267

Number = SupportsFloat
SigmaMethod = Literal["moving_range", "rbar", "sbar", "given"]


# -- input handling -----------------------------------------------------------------------
def _floats(values: Iterable[Number], what: str) -> list[float]:
    out = [float(v) for v in values]
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise ValueError(f"{what}: value #{i} is not a finite number ({v!r})")
    return out


def _require(count: int, minimum: int, what: str) -> None:
    if count < minimum:
        raise ValueError(f"{what}: needs at least {minimum} values, got {count}")


def _subgroups(subgroups: Iterable[Iterable[Number]]) -> tuple[list[list[float]], int]:
    groups = [_floats(g, f"subgroup #{i}") for i, g in enumerate(subgroups)]
    if not groups:
        raise ValueError("subgroups: needs at least 1 subgroup, got none")
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        # Rbar/d2(n) and sbar/c4(n) assume one n; mixing sizes needs weighted estimators
        # that a hand check could not follow, so refuse rather than guess.
        raise ValueError(f"subgroups: all subgroups must have the same size, got sizes {sorted(sizes)}")
    (n,) = sizes
    if n not in D2:
        raise ValueError(f"subgroups: subgroup size must be 2..10, got {n}")
    return groups, n


# -- sigma estimators ---------------------------------------------------------------------
def moving_ranges(values: Iterable[Number]) -> list[float]:
    """|x[i] - x[i-1]| for i = 1..n-1 (ranges of 2 consecutive individual values)."""
    xs = _floats(values, "moving_ranges")
    return [abs(b - a) for a, b in itertools.pairwise(xs)]


def sigma_individuals(values: Iterable[Number]) -> float:
    """Within sigma of individual values: average moving range / d2(2) = MRbar / 1.128."""
    xs = _floats(values, "sigma_individuals")
    _require(len(xs), 2, "sigma_individuals")
    return statistics.fmean(moving_ranges(xs)) / D2[2]


def sigma_rbar(subgroups: Iterable[Iterable[Number]]) -> float:
    """Within sigma from rational subgroups of equal size n (2..10): Rbar / d2(n)."""
    groups, n = _subgroups(subgroups)
    return statistics.fmean(max(g) - min(g) for g in groups) / D2[n]


def sigma_sbar(subgroups: Iterable[Iterable[Number]]) -> float:
    """Within sigma from rational subgroups of equal size n (2..10): sbar / c4(n)."""
    groups, n = _subgroups(subgroups)
    return statistics.fmean(statistics.stdev(g) for g in groups) / C4[n]


def sigma_overall(values: Iterable[Number]) -> float:
    """Overall (long-term) sigma: the sample standard deviation, n - 1 denominator."""
    xs = _floats(values, "sigma_overall")
    _require(len(xs), 2, "sigma_overall")
    return statistics.stdev(xs)


# -- capability indices -------------------------------------------------------------------
# Keyword-only because two float limits passed in the wrong order would not fail, only lie.
# Each works for the Pp family as well when given the overall sigma.
def _check_sigma(sigma: float) -> bool:
    """True if an index can be computed; zero spread gives None (see module docstring)."""
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    return sigma > 0


def cp_index(*, lsl: float | None, usl: float | None, sigma: float) -> float | None:
    """Cp (or Pp): (USL - LSL) / (6 sigma); None for a one-sided spec or zero sigma."""
    if lsl is None or usl is None or not _check_sigma(sigma):
        return None
    return (usl - lsl) / (6 * sigma)


def cpu_index(*, usl: float | None, mean: float, sigma: float) -> float | None:
    """Cpu (or Ppu): (USL - mean) / (3 sigma); None without an upper limit or with zero sigma."""
    if usl is None or not _check_sigma(sigma):
        return None
    return (usl - mean) / (3 * sigma)


def cpl_index(*, lsl: float | None, mean: float, sigma: float) -> float | None:
    """Cpl (or Ppl): (mean - LSL) / (3 sigma); None without a lower limit or with zero sigma."""
    if lsl is None or not _check_sigma(sigma):
        return None
    return (mean - lsl) / (3 * sigma)


def cpk_index(cpu: float | None, cpl: float | None) -> float | None:
    """Cpk (or Ppk): the smaller of the one-sided indices that exist."""
    present = [v for v in (cpu, cpl) if v is not None]
    return min(present) if present else None


def cpm_index(*, cp: float | None, mean: float, target: float | None, sigma: float) -> float | None:
    """Cpm = Cp / sqrt(1 + ((mean - T) / sigma)^2), with the sigma that ``cp`` was computed with."""
    if cp is None or target is None or not _check_sigma(sigma):
        return None
    return cp / math.sqrt(1 + ((mean - target) / sigma) ** 2)


@dataclass(frozen=True, slots=True)
class Capability:
    """Capability of one characteristic; an index is None where it is undefined."""

    n: int
    mean: float
    sigma_within: float
    sigma_method: SigmaMethod
    sigma_overall: float
    lsl: float | None
    usl: float | None
    target: float | None
    cp: float | None
    cpu: float | None
    cpl: float | None
    cpk: float | None
    pp: float | None
    ppu: float | None
    ppl: float | None
    ppk: float | None
    cpm: float | None


def _limit(value: Number | None, what: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return v


def _capability(
    xs: list[float],
    *,
    lsl: Number | None,
    usl: Number | None,
    target: Number | None,
    sigma_within: float,
    sigma_method: SigmaMethod,
) -> Capability:
    lo, hi, t = _limit(lsl, "lsl"), _limit(usl, "usl"), _limit(target, "target")
    if lo is None and hi is None:
        raise ValueError("capability needs at least one specification limit (lsl or usl)")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"lsl must be below usl, got lsl={lo} usl={hi}")
    mean = statistics.fmean(xs)
    s_all = statistics.stdev(xs)
    cpu = cpu_index(usl=hi, mean=mean, sigma=sigma_within)
    cpl = cpl_index(lsl=lo, mean=mean, sigma=sigma_within)
    ppu = cpu_index(usl=hi, mean=mean, sigma=s_all)
    ppl = cpl_index(lsl=lo, mean=mean, sigma=s_all)
    cp = cp_index(lsl=lo, usl=hi, sigma=sigma_within)
    return Capability(
        n=len(xs),
        mean=mean,
        sigma_within=sigma_within,
        sigma_method=sigma_method,
        sigma_overall=s_all,
        lsl=lo,
        usl=hi,
        target=t,
        cp=cp,
        cpu=cpu,
        cpl=cpl,
        cpk=cpk_index(cpu, cpl),
        pp=cp_index(lsl=lo, usl=hi, sigma=s_all),
        ppu=ppu,
        ppl=ppl,
        ppk=cpk_index(ppu, ppl),
        cpm=cpm_index(cp=cp, mean=mean, target=t, sigma=sigma_within),
    )


def capability(
    values: Iterable[Number],
    *,
    lsl: Number | None = None,
    usl: Number | None = None,
    target: Number | None = None,
    sigma_within: Number | None = None,
    min_values: int = 2,
) -> Capability:
    """Capability of individual values; sigma_within is MRbar/1.128 unless given."""
    xs = _floats(values, "capability")
    _require(len(xs), max(2, min_values), "capability")
    if sigma_within is None:
        return _capability(
            xs, lsl=lsl, usl=usl, target=target, sigma_within=sigma_individuals(xs), sigma_method="moving_range"
        )
    return _capability(xs, lsl=lsl, usl=usl, target=target, sigma_within=float(sigma_within), sigma_method="given")


def subgroup_capability(
    subgroups: Iterable[Iterable[Number]],
    *,
    lsl: Number | None = None,
    usl: Number | None = None,
    target: Number | None = None,
    method: Literal["rbar", "sbar"] = "rbar",
    min_values: int = 2,
) -> Capability:
    """Capability of rational subgroups: sigma_within from Rbar/d2 or sbar/c4, overall from all values."""
    groups, _ = _subgroups(subgroups)
    xs = [x for g in groups for x in g]
    _require(len(xs), max(2, min_values), "subgroup_capability")
    sigma = sigma_rbar(groups) if method == "rbar" else sigma_sbar(groups)
    return _capability(xs, lsl=lsl, usl=usl, target=target, sigma_within=sigma, sigma_method=method)


# -- control limits -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ControlLimits:
    """Individuals-chart (I-MR) limits: centre +/- k sigma. Not tolerance limits.

    Build from a stable baseline with :meth:`from_baseline`, or directly from configured
    ``centre`` and ``sigma`` (limits frozen after a capability study are usually kept in
    configuration so that they do not drift with the process they are meant to watch).
    """

    centre: float
    sigma: float

    def __post_init__(self) -> None:
        centre, sigma = float(self.centre), float(self.sigma)
        if not math.isfinite(centre):
            raise ValueError(f"control limits: centre must be finite, got {centre!r}")
        if not math.isfinite(sigma) or sigma <= 0:
            # A zero-width chart would flag every point that differs from the centre.
            raise ValueError(f"control limits: sigma must be finite and > 0, got {sigma!r}")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "sigma", sigma)

    @classmethod
    def from_baseline(cls, values: Iterable[Number], *, min_values: int = 2) -> ControlLimits:
        """centre = mean of the baseline, sigma = MRbar / 1.128.

        The baseline must come from a period the process was stable; a baseline that
        contains the shift you want to detect widens the limits until it is invisible.
        """
        xs = _floats(values, "control limits baseline")
        _require(len(xs), max(2, min_values), "control limits baseline")
        sigma = sigma_individuals(xs)
        if sigma == 0:
            raise ValueError("control limits baseline has zero spread (all values equal); sigma cannot be estimated")
        return cls(centre=statistics.fmean(xs), sigma=sigma)

    def boundary(self, k: int) -> float:
        """centre + k sigma, for k in -3..3 (k = +/-3 are the control limits)."""
        return self.centre + k * self.sigma

    @property
    def ucl(self) -> float:
        return self.boundary(3)

    @property
    def lcl(self) -> float:
        return self.boundary(-3)

    @property
    def upper_2sigma(self) -> float:
        return self.boundary(2)

    @property
    def lower_2sigma(self) -> float:
        return self.boundary(-2)

    @property
    def upper_1sigma(self) -> float:
        return self.boundary(1)

    @property
    def lower_1sigma(self) -> float:
        return self.boundary(-1)

    @property
    def boundaries(self) -> tuple[float, ...]:
        """(LCL, -2 sigma, -1 sigma, centre, +1 sigma, +2 sigma, UCL)."""
        return tuple(self.boundary(k) for k in range(-3, 4))

    @property
    def mr_bar(self) -> float:
        """Centre line of the moving-range chart: d2(2) sigma."""
        return D2[2] * self.sigma

    @property
    def mr_ucl(self) -> float:
        """Upper limit of the moving-range chart: D4(2) MRbar (its lower limit is 0)."""
        return _D4_2 * self.mr_bar

    def zone(self, value: float) -> int:
        """Signed zone: 0 within 1 sigma (boundary included), +/-1 beyond 1, +/-2 beyond 2, +/-3 beyond 3."""
        c, s = self.centre, self.sigma
        if value > c + s:
            return 3 if value > c + 3 * s else 2 if value > c + 2 * s else 1
        if value < c - s:
            return -3 if value < c - 3 * s else -2 if value < c - 2 * s else -1
        return 0


# -- rules --------------------------------------------------------------------------------
RULE_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "one point beyond 3 sigma",
        2: "{run} points in a row on one side of the centre line",
        3: "six points in a row steadily rising or falling",
        4: "fourteen points in a row alternating up and down",
        5: "two of three points beyond 2 sigma on the same side",
        6: "four of five points beyond 1 sigma on the same side",
        7: "fifteen points in a row within 1 sigma",
        8: "eight points in a row beyond 1 sigma on either side",
    }
)
# The fewest points a rule can fire on (rule 2: its configured run length).
RULE_POINTS: Final[Mapping[int, int]] = MappingProxyType({1: 1, 3: 6, 4: 14, 5: 2, 6: 4, 7: 15, 8: 8})
_RUN_WORDS: Final = {8: "eight", 9: "nine"}
_WINDOW: Final = 15  # the longest pattern (rule 7)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Which Nelson rules to check, and the run length of rule 2 (8 or 9)."""

    rules: frozenset[int]
    run_length: int = 9

    def __post_init__(self) -> None:
        rules = self.rules
        bad = sorted(r for r in rules if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 8)
        if bad:
            raise ValueError(f"rule numbers must be 1..8, got {bad!r}")
        if not rules:
            raise ValueError("a rule set needs at least one rule")
        if self.run_length not in _RUN_WORDS:
            raise ValueError(f"rule 2 run length must be 8 or 9, got {self.run_length!r}")
        object.__setattr__(self, "rules", frozenset(rules))

    @classmethod
    def western_electric(cls) -> RuleSet:
        return cls(frozenset({1, 2, 5, 6}), run_length=8)

    @classmethod
    def nelson(cls) -> RuleSet:
        return cls(frozenset(range(1, 9)), run_length=9)

    @classmethod
    def parse(cls, spec: str | Iterable[int] | None = None, *, run_length: int | None = None) -> RuleSet:
        """From configuration: a set name ("western_electric", "nelson"), a list of rule
        numbers, or None for the default (Western Electric). ``run_length`` overrides the
        set's rule-2 run; a bare list of rule numbers means Nelson's rules, so 9 by default.
        """
        if spec is None:
            spec = "western_electric"
        if isinstance(spec, str):
            named = {"western_electric": cls.western_electric, "nelson": cls.nelson}
            if spec not in named:
                raise ValueError(
                    f"unknown rule set {spec!r}; expected one of {sorted(named)} or a list of rule numbers"
                )
            base = named[spec]()
            return base if run_length is None else cls(base.rules, run_length=run_length)
        return cls(frozenset(spec), run_length=9 if run_length is None else run_length)

    def name(self, rule: int) -> str:
        return RULE_NAMES[rule].format(run=_RUN_WORDS[self.run_length])

    def min_points(self, rule: int) -> int:
        return self.run_length if rule == 2 else RULE_POINTS[rule]


WESTERN_ELECTRIC: Final = RuleSet.western_electric()
NELSON: Final = RuleSet.nelson()


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule fired on one point.

    ``index`` is the point that completed the pattern; ``indices``/``values`` are the
    points that form it: the whole run for rules 2, 3, 4, 7, 8 (the last N points when a
    run is longer), the points beyond the zone on that side for rules 5 and 6, the point
    itself for rule 1.
    """

    rule: int
    name: str
    index: int
    indices: tuple[int, ...]
    values: tuple[float, ...]


class RuleChecker:
    """Incremental run-rule check: feed one value at a time, get the rules the new point fires.

    O(1) state per rule (run counters) plus a bounded window of the last 15 points, so
    the cost per value does not grow with history. The limits are fixed for the checker's
    life: after recalculating limits, start a new checker.
    """

    __slots__ = (
        "_alt",
        "_beyond_run",
        "_down",
        "_index",
        "_last_step",
        "_limits",
        "_names",
        "_prev",
        "_rule_set",
        "_rules",
        "_side",
        "_side_run",
        "_up",
        "_values",
        "_within_run",
        "_zones",
    )

    def __init__(self, limits: ControlLimits, rules: RuleSet | None = None, *, start_index: int = 0) -> None:
        self._limits = limits
        self._rule_set = WESTERN_ELECTRIC if rules is None else rules
        self._rules = tuple(sorted(self._rule_set.rules))
        self._names = {r: self._rule_set.name(r) for r in self._rules}
        self._index = start_index
        self._values: deque[float] = deque(maxlen=_WINDOW)
        self._zones: deque[int] = deque(maxlen=5)
        self._prev: float | None = None
        # run lengths in points: same side, rising, falling, alternating, within/beyond 1 sigma
        self._side = self._side_run = self._up = self._down = self._alt = 0
        self._last_step = self._within_run = self._beyond_run = 0
        self.reset()

    @property
    def limits(self) -> ControlLimits:
        return self._limits

    @property
    def rule_set(self) -> RuleSet:
        return self._rule_set

    @property
    def next_index(self) -> int:
        """The index the next value will get."""
        return self._index

    def reset(self) -> None:
        """Forget the pattern history (e.g. after a tool change) but keep counting indices,
        so that no pattern spans the break."""
        self._values.clear()
        self._zones.clear()
        self._prev = None
        self._side = self._side_run = self._up = self._down = self._alt = 0
        self._last_step = self._within_run = self._beyond_run = 0

    def update(self, value: Number) -> list[Violation]:  # noqa: C901 - one branch per run rule, in rule-number order, on every point
        """Feed one value; the violations the new point fires, in rule-number order."""
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"SPC value must be a finite number, got {x!r}")
        i = self._index
        self._index += 1
        centre = self._limits.centre
        z = self._limits.zone(x)
        self._values.append(x)
        self._zones.append(z)

        side = 1 if x > centre else -1 if x < centre else 0
        self._side_run = 0 if side == 0 else self._side_run + 1 if side == self._side else 1
        self._side = side

        prev = self._prev
        step = 0 if prev is None or x == prev else 1 if x > prev else -1
        if prev is None:
            self._up = self._down = self._alt = 1
        else:
            self._up = self._up + 1 if step > 0 else 1
            self._down = self._down + 1 if step < 0 else 1
            if step == 0:
                self._alt = 1
            elif self._last_step != 0 and step != self._last_step:
                self._alt += 1
            else:
                self._alt = 2
        self._last_step = step
        self._prev = x

        if z == 0:
            self._within_run += 1
            self._beyond_run = 0
        else:
            self._within_run = 0
            self._beyond_run += 1

        fired: list[Violation] = []
        for rule in self._rules:
            if rule == 1:
                hit = abs(z) == 3
                n = 1
            elif rule == 2:
                n = self._rule_set.run_length
                hit = self._side_run >= n
            elif rule == 3:
                n = 6
                hit = self._up >= n or self._down >= n
            elif rule == 4:
                n = 14
                hit = self._alt >= n
            elif rule == 5:
                if abs(z) >= 2:
                    fired_k = self._k_of_m(i, z, level=2, window=3, k=2)
                    if fired_k is not None:
                        fired.append(fired_k)
                continue
            elif rule == 6:
                if abs(z) >= 1:
                    fired_k = self._k_of_m(i, z, level=1, window=5, k=4)
                    if fired_k is not None:
                        fired.append(fired_k)
                continue
            elif rule == 7:
                n = 15
                hit = self._within_run >= n
            else:
                n = 8
                hit = self._beyond_run >= n
            if hit:
                fired.append(self._run(rule, i, n))
        return fired

    def _run(self, rule: int, i: int, n: int) -> Violation:
        values = tuple(self._values)[-n:]
        return Violation(rule, self._names[rule], i, tuple(range(i - n + 1, i + 1)), values)

    def _k_of_m(self, i: int, z: int, *, level: int, window: int, k: int) -> Violation | None:
        sign = 1 if z > 0 else -1
        zones = tuple(self._zones)[-window:]
        first = i - len(zones) + 1
        hits = [first + j for j, zz in enumerate(zones) if sign * zz >= level]
        if len(hits) < k:
            return None
        values = tuple(self._values)
        # _values is at least as long as _zones, so index from its end
        vals = tuple(values[h - i - 1] for h in hits)
        rule = 5 if level == 2 else 6
        return Violation(rule, self._names[rule], i, tuple(hits), vals)


def check_series(values: Iterable[Number], limits: ControlLimits, rules: RuleSet | None = None) -> list[Violation]:
    """Every violation in a series, ordered by point then rule; the same as feeding a
    :class:`RuleChecker` one value at a time."""
    checker = RuleChecker(limits, rules)
    out: list[Violation] = []
    for v in values:
        out.extend(checker.update(v))
    return out
