"""The task of each evaluation: what ``evaluate`` needs, made from the config, the store and a candidate.

A task is the whole of an evaluation's input (``driver.evaluate``): its data, its settings (budget,
meter choice, recipe), the weights it starts from and the cost already known of its network. The
search's evaluations and the trainings after the search (screenings, final trainings) are made here
alike, so every runner runs them the same way.
"""

from __future__ import annotations

from typing import Any

from evowatt.config.schema import RunConfig
from evowatt.driver.costs import NetworkCosts
from evowatt.driver.rows import Evaluation
from evowatt.driver.store import RunStore
from evowatt.driver.task_records import DataRef, EvalSettings, EvalTask
from evowatt.energy.choice import MeterChoice
from evowatt.records import Budget
from evowatt.representation.genome import Genome
from evowatt.search import Candidate
from evowatt.search.protocol import derived_seed


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


def search_needs_latency(config: RunConfig) -> bool:
    """Whether the search selects on latency (an objective, a constraint, a fitness term or condition)."""
    return any(metric.split("_")[0] == "latency" for metric in config.metrics_used())


def eval_settings(
    config: RunConfig,
    budget: Budget | None = None,
    report_test: bool = False,
    meter: MeterChoice | None = None,
    recipe: dict[str, Any] | None = None,
    learning: dict[str, Any] | None = None,
    latency: bool | None = None,
) -> EvalSettings:
    """What every evaluation needs to know; ``meter`` is the run's choice (None: no energy measured).

    ``latency``: time it with the clock (None: where the search selects on it)."""
    t = config.training
    return EvalSettings(
        energy=config.energy.model_dump(mode="json") if meter else None,
        meter=meter,
        budget=budget or config.training.budget.to_budget(),
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


def search_task(
    config: RunConfig,
    grammar_text: str,
    store: RunStore,
    candidate: Candidate,
    costs: NetworkCosts | None = None,
    meter: MeterChoice | None = None,
) -> EvalTask:
    """The task of a search's candidate: from the weights it continues from (its parent's, where that
    trained), measured with ``meter`` unless ``costs`` already know its network's cost."""
    source = candidate.continue_from
    resume = config.experimental.resume_optimiser
    init_genome = None
    if source is not None:
        row = store.get(source)
        # a parent that never trained (an invalid or failed evaluation: a Pareto population of a few
        # valid members keeps invalid ones, and a tournament may pick one) leaves nothing to continue
        # from, whether the child inherits layers or trains longer: it starts from fresh weights
        if row is None or not row.ok or row.weights is None:
            source = None
        elif getattr(candidate, "inherit", False):
            init_genome = row.genome
    # experimental.search_full_budget: the evolved early stop off, as a final training can have it
    recipe = {"early_stopping": False} if config.experimental.search_full_budget else None
    # experimental.search_final_learning: ranked under the final training's optimiser, rate and batch
    learning = (
        config.training.final_training.learning.overrides()
        if config.experimental.search_final_learning
        else None
    )
    settings = eval_settings(config, candidate.budget, meter=meter, recipe=recipe, learning=learning)
    key = meter.cost_key if meter else None
    known = costs.lookup(candidate.genome, key, settings.latency) if costs else None
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


def final_candidate(
    config: RunConfig, final_id: int, generation: int, row: Evaluation, width: float, kind: str = "final"
) -> Candidate:
    """The final training's (or a screening's) individual: the handed model's genome (``width`` times as
    wide), its own seed."""
    return Candidate(
        final_id,
        generation,
        kind,
        row.genome if width == 1 else Genome.from_json(row.genome).widened(width).to_json(),
        derived_seed(config.seed, final_id),
        parent_id=row.id,
    )


def final_task(
    config: RunConfig,
    grammar_text: str,
    store: RunStore,
    candidate: Candidate,
    row: Evaluation,
    budget: Budget,
    costs: NetworkCosts | None = None,
    meter: MeterChoice | None = None,
) -> EvalTask:
    """The final training (or screening) of ``candidate`` (from ``final_candidate``) for ``budget``: on
    the final training's data and recipe, from the search's weights of ``row`` where configured and they
    fit. Only a final training scores the test set."""
    final = config.training.final_training
    widened = float(candidate.genome.get("width", 1.0)) != 1
    # a widened network has no searched weights of its shapes: it starts fresh
    from_search = final.start_from == "search" and row.weights is not None and not widened
    if from_search:
        candidate.continue_from = row.id
    resume = config.experimental.resume_optimiser
    final_model = candidate.kind == "final"  # handed over: it always has its latency
    key = meter.cost_key if meter else None
    known = costs.lookup(candidate.genome, key, final_model, before=candidate.id) if costs else None
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
        init_weights=store.read_weights(row.id) if from_search else None,
        init_optimiser=store.read_optimiser(row.id) if from_search and resume else None,
        init_from=row.id if from_search else None,
        kind=candidate.kind,
    )
