"""experimental.search_final_learning: the search's trainings use final_training.learning in place of the
evolved optimiser, rate and batch size; off, they train with the evolved ones as the paper's do."""

from __future__ import annotations

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK

# a rate that leaves the weights where they started: a search trained with it stays at chance
FROZEN = {"learning": "gradient_descent", "lr": 1e-12, "batch_size": 32}


def run_config(on: bool) -> dict:
    return {
        "seed": 0,
        "grammar": "cnn",
        "dataset": {"name": "digits"},
        "network": SMALL_NETWORK,
        "search": {"generations": 1, "lambda": 3},
        "training": {"budget": {"steps": 300}, "threads": 1, "final_training": {"learning": FROZEN}},
        "energy": FAST_ESTIMATE,
        "experimental": {"search_final_learning": on},
    }


def searched(run_dir) -> list:
    store = RunStore(run_dir)
    try:
        return [row for row in store.searched() if row.ok]
    finally:
        store.close()


def test_the_search_trains_with_the_final_trainings_learning(tmp_path):
    rows = {}
    for on in (False, True):
        rows[on] = searched(run(validate_config(run_config(on)), out=tmp_path / str(on)).run_dir)
    assert rows[False] and rows[True]
    # off: the evolved genes train every network, and some learn
    assert all("learning" not in (row.result.train or {}) for row in rows[False])
    assert max(row.metrics["accuracy"]["value"] for row in rows[False]) > 0.5
    # on: every search training records what replaced the evolved genes, and none learns
    assert all((row.result.train or {}).get("learning") == FROZEN for row in rows[True])
    assert max(row.metrics["accuracy"]["value"] for row in rows[True]) < 0.3
