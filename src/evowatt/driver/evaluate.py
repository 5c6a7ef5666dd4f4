"""evaluate(task) -> result: build, train, score one genome. A pure function of a serialisable task.

The task carries everything (genome JSON, grammar text, data reference, settings, seed, the weights it
starts from as safetensors bytes), so it runs the same in this process, a worker process or a Ray worker
on another machine, and a run can be replayed. It names no path of the run directory: trained weights come
back in the result as bytes, and the driver alone writes them. Loading data and parsing the grammar are
memoised per process: a pure function's cache, not run state.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from safetensors.torch import load, load_file, save

from evowatt.data.datasets import Splits, load_splits
from evowatt.energy.choice import MeterChoice
from evowatt.errors import EvowattError
from evowatt.nn.builder import (
    InvalidNetwork,
    Network,
    build_network,
    extract_models,
    module_network,
    plan_network,
)
from evowatt.nn.inherit import inherit_weights
from evowatt.nn.threads import resolve_threads
from evowatt.nn.train import Budget, Recipe, evaluate_split, train
from evowatt.records import EvalResult, Metric, Status
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import Grammar, parse_grammar


@dataclass(frozen=True)
class DataRef:
    name: str = "digits"
    path: str | None = None
    seed: int = 0
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: tuple[int, int] | None = None  # folder only
    channels: int | None = None  # folder only

    def load(self) -> Splits:
        return load_splits(
            self.name,
            self.path,
            self.seed,
            tuple(self.splits),
            self.train_subset,
            self.test_subset,
            tuple(self.image_size) if self.image_size is not None else None,
            self.channels,
        )


@dataclass(frozen=True)
class EvalSettings:
    budget_seconds: float | None = None
    budget_steps: int | None = None
    max_epochs: int = 10_000
    eval_batch_size: int = 1024
    device: str = "cpu"
    threads: int | str | None = None  # a count, "auto" (evowatt/threads.py) or None: torch's choice
    thread_share: int = 1  # evaluations running at once on this machine: "auto" divides the cores by it
    max_params: int | None = None
    max_flops: int | None = None
    energy: dict[str, Any] | None = None  # EnergySettings as JSON; None: no energy measurement
    # the run's meter choice (name, idle baseline, calibrated profile); with ``local`` (Ray) the worker
    # opens its own meter (the choice in energy.meter, e.g. auto) and measures its own idle baseline, once
    # per worker process
    meter: MeterChoice | None = None
    report_test: bool = False  # the test set is scored for the final report only, never during search
    recipe: dict[str, Any] | None = None  # nn.train.Recipe as JSON: the final training's; None in search
    learning: dict[str, Any] | None = None  # learning genes in place of the genome's (the final training's)
    # time latency with the clock: where the search selects on it, and for every handed model; the
    # estimate meter's energy needs no clock (a hardware meter always times its windows)
    latency: bool = True

    @property
    def local_meter(self) -> bool:
        """Whether the evaluation opens its own meter where it runs (a Ray worker: meter_per_worker)."""
        return self.meter is not None and self.meter.local

    @property
    def profile(self) -> dict[str, Any] | None:
        """The calibrated profile the run uses (energy.profile, as the run recorded it: profile.ProfileUse):
        latency, and energy where the profile has it, are its predictions; None: none."""
        return self.meter.profile if self.meter is not None else None


@dataclass
class EvalTask:
    id: int
    genome: dict[str, Any]
    grammar_text: str
    data: DataRef
    settings: EvalSettings
    seed: int
    init_weights: bytes | None = None  # safetensors bytes of the weights to continue training from
    return_weights: bool = False  # send the trained weights back in the result (safetensors bytes)
    # with init_genome, the weights are the parent's (that genome's): only the layers the child shares
    # with it load (nn/inherit.py); without, the genome is the same and every tensor loads
    init_genome: dict[str, Any] | None = None
    init_from: int | None = None  # the evaluation those weights come from (recorded in the result)
    # safetensors bytes of that evaluation's optimiser state (nn/optimiser_state.py): the training resumes
    # its optimiser where the state fits; None: a fresh optimiser
    init_optimiser: bytes | None = None
    return_optimiser: bool = False  # send the optimiser's final state back in the result
    fidelity: dict[str, Any] | None = None  # multi-fidelity rung and cumulative budget, echoed in the result
    kind: str = "mutant"
    measure_modules: list[int] = field(default_factory=list)  # modules to cost on their own (archive)
    # the network's cost measured by an earlier evaluation (costs.KnownCost as JSON): a network's energy,
    # power and latency belong to the network and the device, not to its weights, so it is not measured
    # again; None: measure it here
    known_cost: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("init_weights", "init_optimiser"):
            if data[key] is not None:
                data[key] = base64.b64encode(data[key]).decode("ascii")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalTask:
        values = dict(data)
        ref = {**data["data"], "splits": tuple(data["data"]["splits"])}
        if ref.get("image_size") is not None:  # JSON made it a list; a DataRef is hashed (runners' memo)
            ref["image_size"] = tuple(ref["image_size"])
        values["data"] = DataRef(**ref)
        settings = dict(data["settings"])
        if settings.get("meter") is not None:
            settings["meter"] = MeterChoice.from_json(settings["meter"])
        values["settings"] = EvalSettings(**settings)
        for key in ("init_weights", "init_optimiser"):
            if values.get(key) is not None:
                values[key] = base64.b64decode(values[key])
        return cls(**values)


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
        meter, idle = _meter_and_idle(settings, str(device)) if settings.energy else (None, None)
        if meter is not None:
            result.meter = meter.name
        recipe = Recipe(**settings.recipe) if settings.recipe else None
        train_xy, validation_xy = data["evo_train"], data["evo_validation"]
        if recipe is not None and not recipe.hold_out:  # the final training may learn from both
            train_xy = tuple(torch.cat(pair) for pair in zip(train_xy, validation_xy, strict=True))
            validation_xy = None
        with _training_energy(meter, settings.energy) as training_energy:
            outcome = train(
                model,
                train_xy,
                validation_xy,
                learning,
                Budget(settings.budget_seconds, settings.budget_steps),
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
        if training_energy is not None and training_energy.to_metric() is not None:
            result.metrics["training_energy"] = training_energy.to_metric()
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
            _reuse_cost(result, task.known_cost)
        if meter is not None:
            _measure(result, models, plan, model, task, meter, idle, data["evo_test"][0])
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


@functools.lru_cache(maxsize=4)
def _meter_cached(name: str, device: str, options: str):
    from evowatt.energy.select import open_meter
    from evowatt.energy.settings import EstimateConstants

    settings = json.loads(options)
    return open_meter(
        name,
        device,
        nvml_index=settings.get("nvml_index"),
        rapl_root=settings.get("rapl_root", "/sys/class/powercap"),
        estimate_constants=EstimateConstants(**settings.get("estimate", {})),
    )


def _meter(name: str | None, device: str, settings: dict[str, Any]):
    """The run's meter, opened once per process (NVML handles and sysfs paths are worth keeping)."""
    if name is None:
        raise ValueError("energy settings without a chosen meter: the run picks one at its start")
    return _meter_cached(name, device, json.dumps(settings, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _worker_meter(device: str, options: str):
    """This worker's own meter (the run's choice, e.g. auto, resolved here) and its idle baseline,
    measured once per worker process: a Ray worker may sit on another machine than the driver."""
    from evowatt.energy.protocol import measure_idle
    from evowatt.energy.select import select_meter
    from evowatt.energy.settings import EnergySettings

    energy = EnergySettings.model_validate(json.loads(options))
    meter, _ = select_meter(
        energy.meter,
        device,
        nvml_index=energy.nvml_index,
        rapl_root=energy.rapl_root,
        estimate_constants=energy.estimate,
    )
    return meter, measure_idle(meter, energy)


def _meter_and_idle(settings: EvalSettings, device: str):
    """The meter and idle baseline an evaluation measures with: the run's, or with ``local_meter``
    this worker's own."""
    if settings.local_meter:
        return _worker_meter(device, json.dumps(settings.energy, sort_keys=True))
    choice = settings.meter
    name, idle = (choice.name, choice.idle) if choice is not None else (None, None)
    return _meter(name, device, settings.energy), _idle(idle)


@contextlib.contextmanager
def _training_energy(meter, settings: dict[str, Any] | None):
    from evowatt.energy.base import HardwareMeter
    from evowatt.energy.training import TrainingEnergy

    if (
        meter is None
        or not isinstance(meter, HardwareMeter)
        or not (settings or {}).get("training_energy", True)
    ):
        yield None
        return
    with TrainingEnergy(meter) as energy:
        yield energy


def _idle(idle: dict[str, Any] | None):
    from evowatt.energy.protocol import IdleBaseline, Stat

    if idle is None:
        return None
    return IdleBaseline(
        power=Stat(**{**idle["power"], "ci": idle["power"]["ci"] or 0.0}), seconds=idle["seconds"]
    )


def idle_to_json(idle) -> dict[str, Any] | None:
    return None if idle is None else {"power": idle.power.to_dict(), "seconds": idle.seconds}


def _measure(
    result: EvalResult, models: dict, plan, network: Network, task: EvalTask, meter, idle, x
) -> None:
    """Energy, power and latency of each standalone model, and of the modules the archive asks for."""
    from evowatt.energy.protocol import make_batch, measure_model, synthetic_batch
    from evowatt.energy.settings import MeasureSettings

    settings = MeasureSettings(
        **{k: v for k, v in task.settings.energy.items() if k in MeasureSettings.model_fields}
    )
    start = time.perf_counter()
    batch = make_batch(x, settings.batch_size)
    for suffix, standalone in models.items() if task.known_cost is None else ():
        measurement = _measure_one(standalone.eval(), batch, meter, settings, idle, task)
        metrics = measurement.to_metrics()
        if task.settings.profile is not None:
            metrics = _calibrated(standalone, batch, metrics, task.settings.profile, _checked(task))
        for name, metric in metrics.items():
            result.metrics[f"{name}{suffix}"] = {**metric, "measured_by": task.id}
        details = measurement.to_dict()
        details.pop("metrics", None)
        if task.settings.profile is not None:  # what the profile predicted, which it names
            details["calibrated"] = task.settings.profile["digest"]
        result.measurements[suffix.lstrip("_") or "0"] = details
    # module costs: each module alone, on the input shape it receives in this network
    module_settings = settings.model_copy(
        update={"min_repeats": 2, "time_cap_s": min(settings.time_cap_s, 0.3)}
    )
    for index in task.measure_modules:
        submodel, input_shape = module_network(network, plan, Genome.from_json(task.genome), index)
        if submodel is None:
            continue
        sample = synthetic_batch(tuple(input_shape), module_settings.batch_size, x.device, seed=task.seed)
        measurement = measure_model(
            submodel.eval(), sample, meter, module_settings, idle, latency=task.settings.latency
        )
        module_metrics = measurement.to_metrics()
        if task.settings.profile is not None:  # the archive prices modules as the run prices networks
            module_metrics = _calibrated(submodel, sample, module_metrics, task.settings.profile, False)
        result.modules.append(
            {
                "index": index,
                "module": task.genome["modules"][index],
                "input_shape": list(input_shape),
                "metrics": module_metrics,
            }
        )
    result.measure_seconds = time.perf_counter() - start


def _checked(task: EvalTask) -> bool:
    """Whether this evaluation measures the network as well as predicting it (energy.check_every)."""
    every = (task.settings.profile or {}).get("check_every")
    return bool(every) and task.id % int(every) == 0


def _measure_one(model, batch, meter, settings, idle, task: EvalTask):
    """One standalone model with the run's meter; with a profile, only what the profile does not predict
    (a count, no clock windows), unless the evaluation checks the profile."""
    from evowatt.energy.calibrated import predicts
    from evowatt.energy.estimate import EstimateMeter
    from evowatt.energy.protocol import measure_model

    profile = task.settings.profile
    if profile is None:
        return measure_model(model, batch, meter, settings, idle, latency=task.settings.latency)
    if _checked(task):
        return measure_model(model, batch, meter, settings, idle, latency=True)
    if predicts(profile, "energy"):  # nothing left to measure: the count gives FLOPs and parameters
        return measure_model(model, batch, EstimateMeter(settings.estimate), settings, None, latency=False)
    return measure_model(model, batch, meter, settings, idle, latency=False)


def _calibrated(
    model, batch, measured: dict[str, Any], profile: dict[str, Any], check: bool
) -> dict[str, dict[str, Any]]:
    """The measured metrics with the profile's predictions in place of what it predicts, and with a check
    the measured values and the predictor's errors beside them. Where energy is predicted, measured power
    and gross energy go too: they would describe another quantity than the energy beside them."""
    from evowatt.energy.calibrated import calibrated_metrics, check_metrics

    predicted = calibrated_metrics(profile, model, batch)
    dropped = {"power", "power_gross", "energy_gross", "idle_power"} if "energy" in predicted else set()
    out = {k: v for k, v in measured.items() if k not in predicted and k not in dropped}
    out.update(predicted)
    if check:
        out.update(check_metrics(predicted, measured, profile["digest"]))
    return out


def _reuse_cost(result: EvalResult, known: dict[str, Any]) -> None:
    """The network's cost as an earlier evaluation measured it, each metric naming that evaluation."""
    for name, metric in known["metrics"].items():
        result.metrics[name] = dict(metric)
    for exit_ in known.get("exits", []):
        result.measurements[exit_] = {"reused_from": known["measured_by"]}


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
    from evowatt.energy.protocol import make_batch, measure_model
    from evowatt.energy.settings import MeasureSettings

    if not task.settings.energy:
        return {}
    device, models = _standalone_models(task, None, splits)
    meter, idle = _meter_and_idle(task.settings, str(device))
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
