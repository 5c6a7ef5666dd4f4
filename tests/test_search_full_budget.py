"""experimental.search_full_budget: search trainings run their whole budget instead of stopping on the
evolved patience (the best validated weights kept); off, they stop as the paper's do."""

from __future__ import annotations

from evowatt.config.load import validate_config
from evowatt.driver.session import run
from tests.conftest import DIGITS_STEPS_SEARCH, config_dict, searched_ok


def run_config(full: bool) -> dict:
    return config_dict(
        DIGITS_STEPS_SEARCH,
        **{"training.budget": {"steps": 600}, "experimental.search_full_budget": full},
    )


def test_search_trainings_run_their_whole_budget(tmp_path):
    stops = {}
    for full in (False, True):
        result = run(validate_config(run_config(full)), out=tmp_path / str(full))
        stops[full] = [(row.result.train or {}).get("stop_reason") for row in searched_ok(result.run_dir)]
    assert "early_stop" in stops[False]  # the evolved patience ends some of these trainings
    assert stops[True] and set(stops[True]) <= {"budget", "max_epochs"}
