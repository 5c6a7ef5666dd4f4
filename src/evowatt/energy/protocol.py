"""The measurement protocol for one model's inference, shared by the search and `evowatt measure`.

What makes the numbers honest: a fixed measurement batch (not the evolved training batch size) already on
the device; warm-up passes; device synchronisation at every window edge; windows long enough for the
meter's counter resolution; repeats until the 95 % confidence half-width is below a target fraction of
the mean or a time cap; the device's idle power, measured once per run, subtracted for hardware meters
(gross and net both kept). Latency is always a clock reading.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from evowatt.config.energy import EnergySettings as EnergySettings  # re-exported
from evowatt.config.energy import MeasureSettings
from evowatt.energy.base import (
    METHOD_CLOCK,
    METHOD_COUNTED,
    Clock,
    HardwareMeter,
    Meter,
    device_sync,
)
from evowatt.energy.estimate import EnergyEstimate, EstimateMeter


@dataclass(frozen=True)
class Stat:
    """One reported value: mean, 95 % CI half-width, number of samples, and how it was obtained."""

    value: float
    ci: float
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        ci = self.ci if math.isfinite(self.ci) else None  # JSON has no infinity
        return {"value": self.value, "ci": ci, "n": self.n, "method": self.method}


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
_T975 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048)
_T975 += (2.045, 2.042)


def t_quantile(df: int) -> float:
    """Student's t 0.975 quantile (table to 30 degrees of freedom, then 1.96 + 2.4/df, within 0.2 %)."""
    if df < 1:
        return math.inf
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def summarise(samples: list[float], method: str) -> Stat:
    n = len(samples)
    mean = statistics.fmean(samples) if n else math.nan
    ci = t_quantile(n - 1) * statistics.stdev(samples) / math.sqrt(n) if n >= 2 else math.inf
    return Stat(value=mean, ci=ci, n=n, method=method)


def exact(value: float, method: str) -> Stat:
    """A deterministic value: no spread, one evaluation."""
    return Stat(value=float(value), ci=0.0, n=1, method=method)


@dataclass(frozen=True)
class IdleBaseline:
    """Idle power of the metered device, measured once per run and subtracted from every model."""

    power: Stat
    seconds: float


def measure_idle(
    meter: Meter, settings: MeasureSettings, sleep: Callable[[float], None] = time.sleep
) -> IdleBaseline | None:
    """Once per run, device otherwise unused; None for the estimate (nothing to subtract)."""
    if not isinstance(meter, HardwareMeter):
        return None
    powers: list[float] = []
    total = 0.0
    for _ in range(settings.idle_windows):
        state = meter.begin()
        sleep(settings.idle_s / settings.idle_windows)
        reading = meter.end(state)
        powers.append(reading.energy_j / reading.seconds)
        total += reading.seconds
    return IdleBaseline(power=summarise(powers, meter.method), seconds=total)


StopReason = Literal["ci", "time_cap", "max_repeats", "counted"]  # counted: no windows, no clock


