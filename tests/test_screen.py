"""The screening before the final training: the run's most promising networks, trained a little on the final
training's data, and the best of them gets the final budget (``experimental.final_training.screen``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evowatt.config.load import validate_config
from evowatt.driver.handover import screen_picks
from evowatt.driver.session import resume, run
from evowatt.driver.store import Evaluation, RunStore
from evowatt.records import Status
from evowatt.representation.genome import Genome
from tests.conftest import FAST_ESTIMATE, SMALL_NETWORK, config_dict, run_killed_at
from tests.test_final_training import _genomes

BASE = {
    "seed": 2,
    "network": SMALL_NETWORK,
    "search": {
        "algorithm": "pareto",
        "generations": 2,
        "lambda": 4,
        "population": 4,
        "fidelity": {"min_budget": 5, "eta": 2, "rungs": 2},
    },
    "training": {
        "budget": {"steps": 10},
        "threads": 1,
        "final_training": {"budget": {"steps": 30}},
    },
    "energy": FAST_ESTIMATE,
    "experimental": {"final_training": {"screen": {"models": 3, "budget": {"steps": 15}}}},
}


def _rows(run_dir: Path) -> list[Evaluation]:
    store = RunStore(run_dir)
    try:
        return store.select()
    finally:
        store.close()


def _accuracy(row: Evaluation) -> float:
    return row.metrics["accuracy"]["value"]


@pytest.mark.parametrize(
    "screen, message",
    [
        ({"models": 2}, "screening needs a budget"),
        ({"models": -1}, "greater than or equal to 0"),
        ({"models": 2, "budget": {"seconds": 0}}, "greater than 0"),
    ],
)
def test_a_screen_without_a_sound_budget_or_count_is_refused(screen, message):
    with pytest.raises(Exception, match=message):
        validate_config(config_dict(BASE, **{"experimental.final_training.screen": screen}))


def test_a_screen_without_a_final_training_is_refused():
    screen = {"models": 2, "budget": {"steps": 5}}
    with pytest.raises(Exception, match="final_training.budget is unset"):
        validate_config(
            config_dict(BASE, **{"training.final_training": {}, "experimental.final_training.screen": screen})
        )
    assert validate_config(config_dict(BASE)).experimental.final_training.screen.models == 3
    assert (
        validate_config(
            config_dict(BASE, **{"experimental.final_training": {}})
        ).experimental.final_training.screen.models
        == 0
    )


class _Store:
    """What ``screen_picks`` reads of a store: the search's ok evaluations, and one by id; each row from
    the fields it reads, the others as a store holds them."""

    def __init__(self, rows: list[dict]):
        self.rows = [Evaluation.from_json({"kind": "random", "recorded_at": 0.0, **row}) for row in rows]

    def searched(self, status: Status | None = None) -> list[Evaluation]:
        return [r for r in self.rows if status is None or r.status is status]

    def get(self, evaluation_id: int) -> Evaluation | None:
        return next((r for r in self.rows if r.id == evaluation_id), None)


class _Search:
    """A search whose handover value is the recorded score's fitness."""

    def handover_value(self, score) -> float | None:
        return score.fitness


def test_screen_picks_rank_each_network_by_its_best_evaluation_and_start_from_kept_weights():
    first, relearned, other = _genomes()
    third = other.copy()
    del third.modules[0].layers[-1], third.modules[0].connections[-1]
    fourth = third.copy()
    del fourth.modules[0].layers[-1], fourth.modules[0].connections[-1]

    def row(i, genome: Genome, fitness, weights=None, status="ok"):
        return {
            "id": i,
            "status": status,
            "genome": genome.to_json(),
            "score": {"fitness": fitness},
            "weights": weights,
        }

    rows = [
        row(1, first, 0.90),  # rung 0: the network's best, weights pruned
        row(2, other, 0.85, "w2"),
        row(3, first, 0.70, "w3"),  # rung 1 of the same network scored it lower; its weights are kept
        row(4, relearned, 0.80, "w4"),  # the same network, other learning genes: later and kept
        row(5, third, 0.80),  # no weights kept anywhere: from its best evaluation's genome, fresh
        row(6, fourth, None, "w6"),  # infeasible (no value): never screened
        row(7, fourth, float("nan"), "w7"),  # NaN: never screened
        row(8, fourth, 0.99, "w8", status="failed"),  # not a valid evaluation
    ]
    picks = screen_picks(_Search(), _Store(rows), 3)
    assert [p.id for p in picks] == [4, 2, 5]  # networks by best value 0.90, 0.85, 0.80
    assert [p.id for p in screen_picks(_Search(), _Store(rows), 1)] == [4]
    assert [p.id for p in screen_picks(_Search(), _Store(rows), 10)] == [4, 2, 5]  # 3 networks valid


