"""End-to-end runs on digits under a step budget: store contents, determinism, improvement, resume, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evowatt.cli.main import main
from evowatt.config.load import load_config, validate_config
from evowatt.driver.session import resume, run
from evowatt.driver.store import RunStore
from tests.conftest import EXAMPLES, SMALL_NETWORK, config_dict

BASE = {
    "seed": 0,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 2, "lambda": 2},
    "training": {"budget": {"steps": 15}, "threads": 1},
}


def make_config(**overrides):
    return validate_config(config_dict(BASE, **overrides))


def history(run_dir: Path) -> list[tuple]:
    store = RunStore(run_dir)
    rows = [
        (e.id, e.kind, json.dumps(e.genome), e.status, e.fitness, e.train["steps"]) for e in store.select()
    ]
    store.close()
    return rows


def test_run_records_every_evaluation(tmp_path):
    result = run(make_config(**{"training.final_training": {"budget": {"steps": 30}}}), out=tmp_path / "r")
    # generation 0: lambda; then per generation: the retrained parent + lambda
    assert result.evaluations == 2 + 2 * 3
    assert [g["generation"] for g in result.generations] == [0, 1, 2]
    store = RunStore(tmp_path / "r")
    rows = store.select()
    assert [r.kind for r in rows if r.generation == 1][0] == "parent"
    for row in rows:
        assert row.status in ("ok", "invalid", "failed")
        if row.status == "ok":
            assert row.train["steps"] == (30 if row.kind == "final" else 15)
            assert row.metrics["accuracy"]["method"] == "computed:evo_test"
            if row.id in (result.best.id, result.final.id):
                assert 0 <= row.metrics["test_accuracy"]["value"] <= 1
            else:
                assert "test_accuracy" not in row.metrics  # the test set is never scored during search
    # only the parent's weights (and the final model's) are kept
    weights = sorted(p.name for p in (tmp_path / "r" / "weights").iterdir())
    assert weights == sorted([f"{result.best.id}.safetensors", f"{result.final.id}.safetensors"])
    assert result.final.kind == "final" and result.final.genome == result.best.genome
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert resolved["search"]["lambda"] == 2 and resolved["training"]["budget"] == {
        "seconds": None,
        "steps": 15,
    }
    assert (tmp_path / "r" / "grammar.grammar").read_text().startswith("#")
    assert json.loads((tmp_path / "r" / "checkpoint.json").read_text())["generation"] == 3
    store.close()


def test_same_seed_same_history(tmp_path):
    config = make_config()
    run(config, out=tmp_path / "a")
    run(config, out=tmp_path / "b")
    assert history(tmp_path / "a") == history(tmp_path / "b")
    run(make_config(seed=1), out=tmp_path / "c")
    assert history(tmp_path / "c") != history(tmp_path / "a")


def test_search_improves_on_generation_zero(tmp_path):
    """On most seeds the final parent beats generation 0's best (tiny budgets leave room to improve)."""
    better = 0
    seeds = [0, 1, 2]
    for seed in seeds:
        config = make_config(
            seed=seed, **{"search.generations": 4, "search.lambda": 3, "training.budget": {"steps": 8}}
        )
        result = run(config, out=tmp_path / f"s{seed}")
        fitness = [g["best_fitness"] or 0.0 for g in result.generations]
        better += fitness[-1] > fitness[0]
    assert better >= 2


def test_time_limit_stops_the_run(tmp_path):
    config = make_config(**{"search.generations": 1000, "search.time_limit": 1.0})
    result = run(config, out=tmp_path / "t")
    assert result.stopped == "time_limit" and len(result.generations) < 1000


