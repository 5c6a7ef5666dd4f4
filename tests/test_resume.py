"""Crash-safe runs: killed at each kill point and resumed, a run equals one uninterrupted reference run.

Also the hard inputs: a corrupt or truncated checkpoint or database, a changed config, a full disk, an
individual that raises, a second process on the same run. Everything on digits under a step budget with
one torch thread, so every evaluation is deterministic; clock readings are left out of the comparisons.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import evowatt.driver.evaluate
import evowatt.driver.store
from evowatt.cli.main import main
from evowatt.config.load import validate_config
from evowatt.driver import session
from evowatt.driver.rundir import CHECKPOINT_NAME, DB_NAME
from evowatt.driver.session import resume, run
from evowatt.driver.setup import planned_evaluations
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.records import Budget, EvalResult
from evowatt.search.protocol import Candidate
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

# seed 1 with train_longer 0.4 has a train_longer mutant in both later generations, continuing from the
# weights of a different parent each time (#0, then #4): a resume must find those weights on disk
BASE: dict[str, Any] = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 2, "lambda": 2, "mutation": {"train_longer": 0.4}},
    "training": {"budget": {"steps": 15}, "threads": 1},
    "energy": FAST_ESTIMATE,
}
TOTAL = 2 + 3 + 3  # generation 0: lambda; then the retrained parent + lambda per generation
KILLS = {  # kill point -> evaluations recorded when it fires
    "checkpoint-write:2": 5,  # generation 1 is recorded, its checkpoint's temp file written, not renamed
    "mid-training:5": 4,  # evaluation 4 trained and saved its weights, not recorded
    "after-record:6": 6,  # evaluation 5 recorded, generation 2's checkpoint not yet written
}


def _config(**overrides: Any):
    return validate_config(config_dict(BASE, **overrides))


def _rows(run_dir: Path) -> list[Evaluation]:
    store = RunStore(run_dir)
    try:
        return store.select()
    finally:
        store.close()


def _untimed(row: Evaluation) -> Evaluation:
    """A row without the latency its run's end adds to the models it shows (front, answer)."""
    return dataclasses.replace(
        row, metrics={k: v for k, v in row.metrics.items() if not k.startswith("latency")}
    )


def _deterministic(row: Evaluation) -> dict[str, Any]:
    """What must match between runs: no clock readings (latency, wall and measurement times), no host."""
    metrics = {
        name: m
        for name, m in row.metrics.items()
        if not str(m.get("method", "")).startswith("measured:") and "latency" not in name
    }
    train = {k: v for k, v in (row.train or {}).items() if k != "seconds"}
    keys = ("id", "generation", "kind", "parent_id", "continue_from", "mutations", "seed", "genome")
    return {
        **{k: getattr(row, k) for k in keys},
        **{
            k: getattr(row, k)
            for k in ("status", "reason", "fitness", "steps", "budget_steps", "budget_seconds")
        },
        "metrics": metrics,
        "train": train,
        "has_weights": row.weights is not None,
    }


def history(run_dir: Path) -> dict[str, Any]:
    """A run's evaluations, generations, final checkpoint and kept weights, without clock readings."""
    store = RunStore(run_dir)
    try:
        generations = [
            {
                "generation": g.generation,
                "parent_id": g.best_id,
                "best_fitness": g.best_fitness,
                "evaluations": g.evaluations,
            }
            for g in store.generations()
        ]
        checkpoint = store.load_checkpoint()
    finally:
        store.close()
    weights = {p.name: p.read_bytes() for p in sorted((run_dir / "weights").iterdir())}
    return {
        "evaluations": [_deterministic(r) for r in _rows(run_dir)],
        "generations": generations,
        "checkpoint": {
            k: checkpoint[k] for k in ("generation", "next_id", "parent", "pending", "history", "rng")
        },
        "weights": weights,
    }


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = history(run_dir), history(reference)
    assert [e["id"] for e in got["evaluations"]] == list(range(TOTAL))
    for g, w in zip(got["evaluations"], want["evaluations"], strict=True):
        assert g == w, f"evaluation {w['id']} differs"
    assert got["generations"] == want["generations"]
    assert got["checkpoint"] == want["checkpoint"]
    assert got["weights"] == want["weights"]  # the same parent's weights, byte for byte


@pytest.fixture
def count_evaluations(monkeypatch) -> list[int]:
    """The ids the loop evaluates (rather than reuses from the store)."""
    calls: list[int] = []
    real = session.evaluate

    def counting(task):
        calls.append(task.id)
        return real(task)

    monkeypatch.setattr(session, "evaluate", counting)
    return calls


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume")
    (path / "config.yaml").write_text(yaml.safe_dump(BASE))
    return path


