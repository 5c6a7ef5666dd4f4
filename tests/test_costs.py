"""A network is measured once per run: rungs, continuations and the final training reuse its cost, and
every stored cost names the evaluation that measured it (issue 28, item 1)."""

from __future__ import annotations

import evowatt.energy.protocol as energy_module
from evowatt.config.load import validate_config
from evowatt.driver.costs import NetworkCosts
from evowatt.driver.results import answer, front
from evowatt.driver.session import run
from evowatt.driver.store import Evaluation, RunStore
from evowatt.representation.genome import Genome
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

BASE = {
    "seed": 5,
    "dataset": {"name": "digits"},
    "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
    "search": {
        "algorithm": "pareto",
        "population": 4,
        "lambda": 4,
        "generations": 1,
        "objectives": [
            {"metric": "accuracy", "objective": "maximize"},
            {"metric": "energy", "objective": "minimize"},
        ],
        "fidelity": {"min_budget": 4, "eta": 2, "rungs": 2},
        "mutation": {"reuse_module": 0},
    },
    "training": {"budget": {"steps": 8}, "threads": 1, "final_training": {"budget": {"steps": 6}}},
    "energy": FAST_ESTIMATE,
}


def _counting(monkeypatch) -> list[dict]:
    """Spy on every model measurement the evaluations make: which model and whether it was timed."""
    calls: list[dict] = []
    real = energy_module.measure_model

    def spy(model, inputs, meter, settings, idle=None, **kwargs):
        calls.append({"latency": kwargs.get("latency", True)})
        return real(model, inputs, meter, settings, idle, **kwargs)

    monkeypatch.setattr(energy_module, "measure_model", spy)
    return calls


def _rows(out) -> list[Evaluation]:
    store = RunStore(out)
    try:
        return store.select()
    finally:
        store.close()


def _exits(row: Evaluation) -> int:
    return 2 if "accuracy_1" in row.metrics else 1


def _row(data: dict) -> Evaluation:
    """A recorded evaluation from the fields the book reads; the others as a store holds them."""
    result = {"id": data["id"], "status": data["status"], **data["result"]}
    return Evaluation.from_json({"kind": "random", "recorded_at": 0.0, **data, "result": result})


def test_each_network_is_measured_once_and_its_rungs_reuse_the_cost(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    result = run(validate_config(config_dict(BASE)), out=tmp_path / "r")
    rows = [r for r in _rows(tmp_path / "r") if r.ok]
    by_id = {r.id: r for r in rows}
    promoted = [r for r in rows if (r.result.fidelity or {}).get("rung", 0) > 0]
    assert promoted, "the second rung continues some networks"
    measured = [r for r in rows if r.metrics["energy"]["measured_by"] == r.id]
    # the final training times its network (the search did not): the one network measured twice
    keys = [Genome.from_json(r.genome).network_key() for r in measured if r.kind != "final"]
    assert len(keys) == len(set(keys)), "no network is measured twice"
    # the meter ran for the measured ones only (the handed models add their latency, the final its own)
    final = [r for r in rows if r.kind == "final"]
    search_calls = [c for c in calls if not c["latency"]]
    assert len(search_calls) == sum(_exits(r) for r in measured if r.kind != "final")
    for row in promoted:
        energy = row.metrics["energy"]
        source = by_id[energy["measured_by"]]
        assert energy["measured_by"] < row.id
        assert Genome.from_json(source.genome).network_key() == Genome.from_json(row.genome).network_key()
        assert energy["value"] == source.metrics["energy"]["value"]
        assert energy["method"] == "estimated:model"  # the method label travels with the value
        assert row.measure_seconds < 0.01 and row.result.measurements["0"] == {
            "reused_from": energy["measured_by"]
        }
    # the search selects on no latency: no search evaluation is timed; the models the run shows are
    shown = {m.id for m in front(tmp_path / "r")} | {answer(tmp_path / "r").id}
    assert all("latency" not in r.metrics for r in rows if r.kind != "final" and r.id not in shown)
    assert final and all(r.metrics["latency"]["method"] == "measured:clock" for r in final)
    assert all(by_id[i].metrics["latency"]["value"] > 0 for i in shown)
    assert result.handed


def test_a_latency_objective_times_every_network_once(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    data = config_dict(
        BASE,
        **{
            "search.objectives": [
                {"metric": "accuracy", "objective": "maximize"},
                {"metric": "latency", "objective": "minimize"},
            ]
        },
    )
    run(validate_config(data), out=tmp_path / "r")
    rows = [r for r in _rows(tmp_path / "r") if r.ok]
    assert all(c["latency"] for c in calls)
    for row in rows:
        latency = row.metrics["latency"]
        assert latency["method"] == "measured:clock" and latency["value"] > 0
        assert latency["measured_by"] <= row.id
    measured = {r.metrics["latency"]["measured_by"] for r in rows}
    assert len(measured) < len(rows), "rungs reuse the first timing"


def test_the_book_gives_a_cost_only_where_it_has_every_figure_asked_for():
    import numpy as np

    from evowatt.config.network import NetworkConfig
    from evowatt.representation.genome import random_genome
    from evowatt.representation.grammar import load_grammar

    genome = random_genome(load_grammar("cnn"), NetworkConfig(**SMALL_NETWORK), np.random.default_rng(0))
    energy = {"value": 1e-7, "method": "estimated:model"}
    row = {
        "id": 3,
        "status": "ok",
        "genome": genome.to_json(),
        "metrics": {"energy": energy, "accuracy": {"value": 0.5}},
        "result": {"meter": "estimate", "measurements": {"0": {}}},
    }
    book = NetworkCosts([_row(row)])
    assert len(book) == 1
    known = book.lookup(genome.to_json(), "estimate", latency=False)
    assert known is not None and known.metrics == {"energy": {**energy, "measured_by": 3}}
    assert book.lookup(genome.to_json(), "rapl", latency=False) is None  # another meter's figures
    assert book.lookup(genome.to_json(), "estimate", latency=True) is None  # never timed
    # the same network reached with other learning genes, or other layer ids, is the same cost
    relearnt = genome.to_json()
    relearnt["macro"] = {k: v for k, v in relearnt["macro"].items() if k != "learning"}
    assert book.lookup(relearnt, "estimate", latency=False) is not None
    # an evaluation that reused a cost teaches the book nothing new; a timed one replaces an untimed one
    timed = {
        **row,
        "id": 4,
        "metrics": {**row["metrics"], "latency": {"value": 1e-5, "method": "measured:clock"}},
    }
    book.add(_row({**timed, "result": {"meter": "estimate", "measurements": {"0": {"reused_from": 3}}}}))
    assert book.lookup(genome.to_json(), "estimate", latency=True) is None
    book.add(_row(timed))
    assert book.lookup(genome.to_json(), "estimate", latency=True).measured_by == 4
    # the latency the handover adds to a counted-only measurement joins that measurement's entry
    handed = {
        **row,
        "metrics": {
            **row["metrics"],
            "latency": {"value": 2e-5, "method": "measured:clock", "measured_by": 3},
        },
        "result": {"meter": "estimate", "measurements": {"0": {"stop_reason": "counted"}}},
    }
    fresh = NetworkCosts([_row(row)])
    fresh.add(_row(handed))
    assert fresh.lookup(genome.to_json(), "estimate", latency=True).metrics.keys() == {"energy", "latency"}
    fresh.add(_row(row))  # the poorer record of the same evaluation does not replace it
    assert fresh.lookup(genome.to_json(), "estimate", latency=True).measured_by == 3
