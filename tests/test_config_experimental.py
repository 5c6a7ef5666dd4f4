"""The experimental section: options no measurement showed to help live under ``experimental``; a config
that names one at its old place ends with one message naming the new place (exit 2); a run that recorded
the old places still resumes, shows and exports (issue 31, item 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evowatt.cli.main import main
from evowatt.config.load import validate_config
from evowatt.config.moved import MOVED_KEYS, upgrade_recorded
from evowatt.driver.rundir import GRAMMAR_NAME
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.driver.tasks import final_recipe
from evowatt.errors import EvowattError
from tests.conftest import config_dict, run_killed_at
from tests.hardening import TINY_RUN, fails
from tests.test_resume import history

# a value for each moved key that differs from its default (the screen needs a final training)
MOVED_VALUES: dict[str, Any] = {
    "training.resume_optimiser": True,
    "training.final_training.label_smoothing": 0.1,
    "training.final_training.width": 2.0,
    "training.final_training.others_width": 1.0,
    "training.final_training.screen": {"models": 2, "budget": {"steps": 2}},
}
FINAL = {"training.final_training.budget": {"steps": 4}}


def _at_new_places(values: dict[str, Any]) -> dict[str, Any]:
    return {MOVED_KEYS[old][0]: value for old, value in values.items()}


def _old_form(data: dict[str, Any]) -> dict[str, Any]:
    """A config as a run recorded it before the keys moved: each moved key at its old place."""
    data = yaml.safe_load(yaml.safe_dump(data))
    for old, (new, _page) in MOVED_KEYS.items():
        *parents, last = new.split(".")
        node = data
        for part in parents:
            node = node[part]
        value = node.pop(last)
        *parents, last = old.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    del data["experimental"]
    return data


def test_the_moved_keys_work_under_the_experimental_section():
    config = validate_config(config_dict(TINY_RUN, **FINAL, **_at_new_places(MOVED_VALUES)))
    experimental = config.experimental
    assert experimental.resume_optimiser is True
    assert experimental.final_training.label_smoothing == 0.1
    assert experimental.final_training.screen.models == 2
    assert experimental.final_training.screen.budget.steps == 2
    assert [experimental.final_training.width_of(place) for place in (0, 1, 2)] == [2.0, 1.0, 1.0]
    assert final_recipe(config)["label_smoothing"] == 0.1
    defaults = validate_config(config_dict(TINY_RUN)).experimental
    assert defaults.resume_optimiser is False and defaults.final_training.screen.models == 0
    assert defaults.final_training.width_of(0) == defaults.final_training.width_of(1) == 1.0
    assert "experimental" in config.to_dict()


@pytest.mark.parametrize("old", list(MOVED_KEYS))
def test_an_old_key_in_the_file_names_its_new_place(old, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(TINY_RUN, **FINAL, **{old: MOVED_VALUES[old]})))
    new, page = MOVED_KEYS[old]
    err = fails(
        capsys,
        ["run", cfg, "--out", tmp_path / "r"],
        f"invalid configuration in {cfg}",
        f"{old} moved to {new} (no measured gain; see {page})",
    )
    assert len(err.strip().splitlines()) == 2  # the head and the one key: no pydantic list beside it
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "text",
    [
        "training.resume_optimiser=true",
        "training.final_training.screen.models=2",
        "training.final_training={width: 2}",
    ],
)
def test_an_old_key_given_by_set_names_its_new_place(text, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(TINY_RUN, **FINAL)))
    err = fails(capsys, ["run", cfg, "--set", text], "moved to experimental.", f"given by --set {text}")
    assert err.startswith(f"evowatt: error: invalid --set value (applied to {cfg})")


def test_an_old_key_ends_the_process_with_exit_2_and_no_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(TINY_RUN, **{"training.resume_optimiser": False})))
    proc = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "training.resume_optimiser moved to experimental.resume_optimiser (no measured gain" in proc.stderr


def test_every_moved_key_has_its_measurement_in_the_docs():
    docs = Path(__file__).parent.parent / "docs"
    for old, (new, page) in MOVED_KEYS.items():
        path, _, anchor = page.partition("#")
        text = (docs.parent / path).read_text(encoding="utf-8")
        headings = {
            "".join(c for c in line.lstrip("#").strip().lower().replace(" ", "-") if c.isalnum() or c in "-_")
            for line in text.splitlines()
            if line.startswith("#")
        }
        assert anchor in headings, f"{page}: no such section"
        assert f"`{new}" in text and "results.md" in text, old
    assert (docs / "experimental.md").is_file()


def test_upgrade_moves_the_old_places_and_keeps_a_new_value():
    new_form = validate_config(config_dict(TINY_RUN, **FINAL, **_at_new_places(MOVED_VALUES))).to_dict()
    old = _old_form(new_form)
    assert "experimental" not in old and old["training"]["resume_optimiser"] is True
    assert validate_config(upgrade_recorded(old)).to_dict() == new_form
    both = _old_form(new_form)
    both["experimental"] = {"resume_optimiser": False}  # a value at the new place wins
    assert upgrade_recorded(both)["experimental"]["resume_optimiser"] is False
    with pytest.raises(EvowattError, match="moved to experimental.resume_optimiser"):
        validate_config(_old_form(new_form))
    assert validate_config(_old_form(new_form), recorded=True).to_dict() == new_form


def test_a_run_that_recorded_the_old_keys_resumes_shows_and_refuses_old_overrides(tmp_path, capsys):
    # an ES whose continuations resume their optimiser and whose final training smooths its labels
    data = config_dict(
        TINY_RUN,
        **{"search.generations": 2, "search.lambda": 2, "search.mutation": {"train_longer": 0.5}},
        **FINAL,
        **{"experimental.resume_optimiser": True, "experimental.final_training.label_smoothing": 0.1},
    )
    reference = tmp_path / "reference"
    run(validate_config(data), out=reference)

    killed = tmp_path / "killed"
    run_killed_at(data, killed, "after-record:3")
    store = RunStore(killed)
    try:
        old = _old_form(store.meta("config"))
        store.record_config(old, (killed / GRAMMAR_NAME).read_text(encoding="utf-8"), files=True)
    finally:
        store.close()
    assert "resume_optimiser" in yaml.safe_load((killed / "config.yaml").read_text())["training"]

    # asked now, an old place is refused, and nothing is changed
    before = (killed / "config.yaml").read_bytes()
    fails(
        capsys,
        ["resume", killed, "--set", "training.resume_optimiser=false"],
        "training.resume_optimiser moved to experimental.resume_optimiser",
        "given by --set training.resume_optimiser=false",
    )
    assert (killed / "config.yaml").read_bytes() == before

    assert main(["resume", str(killed)]) == 0, capsys.readouterr().err
    got, want = history(killed), history(reference)
    assert got["evaluations"] == want["evaluations"] and got["checkpoint"] == want["checkpoint"]
    assert got["weights"] == want["weights"]
    assert any(r["kind"] == "final" for r in got["evaluations"])
    assert main(["show", str(killed), "--front"]) == 0, capsys.readouterr().err
