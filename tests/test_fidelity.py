"""Multi-fidelity screening: successive halving within a generation (issue 11, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evowatt.config.load import validate_config
from evowatt.config.schema import RunConfig
from evowatt.driver.session import resume, run
from evowatt.driver.setup import planned_evaluations
from evowatt.driver.store import RunStore
from evowatt.representation.grammar import load_grammar
from evowatt.search import EvolutionStrategy
from evowatt.search.fidelity import Rungs, SuccessiveHalving
from evowatt.search.pareto import ParetoSearch
from evowatt.search.protocol import as_evaluated
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict, run_killed_at

GRAMMAR = load_grammar("cnn")


def test_rungs_multiply_the_budget_and_divide_the_candidates():
    rungs = Rungs(min_budget=10, eta=3, rungs=3)
    assert [rungs.cumulative(r) for r in range(3)] == [10, 30, 90]
    assert [rungs.budget(r) for r in range(3)] == [{"steps": 10}, {"steps": 20}, {"steps": 60}]
    assert [rungs.keep(9, r) for r in range(3)] == [9, 3, 1]
    assert rungs.keep(2, 2) == 1  # never fewer than one
    seconds = Rungs(min_budget=1.5, eta=2, rungs=2, unit="seconds")
    assert seconds.budget(1) == {"seconds": 1.5} and seconds.cumulative(1) == 3.0


def _config(**search) -> RunConfig:
    return RunConfig.model_validate(
        {"seed": 3, "network": SMALL_NETWORK, "search": {"generations": 1, "lambda": 8, **search}}
    )


def _ok(cid: int, accuracy: float) -> dict:
    return {
        "id": cid,
        "status": "ok",
        "metrics": {"accuracy": {"value": accuracy, "method": "computed:evo_test"}},
    }


def test_promotion_follows_the_ranking_and_the_budgets():
    sh = SuccessiveHalving(EvolutionStrategy(_config(), GRAMMAR), Rungs(10, eta=2, rungs=3), run_seed=3)
    rung0 = sh.ask()
    assert len(rung0) == 8 and all(c.budget == {"steps": 10} for c in rung0)
    assert [c.fidelity["rung"] for c in rung0] == [0] * 8
    accuracy = {c.id: a for c, a in zip(rung0, [0.3, 0.9, 0.1, 0.8, 0.5, 0.7, 0.2, 0.6], strict=True)}
    assert sh.tell([_ok(c.id, accuracy[c.id]) for c in rung0]) is None  # the generation goes on
    rung1 = sh.ask()
    best4 = sorted(accuracy, key=accuracy.get, reverse=True)[:4]
    assert [c.continue_from for c in rung1] == best4  # in ranking order, each from its own weights
    assert all(c.budget == {"steps": 10} and c.fidelity["cumulative"] == 20 for c in rung1)
    assert all(c.inherit is False and c.id >= 8 for c in rung1)
    by_source = {c.continue_from: c for c in rung1}
    assert all(by_source[s].genome == next(c for c in rung0 if c.id == s).genome for s in best4)
    # at rung 1 the order changes: the third of rung 0 is now best
    second = {c.id: a for c, a in zip(rung1, [0.91, 0.80, 0.95, 0.70], strict=True)}
    assert sh.tell([_ok(c.id, second[c.id]) for c in rung1]) is None
    rung2 = sh.ask()
    assert [c.continue_from for c in rung2] == [rung1[2].id, rung1[0].id]
    assert all(c.budget == {"steps": 20} and c.fidelity["cumulative"] == 40 for c in rung2)
    record = sh.tell([_ok(rung2[0].id, 0.93), _ok(rung2[1].id, 0.96)])
    assert record is not None and record.generation == 0
    assert record.evaluations == [c.id for c in rung0 + rung1 + rung2]
    assert sh.parent.id == rung2[1].id  # the best at the top rung becomes the parent
    assert sh.weights_to_keep() == {rung2[1].id}
    nxt = sh.ask()  # generation 1 starts again at rung 0
    assert len(nxt) == 9 and all(c.fidelity["rung"] == 0 for c in nxt)


def test_pareto_promotion_breaks_a_tie_of_extremes_by_the_first_objective():
    config = RunConfig.model_validate(
        {
            "seed": 3,
            "network": SMALL_NETWORK,
            "search": {"algorithm": "pareto", "generations": 1, "population": 4, "lambda": 4},
        }
    )
    sh = SuccessiveHalving(ParetoSearch(config, GRAMMAR), Rungs(10, eta=3, rungs=2), run_seed=3)
    rung0 = sh.ask()
    # one front, the cheapest first: both extremes are infinitely crowded
    points = [(0.70, 1e-7), (0.80, 2e-7), (0.85, 3e-7), (0.90, 4e-7)]
    told = [
        {
            "id": c.id,
            "status": "ok",
            "metrics": {
                "accuracy": {"value": a, "method": "computed:evo_test"},
                "energy": {"value": e, "method": "estimated:model"},
            },
        }
        for c, (a, e) in zip(rung0, points, strict=True)
    ]
    assert sh.tell(told) is None
    assert [c.continue_from for c in sh.ask()] == [rung0[3].id]  # the most accurate extreme, not the first
    ranked = sh.inner.rank(as_evaluated(told, rung0, sh.score))
    assert [e.candidate.id for e in ranked][:2] == [rung0[3].id, rung0[0].id]  # then the other extreme


def test_state_round_trip_between_rungs():
    sh = SuccessiveHalving(EvolutionStrategy(_config(), GRAMMAR), Rungs(10, eta=2, rungs=3), run_seed=3)
    rung0 = sh.ask()
    sh.tell([_ok(c.id, 0.1 * (c.id % 5)) for c in rung0])
    state = sh.state()
    assert {c.continue_from for c in sh.ask()} <= sh.weights_to_keep()  # promoted candidates' sources kept
    again = SuccessiveHalving(EvolutionStrategy(_config(), GRAMMAR), Rungs(10, eta=2, rungs=3), run_seed=3)
    again.load_state(yaml.safe_load(yaml.safe_dump(state)))
    assert [c.to_json() for c in again.ask()] == [c.to_json() for c in sh.ask()]
    results = [_ok(c.id, 0.5) for c in sh.ask()]
    a, b = sh.tell(results), again.tell(results)
    assert a is None and b is None and [c.to_json() for c in again.ask()] == [c.to_json() for c in sh.ask()]


def test_the_wrapper_answers_what_callers_ask_of_a_search():
    """What the driver and the displays read (issue 31): the wrapped search's, each by name."""
    es = SuccessiveHalving(EvolutionStrategy(_config(), GRAMMAR), Rungs(10, eta=2, rungs=2), run_seed=3)
    assert (es.algorithm, es.parent, tuple(es.objectives), es.unmet()) == ("es", None, (), None)
    rung0 = es.ask()
    told = as_evaluated([_ok(c.id, 0.1 * (c.id % 5)) for c in rung0], rung0, es.score)
    before = es.state()
    chosen = es.best_if_told(told)  # a copy is told the generation so far; the search is not
    assert chosen == [max(told, key=lambda e: (e.score.fitness, -e.candidate.id)).candidate.id]
    assert es.state() == before and es.best() == []
    assert es.handover_value(told[0].score) == told[0].score.fitness
    pareto = SuccessiveHalving(
        ParetoSearch(_config(algorithm="pareto", population=4), GRAMMAR), Rungs(10), run_seed=3
    )
    assert pareto.algorithm == "pareto" and pareto.parent is None
    assert [o.metric for o in pareto.objectives] == [o.metric for o in pareto.inner.objectives]


