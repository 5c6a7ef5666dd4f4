"""The loop that joins search, runner and store: ask, evaluate, record, tell, checkpoint.

Resuming is the same loop over a store that already holds results: a candidate whose evaluation is
recorded is not evaluated again.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from evowatt import __version__
from evowatt.config.schema import BudgetConfig, RunConfig, apply_overrides, validate_config
from evowatt.driver.checkpoint import CheckpointError
from evowatt.driver.costs import NetworkCosts
from evowatt.driver.evaluate import (
    DataRef,
    EvalSettings,
    EvalTask,
    evaluate,
    idle_to_json,
    resolve_device,
    score_on_test,
    time_models,
)
from evowatt.driver.events import EventLog, tee
from evowatt.driver.loop import Hooks, StoreEvaluator, TimeLimit, keep_weights, killpoint_hook, run_search
from evowatt.driver.runners import check_runner, make_runner
from evowatt.driver.store import (
    CONFIG_NAME,
    GRAMMAR_NAME,
    SEARCHED,
    RunStore,
    claim_new_run_dir,
    write_config_files,
)
from evowatt.errors import EvowattError
from evowatt.records import EvalResult
from evowatt.representation.genome import Genome, check_network_against_grammar
from evowatt.representation.grammar import Grammar, load_grammar, parse_grammar
from evowatt.search import Candidate, EvolutionStrategy, Search
from evowatt.search.fidelity import Rungs, SuccessiveHalving
from evowatt.search.protocol import Evaluated, Score, derived_seed

Progress = Callable[..., None]


def make_search(config: RunConfig, grammar: Grammar) -> Search:
    """The search the config names; each implements ``evowatt.search.Search``."""
    from evowatt.search.pareto import ParetoSearch, RandomSearch

    kinds = {"es": EvolutionStrategy, "pareto": ParetoSearch, "random": RandomSearch}
    search: Search = kinds[config.search.algorithm](config, grammar)
    fidelity = config.search.fidelity
    if fidelity is not None:
        unit = "steps" if config.training.budget.steps is not None else "seconds"
        rungs = Rungs(fidelity.min_budget, fidelity.eta, fidelity.rungs, unit)
        search = SuccessiveHalving(search, rungs, config.seed)
    return search


def planned_evaluations(config: RunConfig) -> int:
    """The search evaluations a run makes unless its time limit stops it first: the progress bar's total.

    ES: λ, then λ mutants and the retrained parent a generation; Pareto: the population, then λ
    offspring a generation; random: λ a generation; successive halving adds each rung's promotions.
    """
    search = config.search
    if search.algorithm == "es":
        batches = [search.lambda_] + [search.lambda_ + 1] * search.generations
    elif search.algorithm == "pareto":
        batches = [search.population] + [search.lambda_] * search.generations
    else:
        batches = [search.lambda_] * (search.generations + 1)
    if search.fidelity is None:
        return sum(batches)
    rungs = Rungs(search.fidelity.min_budget, search.fidelity.eta, search.fidelity.rungs)
    return sum(rungs.keep(n, r) for n in batches for r in range(rungs.rungs))


@dataclass
class RunResult:
    run_dir: Path
    best: dict[str, Any] | None  # the evaluation row of the best individual (ES: the final parent)
    final: dict[str, Any] | None  # the (first) final training's row, when configured
    generations: list[dict[str, Any]]
    evaluations: int
    wall_seconds: float
    stopped: str  # generations | time_limit
    handed: list[dict[str, Any]] = field(default_factory=list)  # every model handed over (ES: 1; front)
    finals: list[dict[str, Any]] = field(default_factory=list)  # their final trainings
    screened: list[dict[str, Any]] = field(default_factory=list)  # the screening before them, if any


def _quiet(*_: Any, **__: Any) -> None:
    pass


def data_ref(config: RunConfig, final: bool = False) -> DataRef:
    """The search's data; with ``final``, the training subset the final training asks for."""
    d = config.dataset
    train_subset = d.train_subset
    if final and config.training.final_training.train_subset is not None:
        chosen = config.training.final_training.train_subset
        train_subset = None if chosen == "all" else chosen
    return DataRef(
        d.name, d.path, config.seed, tuple(d.splits), train_subset, d.test_subset, d.image_size, d.channels
    )


