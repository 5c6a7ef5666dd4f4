"""The ``experimental`` section: options no measurement showed to help, each off by default, kept for
runs that test them again (their measurements: docs/experimental.md).

Its own module so the supported config reads without them, and removing one touches this file, its
entry in config/moved.py and the code that reads it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from evowatt.config.base import Strict
from evowatt.config.training import BudgetConfig


class ScreenConfig(Strict):
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


class ExperimentalFinalTrainingConfig(Strict):
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

    prefer_params_within: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="give the final training to the network with the most parameters among those the "
        "whole run ranked within this much accuracy (at their best evaluation) of the most accurate, in "
        "place of the most accurate (unset: the most accurate); a short rung cannot see what a long "
        "training does with capacity. Fashion-MNIST at 15 minutes, 0.01: it changed the choice on 1 of 5 "
        "seeds, no gain",
    )

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> ExperimentalFinalTrainingConfig:
        if self.prefer_params_within is not None and self.screen.models:
            raise ValueError(
                "screen and prefer_params_within both choose the network of the final training: set one"
            )
        return self

    def width_of(self, place: int) -> float:
        """The width of the ``place``-th handed model's final training (0: the most accurate)."""
        return self.width if place == 0 or self.others_width is None else self.others_width


class ExperimentalConfig(Strict):
    """Options no measurement showed to help, each off by default. They stay for runs that test them
    again (their measurements: docs/experimental.md); the rest of the config is what evowatt supports."""

    resume_optimiser: bool = Field(
        False,
        description="a training that continues from earlier weights (a rung, train_longer, an inheriting "
        "mutant's shared layers, the final training from the search's weights) resumes that training's "
        "optimiser state instead of starting a fresh optimiser; -4.72 pp on digits, no gain elsewhere",
    )
    search_full_budget: bool = Field(
        False,
        description="search trainings (every rung, train_longer, mutants) run their whole budget instead of "
        "stopping on the evolved patience; the best validated weights are kept. Fashion-MNIST at 15 minutes: "
        "seeds 2, 3, 4 +1.87, -2.16, +0.25 pp: no gain",
    )
    draw_within_caps: bool = Field(
        False,
        description="draw a random network or a mutation again (up to 20 times) when search.caps or the "
        "input's size would make it invalid, instead of spending an evaluation on an invalid network; with "
        "a 4 MFLOP cap no gain on the Fashion-MNIST seed it was made for (0.8915 against 0.8956)",
    )
    search_final_learning: bool = Field(
        False,
        description="search trainings use final_training.learning (the optimiser, learning rate and batch "
        "size the final training uses; a run planned from minutes sets them) in place of each individual's "
        "evolved ones, so the search ranks networks under the recipe the chosen one is trained with; "
        "unset keys stay evolved. Fashion-MNIST at 15 minutes, seeds 0-4: mean 0.9120 against 0.9158, "
        "no gain",
    )
    final_training: ExperimentalFinalTrainingConfig = ExperimentalFinalTrainingConfig()
