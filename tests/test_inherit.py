"""Stable layer ids and Lamarckian weight inheritance (issue 11, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evowatt.config.load import validate_config
from evowatt.config.network import MutationConfig, NetworkConfig
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.nn.builder import build_network, plan_network
from evowatt.nn.inherit import inherit_weights
from evowatt.representation.genome import Genome, random_genome
from evowatt.representation.grammar import load_grammar
from evowatt.representation.mutation import Mutator
from evowatt.search import EvolutionStrategy
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict

GRAMMAR = load_grammar("cnn")
NETWORK = NetworkConfig(
    modules=[
        {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 6]},
        {"name": "classification", "network_structure_init": [1, 2], "network_structure": [0, 3]},
    ],
    macro_structure=["learning", "model_partition"],
)
SHAPE, CLASSES = (1, 8, 8), 10


def _plan(genome: Genome):
    return plan_network(genome, GRAMMAR, SHAPE, CLASSES)


def _valid_genomes(count: int, seed: int = 0) -> list[Genome]:
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        genome = random_genome(GRAMMAR, NETWORK, rng)
        try:
            _plan(genome)
        except Exception:
            continue
        out.append(genome)
    return out


# --- ids ------------------------------------------------------------------------------------------
def test_random_genomes_number_their_layers_and_round_trip():
    genome = _valid_genomes(1)[0]
    assert genome.layer_ids() == list(range(genome.layer_count))
    assert genome.next_layer_id == genome.layer_count
    again = Genome.from_json(genome.to_json())
    assert again.layer_ids() == genome.layer_ids() and again.to_json() == genome.to_json()


def test_old_genomes_without_ids_get_ids_in_layer_order():
    data = _valid_genomes(1, seed=3)[0].to_json()
    data.pop("next_layer_id")
    for module in data["modules"]:
        for layer in module["layers"]:
            layer.pop("id")
    genome = Genome.from_json(data)
    assert genome.layer_ids() == list(range(genome.layer_count))
    assert Genome.from_json(data).to_json() == genome.to_json()  # deterministic


@pytest.mark.parametrize("seed", range(6))
def test_mutation_keeps_ids_of_unchanged_layers_and_numbers_new_ones(seed):
    rates = MutationConfig(train_longer=0, dsge_layer=0.3, add_layer=0.5, remove_layer=0.4, reuse_layer=0.3)
    mutator = Mutator(GRAMMAR, NETWORK, rates)
    rng = np.random.default_rng(seed)
    parent = _valid_genomes(1, seed)[0]
    for _ in range(20):
        child = mutator.mutate(parent, rng).genome
        ids = child.layer_ids()
        assert None not in ids and len(set(ids)) == len(ids)
        by_id = {layer.id: layer for layer in parent.layers()}
        for layer in child.layers():
            if layer.id in by_id:  # a kept id means the same derivation
                assert layer == by_id[layer.id]
            else:
                assert layer.id >= parent.next_layer_id  # never an id the lineage used before
        assert child.next_layer_id >= parent.next_layer_id
        parent = child


def test_insert_elsewhere_keeps_every_other_id():
    parent = _valid_genomes(1, seed=5)[0]
    rates = MutationConfig(**{k: 0.0 for k in MutationConfig.model_fields})
    rates = rates.model_copy(update={"add_layer": 1.0})
    child = Mutator(GRAMMAR, NETWORK, rates).mutate(parent, np.random.default_rng(1)).genome
    assert child.layer_count > parent.layer_count
    assert set(parent.layer_ids()) <= set(child.layer_ids())


# --- inheritance ----------------------------------------------------------------------------------
def _trained(genome: Genome, seed: int = 7):
    """A parent network with weights no fresh initialisation would give."""
    net = build_network(_plan(genome), seed)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(seed)))
    return net


def _layer_tensors(net, genome: Genome, key) -> dict[str, torch.Tensor]:
    state = net.state_dict()
    if isinstance(key, str):
        return {k: v for k, v in state.items() if k.startswith(f"{key}.")}
    index = genome.layer_ids().index(key)
    return {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"layers.{index}.")}


@pytest.mark.parametrize("seed", range(8))
def test_inheritance_copies_exactly_the_shared_layers(seed):
    parent = _valid_genomes(1, seed)[0]
    parent_net = _trained(parent)
    mutator = Mutator(GRAMMAR, NETWORK, MutationConfig(train_longer=0, add_layer=0.5, dsge_layer=0.3))
    rng = np.random.default_rng(seed)
    copied = 0
    for _ in range(10):
        child = mutator.mutate(parent, rng).genome
        try:
            plan = _plan(child)
        except Exception:
            continue
        fresh_net = build_network(plan, 11)
        child_net = build_network(plan, 11)
        outcome = inherit_weights(parent, parent_net.state_dict(), child, child_net, GRAMMAR)
        keys = [*child.layer_ids(), "output", *(["exit_head"] if child_net.exit_head is not None else [])]
        assert sorted(map(str, outcome.inherited + outcome.fresh)) == sorted(map(str, keys))
        for key in keys:
            got = _layer_tensors(child_net, child, key)
            if key in outcome.inherited and got:
                theirs = _layer_tensors(parent_net, parent, key)
                assert got.keys() == theirs.keys()
                assert all(torch.equal(got[k], theirs[k]) for k in got)
            else:
                init = _layer_tensors(fresh_net, child, key)
                assert all(torch.equal(got[k], init[k]) for k in got)
        copied += sum(1 for key in outcome.inherited if _layer_tensors(child_net, child, key))
    assert copied > 0  # the mutations leave layers whose tensors are inherited


def test_a_changed_shape_under_the_same_id_is_never_loaded():
    parent = next(
        g for g in _valid_genomes(40, seed=2) if GRAMMAR.decode(g.modules[0].layers[0])["layer"] == "conv"
    )
    child = parent.copy()
    conv = next(n for n in child.modules[0].layers[0].walk() if "out_channels" in n.params)
    conv.params["out_channels"] = [conv.params["out_channels"][0] + 3]
    parent_net, child_net = _trained(parent), build_network(_plan(child), 11)
    outcome = inherit_weights(parent, parent_net.state_dict(), child, child_net, GRAMMAR)
    first = child.layer_ids()[0]
    assert first in outcome.fresh  # same id, other shape: fresh, no error
    for k, v in _layer_tensors(child_net, child, first).items():
        assert not torch.equal(v, _layer_tensors(parent_net, parent, first)[k]) or v.numel() == 0


def test_identical_genome_inherits_everything():
    parent = _valid_genomes(1, seed=4)[0]
    parent_net, child_net = _trained(parent), build_network(_plan(parent), 99)
    outcome = inherit_weights(parent, parent_net.state_dict(), parent, child_net, GRAMMAR)
    assert outcome.fresh == []
    for name, tensor in parent_net.state_dict().items():
        assert torch.equal(child_net.state_dict()[name], tensor)


# --- the search and a run -------------------------------------------------------------------------
def _es_config(**search):
    return validate_config(
        {"seed": 3, "network": SMALL_NETWORK, "search": {"generations": 2, "lambda": 4, **search}}
    )


def test_inheritance_defaults_to_the_algorithms_choice():
    def search(**values):
        return validate_config({"network": SMALL_NETWORK, "search": values}).search

    assert search().inherits() is False  # the ES: the paper's train-from-scratch
    assert search(algorithm="pareto").inherits() is True
    assert search(algorithm="pareto", inherit_weights=False).inherits() is False
    assert search(inherit_weights=True).inherits() is True


def test_es_mutants_inherit_only_when_asked():
    for setting, expected in ((None, False), (False, False), (True, True)):
        es = EvolutionStrategy(_es_config(inherit_weights=setting), GRAMMAR)
        first = es.ask()
        es.tell([{"id": c.id, "status": "ok", "metrics": {"accuracy": {"value": 0.1 * c.id}}} for c in first])
        mutants = [c for c in es.ask() if c.kind == "mutant"]
        assert mutants
        assert all(c.inherit is expected for c in mutants)
        assert all((c.continue_from == es.parent.id) is expected for c in mutants)


BASE = {
    "seed": 1,
    "grammar": "cnn",
    "dataset": {"name": "digits"},
    "network": SMALL_NETWORK,
    "search": {"generations": 2, "lambda": 2, "inherit_weights": True, "mutation": {"train_longer": 0.3}},
    "training": {"budget": {"steps": 10}, "threads": 1},
    "energy": FAST_ESTIMATE,
}


def test_a_run_with_inheritance_records_what_each_mutant_inherited(tmp_path):
    run(validate_config(config_dict(BASE)), out=tmp_path / "run")
    store = RunStore(tmp_path / "run")
    try:
        rows = store.select()
    finally:
        store.close()
    mutants = [r for r in rows if r.kind == "mutant"]
    assert mutants
    for row in mutants:
        inherited = row.result.inherited
        assert row.continue_from == row.parent_id and inherited["from"] == row.parent_id
        parent = Genome.from_json(next(p for p in rows if p.id == row.parent_id).genome)
        assert set(inherited["layers"]) <= {*parent.layer_ids(), "output", "exit_head"}
        assert set(inherited["layers"]) | set(inherited["fresh"]) >= set(
            Genome.from_json(row.genome).layer_ids()
        )
    for row in rows:
        if row.kind in ("random", "parent"):
            assert row.result.inherited is None
        if row.kind == "train_longer":
            assert row.result.inherited["fresh"] == []
    # the weights left on disk are the last parent's only
    kept = sorted(p.name for p in (tmp_path / "run" / "weights").iterdir())
    assert len(kept) == 1


@pytest.mark.parametrize("kind", ["train_longer", "mutant"])
def test_a_child_of_a_parent_that_never_trained_starts_from_fresh_weights(tmp_path, kind):
    """A Pareto population keeps invalid members while few are valid, and a tournament may pick one as
    the parent of a train_longer or an inheriting child: it has no weights to continue from."""
    import sqlite3

    from evowatt.driver.evaluate import evaluate
    from evowatt.driver.setup import session_meter
    from evowatt.driver.tasks import search_task
    from evowatt.search import Candidate

    config = validate_config(config_dict(BASE))
    run(config, out=tmp_path / "run")
    grammar_text = (tmp_path / "run" / "grammar.grammar").read_text()
    store = RunStore(tmp_path / "run")
    try:
        parent = next(r for r in store.select() if r.weights)
        child = Candidate(
            99,
            2,
            kind,
            parent.genome,
            5,
            parent_id=parent.id,
            continue_from=parent.id,
            inherit=kind == "mutant",
        )
        task = search_task(config, grammar_text, store, child, meter=session_meter(config, store))
        assert task.init_weights is not None and task.init_from == parent.id  # a trained parent
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "run" / "evowatt.sqlite") as db:  # as an invalid evaluation is stored
        db.execute("UPDATE evaluations SET status = 'invalid', weights = NULL WHERE id = ?", (parent.id,))
    store = RunStore(tmp_path / "run")
    try:
        task = search_task(config, grammar_text, store, child, meter=session_meter(config, store))
    finally:
        store.close()
    assert task.init_weights is None and task.init_from is None and task.init_genome is None
    result = evaluate(task)
    assert result.ok and result.inherited is None  # trained from fresh weights, and says so
