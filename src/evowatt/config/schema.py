"""The run configuration's root, ``RunConfig``: every section in one typed, validated model, and the
sections about the run as a whole (which data, where output goes, where evaluations run).

The sections of the search and of training live beside it (config/network.py, search.py, training.py,
experimental.py); reading a file, ``--set`` overrides and the error wording live in config/load.py.
Options no measurement showed to help live under ``experimental``; a key that moved there is refused at
its old place with the new one named, except in a run's recorded config (config/moved.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evowatt.config.base import Strict
from evowatt.config.energy import EnergySettings
from evowatt.config.experimental import ExperimentalConfig
from evowatt.config.network import NetworkConfig
from evowatt.config.search import FitnessConfig, SearchConfig
from evowatt.config.training import TrainingConfig


class DatasetConfig(Strict):
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


class OutputConfig(Strict):
    dir: str = "runs"
    name: str | None = Field(None, description="run directory name; default: timestamp and seed")


class RunnerConfig(Strict):
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


class RunConfig(Strict):
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
