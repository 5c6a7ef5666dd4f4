"""One answer and one front (issue 28, item 3): distinct networks at their best-trained weights, never a
dominated model, the same set in every view, and a run that ends by naming the model to take."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evowatt.cli.main import main
from evowatt.driver.results import FrontModel, answer, front, pick, run_config
from evowatt.driver.store import RunStore
from evowatt.handover.export import choose
from evowatt.records import Status
from tests.conftest import EXAMPLES, FAST_ESTIMATE

SHRINK = [
    "search.generations=2",
    "search.population=4",
    "search.lambda=4",
    "training.budget={steps: 12}",
    "training.threads=1",
    "training.final_training.budget={steps: 30}",
    "training.final_training.models=2",
    f"energy={json.dumps(FAST_ESTIMATE)}",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """The digits Pareto example, shrunk, run from the command line: its directory and what it printed."""
    out = tmp_path_factory.mktemp("answer") / "run"
    args = ["run", str(EXAMPLES / "digits-pareto.yaml"), "--out", str(out)]
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args, *[a for s in SHRINK for a in ("--set", s)]]) == 0
    return out, printed.getvalue()


def _dominates(a: FrontModel, b: FrontModel, objectives: list[Any]) -> bool:
    better = False
    for o in objectives:
        x, y = a.value(o.metric), b.value(o.metric)
        if o.objective == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def test_the_front_holds_distinct_networks_none_dominated(finished):
    out, _ = finished
    models = front(out)
    assert models
    keys = [(m.network, m.exit) for m in models]
    assert len(keys) == len(set(keys)), "one network's exit appears once"
    store = RunStore(out)
    try:
        objectives = run_config(store).search.objectives
        finals = store.finals(Status.OK)
    finally:
        store.close()
    for a in models:
        assert not any(_dominates(b, a, objectives) for b in models if b is not a)
    # a network with a final training stands on the front at its final-trained weights, never the search's
    trained = {f.parent_id: f.id for f in finals}
    assert trained, "the example trains its two most accurate front models"
    for model in models:
        assert model.id not in trained, f"#{model.id} has a final training: #{trained[model.id]}"
    # sorted most accurate first
    accuracies = [m.value("accuracy") for m in models]
    assert accuracies == sorted(accuracies, reverse=True)


def test_every_view_shows_the_same_front(finished, capsys):
    out, _ = finished
    expected = [(m.id, m.exit) for m in front(out)]
    assert main(["show", str(out), "--front", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["exit"]) for m in shown] == expected
    assert main(["show", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["exit"]) for m in data["front"]] == expected
    store = RunStore(out)
    try:
        chosen, skipped = choose(store, front=True)
    finally:
        store.close()
    assert not skipped  # the front's models all have their weights
    exported = sorted((i, str(e)) for i, exits in chosen.items() for e in exits)
    assert exported == sorted(expected)


def test_the_run_ends_by_naming_the_final_trained_model_to_take(finished, capsys):
    out, printed = finished
    chosen = answer(out)
    assert chosen is not None and chosen.trained == "final" and chosen.kind == "final"
    assert (chosen.id, chosen.exit) in [(m.id, m.exit) for m in front(out)]
    assert chosen.value("accuracy") == max(m.value("accuracy") for m in front(out))
    assert f"the model to take: {chosen.label} (the final training of #{chosen.source}" in printed
    assert f"export it: evowatt export {out} --best" in printed
    assert "latency / inference" in printed and "energy / inference" in printed
    assert chosen.value("latency") > 0 and chosen.value("test_accuracy") is not None
    # export --best exports that model
    store = RunStore(out)
    try:
        chosen_export, _ = choose(store, best=True)
    finally:
        store.close()
    assert chosen_export == {chosen.id: None}  # every exit of that evaluation, the model to take among them
    # show prints the same answer
    assert main(["show", str(out)]) == 0
    assert f"the model to take: {chosen.label}" in capsys.readouterr().out


def test_a_budget_names_the_most_accurate_model_within_it(finished):
    out, _ = finished
    models = front(out)
    cheapest = min(m.value("energy") for m in models)
    budget = f"energy < {cheapest * 1.0001:.6g}"
    chosen = answer(out, budget)
    assert chosen is not None and chosen.value("energy") < cheapest * 1.0001
    assert chosen.value("accuracy") >= pick(out, budget).value("accuracy") - 1e-12
    assert answer(out, "energy < 1e-15") is None


def test_run_with_a_budget_ends_with_that_answer(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", str(EXAMPLES / "digits-pareto.yaml"), "--out", str(out), "--pick", "params<2k"]
    shrink = [*SHRINK[:5], "search.generations=0", "training.final_training.budget=null"]
    assert main([*args, *[a for s in shrink for a in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    chosen = answer(out, "params<2k")
    if chosen is None:
        assert "no model to take within params<2k" in printed
    else:
        assert chosen.value("params") < 2000
        assert f"the model to take within params<2k: {chosen.label}" in printed
        assert f"export it: evowatt export {out} --pick 'params<2k'" in printed


def test_an_unreadable_run_budget_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", str(EXAMPLES / "digits-pareto.yaml"), "--out", str(out), "--pick", "energy<<3"])
    assert code == 2 and not out.exists()
    assert "budget 'energy<<3'" in capsys.readouterr().err


def test_the_run_says_what_it_will_do_and_how_long():
    from evowatt.cli.commands import plan_text
    from evowatt.config.load import load_config
    from evowatt.driver.setup import planned_evaluations

    config = load_config(str(EXAMPLES / "digits-pareto.yaml"))
    text = plan_text(config, planned_evaluations(config))
    # 12 + 5 x 8 evaluations of at most 1 s, a tenth more for building and scoring, two finals of 5 s
    assert text == (
        "Pareto search (NSGA-II) on digits: 52 evaluations of 1 s at most each, then 2 final trainings: "
        "up to about 67 s"
    )
    from evowatt.driver.plan import plan_run

    limited, plan = plan_run(load_config(str(EXAMPLES / "fashion-mnist-pareto.yaml")), 60_000, 2)
    assert plan_text(limited, planned_evaluations(limited), plan) == (  # sized by minutes: 15
        "Pareto search (NSGA-II) on fashion-mnist, about 45 evaluations; plan: 15 min in all: search 5.2 "
        "min, top rung 30 s, final training 9.3 min, 27 s kept for set-up and the answer"
    )
    steps = load_config(str(EXAMPLES / "digits-pareto.yaml"), ["training.budget={steps: 10}"])
    assert plan_text(steps, 3).endswith("(budgets in steps: no time estimate)")


def test_the_closing_hints_work_without_the_extras(finished, capsys, monkeypatch):
    import importlib.util

    from evowatt.cli import show as cli

    real = importlib.util.find_spec
    missing = {"onnx", "onnxscript", "onnxruntime", "matplotlib"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    out, _ = finished
    cli._print_answer(out, answer(out), [])
    printed = capsys.readouterr().out.replace("\n", " ")
    assert f"evowatt export {out} --best --format pt2" in printed
    assert "pip install 'evowatt[export]' adds ONNX" in printed
    assert "pip install 'evowatt[report]'" in printed