def test_resume_continues_and_reuses_recorded_evaluations(tmp_path):
    config = make_config(**{"search.generations": 3})
    reference = tmp_path / "ref"
    run(config, out=reference)
    # a run killed after generation 1 was checkpointed and two more evaluations were recorded
    partial = tmp_path / "partial"
    short = make_config(**{"search.generations": 1})
    run(short, out=partial)
    store = RunStore(partial)
    (partial / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    store.close()
    resumed = resume(partial, allow_larger_budget=True)  # config.yaml was edited to raise generations
    assert len(resumed.generations) == 4
    assert history(partial) == history(reference)


def test_run_refuses_existing_run_dir(tmp_path):
    config = make_config(**{"search.generations": 0})
    run(config, out=tmp_path / "r")
    from evowatt.errors import EvowattError

    with pytest.raises(EvowattError, match="already holds a run; use 'evowatt resume"):
        run(config, out=tmp_path / "r")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "evowatt.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_run_and_show(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "search": {"generations": 1, "lambda": 2}}))
    done = _cli(
        "run", str(cfg), "--out", str(tmp_path / "r"), "--set", "training.budget.steps=5", "--seed", "4"
    )
    assert done.returncode == 0, done.stderr
    assert "the model to take: #" in done.stdout and "test accuracy" in done.stdout
    assert f"export it: evowatt export {tmp_path / 'r'} --best" in done.stdout
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert resolved["seed"] == 4 and resolved["training"]["budget"]["steps"] == 5
    shown = _cli("show", str(tmp_path / "r"), "--json")
    data = json.loads(shown.stdout)
    assert data["evaluations"] == 2 + 3 and len(data["generations"]) == 2
    assert data["best"]["id"] == data["generations"][-1]["parent_id"]
    table = _cli("show", str(tmp_path / "r"))
    assert table.returncode == 0 and "generations of" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.yaml"], "config file missing.yaml not found"),
        (["run", "{cfg}", "--set", "search.lamda=3"], "search.lamda: unknown key"),
        (
            ["run", "{cfg}", "--set", "search.lambda=0"],
            "search.lambda: Input should be greater than or equal to 1",
        ),
        (["run", "{cfg}", "--set", "dataset.name=imagenet"], "dataset.name: Input should be 'digits'"),
        (["run", "{cfg}", "--set", "training.budget.seconds=3"], "give exactly one of 'seconds' or 'steps'"),
        (["run", "{cfg}", "--set", "grammar=nope.grammar"], "grammar file nope.grammar not found"),
        (
            ["run", "{cfg}", "--set", "dataset.name=fashion-mnist", "--set", "dataset.path={tmp}"],
            "dataset-fashion-mnist",
        ),
        (["run", "{cfg}", "--set", "network.output=out"], "network.output 'out' is not a rule"),
        (["show", "{tmp}"], "is not an evowatt run directory"),
        (["check-grammar", "{bad}"], "line 1"),
        (["resume", "{tmp}"], "is not an evowatt run directory"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(tmp_path, args, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    bad = tmp_path / "bad.grammar"
    bad.write_text("<a> = b")
    args = [a.format(cfg=cfg, tmp=tmp_path, bad=bad) for a in args]
    done = _cli(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert message in done.stderr.replace("\n", " ")
    assert done.stderr.startswith("evowatt: error:")


def test_corrupt_checkpoint_is_one_message_nothing_overwritten(tmp_path):
    run(make_config(**{"search.generations": 0}), out=tmp_path / "r")
    checkpoint = tmp_path / "r" / "checkpoint.json"
    checkpoint.write_text('{"generation": 1, "next')
    done = _cli("resume", str(tmp_path / "r"))
    assert done.returncode == 2 and "checkpoint" in done.stderr and "corrupt or truncated" in done.stderr
    assert checkpoint.read_text() == '{"generation": 1, "next'


def test_check_grammar_reports_build_rate():
    done = _cli(
        "check-grammar",
        str(Path(__file__).parent / "fixtures/compat/energize.grammar"),
        "--samples",
        "50",
        "--input-shape",
        "1,28,28",
        "--classes",
        "10",
    )
    assert done.returncode == 0, done.stderr
    assert "of 50 sampled genomes build on input (1, 28, 28)" in done.stdout


def test_config_overrides_and_paths(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "my.grammar").write_text(
        (Path(__file__).parent / "fixtures/compat/denser.grammar").read_text()
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "grammar": "g/my.grammar"}))
    config = load_config(cfg, ["search.generations=7", "training.budget={steps: 3}"], seed=9)
    assert config.search.generations == 7 and config.training.budget.steps == 3 and config.seed == 9
    assert Path(config.grammar) == (tmp_path / "g" / "my.grammar").resolve()


def test_example_configs_validate():
    for name in ("digits.yaml", "fashion-mnist.yaml"):
        config = load_config(EXAMPLES / name)
        assert config.network.modules[0].name == "features"


def test_main_returns_2_on_user_error(capsys):
    assert main(["run", "nope.yaml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_python_api(tmp_path):
    import evowatt

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "search": {"generations": 0, "lambda": 2}}))
    result = evowatt.run(str(cfg), out=str(tmp_path / "r"))
    assert result.evaluations == 2 and result.best.id in (0, 1)
    assert evowatt.load_config(str(cfg), ["seed=5"]).seed == 5


def test_process_runner_gives_the_same_history(tmp_path):
    config = make_config(**{"search.generations": 1})
    run(config, out=tmp_path / "seq")
    pooled = make_config(**{"search.generations": 1, "runner": {"kind": "process", "workers": 2}})
    run(pooled, out=tmp_path / "pool")
    assert history(tmp_path / "pool") == history(tmp_path / "seq")


@pytest.mark.parametrize("final_subset, expected", [(None, 300), ("all", None), (500, 500)])
def test_final_training_data_subset(tmp_path, monkeypatch, final_subset, expected):
    from evowatt.driver import evaluate as evaluate_module

    seen: list[tuple[str, int | None]] = []
    original = evaluate_module.DataRef.load

    def spy(self):
        seen.append(self.train_subset)
        return original(self)

    monkeypatch.setattr(evaluate_module.DataRef, "load", spy)
    final = {"budget": {"steps": 5}}
    if final_subset is not None:
        final["train_subset"] = final_subset
    result = run(
        make_config(
            **{"dataset.train_subset": 300, "search.generations": 0, "training.final_training": final}
        ),
        out=tmp_path / "r",
    )
    assert result.final is not None and result.final.status == "ok"
    # the search and the best's test scoring use the search's subset; the final training its own; timing
    # the models the run shows, after it, the search's again
    assert seen[0] == 300 and expected in seen
    if expected != 300:
        start, end = seen.index(expected), len(seen) - seen[::-1].index(expected)
        assert set(seen[:start]) == {300} and set(seen[start:end]) == {expected}
        assert set(seen[end:]) <= {300}


def test_final_training_subset_rejects_nonsense():
    with pytest.raises(Exception, match="train_subset"):
        make_config(**{"training.final_training": {"train_subset": 0}})


def test_cli_parser_does_not_import_torch():
    code = (
        "import sys; from evowatt.cli.main import build_parser; build_parser(); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("algorithm", ["es", "pareto"])
def test_a_time_limit_inside_the_first_generation_hands_over_the_best_so_far(tmp_path, algorithm):
    """No generation was told, so the search has no best: the run says so and hands over the best of
    what it recorded (by the search's own ranking) instead of nothing."""
    from evowatt.driver.events import read_events

    search = {"algorithm": algorithm, "lambda": 40, "population": 40, "time_limit": 2.0}
    config = make_config(
        **{"search": {**BASE["search"], **search}},
        **{
            "training.budget": {"seconds": 0.3},
            "training.final_training": {"budget": {"steps": 5}, "models": 2},
        },
    )
    result = run(config, out=tmp_path / "t")
    assert result.stopped == "time_limit" and result.generations == []
    store = RunStore(result.run_dir)
    recorded = [r for r in store.select() if r.kind != "final" and r.status == "ok"]
    finals = store.finals()
    store.close()
    assert 1 <= len(recorded) < 40
    if algorithm == "es":
        assert len(result.handed) == len(finals) == 1
    else:  # every front member is handed over; the two most accurate get a final training
        assert len(finals) == min(2, len(result.handed))
    assert {f.parent_id for f in finals} <= {h.id for h in result.handed}
    if algorithm == "es":  # the fittest recorded evaluation
        assert result.best.id == max(recorded, key=lambda r: r.fitness).id
    else:  # its front, the most accurate first, as the Pareto search hands over after a generation
        accuracy = {r.id: r.metrics["accuracy"]["value"] for r in recorded}
        assert accuracy[result.handed[0].id] == max(accuracy.values())
    notes = [e["message"] for e in read_events(result.run_dir) if e["event"] == "note"]
    assert len(notes) == 1 and "before the search had a best" in notes[0]
