"""The measurement protocol with a scripted meter on a fake clock: stopping rule, idle subtraction, labels."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from evowatt.energy.base import HardwareMeter, Reading
from evowatt.energy.estimate import EstimateMeter
from evowatt.energy.fakes import FakeNvml, PowerModel, simulated_nvml, simulated_rapl
from evowatt.energy.nvml import NvmlMeter
from evowatt.energy.protocol import (
    EnergySettings,
    IdleBaseline,
    MeasureSettings,
    Stat,
    make_batch,
    measure_idle,
    measure_model,
    summarise,
    t_quantile,
)
from evowatt.energy.rapl import RaplMeter

DT = 1 / 64  # seconds per forward pass on the fake clock (exact in binary, so window sums are exact)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Timed(nn.Module):
    """A model whose every forward pass takes DT on the fake clock, and that records the grad mode."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.lin = nn.Linear(4, 2)
        self.inference_flags: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.t += DT
        self.inference_flags.append(torch.is_inference_mode_enabled())
        return self.lin(x)


class ScriptedMeter(HardwareMeter):
    """Window k draws `watts(k)` while busy; an optional idle tail (at `tail_w`) mimics waiting for a tick."""

    name = "scripted"
    method = "measured:scripted"

    def __init__(self, clock: Clock, watts: Callable[[int], float], tail_s: float = 0.0, tail_w: float = 0.0):
        super().__init__(clock=clock)
        self.k = 0
        self.watts = watts
        self.tail_s = tail_s
        self.tail_w = tail_w

    def describe(self) -> str:
        return "scripted"

    def _begin(self) -> float:
        return self._clock()

    def _end(self, t0: float) -> Reading:
        busy = self._clock() - t0
        energy = self.watts(self.k) * busy + self.tail_w * self.tail_s
        self.k += 1
        return Reading(energy_j=energy, seconds=busy + self.tail_s, busy_seconds=busy)


def settings(**kw: object) -> MeasureSettings:
    base = {"min_window_s": 8 * DT, "time_cap_s": 1.0, "warmup": 2, "min_repeats": 5, "max_repeats": 30}
    base.update(kw)
    return MeasureSettings(**base)  # type: ignore[arg-type]


def idle(watts: float) -> IdleBaseline:
    return IdleBaseline(power=Stat(watts, 0.0, 5, "measured:scripted"), seconds=1.0)


def run(watts: Callable[[int], float], idle_w: float = 30.0, **kw: object):
    clock = Clock()
    meter = ScriptedMeter(clock, watts, **{k: kw.pop(k) for k in ("tail_s", "tail_w") if k in kw})  # type: ignore[arg-type]
    inputs = torch.ones(64, 4)
    return measure_model(Timed(clock), inputs, meter, settings(**kw), idle=idle(idle_w), clock=clock)


def test_stops_as_soon_as_the_ci_is_tight() -> None:
    m = run(lambda k: 50.0 + (0.05 if k % 2 else -0.05))
    assert m.stop_reason == "ci"
    assert m.energy is not None and m.energy.n == 5  # min_repeats, no more
    assert m.energy.ci < 0.05 * m.energy.value
    assert m.passes_per_window == 8


def test_moderate_noise_stops_at_the_first_window_whose_ci_is_tight() -> None:
    rng = random.Random(3)
    draws = [50.0 + rng.gauss(0, 2.0) for _ in range(100)]
    m = run(lambda k: draws[k], max_repeats=100, time_cap_s=100.0)
    assert m.stop_reason == "ci" and m.energy is not None
    n = m.energy.n
    assert n > 5
    per_inf = [(w - 30.0) * 8 * DT / (8 * 64) for w in draws]
    at_stop, before = summarise(per_inf[:n], ""), summarise(per_inf[: n - 1], "")
    assert at_stop.ci <= 0.05 * at_stop.value
    assert before.ci > 0.05 * before.value
    assert m.energy.value == pytest.approx(at_stop.value) and m.energy.ci == pytest.approx(at_stop.ci)


