"""The loop that joins search, runner and store: ask, evaluate, record, tell, checkpoint.

Resuming is the same loop over a store that already holds results: a candidate whose evaluation is
recorded is not evaluated again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from evowatt import __version__
from evowatt.config import RunConfig, validate_config
from evowatt.errors import EvowattError
from evowatt.evaluate import DataRef, EvalSettings, EvalTask, evaluate, score_on_test
from evowatt.genome import check_network_against_grammar
from evowatt.grammar import Grammar, load_grammar, parse_grammar
from evowatt.runners import make_runner
from evowatt.search import Candidate, EvolutionStrategy, fitness_of
from evowatt.search.es import derived_seed
from evowatt.store import CONFIG_NAME, GRAMMAR_NAME, RunStore

Progress = Callable[..., None]


@dataclass
class RunResult:
    run_dir: Path
    best: dict[str, Any] | None  # the evaluation row of the final parent
    final: dict[str, Any] | None  # the final training's row, when configured
    generations: list[dict[str, Any]]
    evaluations: int
    wall_seconds: float
    stopped: str  # generations | time_limit


def _quiet(*_: Any, **__: Any) -> None:
    pass


def data_ref(config: RunConfig) -> DataRef:
    d = config.dataset
    return DataRef(d.name, d.path, config.seed, tuple(d.splits), d.train_subset, d.test_subset)


def eval_settings(config: RunConfig, budget=None, report_test: bool = False) -> EvalSettings:
    budget = budget or config.training.budget
    t = config.training
    return EvalSettings(
        budget_seconds=budget.seconds,
        budget_steps=budget.steps,
        max_epochs=t.max_epochs,
        eval_batch_size=t.eval_batch_size,
        device=t.device,
        threads=t.threads,
        max_params=config.search.caps.max_params,
        max_flops=config.search.caps.max_flops,
        report_test=report_test,
    )


def prepare(config: RunConfig) -> tuple[Grammar, str]:
    """Check what a user can get wrong before any work: grammar, rule names, dataset."""
    grammar = load_grammar(config.grammar)
    problems = check_network_against_grammar(grammar, config.network)
    if problems:
        raise EvowattError("the network section does not match the grammar:\n  " + "\n  ".join(problems))
    data_ref(config).load()
    return grammar, Path(grammar.source).read_text(encoding="utf-8")


def default_run_dir(config: RunConfig) -> Path:
    name = config.output.name or f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-seed{config.seed}"
    return Path(config.output.dir) / name


def run(config: RunConfig, out: str | Path | None = None, progress: Progress | None = None) -> RunResult:
    """Run a search from scratch into a new run directory."""
    grammar, grammar_text = prepare(config)
    run_dir = Path(out) if out is not None else default_run_dir(config)
    if (run_dir / "evowatt.sqlite").exists():
        raise EvowattError(
            f"{run_dir} already holds a run; use 'evowatt resume {run_dir}' or choose another --out"
        )
    store = RunStore(run_dir, create=True)
    store.write_config(config.to_dict(), grammar_text)
    store.set_meta("evowatt_version", __version__)
    store.set_meta("started_at", time.time())
    search = EvolutionStrategy(config, grammar)
    return _loop(config, grammar_text, search, store, progress or _quiet)


def resume(run_dir: str | Path, progress: Progress | None = None) -> RunResult:
    """Continue a run from its last checkpoint, reusing evaluations recorded after it."""
    store = RunStore(run_dir)
    config_path = Path(run_dir) / CONFIG_NAME
    import yaml

    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        grammar_text = (Path(run_dir) / GRAMMAR_NAME).read_text(encoding="utf-8")
    except (OSError, yaml.YAMLError) as exc:
        raise EvowattError(f"cannot read the run's config or grammar in {run_dir}: {exc}") from None
    config = validate_config(data, source=str(config_path))
    grammar = parse_grammar(grammar_text, source=str(Path(run_dir) / GRAMMAR_NAME))
    data_ref(config).load()
    search = EvolutionStrategy(config, grammar)
    state = store.load_checkpoint()
    if state is not None:
        search.load_state(state)
    return _loop(config, grammar_text, search, store, progress or _quiet)


def _task(config: RunConfig, grammar_text: str, store: RunStore, candidate: Candidate) -> EvalTask:
    return EvalTask(
        id=candidate.id,
        genome=candidate.genome,
        grammar_text=grammar_text,
        data=data_ref(config),
        settings=eval_settings(config),
        seed=candidate.seed,
        init_weights=store.weights_path(candidate.continue_from)
        if candidate.continue_from is not None
        else None,
        weights_out=store.weights_path(candidate.id),
        kind=candidate.kind,
    )


def _loop(
    config: RunConfig, grammar_text: str, search: EvolutionStrategy, store: RunStore, progress: Progress
) -> RunResult:
    start = time.perf_counter()
    elapsed_before = float(store.meta("elapsed_seconds", 0.0))
    time_limit = config.search.time_limit
    runner = make_runner(config.runner)
    stopped = "generations"
    progress("start", run_dir=store.dir, generations=config.search.generations, lam=config.search.lambda_)
    try:
        while not search.done():
            candidates = search.ask()
            progress("generation", generation=search.generation, candidates=len(candidates))
            by_id = {c.id: c for c in candidates}
            results: dict[int, dict[str, Any]] = {}
            for c in candidates:
                row = store.evaluation(c.id)
                if row is not None and row["genome"] == c.genome:
                    results[c.id] = _row_to_result(row)
            todo = [_task(config, grammar_text, store, c) for c in candidates if c.id not in results]
            if time_limit is not None and elapsed_before + time.perf_counter() - start >= time_limit:
                stopped = "time_limit"
                break
            for task in todo:
                progress("evaluate", candidate=by_id[task.id])
            for result in runner.map(evaluate, todo):
                data = result.to_json()
                candidate = by_id[data["id"]]
                fitness = fitness_of(data, config.fitness)
                store.record(candidate.to_json(), data, fitness)
                results[data["id"]] = data
                progress("result", candidate=candidate, result=data, fitness=fitness)
            record = search.tell([results[c.id] for c in candidates])
            store.record_generation(record)
            store.save_checkpoint(search.state())
            store.set_meta("elapsed_seconds", elapsed_before + time.perf_counter() - start)
            store.prune_weights(search.weights_to_keep())
            progress("told", record=record, parent=search.parent)
    finally:
        runner.close()
        store.set_meta("elapsed_seconds", elapsed_before + time.perf_counter() - start)
    best = _report_test(config, grammar_text, search, store)
    final = _final_training(config, grammar_text, search, store, progress) if best else None
    store.set_meta("finished_at", time.time())
    result = RunResult(
        run_dir=store.dir,
        best=best,
        final=final,
        generations=store.generations(),
        evaluations=len(store.evaluations("WHERE kind != 'final'")),
        wall_seconds=elapsed_before + time.perf_counter() - start,
        stopped=stopped,
    )
    progress("done", result=result)
    store.close()
    return result


def _report_test(
    config: RunConfig, grammar_text: str, search: EvolutionStrategy, store: RunStore
) -> dict[str, Any] | None:
    """The best individual's row, with its test-set accuracy added (computed once, from its saved weights)."""
    if search.parent is None:
        return None
    best = store.evaluation(search.parent.id)
    if best and best["status"] == "ok" and best["weights"] and "test_accuracy" not in best["metrics"]:
        candidate = Candidate(best["id"], best["generation"], best["kind"], best["genome"], best["seed"])
        task = _task(config, grammar_text, store, candidate)
        store.add_metric(best["id"], "test_accuracy", score_on_test(task, best["weights"]))
        best = store.evaluation(best["id"])
    return best


def _final_training(
    config: RunConfig, grammar_text: str, search: EvolutionStrategy, store: RunStore, progress: Progress
) -> dict[str, Any] | None:
    budget = config.training.final_training.budget
    if budget is None or search.parent is None:
        return None
    existing = store.evaluations("WHERE kind = 'final'")
    if existing:
        return existing[-1]
    final_id = search.next_id
    candidate = Candidate(
        final_id,
        search.generation,
        "final",
        search.parent.genome,
        derived_seed(config.seed, final_id),
        parent_id=search.parent.id,
    )
    task = EvalTask(
        final_id,
        candidate.genome,
        grammar_text,
        data_ref(config),
        eval_settings(config, budget, report_test=True),
        candidate.seed,
        weights_out=store.weights_path(final_id),
        kind="final",
    )
    progress("final", candidate=candidate, budget=budget)
    data = evaluate(task).to_json()
    store.record(candidate.to_json(), data, fitness_of(data, config.fitness))
    return store.evaluation(final_id)


def _row_to_result(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "reason": row["reason"],
        "metrics": row["metrics"],
        "train": row["train"],
        "wall_seconds": row["wall_seconds"],
        "weights_path": row["weights"],
        "host": row["host"],
        "device": row["device"],
    }
