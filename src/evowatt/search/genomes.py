"""What every search over Fast-DENSER genomes shares: the run's generator, ids and seeds, the grammar
mutations and the module archive that module reuse draws from."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evowatt.config.schema import RunConfig
from evowatt.records import EvalResult
from evowatt.representation.archive import ModuleArchive
from evowatt.representation.genome import Genome, random_genome
from evowatt.representation.grammar import Grammar
from evowatt.representation.mutation import ModuleSampler, Mutator
from evowatt.search.protocol import Candidate, Evaluated, derived_seed

#: Whether a genome (as JSON) makes a network the run can build within search.caps; the driver makes it.
Fits = Callable[[dict[str, Any]], bool]

#: How many times a random genome or a mutation is drawn again when it does not fit (then the last is kept
#: and its evaluation says why it is invalid, as without redrawing).
MAX_DRAWS = 20


class GenomeSearch:
    """Base of the ES and the Pareto search; ``cost_metric`` is what module reuse draws by (1 / cost)."""

    def __init__(
        self,
        config: RunConfig,
        grammar: Grammar,
        cost_metric: str,
        reuse_sampler: ModuleSampler | None = None,
        fits: Fits | None = None,
    ):
        self.config = config
        self.grammar = grammar
        self.mutator = Mutator(grammar, config.network, config.search.mutation)
        self.archive = ModuleArchive(config.search.archive_size)
        self.reuse_sampler = reuse_sampler or self.archive.sample
        self.uses_archive = config.search.mutation.reuse_module > 0
        self.cost_metric = cost_metric
        self.fits = fits  # experimental.draw_within_caps: draw again what the caps would refuse
        self.rng = np.random.default_rng(config.seed)
        self.generation = 0
        self.next_id = 0
        self.pending: list[Candidate] = []
        self.history: list[dict[str, Any]] = []

    def done(self) -> bool:
        return self.generation > self.config.search.generations

    def unmet(self) -> str | None:
        """None: only a constrained search can find nothing to hand over (the Pareto search says why)."""
        return None

    def best_if_told(self, evaluated: Sequence[Evaluated]) -> list[int]:
        """``best`` of a copy told ``evaluated`` as the generation in progress; this search is unchanged."""
        trial = copy.deepcopy(self)
        trial.pending = [e.candidate for e in evaluated]
        trial.tell(evaluated)  # each search defines tell and best
        return trial.best()

    def _random(self) -> Candidate:
        for _ in range(MAX_DRAWS if self.fits else 1):
            genome = random_genome(self.grammar, self.config.network, self.rng).to_json()
            if self.fits is None or self.fits(genome):
                break
        return self._candidate("random", genome)

    def _fits(self, genome: Genome) -> bool:
        return self.fits is None or self.fits(genome.to_json())

    def _candidate(self, kind: str, genome: dict[str, Any], **extra: Any) -> Candidate:
        """The next id and its derived seed; new modules are costed on their own for the archive."""
        if self.uses_archive and kind in ("random", "mutant"):
            extra["measure_modules"] = [i for i, m in enumerate(genome["modules"]) if m not in self.archive]
        candidate = Candidate(
            self.next_id, self.generation, kind, genome, derived_seed(self.config.seed, self.next_id), **extra
        )
        self.next_id += 1
        return candidate

    def _archive_modules(self, result: EvalResult) -> None:
        """Keep the modules this evaluation costed on its own (in id order: a reproducible archive)."""
        if not result.ok:
            return
        for entry in result.modules:
            cost = (entry.get("metrics") or {}).get(self.cost_metric) or {}
            self.archive.add(
                entry["module"],
                cost.get("value"),
                self.cost_metric,
                str(cost.get("method")),
                entry.get("input_shape", []),
                result.id,
            )
