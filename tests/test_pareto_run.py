"""The Pareto search end to end on digits: deterministic, resumable to the same history, its front shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from evowatt.cli.main import main
from evowatt.config.load import load_config, validate_config
from evowatt.driver.results import front, pick
from evowatt.driver.session import resume, run
from evowatt.driver.setup import planned_evaluations
from evowatt.driver.store import RunStore
from tests.conftest import EXAMPLES, SMALL_NETWORK, config_dict
from tests.test_resume import BASE as ES_BASE
from tests.test_resume import _deterministic, _rows

BASE: dict[str, Any] = {
    **ES_BASE,
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {
        "algorithm": "pareto",
        "population": 3,
        "lambda": 3,
        "generations": 2,
        "mutation": {"train_longer": 0.4},
        "constraints": ["accuracy > 0.05"],
    },
}
TOTAL = 3 + 3 + 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pareto")
    (path / "config.yaml").write_text(yaml.safe_dump(BASE))
    return path


@pytest.fixture(scope="module")
def killed(workdir: Path) -> Path:
    """Killed after its 5th recorded evaluation (mid generation 1), started first to share the wait."""
    out = workdir / "killed"
    env = {**os.environ, "EVOWATT_KILL_AT": "after-record:5", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "evowatt.cli", "run", str(workdir / "config.yaml"), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out, proc


@pytest.fixture(scope="module")
def reference(workdir: Path, killed) -> Path:
    out = workdir / "reference"
    result = run(validate_config(config_dict(BASE)), out=out)
    assert result.evaluations == TOTAL and len(result.generations) == 3
    assert planned_evaluations(validate_config(config_dict(BASE))) == TOTAL  # the progress bar's total
    return out


def _comparable(run_dir: Path) -> dict[str, Any]:
    weights = {p.name: p.read_bytes() for p in sorted((run_dir / "weights").iterdir())}
    data: dict[str, Any] = {"evaluations": [_deterministic(r) for r in _rows(run_dir)], "weights": weights}
    store = RunStore(run_dir)
    try:
        generations = [
            {k: getattr(g, k) for k in ("survivors", "front", "hypervolume", "evaluations")}
            for g in store.generations()
        ]
        checkpoint = store.load_checkpoint()
    finally:
        store.close()
    data["generations"] = generations
    data["checkpoint"] = {k: v for k, v in checkpoint.items() if k != "archive"}
    return data


def test_pareto_run_records_front_and_hypervolume(reference):
    store = RunStore(reference)
    try:
        generations = store.generations()
        rows = store.select()
    finally:
        store.close()
    assert all(g.best_id is None and g.hypervolume is not None for g in generations)
    assert [len(g.survivors) for g in generations] == [3, 3, 3]
    kinds = {r.kind for r in rows}
    assert kinds <= {"random", "mutant", "train_longer"} and "random" in kinds
    # a score is recorded once per evaluation: one point per exit for every ok one
    for row in rows:
        if row.status == "ok":
            assert set(row.score.points) == {"0", "1"}
    models = front(reference)
    assert models and all(m.value("test_accuracy") is not None for m in models)  # reported, for the front
    recorded = generations[-1].front
    assert {(m.id, m.exit) for m in models} == {(p["id"], p["exit"]) for p in recorded}


def test_same_seed_same_pareto_run(reference, tmp_path):
    again = tmp_path / "again"
    run(validate_config(config_dict(BASE)), out=again)
    assert _comparable(again) == _comparable(reference)


def test_killed_pareto_run_resumes_to_the_identical_history(killed, reference, capsys):
    out, proc = killed
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 137, err.decode()
    assert main(["resume", str(out)]) == 0, capsys.readouterr().err
    assert _comparable(out) == _comparable(reference)


def test_show_front_and_pick(reference, capsys):
    assert main(["show", str(reference), "--front", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["exit"]) for m in listed] == [(m.id, m.exit) for m in front(reference)]
    accuracies = [m["metrics"]["accuracy"]["value"] for m in listed]
    assert accuracies == sorted(accuracies, reverse=True)
    energies = sorted(m["metrics"]["energy"]["value"] for m in listed)
    budget = f"energy < {energies[len(energies) // 2] * 1.0001:.6g}"
    chosen = pick(reference, budget)
    import evowatt

    assert evowatt.pick(str(reference), budget) == chosen and evowatt.front(str(reference)) == front(
        reference
    )
    assert chosen is not None and chosen.value("energy") < float(budget.split("<")[1])
    assert main(["show", str(reference), "--pick", budget]) == 0
    assert f"#{chosen.id} exit {chosen.exit}" in capsys.readouterr().out
    assert main(["show", str(reference), "--pick", "energy < 0"]) == 1
    assert "no model" in capsys.readouterr().out
    assert main(["show", str(reference), "--pick", "energy about 3"]) == 2
    assert "expected 'metric < value'" in capsys.readouterr().err
    assert main(["show", str(reference), "--pick", "accuracy > best - 0.01"]) == 2
    assert "a budget is a fixed bound" in capsys.readouterr().err


def test_resume_refuses_another_algorithm(reference, tmp_path):
    import shutil

    from evowatt.errors import EvowattError

    copy = Path(shutil.copytree(reference, tmp_path / "copy"))
    with pytest.raises(EvowattError, match="search.algorithm"):
        resume(copy, overrides=["search.algorithm=es"])


def test_a_checkpoint_naming_a_survivor_the_store_lacks_is_refused(reference, tmp_path, capsys):
    import shutil
    import sqlite3

    copy = Path(shutil.copytree(reference, tmp_path / "copy"))
    survivor = json.loads((copy / "checkpoint.json").read_text())["population"][0]["id"]
    with sqlite3.connect(copy / "evowatt.sqlite") as db:  # a store from another run: it lacks that row
        db.execute("DELETE FROM evaluations WHERE id = ?", (survivor,))
    assert main(["resume", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"names evaluation {survivor} as a survivor" in err and "do not belong to the same run" in err


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path):
    config = load_config(path)
    if "pareto" in path.name:
        assert config.search.algorithm == "pareto"


def test_digits_pareto_example_ends_by_printing_its_front(tmp_path, capsys):
    shrink = [
        "search.generations=1",
        "search.population=3",
        "search.lambda=2",
        "training.budget={steps: 5}",
        "training.threads=1",
        "training.final_training.budget=null",
        "energy.meter=estimate",
    ]
    args = ["run", str(EXAMPLES / "digits-pareto.yaml"), "--out", str(tmp_path / "run")]
    assert main([*args, *[a for s in shrink for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "front (" in out and "distinct models)" in out and "the model to take: #" in out


def test_run_of_the_previous_store_version_still_opens(reference, tmp_path, capsys):
    """A first-version store: no score column, no generation record, parent_id NOT NULL."""
    import shutil
    import sqlite3

    old = Path(shutil.copytree(reference, tmp_path / "old"))
    db = sqlite3.connect(old / "evowatt.sqlite")
    db.execute("ALTER TABLE evaluations DROP COLUMN score")
    db.execute("ALTER TABLE generations DROP COLUMN record")
    db.commit()
    db.close()
    store = RunStore(old)  # opening adds the columns back, empty
    try:
        generations = store.generations()
        assert [g.evaluations for g in generations] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
        assert all(g.front == [] and g.hypervolume is None for g in generations)
        assert all(r.score is None for r in store.select())
    finally:
        store.close()
    assert main(["show", str(old)]) == 0
    assert "generations of" in capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["pareto", "random"])
def test_a_run_where_no_network_meets_the_constraints_says_so_and_names_the_closest(
    tmp_path, capsys, algorithm
):
    """Nothing feasible: nothing is handed over or final-trained, and the run says why and what to change.
    The random search keeps only feasible networks in its population, and the closest beside it."""
    data = config_dict(
        BASE,
        **{
            "search.algorithm": algorithm,
            "search.generations": 0 if algorithm == "pareto" else 1,
            "search.constraints": ["params < 2"],
            "network.macro_structure": ["learning"],  # one exit: the closest is the smallest network
            "training.final_training": {"budget": {"steps": 5}},
        },
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    rows = _rows(tmp_path / "run")
    assert rows and not [r for r in rows if r.kind == "final"]
    params = {r.id: r.metrics["params"]["value"] for r in rows if r.status == "ok"}
    closest = min(params, key=lambda i: (params[i], i))  # one constraint: least violation is fewest params
    assert "no evaluated network meets the constraints (params < 2)" in out
    assert f"the closest is #{closest} (" in out and "violates params < 2" in out
    assert "loosen search.constraints" in out
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "note" and "the closest is" in e["message"] for e in events)


def test_the_handed_models_test_metrics_are_added_in_one_write(tmp_path, monkeypatch):
    """A run killed between the full model's and the early exit's test accuracy would leave one of them,
    and its resumed run, which finds test_accuracy, would never add test_accuracy_1: one write holds both."""
    writes = []
    real = RunStore._write

    def spy(self, what, *args, **kwargs):
        writes.append(what)
        return real(self, what, *args, **kwargs)

    monkeypatch.setattr(RunStore, "_write", spy)
    data = config_dict(BASE, **{"search.generations": 0})
    result = run(validate_config(data), out=tmp_path / "r")
    added = [w for w in writes if w.startswith("metrics test_accuracy")]
    assert result.handed and len(added) == len(result.handed)
    assert all(w.startswith("metrics test_accuracy, test_accuracy_1 of evaluation") for w in added)
    timed = [w for w in writes if w.startswith("metrics latency")]  # each model's exits in one write too
    assert timed and all(w.startswith("metrics latency, latency_1 of evaluation") for w in timed)
    assert all({"test_accuracy", "test_accuracy_1"} <= set(r.metrics) for r in result.handed)
