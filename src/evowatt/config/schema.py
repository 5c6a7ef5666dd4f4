"""Run configuration: typed, validated, with messages that name the key and what is allowed.

One YAML or JSON file; ``--set a.b=value`` and ``--seed`` override it. Unknown keys are errors, so a
typo never silently falls back to a default. The resolved configuration is written into the run directory.
Options no measurement showed to help live under ``experimental``; a key that moved there is refused at
its old place with the new one named, except in a run's recorded config (config/moved.py).
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evowatt.config.moved import moved_key_lines, upgrade_recorded
from evowatt.energy.settings import EnergySettings
from evowatt.errors import EvowattError, require_file
from evowatt.units import UnitError, parse_quantity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatasetConfig(_Strict):
    """Which data; the training set is split into evo_train / evo_validation / evo_test."""

    name: Literal["digits", "fashion-mnist", "mnist", "cifar10", "npz", "folder"] = "digits"
    path: str | None = None
    train_subset: int | None = Field(None, gt=0, description="stratified subset of the training set")
    test_subset: int | None = Field(None, gt=0, description="stratified subset of the test set")
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    image_size: tuple[int, int] | None = Field(
        None, description="folder: the [height, width] every image is resized to (an int: a square)"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="folder: 1 (grey) or 3 (colour); unset: 1 where every image is grey, else 3"
    )

    @field_validator("splits")
    @classmethod
    def _splits_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("evo_train, evo_validation, evo_test fractions must be positive and sum to 1")
        return value

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= v <= 4096 for v in value):
            raise ValueError("height and width must be whole numbers from 1 to 4096, e.g. [32, 32]")
        return value

    @model_validator(mode="after")
    def _folder_options(self) -> DatasetConfig:
        if self.name == "folder":
            if self.path is None:
                raise ValueError("name: folder needs path: the folder holding one folder of images per class")
            if self.image_size is None:
                raise ValueError(
                    "name: folder needs image_size, the [height, width] every image is resized to, "
                    "e.g. image_size: [32, 32] (or 32 for a square)"
                )
        elif self.image_size is not None or self.channels is not None:
            raise ValueError(
                f"image_size and channels apply to name: folder only; {self.name} has its own: remove them"
            )
        return self


class ModuleConfig(_Strict):
    """One module: its type is a grammar start symbol."""

    name: str
    network_structure_init: list[int] = Field(min_length=1)
    network_structure: tuple[int, int]
    levels_back: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _init_within_bounds(self) -> ModuleConfig:
        low, high = self.network_structure
        if not 0 <= low <= high:
            raise ValueError(f"network_structure [{low}, {high}] must satisfy 0 <= min <= max")
        bad = [n for n in self.network_structure_init if not low <= n <= high]
        if bad:
            raise ValueError(
                f"network_structure_init values {bad} lie outside network_structure [{low}, {high}]"
            )
        return self


class NetworkConfig(_Strict):
    modules: list[ModuleConfig] = Field(min_length=1)
    output: str = "softmax"
    macro_structure: list[str] = ["learning"]
    reuse_layer: float = Field(
        0.15, ge=0, le=1, description="at initialisation: p that a layer copies an earlier one"
    )


class MutationConfig(_Strict):
    """ENERGIZE's default rates."""

    add_layer: float = Field(0.25, ge=0, le=1)
    reuse_layer: float = Field(0.15, ge=0, le=1)
    remove_layer: float = Field(0.25, ge=0, le=1)
    reuse_module: float = Field(0.15, ge=0, le=1)
    remove_module: float = Field(0.25, ge=0, le=1)
    dsge_layer: float = Field(0.15, ge=0, le=1)
    macro_layer: float = Field(0.3, ge=0, le=1)
    add_connection: float = Field(0.0, ge=0, le=1)
    remove_connection: float = Field(0.0, ge=0, le=1)
    train_longer: float = Field(0.2, ge=0, le=1)


class BudgetConfig(_Strict):
    """Training budget of one individual: seconds (clock checked every batch) or optimiser steps."""

    seconds: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        if (self.seconds is None) == (self.steps is None):
            raise ValueError("give exactly one of 'seconds' or 'steps'")
        return self


class CapsConfig(_Strict):
    """Networks above these are rejected before any weight is allocated."""

    max_params: int = Field(5_000_000, gt=0)
    max_flops: int = Field(2_000_000_000, gt=0, description="per inference; a multiply-add counts 2")