def final_recipe(config: RunConfig) -> dict[str, Any]:
    """The final training's nn.train.Recipe, as JSON for the task."""
    final = config.training.final_training
    return {
        "schedule": final.schedule,
        "shift": final.augment.shift,
        "flip": final.augment.flip,
        "early_stopping": final.early_stopping,
        "hold_out": not final.train_on_validation,
        "label_smoothing": config.experimental.final_training.label_smoothing,
    }


def eval_settings(
    config: RunConfig,
    budget=None,
    report_test: bool = False,
    meter: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    learning: dict[str, Any] | None = None,
    latency: bool | None = None,
) -> EvalSettings:
    """What every evaluation needs to know; ``meter`` is the run's choice (name, idle baseline).

    ``latency``: time it with the clock (None: where the search selects on it)."""
    budget = budget or config.training.budget
    t = config.training
    return EvalSettings(
        energy=config.energy.model_dump(mode="json") if meter else None,
        meter=meter["name"] if meter else None,
        idle=meter.get("idle") if meter else None,
        local_meter=bool(meter and meter.get("per_worker")),
        profile=meter.get("profile") if meter else None,
        budget_seconds=budget.seconds,
        budget_steps=budget.steps,
        max_epochs=t.max_epochs,
        eval_batch_size=t.eval_batch_size,
        device=t.device,
        threads=t.threads,
        thread_share=config.runner.workers if config.runner.kind == "process" else 1,
        max_params=config.search.caps.max_params,
        max_flops=config.search.caps.max_flops,
        report_test=report_test or t.report_test,
        recipe=recipe,
        learning=learning or None,
        latency=search_needs_latency(config) if latency is None else latency,
    )


def search_needs_latency(config: RunConfig) -> bool:
    """Whether the search selects on latency (an objective, a constraint, a fitness term or condition)."""
    return any(metric.split("_")[0] == "latency" for metric in config.metrics_used())


def prepare(config: RunConfig) -> tuple[Grammar, str]:
    """Check what a user can get wrong before any work: grammar, rule names, dataset."""
    check_runner(config.runner)
    grammar = load_grammar(config.grammar)
    problems = check_network_against_grammar(grammar, config.network)
    if problems:
        listed = "\n  ".join(problems)
        raise EvowattError(f"the grammar {grammar.source} and the network section do not fit:\n  {listed}")
    data_ref(config).load()
    return grammar, Path(grammar.source).read_text(encoding="utf-8")


def choose_profile(config: RunConfig) -> dict[str, Any] | None:
    """The calibrated profile the run uses (energy.profile), read and compared with this device, its input
    shape, batch and torch; None without one. A malformed profile is an EvowattError."""
    if config.energy.profile is None:
        return None
    from evowatt.energy.profile import this_device, use_profile
    from evowatt.nn.threads import resolve_threads

    share = config.runner.workers if config.runner.kind == "process" else 1
    here = this_device(
        str(resolve_device(config.training.device)), resolve_threads(config.training.threads, share)
    )
    use = use_profile(
        config.energy.profile,
        here,
        tuple(data_ref(config).load().input_shape),
        config.energy.batch_size,
        config.energy.check_every,
    )
    return use.to_dict()


