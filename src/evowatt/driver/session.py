"""One session of a run: ``run`` starts one, ``resume`` continues one; both end in the same loop.

A session opens the store and the event log, makes the runner, runs the search (``driver.loop``) and
the handover (``driver.handover``) through that runner, and closes all three whatever happens: a
failure, Ctrl-C or the end. Resuming is the same session over a store that already holds results: a
candidate whose evaluation is recorded is not evaluated again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evowatt.config.schema import RunConfig
from evowatt.driver.costs import NetworkCosts
from evowatt.driver.evaluate import evaluate
from evowatt.driver.events import EventLog
from evowatt.driver.handover import Handover
from evowatt.driver.loop import StoreEvaluator, TimeLimit, killpoint_hook, run_search
from evowatt.driver.observe import (
    LegacyProgress,
    Note,
    Observer,
    Observers,
    RunDone,
    RunFailed,
    RunStarted,
    as_observer,
    tee,
)
from evowatt.driver.plan import RunPlan, plan_for
from evowatt.driver.resume import reopen
from evowatt.driver.rows import Evaluation
from evowatt.driver.rundir import claim_new_run_dir, write_config_files
from evowatt.driver.runners import make_runner
from evowatt.driver.setup import choose_meter, default_run_dir, make_search, prepare, session_meter
from evowatt.driver.store import RunStore
from evowatt.driver.tasks import data_ref, search_task
from evowatt.errors import EvowattError
from evowatt.search import GenerationRecord, Search
from evowatt.version import __version__

# an observer of typed events (``driver.observe``), or the older ``progress(name, **info)`` callback
Progress = Observer | LegacyProgress


@dataclass
class RunResult:
    """What a session of a run ends with: the store's rows of what it handed over, and how it stopped."""

    run_dir: Path
    best: Evaluation | None  # the evaluation row of the best individual (ES: the final parent)
    final: Evaluation | None  # the (first) final training's row, when configured
    generations: list[GenerationRecord]
    evaluations: int
    wall_seconds: float
    stopped: str  # generations | time_limit
    handed: list[Evaluation] = field(default_factory=list)  # every model handed over (ES: 1; front)
    finals: list[Evaluation] = field(default_factory=list)  # their final trainings
    screened: list[Evaluation] = field(default_factory=list)  # the screening before them, if any


def run(
    config: RunConfig,
    out: str | Path | None = None,
    progress: Progress | None = None,
    plan: RunPlan | None = None,
) -> RunResult:
    """Run a search from scratch into a new run directory. A config with ``minutes`` is planned first
    (``plan``: the one the caller already made and showed, with ``config`` its planned config)."""
    if plan is None:
        config, plan = plan_for(config)
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
        store.set_meta("meter", meter.to_json())
        if plan is not None:
            store.set_meta("plan", plan.to_dict())
        search = make_search(config, grammar)
    except BaseException:
        store.close()
        raise
    return _loop(config, grammar_text, search, store, as_observer(progress))


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
    ``config``; it must equal the one the run started with, except for ``resume.FREE_KEYS`` and, with
    ``allow_larger_budget``, a larger ``search.generations`` or ``search.time_limit``. Everything is
    checked before anything is written, so a refused resume changes nothing.
    """
    store = RunStore(Path(run_dir), lock=True)
    try:
        config, grammar_text, search = reopen(store, config, overrides, allow_larger_budget)
    except BaseException:
        store.close()
        raise
    return _loop(config, grammar_text, search, store, as_observer(progress))


def _loop(
    config: RunConfig, grammar_text: str, search: Search, store: RunStore, progress: Observer | None
) -> RunResult:
    events = EventLog(store.dir)  # events.jsonl beside the store, fed the same events as the display
    try:
        return _loop_body(config, grammar_text, search, store, tee(events, progress))
    except BaseException as exc:
        events(RunFailed(type(exc).__name__, str(exc)))
        raise
    finally:
        events.close()
        store.close()


def _loop_body(
    config: RunConfig, grammar_text: str, search: Search, store: RunStore, progress: Observer
) -> RunResult:
    limit = TimeLimit(config.search.time_limit, float(store.meta("elapsed_seconds", 0.0)))
    costs = NetworkCosts(store.select())  # what earlier sessions of the run measured
    meter = session_meter(config, store)  # the run's choice, as this session's runner opens it
    # observers first: a crash after a record leaves its event
    hooks = Observers(progress, costs.observe, killpoint_hook)
    runner = make_runner(config.runner)
    try:  # the runner stays open until the handover's trainings are done, and closes on every way out
        evaluator = StoreEvaluator(
            store,
            runner,
            lambda c: search_task(config, grammar_text, store, c, costs, meter),
            evaluate,
            hooks,
            config.training.budget.to_budget(),
        )
        hooks(RunStarted(store.dir, config.search.generations, config.search.lambda_, store.meta("meter")))
        for line in data_ref(config).load().notes():  # e.g. a folder's unreadable files (memoised)
            hooks(Note(line))
        failed = True
        try:
            stopped = run_search(search, evaluator, store, limit)
            failed = False
        finally:
            try:
                store.set_meta("elapsed_seconds", limit.elapsed())
            except EvowattError:
                if not failed:  # a failing run reports its first error, not this follow-on one
                    raise
        handover = Handover(
            config,
            grammar_text,
            search,
            store,
            hooks,
            runner,
            evaluate,
            meter,
            costs,
            time_left(store, limit),
        )
        handed, finals = handover(stopped)
    finally:
        runner.close()
    store.set_meta("finished_at", time.time())
    result = RunResult(
        run_dir=store.dir,
        best=handed[0] if handed else None,
        final=finals[0] if finals else None,
        generations=store.generations(),
        evaluations=len(store.searched()),
        wall_seconds=limit.elapsed(),
        stopped=stopped,
        handed=handed,
        finals=finals,
        screened=store.screenings(),
    )
    hooks(RunDone(result))
    return result


def time_left(store: RunStore, limit: TimeLimit) -> Callable[[], float] | None:
    """For a run planned from ``minutes``: the seconds its trainings after the search may still take (T
    less the reserve and the time spent so far, earlier sessions' searches included); None otherwise."""
    plan = store.meta("plan")
    if not plan:
        return None
    end = float(plan["minutes"]) * 60.0 - float(plan["reserve_seconds"])
    return lambda: end - limit.elapsed()