@pytest.fixture(scope="module")
def killed_runs(workdir: Path) -> dict[str, Path]:
    """`evowatt run` in subprocesses, each ended by one kill point; started together to share the wait."""
    procs = {}
    for kill in KILLS:
        out = workdir / f"killed-{kill.replace(':', '-')}"
        env = {**os.environ, "EVOWATT_KILL_AT": kill, "COLUMNS": "200"}
        cmd = [
            sys.executable,
            "-m",
            "evowatt.cli.main",
            "run",
            str(workdir / "config.yaml"),
            "--out",
            str(out),
        ]
        procs[kill] = (out, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    dirs = {}
    for kill, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 137, f"{kill}: exit {proc.returncode}\n{err.decode()}"
        dirs[kill] = out
    return dirs


@pytest.fixture(scope="module")
def reference(workdir: Path, killed_runs: dict[str, Path]) -> Path:
    """The one uninterrupted run everything is compared with (after the subprocesses: they share cores)."""
    out = workdir / "reference"
    result = run(_config(), out=out)
    assert result.evaluations == TOTAL and len(result.generations) == 3
    assert planned_evaluations(_config()) == TOTAL  # the progress bar's total
    kinds = [r.kind for r in _rows(out)]
    assert kinds.count("train_longer") == 2  # the test exercises continuing from a parent's weights
    return out


def _copy(reference: Path, tmp_path: Path) -> Path:
    """A copy of the reference run in another place: weights are recorded relative to the run directory."""
    return Path(shutil.copytree(reference, tmp_path / "copy"))


# --- kill points ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill", list(KILLS))
def test_killed_run_resumes_to_the_reference(kill, killed_runs, reference, count_evaluations, capsys):
    run_dir = killed_runs[kill]
    before = {r.id: r for r in _rows(run_dir)}
    assert len(before) == KILLS[kill]
    if kill.startswith("checkpoint-write"):
        # the kill came between the temporary file and the rename: the previous checkpoint is in place
        assert (run_dir / f"{CHECKPOINT_NAME}.tmp").exists()
        assert json.loads((run_dir / CHECKPOINT_NAME).read_text())["generation"] == 1
    if kill.startswith("mid-training"):
        assert (run_dir / "weights" / "4.safetensors").exists() and 4 not in before  # trained, not recorded

    assert main(["resume", str(run_dir)]) == 0, capsys.readouterr().err

    # evaluations recorded before the kill are reused, not recomputed, and not rewritten
    assert sorted(count_evaluations) == [i for i in range(TOTAL) if i not in before]
    after = {r.id: r for r in _rows(run_dir)}
    for evaluation_id, row in before.items():  # but for the clock latency the end adds to shown models
        unweighted = dataclasses.replace(after[evaluation_id], weights=None)
        assert _untimed(unweighted) == _untimed(dataclasses.replace(row, weights=None))
    _assert_same_run(run_dir, reference)


def test_resuming_a_finished_run_evaluates_nothing(reference, tmp_path, count_evaluations):
    run_dir = _copy(reference, tmp_path)
    result = resume(run_dir)
    assert count_evaluations == [] and result.evaluations == TOTAL
    _assert_same_run(run_dir, reference)


# --- checkpoints ------------------------------------------------------------------------------------
def test_checkpoint_names_the_weights_it_needs(reference):
    checkpoint = json.loads((reference / CHECKPOINT_NAME).read_text())
    parent = checkpoint["parent"]["id"]
    needed = checkpoint["checkpoint"]["weights"]
    assert list(needed) == [str(parent)] and needed[str(parent)]["file"] == f"weights/{parent}.safetensors"
    assert isinstance(checkpoint["rng"]["state"], dict)  # the search's generator, as plain JSON
    # safetensors, not pickle: the header is JSON after an 8-byte length
    data = (reference / needed[str(parent)]["file"]).read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert all("dtype" in v for k, v in header.items() if k != "__metadata__")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt or truncated"),
        (lambda p: p.write_bytes(b"\x00\xff garbage"), "corrupt or truncated"),
        (lambda p: p.write_text("[1, 2]"), "not an evowatt checkpoint"),
        (
            lambda p: p.write_text('{"generation": 3}'),
            "not a valid evowatt checkpoint: field 'next_id': required field is missing",
        ),
    ],
    ids=["truncated", "garbage", "not-a-checkpoint", "missing-keys"],
)
def test_corrupt_checkpoint_one_message_nothing_changed(reference, tmp_path, capsys, damage, message):
    run_dir = _copy(reference, tmp_path)
    damage(run_dir / CHECKPOINT_NAME)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evowatt: error: checkpoint") and message in err and "Traceback" not in err
    assert "nothing was changed" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


