"""How the search selects: the ``search`` section (algorithm, population, the Pareto objectives and
constraints, multi-fidelity screening) and the ``fitness`` the ES ranks by, with the metric names both
may use.

Its own module because these sections share one vocabulary of metrics and its rules (never select on the
test set; objectives and constraints name a metric, not an exit); search/fitness.py and search/front.py
import it without the training or loading code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evowatt.config.base import Strict
from evowatt.config.network import CapsConfig, MutationConfig
from evowatt.units import UnitError, parse_quantity

BASE_METRICS = ("accuracy", "loss", "energy", "power", "latency", "flops", "params")
HARDWARE_ONLY_METRICS = ("power",)


def metric_names() -> list[str]:
    """Metrics a fitness may use: the bare name (or _0) is the full model, _1 the partition model."""
    return [f"{m}{s}" for m in BASE_METRICS for s in ("", "_0", "_1")]


def _check_metric(name: str) -> str:
    if name.startswith("test_accuracy"):
        raise ValueError(
            "the test set is reported only and never used for selection; use 'accuracy' (evo_test)"
        )
    if name not in metric_names():
        raise ValueError(f"unknown metric '{name}'; available: {', '.join(metric_names())}")
    return name


class Objective(Strict):
    """One objective of the Pareto search, on each model exit (``accuracy`` is accuracy and accuracy_1)."""

    metric: str
    objective: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _bare(cls, value: str) -> str:
        return _check_exit_metric(value)


class Constraint(Strict):
    """``metric < value`` or ``metric > value`` on each exit; also written as the string "energy < 5e-6".

    ``relative``: the bound is ``value`` away from the best value of an objective among the networks being
    ranked ("accuracy > best - 0.01"), a floor that rises with the search and that the best network always
    meets, so the front never empties the way a fixed floor the search has not reached yet does.
    """

    metric: str
    type: Literal["greater_than", "less_than"]
    value: float
    relative: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_constraint(data)
        return data

    @field_validator("metric")
    @classmethod
    def _bare(cls, value: str) -> str:
        return _check_exit_metric(value)

    def text(self) -> str:
        sign = "<" if self.type == "less_than" else ">"
        if not self.relative:
            return f"{self.metric} {sign} {self.value:g}"
        return f"{self.metric} {sign} best {'-' if self.value < 0 else '+'} {abs(self.value):g}"

    def bound(self, best: float) -> Constraint:
        """This relative constraint as a fixed one, for a pool whose best value is ``best``."""
        return self.model_copy(update={"value": best + self.value, "relative": False})


def parse_constraint(text: str) -> dict[str, Any]:
    """ "energy < 5e-6" -> {metric, type, value}; "accuracy > best - 0.01" -> also relative: true (the
    value is the offset from the best); the error says the forms expected. A value may carry a unit that
    fits its metric ("energy < 300nJ", "latency < 2ms", "params < 50k"), converted to the base unit."""
    for sign, kind in (("<", "less_than"), (">", "greater_than")):
        if sign in text:
            name, _, raw = text.partition(sign)
            raw = raw.strip().lstrip("=").strip()
            relative = raw.startswith("best")
            offset = raw.removeprefix("best").replace(" ", "") if relative else raw
            try:
                value = parse_quantity(offset, name.strip()) if offset else 0.0
            except UnitError:
                raise  # the number is there, its unit does not fit: say so, not the forms expected
            except ValueError:
                break
            return {"metric": name.strip(), "type": kind, "value": value, "relative": relative}
    raise ValueError(
        f"constraint {text!r}: expected 'metric < value', 'metric > value' or a floor relative to the best "
        "network, 'metric > best - margin'; e.g. 'energy < 5e-6', 'energy < 300nJ', "
        "'accuracy > best - 0.01'"
    )


def _check_exit_metric(name: str) -> str:
    """Objective and constraint metrics name the metric, not the exit: every exit is its own point."""
    if name.endswith(("_0", "_1")):
        raise ValueError(
            f"'{name}': objectives and constraints apply to every exit; write '{name[:-2]}' (each exit of a "
            "partitioned network is its own point on the front)"
        )
    return _check_metric(name)


class FidelityConfig(Strict):
    """Successive halving within each generation: a short budget for all, longer ones for the best."""

    min_budget: float = Field(gt=0, description="rung 0's budget, in training.budget's unit (steps or s)")
    eta: int = Field(3, ge=2, description="each rung keeps 1/eta of the candidates, trained eta x longer")
    rungs: int = Field(3, ge=1, description="rungs per generation (1: every candidate on min_budget)")


class SearchConfig(Strict):
    algorithm: Literal["es", "pareto", "random"] = Field(
        "es", description="es: the paper's (1+λ)-ES on `fitness`; pareto: NSGA-II on `objectives`"
    )
    generations: int = Field(10, ge=0, description="generations after generation 0")
    lambda_: int = Field(4, ge=1, alias="lambda")
    population: int = Field(
        8, ge=1, description="pareto: survivors per generation (μ); also generation 0's size"
    )
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="accuracy", objective="maximize"),
            Objective(metric="energy", objective="minimize"),
        ],
        min_length=1,
        description="pareto and random: the objectives, each maximised or minimised; no weights",
    )
    constraints: list[Constraint] = Field(
        default_factory=list,
        description='pareto and random: e.g. ["energy < 300nJ", "latency < 2ms", "params < 100k"]',
    )
    survival: Literal["crowding", "hypervolume"] = Field(
        "crowding", description="pareto: how the last admitted front is cut (crowding distance or HV share)"
    )
    reference_point: dict[str, float] | None = Field(
        None, description="hypervolume reference per objective metric; default: fixed from generation 0"
    )
    time_limit: float | None = Field(None, gt=0, description="total wall-time budget in seconds")
    mutation: MutationConfig = MutationConfig()
    caps: CapsConfig = CapsConfig()
    archive_size: int = Field(100, ge=1, description="module archive bound; when full the costliest goes")
    fidelity: FidelityConfig | None = Field(
        None, description="multi-fidelity screening (successive halving); null: one budget for all"
    )
    inherit_weights: bool | None = Field(
        None,
        description="mutants start from their parent's trained weights for the layers the mutation left "
        "unchanged; unset = the algorithm's default (the ES: off, the paper's train-from-scratch)",
    )

    @model_validator(mode="after")
    def _objectives_fit(self) -> SearchConfig:
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives name a metric twice: {names}")
        unknown = sorted(set(self.reference_point or {}) - set(names))
        if unknown:
            raise ValueError(f"reference_point names {unknown}, which are not objectives ({names})")
        if self.reference_point is not None and len(self.reference_point) != len(names):
            raise ValueError(f"reference_point needs a value for every objective: {names}")
        directions = {o.metric: o.objective for o in self.objectives}
        for constraint in (c for c in self.constraints if c.relative):
            if constraint.metric not in directions:
                raise ValueError(
                    f"constraint {constraint.text()!r} is relative to the best {constraint.metric}, which "
                    f"is not an objective ({names}): add it to search.objectives or give a fixed bound"
                )
            loosens = (constraint.type == "greater_than") == (directions[constraint.metric] == "maximize")
            toward = constraint.value < 0 if constraint.type == "greater_than" else constraint.value > 0
            if not (loosens and toward):
                raise ValueError(
                    f"constraint {constraint.text()!r} would exclude the best network itself: a relative "
                    "bound lies on the worse side of the best, e.g. 'accuracy > best - 0.01' for a "
                    "maximised objective, 'energy < best + 1e-6' for a minimised one"
                )
        return self

    def inherits(self) -> bool:
        """Whether mutants inherit weights: ``inherit_weights``, or the algorithm's default when unset
        (on for the Pareto search, off for the ES and random search)."""
        if self.inherit_weights is not None:
            return self.inherit_weights
        return self.algorithm == "pareto"

    def metrics_used(self) -> set[str]:
        """Metrics the Pareto search reads (on each exit)."""
        return {o.metric for o in self.objectives} | {c.metric for c in self.constraints}


class Condition(Strict):
    """A term counts only while ``metric`` is greater (or less) than ``value``."""

    metric: str
    type: Literal["greater_than", "less_than"]
    value: float

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _check_metric(value)


class FitnessTerm(Strict):
    metric: str
    objective: Literal["maximize", "minimize"] = "maximize"
    weight: float = Field(1.0, gt=0)
    conditions: list[Condition] = []

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _check_metric(value)


class FitnessConfig(Strict):
    """F = sum(w * m) over maximised terms + sum(w / m) over minimised terms (ENERGIZE's form).

    ``metric: accuracy`` alone is the accuracy-only baseline; ``terms`` gives the weighted form.
    """

    metric: str | None = "accuracy"
    terms: list[FitnessTerm] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> FitnessConfig:
        if self.terms is not None:
            if not self.terms:
                raise ValueError("terms must hold at least one term")
            self.metric = None
        elif self.metric is None:
            raise ValueError("give 'metric' (e.g. accuracy) or a list of 'terms'")
        else:
            _check_metric(self.metric)
        return self

    def resolved_terms(self) -> list[FitnessTerm]:
        if self.terms is not None:
            return list(self.terms)
        metric = str(self.metric)
        objective = "maximize" if metric.startswith("accuracy") else "minimize"
        return [FitnessTerm(metric=metric, objective=objective)]

    def metrics_used(self) -> set[str]:
        used = set()
        for term in self.resolved_terms():
            used.add(term.metric)
            used.update(c.metric for c in term.conditions)
        return used
