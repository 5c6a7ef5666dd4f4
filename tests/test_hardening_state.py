"""Classes 4 and 6 of issue 14 (and the run-directory part of 5 and 8): run state of the right syntax but
the wrong shape is named field by field; a refused run or resume leaves every file of the directory
byte-identical; --out that cannot be a run directory and a read-only run directory are one message."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

import evowatt.driver.rundir
from evowatt.config.load import validate_config
from evowatt.driver.rundir import CHECKPOINT_NAME, DB_NAME, lock_run_dir
from evowatt.driver.session import run
from tests.hardening import TINY_RUN, fails, snapshot


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "run"
    run(validate_config(TINY_RUN), out=out)
    (out.parent / "c.yaml").write_text(yaml.safe_dump(TINY_RUN))
    return out


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _edit_checkpoint(run_dir: Path, change) -> None:
    path = run_dir / CHECKPOINT_NAME
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))


def _module0(s):
    return s["parent"]["genome"]["modules"][0]


def _first_layer(s):
    """The first layer of the parent's genome, and its path (a module may have none)."""
    for m, module in enumerate(s["parent"]["genome"]["modules"]):
        if module["layers"]:
            return module["layers"][0], f"parent.genome.modules.{m}.layers.0"
    raise AssertionError("the parent has no layer")


# change -> the field the message names
CHECKPOINTS = {
    "generation a string": (
        lambda s: s.update(generation="1"),
        "field 'generation': Input should be a valid integer",
    ),
    "next_id missing": (lambda s: s.pop("next_id"), "field 'next_id': required field is missing"),
    "parent a list": (lambda s: s.update(parent=[0]), "field 'parent': Input should be a valid dictionary"),
    "parent id a string": (lambda s: s["parent"].update(id="0"), "field 'parent.id'"),
    "pending holds strings": (lambda s: s.update(pending=["x"]), "field 'pending.0'"),
    "history an int": (lambda s: s.update(history=5), "field 'history': Input should be a valid list"),
    "rng of another kind": (
        lambda s: s.update(rng={"bit_generator": "MT19937"}),
        "field 'rng.bit_generator'",
    ),
    "module a string": (
        lambda s: s["parent"]["genome"].update(modules=["features"]),
        "field 'parent.genome.modules.0'",
    ),
    "choice negative": (
        lambda s: _first_layer(s)[0].update(choice=-1),
        ".layers.0.choice': Input should be greater than or equal to 0",
    ),
    "choice outside the grammar": (
        lambda s: _first_layer(s)[0].update(choice=99),
        "does not fit the run's grammar",
    ),
    "module of an unknown type": (lambda s: _module0(s).update(type="nope"), "module 0 has type 'nope'"),
    "archive capacity 0": (
        lambda s: s.update(archive={"capacity": 0, "entries": []}),
        "field 'archive.capacity'",
    ),
    "store section a list": (
        lambda s: s.update(checkpoint=[1]),
        "field 'checkpoint': Input should be a valid dictionary",
    ),
    "weights entry a string": (
        lambda s: s["checkpoint"].update(weights={"0": "x"}),
        "field 'checkpoint.weights.0'",
    ),
    "format a string": (lambda s: s["checkpoint"].update(format="2"), "field 'checkpoint.format'"),
    "weights outside the run": (
        lambda s: s["checkpoint"].update(
            weights={"0": {"file": "../../etc/passwd", "bytes": 1, "sha256": "0" * 64}}
        ),
        "must be a path inside the run directory",
    ),
    "weights id not a number": (
        lambda s: s["checkpoint"].update(
            weights={"x": {"file": "weights/0.safetensors", "bytes": 1, "sha256": "0" * 64}}
        ),
        "field 'checkpoint.weights.x (a key)': String should match pattern",
    ),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_a_checkpoint_of_the_wrong_shape_is_named_and_nothing_changes(name, copy, capsys):
    change, field = CHECKPOINTS[name]
    _edit_checkpoint(copy, change)
    before = snapshot(copy)
    fails(
        capsys,
        ["resume", copy],
        f"checkpoint {copy / CHECKPOINT_NAME}",
        "not a valid evowatt checkpoint",
        field,
    )
    assert snapshot(copy) == before


ROWS = {
    "genome of the wrong shape": ("genome", '{"modules": 5}', "evaluation 0: genome.modules"),
    "metrics not JSON": ("metrics", "{not json", "evaluation 0: column metrics is not JSON"),
    "metrics a list": ("metrics", "[1, 2]", "evaluation 0: metrics"),
    "mutations a number": ("mutations", "7", "evaluation 0: mutations"),
}


@pytest.mark.parametrize("command", ["show", "resume"])
@pytest.mark.parametrize("name", list(ROWS))
def test_a_stored_row_of_the_wrong_shape_is_named_and_nothing_changes(name, command, copy, capsys):
    column, value, field = ROWS[name]
    db = sqlite3.connect(copy / DB_NAME)
    with db:
        db.execute(f"UPDATE evaluations SET {column} = ? WHERE id = 0", (value,))
    db.close()
    before = snapshot(copy)
    fails(capsys, [command, copy], f"{copy / DB_NAME} is corrupt", field)
    assert snapshot(copy) == before


# --- a refused command changes nothing ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "seed=5"], "the config differs from the one"),
        (["--set", "search.lamda=3"], "given by --set search.lamda=3"),
        (["--set", "search.lambda=0"], "given by --set search.lambda=0"),
        (["--config", "{missing}"], "not found"),
        (["--config", "{dir}"], "is a directory, not a file"),
    ],
)
def test_a_refused_resume_changes_nothing(args, message, copy, tmp_path, capsys):
    args = [a.format(missing=tmp_path / "nope.yaml", dir=tmp_path) for a in args]
    before = snapshot(copy)
    fails(capsys, ["resume", copy, *args], message)
    assert snapshot(copy) == before