def test_large_noise_stops_at_the_time_cap() -> None:
    m = run(lambda k: 30.0 + (38.0 if k % 2 else 2.0), time_cap_s=1.0)
    assert m.stop_reason == "time_cap"
    assert m.energy is not None and m.energy.n == 8  # 8 windows of 0.125 s fill the 1 s cap
    assert m.energy.ci > 0.05 * m.energy.value


def test_max_repeats_bounds_the_windows() -> None:
    m = run(lambda k: 30.0 + (38.0 if k % 2 else 2.0), time_cap_s=100.0, max_repeats=12)
    assert m.stop_reason == "max_repeats" and m.energy is not None and m.energy.n == 12


def test_idle_power_is_subtracted_and_gross_kept() -> None:
    m = run(lambda k: 50.0, idle_w=30.0)
    assert m.valid and m.meter == "scripted" and m.method == "measured:scripted"
    assert m.power is not None and m.power.value == pytest.approx(20.0)
    assert m.power_gross is not None and m.power_gross.value == pytest.approx(50.0)
    assert m.energy is not None and m.energy.value == pytest.approx(20.0 * DT / 64)
    assert m.energy_gross is not None and m.energy_gross.value == pytest.approx(50.0 * DT / 64)
    assert m.idle_power is not None and m.idle_power.value == 30.0
    assert m.latency.value == pytest.approx(DT / 64) and m.latency.method == "measured:clock"


def test_idle_tail_waited_for_a_counter_tick_is_not_charged_to_the_model() -> None:
    m = run(lambda k: 50.0, idle_w=30.0, tail_s=0.04, tail_w=30.0)
    assert m.energy is not None and m.energy.value == pytest.approx(20.0 * DT / 64)
    assert m.energy_gross is not None and m.energy_gross.value == pytest.approx(50.0 * DT / 64)


def test_non_positive_net_makes_the_measurement_invalid() -> None:
    m = run(lambda k: 29.5, idle_w=30.0)
    assert not m.valid
    assert m.invalid_reason is not None and "<= 0" in m.invalid_reason and "idle power" in m.invalid_reason
    metrics = m.to_metrics()
    assert "energy" not in metrics and "power" not in metrics  # so no fitness can use them
    assert metrics["energy_gross"]["value"] > 0 and metrics["idle_power"]["value"] == 30.0


def test_measure_idle_once_per_run() -> None:
    clock = Clock()
    meter = ScriptedMeter(clock, lambda k: 30.0 + k)  # 30, 31, 32, 33, 34 W
    baseline = measure_idle(meter, settings(idle_s=0.5, idle_windows=5), sleep=clock.sleep)
    assert baseline is not None
    assert baseline.power.value == pytest.approx(32.0) and baseline.power.n == 5
    assert baseline.seconds == pytest.approx(0.5)
    assert measure_idle(EstimateMeter(), settings()) is None


def test_hardware_meter_without_idle_baseline_is_refused() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="measure_idle"):
        measure_model(Timed(clock), torch.ones(64, 4), ScriptedMeter(clock, lambda k: 1.0), settings())


def test_estimate_meter_energy_is_exact_and_latency_is_clocked() -> None:
    clock = Clock()
    model = Timed(clock)
    m = measure_model(model, torch.ones(64, 4), EstimateMeter(), settings(), clock=clock)
    assert m.valid and m.meter == "estimate"
    assert m.energy is not None and (m.energy.ci, m.energy.n, m.energy.method) == (0.0, 1, "estimated:model")
    assert m.power is None and m.energy_gross is None and m.idle_power is None
    assert m.latency.method == "measured:clock" and m.latency.n == 5 and m.stop_reason == "ci"
    # Linear 4 -> 2 with bias: 8 multiply-adds + 2 bias additions per inference
    assert (m.flops.value, m.flops.method) == (18.0, "counted:model")
    assert (m.params.value, m.params.method) == (10.0, "counted:model")
    assert m.energy.value == pytest.approx(m.estimate.energy_j)  # type: ignore[union-attr]


def test_metrics_format_is_flat_and_json_ready() -> None:
    m = run(lambda k: 50.0)
    metrics = m.to_metrics()
    assert set(metrics) == {
        "energy",
        "power",
        "energy_gross",
        "power_gross",
        "idle_power",
        "latency",
        "flops",
        "params",
    }
    for stat in metrics.values():
        assert set(stat) == {"value", "ci", "n", "method"}
    assert metrics["energy"]["method"] == "measured:scripted"
    record = json.loads(json.dumps(m.to_dict()))
    assert record["valid"] is True and record["batch_size"] == 64 and record["stop_reason"] == "ci"
    assert record["metrics"] == metrics