def test_missing_parent_weights_are_named(reference, tmp_path, capsys):
    run_dir = _copy(reference, tmp_path)
    parent = json.loads((run_dir / CHECKPOINT_NAME).read_text())["parent"]["id"]
    (run_dir / "weights" / f"{parent}.safetensors").write_bytes(b"short")
    assert main(["resume", str(run_dir)]) == 2
    assert f"weights/{parent}.safetensors" in capsys.readouterr().err
    (run_dir / "weights" / f"{parent}.safetensors").unlink()
    assert main(["resume", str(run_dir)]) == 2
    assert "is missing" in capsys.readouterr().err


def test_deleted_checkpoint_replays_the_recorded_run(reference, tmp_path, count_evaluations):
    """The fix the corrupt-checkpoint message names: without a checkpoint, resume replays `tell`."""
    run_dir = _copy(reference, tmp_path)
    (run_dir / CHECKPOINT_NAME).unlink()
    resume(run_dir)
    assert count_evaluations == []
    _assert_same_run(run_dir, reference)


# --- the database -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 50, 4096, "half"])
def test_truncated_database_refused_not_recreated(reference, tmp_path, capsys, size):
    run_dir = _copy(reference, tmp_path)
    db = run_dir / DB_NAME
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2 if size == "half" else size])
    kept = db.read_bytes()
    for command in (["resume", str(run_dir)], ["show", str(run_dir)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{db} is corrupt or truncated" in err and "nothing was changed" in err
        assert db.read_bytes() == kept  # not repaired, not given fresh tables


def test_database_and_checkpoint_from_different_runs(reference, tmp_path, capsys):
    run_dir = _copy(reference, tmp_path)
    state = json.loads((run_dir / CHECKPOINT_NAME).read_text())
    state["parent"]["id"] = 99
    (run_dir / CHECKPOINT_NAME).write_text(json.dumps(state))
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "names evaluation 99 as the parent" in err and "do not belong to the same run" in err


def test_store_records_what_an_evaluation_was_given_and_took(reference, tmp_path):
    rows = _rows(reference)
    for row in rows:
        assert row.seed is not None and row.host and row.device == "cpu"
        assert row.status in ("ok", "invalid", "failed")
        assert row.steps == row.train["steps"] == 15 and row.budget_steps == 15
        assert row.train_seconds > 0 and row.budget_seconds is None
        assert row.status != "ok" or row.measure_seconds > 0  # ok evaluations measure energy
        assert row.result.id == row.id and row.result.metrics.items() <= row.metrics.items()
    # measurement time is kept when an evaluation reports it, at the top level or as a metric
    store = RunStore(_copy(reference, tmp_path))
    try:

        def candidate(evaluation_id: int) -> Candidate:
            return Candidate(evaluation_id, 9, "mutant", rows[0].genome, seed=0)

        store.record(candidate(50), EvalResult(50, "ok", measure_seconds=1.5))
        store.record(candidate(51), EvalResult(51, "failed", metrics={"measure_seconds": {"value": 2.5}}))
        store.record(candidate(52), EvalResult(52, "failed", reason="RuntimeError: x"), None, Budget(steps=7))
        assert [r.measure_seconds for r in store.select() if r.id >= 50] == [1.5, 2.5, None]
        assert store.get(52).budget_steps == 7 and store.get(52).steps is None
    finally:
        store.close()


def test_a_second_process_cannot_write_the_same_run(reference, tmp_path, capsys):
    run_dir = _copy(reference, tmp_path)
    holder = RunStore(run_dir, lock=True)
    try:
        assert main(["resume", str(run_dir)]) == 2
        assert "in use by another evowatt process" in capsys.readouterr().err
        RunStore(run_dir).close()  # readers (evowatt show) are not locked out
    finally:
        holder.close()


# --- a changed config -------------------------------------------------------------------------------
def test_changed_config_refused_naming_the_keys(reference, tmp_path, capsys):
    run_dir = _copy(reference, tmp_path)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["resume", str(run_dir), "--set", "search.lambda=3", "--set", "seed=5"]) == 2
    err = capsys.readouterr().err
    assert "search.lambda (2 -> 3)" in err and "seed (1 -> 5)" in err and "--allow-larger-budget" not in err

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**BASE, "training": {"budget": {"steps": 20}, "threads": 1}}))
    assert main(["resume", str(run_dir), "--config", str(other)]) == 2
    assert "training.budget.steps (15 -> 20)" in capsys.readouterr().err

    assert main(["resume", str(run_dir), "--set", "network.modules.0.network_structure=[0, 5]"]) == 2
    assert "network.modules.0.network_structure" in capsys.readouterr().err

    # a hand-edited config.yaml in the run directory is a change too
    edited = yaml.safe_load((run_dir / "config.yaml").read_text())
    edited["search"]["mutation"]["add_layer"] = 0.9
    (run_dir / "config.yaml").write_text(yaml.safe_dump(edited))
    assert main(["resume", str(run_dir)]) == 2
    assert "search.mutation.add_layer (0.25 -> 0.9)" in capsys.readouterr().err
    (run_dir / "config.yaml").write_bytes(files[run_dir / "config.yaml"])

    # a larger budget needs the flag; a smaller one is refused even with it
    assert main(["resume", str(run_dir), "--set", "search.generations=3"]) == 2
    assert "search.generations (2 -> 3)" in capsys.readouterr().err
    assert main(["resume", str(run_dir), "--set", "search.generations=1", "--allow-larger-budget"]) == 2
    assert "search.generations (2 -> 1)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