@dataclass(frozen=True)
class Measurement:
    """One model's figures: energy J per inference (net of idle for hardware meters), power W, latency s."""

    meter: str
    method: str
    batch_size: int
    latency: Stat | None  # None: the estimate meter was asked for counts only (no clock windows)
    flops: Stat
    params: Stat
    energy: Stat | None = None
    energy_gross: Stat | None = None
    power: Stat | None = None
    power_gross: Stat | None = None
    idle_power: Stat | None = None
    valid: bool = True
    invalid_reason: str | None = None
    stop_reason: StopReason = "ci"
    passes_per_window: int = 1
    seconds: float = 0.0
    estimate: EnergyEstimate | None = field(default=None, repr=False)

    def to_metrics(self) -> dict[str, dict[str, Any]]:
        """Flat JSON-ready metrics; net energy and power are left out when invalid: no fitness uses them."""
        named: dict[str, Stat | None] = {
            "energy": self.energy if self.valid else None,
            "power": self.power if self.valid else None,
            "energy_gross": self.energy_gross,
            "power_gross": self.power_gross,
            "idle_power": self.idle_power,
            "latency": self.latency,
            "flops": self.flops,
            "params": self.params,
        }
        return {name: stat.to_dict() for name, stat in named.items() if stat is not None}

    def to_dict(self) -> dict[str, Any]:
        """Everything the run store keeps about the measurement, metrics included."""
        out: dict[str, Any] = {
            "meter": self.meter,
            "method": self.method,
            "valid": self.valid,
            "invalid_reason": self.invalid_reason,
            "metrics": self.to_metrics(),
            "batch_size": self.batch_size,
            "passes_per_window": self.passes_per_window,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
        }
        if self.estimate is not None:
            e = self.estimate
            out["estimate"] = {
                "compute_j": e.compute_j,
                "param_memory_j": e.param_memory_j,
                "activation_memory_j": e.activation_memory_j,
                "param_bytes_per_batch": e.param_bytes,
                "activation_bytes": e.activation_bytes,
                "uncounted_ops": list(e.uncounted_ops),
            }
        return out


