"""experimental.draw_within_caps: a random network or a mutation that search.caps would refuse is drawn
again, so no evaluation is spent on a network known to be invalid; off, the search draws as before."""

from __future__ import annotations

import pytest

from evowatt.config.load import validate_config
from evowatt.driver.setup import make_search, within_caps
from evowatt.records import EvalResult, Metric, Status
from evowatt.representation.grammar import load_grammar
from evowatt.search.genomes import MAX_DRAWS

GRAMMAR = load_grammar("cnn")
NETWORK = {
    "modules": [
        {"name": "features", "network_structure_init": [2, 3, 4], "network_structure": [0, 10]},
        {"name": "classification", "network_structure_init": [1], "network_structure": [0, 3]},
    ]
}


def config(algorithm: str, draw: bool, max_flops: int = 200_000):
    return validate_config(
        {
            "seed": 3,
            "grammar": "cnn",
            "dataset": {"name": "digits"},
            "network": NETWORK,
            "search": {
                "algorithm": algorithm,
                "generations": 3,
                "lambda": 6,
                "population": 12,
                "caps": {"max_flops": max_flops},
                **(
                    {
                        "objectives": [
                            {"metric": "accuracy", "objective": "maximize"},
                            {"metric": "energy", "objective": "minimize"},
                        ]
                    }
                    if algorithm == "pareto"
                    else {}
                ),
            },
            "experimental": {"draw_within_caps": draw},
        }
    )


def told(candidates, fits):
    """Results for the candidates: a fitting network is scored, one the caps refuse is invalid."""
    results = []
    for i, c in enumerate(candidates):
        if not fits(c.genome):
            results.append(EvalResult(c.id, Status.INVALID, reason="over the caps"))
            continue
        metrics = {
            "accuracy": Metric(value=0.5 + 0.01 * i, method="measured:validation"),
            "energy": Metric(value=1e-6 * (1 + i), method="estimated:model"),
        }
        results.append(EvalResult(c.id, Status.OK, metrics=metrics))
    return results


@pytest.mark.parametrize("algorithm", ["es", "pareto", "random"])
def test_every_network_drawn_fits_the_caps(algorithm):
    fits = within_caps(config(algorithm, True), GRAMMAR)
    search = make_search(config(algorithm, True), GRAMMAR)
    drawn = []
    for _ in range(3):
        batch = search.ask()
        drawn += batch
        search.tell(told(batch, fits))
    redrawn = [c for c in drawn if c.kind in ("random", "mutant")]
    assert len(redrawn) >= 12 and all(fits(c.genome) for c in redrawn)


@pytest.mark.parametrize("algorithm", ["es", "pareto"])
def test_off_the_search_draws_as_before_and_spends_evaluations_on_invalid_networks(algorithm):
    fits = within_caps(config(algorithm, False), GRAMMAR)
    plain = make_search(config(algorithm, False), GRAMMAR)
    first = plain.ask()
    assert any(not fits(c.genome) for c in first)  # these caps refuse some random networks
    drawing = make_search(config(algorithm, True), GRAMMAR)
    again = drawing.ask()
    # the first draw that fits is kept: where the plain search's first network fits, both agree
    if fits(first[0].genome):
        assert again[0].genome == first[0].genome
    assert [c.id for c in again] == [c.id for c in first]


def test_caps_nothing_can_meet_keep_the_last_draw_and_its_evaluation_says_why():
    tiny = config("pareto", True, max_flops=1)
    fits = within_caps(tiny, GRAMMAR)
    batch = make_search(tiny, GRAMMAR).ask()
    assert len(batch) == 12 and not any(fits(c.genome) for c in batch)
    assert MAX_DRAWS == 20


def test_the_check_is_the_evaluations_own():
    """within_caps refuses exactly what the builder refuses before training (same caps, same input)."""
    from evowatt.nn.builder import InvalidNetwork, plan_network
    from evowatt.representation.genome import Genome

    cfg = config("pareto", False)
    fits = within_caps(cfg, GRAMMAR)
    for c in make_search(cfg, GRAMMAR).ask():
        try:
            plan_network(Genome.from_json(c.genome), GRAMMAR, (1, 8, 8), 10, None, 200_000)
            expected = True
        except InvalidNetwork:
            expected = False
        assert fits(c.genome) is expected
