"""How each network is trained: the ``training`` section (device, the per-evaluation budget, threads)
and its ``final_training`` (the longer training the handed-over models get after the search).

Its own module because how a network is trained is a job apart from how the search selects: the search
sections never import it, and the tasks and the handover read it without them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evowatt.config.base import Strict
from evowatt.records import Budget


class BudgetConfig(Strict):
    """Training budget of one individual: seconds (clock checked every batch) or optimiser steps."""

    seconds: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        if (self.seconds is None) == (self.steps is None):
            raise ValueError("give exactly one of 'seconds' or 'steps'")
        return self

    def to_budget(self) -> Budget:
        """The run's one budget type (``records.Budget``): the config converts once, here."""
        return Budget(seconds=self.seconds, steps=self.steps)


class AugmentConfig(Strict):
    """Augmentation on tensors during the final training (off by default)."""

    shift: int = Field(0, ge=0, le=8, description="random shifts of up to this many pixels (0: none)")
    flip: bool = Field(False, description="mirror half the images left-right (not for digits or mnist)")


class LearningConfig(Strict):
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


class FinalTrainingConfig(Strict):
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


class TrainingConfig(Strict):
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
