"""What reading a run gives: one frozen ``Evaluation`` per row of the store's evaluations table.

Every column is typed (the status a ``Status``, the metrics ``Metric``s, the recorded result an
``EvalResult``, the search's score a ``Score``), so no caller reads a row by string keys or compares a
status with ``"ok"``. Torch-free. ``to_json`` gives the row as the store's JSON columns hold it (the form
``evowatt show --json`` prints).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from evowatt.records import EvalResult, Metric, Status
from evowatt.search.protocol import Candidate, Score

# evaluations the run makes after its search: a last screening of the most promising networks, and the
# final trainings. They are not the search's, and their weights are never pruned
AFTER_SEARCH = ("screen", "final")
# the columns added after the first release, which `evowatt show --json` has always listed first
_ADDED_FIRST = (
    "steps",
    "train_seconds",
    "budget_steps",
    "budget_seconds",
    "measure_seconds",
    "result",
    "score",
)


@dataclass(frozen=True)
class Evaluation:
    """One recorded evaluation: what was asked (candidate columns), what came back, what it was given."""

    id: int
    generation: int | None
    kind: str  # random | parent | mutant | offspring | train_longer | ... | screen | final
    parent_id: int | None
    continue_from: int | None  # the evaluation whose trained weights it started from
    mutations: list[str]
    seed: int | None
    genome: dict[str, Any]  # Genome.to_json()
    status: Status
    reason: str | None
    fitness: float | None
    metrics: dict[str, Metric]  # as recorded, with any added after (test accuracy, latency of a handed model)
    train: dict[str, Any] | None
    wall_seconds: float | None
    host: str | None
    device: str | None
    weights: str | None  # the trained weights' file while they are kept (None once pruned)
    recorded_at: float
    steps: int | None
    train_seconds: float | None
    budget_steps: int | None  # what it was allowed, also when it failed before training
    budget_seconds: float | None
    measure_seconds: float | None  # wall time of its energy measurement
    result: EvalResult | None  # the result as recorded (None: stores from before it was kept whole)
    score: Score | None  # the search's score of it (None: not scored, or stores from before)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def searched(self) -> bool:
        """One of the search's own evaluations (not a screening or a final training)."""
        return self.kind not in AFTER_SEARCH

    @property
    def meter(self) -> str | None:
        """The meter that measured its energy (None: not measured, or not recorded)."""
        return self.result.meter if self.result is not None else None

    def metric(self, name: str) -> float | None:
        """A metric's value; a bare number (hand-built stores) reads as its value."""
        entry = self.metrics.get(name)
        value = entry.get("value") if isinstance(entry, dict) else entry
        return None if value is None else float(value)

    def candidate(self) -> Candidate:
        """The candidate it evaluated, as far as a later task needs one (id, kind, genome, seed)."""
        return Candidate(self.id, self.generation, self.kind, self.genome, self.seed)  # type: ignore[arg-type]

    def to_result(self) -> EvalResult:
        """The result as ``evaluate`` returned it, its weights where they are now, so a resumed ``tell``
        sees exactly what the first one saw."""
        recorded = self.result.to_json() if self.result is not None else self.to_json()
        return EvalResult.from_json({**recorded, "weights_path": self.weights})

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict.fromkeys(_ADDED_FIRST)
        data.update((f.name, getattr(self, f.name)) for f in fields(self))
        data["status"] = self.status.value
        data["result"] = None if self.result is None else self.result.to_json()
        data["score"] = None if self.score is None else self.score.to_json()
        return data

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Evaluation:
        """From a row with its JSON columns decoded (the store's reading); raises ValueError or TypeError
        on a value that is not of its column's type."""
        return cls(
            id=int(row["id"]),
            generation=row.get("generation"),
            kind=str(row["kind"]),
            parent_id=row.get("parent_id"),
            continue_from=row.get("continue_from"),
            mutations=list(row.get("mutations") or []),
            seed=row.get("seed"),
            genome=row.get("genome") or {},
            status=Status(row["status"]),
            reason=row.get("reason"),
            fitness=row.get("fitness"),
            metrics=row.get("metrics") or {},
            train=row.get("train"),
            wall_seconds=row.get("wall_seconds"),
            host=row.get("host"),
            device=row.get("device"),
            weights=row.get("weights"),
            recorded_at=float(row["recorded_at"]),
            steps=row.get("steps"),
            train_seconds=row.get("train_seconds"),
            budget_steps=row.get("budget_steps"),
            budget_seconds=row.get("budget_seconds"),
            measure_seconds=row.get("measure_seconds"),
            result=EvalResult.from_json(row["result"]) if row.get("result") else None,
            score=Score.from_json(row["score"]) if row.get("score") else None,
        )
