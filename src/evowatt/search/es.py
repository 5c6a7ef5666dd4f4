"""The (1+λ) evolution strategy of Fast-DENSER / ENERGIZE, as ask/tell.

Generation 0: λ random individuals. Every later generation: the parent retrained from scratch with a
derived seed (an evaluation like any other) plus λ mutants; the fittest of them becomes the parent, the
retrained parent winning ties. ``train_longer`` mutants continue from the parent's weights.

All state is plain data (``state()`` / ``from_state``) so a checkpoint is JSON, and resuming replays
``tell`` with the results the store already holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field

from evowatt.config.schema import RunConfig
from evowatt.provenance import check_one_source, point_source
from evowatt.records import EvalResult
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import Grammar
from evowatt.representation.mutation import ModuleSampler
from evowatt.search.fitness import rank_key, score
from evowatt.search.genomes import MAX_DRAWS, Fits, GenomeSearch
from evowatt.search.protocol import (
    Candidate,
    Evaluated,
    GenerationRecord,
    Score,
    as_evaluated,
    derived_seed,
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

__all__ = ["Candidate", "EvolutionState", "EvolutionStrategy", "check_es_state", "derived_seed"]


@dataclass
class Parent:
    id: int
    genome: dict[str, Any]
    fitness: float | None


class EvolutionStrategy(GenomeSearch):
    """(1+λ): one parent, λ mutants and the parent retrained each generation; ranks by one fitness."""

    algorithm = "es"
    objectives: tuple[()] = ()  # no front: one weighted fitness

    def __init__(
        self,
        config: RunConfig,
        grammar: Grammar,
        reuse_sampler: ModuleSampler | None = None,
        fits: Fits | None = None,
    ):
        # module reuse draws by 1/cost; the cost follows the fitness: power if it uses power, else energy
        used = config.fitness.metrics_used()
        cost = "power" if any(m.startswith("power") for m in used) else "energy"
        super().__init__(config, grammar, cost, reuse_sampler, fits)
        self.used = sorted(used)
        self.inherit = config.search.inherits()  # unset: the ES's default, train from scratch
        self.parent: Parent | None = None

    # --- ask/tell ----------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """The evaluations of the current generation (asking twice returns the same ones)."""
        if self.pending:
            return list(self.pending)
        lam = self.config.search.lambda_
        if self.generation == 0 or self.parent is None:
            self.pending = [self._random() for _ in range(lam)]
            return list(self.pending)
        parent = self.parent
        batch = [self._candidate("parent", parent.genome, parent_id=parent.id)]
        parent_genome = Genome.from_json(parent.genome)
        for _ in range(lam):
            for _ in range(MAX_DRAWS if self.fits else 1):
                outcome = self.mutator.mutate(parent_genome, self.rng, self.reuse_sampler)
                if outcome.train_longer or self._fits(outcome.genome):
                    break
            if outcome.train_longer:
                batch.append(
                    self._candidate(
                        "train_longer",
                        parent.genome,
                        parent_id=parent.id,
                        continue_from=parent.id,
                        mutations=outcome.applied,
                    )
                )
            else:
                inherit = {"continue_from": parent.id, "inherit": True} if self.inherit else {}
                batch.append(
                    self._candidate(
                        "mutant",
                        outcome.genome.to_json(),
                        parent_id=parent.id,
                        mutations=outcome.applied,
                        **inherit,
                    )
                )
        self.pending = batch
        return list(batch)

    def score(self, result: EvalResult) -> Score:
        fitness, reason = score(result, self.config.fitness)
        return Score(fitness=fitness, reason=reason)

    def tell(self, evaluated: Sequence[Evaluated | EvalResult | dict[str, Any]]) -> GenerationRecord:
        """Select the next parent from this generation's results; the retrained parent wins ties."""
        told = as_evaluated(evaluated, self.pending, self.score)
        check_one_source(  # a fitness of measured joules must not be ranked against estimated ones
            {item.candidate.id: point_source(item.result, self.used) for item in told if item.result.ok},
            "in one generation's fitness",
        )
        for item in told:
            self._archive_modules(item.result)
        best = told[0]
        for item in told[1:]:
            if rank_key(item.score.fitness) > rank_key(best.score.fitness):
                best = item
        self.parent = Parent(best.candidate.id, best.candidate.genome, best.score.fitness)
        record = GenerationRecord(
            generation=self.generation,
            evaluations=[item.candidate.id for item in told],
            survivors=[best.candidate.id],
            best_id=best.candidate.id,
            best_fitness=best.score.fitness,
            fitness=[[item.candidate.id, item.score.fitness] for item in told],
        )
        self.history.append(record.to_json())
        self.pending = []
        self.generation += 1
        return record

    def best(self) -> list[int]:
        return [self.parent.id] if self.parent is not None else []

    def handover_value(self, score: Score) -> float | None:
        """What the ES hands over by: the fitness (None: the result has none)."""
        return score.fitness

    # --- state -------------------------------------------------------------------------------------
    def weights_to_keep(self) -> set[int]:
        """Evaluations whose weights may still be needed: the parent's (train_longer, inheriting mutants)."""
        return {self.parent.id} if self.parent is not None else set()

    def state(self) -> dict[str, Any]:
        return {
            "algorithm": "es",
            "generation": self.generation,
            "next_id": self.next_id,
            "parent": asdict(self.parent) if self.parent else None,
            "pending": [c.to_json() for c in self.pending],
            "history": self.history,
            "rng": self.rng.bit_generator.state,
            "archive": self.archive.state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("algorithm", "es") != "es":
            raise ValueError(f"it was written by the {state['algorithm']} search, not the es")
        check_es_state(state, self.grammar)  # each field checked, a bad one named (CheckpointError)
        self.generation = int(state["generation"])
        self.next_id = int(state["next_id"])
        self.parent = Parent(**state["parent"]) if state["parent"] else None
        self.pending = [Candidate(**c) for c in state["pending"]]
        self.history = list(state["history"])
        self.rng.bit_generator.state = state["rng"]
        if state.get("archive") is not None:  # checkpoints from before the archive have none
            self.archive.load_state(state["archive"])


# --- its checkpoint state ---------------------------------------------------------------------------
class ParentState(StateModel):
    id: int = Field(ge=0)
    genome: GenomeState
    fitness: float | None


class GenerationState(StateModel):
    generation: int = Field(ge=0)
    parent_id: int | None = Field(None, ge=0)
    best_fitness: float | None
    evaluations: list[int]


class EvolutionState(StateModel):
    """``EvolutionStrategy.state()``, as a checkpoint must hold it."""

    generation: int = Field(ge=0)
    next_id: int = Field(ge=0)
    parent: ParentState | None
    pending: list[CandidateState]
    history: list[GenerationState]
    rng: RngState
    archive: ArchiveState | None = None


def check_es_state(state: Any, grammar: Any = None) -> EvolutionState:
    """The (1+λ)-ES's search state, checked (the ES keeps reading the plain dict, so genomes stay as
    recorded and compare equal to the store's); with ``grammar``, its genomes are checked against it."""
    checked: EvolutionState = validate(EvolutionState, state)  # type: ignore[assignment]
    if grammar is not None:
        if state["parent"] is not None:
            check_genome(state["parent"]["genome"], grammar, "parent.genome")
        for i, candidate in enumerate(state["pending"]):
            check_genome(candidate["genome"], grammar, f"pending.{i}.genome")
    ids = [c.id for c in checked.pending]
    if len(set(ids)) != len(ids):
        raise CheckpointError(f"field 'pending': evaluation ids repeat ({ids})")
    if any(i >= checked.next_id for i in ids):
        raise CheckpointError(f"field 'next_id': {checked.next_id} is not above the pending ids {ids}")
    return checked
