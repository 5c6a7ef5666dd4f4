"""experimental.final_training.prefer_params_within: the final training goes to the network with the most
parameters among those ranked within that much of the most accurate, not to the most accurate itself."""

from __future__ import annotations

import pytest

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.errors import EvowattError
from evowatt.representation.genome import Genome
from tests.conftest import DIGITS_STEPS_SEARCH, config_dict, searched_ok


def run_config(within: float | None) -> dict:
    return config_dict(
        DIGITS_STEPS_SEARCH,
        **{
            "search.lambda": 5,
            "training.budget": {"steps": 150},
            "training.final_training": {"budget": {"steps": 20}},
            "experimental.final_training.prefer_params_within": within,
        },
    )


def final_parent(run_dir):
    """The search evaluation the run's one final training continued from."""
    store = RunStore(run_dir)
    try:
        (final,) = store.select(kind="final")
        parent = store.get(final.parent_id)
    finally:
        store.close()
    return parent


def network(row) -> str:
    return Genome.from_json(row.genome).network_key()


def test_the_final_training_goes_to_the_largest_near_best_network(tmp_path):
    plain = run(validate_config(run_config(None)), out=tmp_path / "plain").run_dir
    anything = run(validate_config(run_config(1.0)), out=tmp_path / "anything").run_dir
    exact = run(validate_config(run_config(0.0)), out=tmp_path / "exact").run_dir
    rows = searched_ok(plain)
    params = {network(r): r.metric("params") for r in rows}
    fitness = {}
    for r in rows:
        fitness[network(r)] = max(fitness.get(network(r), float("-inf")), r.score.fitness)
    assert len(set(params.values())) > 1  # networks of several sizes to choose from
    # unset, and within 0: the most accurate network (the ES's fitness here)
    assert fitness[network(final_parent(plain))] == max(fitness.values())
    assert network(final_parent(exact)) == network(final_parent(plain))
    # within 1 (any accuracy): the network with the most parameters of the whole run
    assert final_parent(anything).metric("params") == max(params.values())
    assert network(final_parent(anything)) != network(final_parent(plain))


def test_it_does_not_combine_with_a_screening():
    data = run_config(0.01)
    data["experimental"]["final_training"]["screen"] = {"models": 2, "budget": {"steps": 5}}
    with pytest.raises(EvowattError, match="screen and prefer_params_within"):
        validate_config(data)
