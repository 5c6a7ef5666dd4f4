import json

import numpy as np
import pytest

from evowatt.config.network import MutationConfig, NetworkConfig
from evowatt.representation.genome import PARTITION_RULE, Genome, Module, random_genome
from evowatt.representation.grammar import load_grammar
from evowatt.representation.mutation import Mutator, insert_layer, normalise_connections, remove_layer
from tests.conftest import COMPAT

GRAMMAR = load_grammar(COMPAT / "energize.grammar")
NETWORK = NetworkConfig(
    modules=[
        {
            "name": "features",
            "network_structure_init": [1, 2, 3, 4, 5],
            "network_structure": [0, 8],
            "levels_back": 1,
        },
        {
            "name": "classification",
            "network_structure_init": [1, 2],
            "network_structure": [1, 3],
            "levels_back": 2,
        },
    ],
    macro_structure=["learning", "model_partition"],
)
ZERO = {k: 0.0 for k in MutationConfig.model_fields}


def only(**rates) -> MutationConfig:
    return MutationConfig(**{**ZERO, **rates})


def test_random_genome_respects_config():
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(200):
        genome = random_genome(GRAMMAR, NETWORK, rng)
        assert [m.type for m in genome.modules] == ["features", "classification"]
        features, classification = genome.modules
        assert 1 <= len(features.layers) <= 5 and 1 <= len(classification.layers) <= 2
        counts.add(len(features.layers))
        for module in genome.modules:
            for i, inputs in enumerate(module.connections):
                assert inputs[0] == i - 1  # every layer reads its predecessor
                levels = 1 if module.type == "features" else 2
                assert all(i - levels <= c < i for c in inputs)
        assert set(genome.macro) == {"learning", PARTITION_RULE}
        point = GRAMMAR.decode(genome.macro[PARTITION_RULE])["partition_point"]
        assert 0 <= point <= max(genome.layer_count - 1, 0)
    assert counts == {1, 2, 3, 4, 5}


def test_layer_reuse_at_init_copies_layers():
    net = NETWORK.model_copy(update={"reuse_layer": 1.0})
    genome = random_genome(GRAMMAR, net, np.random.default_rng(4))
    features = genome.modules[0].layers
    assert all(layer == features[0] for layer in features)


def test_json_round_trip_is_identical():
    genome = random_genome(GRAMMAR, NETWORK, np.random.default_rng(1))
    text = json.dumps(genome.to_json())
    again = Genome.from_json(json.loads(text))
    assert again == genome and json.dumps(again.to_json()) == text


def test_layer_index_counts_every_hidden_layer():
    genome = random_genome(GRAMMAR, NETWORK, np.random.default_rng(2))
    assert genome.layer_count == sum(len(m.layers) for m in genome.modules)
    assert genome.partition_bounds() == {"partition_point": (0, genome.layer_count - 1)}


def test_insert_and_remove_layer_keep_connections_consistent():
    module = Module("features", ["a", "b", "c"], [[-1], [0, -1], [1, 0]])  # type: ignore[list-item]
    insert_layer(module, 1, "x", levels_back=2)
    assert module.layers == ["a", "x", "b", "c"]
    # the new layer reads its predecessor; inputs that moved outside levels_back are dropped
    assert module.connections == [[-1], [0], [1, 0], [2]]
    remove_layer(module, 0, levels_back=2)
    assert module.layers == ["x", "b", "c"]
    assert module.connections == [[-1], [0, -1], [1]]
    assert normalise_connections([[5], [3, -1]], 1) == [[-1], [0]]


def _mutate_many(rates: MutationConfig, n: int = 200, seed: int = 0):
    mutator = Mutator(GRAMMAR, NETWORK, rates)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        parent = random_genome(GRAMMAR, NETWORK, rng)
        snapshot = parent.to_json()
        outcome = mutator.mutate(parent, rng)
        assert parent.to_json() == snapshot  # the parent is never modified
        yield parent, outcome


def test_add_layer_grows_within_bounds():
    grew = 0
    for parent, outcome in _mutate_many(only(add_layer=1.0)):
        for before, after in zip(parent.modules, outcome.genome.modules, strict=True):
            low, high = NETWORK.modules[0 if before.type == "features" else 1].network_structure
            assert low <= len(after.layers) <= high
            assert len(after.layers) - len(before.layers) in (0, 1, 2)
            assert len(after.connections) == len(after.layers)
            grew += len(after.layers) > len(before.layers)
        assert all(a.startswith(("add_layer", "partition_point")) for a in outcome.applied)
    assert grew > 200


