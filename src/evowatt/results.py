"""A finished (or running) run's trade-off for the user: its front, and the best model within a budget.

Reads the store only (no torch). The front of a Pareto or random run is the one its last generation
recorded; for an ES run it is computed from all its evaluations with the config's objectives. Objectives
are on evo_test; the test accuracy is reported beside them, never selected on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evowatt.config import Constraint, RunConfig, validate_config
from evowatt.errors import EvowattError
from evowatt.records import EvalResult
from evowatt.search.front import EXITS, constrained_ranks, minimisation, points_of, with_floors
from evowatt.store import SEARCHED, RunStore


@dataclass
class FrontModel:
    """One model (an evaluation's exit) with its figures, each with its method."""

    id: int
    exit: str  # "0" the full model, "1" the early exit
    kind: str
    generation: int | None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # bare names, this exit's values

    def value(self, name: str) -> float | None:
        metric = self.metrics.get(name)
        return None if metric is None or metric.get("value") is None else float(metric["value"])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exit": self.exit,
            "kind": self.kind,
            "generation": self.generation,
            "metrics": self.metrics,
        }


def _model(row: dict[str, Any], exit_: str) -> FrontModel:
    suffix = EXITS[exit_]
    metrics = {}
    for name, metric in (row.get("metrics") or {}).items():
        if suffix and name.endswith(suffix):
            metrics[name[: -len(suffix)]] = metric
        elif not suffix and not name.endswith("_1"):
            metrics[name] = metric
    return FrontModel(row["id"], exit_, row["kind"], row.get("generation"), metrics)


def run_config(store: RunStore) -> RunConfig:
    recorded = store.meta("config")
    if recorded is None:
        raise EvowattError(f"{store.dir} holds no recorded config; it was not written by `evowatt run`")
    return validate_config(recorded, source=f"the recorded config of {store.dir}")


def front(run_dir: str | Path) -> list[FrontModel]:
    """The run's non-dominated feasible models, the most accurate (first objective) first."""
    store = RunStore(run_dir)
    try:
        config = run_config(store)
        rows = {r["id"]: r for r in store.evaluations(f"WHERE {SEARCHED}")}
        generations = store.generations()
        recorded = generations[-1]["front"] if generations and config.search.algorithm != "es" else None
    finally:
        store.close()
    if recorded is not None:
        models = [_model(rows[p["id"]], p["exit"]) for p in recorded if p["id"] in rows]
    else:
        models = _nondominated(list(rows.values()), config)
    first = config.search.objectives[0]
    sign = -1.0 if first.objective == "maximize" else 1.0
    return sorted(models, key=lambda m: (sign * (m.value(first.metric) or 0.0), m.id, m.exit))


def _nondominated(rows: list[dict[str, Any]], config: RunConfig) -> list[FrontModel]:
    objectives, constraints = config.search.objectives, config.search.constraints
    where, values, violations = [], [], []
    for row in rows:
        points, _ = points_of(EvalResult.from_json(row), objectives, constraints)
        for exit_, point in sorted(points.items()):
            where.append((row, exit_))
            values.append(point["values"])
            violations.append(point["violation"])
    if not where:
        return []
    violations = with_floors(values, violations, objectives, constraints)
    ranks = constrained_ranks(minimisation(values, objectives), violations)
    return [
        _model(row, e) for (row, e), r, v in zip(where, ranks, violations, strict=True) if r == 0 and v == 0
    ]


def pick(run_dir: str | Path, *budgets: str) -> FrontModel | None:
    """The most accurate model (evo_test) of all the run evaluated that meets the run's constraints and
    every budget ("energy < 2e-6", "params < 50000"); None when none does."""
    wanted = [_budget(b) for b in budgets]
    store = RunStore(run_dir)
    try:
        config = run_config(store)
        rows = store.evaluations(f"WHERE {SEARCHED} AND status = 'ok'")
    finally:
        store.close()
    # a floor relative to the best network leaves the most accurate one in: the user's budgets decide
    limits = [*(c for c in config.search.constraints if not c.relative), *wanted]
    best: FrontModel | None = None
    for row in rows:
        result = EvalResult.from_json(row)
        for exit_ in EXITS:
            model = _model(row, exit_)
            accuracy = model.value("accuracy")
            if accuracy is None or (exit_ == "1" and "accuracy_1" not in result.metrics):
                continue
            if all(_holds(model.value(c.metric), c) for c in limits) and (
                best is None or accuracy > (best.value("accuracy") or 0.0)
            ):
                best = model
    return best


def _budget(text: str) -> Constraint:
    try:
        budget = Constraint.model_validate(text)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise EvowattError(f"budget {text!r}: {problem}") from None
    if budget.relative:
        raise EvowattError(f"budget {text!r}: a budget is a fixed bound, e.g. 'energy < 2e-6'")
    return budget


def _holds(value: float | None, constraint: Constraint) -> bool:
    if value is None:
        return False
    return value < constraint.value if constraint.type == "less_than" else value > constraint.value
