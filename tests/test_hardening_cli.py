"""Classes 2, 5 and 8 of issue 14 on the command line: out-of-range values refused by the argument parser
with the allowed range; a closed stdout, a second Ctrl-C and a terabyte input shape; paths that are a
directory where a file is expected, or missing, named for what they are; a bug says so and exits 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from evowatt.cli.main import main
from tests.hardening import TINY_RUN, fails


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "evowatt.cli", *map(str, args)], env=env, **kwargs)


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(save|script)` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    torch.jit.save(
        torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))), str(path)
    )
    return path


# --- class 2: out-of-range values ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["check-grammar", "cnn", "--samples", "0"],
            "argument --samples: expected a positive integer (1 or more), got '0'",
        ),
        (["check-grammar", "cnn", "--samples", "-5"], "argument --samples: expected a positive integer"),
        (
            ["check-grammar", "cnn", "--classes", "1"],
            "argument --classes: expected a class count of 2 or more",
        ),
        (["check-grammar", "cnn", "--classes", "-3"], "argument --classes"),
        (
            ["check-grammar", "cnn", "--seed", "-1"],
            "argument --seed: expected a non-negative integer (0 or more)",
        ),
        (["check-grammar", "cnn", "--build", "-2"], "argument --build: expected a non-negative integer"),
        (
            ["check-grammar", "cnn", "--input-shape", "0,8,8"],
            "argument --input-shape: expected C,H,W as three positive",
        ),
        (["check-grammar", "cnn", "--input-shape", "1,-8,8"], "argument --input-shape"),
        (["check-grammar", "cnn", "--input-shape", "1,8"], "argument --input-shape"),
        (["run", "c.yaml", "--seed", "-2"], "argument --seed: expected a non-negative integer"),
        (
            ["measure", "m.pt", "--input-shape", "1,8,8", "--batch-size", "0"],
            "argument --batch-size: expected a positive integer",
        ),
        (
            ["measure", "m.pt", "--input-shape", "1,8,8", "--time-cap", "-1"],
            "argument --time-cap: expected a positive number",
        ),
        (["measure", "m.pt", "--input-shape", "1,8,8", "--time-cap", "nan"], "argument --time-cap"),
        (["measure", "m.pt", "--input-shape", "1,8,8", "--nvml-index", "-1"], "argument --nvml-index"),
        (
            ["import-config", "e.json", "--grammar", "g", "--dataset", "digits", "--energy-reference", "0"],
            "argument --energy-reference: expected a positive number",
        ),
    ],
)
def test_out_of_range_values_are_refused_by_the_parser(argv, message, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert message in err and "usage:" in err


def test_a_negative_seed_in_the_config_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "seed": -3}))
    fails(
        capsys,
        ["run", cfg, "--out", tmp_path / "r"],
        f"invalid configuration in {cfg}",
        "seed: Input should be greater than or equal to 0",
    )


# --- class 5: environment faults ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    from evowatt.config.load import validate_config
    from evowatt.driver.session import run

    out = tmp_path_factory.mktemp("cli") / "run"
    run(validate_config(TINY_RUN), out=out)
    return out


@pytest.mark.parametrize(
    "argv", [["show", "{run}", "--json"], ["show", "{run}"], ["meters", "--json"], ["meters"]]
)
def test_a_closed_stdout_ends_quietly(argv, finished):
    """`evowatt show RUN --json | head -c 10`: the reader has gone, so evowatt stops, no BrokenPipeError."""
    args = [a.format(run=finished) for a in argv]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evowatt.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.read(10)
    proc.stdout.close()  # before evowatt has written everything
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 128 + signal.SIGPIPE), err  # 0 when all fitted in the pipe before the close


@pytest.mark.parametrize(
    "argv",
    [["show", "{run}", "--json"], ["show", "{run}"], ["meters"], ["check-grammar", "cnn", "--samples", "2"]],
)
def test_a_reader_that_is_already_gone(argv, finished):
    """The pipe is closed before evowatt writes a byte: every command ends with SIGPIPE's status, quietly."""
    args = [a.format(run=finished) for a in argv]
    proc = subprocess.Popen(
        [sys.executable, "-m", "evowatt.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGPIPE, err
    assert err == "", err


def test_a_second_ctrl_c_during_shutdown_exits_130(tmp_path):
    config = {
        **TINY_RUN,
        "search": {"generations": 50, "lambda": 2},
        "training": {"budget": {"seconds": 3}, "threads": 1},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evowatt.cli", "run", str(cfg), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "evowatt.sqlite").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # training an individual
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # the first is being handled: the run is shutting down
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # exit 130, or death by SIGINT itself when the second signal lands after the handler is gone: a shell
    # reports both as 130, the usual code of Ctrl-C
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert (out / "evowatt.sqlite").exists()  # the run is still there to resume


def test_a_terabyte_input_shape_is_refused_before_allocating(model, capsys):
    fails(
        capsys,
        ["measure", model, "--input-shape", "1,1000000,1000000", "--meter", "estimate"],
        "--input-shape 1,1000000,1000000 with a measurement batch of 64 needs",
        "for the input batch alone",
    )
    fails(
        capsys,
        ["measure", model, "--input-shape", "3,1000,1000", "--batch-size", "10000000", "--meter", "estimate"],
        "smaller --batch-size",
    )


# --- class 8: messages that say what the input is ----------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "{dir}"], "config file {dir} is a directory, not a file"),
        (["run", "{dir}/nope.yaml"], "config file {dir}/nope.yaml not found"),
        (["check-grammar", "{dir}"], "grammar file {dir} is a directory, not a file"),
        (["check-grammar", "cnn", "--config", "{dir}"], "config file {dir} is a directory"),
        (
            ["import-config", "{dir}", "--grammar", "g", "--dataset", "digits"],
            "ENERGIZE config {dir} is a directory",
        ),
        (["measure", "{dir}", "--input-shape", "1,8,8"], "model file {dir} is a directory, not a file"),
        (["resume", "{run}", "--config", "{dir}"], "config file {dir} is a directory"),
    ],
)
def test_a_directory_where_a_file_is_expected(argv, message, tmp_path, finished, capsys):
    args = [a.format(dir=tmp_path, run=finished) for a in argv]
    fails(capsys, args, message.format(dir=tmp_path))


@pytest.mark.parametrize(
    ("overrides", "blamed"),
    [
        (
            ["--set", "search.lamda=3"],
            "search.lamda: unknown key (check its spelling and section); given by --set search.lamda=3",
        ),
        (["--set", "search.lambda=0"], "given by --set search.lambda=0"),
        (["--set", "search=3"], "given by --set search=3"),
        (["--set", "training.budget.seconds=1"], "given by --set training.budget.seconds=1"),
    ],
)
def test_an_unknown_set_key_is_blamed_on_the_set(overrides, blamed, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY_RUN))
    err = fails(capsys, ["run", cfg, *overrides], blamed)
    assert err.startswith(f"evowatt: error: invalid --set value (applied to {cfg})")


def test_a_bad_key_in_the_file_is_blamed_on_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "serach": {}}))
    err = fails(
        capsys,
        ["run", cfg, "--set", "search.lambda=2"],
        f"invalid configuration in {cfg}",
        "serach: unknown key",
    )
    assert "given by --set" not in err


def test_a_bug_is_an_internal_error_exit_1(monkeypatch, capsys):
    import evowatt.cli.main
    import evowatt.cli.parser

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(evowatt.cli.parser, "cmd_show", broken)
    parser = evowatt.cli.main.build_parser
    monkeypatch.setattr(
        evowatt.cli.main,
        "build_parser",
        lambda: _with_show(parser(), broken),
    )
    assert main(["show", "x"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: division by zero" in err and "please report" in err
    assert "Traceback" not in err


def _with_show(parser, func):
    for action in parser._subparsers._group_actions:
        action.choices["show"].set_defaults(func=func)
    return parser