def test_add_layer_copy_inserts_an_existing_layer():
    for parent, outcome in _mutate_many(only(add_layer=1.0, reuse_layer=1.0), n=50):
        for before, after in zip(parent.modules, outcome.genome.modules, strict=True):
            if before.layers:
                assert all(layer in before.layers for layer in after.layers)


def test_remove_layer_shrinks_within_bounds():
    shrank = 0
    for parent, outcome in _mutate_many(only(remove_layer=1.0)):
        for before, after in zip(parent.modules, outcome.genome.modules, strict=True):
            low = NETWORK.modules[0 if before.type == "features" else 1].network_structure[0]
            assert len(after.layers) >= low
            assert all(layer in before.layers for layer in after.layers)
            shrank += len(after.layers) < len(before.layers)
    assert shrank > 150


def test_dsge_layer_changes_layers_only():
    for parent, outcome in _mutate_many(only(dsge_layer=1.0), n=50):
        child = outcome.genome
        assert [len(m.layers) for m in child.modules] == [len(m.layers) for m in parent.modules]
        assert child.macro == parent.macro
        assert sum(a.startswith("dsge_layer") for a in outcome.applied) == parent.layer_count
        for module in child.modules:
            for layer in module.layers:
                GRAMMAR.validate(layer)


def test_macro_layer_changes_learning_only():
    changed = 0
    for parent, outcome in _mutate_many(only(macro_layer=1.0), n=50):
        assert [m.to_json() for m in outcome.genome.modules] == [m.to_json() for m in parent.modules]
        GRAMMAR.validate(outcome.genome.macro["learning"])
        changed += outcome.genome.macro["learning"] != parent.macro["learning"]
    assert changed >= 45


def test_partition_point_resampled_when_layer_count_changes():
    for _, outcome in _mutate_many(only(add_layer=1.0, remove_layer=1.0), n=100):
        child = outcome.genome
        point = GRAMMAR.decode(child.macro[PARTITION_RULE])["partition_point"]
        assert 0 <= point <= max(child.layer_count - 1, 0)


def test_train_longer_returns_parent_unchanged():
    for parent, outcome in _mutate_many(only(train_longer=1.0, add_layer=1.0), n=20):
        assert outcome.train_longer and outcome.applied == ["train_longer"]
        assert outcome.genome == parent and outcome.genome is not parent


def test_connections_within_levels_back():
    for _, outcome in _mutate_many(only(add_connection=1.0, add_layer=0.5, remove_layer=0.5), n=100):
        for module in outcome.genome.modules:
            levels = 1 if module.type == "features" else 2
            for i, inputs in enumerate(module.connections):
                assert inputs[0] == i - 1 and all(i - levels <= c < i for c in inputs)
    extra = [a for _, o in _mutate_many(only(add_connection=1.0), n=50) for a in o.applied]
    assert any(a.startswith("add_connection(module 1") for a in extra)
    assert not any(a.startswith("add_connection(module 0") for a in extra)  # levels_back 1: nothing to add


def test_module_reuse_and_removal():
    mutator = Mutator(GRAMMAR, NETWORK, only(reuse_module=1.0, remove_module=1.0))
    rng = np.random.default_rng(0)
    genome = random_genome(GRAMMAR, NETWORK, rng)
    # no archive: reuse is a no-op, and removal never takes the last module of a type
    outcome = mutator.mutate(genome, rng)
    assert [m.type for m in outcome.genome.modules] == ["features", "classification"]
    donor = random_genome(GRAMMAR, NETWORK, rng).modules[1]
    for _ in range(20):
        g = genome.copy()
        mutator.reuse_module(g, rng, lambda types, r: donor)
        types = [m.type for m in g.modules]
        assert types in (["features", "classification", "classification"],)
        assert sorted(types, key=["features", "classification"].index) == types
    assert mutator.valid_positions(genome, "features") == [0, 1]
    assert mutator.valid_positions(genome, "classification") == [1, 2]


@pytest.mark.parametrize("seed", [0, 1])
def test_mutation_sequence_is_seeded(seed):
    a = [o.genome.to_json() for _, o in _mutate_many(MutationConfig(), n=20, seed=seed)]
    b = [o.genome.to_json() for _, o in _mutate_many(MutationConfig(), n=20, seed=seed)]
    assert a == b
