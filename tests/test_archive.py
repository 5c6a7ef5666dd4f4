import json

import numpy as np
import pytest

from evowatt.config.network import MutationConfig, NetworkConfig
from evowatt.config.schema import RunConfig
from evowatt.representation.archive import ModuleArchive, module_key
from evowatt.representation.genome import random_genome
from evowatt.representation.grammar import load_grammar
from evowatt.representation.mutation import Mutator
from evowatt.search import EvolutionStrategy
from tests.conftest import COMPAT

GRAMMAR = load_grammar(COMPAT / "energize.grammar")
NETWORK = NetworkConfig(
    modules=[
        {"name": "features", "network_structure_init": [1, 2], "network_structure": [0, 5]},
        {"name": "classification", "network_structure_init": [1], "network_structure": [0, 3]},
    ]
)


def modules(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    while len(out) < n:
        m = random_genome(GRAMMAR, NETWORK, rng).modules[len(out) % 2].to_json()
        if m not in out:
            out.append(m)
    return out


def test_sampling_frequencies_follow_inverse_cost():
    archive = ModuleArchive()
    costs = [1.0, 2.0, 4.0, 8.0]
    mods = [m for m in modules(8) if m["type"] == "features"][:4]
    for m, c in zip(mods, costs, strict=True):
        assert archive.add(m, c, "energy", "estimated:model", [1, 28, 28], 0)
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = {module_key(m): 0 for m in mods}
    for _ in range(draws):
        counts[module_key(archive.sample(["features"], rng).to_json())] += 1
    expected = np.array([1 / c for c in costs]) / sum(1 / c for c in costs)
    observed = np.array([counts[module_key(m)] for m in mods]) / draws
    # binomial standard error at 20k draws is below 0.004: allow 4 sigma
    assert np.allclose(observed, expected, atol=0.016), (observed, expected)


def test_sampling_respects_allowed_types_and_empty_archive():
    archive = ModuleArchive()
    rng = np.random.default_rng(0)
    assert archive.sample(["features"], rng) is None
    classification = next(m for m in modules(4) if m["type"] == "classification")
    archive.add(classification, 1.0, "energy", "estimated:model", [64], 3)
    assert archive.sample(["features"], rng) is None
    assert archive.sample(["features", "classification"], rng).type == "classification"


def test_duplicates_unmeasured_and_bounded():
    archive = ModuleArchive(capacity=3)
    mods = modules(6)
    assert archive.add(mods[0], 5.0, "energy", "m", [1], 0)
    assert not archive.add(mods[0], 1.0, "energy", "m", [1], 1)  # identical module: kept once
    assert not archive.add(mods[1], None, "energy", "m", [1], 1)
    assert not archive.add(mods[1], 0.0, "energy", "m", [1], 1)
    assert archive.add(mods[1], 3.0, "energy", "m", [1], 1)
    assert archive.add(mods[2], 4.0, "energy", "m", [1], 1)
    assert not archive.add(mods[3], 6.0, "energy", "m", [1], 2)  # full, and costlier than every entry
    assert archive.add(mods[4], 2.0, "energy", "m", [1], 2)  # full: the costliest (5.0) goes
    assert sorted(e.cost for e in archive.entries) == [2.0, 3.0, 4.0]
    restored = ModuleArchive()
    restored.load_state(json.loads(json.dumps(archive.state())))
    assert restored.state() == archive.state()


def test_reuse_never_yields_an_invalid_module_order():
    archive = ModuleArchive()
    for i, m in enumerate(modules(10, seed=1)):
        archive.add(m, 1.0 + i, "energy", "m", [1], i)
    mutator = Mutator(GRAMMAR, NETWORK, MutationConfig(reuse_module=1.0, remove_module=0.5))
    rng = np.random.default_rng(2)
    genome = random_genome(GRAMMAR, NETWORK, rng)
    order = {"features": 0, "classification": 1}
    inserted = 0
    for _ in range(300):
        outcome = mutator.mutate(genome, rng, archive.sample)
        types = [order[m.type] for m in outcome.genome.modules]
        assert types == sorted(types)  # a features module never follows a classification module
        assert {"features", "classification"} <= {m.type for m in outcome.genome.modules}
        inserted += any(a.startswith("reuse_module") for a in outcome.applied)
        genome = outcome.genome if len(outcome.genome.modules) < 8 else genome
    assert inserted > 100


def test_search_archives_measured_modules_and_reuses_them():
    config = RunConfig.model_validate(
        {
            "network": NETWORK.model_dump(),
            "search": {"lambda": 3, "mutation": {"reuse_module": 1.0}},
        }
    )
    es = EvolutionStrategy(config, GRAMMAR)
    batch = es.ask()
    assert all(c.measure_modules == [0, 1] for c in batch)
    results = []
    for c in batch:
        entries = [
            {
                "module": c.genome["modules"][i],
                "input_shape": [1, 28, 28],
                "metrics": {"energy": {"value": 1.0 + c.id, "method": "estimated:model"}},
            }
            for i in c.measure_modules
        ]
        results.append(
            {
                "id": c.id,
                "status": "ok",
                "modules": entries,
                "metrics": {"accuracy": {"value": 0.5, "method": "x"}},
            }
        )
    es.tell(results)
    assert len(es.archive) == len({module_key(m) for c in batch for m in c.genome["modules"]})
    assert es.archive.entries[0].metric == "energy" and es.archive.entries[0].source_id == 0
    nxt = es.ask()
    reused = [c for c in nxt if any(a.startswith("reuse_module") for a in c.mutations)]
    assert reused, "reuse_module at rate 1 with a filled archive inserts modules"
    for c in reused:  # archived modules need no new measurement
        assert all(c.genome["modules"][i] not in es.archive for i in c.measure_modules)
    state = json.loads(json.dumps(es.state()))
    assert len(state["archive"]["entries"]) == len(es.archive)


@pytest.mark.parametrize("metric", ["power", "energy_0"])
def test_cost_metric_follows_fitness(metric):
    config = RunConfig.model_validate(
        {
            "network": NETWORK.model_dump(),
            "fitness": {"terms": [{"metric": "accuracy"}, {"metric": metric, "objective": "minimize"}]},
        }
    )
    assert EvolutionStrategy(config, GRAMMAR).cost_metric == metric.split("_")[0]