def test_larger_budget_extends_a_finished_run(reference, tmp_path, count_evaluations, capsys):
    run_dir = _copy(reference, tmp_path)
    # no time limit is the largest: setting one would lower the budget
    limited = ["resume", str(run_dir), "--set", "search.time_limit=3600", "--allow-larger-budget"]
    assert main(limited) == 2 and "search.time_limit (None -> 3600.0)" in capsys.readouterr().err
    args = ["resume", str(run_dir), "--set", "search.generations=3"]
    assert main([*args, "--allow-larger-budget"]) == 0, capsys.readouterr().err
    assert sorted(count_evaluations) == [8, 9, 10]  # one more generation: the parent and lambda mutants
    got, want = history(run_dir), history(reference)
    unpruned = [{**e, "has_weights": None} for e in got["evaluations"][:TOTAL]]
    assert unpruned == [{**e, "has_weights": None} for e in want["evaluations"]]
    assert got["generations"][:3] == want["generations"] and len(got["generations"]) == 4
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["search"]["generations"] == 3
    # the larger budget is now the run's own: resuming again needs no flag and evaluates nothing
    count_evaluations.clear()
    assert main(["resume", str(run_dir)]) == 0 and count_evaluations == []


def test_output_and_runner_keys_may_change(reference, tmp_path, count_evaluations, capsys):
    run_dir = _copy(reference, tmp_path)
    assert main(["resume", str(run_dir), "--set", "output.dir=elsewhere", "--set", "runner.workers=3"]) == 0
    assert count_evaluations == []


