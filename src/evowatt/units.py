"""Formatting of physical values for people: energies span pJ to J between networks."""

from __future__ import annotations

import math
import re

_PREFIXES = (
    (1e9, "G"),
    (1e6, "M"),
    (1e3, "k"),
    (1.0, ""),
    (1e-3, "m"),
    (1e-6, "µ"),
    (1e-9, "n"),
    (1e-12, "p"),
)


def format_si(value: float, unit: str) -> str:
    """3 significant digits with an SI prefix: energies span pJ to J between networks."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


class UnitError(ValueError):
    """A number whose unit does not fit its metric (``latency < 3nJ``), as against no number at all."""


# SI prefixes a user may write: "u" is how a keyboard without µ writes micro (µ U+00B5 and μ U+03BC both)
# (powers of ten, so that 300nJ is 300 / 1e9 = 3e-07 exactly, not 300 * 1e-9)
_PARSE_PREFIXES = {"p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}
# the base unit of each metric a bound may carry a unit on; counts take a bare k / M / G multiplier
METRIC_UNITS = {"energy": "J", "power": "W", "latency": "s", "params": "", "flops": ""}
_NUMBER = re.compile(r"\s*([+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S*)\s*")
_EXAMPLES = {"J": ("300nJ", "2uJ"), "W": ("3W", "500mW"), "s": ("2ms", "500us"), "": ("50k", "1.5M")}


def parse_quantity(text: str, metric: str) -> float:
    """A bound as the user writes it ("300nJ", "2 µJ", "500us", "50k", "5e-6") in ``metric``'s base unit
    (J, W, s, a count): budgets read like the figures `evowatt show` prints. A unit that does not fit the
    metric (``latency < 3nJ``) is a UnitError naming the units it takes."""
    try:
        return float(text)  # also inf, which a regular expression of units would not read
    except ValueError:
        pass
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a number")
    value = float(match.group(1).replace(" ", ""))
    suffix = match.group(2)
    if not suffix:
        return value
    base = metric.removesuffix("_0").removesuffix("_1")
    unit = METRIC_UNITS.get(base)
    if unit is None:
        raise UnitError(f"{base} takes a plain number, not a unit ({suffix!r})")
    prefix = suffix[: len(suffix) - len(unit)] if suffix.endswith(unit) else None
    power = _PARSE_PREFIXES.get(prefix) if prefix is not None else None
    if power is None or (not unit and power < 0):
        what = f"{unit} with an SI prefix" if unit else "a plain count or one with k, M or G"
        one, other = _EXAMPLES[unit]
        raise UnitError(
            f"{suffix!r} is not a unit of {base}: write {what}, e.g. '{base} < {one}' or '{other}'"
        )
    return value * 10**power if power >= 0 else value / 10**-power