def test_fixed_batch_inference_mode_and_training_flag_restored() -> None:
    clock = Clock()
    model = Timed(clock)
    model.train()
    m = measure_model(model, torch.ones(10, 4), EstimateMeter(), settings(batch_size=32), clock=clock)
    assert m.batch_size == 32
    assert m.latency.value == pytest.approx(DT / 32)
    assert model.training
    assert all(model.inference_flags[-m.latency.n * m.passes_per_window :])
    assert make_batch(torch.arange(3.0).reshape(3, 1), 7).flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_settings_defaults_and_validation() -> None:
    s = MeasureSettings()
    assert s.batch_size == 64 and s.ci_target == 0.05 and s.min_repeats <= s.max_repeats
    with pytest.raises(ValidationError, match="min_repeats"):
        MeasureSettings(min_repeats=10, max_repeats=5)
    with pytest.raises(ValidationError):
        MeasureSettings(batch_size=0)
    with pytest.raises(ValidationError):
        MeasureSettings(ci_target=1.5)
    with pytest.raises(ValidationError):
        MeasureSettings(batchsize=64)  # type: ignore[call-arg]  # a typo is an error, not a default
    section = EnergySettings.model_validate(
        {"meter": "estimate", "batch_size": 32, "estimate": {"pj_fp_add": 1}}
    )
    assert section.meter == "estimate" and section.estimate.pj_fp_add == 1.0
    with pytest.raises(ValidationError):
        EnergySettings(meter="joulemeter")  # type: ignore[arg-type]


def test_t_quantiles() -> None:
    assert t_quantile(1) == pytest.approx(12.706)
    assert t_quantile(4) == pytest.approx(2.776)
    assert t_quantile(60) == pytest.approx(2.000, abs=0.002)
    assert math.isinf(t_quantile(0))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


QUICK = MeasureSettings(idle_s=0.2, idle_windows=2, time_cap_s=0.5, min_window_s=0.05, warmup=1)


def test_end_to_end_with_simulated_nvml() -> None:
    meter = NvmlMeter(nvml=simulated_nvml(PowerModel(idle_w=30.0, w_per_cpu=40.0), period_s=0.02, noise=0.0))
    baseline = measure_idle(meter, QUICK)
    assert baseline is not None and baseline.power.value == pytest.approx(30.0, rel=0.1)
    m = measure_model(small_cnn(), torch.randn(64, 1, 28, 28), meter, QUICK, idle=baseline)
    assert m.energy is not None and m.energy.method == "measured:nvml"
    assert m.valid and m.energy.value > 0 and m.power is not None and m.power.value > 0


def test_end_to_end_with_simulated_rapl(tmp_path: Path) -> None:
    root, read_text = simulated_rapl(tmp_path, PowerModel(idle_w=10.0, w_per_cpu=25.0), noise=0.0)
    meter = RaplMeter(root=root, read_text=read_text)
    baseline = measure_idle(meter, QUICK)
    m = measure_model(small_cnn(), torch.randn(64, 1, 28, 28), meter, QUICK, idle=baseline)
    assert m.valid and m.energy is not None and m.energy.method == "measured:rapl" and m.energy.value > 0


def test_a_model_failing_inside_a_window_leaves_no_sampling_thread_behind() -> None:
    class FailsLater(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 4:  # after warm-up and counting: inside the first window
                raise RuntimeError("boom")
            return x

    meter = NvmlMeter(nvml=FakeNvml(energy_mj=None, power_mw=lambda: 1000), sample_interval_s=0.001)
    with pytest.raises(RuntimeError, match="boom"):
        measure_model(
            FailsLater(), torch.ones(4, 2), meter, settings(warmup=2, min_window_s=1.0), idle=idle(0.5)
        )
    assert not [t for t in threading.enumerate() if t.name == "evowatt-nvml-sampler" and t.is_alive()]