class Objective(_Strict):
    """One objective of the Pareto search, on each model exit (``accuracy`` is accuracy and accuracy_1)."""

    metric: str
    objective: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _bare(cls, value: str) -> str:
        return _check_exit_metric(value)


class Constraint(_Strict):
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


class FidelityConfig(_Strict):
    """Successive halving within each generation: a short budget for all, longer ones for the best."""

    min_budget: float = Field(gt=0, description="rung 0's budget, in training.budget's unit (steps or s)")
    eta: int = Field(3, ge=2, description="each rung keeps 1/eta of the candidates, trained eta x longer")
    rungs: int = Field(3, ge=1, description="rungs per generation (1: every candidate on min_budget)")


class SearchConfig(_Strict):
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


class AugmentConfig(_Strict):
    """Augmentation on tensors during the final training (off by default)."""

    shift: int = Field(0, ge=0, le=8, description="random shifts of up to this many pixels (0: none)")
    flip: bool = Field(False, description="mirror half the images left-right (not for digits or mnist)")


class LearningConfig(_Strict):
    """Learning genes the final training uses in place of the individual's evolved ones, which were
    chosen for the search's short trainings; each one unset keeps the evolved value."""

    learning: Literal["adam", "gradient_descent", "rmsprop"] | None = Field(
        None, description="the optimiser (with it, lr is required: the evolved one belongs to another)"
    )
    lr: float | None = Field(None, gt=0, description="the peak learning rate the schedule scales")
    batch_size: int | None = Field(None, ge=1)
    weight_decay: float | None = Field(None, ge=0)
    momentum: float | None = Field(None, ge=0, lt=1, description="gradient_descent's")

    @model_validator(mode="after")
    def _an_optimiser_brings_its_rate(self) -> LearningConfig:
        if self.learning is not None and self.lr is None:
            raise ValueError(
                f"learning: {self.learning} needs lr too (the evolved rate was another optimiser's)"
            )
        if self.momentum is not None and self.learning not in (None, "gradient_descent"):
            raise ValueError(f"momentum is gradient_descent's; {self.learning} has none (leave it unset)")
        return self

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ScreenConfig(_Strict):
    """A last look before the final budget is given out: the run's most promising networks trained a
    little on the final training's data, and the one that does best gets the final training."""

    models: int = Field(
        0,
        ge=0,
        description="how many networks (the ones the whole run ranked highest for the handover, each at "
        "its best evaluation, whether or not it is still in the population; 0: no screening)",
    )
    budget: BudgetConfig | None = Field(None, description="of each network's screening (needed with models)")

    @model_validator(mode="after")
    def _budget_with_models(self) -> ScreenConfig:
        if self.models and self.budget is None:
            raise ValueError("screening needs a budget: set screen.budget ({seconds: 60}), or models: 0")
        return self


class FinalTrainingConfig(_Strict):
    """Train the best genome again for a longer budget, reported separately."""

    budget: BudgetConfig | None = Field(None, description="of the most accurate model (unset: none)")
    models: int | Literal["all"] = Field(
        1,
        description="how many models the run hands over get a final training (most accurate first)",
    )
    others_budget: BudgetConfig | None = Field(
        None,
        description="of every model after the most accurate (unset: budget): a front's cheap models "
        "need less time than its most accurate one",
    )
    schedule: Literal["none", "cosine", "one_cycle"] = Field(
        "cosine", description="learning-rate schedule over the whole budget"
    )
    augment: AugmentConfig = AugmentConfig()
    early_stopping: bool = Field(
        False, description="stop on the evolved patience; off: the whole budget (the best weights kept)"
    )
    start_from: Literal["scratch", "search"] = Field(
        "search",
        description="the search's trained weights of the chosen individual (the default: +0.56 pp test "
        "accuracy on digits, bench/choices.py start), or fresh weights; search falls back to fresh "
        "weights when the individual has none kept",
    )
    train_subset: int | Literal["all"] | None = Field(
        None,
        description="training images for the final training: unset = the search's dataset.train_subset, "
        "'all' = the whole official training set (still split into evo_train, evo_validation, evo_test)",
    )
    learning: LearningConfig = Field(
        LearningConfig(),
        description="learning genes for the final training in place of the evolved ones (unset: evolved)",
    )
    train_on_validation: bool = Field(
        False,
        description="train on evo_validation too (a fifth more data, no validation pass per epoch) and "
        "keep the last weights; evo_test still scores the model. Needs early_stopping: false",
    )

    @model_validator(mode="after")
    def _validation_held_out_for_early_stopping(self) -> FinalTrainingConfig:
        if self.train_on_validation and self.early_stopping:
            raise ValueError(
                "train_on_validation trains on the split early stopping watches: set early_stopping: "
                "false, or train_on_validation: false"
            )
        return self

    @field_validator("models")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or 'all'")
        return value

    @field_validator("train_subset")
    @classmethod
    def _positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer, 'all', or unset")
        return value