def test_the_best_screened_network_gets_the_final_training_from_its_screening_weights(tmp_path):
    result = run(validate_config(BASE), out=tmp_path / "r")
    rows = _rows(tmp_path / "r")
    searched = [r for r in rows if r.kind not in ("screen", "final")]
    screens = [r for r in rows if r.kind == "screen"]
    finals = [r for r in rows if r.kind == "final"]
    assert result.evaluations == len(searched)
    assert [s.id for s in result.screened] == [s.id for s in screens]
    # the three networks the whole search ranked highest (accuracy, the first objective), best first
    best: dict[str, float] = {}
    for r in searched:
        if r.status == "ok":
            key = Genome.from_json(r.genome).network_key()
            best[key] = max(best.get(key, 0.0), _accuracy(r))
    top = sorted(best, key=best.get, reverse=True)[:3]
    by_id = {r.id: r for r in rows}
    assert [Genome.from_json(by_id[s.parent_id].genome).network_key() for s in screens] == top
    for s in screens:
        source = by_id[s.parent_id]
        assert s.genome == source.genome and s.train["steps"] == 15
        assert "test_accuracy" not in s.metrics  # the test set never chooses
        # from the source's weights where they were kept, else fresh
        assert s.continue_from == (source.id if source.weights else None)
        assert s.weights is not None  # kept: the final training may continue it
    winner = max(screens, key=lambda s: (_accuracy(s), -s.id))
    assert len(finals) == 1 and result.final.id == finals[0].id
    final = finals[0]
    assert final.parent_id == winner.id and final.continue_from == winner.id
    assert final.genome == winner.genome and final.train["steps"] == 30
    assert "test_accuracy" in final.metrics
    from evowatt.cli.show import _final_title, _with_screening

    title = _final_title(_with_screening(result.final.to_json(), [s.to_json() for s in result.screened]))
    assert title == (
        f"final training of #{winner.parent_id}, the best of 3 screened "
        f"(#{winner.id}; from its screening's weights)"
    )


def test_a_run_killed_after_a_screening_resumes_to_the_same_screening_and_final(tmp_path):
    reference = tmp_path / "reference"
    run(validate_config(BASE), out=reference)
    killed = tmp_path / "killed"
    run_killed_at(BASE, killed, "after-screen:2")
    kinds = [r.kind for r in _rows(killed)]
    assert kinds.count("screen") == 2 and "final" not in kinds
    resume(killed)
    keep = ("id", "kind", "genome", "seed", "parent_id", "continue_from", "status", "steps")

    def history(run_dir: Path) -> list[dict]:
        return [
            {
                **{k: getattr(r, k) for k in keep},
                "accuracy": _accuracy(r) if r.status == "ok" else None,
                "kept": r.weights is not None,
            }
            for r in _rows(run_dir)
        ]

    assert history(killed) == history(reference)


def test_the_es_screens_by_its_fitness_and_hands_the_winner_over(tmp_path):
    search = {"algorithm": "es", "generations": 2, "lambda": 3}
    result = run(validate_config(config_dict(BASE, search=search)), out=tmp_path / "r")
    rows = _rows(tmp_path / "r")
    searched = [r for r in rows if r.kind not in ("screen", "final") and r.fitness is not None]
    screens = [r for r in rows if r.kind == "screen"]
    fitness = {}
    for r in searched:
        key = Genome.from_json(r.genome).network_key()
        fitness[key] = max(fitness.get(key, -1e9), r.fitness)
    assert len(screens) == min(3, len(fitness))
    sources = [fitness[Genome.from_json(s.genome).network_key()] for s in screens]
    assert sources == sorted(fitness.values(), reverse=True)[: len(screens)]
    winner = max(screens, key=lambda s: (s.fitness, -s.id))
    assert result.final.parent_id == winner.id
