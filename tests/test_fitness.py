import json

import pytest
from pydantic import ValidationError

from evowatt.config.search import FitnessConfig
from evowatt.search.fitness import metric_value, score
from tests.conftest import COMPAT


def result(**metrics) -> dict:
    return {"id": 0, "status": "ok", "metrics": {k: {"value": v, "method": "x"} for k, v in metrics.items()}}


ENERGIZE = FitnessConfig(
    terms=json.loads((COMPAT / "energize_config.json").read_text())["evolutionary"]["fitness_function"]
)


def test_energize_example_terms():
    # accuracy_1 + 10 / power_1, the power term counting only while 0.7 < accuracy_1 < 0.9
    assert score(result(accuracy_1=0.8, power_1=50.0), ENERGIZE) == (pytest.approx(0.8 + 10 / 50), None)
    assert score(result(accuracy_1=0.95, power_1=50.0), ENERGIZE) == (pytest.approx(0.95), None)
    assert score(result(accuracy_1=0.6, power_1=50.0), ENERGIZE) == (pytest.approx(0.6), None)
    assert score(result(accuracy_1=0.7, power_1=50.0), ENERGIZE)[0] == pytest.approx(0.7)  # strict bounds
    # outside the conditions the power metric is not needed at all
    assert score(result(accuracy_1=0.95), ENERGIZE) == (pytest.approx(0.95), None)


def test_weighted_sum_of_maximised_and_minimised_terms():
    fitness = FitnessConfig(
        terms=[
            {"metric": "accuracy", "weight": 2},
            {"metric": "energy", "objective": "minimize", "weight": 0.5},
            {"metric": "flops_1", "objective": "minimize", "weight": 3},
        ]
    )
    value, reason = score(result(accuracy=0.5, energy=0.25, flops_1=1000.0), fitness)
    assert reason is None and value == pytest.approx(2 * 0.5 + 0.5 / 0.25 + 3 / 1000)


def test_bare_name_and_suffix_zero_are_the_full_model():
    fitness = FitnessConfig(terms=[{"metric": "accuracy_0"}])
    assert score(result(accuracy=0.9), fitness) == (0.9, None)
    assert metric_value(result(accuracy=0.9), "accuracy_0") == 0.9
    assert metric_value(result(accuracy=0.9), "accuracy_1") is None


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"accuracy_1": 0.8}, "metric power_1 is missing"),
        ({"accuracy_1": 0.8, "power_1": 0.0}, "minimised metric power_1 is 0, not positive"),
        ({"accuracy_1": 0.8, "power_1": -3.0}, "not positive"),
        ({"power_1": 5.0}, "metric accuracy_1 is missing"),
    ],
)
def test_missing_or_non_positive_metric_has_no_fitness(metrics, reason):
    value, why = score(result(**metrics), ENERGIZE)
    assert value is None and reason in why


def test_invalid_network_has_no_fitness():
    assert score({"id": 0, "status": "invalid", "reason": "spatial size below 1"}, ENERGIZE) == (
        None,
        "spatial size below 1",
    )


def test_single_metric_shorthand():
    assert FitnessConfig().resolved_terms()[0].metric == "accuracy"
    energy = FitnessConfig(metric="energy_1").resolved_terms()[0]
    assert energy.objective == "minimize"
    assert score(result(energy_1=0.5), FitnessConfig(metric="energy_1")) == (2.0, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"metric": "test_accuracy"}, "never used for selection"),
        ({"terms": [{"metric": "test_accuracy_1"}]}, "never used for selection"),
        ({"terms": [{"metric": "acc"}]}, "unknown metric 'acc'; available: accuracy, accuracy_0"),
        (
            {
                "terms": [
                    {
                        "metric": "accuracy",
                        "conditions": [{"metric": "nope", "type": "less_than", "value": 1}],
                    }
                ]
            },
            "unknown metric 'nope'",
        ),
        ({"terms": [{"metric": "accuracy", "weight": 0}]}, "greater than 0"),
        ({"terms": []}, "at least one term"),
    ],
)
def test_bad_fitness_config(data, message):
    with pytest.raises(ValidationError, match=message):
        FitnessConfig(**data)


def test_condition_on_a_missing_metric_means_no_fitness():
    fitness = FitnessConfig(
        terms=[
            {
                "metric": "accuracy",
                "conditions": [{"metric": "accuracy_1", "type": "greater_than", "value": 0.5}],
            }
        ]
    )
    assert score(result(accuracy=0.9), fitness) == (None, "metric accuracy_1 (in a condition) is missing")


def test_run_records_why_an_ok_network_has_no_fitness(tmp_path):
    """A valid network lacking a metric its fitness needs (no hidden layer, so no model 1): reason kept."""
    from evowatt.config.load import validate_config
    from evowatt.driver.session import run
    from evowatt.driver.store import RunStore

    config = validate_config(
        {
            "grammar": "cnn",
            "network": {
                "modules": [
                    {"name": "features", "network_structure_init": [0], "network_structure": [0, 2]},
                    {"name": "classification", "network_structure_init": [0], "network_structure": [0, 1]},
                ],
                "macro_structure": ["learning", "model_partition"],
            },
            "search": {"generations": 0, "lambda": 2},
            "training": {"budget": {"steps": 3}, "threads": 1},
            "energy": {"meter": "estimate", "time_cap_s": 0.02, "min_window_s": 0.005, "min_repeats": 2},
            "fitness": {"terms": [{"metric": "accuracy_1"}]},  # no hidden layer: no early-exit model
        }
    )
    from evowatt.errors import EvowattError

    # no individual of generation 0 has a fitness: the run stops there, the reasons recorded and counted
    with pytest.raises(EvowattError, match="(?s)no valid individual.*no fitness: metric accuracy_1"):
        run(config, out=tmp_path / "r")
    store = RunStore(tmp_path / "r")
    rows = [r for r in store.select() if r.kind != "final"]
    store.close()
    assert all(r.fitness is None for r in rows)
    assert all(r.reason == "no fitness: metric accuracy_1 is missing" for r in rows if r.status == "ok")


def test_partition_metrics_without_partition_gene_is_a_config_error():
    from evowatt.config.load import validate_config
    from evowatt.errors import EvowattError

    with pytest.raises(EvowattError, match="fitness uses accuracy_1, energy_1 .* needs model_partition"):
        validate_config(
            {
                "network": {
                    "modules": [
                        {"name": "features", "network_structure_init": [1], "network_structure": [0, 2]}
                    ]
                },
                "fitness": {
                    "terms": [{"metric": "accuracy_1"}, {"metric": "energy_1", "objective": "minimize"}]
                },
            }
        )
