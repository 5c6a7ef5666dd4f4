"""NVML meter against a fake pynvml module: millijoule counter, tick alignment, the NotSupported path."""

from __future__ import annotations

import sys
import time

import pytest

from evowatt.energy.base import MeterUnavailable
from evowatt.energy.fakes import (
    FakeNvml,
    NVMLError,
    NVMLError_DriverNotLoaded,
    NVMLError_NoPermission,
    PowerModel,
    simulated_nvml,
)
from evowatt.energy.nvml import NvmlMeter, trapezoid


class FakeClock:
    """Time that moves only when the code sleeps, or when the test says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_counter_millijoules_become_joules() -> None:
    reads = iter([0, 1_000, 3_500])  # the capability check, then the window's two edges
    clock = FakeClock()
    fake = FakeNvml(energy_mj=lambda: next(reads))
    meter = NvmlMeter(nvml=fake, clock=clock, align_ticks=False)
    assert meter.mode == "counter"
    state = meter.begin()
    clock.t += 0.5
    reading = meter.end(state)
    assert reading.energy_j == pytest.approx(2.5)
    assert reading.seconds == pytest.approx(0.5)
    assert "energy counter" in meter.describe() and "Fake GPU" in meter.describe()
    meter.close()
    meter.close()
    assert fake.initialised == 0  # nvmlShutdown exactly once


def test_windows_start_and_close_on_counter_ticks() -> None:
    """The counter moves every 50 ms; the window's energy must be the energy of exactly its span."""
    clock = FakeClock()
    period, watts = 0.05, 200.0

    def energy_mj() -> int:
        ticks = int(clock.t / period + 1e-9)
        return int(ticks * period * watts * 1000)

    fake = FakeNvml(energy_mj=energy_mj)
    meter = NvmlMeter(nvml=fake, clock=clock, sleep=clock.sleep, poll_s=0.001)
    clock.t = 0.012  # mid-period: an unaligned read would be off by up to one period
    state = meter.begin()
    assert state.t0 == pytest.approx(0.05, abs=0.0011)  # waited for the tick
    clock.t += 0.3  # the work
    reading = meter.end(state)
    assert reading.busy_seconds == pytest.approx(0.3, abs=0.0011)
    assert reading.seconds >= reading.busy_seconds
    assert reading.power_w == pytest.approx(watts, rel=0.01)


def test_back_to_back_windows_reuse_the_closing_tick() -> None:
    clock = FakeClock()
    period = 0.05

    def energy_mj() -> int:
        return int(clock.t / period + 1e-9) * 10

    meter = NvmlMeter(nvml=FakeNvml(energy_mj=energy_mj), clock=clock, sleep=clock.sleep, poll_s=0.001)
    first = meter.begin()
    clock.t += 0.12
    meter.end(first)
    closed_at = clock.t
    second = meter.begin()  # opened right away: starts at the tick that closed the first window
    assert second.t0 == closed_at
    clock.t += 0.2  # a pause longer than reuse_tick_s: the next window waits for a fresh tick again
    meter.end(second)
    clock.t += 0.02
    next_tick = (int(clock.t / period + 1e-9) + 1) * period
    third = meter.begin()
    assert third.t0 == pytest.approx(next_tick, abs=0.0011)


def test_tick_wait_gives_up_on_a_frozen_counter() -> None:
    clock = FakeClock()
    meter = NvmlMeter(nvml=FakeNvml(energy_mj=lambda: 7), clock=clock, sleep=clock.sleep, tick_timeout_s=0.2)
    state = meter.begin()
    assert state.t0 == pytest.approx(0.2, abs=0.002)
    assert meter.end(state).energy_j == 0.0


def test_not_supported_counter_falls_back_to_power_sampling() -> None:
    fake = FakeNvml(energy_mj=None, power_mw=lambda: 50_000)
    meter = NvmlMeter(nvml=fake, sample_interval_s=0.005)
    assert meter.mode == "sampling"
    assert "power sampled" in meter.describe()
    calls_before = fake.power_calls
    state = meter.begin()
    time.sleep(0.1)
    reading = meter.end(state)
    assert reading.energy_j == pytest.approx(50.0 * reading.seconds, rel=1e-9)
    assert fake.power_calls - calls_before > 4  # the background thread sampled in between


def test_sampled_power_is_integrated_by_trapezoid() -> None:
    ramp = [(0.0, 0.0), (1.0, 10.0), (2.0, 20.0), (2.5, 20.0)]
    assert trapezoid(ramp) == pytest.approx(5.0 + 15.0 + 10.0)
    assert trapezoid([(0.0, 3.0)]) == 0.0


def test_sampling_error_surfaces_at_window_close() -> None:
    state = {"n": 0}

    def power() -> int:
        state["n"] += 1
        if state["n"] > 3:
            raise NVMLError(999)
        return 1000

    meter = NvmlMeter(nvml=FakeNvml(energy_mj=None, power_mw=power), sample_interval_s=0.002)
    window = meter.begin()
    time.sleep(0.05)
    with pytest.raises(MeterUnavailable, match="power sampling failed"):
        meter.end(window)


def test_neither_energy_nor_power_is_unavailable() -> None:
    with pytest.raises(MeterUnavailable, match="neither energy nor power"):
        NvmlMeter(nvml=FakeNvml(energy_mj=None, power_mw=None))


def test_error_codes_without_per_code_classes_are_understood() -> None:
    """Old nvidia-ml-py versions raise plain NVMLError with `.value`; NotSupported is code 3."""

    class OldStyle(FakeNvml):
        NVMLError_NotSupported = None  # type: ignore[assignment]

        def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
            raise NVMLError(3)

    meter = NvmlMeter(nvml=OldStyle(power_mw=lambda: 1000))
    assert meter.mode == "sampling"


def test_driver_missing_names_the_fix() -> None:
    with pytest.raises(MeterUnavailable) as err:
        NvmlMeter(nvml=FakeNvml(init_error=NVMLError_DriverNotLoaded()))
    assert "nvml: cannot initialise NVML" in str(err.value) and "NVIDIA driver" in str(err.value)


def test_no_permission_is_unavailable() -> None:
    def denied() -> int:
        raise NVMLError_NoPermission()

    with pytest.raises(MeterUnavailable, match="not permitted"):
        NvmlMeter(nvml=FakeNvml(energy_mj=denied))


def test_device_index_is_configurable_and_checked() -> None:
    fake = FakeNvml(energy_mj=lambda: 0, count=2)
    assert NvmlMeter(index=1, nvml=fake).index == 1
    with pytest.raises(MeterUnavailable, match="index 3 does not exist"):
        NvmlMeter(index=3, nvml=fake)
    assert fake.initialised == 1  # the failed open shut NVML down again; the first is still open


def test_missing_nvidia_ml_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(MeterUnavailable, match=r"pip install 'evowatt\[nvml\]'"):
        NvmlMeter()


def test_sync_runs_at_both_window_edges() -> None:
    edges: list[str] = []
    meter = NvmlMeter(
        nvml=FakeNvml(energy_mj=lambda: 0), sync=lambda: edges.append("sync"), align_ticks=False
    )
    state = meter.begin()
    meter.end(state)
    assert edges == ["sync", "sync"]


def test_simulated_gpu_counter_reads_its_idle_power() -> None:
    meter = NvmlMeter(nvml=simulated_nvml(PowerModel(idle_w=60.0, w_per_cpu=0.0), period_s=0.02, noise=0.0))
    state = meter.begin()
    time.sleep(0.15)
    assert meter.end(state).power_w == pytest.approx(60.0, rel=0.05)
