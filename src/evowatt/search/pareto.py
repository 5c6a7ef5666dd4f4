"""A constrained NSGA-II over Fast-DENSER genomes, and random search scored the same way.

Every exit of a network (the full model and, with a partition gene, the early exit) is its own point on
the front; an individual survives while any of its exits does. Feasible points dominate infeasible ones;
infeasible ones rank by total normalised violation; a network that failed or lacks an objective metric has
no point and ranks last, its reason recorded. Parents are chosen by binary tournament on (rank, crowding);
offspring come from the same grammar mutations as the ES (module reuse included). The hypervolume of the
feasible front is recorded each generation against a reference point fixed once (from the config, or
from generation 0) and kept in the state, so the curve is comparable across generations and runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from evowatt.config.schema import RunConfig
from evowatt.provenance import check_one_source
from evowatt.records import EvalResult
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import Grammar
from evowatt.representation.mutation import ModuleSampler
from evowatt.search.front import (
    constrained_ranks,
    crowding_distance,
    default_reference,
    hv_contributions,
    hypervolume,
    minimisation,
    points_of,
    with_floors,
)
from evowatt.search.genomes import MAX_DRAWS, Fits, GenomeSearch
from evowatt.search.protocol import (
    Candidate,
    Evaluated,
    GenerationRecord,
    Score,
    as_evaluated,
)
from evowatt.search.state import (
    ArchiveState,
    CandidateState,
    CheckpointError,
    GenomeState,
    RngState,
    StateModel,
    check_genome,
    validate,
)


@dataclass
class Member:
    """An individual of the population: its genome and its scored points (per exit)."""

    id: int
    genome: dict[str, Any]
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    rank: float = math.inf  # its best exit's rank (inf: no point at all)
    crowding: float = 0.0  # that exit's crowding distance (or hypervolume share)

    def to_json(self) -> dict[str, Any]:
        rank = None if math.isinf(self.rank) else self.rank
        crowding = "inf" if math.isinf(self.crowding) else self.crowding
        return {
            "id": self.id,
            "genome": self.genome,
            "points": self.points,
            "rank": rank,
            "crowding": crowding,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Member:
        rank = math.inf if data.get("rank") is None else float(data["rank"])
        crowding = data.get("crowding", 0.0)
        return cls(int(data["id"]), data["genome"], dict(data.get("points") or {}), rank, float(crowding))


class ParetoSearch(GenomeSearch):
    """NSGA-II: μ survivors by constrained rank and crowding (or HV share), λ offspring a generation."""

    algorithm = "pareto"

    def __init__(
        self,
        config: RunConfig,
        grammar: Grammar,
        reuse_sampler: ModuleSampler | None = None,
        fits: Fits | None = None,
    ):
        search = config.search
        cost = "power" if "power" in {o.metric for o in search.objectives} else "energy"
        super().__init__(config, grammar, cost, reuse_sampler, fits)
        self.objectives = list(search.objectives)
        self.constraints = list(search.constraints)
        self.population: list[Member] = []
        self.reference: list[float] | None = None
        if search.reference_point is not None:
            raw = [[search.reference_point[o.metric] for o in self.objectives]]
            self.reference = [float(v) for v in minimisation(raw, self.objectives)[0]]

    # --- ask/tell ----------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        if self.pending:
            return list(self.pending)
        if self.generation == 0 or not self.population:
            self.pending = [self._random() for _ in range(self.config.search.population)]
        else:
            self.pending = [self._offspring() for _ in range(self.config.search.lambda_)]
        return list(self.pending)

    def score(self, result: EvalResult) -> Score:
        points, reason = points_of(result, self.objectives, self.constraints)
        return Score(points=points, reason=reason)

    def tell(self, evaluated: Sequence[Evaluated | EvalResult | dict[str, Any]]) -> GenerationRecord:
        told = as_evaluated(evaluated, self.pending, self.score)
        for item in told:
            self._archive_modules(item.result)
        pool = self.population + [
            Member(item.candidate.id, item.candidate.genome, item.score.points) for item in told
        ]
        self.population = self._survivors(pool)
        record = self._record([item.candidate.id for item in told])
        self.history.append(record.to_json())
        self.pending = []
        self.generation += 1
        return record

    @property
    def parent(self) -> None:
        """None: a population search has no single parent."""
        return None

    def best(self) -> list[int]:
        """Members with a point on the feasible front, the most accurate (first objective) first."""
        on_front = {m.id for m, _exit in self._front_points()}  # one front, not one per point asked about
        members = [m for m in self.population if m.id in on_front]
        return [m.id for m in sorted(members, key=self._handover_key)]

    def unmet(self) -> str | None:
        """Why ``best()`` is empty although networks were evaluated: no point met the constraints. Names
        the closest member (least total violation) and what to change; None when ``best()`` has members."""
        if self.best() or not self.constraints:
            return None
        scored = [
            (p["violation"], m.id, e, p) for m in self._candidates_for_unmet() for e, p in m.points.items()
        ]
        if not scored:
            return None
        _violation, closest, exit_, point = min(scored, key=lambda item: item[:3])
        where = f"#{closest}" if exit_ == "0" else f"#{closest}'s early exit"
        values = ", ".join(
            f"{o.metric} {v:.4g}" for o, v in zip(self.objectives, point["values"], strict=True)
        )
        wanted = " and ".join(c.text() for c in self.constraints if not c.relative)  # the best meets a floor
        return (
            f"no evaluated network meets the constraints ({wanted}), so none is handed over or final-trained;"
            f" the closest is {where} ({values}; it {point['reason']}): loosen search.constraints, or"
            " give the search longer (search.time_limit, search.generations, training.budget)"
        )

    def _candidates_for_unmet(self) -> list[Member]:
        """Where ``unmet`` looks for the closest network: the population, which keeps infeasible members."""
        return self.population

    # --- selection ---------------------------------------------------------------------------------
    def _flat(self, pool: Sequence[Member]) -> tuple[list[tuple[int, str]], np.ndarray, list[float]]:
        """Every point of the pool: (member index, exit), minimisation-form values, violations (relative
        floors included, fixed by this pool's best)."""
        where, values, violations = [], [], []
        for index, member in enumerate(pool):
            for exit_, point in sorted(member.points.items()):
                where.append((index, exit_))
                values.append(point["values"])
                violations.append(float(point["violation"]))
        violations = with_floors(values, violations, self.objectives, self.constraints)
        return where, minimisation(values, self.objectives), violations

    def _rank(self, pool: Sequence[Member]) -> dict[tuple[int, str], tuple[int, float]]:
        """(rank, crowding or hypervolume share) of every point of the pool."""
        where, points, violations = self._flat(pool)
        if not where:
            return {}
        check_one_source(  # a measured joule and an estimated one must not meet on one front
            {pool[i].id: pool[i].points[e].get("source") for i, e in where}
        )
        self._fix_reference(points, violations)
        ranks = constrained_ranks(points, violations)
        spread = np.zeros(len(where))
        for rank in np.unique(ranks):
            mask = (ranks == rank) & (np.asarray(violations) == 0)
            if not mask.any():
                continue
            if self.config.search.survival == "hypervolume" and self.reference is not None:
                spread[mask] = hv_contributions(points[mask], self.reference)
            else:
                spread[mask] = crowding_distance(points[mask])
        return {w: (int(r), float(s)) for w, r, s in zip(where, ranks, spread, strict=True)}

    def rank(self, told: Sequence[Evaluated]) -> list[Evaluated]:
        """Results best first by constrained rank, then crowding (or HV share): multi-fidelity promotion.

        Ties (above all the two extremes of a front, both infinitely crowded) go to the better first
        objective, the one the run hands over by: a short rung underrates what a larger network learns,
        while a cheap network's energy is exact at any rung, so the longer rungs are spent where they can
        change the accuracy end of the front. Then the candidates' order.
        """
        pool = [Member(e.candidate.id, e.candidate.genome, e.score.points) for e in told]
        ranked = self._rank(pool)

        def key(index: int) -> tuple[float, float, float, int]:
            mine = [ranked[(index, e)] for e in pool[index].points]
            if not mine:
                return (math.inf, 0.0, 0.0, index)
            rank, spread = min(mine, key=lambda rs: (rs[0], -rs[1]))
            return (float(rank), -spread, self._handover_key(pool[index])[0], index)

        return [told[i] for i in sorted(range(len(told)), key=key)]

    def _survivors(self, pool: list[Member]) -> list[Member]:
        """μ members, admitted point by point in (rank, -spread) order: a member stays while any exit does."""
        ranked = self._rank(pool)
        for index, member in enumerate(pool):
            mine = [ranked[(index, e)] for e in member.points]
            if mine:
                rank, spread = min(mine, key=lambda rs: (rs[0], -rs[1]))
                member.rank, member.crowding = float(rank), spread
            else:
                member.rank, member.crowding = math.inf, 0.0
        order = sorted(
            range(len(pool)),
            key=lambda i: (pool[i].rank, -pool[i].crowding, pool[i].id),
        )
        return [pool[i] for i in order[: self.config.search.population]]

    def _tournament(self) -> Member:
        """Binary tournament: lower rank wins, then larger crowding; a full tie is a coin toss."""
        if len(self.population) == 1:
            return self.population[0]
        a, b = (self.population[int(i)] for i in self.rng.choice(len(self.population), 2, replace=False))
        key_a, key_b = (a.rank, -a.crowding), (b.rank, -b.crowding)
        if key_a == key_b:
            return a if self.rng.random() < 0.5 else b
        return a if key_a < key_b else b

    # --- the front -----------------------------------------------------------------------------------
    def _front_points(self) -> list[tuple[Member, str]]:
        """The feasible non-dominated points of the population."""
        where, points, violations = self._flat(self.population)
        if not where:
            return []
        ranks = constrained_ranks(points, violations)
        return [
            (self.population[i], e)
            for (i, e), r, v in zip(where, ranks, violations, strict=True)
            if r == 0 and v == 0
        ]

    def handover_value(self, score: Score) -> float | None:
        """What the handover orders by: the first objective of the result's best feasible point, signed
        so that higher is better (None: no point is feasible)."""
        values = [p["values"][0] for p in score.points.values() if p["violation"] == 0]
        if not values:
            return None
        return max(values) if self.objectives[0].objective == "maximize" else -min(values)

    def _handover_key(self, member: Member) -> tuple[float, int]:
        value = self.handover_value(Score(points=member.points))
        return (-(value if value is not None else -math.inf), member.id)

    def _fix_reference(self, points: np.ndarray, violations: Sequence[float]) -> None:
        """The hypervolume reference, fixed once from the first feasible points and kept in the state."""
        feasible = np.asarray(violations) == 0
        if self.reference is None and feasible.any():
            self.reference = default_reference(points[feasible])

    def _ideal(self) -> list[float] | None:
        """The best point any network could reach, in minimisation form: accuracy 1, every other metric
        (a cost, a loss) 0. None when an objective has no such bound (a maximised cost)."""
        ideal = []
        for objective in self.objectives:
            if objective.objective == "minimize":
                ideal.append(0.0)
            elif objective.metric.startswith("accuracy"):
                ideal.append(-1.0)
            else:
                return None
        return ideal

    def hypervolume_share(self, volume: float | None) -> float | None:
        """``volume`` as a share of the box between the ideal point and the reference: comparable across
        objectives and units (the raw volume of accuracy times joules is around 1e-6). None without a
        reference or an ideal, or when the reference is no worse than the ideal."""
        ideal = self._ideal()
        if volume is None or self.reference is None or ideal is None:
            return None
        extents = [r - i for r, i in zip(self.reference, ideal, strict=True)]
        if min(extents) <= 0:
            return None
        return volume / math.prod(extents)

    def _record(self, evaluations: list[int]) -> GenerationRecord:
        front = self._front_points()
        hv = None
        if self.reference is not None:
            values = minimisation([m.points[e]["values"] for m, e in front], self.objectives)
            hv = hypervolume(values, self.reference)
        return GenerationRecord(
            generation=self.generation,
            evaluations=evaluations,
            survivors=[m.id for m in self.population],
            front=[{"id": m.id, "exit": e, "values": m.points[e]["values"]} for m, e in front],
            hypervolume=hv,
            hypervolume_share=self.hypervolume_share(hv),
        )

    # --- candidates ----------------------------------------------------------------------------------
    def _offspring(self) -> Candidate:
        for _ in range(MAX_DRAWS if self.fits else 1):
            parent = self._tournament()
            outcome = self.mutator.mutate(Genome.from_json(parent.genome), self.rng, self.reuse_sampler)
            if outcome.train_longer or self._fits(outcome.genome):
                break
        if outcome.train_longer:
            return self._candidate(
                "train_longer",
                parent.genome,
                parent_id=parent.id,
                continue_from=parent.id,
                mutations=outcome.applied,
            )
        inherit = {"continue_from": parent.id, "inherit": True} if self.config.search.inherits() else {}
        return self._candidate(
            "mutant", outcome.genome.to_json(), parent_id=parent.id, mutations=outcome.applied, **inherit
        )

    # --- state ---------------------------------------------------------------------------------------
    def weights_to_keep(self) -> set[int]:
        """The population's weights: offspring may continue from them (train_longer)."""
        return {m.id for m in self.population}

    def state(self) -> dict[str, Any]:
        return {
            "algorithm": self.config.search.algorithm,
            "generation": self.generation,
            "next_id": self.next_id,
            "population": [m.to_json() for m in self.population],
            "pending": [c.to_json() for c in self.pending],
            "history": self.history,
            "reference": self.reference,
            "rng": self.rng.bit_generator.state,
            "archive": self.archive.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("algorithm", "es") != self.config.search.algorithm:
            written = state.get("algorithm", "es") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"it was written by the {written} search, not {self.config.search.algorithm}")
        check_pareto_state(state, self.grammar, len(self.objectives))
        self.generation = int(state["generation"])
        self.next_id = int(state["next_id"])
        self.population = [Member.from_json(m) for m in state["population"]]
        self.pending = [Candidate.from_json(c) for c in state["pending"]]
        self.history = list(state["history"])
        self.reference = None if state.get("reference") is None else [float(v) for v in state["reference"]]
        self.rng.bit_generator.state = state["rng"]
        self.archive.load_state(state["archive"])


class RandomSearch(ParetoSearch):
    """λ random genomes a generation, no selection; the population is the feasible front of all seen.

    It also keeps the infeasible network closest to the constraints (least total violation), so that a
    run in which nothing is feasible can name it (``unmet``) although the population holds none.
    """

    algorithm = "random"

    def __init__(
        self,
        config: RunConfig,
        grammar: Grammar,
        reuse_sampler: ModuleSampler | None = None,
        fits: Fits | None = None,
    ):
        super().__init__(config, grammar, reuse_sampler, fits)
        self.closest: Member | None = None

    def ask(self) -> list[Candidate]:
        if not self.pending:
            self.pending = [self._random() for _ in range(self.config.search.lambda_)]
        return list(self.pending)

    def _survivors(self, pool: list[Member]) -> list[Member]:
        ranked = self._rank(pool)
        infeasible = [m for m in pool if m.points and all(p["violation"] > 0 for p in m.points.values())]
        if self.closest is not None:
            infeasible.append(self.closest)
        if infeasible:
            self.closest = min(
                infeasible, key=lambda m: (min(p["violation"] for p in m.points.values()), m.id)
            )
        kept = []
        for index, member in enumerate(pool):
            mine = [ranked[(index, e)] for e in member.points if member.points[e]["violation"] == 0]
            if any(rank == 0 for rank, _ in mine):
                member.rank, member.crowding = 0.0, 0.0
                kept.append(member)
        return kept

    def _candidates_for_unmet(self) -> list[Member]:
        return self.population + ([self.closest] if self.closest is not None else [])

    def state(self) -> dict[str, Any]:
        return {**super().state(), "closest": None if self.closest is None else self.closest.to_json()}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        closest = state.get("closest")
        self.closest = None if closest is None else Member.from_json(closest)


# --- their checkpoint state -------------------------------------------------------------------------
class PointState(StateModel):
    values: list[float]
    violation: float = Field(ge=0)
    reason: str | None = None
    source: str | None = None  # how its energy was obtained (provenance.point_source)

    @field_validator("values", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:  # JSON ints are objective values too (e.g. params)
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]


class MemberState(StateModel):
    id: int = Field(ge=0)
    genome: GenomeState
    points: dict[Literal["0", "1"], PointState] = {}
    rank: float | None = None
    crowding: float | Literal["inf"] = 0.0


class FrontPointState(StateModel):
    id: int = Field(ge=0)
    exit: Literal["0", "1"]


class RecordState(StateModel):
    generation: int = Field(ge=0)
    evaluations: list[int]
    survivors: list[int]
    front: list[FrontPointState] = []
    hypervolume: float | None = None


class ParetoState(StateModel):
    """``ParetoSearch.state()`` (and ``RandomSearch``'s), as a checkpoint must hold it."""

    algorithm: Literal["pareto", "random"]
    generation: int = Field(ge=0)
    next_id: int = Field(ge=0)
    population: list[MemberState]
    pending: list[CandidateState]
    history: list[RecordState]
    reference: list[float] | None
    rng: RngState
    archive: ArchiveState
    closest: MemberState | None = None  # the random search's infeasible network nearest the constraints


def check_pareto_state(state: Any, grammar: Any = None, objectives: int | None = None) -> ParetoState:
    """The Pareto (or random) search's state; with ``grammar``, its genomes are checked against it, and
    every point and the reference point must have one value per objective."""
    checked: ParetoState = validate(ParetoState, state)  # type: ignore[assignment]
    if grammar is not None:
        for i, member in enumerate(state["population"]):
            check_genome(member["genome"], grammar, f"population.{i}.genome")
        for i, candidate in enumerate(state["pending"]):
            check_genome(candidate["genome"], grammar, f"pending.{i}.genome")
    if objectives is not None:
        for i, member in enumerate(checked.population):
            for exit_, point in member.points.items():
                if len(point.values) != objectives:
                    raise CheckpointError(
                        f"field 'population.{i}.points.{exit_}.values': {len(point.values)} values for "
                        f"{objectives} objectives"
                    )
        if checked.reference is not None and len(checked.reference) != objectives:
            raise CheckpointError(
                f"field 'reference': {len(checked.reference)} values for {objectives} objectives"
            )
    ids = [c.id for c in checked.pending] + [m.id for m in checked.population]
    if any(i >= checked.next_id for i in ids):
        raise CheckpointError(f"field 'next_id': {checked.next_id} is not above the ids it holds")
    return checked