def choose_meter(config: RunConfig) -> dict[str, Any]:
    """Pick the run's meter once, say why, refuse metrics it cannot give, and measure the idle baseline."""
    from evowatt.energy.protocol import measure_idle
    from evowatt.energy.select import check_metrics, select_meter

    energy = config.energy
    profile = choose_profile(config)
    with_profile = {"profile": profile} if profile else {}
    if profile and "energy" in profile["predictors"]:  # the predicted energy has no time base: no power
        from evowatt.energy.calibrated import refuse_power

        refuse_power(config.metrics_used(), profile["path"])
    if config.runner.kind == "ray":  # the driver may have no GPU, or another meter than the workers
        if energy.meter == "estimate":
            check_metrics(config.metrics_used(), "estimate")
        reason = (
            f"each Ray worker opens its own meter (energy.meter: {energy.meter}) where it runs and measures "
            "its own idle baseline; every evaluation records its meter"
        )
        if profile:
            reason += f"; {profile['note']}"
        return {
            "name": energy.meter,
            "method": None,
            "reason": reason,
            "idle": None,
            "per_worker": True,
            **with_profile,
        }
    device = resolve_device(config.training.device)
    meter, reason = select_meter(
        energy.meter,
        device,
        nvml_index=energy.nvml_index,
        rapl_root=energy.rapl_root,
        estimate_constants=energy.estimate,
    )
    try:
        check_metrics(config.metrics_used(), meter.name)
        idle = measure_idle(meter, energy)
    finally:
        meter.close()
    if profile:
        reason += f"; {profile['note']}"
    return {
        "name": meter.name,
        "method": meter.method,
        "reason": reason,
        "idle": idle_to_json(idle),
        **with_profile,
    }


def default_run_dir(config: RunConfig) -> Path:
    name = config.output.name or f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-seed{config.seed}"
    return Path(config.output.dir) / name


def run(config: RunConfig, out: str | Path | None = None, progress: Progress | None = None) -> RunResult:
    """Run a search from scratch into a new run directory."""
    grammar, grammar_text = prepare(config)
    meter = choose_meter(config)
    run_dir = Path(out) if out is not None else default_run_dir(config)
    lock = claim_new_run_dir(run_dir)  # before anything is written: a refused run changes nothing
    try:
        # the config files first, the store last: a run killed in between has no store and runs again
        write_config_files(run_dir, config.to_dict(), grammar_text)
        store = RunStore(run_dir, create=True, lock=lock or False)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    try:
        store.record_config(config.to_dict(), grammar_text)
        store.set_meta("evowatt_version", __version__)
        store.set_meta("started_at", time.time())
        store.set_meta("meter", meter)
        search = make_search(config, grammar)
    except BaseException:
        store.close()
        raise
    return _loop(config, grammar_text, search, store, progress or _quiet)


# Keys that say where and how evaluations run, not what they compute: a resume may change them.
FREE_KEYS = ("output.", "runner.")
# Keys that --allow-larger-budget lets a resume raise (never lower).
BUDGET_KEYS = ("search.generations", "search.time_limit")


