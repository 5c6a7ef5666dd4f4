"""The protocol every search implements, and the records it exchanges with the loop.

A search asks for candidates, is told their evaluated results (each already scored once, by the search's
own ``score``), and says when it is done. Its whole state is plain JSON (``state`` / ``load_state``), so a
checkpoint is a file and resuming is replaying ``tell`` with what the store holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from evowatt.records import Budget, EvalResult

if TYPE_CHECKING:
    from evowatt.config.schema import Objective


def derived_seed(run_seed: int, evaluation_id: int) -> int:
    """A per-evaluation seed that depends only on the run seed and the evaluation's id."""
    return int(np.random.SeedSequence([run_seed, evaluation_id]).generate_state(1, np.uint32)[0])


@dataclass
class Candidate:
    """One evaluation the search asks for; JSON-serialisable."""

    id: int
    generation: int
    kind: str  # random | parent | mutant | train_longer | final
    genome: dict[str, Any]
    seed: int
    parent_id: int | None = None
    continue_from: int | None = None  # evaluation whose trained weights this one starts from
    inherit: bool = False  # with continue_from: only the layers shared with that evaluation's genome load
    budget: Budget | None = None  # instead of training.budget (a fidelity rung's); JSON {"steps": n}
    fidelity: dict[str, Any] | None = None  # multi-fidelity: {"rung", "cumulative", "unit", "root"}
    mutations: list[str] = field(default_factory=list)
    measure_modules: list[int] = field(default_factory=list)  # modules to cost on their own, for the archive

    def __post_init__(self) -> None:
        if self.budget is not None and not isinstance(self.budget, Budget):
            self.budget = Budget.from_json(self.budget)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["budget"] = None if self.budget is None else self.budget.compact()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)  # a JSON budget becomes a Budget in __post_init__


@dataclass
class Score:
    """What a search makes of one result, computed once and recorded with it.

    ``fitness`` is the weighted fitness (the ES); ``points`` holds one entry per model exit ("0" the full
    model, "1" the early exit) with its objective values and total normalised constraint violation (the
    Pareto search). ``reason`` says why there is no fitness or why a point is infeasible.
    """

    fitness: float | None = None
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Score:
        return cls(**(data or {}))


@dataclass
class Evaluated:
    """A candidate with its result and that result's score: what ``tell`` receives."""

    candidate: Candidate
    result: EvalResult
    score: Score


@dataclass(frozen=True)
class GenerationRecord:
    """What any search keeps of a finished generation: its evaluations, survivors and front. The store
    records it and gives it back (``RunStore.generations``) as it was told.

    ``best_id`` is the ES's parent (None for a population search); ``front`` lists the non-dominated
    feasible points as ``{"id": ..., "exit": "0" | "1"}``; ``hypervolume`` is that front's, against the
    run's fixed reference point; ``hypervolume_share`` is it as a share (0..1) of the box between the ideal
    point and the reference, since the raw volume (accuracy times joules) is too small to read.
    """

    generation: int
    evaluations: list[int]
    survivors: list[int]
    best_id: int | None = None
    best_fitness: float | None = None
    front: list[dict[str, Any]] = field(default_factory=list)
    hypervolume: float | None = None
    fitness: list[list[Any]] = field(default_factory=list)  # [[id, fitness]] for the ES
    hypervolume_share: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["parent_id"] = self.best_id  # the name stores and tools of the first version read
        return data

    def __getitem__(self, key: str) -> Any:
        """Read like the first version's dict record (``record["parent_id"]``)."""
        return self.to_json()[key]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationRecord:
        """From ``to_json`` or a first-version row (generation, parent_id, best_fitness, evaluations)."""
        best = data.get("best_id", data.get("parent_id"))
        return cls(
            generation=int(data["generation"]),
            evaluations=[int(i) for i in data.get("evaluations") or []],
            survivors=[int(i) for i in data.get("survivors") or ([] if best is None else [best])],
            best_id=best,
            best_fitness=data.get("best_fitness"),
            front=list(data.get("front") or []),
            hypervolume=data.get("hypervolume"),
            fitness=list(data.get("fitness") or []),
            hypervolume_share=data.get("hypervolume_share"),
        )


class Search(Protocol):
    """ask -> (the loop evaluates, scores with ``score``, records) -> tell; repeat until ``done``.

    Besides the loop's methods, it answers what the driver, the progress display and the handover ask of
    it (``algorithm``, ``parent``, ``objectives``, ``unmet``, ``best_if_told``), so that no caller needs to
    know which search it holds or whether successive halving wraps it.
    """

    generation: int
    next_id: int

    @property
    def algorithm(self) -> str:
        """Which search this is, as ``search.algorithm`` names it (es | pareto | random); under successive
        halving, the wrapped search's. Messages call what ``best`` returns by it (a parent, survivors)."""
        ...

    @property
    def parent(self) -> Any:
        """The ES's current parent (id, genome, fitness), handed to progress callbacks after each round;
        None before the first generation ends and for a population search, which has no single parent."""
        ...

    @property
    def objectives(self) -> Sequence[Objective]:
        """A population search's objectives, in the order of a front point's values (what a progress display
        shows the front by); empty for the ES, which ranks by one weighted fitness."""
        ...

    def ask(self) -> list[Candidate]:
        """The candidates to evaluate next; asking again before ``tell`` returns the same ones."""
        ...

    def score(self, result: EvalResult) -> Score:
        """The result's fitness or objective points; computed once per result by the loop."""
        ...

    def tell(self, evaluated: Sequence[Evaluated]) -> GenerationRecord | None:
        """Select from the asked candidates' results; None when this round did not end a generation."""
        ...

    def done(self) -> bool: ...

    def best(self) -> list[int]:
        """Evaluation ids the run hands to the user: the ES's parent, the Pareto search's front."""
        ...

    def handover_value(self, score: Score) -> float | None:
        """How ``best`` orders what it hands over, for any scored result, higher first (None: it could
        not be handed over): the ES's fitness, the Pareto search's first objective of a feasible point."""
        ...

    def unmet(self) -> str | None:
        """Why ``best`` is empty although networks were evaluated (a constrained search in which nothing met
        the constraints), naming the closest network and what to change; None otherwise."""
        ...

    def best_if_told(self, evaluated: Sequence[Evaluated]) -> list[int]:
        """What ``best`` would be had the generation in progress ended with ``evaluated`` (a time limit
        inside generation 0); a copy of the search is told them: the search and its checkpoint stay as
        they were."""
        ...

    def weights_to_keep(self) -> set[int]:
        """Evaluations whose trained weights a later candidate may still start from."""
        ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


def as_evaluated(
    items: Sequence[Evaluated | EvalResult | dict[str, Any]],
    pending: Sequence[Candidate],
    score: Callable[[EvalResult], Score],
) -> list[Evaluated]:
    """Results for the pending candidates, in order; bare results (tests, old callers) are scored here."""
    by_id: dict[int, Evaluated] = {}
    candidates = {c.id: c for c in pending}
    for item in items:
        if isinstance(item, Evaluated):
            by_id[item.candidate.id] = item
            continue
        result = EvalResult.coerce(item)
        if result.id in candidates:
            by_id[result.id] = Evaluated(candidates[result.id], result, score(result))
    missing = [c.id for c in pending if c.id not in by_id]
    if missing:
        raise ValueError(f"results missing for evaluations {missing}")
    return [by_id[c.id] for c in pending]