# --- failed writes ----------------------------------------------------------------------------------
def test_disk_full_during_checkpoint_keeps_the_previous_one(
    reference, workdir, tmp_path, monkeypatch, capsys
):
    real_replace = os.replace
    checkpoints = []

    def replace(src, dst):
        if str(dst).endswith(CHECKPOINT_NAME):
            checkpoints.append(dst)
            if len(checkpoints) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(evowatt.driver.store.os, "replace", replace)
    run_dir = tmp_path / "full"
    assert main(["run", str(workdir / "config.yaml"), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and f"free space then `evowatt resume {run_dir}`" in err
    assert "Traceback" not in err
    assert json.loads((run_dir / CHECKPOINT_NAME).read_text())["generation"] == 1  # the previous one
    assert not (run_dir / f"{CHECKPOINT_NAME}.tmp").exists()
    assert len(_rows(run_dir)) == 5  # generation 1 is recorded

    monkeypatch.setattr(evowatt.driver.store.os, "replace", real_replace)
    calls: list[int] = []
    real = session.evaluate
    monkeypatch.setattr(session, "evaluate", lambda task: calls.append(task.id) or real(task))
    assert main(["resume", str(run_dir)]) == 0
    assert calls == [5, 6, 7]
    _assert_same_run(run_dir, reference)


def test_disk_full_while_saving_weights_is_not_an_individuals_failure(
    reference, workdir, tmp_path, monkeypatch, capsys
):
    """The driver writes the weights a result brings back; a full disk there is not the individual's."""
    real_save = RunStore.write_weights
    saves = []

    def write_weights(self, evaluation_id, data):
        saves.append(evaluation_id)
        if len(saves) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", self.weights_path(evaluation_id))
        return real_save(self, evaluation_id, data)

    monkeypatch.setattr(RunStore, "write_weights", write_weights)
    run_dir = tmp_path / "full"
    assert main(["run", str(workdir / "config.yaml"), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "disk full while evaluation 2 saved its weights" in err and "free space then" in err
    assert [r.id for r in _rows(run_dir)] == [0, 1]

    monkeypatch.setattr(RunStore, "write_weights", real_save)
    assert main(["resume", str(run_dir)]) == 0
    _assert_same_run(run_dir, reference)


def test_full_database_ends_with_one_message(reference, workdir, tmp_path, monkeypatch, capsys):
    """SQLite's own 'database or disk is full', made real by capping the database's page count."""
    real_open = RunStore._open_checked

    def capped(self):
        db = real_open(self)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 2}")
        return db

    monkeypatch.setattr(RunStore, "_open_checked", capped)
    run_dir = tmp_path / "full"
    assert main(["run", str(workdir / "config.yaml"), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "free space then `evowatt resume" in err
    recorded = len(_rows(run_dir))
    assert 0 < recorded < TOTAL

    monkeypatch.setattr(RunStore, "_open_checked", real_open)
    assert main(["resume", str(run_dir)]) == 0
    _assert_same_run(run_dir, reference)


# --- individuals that raise -------------------------------------------------------------------------
def test_individuals_that_raise_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real_train = evowatt.driver.evaluate.train
    calls = []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        outcome = real_train(*args, **kwargs)
        if len(calls) == 3:
            return dataclasses.replace(outcome, stop_reason="diverged")  # a NaN loss
        return outcome

    monkeypatch.setattr(evowatt.driver.evaluate, "train", train)
    # a parameter cap that some sampled networks exceed: invalid before any weight is allocated
    result = run(_config(**{"search.caps": {"max_params": 2_000}}), out=tmp_path / "r")
    assert result.evaluations == TOTAL and len(result.generations) == 3
    rows = {r.status: r for r in _rows(tmp_path / "r")}
    assert rows["failed"].reason == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert rows["failed"].fitness is None and rows["failed"].weights is None
    invalid = [r.reason for r in _rows(tmp_path / "r") if r.status == "invalid"]
    assert "training diverged (NaN or infinite loss)" in invalid
    assert any("cap" in reason for reason in invalid)
    assert rows["ok"].fitness is not None and result.best.status == "ok"


def test_no_pickle_of_run_state():
    """Run state is JSON, SQLite and safetensors: no pickle, no torch.load without weights_only=True."""
    src = Path(evowatt.driver.store.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        if path.name != "data.py":  # data.py reads CIFAR-10's own (pickled) distribution format only
            assert "import pickle" not in text, path


def test_killpoint_spec_is_checked():
    code = "import evowatt.driver.killpoint"
    env = {**os.environ, "EVOWATT_KILL_AT": "checkpoint-wirte:1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "checkpoint-write" in done.stderr


def test_store_errors_are_user_errors(tmp_path):
    (tmp_path / DB_NAME).write_text("not a database at all, just some text that is long enough " * 4)
    with pytest.raises(EvowattError, match="no SQLite header"):
        RunStore(tmp_path)
    db = sqlite3.connect(tmp_path / "other.sqlite")
    db.execute("CREATE TABLE x (a)")
    db.close()
    os.replace(tmp_path / "other.sqlite", tmp_path / DB_NAME)
    with pytest.raises(EvowattError, match="tables meta, evaluations, generations missing"):
        RunStore(tmp_path)


def test_a_store_from_before_the_added_columns_opens_and_resumes(reference, tmp_path, count_evaluations):
    """Columns added later (steps, budget, measure time, full result) are added on open, nothing rewritten."""
    run_dir = _copy(reference, tmp_path)
    db = sqlite3.connect(run_dir / DB_NAME)
    for column in ("steps", "train_seconds", "budget_steps", "budget_seconds", "measure_seconds", "result"):
        db.execute(f"ALTER TABLE evaluations DROP COLUMN {column}")
    db.execute("DELETE FROM meta WHERE key IN ('config', 'grammar_sha256')")
    db.commit()
    db.close()
    rows = _rows(run_dir)
    assert rows[0].result is None and rows[0].steps is None and rows[0].genome
    (run_dir / CHECKPOINT_NAME).unlink()  # replay every generation from the older rows
    resume(run_dir)
    assert count_evaluations == []
    got = history(run_dir)
    assert [{**e, "steps": None, "budget_steps": None} for e in got["evaluations"]] == [
        {**e, "steps": None, "budget_steps": None} for e in history(reference)["evaluations"]
    ]
