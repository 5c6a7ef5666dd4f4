"""A finished (or running) run's trade-off for the user: its front, and the best model within a budget.

Reads the store only (no torch). The front of a Pareto or random run is the one its last generation
recorded; for an ES run it is computed from all its evaluations with the config's objectives. Objectives
are on evo_test; the test accuracy is reported beside them, never selected on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evowatt.config.load import validate_config
from evowatt.config.schema import RunConfig
from evowatt.config.search import Constraint
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.records import Status
from evowatt.representation.genome import Genome
from evowatt.search.front import EXITS, constrained_ranks, minimisation, violation, with_floors


@dataclass
class FrontModel:
    """One model (an evaluation's exit) with its figures, each with its method.

    ``trained`` says which weights it stands for: ``final`` (the final training of the network the search
    found at ``source``) or ``search`` (the search's own evaluation).
    """

    id: int
    exit: str  # "0" the full model, "1" the early exit
    kind: str
    generation: int | None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # bare names, this exit's values
    trained: str = "search"
    source: int | None = None  # for a final-trained model, the search's evaluation it continued
    network: str = field(default="", repr=False, compare=False)  # Genome.network_key: one per network

    def value(self, name: str) -> float | None:
        metric = self.metrics.get(name)
        return None if metric is None or metric.get("value") is None else float(metric["value"])

    @property
    def label(self) -> str:
        """How the terminal, the report and the export name it: ``#48`` or ``#48 exit 1``."""
        return f"#{self.id}" + (f" exit {self.exit}" if self.exit != "0" else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exit": self.exit,
            "kind": self.kind,
            "generation": self.generation,
            "trained": self.trained,
            "source": self.source,
            "metrics": self.metrics,
        }


def _model(row: Evaluation, exit_: str) -> FrontModel:
    suffix = EXITS[exit_]
    metrics = {}
    for name, metric in row.metrics.items():
        if suffix and name.endswith(suffix):
            metrics[name[: -len(suffix)]] = metric
        elif not suffix and not name.endswith("_1"):
            metrics[name] = metric
    final = row.kind == "final"
    return FrontModel(
        row.id,
        exit_,
        row.kind,
        row.generation,
        metrics,  # type: ignore[arg-type]
        trained="final" if final else "search",
        source=row.parent_id if final else None,
        network=Genome.from_json(row.genome).network_key(),
    )


def run_config(store: RunStore) -> RunConfig:
    recorded = store.meta("config")
    if recorded is None:
        raise EvowattError(f"{store.dir} holds no recorded config; it was not written by `evowatt run`")
    return validate_config(recorded, source=f"the recorded config of {store.dir}", recorded=True)


@dataclass
class _Run:
    config: RunConfig
    searched: dict[int, Evaluation]  # the search's own ok evaluations
    finals: list[Evaluation]  # the final trainings, ok
    recorded: list[dict[str, Any]] | None  # the last generation's front (a population search)


def _read(run_dir: str | Path) -> _Run:
    store = RunStore(run_dir)
    try:
        config = run_config(store)
        searched = {r.id: r for r in store.searched(Status.OK)}
        finals = store.finals(Status.OK)
        generations = store.generations()
        recorded = generations[-1].front if generations and config.search.algorithm != "es" else None
    finally:
        store.close()
    return _Run(config, searched, finals, recorded)


def _exits(row: Evaluation) -> list[str]:
    return [e for e in EXITS if e == "0" or "accuracy_1" in row.metrics]


def _accuracy(model: FrontModel, config: RunConfig) -> float:
    """The first objective in maximisation form (accuracy by default): what "most accurate" ranks by."""
    first = config.search.objectives[0]
    value = model.value(first.metric)
    if value is None or value != value:
        return -math.inf
    return value if first.objective == "maximize" else -value


def _best_trained(models: list[FrontModel], config: RunConfig) -> list[FrontModel]:
    """One model per network and exit, at its best-trained weights: the final training's where the
    network has one (the latest), else the search's most accurate evaluation of it (the latest of equals).
    Models equal in every objective, parameters and FLOPs count once (an exit at the last layer is the full
    model; two networks may share an early exit)."""
    chosen: dict[tuple[str, str], FrontModel] = {}
    for model in models:
        key = (model.network, model.exit)
        held = chosen.get(key)
        rank = (model.trained == "final", _accuracy(model, config), model.id)
        if held is None or rank > (held.trained == "final", _accuracy(held, config), held.id):
            chosen[key] = model
    # one model in figures is one model to the user, whichever network it came from: the early exits of
    # two networks that differ only after the partition point are the same layers and head
    distinct: dict[tuple, FrontModel] = {}
    names = [*dict.fromkeys([*(o.metric for o in config.search.objectives), "params", "flops"])]
    ranked = sorted(chosen.values(), key=lambda m: (m.trained != "final", m.id, m.exit))
    for model in ranked:
        distinct.setdefault(tuple(model.value(n) for n in names), model)  # final-trained, then the first
    return list(distinct.values())


def _pool(run: _Run, rows: list[tuple[Evaluation, str]]) -> list[FrontModel]:
    """The given (row, exit) models with every final training added, at their best-trained weights."""
    models = [_model(row, exit_) for row, exit_ in rows]
    models += [_model(row, exit_) for row in run.finals for exit_ in _exits(row)]
    return _best_trained(models, run.config)


def _nondominated(models: list[FrontModel], config: RunConfig) -> list[FrontModel]:
    """The feasible models no other model dominates, on the run's objectives and constraints (relative
    floors fixed by this pool)."""
    objectives, constraints = config.search.objectives, config.search.constraints
    fixed = [c for c in constraints if not c.relative]
    where, values, violations = [], [], []
    for model in models:
        point = [model.value(o.metric) for o in objectives]
        bounds = [model.value(c.metric) for c in fixed]
        if any(v is None or v != v for v in point) or any(b is None for b in bounds):
            continue
        where.append(model)
        values.append(point)
        violations.append(sum(violation(b, c) for b, c in zip(bounds, fixed, strict=True)))
    if not where:
        return []
    violations = with_floors(values, violations, objectives, constraints)
    ranks = constrained_ranks(minimisation(values, objectives), violations)
    return [m for m, r, v in zip(where, ranks, violations, strict=True) if r == 0 and v == 0]


def _ordered(models: list[FrontModel], config: RunConfig) -> list[FrontModel]:
    return sorted(models, key=lambda m: (-_accuracy(m, config), m.id, m.exit))


def front(run_dir: str | Path) -> list[FrontModel]:
    """The run's front, the most accurate (first objective) first: distinct networks only, each at its
    best-trained weights (final-trained where it has them), feasible and never dominated.

    It is the one front every view shows (``show``, ``show --front``, ``export --front``, the report, the
    Python API). Its candidates are the search's last front (a population search keeps the weights of
    exactly those) or, for the ES, every evaluation, and every final training."""
    run = _read(run_dir)
    if run.recorded is not None:
        rows = [(run.searched[p["id"]], p["exit"]) for p in run.recorded if p["id"] in run.searched]
    else:
        rows = [(row, exit_) for row in run.searched.values() for exit_ in _exits(row)]
    return _ordered(_nondominated(_pool(run, rows), run.config), run.config)


def pick(run_dir: str | Path, *budgets: str) -> FrontModel | None:
    """The most accurate model (evo_test) of all the run evaluated, at its best-trained weights, that
    meets the run's fixed constraints and every budget ("energy < 2e-6", "params < 50000"); None when
    none does."""
    wanted = [parse_budget(b) for b in budgets]
    run = _read(run_dir)
    # a floor relative to the best network leaves the most accurate one in: the user's budgets decide
    limits = [*(c for c in run.config.search.constraints if not c.relative), *wanted]
    rows = [(row, exit_) for row in run.searched.values() for exit_ in _exits(row)]
    models = [m for m in _pool(run, rows) if m.value("accuracy") is not None]
    fitting = [m for m in models if all(_holds(m.value(c.metric), c) for c in limits)]
    return max(fitting, key=lambda m: (m.value("accuracy") or 0.0, m.trained == "final", -m.id), default=None)


def answer(run_dir: str | Path, *budgets: str) -> FrontModel | None:
    """The model to take: the front's most accurate model within every budget (by default the most
    accurate model that meets every constraint, after its final training); where no front model fits the
    budgets, the most accurate of all the run evaluated that does (``pick``). The ES hands over one model
    by its fitness: its best individual, after its final training where it has one."""
    wanted = [parse_budget(b) for b in budgets]
    if not budgets:
        handed = _es_answer(run_dir)
        if handed is not None:
            return handed
    models = [m for m in front(run_dir) if all(_holds(m.value(c.metric), c) for c in wanted)]
    if models:
        return max(models, key=lambda m: (m.value("accuracy") or 0.0, m.trained == "final", -m.id))
    return pick(run_dir, *budgets) if budgets else None


def _es_answer(run_dir: str | Path) -> FrontModel | None:
    """An ES run's handed model: the final training of its best individual, else that individual (the
    exit its fitness is written on); None for a population search or before a generation ended."""
    run = _read(run_dir)
    if run.config.search.algorithm != "es":
        return None
    store = RunStore(run_dir)
    try:
        generations = store.generations()
    finally:
        store.close()
    best = generations[-1].best_id if generations else None
    if best is None or best not in run.searched:
        return None
    used = run.config.fitness.metrics_used()
    exit_ = "1" if used and all(m.endswith("_1") for m in used) else "0"
    trained = [f for f in run.finals if f.parent_id == best]
    row = trained[-1] if trained else run.searched[best]
    return _model(row, exit_ if exit_ in _exits(row) else "0")


def parse_budget(text: str) -> Constraint:
    try:
        budget = Constraint.model_validate(text)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise EvowattError(f"budget {text!r}: {problem}") from None
    if budget.relative:
        raise EvowattError(f"budget {text!r}: a budget is a fixed bound, e.g. 'energy < 2e-6'")
    return budget


_budget = parse_budget  # the name an earlier release used


def profile_drift(rows: list[Evaluation]) -> list[str]:
    """What ``energy.check_every`` found: per predicted figure, how many models were also measured, the
    median absolute error of the calibrated profile and the share within ±10 %; empty without checks."""
    errors: dict[str, list[float]] = {}
    for row in rows:
        for name in row.metrics:
            target = name.removesuffix("_1")
            if target.endswith("_error") and (value := row.metric(name)) is not None:
                errors.setdefault(target.removesuffix("_error"), []).append(abs(value))
    lines = []
    for target, values in sorted(errors.items()):
        values.sort()
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        within = sum(v <= 0.10 for v in values) / len(values)
        lines.append(
            f"{target}: {len(values)} models measured as well, median error {median:.1%}, "
            f"{within:.0%} within ±10 %"
        )
    return lines


def _holds(value: float | None, constraint: Constraint) -> bool:
    if value is None:
        return False
    return value < constraint.value if constraint.type == "less_than" else value > constraint.value
