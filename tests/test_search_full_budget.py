"""experimental.search_full_budget: search trainings run their whole budget instead of stopping on the
evolved patience (the best validated weights kept); off, they stop as the paper's do."""

from __future__ import annotations

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK


def run_config(full: bool) -> dict:
    return {
        "seed": 0,
        "grammar": "cnn",
        "dataset": {"name": "digits"},
        "network": SMALL_NETWORK,
        "search": {"generations": 1, "lambda": 3},
        "training": {"budget": {"steps": 600}, "threads": 1},
        "energy": FAST_ESTIMATE,
        "experimental": {"search_full_budget": full},
    }


def stop_reasons(run_dir) -> list[str]:
    store = RunStore(run_dir)
    try:
        return [(row.result.train or {}).get("stop_reason") for row in store.searched() if row.ok]
    finally:
        store.close()


def test_search_trainings_run_their_whole_budget(tmp_path):
    stops = {}
    for full in (False, True):
        result = run(validate_config(run_config(full)), out=tmp_path / str(full))
        stops[full] = stop_reasons(result.run_dir)
    assert "early_stop" in stops[False]  # the evolved patience ends some of these trainings
    assert stops[True] and set(stops[True]) <= {"budget", "max_epochs"}