def make_batch(
    inputs: torch.Tensor, batch_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Exactly `batch_size` rows on the device (tiled or cut), so every model sees the same batch."""
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError("measurement inputs need at least one sample")
    reps = math.ceil(batch_size / inputs.shape[0])
    batch = inputs.repeat(reps, *([1] * (inputs.ndim - 1)))[:batch_size] if reps > 1 else inputs[:batch_size]
    return batch.to(device if device is not None else inputs.device).contiguous()


def synthetic_batch(
    shape: tuple[int, ...], batch_size: int, device: torch.device | str = "cpu", seed: int = 0
) -> torch.Tensor:
    """Seeded random inputs for `evowatt measure`, where no dataset is given; dense hardware is data-blind."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, *shape), generator=gen).to(device)


def _stop(samples: list[float], settings: MeasureSettings, elapsed: float) -> StopReason | None:
    n = len(samples)
    if n >= settings.max_repeats:
        return "max_repeats"
    if n >= settings.min_repeats:
        stat = summarise(samples, "")
        if stat.ci <= settings.ci_target * abs(stat.value):
            return "ci"
    if n >= 2 and elapsed >= settings.time_cap_s:
        return "time_cap"
    return None


def _counted_only(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    meter: Meter,
    settings: MeasureSettings,
    clock: Clock,
    cost: Callable[[int], EnergyEstimate] | None,
) -> Measurement:
    """The estimate meter's figures without latency: one counting pass over a single sample."""
    started = clock()
    batch = make_batch(inputs, settings.batch_size)
    estimator = meter if isinstance(meter, EstimateMeter) else EstimateMeter(settings.estimate)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            estimate = (
                cost(batch.shape[0])
                if cost is not None
                else estimator.estimate(model, batch[:1], batch_size=batch.shape[0])
            )
    finally:
        model.train(was_training)
    return Measurement(
        meter=meter.name,
        method=meter.method,
        batch_size=batch.shape[0],
        latency=None,
        flops=exact(estimate.flops, METHOD_COUNTED),
        params=exact(estimate.params, METHOD_COUNTED),
        energy=exact(estimate.energy_j, meter.method),
        stop_reason="counted",
        passes_per_window=0,
        seconds=clock() - started,
        estimate=estimate,
    )


def measure_model(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    meter: Meter,
    settings: MeasureSettings,
    idle: IdleBaseline | None = None,
    clock: Clock = time.perf_counter,
    cost: Callable[[int], EnergyEstimate] | None = None,
    latency: bool = True,
) -> Measurement:
    """Measure inference of `model` on `inputs` (a batch already on the model's device).

    Hardware meters need the run's `idle` baseline (see `measure_idle`); the stopping rule then follows
    the net energy per inference. The estimate meter's energy is exact, so its loop follows latency.
    ``cost`` (batch size -> estimate) counts a model torch cannot see into (an onnxruntime session).
    ``latency=False`` with the estimate meter counts only: its energy needs no clock, and the windows
    that time latency are most of a small network's measuring time (a hardware meter always times).
    """
    hardware = isinstance(meter, HardwareMeter)
    if not hardware and not latency:
        return _counted_only(model, inputs, meter, settings, clock, cost)
    if hardware and idle is None:
        raise ValueError(
            "a hardware meter needs the run's idle baseline: call measure_idle(meter, settings) once"
        )
    started = clock()
    batch = make_batch(inputs, settings.batch_size)
    sync = device_sync(batch.device)
    n_batch = batch.shape[0]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            pass_times: list[float] = []
            for _ in range(max(settings.warmup, 1)):  # the fastest warm-up pass sizes the windows
                t0 = clock()
                model(batch)
                sync()
                pass_times.append(clock() - t0)
            pass_s = max(min(pass_times[1:] or pass_times), 1e-9)  # the first pass pays one-off costs
            passes = max(1, math.ceil(settings.min_window_s / pass_s))
            # counted after a plain pass, so a model that rejects the batch fails with torch's own message
            estimator = meter if isinstance(meter, EstimateMeter) else EstimateMeter(settings.estimate)
            if cost is not None:
                estimate = cost(n_batch)
            else:
                estimate = estimator.estimate(model, batch[:1], batch_size=n_batch)  # per-sample counts
            latencies: list[float] = []
            gross_e: list[float] = []
            net_e: list[float] = []
            gross_p: list[float] = []
            net_p: list[float] = []
            stop: StopReason | None = None
            while stop is None:
                state = meter.begin() if isinstance(meter, HardwareMeter) else None
                t0 = clock()
                try:
                    for _ in range(passes):
                        model(batch)
                    sync()
                except BaseException:
                    if isinstance(meter, HardwareMeter):  # stop a sampling thread before the error leaves
                        with contextlib.suppress(Exception):
                            meter.end(state)
                    raise
                t1 = clock()
                inferences = passes * n_batch
                latencies.append((t1 - t0) / inferences)
                if isinstance(meter, HardwareMeter) and idle is not None:
                    reading = meter.end(state)
                    idle_w = idle.power.value
                    net = reading.energy_j - idle_w * reading.seconds
                    busy = reading.work_seconds
                    net_e.append(net / inferences)
                    gross_e.append((net + idle_w * busy) / inferences)
                    net_p.append(net / busy)
                    gross_p.append(net / busy + idle_w)
                stop = _stop(net_e if hardware else latencies, settings, clock() - started)
    finally:
        model.train(was_training)
    params = exact(estimate.params, METHOD_COUNTED)
    flops = exact(estimate.flops, METHOD_COUNTED)
    common = {
        "meter": meter.name,
        "method": meter.method,
        "batch_size": n_batch,
        "latency": summarise(latencies, METHOD_CLOCK),
        "flops": flops,
        "params": params,
        "passes_per_window": passes,
        "estimate": estimate,
    }
    if not isinstance(meter, HardwareMeter) or idle is None:
        return Measurement(
            **common,
            energy=exact(estimate.energy_j, meter.method),
            stop_reason=stop,
            seconds=clock() - started,
        )
    energy = summarise(net_e, meter.method)
    valid = energy.value > 0
    reason = None
    if not valid:
        reason = (
            f"net energy {energy.value:.3g} J/inference <= 0 after subtracting idle power "
            f"{idle.power.value:.3g} W: the model's load is below what {meter.name} resolves, or the device "
            "was busier while the idle baseline was taken"
        )
    return Measurement(
        **common,
        energy=energy,
        energy_gross=summarise(gross_e, meter.method),
        power=summarise(net_p, meter.method),
        power_gross=summarise(gross_p, meter.method),
        idle_power=idle.power,
        valid=valid,
        invalid_reason=reason,
        stop_reason=stop,
        seconds=clock() - started,
    )