class TrainingConfig(_Strict):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    budget: BudgetConfig = BudgetConfig(seconds=5)
    max_epochs: int = Field(10_000, gt=0)
    eval_batch_size: int = Field(1024, gt=0)
    threads: int | Literal["auto"] | None = Field(
        "auto",
        description="torch intra-op threads per evaluation: auto = the cores this process may use "
        "(affinity, cgroup quota) divided among the runner's workers; null = torch's own choice",
    )
    report_test: bool = Field(
        False,
        description="also score every evaluation on the test split (benchmarks); reported, never selected on",
    )

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer, 'auto', or null")
        return value

    final_training: FinalTrainingConfig = FinalTrainingConfig()


class ExperimentalFinalTrainingConfig(_Strict):
    """The final training's options that no measurement showed to help (docs/experimental.md)."""

    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="soften the training targets by this much (0: none); 0.1 lost 0.49 pp on Fashion-MNIST",
    )
    width: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="train the most accurate model this many times as wide as it was searched (every "
        "hidden layer's channels and units; from fresh weights when not 1). Its energy and FLOPs are the "
        "wide network's; search.caps still apply. Each step wider lost about half a point at 6 minutes",
    )
    others_width: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="the width of every model after the most accurate (unset: width)",
    )
    screen: ScreenConfig = Field(
        ScreenConfig(),
        description="before the final training, train the run's screen.models most promising networks "
        "for screen.budget each on the final training's data and give the final budget to the best of "
        "them (by the search's own ranking on evo_test), continuing from its screening's weights; it "
        "gained 0.94 pp on one seed and lost 0.75 pp on another",
    )

    def width_of(self, place: int) -> float:
        """The width of the ``place``-th handed model's final training (0: the most accurate)."""
        return self.width if place == 0 or self.others_width is None else self.others_width


class ExperimentalConfig(_Strict):
    """Options no measurement showed to help, each off by default. They stay for runs that test them
    again (their measurements: docs/experimental.md); the rest of the config is what evowatt supports."""

    resume_optimiser: bool = Field(
        False,
        description="a training that continues from earlier weights (a rung, train_longer, an inheriting "
        "mutant's shared layers, the final training from the search's weights) resumes that training's "
        "optimiser state instead of starting a fresh optimiser; -4.72 pp on digits, no gain elsewhere",
    )
    final_training: ExperimentalFinalTrainingConfig = ExperimentalFinalTrainingConfig()


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


class Condition(_Strict):
    """A term counts only while ``metric`` is greater (or less) than ``value``."""

    metric: str
    type: Literal["greater_than", "less_than"]
    value: float

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _check_metric(value)


class FitnessTerm(_Strict):
    metric: str
    objective: Literal["maximize", "minimize"] = "maximize"
    weight: float = Field(1.0, gt=0)
    conditions: list[Condition] = []

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return _check_metric(value)


class FitnessConfig(_Strict):
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


class OutputConfig(_Strict):
    dir: str = "runs"
    name: str | None = Field(None, description="run directory name; default: timestamp and seed")


