"""A network's cost, measured once per run and reused by every later evaluation of the same network.

Energy, power and latency belong to the network and the device, not to its weights: a rung, a
``train_longer``, a continuation or the final training of a network the run has measured already copies
the first measurement (each metric keeps its method and names the evaluation that measured it) instead
of spending seconds measuring it again. The driver keeps the book: it is filled from the store at the
start (a resumed run finds what the first session measured) and by the loop's events as results arrive.
Torch-free: the task carries the known cost to ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evowatt.driver.observe import BatchMade, EvaluationDone, Event, FinalDone, ScreeningDone
from evowatt.driver.rows import Evaluation
from evowatt.records import EvalResult, Metric
from evowatt.representation.genome import Genome

# what a measurement gives (measure.measure); counted FLOPs and parameters come from the plan anyway
COST_METRICS = ("energy", "energy_gross", "power", "power_gross", "idle_power", "latency")
EXIT_SUFFIXES = {"0": "", "1": "_1"}


@dataclass(frozen=True)
class KnownCost:
    """One network's measured cost: its cost metrics (every exit), the evaluation that measured them."""

    measured_by: int
    meter: str
    device: str
    metrics: dict[str, dict[str, Any]]
    exits: tuple[str, ...]

    @property
    def has_latency(self) -> bool:
        return "latency" in self.metrics

    def to_json(self) -> dict[str, Any]:
        return {"measured_by": self.measured_by, "metrics": self.metrics, "exits": list(self.exits)}


def _cost_of(evaluation_id: int, metrics: dict[str, Metric], result: EvalResult | None) -> KnownCost | None:
    """The cost an evaluation measured itself (not one it reused), or None. ``metrics`` are its recorded
    ones (with what was added after), ``result`` says with which meter, on which device, per exit."""
    if result is None or not result.ok or not result.meter or not result.measurements:
        return None
    measurements = result.measurements
    if any("reused_from" in details for details in measurements.values()):
        return None
    suffixes = [EXIT_SUFFIXES[e] for e in measurements if e in EXIT_SUFFIXES]
    wanted = {f"{name}{suffix}" for name in COST_METRICS for suffix in suffixes}
    kept = {name: metric for name, metric in metrics.items() if name in wanted}
    if "energy" not in kept and "latency" not in kept:
        return None
    return KnownCost(
        measured_by=int(evaluation_id),
        meter=str(result.meter),
        device=str(result.device or ""),
        metrics={n: {**m, "measured_by": m.get("measured_by", evaluation_id)} for n, m in kept.items()},
        exits=tuple(sorted(measurements)),
    )


class NetworkCosts:
    """The run's book of measured networks, keyed by ``Genome.network_key``.

    ``lookup`` returns a cost only where it has every figure the evaluation needs (latency too, where the
    search selects on it or the model is handed over), so a network first measured without latency is
    measured again, once, when a handed model needs it. It uses only what an uninterrupted run would have
    known when it made the task: the evaluations before the batch the task belongs to (the loop's
    ``batch`` event says where a batch starts). A resumed run, whose store already holds part of that
    batch, therefore measures exactly what the uninterrupted run measured.
    """

    def __init__(self, rows: Iterable[Evaluation] = ()):
        self._book: dict[str, list[KnownCost]] = {}
        self.batch_start: int | None = None  # the first id of the batch whose tasks are being made
        for row in rows:
            self.add(row)

    def __len__(self) -> int:
        return len(self._book)

    def add(self, row: Evaluation) -> None:
        """Learn the cost a recorded evaluation measured."""
        self._learn(_cost_of(row.id, row.metrics, row.result), row.genome)

    def add_result(self, result: EvalResult, genome: dict[str, Any]) -> None:
        """Learn the cost an evaluation just measured (the loop's events, before the store is read)."""
        self._learn(_cost_of(result.id, result.metrics, result), genome)

    def _learn(self, cost: KnownCost | None, genome: dict[str, Any]) -> None:
        if cost is None or not genome:
            return
        entries = self._book.setdefault(Genome.from_json(genome).network_key(), [])
        # the same evaluation again, with the latency its handover added: the richer record stands
        entries[:] = [
            e for e in entries if e.measured_by != cost.measured_by or len(e.metrics) > len(cost.metrics)
        ]
        if all(e.measured_by != cost.measured_by for e in entries):
            entries.append(cost)
            entries.sort(key=lambda e: e.measured_by)

    def lookup(
        self, genome: dict[str, Any], meter: str | None, latency: bool, before: int | None = None
    ) -> KnownCost | None:
        """The network's earliest recorded cost on ``meter`` with every figure asked for, measured by an
        evaluation before ``before`` (default: the current batch's start), or None."""
        if meter is None:
            return None
        bound = before if before is not None else self.batch_start
        for cost in self._book.get(Genome.from_json(genome).network_key(), []):
            if bound is not None and cost.measured_by >= bound:
                break
            if cost.meter == meter and (cost.has_latency or not latency):
                return cost
        return None

    def observe(self, event: Event) -> None:
        """An observer of the loop: every recorded evaluation (search, screening, final training) joins the
        book."""
        match event:
            case BatchMade():
                self.batch_start = min((c.id for c in event.candidates), default=None)
            case EvaluationDone() | ScreeningDone() | FinalDone():
                self.add_result(event.result, event.candidate.genome)
