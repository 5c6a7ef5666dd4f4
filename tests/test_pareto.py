"""The Pareto search: its machinery against independent references, and the search on hand-made results."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import yaml

from evowatt.config.load import validate_config
from evowatt.config.search import Constraint, Objective
from evowatt.errors import EvowattError
from evowatt.records import EvalResult
from evowatt.representation.grammar import load_grammar
from evowatt.search.front import (
    constrained_ranks,
    crowding_distance,
    hv_contributions,
    hypervolume,
    points_of,
    with_floors,
)
from evowatt.search.pareto import ParetoSearch, RandomSearch
from tests.conftest import SMALL_NETWORK

GRAMMAR = load_grammar("cnn")


def brute_force_ranks(points: np.ndarray) -> list[int]:
    """Non-dominated sorting by peeling fronts with an O(n^2) dominance check per front."""
    n = len(points)
    ranks = [-1] * n
    rank = 0
    left = set(range(n))

    def dominates(a, b):
        return bool(np.all(points[a] <= points[b]) and np.any(points[a] < points[b]))

    while left:
        front = {i for i in left if not any(dominates(j, i) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dims", [2, 3])
def test_nondominated_sorting_equals_brute_force(seed, dims):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(40, dims)).astype(float)  # small integers: many ties and duplicates
    assert constrained_ranks(points, [0.0] * 40).tolist() == brute_force_ranks(points)


def test_crowding_distance_by_hand():
    # four points on one front: boundaries infinite; inner ones sum the normalised neighbour gaps
    points = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    distance = crowding_distance(points)
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    assert distance[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert distance[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)
    assert all(math.isinf(d) for d in crowding_distance(points[:2]))


def test_infeasible_never_outrank_feasible_and_rank_by_violation():
    rng = np.random.default_rng(0)
    points = rng.random((30, 2))
    violations = [0.0] * 10 + list(rng.random(20) + 0.01)
    violations[12] = violations[13]  # equal violations share a rank
    points[10] = [-1.0, -1.0]  # an infeasible point that would dominate everything
    ranks = constrained_ranks(points, violations)
    assert ranks[:10].max() < ranks[10:].min()
    order = sorted(range(10, 30), key=lambda i: violations[i])
    assert [ranks[i] for i in order] == sorted(ranks[i] for i in order)
    assert ranks[12] == ranks[13]


def test_hypervolume_exact_2d_and_3d():
    # 2-D staircase: (1,3), (2,2), (3,1) against (4,4): 3 + 2 + 1 = 6
    assert hypervolume(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), [4, 4]) == pytest.approx(6.0)
    # a dominated point and a point beyond the reference add nothing
    extra = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0], [5.0, 0.0]])
    assert hypervolume(extra, [4, 4]) == pytest.approx(6.0)
    # 3-D: one unit cube at the origin against (1,1,1) is 1; two boxes overlapping: 2*1*1 + 1*2*1 - 1*1*1 = 3
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), [1, 1, 1]) == pytest.approx(1.0)
    boxes = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert hypervolume(boxes, [2, 2, 1]) == pytest.approx(3.0)
    # contributions: each exclusive share; the middle point of the staircase owns 1
    shares = hv_contributions(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), [4, 4])
    assert shares.tolist() == pytest.approx([1.0, 1.0, 1.0])


def _metrics(**values):
    return {
        k: {"value": v, "method": "estimated:model" if "energy" in k else "computed:evo_test"}
        for k, v in values.items()
    }


def result(rid, accuracy, energy, early=None, status="ok", reason=None):
    values = {"accuracy": accuracy, "energy": energy, "params": 100}
    if early is not None:
        values.update(accuracy_1=early[0], energy_1=early[1], params_1=50)
    return EvalResult(rid, status, reason, _metrics(**values) if status == "ok" else {})


OBJECTIVES = [
    Objective(metric="accuracy", objective="maximize"),
    Objective(metric="energy", objective="minimize"),
]


def test_points_per_exit_with_constraints_and_missing_metrics():
    constraints = [Constraint.model_validate("energy < 5"), Constraint.model_validate("accuracy > 0.5")]
    points, reason = points_of(result(0, 0.9, 6.0, early=(0.8, 2.0)), OBJECTIVES, constraints)
    assert set(points) == {"0", "1"} and reason is None
    assert points["0"]["violation"] == pytest.approx(0.2) and "energy < 5" in points["0"]["reason"]
    assert points["1"]["violation"] == 0 and points["1"]["values"] == [0.8, 2.0]
    missing = EvalResult(1, "ok", None, _metrics(accuracy=0.9))
    points, reason = points_of(missing, OBJECTIVES, [])
    assert points == {} and "energy" in reason
    points, reason = points_of(
        result(2, 0, 0, status="invalid", reason="too many parameters"), OBJECTIVES, []
    )
    assert points == {} and reason == "too many parameters"


def config(**search):
    return validate_config(
        {
            "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
            "search": {"algorithm": "pareto", "population": 4, "lambda": 4, "generations": 3, **search},
            "training": {"budget": {"steps": 5}},
        }
    )


def test_both_exits_of_one_individual_on_the_front_and_survival():
    search = ParetoSearch(config(), GRAMMAR)
    asked = search.ask()
    assert len(asked) == 4 and all(c.kind == "random" for c in asked)
    record = search.tell(
        [
            result(0, 0.95, 10.0, early=(0.90, 2.0)),  # both exits non-dominated
            result(1, 0.80, 9.0),  # dominated by #0's early exit
            result(2, 0.50, 1.0),  # cheapest
            result(3, 0, 0, status="invalid", reason="cannot build"),
        ]
    )
    front = {(p["id"], p["exit"]) for p in record.front}
    assert front == {(0, "0"), (0, "1"), (2, "0")}
    assert record.survivors[:2] == [0, 2] and record.survivors[-1] == 3  # no point: last
    assert search.best() == [0, 2]  # the most accurate first
    assert record.hypervolume is not None and record.hypervolume > 0
    # the next generation: offspring of survivors, by tournament
    children = search.ask()
    assert len(children) == 4 and all(c.parent_id in (0, 1, 2, 3) for c in children)
    assert search.ask() == children  # asking again before tell gives the same batch


def test_infeasible_individuals_never_outrank_feasible_in_survival():
    search = ParetoSearch(config(population=4, constraints=["energy < 5"]), GRAMMAR)
    search.ask()
    record = search.tell(
        [result(0, 0.99, 50.0), result(1, 0.40, 4.0), result(2, 0.30, 4.5), result(3, 0.98, 6.0)]
    )
    # both feasible ones first, though #0 and #3 are far more accurate; then by violation (0.2, then 9)
    assert record.survivors == [1, 2, 3, 0]
    assert {p["id"] for p in record.front} == {1}


def test_reference_point_fixed_from_generation_0_and_hypervolume_monotone():
    search = ParetoSearch(config(population=3), GRAMMAR)
    search.ask()
    search.tell([result(0, 0.6, 5.0), result(1, 0.8, 8.0), result(2, 0.4, 2.0)])
    reference = list(search.reference)
    assert reference == pytest.approx([-0.4 + 0.04, 8.0 + 0.6])
    hv0 = search.history[-1]["hypervolume"]
    children = search.ask()
    search.tell([result(c.id, 0.9, 1.0) for c in children])  # dominate everything
    assert search.reference == reference  # fixed, not moved by the better points
    assert search.history[-1]["hypervolume"] > hv0


def test_configured_reference_point_and_hypervolume_survival():
    from evowatt.search.pareto import Member

    cfg = config(population=2, survival="hypervolume", reference_point={"accuracy": 0.0, "energy": 10.0})
    search = ParetoSearch(cfg, GRAMMAR)
    assert search.reference == [0.0, 10.0]
    scored = [search.score(r) for r in (result(0, 0.9, 9.0), result(1, 0.5, 5.0), result(2, 0.45, 4.95))]
    pool = [Member(i, {}, s.points) for i, s in enumerate(scored)]
    # three on one front: #2 sits so close to #1 that its exclusive hypervolume share is the smallest
    assert [m.id for m in search._survivors(pool)] == [0, 1]
    crowding = ParetoSearch(config(population=2), GRAMMAR)
    pool = [Member(i, {}, s.points) for i, s in enumerate(scored)]
    assert sorted(m.id for m in crowding._survivors(pool)) == [0, 2]  # crowding keeps both boundaries


def test_state_round_trip_continues_identically():
    def drive(search, generations):
        for _ in range(generations):
            batch = search.ask()
            search.tell([result(c.id, 0.5 + 0.01 * (c.id % 7), 1.0 + (c.id % 5)) for c in batch])

    a = ParetoSearch(config(), GRAMMAR)
    drive(a, 2)
    b = ParetoSearch(config(), GRAMMAR)
    b.load_state(a.state())
    drive(a, 2)
    drive(b, 2)
    assert a.state() == b.state()


def test_random_search_keeps_the_front_of_everything():
    search = RandomSearch(config(**{"lambda": 3}), GRAMMAR)
    batch = search.ask()
    assert len(batch) == 3 and all(c.kind == "random" for c in batch)
    search.tell([result(0, 0.9, 9.0), result(1, 0.5, 1.0), result(2, 0.4, 5.0)])
    assert sorted(m.id for m in search.population) == [0, 1]
    batch = search.ask()
    assert all(c.kind == "random" for c in batch)


def test_random_search_keeps_the_closest_infeasible_network_through_a_checkpoint():
    """Its population holds feasible networks only; the one nearest the constraints is kept beside it."""
    search = RandomSearch(config(constraints=["accuracy > 0.95"], **{"lambda": 3}), GRAMMAR)
    batch = search.ask()
    search.tell([result(batch[0].id, 0.9, 9.0), result(batch[1].id, 0.5, 1.0), result(batch[2].id, 0.4, 5.0)])
    assert search.population == [] and search.closest.id == batch[0].id
    state = yaml.safe_load(yaml.safe_dump(search.state()))
    again = RandomSearch(config(constraints=["accuracy > 0.95"], **{"lambda": 3}), GRAMMAR)
    again.load_state(state)
    assert again.state() == search.state()
    assert f"the closest is #{batch[0].id} (accuracy 0.9" in again.unmet()
    batch = again.ask()
    again.tell([result(c.id, 0.3, 1.0) for c in batch])  # further off: the closest stays
    assert again.closest.id == search.closest.id


def test_wrong_algorithm_checkpoint_is_refused():
    search = ParetoSearch(config(), GRAMMAR)
    with pytest.raises(ValueError, match="es search"):
        search.load_state({"algorithm": "es", "generation": 0})


@pytest.mark.parametrize(
    "search, message",
    [
        ({"objectives": [{"metric": "accuracy_1"}]}, "apply to every exit"),
        ({"constraints": ["energy <= five J"]}, "expected 'metric < value'"),  # 5 J is a bound
        ({"constraints": ["test_accuracy > 0.9"]}, "never used for selection"),
        ({"objectives": [{"metric": "accuracy"}, {"metric": "accuracy"}]}, "twice"),
        ({"reference_point": {"accuracy": 0}}, "every objective"),
        ({"constraints": ["params > best - 10"]}, "not an objective"),
        ({"constraints": ["accuracy > best + 0.01"]}, "exclude the best network itself"),
        ({"constraints": ["accuracy < best - 0.01"]}, "exclude the best network itself"),
        ({"constraints": ["energy < best - 1"]}, "exclude the best network itself"),
        ({"constraints": ["accuracy > best - one"]}, "'metric > best - margin'"),
    ],
)
def test_bad_pareto_config_names_the_key(search, message):
    from evowatt.errors import EvowattError

    with pytest.raises(EvowattError, match=message):
        config(**search)


def test_all_pairs_on_the_front_are_mutually_non_dominated():
    rng = np.random.default_rng(3)
    search = ParetoSearch(config(population=6, **{"lambda": 6}), GRAMMAR)
    for _ in range(3):
        batch = search.ask()
        search.tell([result(c.id, float(rng.random()), float(rng.random() + 0.1)) for c in batch])
    front = search.history[-1]["front"]
    for a, b in itertools.permutations(front, 2):
        better = a["values"][0] >= b["values"][0] and a["values"][1] <= b["values"][1]
        strictly = a["values"][0] > b["values"][0] or a["values"][1] < b["values"][1]
        assert not (better and strictly)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda s: s.update(population="x"), "population"),
        (lambda s: s["population"][0].update(points={"0": {"values": "a", "violation": 0}}), "population.0"),
        (lambda s: s["population"][0]["points"]["0"].update(values=[1.0]), "values"),
        (lambda s: s["population"][0]["points"]["0"].update(violation=-1), "violation"),
        (lambda s: s.update(reference=[0.0]), "reference"),
        (lambda s: s.update(next_id=1), "next_id"),
        (lambda s: s["pending"][0].update(kind="alien"), "pending.0.kind"),
    ],
)
def test_pareto_checkpoint_fields_of_the_wrong_shape_are_named(edit, field):
    from evowatt.driver.checkpoint import CheckpointError

    search = ParetoSearch(config(), GRAMMAR)
    search.ask()
    search.tell([result(c.id, 0.5 + 0.1 * c.id, 1.0 + c.id) for c in search.ask()])
    search.ask()
    state = json.loads(json.dumps(search.state()))
    ParetoSearch(config(), GRAMMAR).load_state(json.loads(json.dumps(state)))  # the unedited one loads
    edit(state)
    with pytest.raises(CheckpointError, match=field.replace(".", r"\.")):
        ParetoSearch(config(), GRAMMAR).load_state(state)


def _measured(rid, accuracy, energy, method="measured:nvml", device="cuda:0"):
    measured = result(rid, accuracy, energy)
    measured.metrics["energy"] = {"value": energy, "method": method}
    measured.device = device
    return measured


def test_a_front_refuses_estimated_and_measured_energies_together():
    """A Ray cluster whose nodes resolve `energy.meter: auto` differently must not rank across meters."""
    search = ParetoSearch(config(population=3), GRAMMAR)
    search.ask()
    with pytest.raises(EvowattError) as refused:
        search.tell([result(0, 0.9, 5.0), _measured(1, 0.8, 2.0), result(2, 0.7, 1.0)])
    message = str(refused.value)
    assert "estimated:model: #0, #2" in message and "measured:nvml on cuda: #1" in message
    assert "energy.meter" in message  # names the fix


def test_a_front_refuses_one_meter_on_two_device_kinds_and_accepts_one_kind():
    search = ParetoSearch(config(population=2), GRAMMAR)
    search.ask()
    with pytest.raises(EvowattError, match="measured:rapl on cpu: #1"):
        search.tell([_measured(0, 0.9, 5.0), _measured(1, 0.8, 2.0, "measured:rapl", "cpu")])
    search = ParetoSearch(config(population=2), GRAMMAR)
    search.ask()
    record = search.tell([_measured(0, 0.9, 5.0, device="cuda:0"), _measured(1, 0.8, 2.0, device="cuda:1")])
    assert {p["id"] for p in record.front} == {0, 1}
    assert search.population[0].points["0"]["source"] == "measured:nvml on cuda"


def test_an_accuracy_and_flops_front_has_no_meter_to_compare():
    objectives = [
        {"metric": "accuracy", "objective": "maximize"},
        {"metric": "params", "objective": "minimize"},
    ]
    search = ParetoSearch(config(population=2, objectives=objectives), GRAMMAR)
    search.ask()
    record = search.tell([result(0, 0.9, 5.0), _measured(1, 0.8, 2.0)])  # energies differ, unused
    assert record.front and search.population[0].points["0"]["source"] is None


@pytest.mark.parametrize("algorithm", ["es", "pareto", "random"])
@pytest.mark.parametrize("fidelity", [None, {"min_budget": 2, "eta": 2, "rungs": 3}])
def test_the_planned_evaluations_are_what_the_search_asks_for(algorithm, fidelity):
    """The progress bar's total: every search (and successive halving) asks for exactly that many."""
    from evowatt.driver.setup import make_search, planned_evaluations

    search_config = {"algorithm": algorithm, "population": 5, "lambda": 4, "generations": 3}
    data = {
        "network": {**SMALL_NETWORK, "macro_structure": ["learning", "model_partition"]},
        "search": {**search_config, "fidelity": fidelity},
        "training": {"budget": {"steps": 8}},
    }
    config = validate_config(data)
    search = make_search(config, GRAMMAR)
    asked = 0
    rng = np.random.default_rng(0)
    while not search.done():
        batch = search.ask()
        asked += len(batch)
        search.tell([result(c.id, float(rng.random()), float(rng.random())) for c in batch])
    assert asked == planned_evaluations(config)


