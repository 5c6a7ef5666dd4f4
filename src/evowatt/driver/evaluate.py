"""evaluate(task) -> result: build, train, score one genome. A pure function of a serialisable task.

The task carries everything (genome JSON, grammar text, data reference, settings, seed, the weights it
starts from as safetensors bytes), so it runs the same in this process, a worker process or a Ray worker
on another machine, and a run can be replayed. It names no path of the run directory: trained weights come
back in the result as bytes, and the driver alone writes them. Loading data and parsing the grammar are
memoised per process: a pure function's cache, not run state.

The task records live in ``driver.task_records`` (torch-free: the driver builds them) and the measuring
of energy, power and latency in ``driver.measure``; this module builds, trains and scores, and holds the
functions of a task the handover runs after the search (``score_on_test``, ``time_models``).
"""

from __future__ import annotations

import functools
import os
import platform
import time
from typing import Any

import torch
from safetensors.torch import load, load_file, save

from evowatt.data.datasets import Splits
from evowatt.driver.measure import measure, meter_and_idle, reuse_cost, training_energy
from evowatt.driver.task_records import DataRef, EvalTask
from evowatt.errors import EvowattError
from evowatt.nn.builder import InvalidNetwork, Network, build_network, extract_models, plan_network
from evowatt.nn.inherit import inherit_weights
from evowatt.nn.threads import resolve_threads
from evowatt.nn.train import Recipe, evaluate_split, train
from evowatt.records import EvalResult, Metric, Status
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import Grammar, parse_grammar


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvowattError("training.device is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


@functools.lru_cache(maxsize=4)
def _grammar(text: str) -> Grammar:
    return parse_grammar(text, source="task grammar")


_TENSORS: dict[tuple[DataRef, str], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


def _tensors(
    data: DataRef, device: str, splits: Splits | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits as tensors on ``device``, memoised per process for the last two datasets.

    ``splits`` are the data when the caller already has them (a Ray worker receives them through the
    object store); otherwise they are loaded from ``data``.
    """
    key = (data, device)
    if key not in _TENSORS:
        splits = splits if splits is not None else data.load()
        out = {}
        for name in ("evo_train", "evo_validation", "evo_test", "test"):
            split = getattr(splits, name)
            # a copy: the cached arrays are read-only, and training must never write into them
            out[name] = (torch.tensor(split.x, device=device), torch.tensor(split.y, device=device))
        while len(_TENSORS) >= 2:
            _TENSORS.pop(next(iter(_TENSORS)))
        _TENSORS[key] = out
    return _TENSORS[key]


def _metric(value: Any, method: str) -> Metric:
    return {"value": value, "method": method}


def plan_task(task: EvalTask, splits: Splits | None = None):
    """The network plan of a task's genome (raises InvalidNetwork with the reason)."""
    splits = splits if splits is not None else task.data.load()
    genome = Genome.from_json(task.genome)
    grammar = _grammar(task.grammar_text)
    return (
        genome,
        grammar,
        plan_network(
            genome,
            grammar,
            splits.input_shape,
            splits.num_classes,
            task.settings.max_params,
            task.settings.max_flops,
        ),
    )


def evaluate(task: EvalTask, splits: Splits | None = None) -> EvalResult:
    """Build, train and score one genome; never raises for a bad individual, only for bad user input.

    ``splits``: the task's data when the caller has them already (sent through Ray's object store);
    otherwise ``task.data`` is loaded here.
    """
    start = time.perf_counter()
    settings = task.settings
    device = resolve_device(settings.device)
    result = EvalResult(task.id, Status.OK, host=platform.node(), device=str(device), fidelity=task.fidelity)
    threads_before = torch.get_num_threads()
    threads = resolve_threads(settings.threads, settings.thread_share)
    if threads:  # for this evaluation only: the caller's setting comes back in `finally`
        torch.set_num_threads(threads)
    try:
        genome, grammar, plan = plan_task(task, splits)
        result.metrics["params"] = _metric(plan.params, "counted:plan")
        result.metrics["flops"] = _metric(plan.flops, "counted:plan")
        data = _tensors(task.data, str(device), splits)
        model = build_network(plan, task.seed).to(device)
        optimiser_state, sources = None, None
        if task.init_weights is not None:
            result.inherited, sources = _load_initial_weights(model, genome, grammar, task, device)
            if task.init_optimiser is not None:
                optimiser_state = load(task.init_optimiser)
        learning = grammar.decode(genome.macro["learning"]) if "learning" in genome.macro else {}
        learning.update(settings.learning or {})
        meter, idle = meter_and_idle(settings, str(device)) if settings.energy else (None, None)
        if meter is not None:
            result.meter = meter.name
        recipe = Recipe(**settings.recipe) if settings.recipe else None
        train_xy, validation_xy = data["evo_train"], data["evo_validation"]
        if recipe is not None and not recipe.hold_out:  # the final training may learn from both
            train_xy = tuple(torch.cat(pair) for pair in zip(train_xy, validation_xy, strict=True))
            validation_xy = None
        with training_energy(meter, settings.energy) as spent:
            outcome = train(
                model,
                train_xy,
                validation_xy,
                learning,
                settings.budget,
                seed=task.seed,
                max_epochs=settings.max_epochs,
                eval_batch_size=settings.eval_batch_size,
                recipe=recipe,
                optimiser_state=optimiser_state,
                optimiser_sources=sources,
                keep_optimiser=task.return_optimiser,
            )
        result.train = outcome.to_json()
        if settings.learning:
            result.train["learning"] = dict(settings.learning)  # what replaced the evolved genes
        if spent is not None and spent.to_metric() is not None:
            result.metrics["training_energy"] = spent.to_metric()
        if outcome.diverged:
            result.status, result.reason = Status.INVALID, "training diverged (NaN or infinite loss)"
            return result
        full, early = extract_models(model, plan)
        models = {"": full, "_1": early} if early is not None else {"": full}
        if early is not None:
            result.metrics["params_1"] = _metric(plan.partition_params, "counted:plan")
            result.metrics["flops_1"] = _metric(plan.partition_flops, "counted:plan")
        for suffix, standalone in models.items():
            loss, accuracy = evaluate_split(
                standalone, *data["evo_test"], batch_size=settings.eval_batch_size
            )
            result.metrics[f"accuracy{suffix}"] = _metric(accuracy, "computed:evo_test")
            result.metrics[f"loss{suffix}"] = _metric(loss, "computed:evo_test")
            if settings.report_test:
                _, test_accuracy = evaluate_split(
                    standalone, *data["test"], batch_size=settings.eval_batch_size
                )
                result.metrics[f"test_accuracy{suffix}"] = _metric(test_accuracy, "computed:test")
        if meter is not None and task.known_cost is not None:
            reuse_cost(result, task.known_cost)
        if meter is not None:
            measure(result, models, plan, model, task, meter, idle, data["evo_test"][0])
        if task.return_weights:
            result.weights = weights_bytes(model)
        if task.return_optimiser and outcome.optimiser:
            result.optimiser = save(outcome.optimiser)
    except InvalidNetwork as exc:
        result.status, result.reason = Status.INVALID, str(exc)
    except EvowattError:
        raise
    except Exception as exc:  # an individual that raises (e.g. out of memory) must not stop the run
        result.status = Status.FAILED
        result.reason = f"{type(exc).__name__}: {exc}"
    finally:
        if threads:
            torch.set_num_threads(threads_before)
        result.wall_seconds = time.perf_counter() - start
    return result


def _load_initial_weights(
    model: Network, genome: Genome, grammar: Grammar, task: EvalTask, device: torch.device
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Start from earlier weights: all of them (same genome) or the parent's shared layers (init_genome).

    Returns the record of what loaded and, for an inheriting child, where each loaded tensor came from
    (None: the same network, every name its own)."""
    state = {k: v.to(device) for k, v in load(task.init_weights).items()}
    if task.init_genome is None:
        model.load_state_dict(state)
        ids: list = [*genome.layer_ids(), "output", *(["exit_head"] if model.exit_head is not None else [])]
        return {"from": task.init_from, "layers": ids, "fresh": []}, None
    parent = Genome.from_json(task.init_genome)
    inheritance = inherit_weights(parent, state, genome, model, grammar)
    return inheritance.to_json(task.init_from), inheritance.sources


def _standalone_models(task: EvalTask, weights_path: str | None, splits: Splits | None = None):
    """An evaluation's standalone models (``""`` full, ``"_1"`` early exit), with its saved weights
    (without: the task's initial ones, enough to time it)."""
    device = resolve_device(task.settings.device)
    _, _, plan = plan_task(task, splits)
    model = build_network(plan, task.seed).to(device)
    if weights_path is not None:
        model.load_state_dict(load_file(weights_path, device=str(device)))
    full, early = extract_models(model, plan)
    return device, {suffix: m for suffix, m in (("", full), ("_1", early)) if m is not None}


def score_on_test(task: EvalTask, weights_path: str) -> dict[str, dict[str, Any]]:
    """Test-set accuracy of an evaluated individual's models from its saved weights: reported only.

    Returns ``test_accuracy`` (model 0) and, with a partition point, ``test_accuracy_1`` (model 1).
    """
    device, models = _standalone_models(task, weights_path)
    test = _tensors(task.data, str(device))["test"]
    metrics = {}
    for suffix, standalone in models.items():
        _, accuracy = evaluate_split(standalone, *test, task.settings.eval_batch_size)
        metrics[f"test_accuracy{suffix}"] = _metric(accuracy, "computed:test")
    return metrics


def time_models(task: EvalTask, splits: Splits | None = None) -> dict[str, dict[str, Any]]:
    """The clock latency of an evaluated individual's models (``latency``, ``latency_1``), timed with the
    run's measurement protocol: a model shown to the user always has one, whether or not the search
    timed it. A network's latency does not depend on its weights: it needs none kept. Like ``evaluate``
    a function of its task (and ``splits``, where the caller has them), so a runner's worker may run it."""
    from evowatt.config.energy import MeasureSettings
    from evowatt.energy.protocol import make_batch, measure_model

    if not task.settings.energy:
        return {}
    device, models = _standalone_models(task, None, splits)
    meter, idle = meter_and_idle(task.settings, str(device))
    settings = MeasureSettings(
        **{k: v for k, v in task.settings.energy.items() if k in MeasureSettings.model_fields}
    )
    batch = make_batch(_tensors(task.data, str(device), splits)["evo_test"][0], settings.batch_size)
    metrics = {}
    for suffix, standalone in models.items():
        timed = measure_model(standalone.eval(), batch, meter, settings, idle, latency=True)
        metrics[f"latency{suffix}"] = {**timed.latency.to_dict(), "measured_by": task.id}
    return metrics


def weights_bytes(model: Network) -> bytes:
    """Trained weights as safetensors bytes (no pickle): what travels back to the driver in a result."""
    return save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})


def save_weights(model: Network, path: str) -> None:
    """Trained weights as a safetensors file (no pickle), written atomically."""
    write_bytes_atomically(weights_bytes(model), path)


def write_bytes_atomically(data: bytes, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
