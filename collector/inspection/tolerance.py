"""Judging a value against its characteristic's specification.

The rule, in the order applied:

1. The value is converted exactly to the characteristic's unit (``collector.inspection.units``).
2. The converted value is rounded to the characteristic's ``decimals`` with the
   characteristic's rounding rule (ISO 80000-1 half-even by default, or half-up). This
   is the *judged value*; the unrounded value is kept beside it in the record.
3. Limits are inclusive: ``lower <= judged <= upper`` passes. A missing limit (one-sided
   specification) does not constrain.

The value is never clamped or otherwise altered: a reading far outside the limits is
recorded exactly as measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Literal

from collector.errors import SpecificationError
from collector.inspection import units
from collector.inspection.models import Characteristic, Rounding, Verdict

_ROUNDING = {Rounding.HALF_EVEN: ROUND_HALF_EVEN, Rounding.HALF_UP: ROUND_HALF_UP}
_QUANTUM = [Decimal(1).scaleb(-n) for n in range(10)]


@dataclass(frozen=True, slots=True)
class Judgement:
    value: Decimal  # converted to the characteristic's unit, not rounded
    judged_value: Decimal  # rounded to the declared decimals
    deviation: Decimal | None  # judged_value - nominal
    verdict: Verdict
    limit: Literal["lower", "upper"] | None  # which limit was violated, if any


#: enough digits for any value a device can send (a float64 has 309 integer digits at most),
#: so converting and rounding never fails and never loses a digit
_EXACT = Context(prec=400, Emax=999_999, Emin=-999_999)


def round_to(value: Decimal, decimals: int, rounding: Rounding) -> Decimal:
    with localcontext(_EXACT):
        return value.quantize(_QUANTUM[decimals], rounding=_ROUNDING[rounding])


def judge(characteristic: Characteristic, value: Decimal, unit: str) -> Judgement:
    if not value.is_finite():
        raise SpecificationError(f"value {value} is not a finite number")
    if -12 <= value.adjusted() <= 12:
        # every real gauge value: at most 13 integer digits, and with the at most 9 decimals
        # and the unit factors' 11 digits the default 28-digit context is exact, so the hot
        # path skips setting up a wide one
        converted = units.convert(value, unit, characteristic.unit)
        judged = converted.quantize(_QUANTUM[characteristic.decimals], rounding=_ROUNDING[characteristic.rounding])
    else:
        with localcontext(_EXACT):
            converted = units.convert(value, unit, characteristic.unit)
        judged = round_to(converted, characteristic.decimals, characteristic.rounding)
    low, high = characteristic.lower_limit, characteristic.upper_limit
    limit: Literal["lower", "upper"] | None = None
    if low is not None and judged < low:
        limit = "lower"
    elif high is not None and judged > high:
        limit = "upper"
    nominal = characteristic.nominal
    # exact (the wide context), without entering a context per reading
    deviation = None if nominal is None else _EXACT.subtract(judged, nominal)
    return Judgement(
        value=converted,
        judged_value=judged,
        deviation=deviation,
        verdict=Verdict.PASS if limit is None else Verdict.FAIL,
        limit=limit,
    )