def test_a_relative_floor_is_written_read_and_fixed_by_the_best():
    floor = Constraint.model_validate("accuracy > best - 0.01")
    assert (floor.metric, floor.type, floor.relative) == ("accuracy", "greater_than", True)
    assert floor.value == -0.01
    assert floor.text() == "accuracy > best - 0.01"
    assert Constraint.model_validate(floor.text()) == floor
    assert floor.bound(0.9).value == pytest.approx(0.89)
    assert not Constraint.model_validate("energy < 5").relative
    ceiling = Constraint.model_validate("energy < best+2")
    assert (ceiling.value, ceiling.relative, ceiling.text()) == (2.0, True, "energy < best + 2")
    # the bound follows the best point that meets the fixed constraints, not an infeasible better one
    values = [[0.95, 9.0], [0.90, 2.0], [0.895, 1.0], [0.80, 0.5]]
    total = with_floors(values, [0.3, 0.0, 0.0, 0.0], OBJECTIVES, [floor])
    assert total[:3] == [0.3, 0.0, 0.0]
    assert total[3] == pytest.approx((0.89 - 0.80) / 0.89)
    # where no point meets the fixed constraints, the floor is fixed by the best of all
    assert with_floors([[0.5, 1.0], [0.3, 1.0]], [0.1, 0.2], OBJECTIVES, [floor])[1] > 0.2
    assert with_floors(values, [0.0] * 4, OBJECTIVES, []) == [0.0] * 4
    nan = float("nan")  # a diverged network's accuracy fixes no floor
    assert with_floors([[nan, 1.0], [0.9, 2.0], [0.8, 1.0]], [0.0] * 3, OBJECTIVES, [floor])[:2] == [0.0, 0.0]


