"""The plan a run makes from ``minutes: T``: deterministic, the config's own settings kept, refusals clear."""

from __future__ import annotations

import time

import pytest

from evowatt.config.load import load_config, validate_config
from evowatt.driver.plan import plan_run
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.errors import EvowattError
from tests.conftest import SMALL_NETWORK

FASHION = "examples/fashion-mnist-pareto.yaml"


def pareto(**extra):
    return validate_config(
        {"network": SMALL_NETWORK, "search": {"algorithm": "pareto"}, "minutes": 15, **extra}
    )


def test_fifteen_minutes_on_fashion_mnist_is_the_measured_recipe():
    config, plan = plan_run(pareto(), train_images=60_000, cores=2)
    assert plan.search_seconds == 315.0  # 35 % of T
    assert plan.reserve_seconds == 27.0  # 3 % of T, out of the final training's share
    assert plan.final_seconds == 558.0
    assert plan.search_seconds + plan.final_seconds + plan.reserve_seconds == 900.0
    assert config.search.time_limit == 315.0
    assert config.training.budget.seconds == 30.0  # the top rung
    assert (config.search.fidelity.min_budget, config.search.fidelity.eta, config.search.fidelity.rungs) == (
        3.333,
        3,
        3,
    )
    assert (config.search.population, config.search.lambda_) == (8, 4)
    assert config.dataset.train_subset == 10_000  # the search's subset of a large training set
    final = config.training.final_training
    assert final.models == 1 and final.budget.seconds == 558.0 and final.train_subset == "all"
    assert final.train_on_validation and not final.early_stopping
    assert (final.learning.learning, final.learning.lr, final.learning.batch_size) == ("adam", 0.001, 128)
    assert plan.rungs == 3 and plan.budget_seconds == 30.0
    assert plan.expected_evaluations == 45  # 315 s / (3 rungs x 3.33 s) children, each 1 + 1/3 + 1/9 times
    assert "search.time_limit" in plan.planned and plan.kept == ()


def test_the_plan_is_deterministic_and_recorded_as_plain_data():
    first = plan_run(pareto(), 60_000, 2)
    second = plan_run(pareto(), 60_000, 2)
    assert first[1] == second[1]
    assert first[0].model_dump() == second[0].model_dump()
    recorded = first[1].to_dict()
    assert recorded["minutes"] == 15.0 and recorded["cores"] == 2 and recorded["train_images"] == 60_000
    assert isinstance(recorded["planned"], list)
    assert (
        first[1]
        .text()
        .startswith("plan: 15 min in all: search 5.2 min, top rung 30 s, final training 9.3 min")
    )


def test_the_time_scales_the_rungs_and_a_small_training_set_is_not_subsampled():
    config, plan = plan_run(pareto(minutes=3), train_images=1_257, cores=2)
    assert plan.search_seconds == 63.0 and config.training.budget.seconds == 6.0
    assert config.dataset.train_subset is None
    assert plan.search_seconds + plan.final_seconds + plan.reserve_seconds == 180.0


def test_the_es_gets_a_budget_per_network_and_no_rungs():
    config, plan = plan_run(validate_config({"network": SMALL_NETWORK, "minutes": 15}), 60_000, 2)
    assert config.search.fidelity is None and plan.rungs == 1
    assert config.training.budget.seconds == 10.0  # the ES's best at T = 15 min
    assert plan.expected_evaluations == 31


def test_what_the_config_sets_is_kept_and_the_rest_fits_around_it():
    config, plan = plan_run(
        pareto(
            search={"algorithm": "pareto", "time_limit": 400, "lambda": 6},
            training={"budget": {"seconds": 20}},
        ),
        60_000,
        2,
    )
    assert config.search.time_limit == 400 and config.search.lambda_ == 6
    assert config.training.budget.seconds == 20
    assert plan.final_seconds == 900 - 27 - 400 == config.training.final_training.budget.seconds
    assert set(plan.kept) == {"search.time_limit", "search.lambda", "training.budget"}


def test_a_given_final_budget_leaves_the_search_the_rest():
    config, plan = plan_run(
        pareto(training={"final_training": {"budget": {"seconds": 100}, "models": 2}}), 60_000, 2
    )
    assert plan.final_seconds == 200.0  # two models of 100 s each
    assert config.search.time_limit == 900 - 27 - 200


def test_without_minutes_nothing_is_planned():
    config = validate_config({"network": SMALL_NETWORK})
    same, plan = plan_run(config, 60_000, 2)
    assert plan is None and same is config


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"minutes": 0.1}, "leaves 2 s for the search"),
        ({"search": {"algorithm": "pareto", "time_limit": 890}}, "do not fit in minutes: 15"),
        ({"training": {"final_training": {"budget": {"steps": 100}}}}, "give it in seconds"),
    ],
)
def test_a_plan_that_cannot_fit_is_one_clear_message(extra, message):
    with pytest.raises(EvowattError, match=message):
        plan_run(pareto(**extra), 60_000, 2)


def test_the_shipped_fashion_example_leaves_the_plan_to_minutes():
    config, plan = plan_run(load_config(FASHION), 60_000, 2)
    assert plan is not None and plan.minutes == 15
    assert config.search.time_limit == 315.0 and config.training.final_training.budget.seconds == 558.0
    assert config.training.budget.seconds == 30.0


def test_a_run_given_minutes_ends_within_them_and_records_its_plan(tmp_path):
    """T = 24 s on digits: the search stops at its share, the final training is cut to what is left."""
    config = validate_config(
        {
            "network": SMALL_NETWORK,
            "search": {"algorithm": "pareto"},
            "minutes": 0.4,
            "training": {"threads": 1},
        }
    )
    started = time.perf_counter()
    result = run(config, out=tmp_path / "r")
    wall = time.perf_counter() - started
    assert wall <= 24 + 6  # the stated margin (docs/configuration.md): T plus the last evaluation's overrun
    store = RunStore(tmp_path / "r")
    recorded, planned_config = store.meta("plan"), store.meta("config")
    store.close()
    assert (
        recorded["minutes"] == 0.4 and recorded["search_seconds"] == 8.4 and recorded["final_seconds"] == 10.6
    )
    assert (
        planned_config["search"]["time_limit"] == 8.4
    )  # the recorded config is the planned one: resume agrees
    assert result.stopped == "time_limit"
    assert len(result.finals) == 1
    assert result.finals[0].train["seconds"] <= 10.6 + 0.5