BASE = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {
        "generations": 1,
        "lambda": 4,
        "inherit_weights": True,
        "fidelity": {"min_budget": 5, "eta": 2, "rungs": 2},
        "mutation": {"train_longer": 0.3},
    },
    "training": {"budget": {"steps": 10}, "threads": 1},
    "energy": FAST_ESTIMATE,
}


def _history(run_dir: Path) -> list[dict]:
    store = RunStore(run_dir)
    try:
        rows = store.select()
        checkpoint = store.load_checkpoint()
    finally:
        store.close()
    keep = ("id", "kind", "genome", "seed", "continue_from", "status", "fitness", "steps", "budget_steps")
    out = [
        {
            **{k: getattr(r, k) for k in keep},
            "fidelity": r.result.fidelity,
            "inherited": r.result.inherited,
        }
        for r in rows
    ]
    return out + [
        {k: checkpoint.get(k) for k in ("generation", "next_id", "parent", "population", "history", "rng")}
    ]


PARETO = {"search.algorithm": "pareto", "search.population": 4, "search.inherit_weights": None}


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1]),  # ES: λ=4, then parent + 4 at rung 0; 2 promoted
        (PARETO, [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1]),  # Pareto: μ=4, then 4 offspring; 2 promoted
    ],
    ids=["es", "pareto"],
)
def test_a_run_records_rungs_and_resumes_exactly_when_killed_between_rungs(tmp_path, overrides, expected):
    data = config_dict(BASE, **overrides)
    reference = tmp_path / "reference"
    run(validate_config(data), out=reference)
    rows = _history(reference)[:-1]
    rungs = [r["fidelity"]["rung"] for r in rows]
    assert rungs == expected
    assert planned_evaluations(validate_config(data)) == len(rows)  # the progress bar's total
    if overrides:  # the Pareto search inherits by default
        assert any(r["inherited"] and r["inherited"]["fresh"] for r in rows if r["kind"] == "mutant")
    for row in rows:
        assert row["budget_steps"] == (5 if row["fidelity"]["rung"] == 0 else 5)
        assert row["fidelity"]["cumulative"] == (5 if row["fidelity"]["rung"] == 0 else 10)
        if row["fidelity"]["rung"] == 1:  # continues from its own rung-0 weights, every layer
            assert row["continue_from"] is not None and row["inherited"]["fresh"] == []
            assert row["steps"] == 5
    # killed right after recording the first evaluation of rung 1 (the 5th record), then resumed
    killed = tmp_path / "killed"
    run_killed_at(data, killed, "after-record:5")
    resume(killed)
    assert _history(killed) == _history(reference)
    assert sorted(p.name for p in (killed / "weights").iterdir()) == sorted(
        p.name for p in (reference / "weights").iterdir()
    )


def test_fidelity_config_is_checked():
    with pytest.raises(Exception, match="eta"):
        validate_config(config_dict(BASE, **{"search.fidelity": {"min_budget": 5, "eta": 1}}))
