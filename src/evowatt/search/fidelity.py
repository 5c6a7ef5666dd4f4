"""Multi-fidelity screening: successive halving within each generation of any search.

``SuccessiveHalving`` wraps a search (the ES, the Pareto search). The wrapped search's candidates of one
generation are first trained on a short budget (rung 0: ``min_budget``); the best ``1/eta`` of them, by
the wrapped search's own ranking (``rank`` when it has one, else fitness), are trained further, each
continuing from its own weights, to a cumulative budget ``eta`` times longer (rung 1), and so on for
``rungs`` rungs. The wrapped search is then told the generation: each candidate's result at the highest
rung it reached, the highest rung first, so that selection prefers the longest-trained.

Every rung above 0 is a new evaluation (new id, same genome, ``continue_from`` its previous rung),
recording its rung and cumulative budget (``Candidate.fidelity``). ``tell`` returns None after a rung that
does not end the generation. The whole in-progress generation is plain JSON in ``state()`` (its
``fidelity`` section, ``FidelityState``), so a run killed between rungs resumes exactly. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, StringConstraints

from evowatt.records import Budget, EvalResult
from evowatt.search.fitness import rank_key
from evowatt.search.protocol import (
    Candidate,
    Evaluated,
    GenerationRecord,
    Score,
    Search,
    as_evaluated,
    derived_seed,
)
from evowatt.search.state import CandidateState, StateModel, validate

if TYPE_CHECKING:
    from evowatt.config.schema import Objective


@dataclass(frozen=True)
class Rungs:
    """The schedule: rung r trains to a cumulative ``min_budget * eta**r`` and keeps ``n // eta**r``."""

    min_budget: float
    eta: int = 3
    rungs: int = 3
    unit: str = "steps"  # steps | seconds: the unit of training.budget

    def cumulative(self, rung: int) -> float:
        value = self.min_budget * self.eta**rung
        return float(round(value)) if self.unit == "steps" else value

    def increment(self, rung: int) -> float:
        """What rung ``rung`` trains on top of the previous one."""
        return self.cumulative(rung) - (self.cumulative(rung - 1) if rung > 0 else 0.0)

    def keep(self, n: int, rung: int) -> int:
        """How many of a generation's ``n`` candidates train at ``rung`` (at least one)."""
        return max(1, math.floor(n / self.eta**rung)) if rung > 0 else n

    def budget(self, rung: int) -> Budget:
        """What rung ``rung`` trains on top of the previous one, as a budget."""
        step = self.increment(rung)
        return Budget(steps=int(step)) if self.unit == "steps" else Budget(seconds=float(step))


def promote(told: Sequence[Evaluated], count: int, ranking=None) -> list[Evaluated]:
    """The ``count`` best of a rung: by ``ranking(told)`` (best first) when given, else by fitness.

    Ties keep the candidates' order (the ES's retrained parent comes first and wins its ties).
    """
    ordered = (
        list(ranking(told))
        if ranking is not None
        else sorted(told, key=lambda e: rank_key(e.score.fitness), reverse=True)
    )
    return ordered[:count]