def test_a_relative_floor_keeps_the_front_within_the_margin_of_the_best_as_it_rises():
    search = ParetoSearch(config(population=4, constraints=["accuracy > best - 0.05"]), GRAMMAR)
    search.ask()
    record = search.tell(
        [result(0, 0.70, 9.0), result(1, 0.67, 2.0), result(2, 0.30, 0.1), result(3, 0.60, 0.5)]
    )
    # #2 and #3 are cheap but more than 0.05 below the best: off the front, ranked by their shortfall
    assert {p["id"] for p in record.front} == {0, 1} and search.best() == [0, 1]
    assert record.survivors == [0, 1, 3, 2]
    assert search.unmet() is None
    children = search.ask()
    record = search.tell([result(c.id, 0.80 - 0.01 * i, 5.0 + i) for i, c in enumerate(children)])
    # the floor rose to 0.75: the generation-0 networks left the front and the population
    assert {p["id"] for p in record.front} == {children[0].id}
    assert set(record.survivors) == {c.id for c in children}
    # a checkpoint holds no floor: the resumed search ranks the same
    again = ParetoSearch(config(population=4, constraints=["accuracy > best - 0.05"]), GRAMMAR)
    again.load_state(yaml.safe_load(yaml.safe_dump(search.state())))
    assert again.best() == search.best() and again._record([]).front == record.front