def resume(
    run_dir: str | Path,
    progress: Progress | None = None,
    *,
    config: RunConfig | None = None,
    overrides: list[str] | None = None,
    allow_larger_budget: bool = False,
) -> RunResult:
    """Continue a run from its last checkpoint, reusing evaluations recorded after it.

    The config is the run's own (``config.yaml`` in the run directory, with ``overrides`` applied) or
    ``config``; it must equal the one the run started with, except for ``FREE_KEYS`` and, with
    ``allow_larger_budget``, a larger ``search.generations`` or ``search.time_limit``. Everything is
    checked before anything is written, so a refused resume changes nothing.
    """
    run_dir = Path(run_dir)
    store = RunStore(run_dir, lock=True)
    try:
        recorded, grammar_text = _recorded_config(store)
        if config is None:
            wanted = apply_overrides(_read_yaml(run_dir / CONFIG_NAME), list(overrides or []))
            config = validate_config(wanted, str(run_dir / CONFIG_NAME), list(overrides or []), recorded=True)
        changed = config_changes(recorded, config.to_dict(), allow_larger_budget, run_dir)
        grammar = parse_grammar(grammar_text, source=str(run_dir / GRAMMAR_NAME))
        data_ref(config).load()
        if store.meta("meter") is None:  # a run from before meters were recorded
            store.set_meta("meter", choose_meter(config))
        search = make_search(config, grammar)
        state = store.load_checkpoint()
        if state is not None:
            _load_search_state(search, state, store)
        if not search.done() and _has_final(store):
            # a finished run extended by a larger budget: new evaluations get ids after its final training's
            search.next_id = max(search.next_id, store.max_id() + 1)
        if changed:
            store.record_config(config.to_dict(), grammar_text, files=True)
            store.set_meta("resumed_with_changes", {**store.meta("resumed_with_changes", {}), **changed})
    except BaseException:
        store.close()
        raise
    return _loop(config, grammar_text, search, store, progress or _quiet)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EvowattError(f"cannot read the run's config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvowattError(f"the run's config {path} is not a mapping of sections; restore it")
    return data


def _recorded_config(store: RunStore) -> tuple[dict[str, Any], str]:
    """The config and grammar the run started with (the store's copy; config.yaml for older runs)."""
    grammar_path = store.dir / GRAMMAR_NAME
    try:
        grammar_text = grammar_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvowattError(f"cannot read the run's grammar {grammar_path}: {exc}") from None
    digest = store.meta("grammar_sha256")
    if digest is not None and hashlib.sha256(grammar_text.encode("utf-8")).hexdigest() != digest:
        raise EvowattError(
            f"{grammar_path} differs from the grammar the run started with; a resumed run must use its "
            "own grammar: restore the file, or start a new run for the new grammar"
        )
    recorded = store.meta("config")
    if recorded is None:
        recorded = _read_yaml(store.dir / CONFIG_NAME)
    return validate_config(
        copy.deepcopy(recorded), source="the run's recorded config", recorded=True
    ).to_dict(), grammar_text


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config; lists of sections are indexed (network.modules.0.name)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): value}


def _larger(old: Any, new: Any) -> bool:
    """A budget that is at least the old one (None is no limit)."""
    if new is None:
        return True
    return old is not None and new >= old


def config_changes(
    recorded: dict[str, Any], wanted: dict[str, Any], allow_larger_budget: bool, run_dir: Path
) -> dict[str, list[Any]]:
    """The changes a resume may make ({key: [old, new]}); refuses any other, naming every differing key."""
    old, new = _flatten(recorded), _flatten(wanted)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    differing = [k for k in differing if not k.startswith(FREE_KEYS)]
    allowed = {
        k for k in differing if allow_larger_budget and k in BUDGET_KEYS and _larger(old.get(k), new.get(k))
    }
    refused = [k for k in differing if k not in allowed]
    if refused:
        listed = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in refused)
        hint = ""
        if any(k in BUDGET_KEYS for k in refused):
            hint = (
                " --allow-larger-budget lets a resume raise search.generations and search.time_limit "
                "(never lower them)."
            )
        raise EvowattError(
            f"the config differs from the one {run_dir} started with at: {listed}. A resumed run keeps its "
            f"config; start a new run with `evowatt run` for a different one.{hint}"
        )
    return {k: [old.get(k), new.get(k)] for k in differing}


