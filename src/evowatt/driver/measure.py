"""Measuring an evaluation's cost: the meter it measures with (the run's, or a Ray worker's own with its
idle baseline), the energy of its training, and the energy, power and latency of each standalone model
and of the modules the archive asks for, calibrated where the run uses a profile.

Its own module because measuring is a job apart from building and training (``driver.evaluate``): it
holds the per-process meter caches and everything that reaches into ``energy``, which it imports lazily
so that a run without energy measurement never loads a meter.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from typing import Any

from evowatt.driver.task_records import EvalSettings, EvalTask
from evowatt.nn.builder import Network, module_network
from evowatt.records import EvalResult
from evowatt.representation.genome import Genome


@functools.lru_cache(maxsize=4)
def _meter_cached(name: str, device: str, options: str):
    from evowatt.config.energy import EstimateConstants
    from evowatt.energy.select import open_meter

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
    from evowatt.config.energy import EnergySettings
    from evowatt.energy.protocol import measure_idle
    from evowatt.energy.select import select_meter

    energy = EnergySettings.model_validate(json.loads(options))
    meter, _ = select_meter(
        energy.meter,
        device,
        nvml_index=energy.nvml_index,
        rapl_root=energy.rapl_root,
        estimate_constants=energy.estimate,
    )
    return meter, measure_idle(meter, energy)


def meter_and_idle(settings: EvalSettings, device: str):
    """The meter and idle baseline an evaluation measures with: the run's, or with ``local_meter``
    this worker's own."""
    if settings.local_meter:
        return _worker_meter(device, json.dumps(settings.energy, sort_keys=True))
    choice = settings.meter
    name, idle = (choice.name, choice.idle) if choice is not None else (None, None)
    return _meter(name, device, settings.energy), idle_from_json(idle)


@contextlib.contextmanager
def training_energy(meter, settings: dict[str, Any] | None):
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


def idle_from_json(idle: dict[str, Any] | None):
    from evowatt.energy.protocol import IdleBaseline, Stat

    if idle is None:
        return None
    return IdleBaseline(
        power=Stat(**{**idle["power"], "ci": idle["power"]["ci"] or 0.0}), seconds=idle["seconds"]
    )


def idle_to_json(idle) -> dict[str, Any] | None:
    return None if idle is None else {"power": idle.power.to_dict(), "seconds": idle.seconds}


def measure(result: EvalResult, models: dict, plan, network: Network, task: EvalTask, meter, idle, x) -> None:
    """Energy, power and latency of each standalone model, and of the modules the archive asks for."""
    from evowatt.config.energy import MeasureSettings
    from evowatt.energy.protocol import make_batch, measure_model, synthetic_batch

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


def reuse_cost(result: EvalResult, known: dict[str, Any]) -> None:
    """The network's cost as an earlier evaluation measured it, each metric naming that evaluation."""
    for name, metric in known["metrics"].items():
        result.metrics[name] = dict(metric)
    for exit_ in known.get("exits", []):
        result.measurements[exit_] = {"reused_from": known["measured_by"]}
