"""Search narrow, train wide: a genome's width factor and the final training's ``width``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evowatt.config.load import validate_config
from evowatt.config.network import NetworkConfig
from evowatt.driver.session import run
from evowatt.driver.store import RunStore
from evowatt.handover.rebuild import rebuild
from evowatt.nn.builder import InvalidNetwork, build_network, plan_network
from evowatt.representation.genome import Genome, random_genome
from evowatt.representation.grammar import load_grammar
from tests.conftest import config_dict
from tests.test_final_training import BASE

GRAMMAR = load_grammar("cnn")
SHAPE, CLASSES = (1, 28, 28), 10


def _genome(*layers: str) -> Genome:
    """A genome of the given ``features`` productions (conv_block, convolution, ...) in a chain, then one
    dense layer in ``classification``."""
    network = NetworkConfig(
        modules=[
            {"name": "features", "network_structure_init": [1], "network_structure": [0, 8]},
            {"name": "classification", "network_structure_init": [1], "network_structure": [0, 3]},
        ],
        macro_structure=["learning"],
    )
    rng = np.random.default_rng(0)
    genome = random_genome(GRAMMAR, network, rng)
    features = genome.modules[0]
    features.layers = [_layer(kind, rng) for kind in layers]
    features.connections = [[i - 1] for i in range(len(layers))]
    genome.modules[1].layers = [_layer("fully_connected", rng)]
    for node in genome.layers():
        node.id = None
    return genome.assign_ids()


def _layer(kind: str, rng: np.random.Generator):
    """A ``features`` / ``classification`` node whose production is ``kind`` (drawn until it is)."""
    module = "classification" if kind == "fully_connected" else "features"
    while True:
        node = GRAMMAR.sample(module, rng)
        if node.children and node.children[0].symbol == kind:
            return node


def _channels(plan) -> list[int]:
    return [layer.out_shape[0] for layer in plan.layers]


def test_a_widened_genome_multiplies_every_hidden_layers_channels_and_units():
    genome = _genome("conv_block", "convolution", "conv_block")
    narrow = plan_network(genome, GRAMMAR, SHAPE, CLASSES)
    wide = plan_network(genome.widened(2), GRAMMAR, SHAPE, CLASSES)
    kinds = [layer.kind for layer in narrow.layers]
    assert kinds == ["conv_bn", "conv", "conv_bn", "fc"]
    ours, theirs = _channels(narrow), _channels(wide)
    assert theirs[1] == 2 * ours[1] and theirs[3] == 2 * ours[3]  # conv, fc: exactly twice
    for i in (0, 2):  # conv_bn: twice, up to its multiple of 8 (its 256 cap does not apply)
        assert theirs[i] == -(-2 * ours[i] // 8) * 8
    assert wide.output.out_shape == (CLASSES,)  # the classes do not widen
    assert [layer.out_shape[1:] for layer in wide.layers] == [layer.out_shape[1:] for layer in narrow.layers]
    assert wide.params > 3 * narrow.params and wide.flops > 3 * narrow.flops
    model = build_network(wide, 0)
    assert sum(p.numel() for p in model.parameters()) == wide.params
    assert model(torch.zeros(2, *SHAPE)).shape == (2, CLASSES)
    half = plan_network(genome.widened(1.5), GRAMMAR, SHAPE, CLASSES)
    assert _channels(half)[1] == round(1.5 * ours[1]) and _channels(half)[3] == round(1.5 * ours[3])


def test_width_is_written_only_when_set_and_round_trips():
    genome = _genome("conv_block", "conv_block")
    assert "width" not in genome.to_json()  # every genome of a search reads and hashes as before
    wide = genome.widened(1.5)
    assert wide.to_json()["width"] == 1.5 and genome.width == 1.0  # a copy
    back = Genome.from_json(json.loads(json.dumps(wide.to_json())))
    assert back.width == 1.5 and back.to_json() == wide.to_json()
    assert wide.network_key() != genome.network_key()  # a different network
    assert wide.widened(2).width == 3.0


@pytest.mark.parametrize("width", [0.0, -1.0, float("inf")])
def test_an_impossible_width_is_refused_with_the_reason(width):
    genome = _genome("conv_block")
    genome.width = width
    with pytest.raises(InvalidNetwork, match="width is .* above 0"):
        plan_network(genome, GRAMMAR, SHAPE, CLASSES)


@pytest.mark.parametrize("key, value", [("width", 0), ("width", -2), ("others_width", 0)])
def test_a_final_width_must_be_positive(key, value):
    with pytest.raises(Exception, match="greater than 0"):
        validate_config(config_dict(BASE, **{"experimental.final_training": {key: value}}))


def test_the_most_accurate_model_trains_wide_from_fresh_weights_and_the_others_as_searched(tmp_path):
    search = {"algorithm": "pareto", "generations": 1, "lambda": 4, "population": 4}
    final = {"budget": {"steps": 20}, "models": "all", "start_from": "search"}
    wide = {"width": 2, "others_width": 1}
    config = config_dict(
        BASE, **{"search": search, "training.final_training": final, "experimental.final_training": wide}
    )
    result = run(validate_config(config), out=tmp_path / "r")
    assert len(result.finals) >= 2
    store = RunStore(tmp_path / "r")
    try:
        rows = [store.get(f.id) for f in result.finals]
        sources = [store.get(r.parent_id) for r in rows]
        first, *others = rows
        rebuilt = rebuild(store, first.id, (1, 8, 8), 10)  # export's: a wide network for wide weights
    finally:
        store.close()
    assert first.genome["width"] == 2.0
    assert first.continue_from is None and first.result.inherited is None  # fresh weights
    source_genome = Genome.from_json(sources[0].genome)
    wide = plan_network(source_genome.widened(2), GRAMMAR, (1, 8, 8), 10)
    assert first.metrics["flops"]["value"] == wide.flops  # the wide network's cost, not the searched
    assert first.metrics["params"]["value"] == wide.params
    assert "test_accuracy" in first.metrics and first.train["steps"] == 20
    assert sum(p.numel() for p in rebuilt.models[0].parameters()) == wide.params
    assert rebuilt.layers[-1].startswith("width: 2x")
    for row, source in zip(others, sources[1:], strict=True):
        assert "width" not in row.genome and row.genome == source.genome
        assert row.result.inherited["from"] == source.id  # as searched: from its weights
        assert row.metrics["flops"]["value"] == source.metrics["flops"]["value"]


def test_the_final_table_says_where_the_training_started_and_how_wide():
    from evowatt.cli.show import _final_title

    wide = {"parent_id": 7, "genome": {"width": 2.0}, "result": {"inherited": None}}
    inherited = {"from": 7, "layers": [0], "fresh": []}
    searched = {"parent_id": 7, "genome": {}, "result": {"inherited": inherited}}
    assert _final_title(wide) == "final training of #7 (from fresh weights, 2x as wide as searched)"
    assert _final_title(searched) == "final training of #7 (from the search's weights)"