def test_a_resume_refused_by_the_lock_changes_nothing(copy, capsys):
    before = snapshot(copy)
    holder = lock_run_dir(copy)
    try:
        fails(capsys, ["resume", copy], "in use by another evowatt process")
    finally:
        holder.close()
    assert snapshot(copy) == before


def test_a_run_into_a_finished_run_changes_nothing(copy, finished, capsys):
    before = snapshot(copy)
    fails(capsys, ["run", finished.parent / "c.yaml", "--out", copy, "--seed", "2"], "already holds a run")
    assert snapshot(copy) == before


def test_a_second_run_into_a_starting_run_changes_nothing(tmp_path, finished, capsys):
    """The reported loss: run A has written its config and holds the lock, its store not yet made; run B
    with another seed into the same --out must be refused before it writes config.yaml."""
    starting = tmp_path / "starting"
    starting.mkdir()
    shutil.copy(finished / "config.yaml", starting / "config.yaml")
    shutil.copy(finished / "grammar.grammar", starting / "grammar.grammar")
    holder = lock_run_dir(starting)
    before = snapshot(starting)
    try:
        fails(
            capsys, ["run", finished.parent / "c.yaml", "--out", starting, "--seed", "2"], "in use by another"
        )
    finally:
        holder.close()
    assert snapshot(starting) == before
    assert yaml.safe_load((starting / "config.yaml").read_text())["seed"] == TINY_RUN["seed"]


def test_a_run_with_a_bad_config_creates_no_directory(tmp_path, finished, capsys):
    fails(
        capsys,
        ["run", finished.parent / "c.yaml", "--out", tmp_path / "new", "--set", "search.lambda=0"],
        "lambda",
    )
    assert not (tmp_path / "new").exists()


# --- places that cannot be a run directory -----------------------------------------------------------
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{file}", "is an existing file, not a directory"),
        ("{file}/sub", "cannot create the run directory"),
    ],
)
def test_out_that_cannot_be_a_run_directory(out, message, tmp_path, finished, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    err = fails(capsys, ["run", finished.parent / "c.yaml", "--out", out.format(file=file)], message, "--out")
    assert "evowatt resume" not in err  # there is no run to resume
    assert file.read_text() == "mine"


def test_a_read_only_run_directory_is_one_message(copy, capsys, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(evowatt.driver.rundir, "_open_lock_file", refuse)
    before = snapshot(copy)
    fails(
        capsys,
        ["resume", copy],
        f"cannot write in the run directory {copy}",
        "Permission denied",
        "chmod u+w",
    )
    assert snapshot(copy) == before


@pytest.mark.skipif(
    not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
    reason="root can write anywhere",
)
def test_a_read_only_run_directory_for_real(copy, capsys):
    mode = copy.stat().st_mode
    copy.chmod(0o555)
    try:
        fails(capsys, ["resume", copy], "cannot write in the run directory")
        assert fails is not None
    finally:
        copy.chmod(mode)


def test_show_reads_a_run_it_cannot_write(copy, capsys, monkeypatch):
    from evowatt.cli.main import main

    refused = PermissionError(13, "no")
    monkeypatch.setattr(evowatt.driver.rundir, "_open_lock_file", lambda path: (_ for _ in ()).throw(refused))
    assert main(["show", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == 3


# --- export (it landed after the issue was filed): a refused export changes nothing -----------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999"], "has no evaluation 999"),
        (["--best", "--format", "xyz"], "unknown format xyz"),
        ([], "name what to export"),
        (["--pick", "nonsense"], "budget 'nonsense'"),
        (["--best", "--out", "{file}"], "--out {file} is an existing file, not a directory"),
        (["--best", "--out", "{file}/sub"], "cannot create the export directory {file}/sub (--out)"),
    ],
)
def test_a_refused_export_changes_nothing(args, message, copy, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    before = snapshot(copy)
    fails(capsys, ["export", copy, *[a.format(file=file) for a in args]], message.format(file=file))
    assert snapshot(copy) == before
    assert file.read_text() == "mine"