class SuccessiveHalving:
    """A search that screens each generation of ``inner`` with successive halving (see the module text)."""

    def __init__(self, inner: Search, rungs: Rungs, run_seed: int):
        self.inner = inner
        self.rungs = rungs
        self.run_seed = run_seed
        self.rung = 0
        self.pending: list[Candidate] = []  # the current rung's candidates
        self.reached: dict[int, Evaluated] = {}  # root id -> its latest rung's evaluation
        self.roots: list[Candidate] = []  # the inner search's candidates of this generation, in its order
        self.rung_ids: list[list[int]] = []  # evaluation ids of each rung of this generation

    # --- the protocol, delegated where it is the inner search's (each member by name) --------------
    @property
    def generation(self) -> int:
        return self.inner.generation

    @property
    def next_id(self) -> int:
        return self.inner.next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        self.inner.next_id = value

    @property
    def algorithm(self) -> str:
        return self.inner.algorithm

    @property
    def parent(self) -> Any:
        return self.inner.parent

    @property
    def objectives(self) -> Sequence[Objective]:
        return self.inner.objectives

    def done(self) -> bool:
        return self.inner.done()

    def best(self) -> list[int]:
        return self.inner.best()

    def score(self, result: EvalResult) -> Score:
        return self.inner.score(result)

    def handover_value(self, score: Score) -> float | None:
        return self.inner.handover_value(score)

    def unmet(self) -> str | None:
        return self.inner.unmet()

    def best_if_told(self, evaluated: Sequence[Evaluated]) -> list[int]:
        """The inner search's: a generation told whole, whatever rungs its evaluations reached."""
        return self.inner.best_if_told(evaluated)

    def ask(self) -> list[Candidate]:
        if self.pending:
            return list(self.pending)
        roots = self.inner.ask()
        self.roots = list(roots)
        self.rung, self.reached, self.rung_ids = 0, {}, []
        self.pending = [self._at_rung(c, 0, root=c.id) for c in roots]
        return list(self.pending)

    def tell(self, evaluated: Sequence[Evaluated | EvalResult | dict[str, Any]]) -> GenerationRecord | None:
        """Promote the rung's best (None: the generation goes on) or, after the last rung, tell the inner
        search the generation and return its record."""
        told = as_evaluated(evaluated, self.pending, self.score)
        self.rung_ids.append([e.candidate.id for e in told])
        for item in told:
            self.reached[self._root(item.candidate)] = item
        if self.rung + 1 >= self.rungs.rungs:
            return self._end_generation()
        count = self.rungs.keep(len(self.roots), self.rung + 1)
        promoted = promote(told, count, getattr(self.inner, "rank", None))
        archive = getattr(self.inner, "_archive_modules", None)
        for item in promoted:  # modules are costed at rung 0: archived before a longer rung supersedes them
            if archive is not None and item.result.modules:
                archive(item.result)
        self.rung += 1
        self.pending = [self._promoted(e.candidate) for e in promoted]
        return None

    def _end_generation(self) -> GenerationRecord:
        # the inner search sees each of its candidates once: its longest-trained evaluation, longest first
        rung_of = {cid: r for r, ids in enumerate(self.rung_ids) for cid in ids}
        final = sorted(self.reached.values(), key=lambda e: -rung_of[e.candidate.id])
        self.inner.pending = [e.candidate for e in final]
        record = replace(self.inner.tell(final), evaluations=[cid for ids in self.rung_ids for cid in ids])
        self.pending, self.roots, self.reached, self.rung_ids, self.rung = [], [], {}, [], 0
        return record

    # --- candidates -------------------------------------------------------------------------------
    def _at_rung(self, candidate: Candidate, rung: int, root: int) -> Candidate:
        return replace(
            candidate,
            budget=self.rungs.budget(rung),
            fidelity={
                "rung": rung,
                "cumulative": self.rungs.cumulative(rung),
                "unit": self.rungs.unit,
                "root": root,
            },
        )

    def _root(self, candidate: Candidate) -> int:
        return int((candidate.fidelity or {}).get("root", candidate.id))

    def _promoted(self, previous: Candidate) -> Candidate:
        new_id = self.inner.next_id
        self.inner.next_id += 1
        base = replace(
            previous,
            id=new_id,
            seed=derived_seed(self.run_seed, new_id),
            continue_from=previous.id,
            inherit=False,  # its own weights: the same genome, every tensor
            measure_modules=[],
        )
        return self._at_rung(base, self.rung, root=self._root(previous))

    # --- state ------------------------------------------------------------------------------------
    def weights_to_keep(self) -> set[int]:
        """The inner search's, plus every evaluation of the generation in progress: the current rung's
        candidates continue from theirs, and the inner search may select any of them when it is told."""
        keep = set(self.inner.weights_to_keep())
        keep |= {e.candidate.id for e in self.reached.values()}
        return keep

    def state(self) -> dict[str, Any]:
        return {
            **self.inner.state(),
            "fidelity": {
                "rung": self.rung,
                "pending": [c.to_json() for c in self.pending],
                "roots": [c.to_json() for c in self.roots],
                "rung_ids": self.rung_ids,
                "reached": {
                    str(root): {
                        "candidate": e.candidate.to_json(),
                        "result": e.result.to_json(),
                        "score": e.score.to_json(),
                    }
                    for root, e in self.reached.items()
                },
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state)
        section = state.get("fidelity") or {}
        validate(FidelityState, section, prefix="fidelity.")  # a wrong field named (CheckpointError)
        self.rung = int(section.get("rung", 0))
        self.pending = [Candidate.from_json(c) for c in section.get("pending", [])]
        self.roots = [Candidate.from_json(c) for c in section.get("roots", [])]
        self.rung_ids = [list(ids) for ids in section.get("rung_ids", [])]
        self.reached = {
            int(root): Evaluated(
                Candidate.from_json(e["candidate"]),
                EvalResult.from_json(e["result"]),
                Score.from_json(e["score"]),
            )
            for root, e in (section.get("reached") or {}).items()
        }


# --- its checkpoint state ---------------------------------------------------------------------------
class ReachedState(StateModel):
    candidate: CandidateState
    result: dict[str, Any]  # EvalResult.to_json()
    score: dict[str, Any]  # Score.to_json()


class FidelityState(StateModel):
    """The ``fidelity`` section of ``SuccessiveHalving.state()``: the generation in progress."""

    rung: int = Field(0, ge=0)
    pending: list[CandidateState] = []
    roots: list[CandidateState] = []
    rung_ids: list[list[int]] = []
    reached: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]+$")], ReachedState] = {}