def _load_search_state(search: Search, state: dict[str, Any], store: RunStore) -> None:
    """Load the checkpoint into the search; one message when it does not fit this search or this store."""
    try:
        search.load_state(state)
    except CheckpointError as exc:
        raise store._bad_checkpoint(f"not a valid evowatt checkpoint: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise store._bad_checkpoint(f"not a valid evowatt checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [i for i in search.best() if store.evaluation(i) is None]
    if missing:
        es = isinstance(getattr(search, "inner", search), EvolutionStrategy)
        role = "the parent" if es else "a survivor"
        raise EvowattError(
            f"checkpoint {store.dir / 'checkpoint.json'} names evaluation {missing[0]} as {role}, but "
            f"{store.db_path} does not hold it: the two files do not belong to the same run. Restore the "
            "matching pair from a backup; nothing was changed"
        )


def _has_final(store: RunStore) -> bool:
    return bool(store.evaluations(f"WHERE NOT ({SEARCHED})"))


def _task(
    config: RunConfig,
    grammar_text: str,
    store: RunStore,
    candidate: Candidate,
    costs: NetworkCosts | None = None,
) -> EvalTask:
    source = candidate.continue_from
    resume = config.experimental.resume_optimiser
    init_genome = None
    if source is not None:
        row = store.evaluation(source)
        # a parent that never trained (an invalid or failed evaluation: a Pareto population of a few
        # valid members keeps invalid ones, and a tournament may pick one) leaves nothing to continue
        # from, whether the child inherits layers or trains longer: it starts from fresh weights
        if row is None or row["status"] != "ok" or row["weights"] is None:
            source = None
        elif getattr(candidate, "inherit", False):
            init_genome = row["genome"]
    meter = store.meta("meter")
    settings = eval_settings(
        config, BudgetConfig(**candidate.budget) if candidate.budget else None, meter=meter
    )
    known = costs.lookup(candidate.genome, _meter_name(meter), settings.latency) if costs else None
    return EvalTask(
        id=candidate.id,
        genome=candidate.genome,
        grammar_text=grammar_text,
        data=data_ref(config),
        settings=settings,
        known_cost=known.to_json() if known is not None else None,
        measure_modules=list(candidate.measure_modules),
        seed=candidate.seed,
        # the weights travel in the task and come back in the result: workers need no run directory
        init_weights=store.read_weights(source) if source is not None else None,
        init_optimiser=store.read_optimiser(source) if source is not None and resume else None,
        init_genome=init_genome,
        init_from=source,
        fidelity=candidate.fidelity,
        return_weights=True,
        return_optimiser=resume,
        kind=candidate.kind,
    )


def _meter_name(meter: dict[str, Any] | None) -> str | None:
    """The meter a run's evaluations record; None where each Ray worker opens its own (``auto`` may
    resolve differently on each): their costs are not shared."""
    if not meter or meter.get("per_worker"):
        return None
    return meter["name"]


def _loop(
    config: RunConfig, grammar_text: str, search: Search, store: RunStore, progress: Progress
) -> RunResult:
    events = EventLog(store.dir)  # events.jsonl beside the store, fed the same events as the display
    progress = tee(events, progress)
    try:
        return _loop_body(config, grammar_text, search, store, progress)
    except BaseException as exc:
        events("error", type=type(exc).__name__, message=str(exc))
        raise
    finally:
        events.close()
        store.close()


def _loop_body(
    config: RunConfig, grammar_text: str, search: Search, store: RunStore, progress: Progress
) -> RunResult:
    limit = TimeLimit(config.search.time_limit, float(store.meta("elapsed_seconds", 0.0)))
    costs = NetworkCosts(store.evaluations())  # what earlier sessions of the run measured
    # observers first: a crash after a record leaves its event
    hooks = Hooks(progress, costs.hook, killpoint_hook)
    budget = {"steps": config.training.budget.steps, "seconds": config.training.budget.seconds}
    runner = make_runner(config.runner)
    evaluator = StoreEvaluator(
        store, runner, lambda c: _task(config, grammar_text, store, c, costs), evaluate, hooks, budget
    )
    hooks(
        "start",
        run_dir=store.dir,
        generations=config.search.generations,
        lam=config.search.lambda_,
        meter=store.meta("meter"),
    )
    for line in data_ref(config).load().notes():  # e.g. a folder's unreadable files (memoised: no reload)
        hooks("note", message=line)
    failed = True
    try:
        stopped = run_search(search, evaluator, store, limit)
        failed = False
    finally:
        runner.close()
        try:
            store.set_meta("elapsed_seconds", limit.elapsed())
        except EvowattError:
            if not failed:  # a failing run reports its first error, not this follow-on one
                raise
    chosen = search.best() or _best_of_unfinished_generation(search, store, stopped, hooks)
    unmet = getattr(search, "unmet", None)  # a constrained search with nothing feasible says so
    if not chosen and unmet is not None and (message := unmet()):
        hooks("note", message=message)
    handed = [_report_test(config, grammar_text, store, i) for i in chosen]
    handed = [row for row in handed if row is not None]
    finals = _final_training(config, grammar_text, search, store, hooks, chosen, costs)
    for row in _time_answer(config, grammar_text, store, costs):  # after the finals: what is left to time
        handed = [row if h["id"] == row["id"] else h for h in handed]
    store.set_meta("finished_at", time.time())
    result = RunResult(
        run_dir=store.dir,
        best=handed[0] if handed else None,
        final=finals[0] if finals else None,
        generations=store.generations(),
        evaluations=len(store.evaluations(f"WHERE {SEARCHED}")),
        wall_seconds=limit.elapsed(),
        stopped=stopped,
        handed=handed,
        finals=finals,
        screened=store.evaluations("WHERE kind = 'screen'"),
    )
    hooks("done", result=result)
    return result


def _report_test(
    config: RunConfig, grammar_text: str, store: RunStore, evaluation_id: int
) -> dict[str, Any] | None:
    """An evaluation handed to the user, with its test-set accuracy added (once, from its saved weights)."""
    best = store.evaluation(evaluation_id)
    if best and best["status"] == "ok" and best["weights"] and "test_accuracy" not in best["metrics"]:
        candidate = Candidate(best["id"], best["generation"], best["kind"], best["genome"], best["seed"])
        task = _task(config, grammar_text, store, candidate)
        store.add_metrics(best["id"], score_on_test(task, best["weights"]))  # the full model's and exit's
        best = store.evaluation(best["id"])
    return best


def _time_answer(
    config: RunConfig, grammar_text: str, store: RunStore, costs: NetworkCosts
) -> list[dict[str, Any]]:
    """The clock latency of every model the run ends by showing (its front and the model to take) that
    has none yet: the search timed only what it selected on, and a final training times its own. A
    network timed before (another of these models, a final training) is not timed again. Returns the rows
    it changed."""
    from evowatt.handover.results import answer, front

    rows: dict[int, dict[str, Any]] = {}
    if store.meta("config") is None:  # a store from before configs were recorded: no front to show
        return []
    shown = [*front(store.dir), *([chosen] if (chosen := answer(store.dir)) else [])]
    for model in shown:
        row = store.evaluation(model.id)
        meter = (row["result"] or {}).get("meter") if row else None
        if row is None or meter is None or "latency" in row["metrics"]:
            continue
        known = costs.lookup(row["genome"], meter, latency=True, before=store.max_id() + 1)
        if known is not None:
            added = {k: v for k, v in known.metrics.items() if k.startswith("latency")}
        else:
            candidate = Candidate(row["id"], row["generation"], row["kind"], row["genome"], row["seed"])
            task = _task(config, grammar_text, store, candidate)
            added = time_models(task)
        store.add_metrics(row["id"], added)  # every exit's in one write
        rows[row["id"]] = store.evaluation(row["id"])
        costs.add(rows[row["id"]])  # the next model of the same network reuses the timing
    return list(rows.values())


def _best_of_unfinished_generation(search: Search, store: RunStore, stopped: str, hooks: Hooks) -> list[int]:
    """When the time limit fell inside the first generation the search has no best yet: hand over what
    it would select if that generation had ended with the evaluations recorded so far, and say so.

    A copy of the search is told them, so the run's own search (and its checkpoint) stays as it was."""
    if stopped != "time_limit":
        return []
    rows = [r for r in store.evaluations(f"WHERE {SEARCHED} AND status = 'ok'") if r["weights"]]
    if not rows:
        return []
    evaluated = []
    for r in rows:
        result = EvalResult.coerce(r["result"])
        candidate = Candidate(r["id"], r["generation"], r["kind"], r["genome"], r["seed"])
        score = Score.from_json(r["score"]) if r["score"] else search.score(result)
        evaluated.append(Evaluated(candidate, result, score))
    trial = copy.deepcopy(getattr(search, "inner", search))  # under successive halving: the search itself
    trial.pending = [e.candidate for e in evaluated]
    trial.tell(evaluated)
    chosen = trial.best()
    if chosen:
        hooks(
            "note",
            message=f"the time limit fell inside generation {search.generation}, before the search had a "
            f"best: handing over what it selects from the {len(rows)} evaluations recorded so far (#"
            + ", #".join(map(str, chosen))
            + "); a longer search.time_limit or a smaller population lets it select among a whole generation",
        )
    return chosen


def _final_picks(
    config: RunConfig, store: RunStore, handed: list[int], screened: dict[str, Any] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """The handed models that get a final training: ``final_training.models`` of them, in handover order,
    each a different network (a front can hold one network twice, reached with other learning genes:
    training it again would spend the budget on a model of the same cost). The screening's winner, when
    there was one, takes the first place."""
    count = config.training.final_training.models
    picks: list[tuple[int, dict[str, Any]]] = []
    networks: set[str] = set()
    rows = [(screened["id"], screened)] if screened is not None else []
    rows += [(source_id, row) for source_id in handed if (row := store.evaluation(source_id)) is not None]
    for source_id, row in rows:
        if count != "all" and len(picks) >= int(count):
            break
        if row["status"] != "ok":
            continue
        network = Genome.from_json(row["genome"]).network_key()
        if network not in networks:
            networks.add(network)
            picks.append((source_id, row))
    return picks


def _handover_value(search: Search, row: dict[str, Any]) -> float | None:
    """The search's handover value of a recorded evaluation (None: not valid, infeasible, or NaN)."""
    if row["status"] != "ok":
        return None
    score = Score.from_json(row["score"]) if row["score"] else search.score(EvalResult.coerce(row["result"]))
    value = search.handover_value(score)
    return None if value is None or value != value else float(value)


def _screen_picks(search: Search, store: RunStore, count: int) -> list[dict[str, Any]]:
    """The ``count`` networks the whole run ranks highest for the handover, each by its best evaluation
    at any rung (a longer rung may have scored it lower, and the population may have lost it), each
    from its latest evaluation whose weights are kept (from that best evaluation's genome, fresh, when
    none is)."""
    best: dict[str, tuple[float, int]] = {}
    kept: dict[str, dict[str, Any]] = {}
    for row in store.evaluations(f"WHERE {SEARCHED} AND status = 'ok'"):
        value = _handover_value(search, row)
        if value is None:
            continue
        network = Genome.from_json(row["genome"]).network_key()
        if network not in best or value > best[network][0]:
            best[network] = (value, row["id"])
        if row["weights"]:
            kept[network] = row
    ranked = sorted(best, key=lambda network: (-best[network][0], best[network][1]))[:count]
    return [kept.get(network) or store.evaluation(best[network][1]) for network in ranked]


def _screen(
    config: RunConfig,
    grammar_text: str,
    search: Search,
    store: RunStore,
    hooks: Hooks,
    costs: NetworkCosts | None = None,
) -> dict[str, Any] | None:
    """The screening's winner (its evaluation row), or None without a screening or a valid result.

    Each screened network trains for ``screen.budget`` with the final training's data and recipe, is
    recorded (kind ``screen``, its source as parent) and, on resume, not trained again."""
    screen = config.experimental.final_training.screen
    if not screen.models:
        return None
    rows = [
        _train_after_search(
            config, grammar_text, search, store, hooks, "screen", source, screen.budget, costs=costs
        )
        for source in _screen_picks(search, store, screen.models)
    ]
    ranked = [(value, -row["id"], row) for row in rows if (value := _handover_value(search, row)) is not None]
    if not ranked:
        return None
    winner = max(ranked, key=lambda item: item[:2])[2]
    hooks("screened", winner=winner, screened=rows)
    return winner


def _train_after_search(
    config: RunConfig,
    grammar_text: str,
    search: Search,
    store: RunStore,
    hooks: Hooks,
    kind: str,
    row: dict[str, Any],
    budget: BudgetConfig,
    width: float = 1.0,
    costs: NetworkCosts | None = None,
) -> dict[str, Any]:
    """The ``kind`` (``screen`` or ``final``) training of the evaluation ``row`` for ``budget``: trained,
    its weights kept, recorded (``row`` as its parent) and told to the hooks (events ``kind`` and
    ``kind_result``); on resume the one recorded before, never trained twice."""
    existing = store.evaluations("WHERE kind = ? AND parent_id = ?", (kind, row["id"]))
    if existing:
        return existing[-1]
    new_id = max(search.next_id, store.max_id() + 1)
    candidate = final_candidate(config, new_id, search.generation, row, width, kind=kind)
    task = final_task(config, grammar_text, store, candidate, row, budget, costs)
    hooks(kind, candidate=candidate, budget=budget)
    result = keep_weights(EvalResult.coerce(evaluate(task)), store)
    scored = search.score(result)
    store.record(
        candidate.to_json(),
        result.to_json(),
        scored.fitness,
        {"steps": budget.steps, "seconds": budget.seconds},
        scored,
    )
    hooks(f"{kind}_result", candidate=candidate, result=result.to_json(), fitness=scored.fitness)
    return store.evaluation(new_id)


def _final_training(
    config: RunConfig,
    grammar_text: str,
    search: Search,
    store: RunStore,
    hooks: Hooks,
    handed: list[int],
    costs: NetworkCosts | None = None,
) -> list[dict[str, Any]]:
    """The final training of the models the run hands over (``final_training.models`` of them, the
    screening's winner first where configured): the first for ``budget`` at ``width``, the others for
    ``others_budget`` at ``others_width`` where set."""
    final = config.training.final_training
    if final.budget is None:
        return []
    screened = _screen(config, grammar_text, search, store, hooks, costs)
    rows = []
    for place, (_source_id, row) in enumerate(_final_picks(config, store, handed, screened)):
        budget = final.budget if place == 0 or final.others_budget is None else final.others_budget
        width = config.experimental.final_training.width_of(place)
        trained = _train_after_search(
            config, grammar_text, search, store, hooks, "final", row, budget, width, costs
        )
        rows.append(trained)
    return rows


def final_candidate(
    config: RunConfig, final_id: int, generation: int, row: dict[str, Any], width: float, kind: str = "final"
) -> Candidate:
    """The final training's (or a screening's) individual: the handed model's genome (``width`` times as
    wide), its own seed."""
    return Candidate(
        final_id,
        generation,
        kind,
        row["genome"] if width == 1 else Genome.from_json(row["genome"]).widened(width).to_json(),
        derived_seed(config.seed, final_id),
        parent_id=row["id"],
    )


def final_task(
    config: RunConfig,
    grammar_text: str,
    store: RunStore,
    candidate: Candidate,
    row: dict[str, Any],
    budget,
    costs: NetworkCosts | None = None,
) -> EvalTask:
    """The final training (or screening) of ``candidate`` (from ``final_candidate``) for ``budget``: on
    the final training's data and recipe, from the search's weights of ``row`` where configured and they
    fit. Only a final training scores the test set."""
    final = config.training.final_training
    widened = float(candidate.genome.get("width", 1.0)) != 1
    # a widened network has no searched weights of its shapes: it starts fresh
    from_search = final.start_from == "search" and row["weights"] is not None and not widened
    if from_search:
        candidate.continue_from = row["id"]
    resume = config.experimental.resume_optimiser
    meter = store.meta("meter")
    final_model = candidate.kind == "final"  # handed over: it always has its latency
    known = (
        costs.lookup(candidate.genome, _meter_name(meter), final_model, before=candidate.id)
        if costs
        else None
    )
    return EvalTask(
        candidate.id,
        candidate.genome,
        grammar_text,
        data_ref(config, final=True),
        eval_settings(
            config,
            budget,
            report_test=final_model,
            meter=meter,
            recipe=final_recipe(config),
            learning=final.learning.overrides(),
            latency=True if final_model else None,
        ),
        candidate.seed,
        known_cost=known.to_json() if known is not None else None,
        return_weights=True,
        init_weights=store.read_weights(row["id"]) if from_search else None,
        init_optimiser=store.read_optimiser(row["id"]) if from_search and resume else None,
        init_from=row["id"] if from_search else None,
        kind=candidate.kind,
    )
