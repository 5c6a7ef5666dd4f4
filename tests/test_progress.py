"""Progress that informs: best so far that never falls, the front summarised, the time left against the
time limit, the hypervolume as a share of the box, and a resumed run's totals and best carried on."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from evowatt.cli.progress import PlainProgress, RunSoFar, make_progress
from evowatt.config.load import validate_config
from evowatt.driver.observe import (
    EvaluationDone,
    FinalDone,
    FinalTraining,
    GenerationStarted,
    RunStarted,
    Told,
)
from evowatt.driver.session import run
from evowatt.driver.setup import planned_evaluations
from evowatt.driver.store import RunStore
from evowatt.records import EvalResult
from evowatt.search.pareto import ParetoSearch
from evowatt.search.protocol import GenerationRecord, Score
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

ES: dict[str, Any] = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 2, "lambda": 2, "time_limit": 600},
    "training": {"budget": {"steps": 15}, "threads": 1},
    "energy": FAST_ESTIMATE,
}
PARETO: dict[str, Any] = {
    **ES,
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {"algorithm": "pareto", "population": 3, "lambda": 3, "generations": 2, "time_limit": 600},
}
OBJECTIVES = [("accuracy", "maximize"), ("energy", "minimize")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _candidate(i: int, kind: str = "mutant") -> SimpleNamespace:
    return SimpleNamespace(id=i, kind=kind, parent_id=None)


def _result(i: int, accuracy: float, energy: float = 1e-6) -> EvalResult:
    metrics = {
        "accuracy": {"value": accuracy, "method": "computed:evo_test"},
        "energy": {"value": energy, "method": "estimated:model"},
    }
    return EvalResult.coerce(
        {"id": i, "status": "ok", "metrics": metrics, "train": {"seconds": 0.5, "steps": 10}}
    )


def _point(accuracy: float, energy: float, violation: float = 0.0) -> dict[str, Any]:
    return {"values": [accuracy, energy], "violation": violation}


def _lines(out: io.StringIO, start: str) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith(start)]


def _best(line: str) -> float:
    return float(re.search(r"  best (\S+)", line).group(1))  # type: ignore[union-attr]


def test_es_best_never_falls_when_the_retrained_parent_scores_lower():
    out = io.StringIO()
    progress = PlainProgress(out=out, run=RunSoFar(7))
    progress(RunStarted(run_dir=Path("r"), generations=None, lam=1, meter=None))
    progress(GenerationStarted(generation=0, candidates=2))
    for i, fitness in enumerate([0.5, 0.8]):
        progress(
            EvaluationDone(candidate=_candidate(i, "random"), result=_result(i, fitness), fitness=fitness)
        )
    progress(
        Told(record=GenerationRecord(0, [0, 1], [1], best_id=1, best_fitness=0.8), search=None, parent=None)
    )
    progress(GenerationStarted(generation=1, candidates=3))
    # the parent, retrained, scores lower than it did; so do its mutants
    for i, fitness in [(2, 0.6), (3, 0.7), (4, None)]:
        progress(EvaluationDone(candidate=_candidate(i), result=_result(i, fitness or 0.1), fitness=fitness))
    progress(
        Told(
            record=GenerationRecord(1, [2, 3, 4], [3], best_id=3, best_fitness=0.7), search=None, parent=None
        )
    )

    bests = [_best(line) for line in _lines(out, "gen ")]
    assert bests == [0.5, 0.8, 0.8, 0.8, 0.8]
    assert bests == sorted(bests)
    done = _lines(out, "generation ")
    assert done[1].startswith("generation 1 done: parent 3 fitness 0.7000, best so far 0.8000")
    assert [line.split("  ")[0] for line in _lines(out, "gen ")][-1] == "gen 1 [5/7]"


def test_pareto_lines_show_the_front_size_most_accurate_cheapest_and_hypervolume_share():
    out = io.StringIO()
    progress = PlainProgress(out=out, run=RunSoFar(6, objectives=OBJECTIVES))
    progress(RunStarted(run_dir=Path("r"), generations=None, lam=1, meter=None))
    progress(GenerationStarted(generation=0, candidates=3))
    points = [(0.9, 2e-6), (0.7, 5e-7), (0.6, 9e-7)]  # the third is dominated by the second
    for i, (accuracy, energy) in enumerate(points):
        score = Score(points={"0": _point(accuracy, energy)})
        progress(
            EvaluationDone(
                candidate=_candidate(i), result=_result(i, accuracy, energy), fitness=None, score=score
            )
        )
    lines = _lines(out, "gen ")
    assert "best -" not in out.getvalue()
    # before generation 0 is told: the feasible points seen so far, without a hypervolume
    assert "front 1: most accurate 0.9000 (2 µJ), cheapest 2 µJ (0.9000)" in lines[0]
    assert "front 2: most accurate 0.9000 (2 µJ), cheapest 500 nJ (0.7000)" in lines[2]
    record = GenerationRecord(
        0,
        [0, 1, 2],
        [0, 1, 2],
        front=[{"id": 0, "exit": "0", "values": [0.9, 2e-6]}, {"id": 1, "exit": "0", "values": [0.7, 5e-7]}],
        hypervolume=1.3e-6,
        hypervolume_share=0.43,
    )
    progress(Told(record=record, search=None, parent=None))
    (done,) = _lines(out, "generation 0 done")
    assert "front 2: most accurate 0.9000 (2 µJ), cheapest 500 nJ (0.7000), HV 43.0 %" in done
    # the front a generation recorded is what later lines show, an infeasible point adds nothing
    progress(GenerationStarted(generation=1, candidates=3))
    score = Score(points={"0": _point(0.99, 1e-9, violation=0.5)})
    progress(
        EvaluationDone(candidate=_candidate(3), result=_result(3, 0.99, 1e-9), fitness=None, score=score)
    )
    assert (
        "front 2: most accurate 0.9000 (2 µJ), cheapest 500 nJ (0.7000), HV 43.0 %" in _lines(out, "gen ")[-1]
    )


def test_time_left_against_the_time_limit_counts_earlier_sessions():
    clock = Clock()
    out = io.StringIO()
    so_far = RunSoFar(4, 1, time_limit=600, elapsed=100, clock=clock)
    progress = PlainProgress(out=out, run=so_far)
    assert so_far.clock_text() == "elapsed 1m40s, 8m20s left of 10m00s"  # before the loop starts
    progress(RunStarted(run_dir=Path("r"), generations=None, lam=1, meter=None))
    clock.now += 65
    progress(EvaluationDone(candidate=_candidate(1), result=_result(1, 0.5), fitness=0.5))
    (line,) = _lines(out, "gen ")
    assert line.startswith("gen 0 [2/4]")
    assert line.endswith("elapsed 2m45s, 7m15s left of 10m00s")
    clock.now += 3600  # past the limit: nothing left, never a negative time
    assert so_far.clock_text() == "elapsed 1h02m, 0s left of 10m00s"
    # the final training is not the search's: its line says the time taken, no time left
    progress(FinalTraining(candidate=_candidate(9, "final"), budget=SimpleNamespace(seconds=None, steps=5)))
    progress(FinalDone(candidate=_candidate(9, "final"), result=_result(9, 0.9), fitness=0.9))
    (final,) = _lines(out, "final training  ")
    assert final.endswith("elapsed 1h02m") and "left" not in final
    # without a time limit, only the elapsed time
    assert RunSoFar(clock=clock).clock_text() == "elapsed 0s"


def test_hypervolume_share_is_the_volume_over_the_box_between_ideal_and_reference():
    config = validate_config(
        config_dict(PARETO, **{"search.reference_point": {"accuracy": 0.1, "energy": 1e-6}})
    )
    search = ParetoSearch(config, grammar=None)  # type: ignore[arg-type]
    # minimisation form: reference (-0.1, 1e-6), ideal (-1, 0): a box of 0.9 x 1e-6
    assert search.hypervolume_share(0.45e-6) == pytest.approx(0.5)
    assert search.hypervolume_share(0.0) == 0.0
    assert search.hypervolume_share(None) is None


def test_a_real_pareto_run_records_and_prints_a_hypervolume_share_above_zero(tmp_path):
    config = validate_config(config_dict(PARETO))
    out = io.StringIO()
    run(config, out=tmp_path / "r", progress=PlainProgress(out=out, run=RunSoFar.of_config(config)))
    store = RunStore(tmp_path / "r")
    generations = store.generations()
    store.close()
    shares = [g.hypervolume_share for g in generations]
    assert all(0 < share <= 1 for share in shares), shares
    assert all(g.hypervolume < 1e-3 for g in generations)  # the raw volume: accuracy times joules
    done = _lines(out, "generation ")
    assert len(done) == len(generations) == 3
    for line, share in zip(done, shares, strict=True):
        printed = float(re.search(r"HV (\S+) %", line).group(1))  # type: ignore[union-attr]
        assert printed > 0 and printed == pytest.approx(100 * share, abs=0.05)
        assert re.search(r"front \d+: most accurate \d\.\d{4} \(.*J\), cheapest .*J \(\d\.\d{4}\)", line)
    # the time left while the search runs; once it is over, what follows is not held to the limit
    assert ["left of 10m00s" in line for line in done] == [True, True, False]
    total = planned_evaluations(config)
    assert [line.split("  ")[0].split()[-1] for line in _lines(out, "gen ")] == [
        f"[{i}/{total}]" for i in range(1, total + 1)
    ]
    assert "0.0000" not in "\n".join(done)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # stdout is a pipe: the plain lines, as in a job log
    return subprocess.run(
        [sys.executable, "-m", "evowatt.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("base", [ES, PARETO], ids=["es", "pareto"])
def test_a_resumed_run_goes_on_from_its_count_total_time_and_best(base, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(base)))
    run_dir = tmp_path / "r"
    killed = _cli("run", str(cfg), "--out", str(run_dir), env={"EVOWATT_KILL_AT": "after-record:5"})
    assert killed.returncode == 137, killed.stderr
    store = RunStore(run_dir)
    rows = store.select()
    generations = store.generations()
    store.close()
    total = planned_evaluations(validate_config(config_dict(base)))

    resumed = _cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    lines = [line for line in resumed.stdout.splitlines() if line.startswith("gen ")]
    assert lines and "?" not in "\n".join(lines)
    counts = [re.match(r"gen \d+ \[(\d+)/(\d+)\]", line).groups() for line in lines]  # type: ignore[union-attr]
    assert [int(t) for _d, t in counts] == [total] * len(lines)
    assert [int(d) for d, _t in counts] == list(range(len(rows) + 1, total + 1))
    assert all("left of 10m00s" in line for line in lines)
    first = lines[0]
    if base is ES:
        recorded = max(r.fitness for r in rows if r.fitness is not None)
        assert _best(first) >= recorded  # the best of the first session, not only of this one
    else:
        # the front recorded before the kill, with its hypervolume share, from the first line on
        assert generations and f"front {len(generations[-1].front)}: most accurate" in first
        assert re.search(r"HV \d+(\.\d+)? %", first)


def test_make_progress_off_a_terminal_prints_plain_lines_with_the_totals_given(capsys):
    progress = make_progress(run=RunSoFar(8, 3))
    assert isinstance(progress, PlainProgress)
    progress(EvaluationDone(candidate=_candidate(3), result=_result(3, 0.5), fitness=0.5))
    assert capsys.readouterr().out.startswith("gen 0 [4/8]  individual 3 (mutant)")


def test_the_progress_of_a_resumed_run_reads_its_store(tmp_path):
    config = validate_config(config_dict(ES))
    run(config, out=tmp_path / "r")
    store = RunStore(tmp_path / "r")
    try:
        so_far = RunSoFar.of_store(store, config)
        rows = store.searched()
        elapsed = store.meta("elapsed_seconds")
    finally:
        store.close()
    assert (so_far.done, so_far.total) == (len(rows), planned_evaluations(config))
    assert so_far.best == max(r.fitness for r in rows if r.fitness is not None)
    assert so_far.elapsed_before == pytest.approx(elapsed) and so_far.time_limit == 600
    assert not so_far.pareto and so_far.best_text().startswith("best ")
