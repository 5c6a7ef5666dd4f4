"""Fitness of an evaluation result; invalid networks have none and rank below every valid one."""

from __future__ import annotations

from typing import Any

from evowatt.config import FitnessConfig


def fitness_of(result: dict[str, Any], fitness: FitnessConfig) -> float | None:
    """The fitness of one evaluation (a result dict from ``evaluate``), or None when it has none.

    The accuracy-only baseline: evo_test accuracy. The test-set accuracy is never a fitness.
    """
    if result.get("status") != "ok":
        return None
    metric = result.get("metrics", {}).get(fitness.metric)
    if metric is None:
        return None
    value = metric["value"] if isinstance(metric, dict) else metric
    return None if value is None else float(value)


def rank_key(fitness: float | None) -> tuple[int, float]:
    """Sort key: every valid fitness above every missing one."""
    return (0, 0.0) if fitness is None else (1, fitness)