class RunnerConfig(_Strict):
    """Where evaluations run: in this process (default, deterministic), a pool of worker processes, or a
    Ray cluster (``pip install 'evowatt[ray]'``)."""

    kind: Literal["sequential", "process", "ray"] = "sequential"
    workers: int = Field(2, ge=1, description="process pool size (kind: process)")
    address: str | None = Field(
        None,
        description="Ray cluster to connect to (kind: ray); default $RAY_ADDRESS, else a local Ray instance "
        "started for the run and stopped at its end",
    )
    cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per evaluation; also its torch threads")
    gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs Ray reserves per evaluation; default a whole GPU when training.device is cuda "
        "(energy readings are then not shared), none on cpu; a fraction shares a GPU and its meter",
    )
    retries: int = Field(
        2, ge=0, description="times an evaluation whose worker or node died is run again (kind: ray)"
    )
    data: Literal["object_store", "shared"] = Field(
        "object_store",
        description="how Ray workers get the dataset: once per run through Ray's object store, or each "
        "worker loads dataset.path itself (a path every node sees)",
    )


class RunConfig(_Strict):
    seed: int = Field(0, ge=0)
    minutes: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="the whole run's wall time, final training included; the plan fills what is unset",
    )
    grammar: str = "cnn"
    dataset: DatasetConfig = DatasetConfig()
    network: NetworkConfig
    search: SearchConfig = SearchConfig()
    training: TrainingConfig = TrainingConfig()
    fitness: FitnessConfig = FitnessConfig()
    output: OutputConfig = OutputConfig()
    runner: RunnerConfig = RunnerConfig()
    energy: EnergySettings = EnergySettings()
    experimental: ExperimentalConfig = ExperimentalConfig()

    def metrics_used(self) -> set[str]:
        """Metrics the chosen search selects on: the fitness's, or the objectives' and constraints'."""
        if self.search.algorithm == "es":
            return self.fitness.metrics_used()
        return self.search.metrics_used()

    @model_validator(mode="after")
    def _flips_only_where_the_classes_allow(self) -> RunConfig:
        if self.training.final_training.augment.flip and self.dataset.name in ("digits", "mnist"):
            raise ValueError(
                f"training.final_training.augment.flip mirrors images, which changes what a "
                f"{self.dataset.name} digit means; set it false (shift is fine)"
            )
        return self

    @model_validator(mode="after")
    def _screen_needs_a_final_training(self) -> RunConfig:
        if self.experimental.final_training.screen.models and self.training.final_training.budget is None:
            raise ValueError(
                "experimental.final_training.screen picks the network the final training trains, but "
                "training.final_training.budget is unset: set a budget, or screen.models: 0"
            )
        return self

    @model_validator(mode="after")
    def _partition_metrics_need_a_partition(self) -> RunConfig:
        wanted = sorted(m for m in self.fitness.metrics_used() if m.endswith("_1"))
        if wanted and "model_partition" not in self.network.macro_structure:
            raise ValueError(
                f"fitness uses {', '.join(wanted)} (the early-exit model), which needs model_partition in "
                "network.macro_structure"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _override_for(loc: tuple, overrides: list[str]) -> str | None:
    """The --set text that put a value at ``loc`` (the last one wins, as when applying them)."""
    path = [str(p) for p in loc]
    found = None
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        parts = [p for p in key.split(".") if p]
        if parts and (path[: len(parts)] == parts or parts[: len(path)] == path):
            found = text
    return found


def _members(annotation: Any) -> list[Any]:
    """The types of a union (``X | None`` -> [X]), or the annotation alone."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _type_at(loc: tuple) -> Any:
    """The annotation of the config value at ``loc`` (None when the path leaves the config's models)."""
    node: Any = RunConfig
    for part in loc:
        for member in _members(node):
            origin = get_origin(member)
            if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(part, str):
                field = next((f for n, f in member.model_fields.items() if part in (n, f.alias)), None)
                if field is not None:
                    node = field.annotation
                    break
            elif origin in (list, tuple) and isinstance(part, int):
                node = get_args(member)[0]
                break
            elif origin is dict and isinstance(part, str):
                node = get_args(member)[1]
                break
        else:
            return None
    return node


def _did_you_mean(loc: tuple) -> str:
    """A suggestion ("; did you mean 'training.budget'?") for a misspelt key at any depth, or nothing."""
    sections = [m for m in _members(_type_at(loc[:-1])) if isinstance(m, type) and issubclass(m, BaseModel)]
    known = sorted({f.alias or n for m in sections for n, f in m.model_fields.items()})
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"; did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else ""


# what a number means where a budget is given, so a wrong type reads as evowatt's, not pydantic's
_NUMBER_OF = {
    "seconds": "a number of seconds",
    "time_limit": "a number of seconds",
    "steps": "a whole number of optimiser steps",
}


def _wrong_type(item: Any) -> str | None:
    """evowatt's wording for a value of the wrong type, e.g. "expected a number of seconds, got 'abc'"."""
    kind, loc, got = item["type"], item["loc"], item.get("input")
    last = loc[-1] if loc else None
    if kind in ("float_parsing", "float_type"):
        return f"expected {_NUMBER_OF.get(str(last), 'a number')}, got {got!r}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected {_NUMBER_OF.get(str(last), 'a whole number')}, got {got!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got!r}"
    if kind in ("model_type", "dict_type"):
        if BudgetConfig in _members(_type_at(loc)):
            return (
                f"expected a budget in seconds or optimiser steps, e.g. {{seconds: 30}} or {{steps: 200}}, "
                f"got {got!r}"
            )
        return f"expected a section of keys (key: value lines), got {got!r}"
    return None


def _format_errors(error: ValidationError, source: str, overrides: list[str] | None = None) -> str:
    lines = []
    from_file = False
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        hint = ""
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
            hint = _did_you_mean(item["loc"])
        elif item["type"] == "missing":
            message = "required key is missing"
        elif (wrong := _wrong_type(item)) is not None:
            message = wrong
        elif "input" in item and item["type"] not in ("model_type",):
            message += f" (got {item['input']!r})"
        given = _override_for(item["loc"], overrides or [])
        if given is not None:
            message += f"; given by --set {given}"
        else:
            from_file = True
        lines.append(f"  {where}: {message}{hint}")
    head = (
        f"invalid configuration in {source}:" if from_file else f"invalid --set value (applied to {source}):"
    )
    return "\n".join([head, *lines])


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise EvowattError(f"--set {text!r}: expected key=value, e.g. --set search.generations=3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise EvowattError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise EvowattError(f"--set {text!r}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    require_file(path, "config file", "give a YAML or JSON config file (see examples/digits.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise EvowattError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvowattError(
            f"config file {path} must hold a mapping of sections (dataset, network, search, ...)"
        )
    return data


def _refuse_moved_keys(data: dict[str, Any], source: str, overrides: list[str] | None) -> None:
    """One message naming the new place of every moved key that ``data`` or an override still uses."""
    parsed = [(text, *parse_override(text)) for text in overrides or []]
    lines, from_file = moved_key_lines(data, parsed)
    if lines:
        head = (
            f"invalid configuration in {source}:"
            if from_file
            else f"invalid --set value (applied to {source}):"
        )
        raise EvowattError("\n".join([head, *(f"  {line}" for line in lines)]))


def validate_config(
    data: dict[str, Any],
    source: str = "config",
    overrides: list[str] | None = None,
    *,
    recorded: bool = False,
) -> RunConfig:
    """``overrides``: the --set texts applied to ``data``, so an error they caused names them.

    A key that moved is refused with its new place, unless ``recorded``: the config a run wrote, whose
    moved keys are read at their new places (an override naming an old place is still refused)."""
    if recorded:
        _refuse_moved_keys({}, source, overrides)  # what the run recorded moves; what is asked now must not
        data = upgrade_recorded(copy.deepcopy(data))
    _refuse_moved_keys(data, source, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise EvowattError(_format_errors(exc, source, overrides)) from None


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    seed: int | None = None,
    *,
    recorded: bool = False,
) -> RunConfig:
    """Read, override and validate; grammar and profile paths are resolved relative to the config file.
    ``recorded``: the file is a run's config.yaml, whose moved keys are read at their new places."""
    data = read_config_file(path)
    if recorded:
        _refuse_moved_keys({}, str(path), overrides)
        upgrade_recorded(data)
    apply_overrides(data, overrides or [])
    if seed is not None:
        data["seed"] = seed
    grammar = data.get("grammar")
    if isinstance(grammar, str) and not Path(grammar).is_absolute():
        candidate = Path(path).parent / grammar
        if candidate.exists():
            data["grammar"] = str(candidate.resolve())
    energy = data.get("energy")
    profile = energy.get("profile") if isinstance(energy, dict) else None
    if isinstance(profile, str) and not Path(profile).is_absolute():  # like the grammar: beside the config
        candidate = Path(path).parent / profile
        if candidate.exists():
            energy["profile"] = str(candidate.resolve())
    return validate_config(data, source=str(path), overrides=overrides)
