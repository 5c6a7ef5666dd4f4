"""Fitness of an evaluation result; invalid networks have none and rank below every valid one.

F = sum(w * m) over maximised terms + sum(w / m) over minimised terms; a term counts only while all its
conditions hold. Metric names: the bare name (or ``_0``) is the full model, ``_1`` the partition model.
"""

from __future__ import annotations

from typing import Any

from evowatt.config.search import FitnessConfig
from evowatt.records import EvalResult

Result = EvalResult | dict[str, Any]


def metric_value(result: Result, name: str) -> float | None:
    """A metric's value from a result's metrics; ``x_0`` is the full model, stored under ``x``."""
    return EvalResult.coerce(result).metric(name)


def score(result: Result, fitness: FitnessConfig) -> tuple[float | None, str | None]:
    """(fitness, None) or (None, the reason there is none)."""
    result = EvalResult.coerce(result)
    if not result.ok:
        return None, result.reason or result.status.value
    total = 0.0
    for term in fitness.resolved_terms():
        holds = True
        for condition in term.conditions:
            value = metric_value(result, condition.metric)
            if value is None:
                return None, f"metric {condition.metric} (in a condition) is missing"
            holds &= value > condition.value if condition.type == "greater_than" else value < condition.value
        if not holds:
            continue
        value = metric_value(result, term.metric)
        if value is None:
            return None, f"metric {term.metric} is missing"
        if term.objective == "maximize":
            total += term.weight * value
        elif value <= 0:
            return None, f"minimised metric {term.metric} is {value:g}, not positive"
        else:
            total += term.weight / value
    return total, None


def fitness_of(result: Result, fitness: FitnessConfig) -> float | None:
    return score(result, fitness)[0]


def rank_key(fitness: float | None) -> tuple[int, float]:
    """Sort key: every valid fitness above every missing one."""
    return (0, 0.0) if fitness is None else (1, fitness)
