"""The loop that joins a search, a runner and the store: ask, evaluate, record, tell, checkpoint.

It knows no search in particular (any ``Search``), and everything around it is an object: the
``StoreEvaluator`` reuses evaluations the store already holds (which is how a resumed run replays), the
``TimeLimit`` says when to stop, and its observers (``driver.observe``) see each event: progress, the event
log, the cost book and crash injection.
"""

from __future__ import annotations

import errno
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evowatt.driver.killpoint import killpoint
from evowatt.driver.observe import (
    BatchMade,
    Evaluating,
    EvaluationDone,
    Event,
    GenerationStarted,
    Observers,
    Recording,
    ScreeningDone,
    Told,
)
from evowatt.driver.runners import Runner
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.records import Budget, EvalResult, Status
from evowatt.search.protocol import Candidate, Evaluated, Score, Search


def killpoint_hook(event: Event) -> None:
    """Crash injection for the resume tests (``EVOWATT_KILL_AT``): after training, after recording."""
    match event:
        case Recording():
            killpoint("mid-training")
        case EvaluationDone():
            killpoint("after-record")
        case ScreeningDone():
            killpoint("after-screen")


class TimeLimit:
    """The run's total wall-time budget, counting the time of earlier sessions of a resumed run."""

    def __init__(self, seconds: float | None, elapsed_before: float = 0.0):
        self.seconds = seconds
        self.elapsed_before = elapsed_before
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def expired(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds


def reusable(row: Evaluation | None, candidate: Candidate) -> bool:
    """A recorded evaluation stands for this candidate when it is the same individual trained the same way."""
    return (
        row is not None
        and row.genome == candidate.genome
        and row.kind == candidate.kind
        and row.seed == candidate.seed
    )


def _raise_if_disk_full(result: EvalResult, store: RunStore) -> None:
    """A full disk is the run's problem, not the individual's: recorded as 'failed' it would stay failed
    after the user frees space and resumes, and the run would no longer equal an uninterrupted one."""
    reason = result.reason or ""
    if result.status is Status.FAILED and reason.startswith(f"OSError: [Errno {errno.ENOSPC}]"):
        detail = reason.removeprefix("OSError: ")
        raise EvowattError(
            f"disk full while evaluation {result.id} saved its weights ({detail});"
            " the last checkpoint is intact and every recorded evaluation is kept: free space then "
            f"`evowatt resume {store.dir}`"
        )


def keep_weights(result: EvalResult, store: RunStore) -> EvalResult:
    """Write the trained weights a result brought back (safetensors bytes) into the run directory.

    Only the driver writes the run directory: workers, perhaps on other machines, send weights back in
    the result. A full disk here becomes a failed result that ``_raise_if_disk_full`` turns into the run's
    error (never the individual's)."""
    if result.weights is not None:
        try:
            if result.optimiser is not None:  # first: weights on disk always have theirs beside them
                store.write_optimiser(result.id, result.optimiser)
            result.weights_path = store.write_weights(result.id, result.weights)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise
            result.status, result.reason = Status.FAILED, f"OSError: [Errno {errno.ENOSPC}] {exc.strerror}"
            _raise_if_disk_full(result, store)
        finally:
            result.weights = result.optimiser = None
    return result


@dataclass
class StoreEvaluator:
    """Evaluates candidates through a runner, recording each result the moment it arrives.

    A candidate whose evaluation the store already holds is not evaluated again (its recorded score is
    reused), so resuming is the same loop over a fuller store.
    """

    store: RunStore
    runner: Runner
    make_task: Callable[[Candidate], Any]
    evaluate: Callable[[Any], EvalResult]
    hooks: Observers  # who sees the loop's events
    budget: Budget  # training.budget; a fidelity rung's candidate has its own

    def __call__(
        self, candidates: Sequence[Candidate], score: Callable[[EvalResult], Score], limit: TimeLimit
    ) -> list[Evaluated] | None:
        """Every candidate evaluated and scored, or None when the time limit stopped the batch."""
        by_id = {c.id: c for c in candidates}
        done: dict[int, Evaluated] = {}
        for c in candidates:
            row = self.store.get(c.id)
            if row is not None and reusable(row, c):
                result = row.to_result()
                done[c.id] = Evaluated(c, result, row.score if row.score is not None else score(result))
        if limit.expired():
            return None
        self.hooks(BatchMade(candidates))  # before its tasks are made: what they may reuse
        todo = [self.make_task(c) for c in candidates if c.id not in done]
        for task in todo:
            self.hooks(Evaluating(by_id[task.id]))
        for result in self.runner.map(self.evaluate, todo):
            result = keep_weights(EvalResult.coerce(result), self.store)
            candidate = by_id[result.id]
            _raise_if_disk_full(result, self.store)
            scored = score(result)
            if result.ok and scored.fitness is None and not scored.points and scored.reason:
                result.reason = f"no fitness: {scored.reason}"  # e.g. a minimised metric that is missing
            self.hooks(Recording(candidate, result))
            self.store.record(candidate, result, scored, candidate.budget or self.budget)
            done[result.id] = Evaluated(candidate, result, scored)
            self.hooks(EvaluationDone(candidate, result, scored.fitness, scored))
            if len(done) < len(candidates) and limit.expired():
                break  # the rest of this batch would overrun the time limit: it stays untold
        if len(done) < len(candidates):
            return None
        return [done[c.id] for c in candidates]


def refuse_if_none_valid(told: Sequence[Evaluated], store: RunStore) -> None:
    """A first generation without one valid individual means the grammar or config cannot work: more
    generations would only mutate invalid parents. Stop with the reasons counted (they stay recorded)."""
    if any(e.result.ok and (e.score.fitness is not None or e.score.points) for e in told):
        return
    reasons = [e.result.reason or e.score.reason or str(e.result.status) for e in told]
    # the same problem in other sizes counts once ("kernel 25 ... -8x-8" and "kernel 23 ... -7x-7")
    kinds = Counter(re.sub(r"\d+", "#", r) for r in reasons)
    variants: dict[str, set[str]] = {}
    for r in reasons:
        variants.setdefault(re.sub(r"\d+", "#", r), set()).add(r)
    listed = "\n  ".join(
        f"{n} x {min(variants[kind])}" + (" (sizes vary)" if len(variants[kind]) > 1 else "")
        for kind, n in kinds.most_common()
    )
    raise EvowattError(
        f"generation 0 holds no valid individual ({len(told)} evaluated, recorded in {store.db_path}):\n  "
        f"{listed}\nFix the grammar or the network section (`evowatt check-grammar GRAMMAR --config CONFIG` "
        "samples genomes and says why they do not build), then start a new run"
    )


def run_search(search: Search, evaluate: StoreEvaluator, store: RunStore, limit: TimeLimit) -> str:
    """Ask, evaluate, tell and checkpoint until the search is done or the time is up; says which."""
    hooks = evaluate.hooks
    while not search.done():
        candidates = search.ask()
        hooks(GenerationStarted(search.generation, len(candidates)))
        told = evaluate(candidates, search.score, limit)
        if told is None:
            return "time_limit"
        if search.generation == 0:
            refuse_if_none_valid(told, store)
        record = search.tell(told)
        if record is not None:
            store.record_generation(record)
        # the checkpoint names the weights it needs; only once it is on disk may others be pruned
        keep = search.weights_to_keep()
        store.save_checkpoint(search.state(), keep_weights=keep)
        store.set_meta("elapsed_seconds", limit.elapsed())
        store.prune_weights(keep, below=max(c.id for c in candidates) + 1)
        hooks(Told(record, search, search.parent))
    return "generations"
