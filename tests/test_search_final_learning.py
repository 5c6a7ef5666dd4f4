"""experimental.search_final_learning: the search's trainings use final_training.learning in place of the
evolved optimiser, rate and batch size; off, they train with the evolved ones as the paper's do."""

from __future__ import annotations

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from tests.conftest import DIGITS_STEPS_SEARCH, config_dict, searched_ok

# a rate that leaves the weights where they started: a search trained with it stays at chance
FROZEN = {"learning": "gradient_descent", "lr": 1e-12, "batch_size": 32}


def run_config(on: bool) -> dict:
    return config_dict(
        DIGITS_STEPS_SEARCH,
        **{"training.final_training": {"learning": FROZEN}, "experimental.search_final_learning": on},
    )


def test_the_search_trains_with_the_final_trainings_learning(tmp_path):
    rows = {}
    for on in (False, True):
        rows[on] = searched_ok(run(validate_config(run_config(on)), out=tmp_path / str(on)).run_dir)
    assert rows[False] and rows[True]
    # off: the evolved genes train every network, and some learn
    assert all("learning" not in (row.result.train or {}) for row in rows[False])
    assert max(row.metrics["accuracy"]["value"] for row in rows[False]) > 0.5
    # on: every search training records what replaced the evolved genes, and none learns
    assert all((row.result.train or {}).get("learning") == FROZEN for row in rows[True])
    assert max(row.metrics["accuracy"]["value"] for row in rows[True]) < 0.3
