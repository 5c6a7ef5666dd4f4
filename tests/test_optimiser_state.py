"""Continued trainings resume their optimiser (nn/optimiser_state.py, experimental.resume_optimiser)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from evowatt.cli.main import main
from evowatt.config.load import validate_config
from evowatt.config.network import MutationConfig
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.nn.builder import build_network, plan_network
from evowatt.nn.inherit import inherit_weights
from evowatt.nn.optimiser_state import optimiser_tensors, restore_optimiser
from evowatt.nn.train import Recipe, make_optimiser, train
from evowatt.records import Budget
from evowatt.representation.genome import Genome
from evowatt.representation.mutation import Mutator
from tests.conftest import config_dict
from tests.test_fidelity import BASE as FIDELITY_BASE
from tests.test_inherit import GRAMMAR, NETWORK, _plan, _trained, _valid_genomes

LEARNING = {
    "adam": {"learning": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-5},
    "gradient_descent": {"learning": "gradient_descent", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5},
    "rmsprop": {"learning": "rmsprop", "lr": 0.005, "alpha": 0.9, "weight_decay": 1e-5},
}


def _net() -> nn.Module:
    torch.manual_seed(0)  # no dropout: a resumed training draws no random numbers of its own
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _close(a: nn.Module, b: nn.Module, atol: float) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol) for k in sa)


@pytest.mark.parametrize("kind", sorted(LEARNING))
def test_a_resumed_training_continues_as_if_it_had_never_stopped(digits, kind):
    """3 steps, then 2 more resuming the optimiser = 5 steps in one go (one whole-split batch per epoch, so
    the data order cannot differ); 2 more with a fresh optimiser end elsewhere."""
    train_xy, validation_xy = digits["evo_train"], digits["evo_validation"]
    learning = {**LEARNING[kind], "batch_size": train_xy[0].shape[0], "early_stop": 100}
    whole, split, fresh = _net(), _net(), _net()
    train(whole, train_xy, validation_xy, learning, Budget(steps=5), seed=0)
    first = train(split, train_xy, validation_xy, learning, Budget(steps=3), seed=0, keep_optimiser=True)
    fresh.load_state_dict(split.state_dict())
    assert first.optimiser and first.optimiser_resumed is None
    assert "optimiser" not in first.to_json() and first.to_json()["optimiser_resumed"] is None
    second = train(
        split, train_xy, validation_xy, learning, Budget(steps=2), 0, optimiser_state=first.optimiser
    )
    train(fresh, train_xy, validation_xy, learning, Budget(steps=2), seed=0)
    assert second.optimiser_resumed == len(list(split.parameters()))
    assert _close(split, whole, atol=1e-5)
    assert not _close(fresh, whole, atol=1e-3)


def test_state_of_another_optimiser_or_shape_is_not_restored(digits):
    model = _net()
    learning = {**LEARNING["adam"], "batch_size": 64}
    everything = Recipe(early_stopping=False, hold_out=False)  # no validation split needed
    adam = train(
        model, digits["evo_train"], None, learning, Budget(steps=2), 0, recipe=everything, keep_optimiser=True
    )
    names = [n for n, _ in model.named_parameters()]
    assert {k.split(":")[1] for k in adam.optimiser} == set(names)
    sgd = make_optimiser(model, LEARNING["gradient_descent"])
    assert restore_optimiser(sgd, model, "gradient_descent", adam.optimiser) == []
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 7))
    restored = restore_optimiser(make_optimiser(other, LEARNING["adam"]), other, "adam", adam.optimiser)
    assert restored == names[:2]  # the 7-class output layer's shapes differ: it starts fresh


def test_an_inheriting_child_resumes_the_state_of_exactly_the_tensors_it_inherited():
    parent = _valid_genomes(1, seed=5)[0]
    parent_net = _trained(parent)
    optimiser = make_optimiser(parent_net, LEARNING["adam"])
    parent_net(torch.randn(16, 1, 8, 8)).sum().backward()
    optimiser.step()
    state = optimiser_tensors(optimiser, parent_net, "adam")
    mutator = Mutator(GRAMMAR, NETWORK, MutationConfig(train_longer=0, add_layer=0.5, dsge_layer=0.3))
    rng, checked = np.random.default_rng(5), 0
    for _ in range(10):
        child = mutator.mutate(parent, rng).genome
        try:
            child_net = build_network(_plan(child), 11)
        except Exception:
            continue
        inheritance = inherit_weights(parent, parent_net.state_dict(), child, child_net, GRAMMAR)
        fresh = make_optimiser(child_net, LEARNING["adam"])
        restored = restore_optimiser(fresh, child_net, "adam", state, inheritance.sources)
        parameters = dict(child_net.named_parameters())
        with_state = {k.split(":")[1] for k in state}  # the early-exit head took no step: none
        assert set(restored) == {
            n for n, o in inheritance.sources.items() if n in parameters and o in with_state
        }
        mine = optimiser_tensors(fresh, child_net, "adam")  # restored only: the others have no state yet
        for name in restored:
            origin = inheritance.sources[name]
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(mine[f"adam:{name}:{key}"], state[f"adam:{origin}:{key}"])
        checked += len(restored)
    assert checked > 0


# --- a run ------------------------------------------------------------------------------------------
# the fidelity tests' run (ES, inheritance, 2 rungs, train_longer), resuming its optimiser
BASE = config_dict(FIDELITY_BASE, **{"experimental.resume_optimiser": True})


def _rows(run_dir):
    store = RunStore(run_dir)
    try:
        return store.select()
    finally:
        store.close()


def test_rungs_and_inheriting_mutants_resume_their_source_optimiser(tmp_path):
    run(validate_config(config_dict(BASE)), out=tmp_path / "run")
    rows = _rows(tmp_path / "run")
    promoted = [r for r in rows if (r.result.fidelity or {}).get("rung") == 1]
    assert promoted
    for row in promoted:  # the same network: every parameter's state
        net = build_network(plan_network(Genome.from_json(row.genome), GRAMMAR, (1, 8, 8), 10), 0)
        assert row.result.train["optimiser_resumed"] == len(list(net.parameters()))
    mutants = [r for r in rows if r.kind == "mutant" and (r.result.inherited or {}).get("layers")]
    assert any(r.result.train["optimiser_resumed"] > 0 for r in mutants if r.result.train)
    for row in rows:
        if not row.result.train:  # an invalid network never trained
            continue
        if row.continue_from is None:
            assert row.result.train["optimiser_resumed"] is None
        else:
            assert row.result.train["optimiser_resumed"] is not None
    files = {p.name for p in (tmp_path / "run" / "weights").iterdir()}
    assert {f.replace(".optimiser", "") for f in files if ".optimiser" in f} == {
        f for f in files if ".optimiser" not in f
    }


def test_without_resuming_no_optimiser_is_kept_or_resumed(tmp_path):
    data = config_dict(BASE)
    del data["experimental"]["resume_optimiser"]  # the default: off
    config = validate_config(data)
    assert config.experimental.resume_optimiser is False
    run(config, out=tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert any(r.continue_from is not None for r in rows)  # train_longer or rungs continue...
    assert all(r.result.train["optimiser_resumed"] is None for r in rows if r.result.train)
    assert not [p for p in (tmp_path / "run" / "weights").iterdir() if ".optimiser" in p.name]


def test_a_damaged_optimiser_state_is_named_on_resume(tmp_path, capsys):
    run(validate_config(config_dict(BASE, **{"search.generations": 2})), out=tmp_path / "run")
    run_dir = tmp_path / "run"
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    needed = checkpoint["checkpoint"]["optimisers"]
    assert checkpoint["checkpoint"]["format"] == 2 and needed
    assert set(needed) <= set(checkpoint["checkpoint"]["weights"])
    name = next(iter(needed))
    (run_dir / needed[name]["file"]).write_bytes(b"short")
    assert main(["resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"optimiser state of evaluation {name}" in err and "Traceback" not in err


def test_the_task_carries_the_optimiser_state_as_base64():
    from evowatt.driver.task_records import DataRef, EvalSettings, EvalTask

    task = EvalTask(1, {}, "", DataRef(), EvalSettings(), 0, init_weights=b"w", init_optimiser=b"\x00opt")
    again = EvalTask.from_json(json.loads(json.dumps(task.to_json())))
    assert again.init_optimiser == b"\x00opt" and again.init_weights == b"w"
    assert copy.deepcopy(again) == again
