"""Exact unit conversion for the units gauges and scales report.

Factors are exact decimals (the inch is defined as 25.4 mm), so converting never adds
binary rounding error. Only units of the same dimension convert; anything else is a
:class:`~collector.errors.SpecificationError`.
"""

from __future__ import annotations

from decimal import Decimal

from collector.errors import SpecificationError

# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, Decimal]] = {
    "mm": ("length", Decimal(1)),
    "um": ("length", Decimal("0.001")),
    "µm": ("length", Decimal("0.001")),
    "cm": ("length", Decimal(10)),
    "m": ("length", Decimal(1000)),
    "in": ("length", Decimal("25.4")),
    "inch": ("length", Decimal("25.4")),
    "mil": ("length", Decimal("0.0254")),
    "mg": ("mass", Decimal("0.001")),
    "g": ("mass", Decimal(1)),
    "kg": ("mass", Decimal(1000)),
    "lb": ("mass", Decimal("453.59237")),
    "oz": ("mass", Decimal("28.349523125")),
    "N": ("force", Decimal(1)),
    "kN": ("force", Decimal(1000)),
    "Nm": ("torque", Decimal(1)),
    "deg": ("angle", Decimal(1)),
    "°": ("angle", Decimal(1)),
}


def known(unit: str) -> bool:
    return unit in _UNITS


def dimension(unit: str) -> str:
    try:
        return _UNITS[unit][0]
    except KeyError:
        raise SpecificationError(f"unknown unit {unit!r}") from None


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """Convert exactly; identical units return ``value`` untouched (no re-quantising)."""
    if from_unit == to_unit:
        return value
    try:
        dim_from, f_from = _UNITS[from_unit]
        dim_to, f_to = _UNITS[to_unit]
    except KeyError as exc:
        raise SpecificationError(f"unknown unit {exc.args[0]!r}") from None
    if dim_from != dim_to:
        raise SpecificationError(f"cannot convert {from_unit} ({dim_from}) to {to_unit} ({dim_to})")
    return value * f_from / f_to
