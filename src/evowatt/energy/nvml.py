"""NVIDIA GPUs through NVML (nvidia-ml-py, the optional extra `evowatt[nvml]`).

Preferred: the total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since driver load,
Volta and later). The counter only moves every ~10-100 ms, so a short window read at arbitrary times
is off by up to one update period at each edge; the meter therefore starts a window at a counter tick
and closes it at the first tick after the work (the idle tail is reported apart as `busy_seconds`);
a window opened within `reuse_tick_s` of the last close starts at that close's tick, without waiting.
Where the GPU answers NotSupported, power is sampled (`nvmlDeviceGetPowerUsage`,
milliwatts) on a background thread and integrated with the trapezoid rule. NVML reads the whole GPU:
other processes on it count, hence the idle baseline. NVML numbers GPUs by PCI order and ignores
CUDA_VISIBLE_DEVICES, so `index` may differ from the CUDA ordinal.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from evowatt.energy.base import METHOD_NVML, Clock, HardwareMeter, MeterUnavailable, Reading, setting_hint

Mode = Literal["counter", "sampling"]


def _import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailable(
            "nvml: nvidia-ml-py is not installed — pip install 'evowatt[nvml]' (or nvidia-ml-py)"
        ) from exc
    return pynvml


def _is_error(nvml: Any, exc: BaseException, class_name: str, code_name: str, code: int) -> bool:
    """Match an NVML error whether the module exposes per-code classes or only `NVMLError.value`."""
    cls = getattr(nvml, class_name, None)
    if isinstance(cls, type) and isinstance(exc, cls):
        return True
    return getattr(exc, "value", None) == getattr(nvml, code_name, code)


def _not_supported(nvml: Any, exc: BaseException) -> bool:
    return _is_error(nvml, exc, "NVMLError_NotSupported", "NVML_ERROR_NOT_SUPPORTED", 3)


def _no_permission(nvml: Any, exc: BaseException) -> bool:
    return _is_error(nvml, exc, "NVMLError_NoPermission", "NVML_ERROR_NO_PERMISSION", 4)


def trapezoid(samples: list[tuple[float, float]]) -> float:
    """Energy (J) of (time s, power W) samples; the window's edges are samples too, so nothing is cut."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))


class _Sampler(threading.Thread):
    """Polls power until stopped; keeps the first error so the window's close can raise it."""

    def __init__(self, read_w: Callable[[], float], clock: Clock, interval_s: float) -> None:
        super().__init__(daemon=True, name="evowatt-nvml-sampler")
        self._read_w = read_w
        self._clock = clock
        self._interval = interval_s
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.stop_event.wait(self._interval):
            try:
                self.samples.append((self._clock(), self._read_w()))
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = exc
                return


@dataclass
class _CounterState:
    t0: float
    mj0: int


@dataclass
class _SamplingState:
    first: tuple[float, float]
    sampler: _Sampler


class NvmlMeter(HardwareMeter):
    """One GPU's energy, by counter where it has one, else by sampled power."""

    name = "nvml"
    method = METHOD_NVML

    def __init__(
        self,
        index: int = 0,
        nvml: Any = None,
        sync: Callable[[], None] | None = None,
        clock: Clock = time.perf_counter,
        sample_interval_s: float = 0.01,
        mode: Mode | None = None,
        align_ticks: bool = True,
        tick_timeout_s: float = 0.25,
        reuse_tick_s: float = 0.005,
        poll_s: float = 0.0005,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(sync=sync, clock=clock)
        self.align_ticks = align_ticks
        self.reuse_tick_s = reuse_tick_s
        self._last_tick: tuple[float, int] | None = None
        self.tick_timeout_s = tick_timeout_s
        self._poll_s = poll_s
        self._sleep = sleep
        self._nvml = nvml if nvml is not None else _import_pynvml()
        self.index = index
        self.sample_interval_s = sample_interval_s
        self._open = False
        nv = self._nvml
        try:
            nv.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, OSError
            raise MeterUnavailable(
                f"nvml: cannot initialise NVML ({exc}) — install the NVIDIA driver so that nvidia-smi works, "
                f"or choose another meter: {setting_hint('energy.meter', 'estimate', 'meter')} (or rapl)"
            ) from exc
        self._open = True
        try:
            count = int(nv.nvmlDeviceGetCount())
            if not 0 <= index < count:
                raise MeterUnavailable(
                    f"nvml: GPU index {index} does not exist ({count} visible to NVML) — "
                    f"set energy.nvml_index in a run's config (--nvml-index in evowatt measure) to "
                    f"0..{max(count - 1, 0)}"
                )
            self._handle = nv.nvmlDeviceGetHandleByIndex(index)
            raw_name = nv.nvmlDeviceGetName(self._handle)
            self.device_name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            self.mode: Mode = mode or self._detect_mode()
        except BaseException:
            self.close()
            raise

    def _detect_mode(self) -> Mode:
        nv = self._nvml
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            return "counter"
        except Exception as exc:  # noqa: BLE001
            if _no_permission(nv, exc):
                raise self._denied(exc) from exc
            if not _not_supported(nv, exc):
                raise MeterUnavailable(f"nvml: GPU {self.index} energy counter failed: {exc}") from exc
        try:
            nv.nvmlDeviceGetPowerUsage(self._handle)
            return "sampling"
        except Exception as exc:  # noqa: BLE001
            if _no_permission(nv, exc):
                raise self._denied(exc) from exc
            raise MeterUnavailable(
                f"nvml: GPU {self.index} ({self.device_name}) reports neither energy nor power ({exc}) — "
                f"use the estimate meter: {setting_hint('energy.meter', 'estimate', 'meter')}"
            ) from exc

    def _denied(self, exc: BaseException) -> MeterUnavailable:
        return MeterUnavailable(
            f"nvml: reading GPU {self.index} energy is not permitted ({exc}) — run with access to the "
            "NVIDIA device (e.g. a container started with docker run --gpus all, or as a user in the video "
            "group)"
        )

    def describe(self) -> str:
        how = (
            "energy counter (mJ)"
            if self.mode == "counter"
            else f"power sampled every {self.sample_interval_s}s"
        )
        return f"nvml: GPU {self.index} {self.device_name}, {how}"

    def _power_w(self) -> float:
        return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) / 1000.0

    def _counter_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _next_tick(self) -> tuple[float, int]:
        """Time and value of the counter's next update (or now, if it does not move within the timeout)."""
        first = self._counter_mj()
        now = self._clock()
        if not self.align_ticks:
            return now, first
        deadline = now + self.tick_timeout_s
        while True:
            value = self._counter_mj()
            now = self._clock()
            if value != first or now >= deadline:
                return now, value
            self._sleep(self._poll_s)

    def _begin(self) -> _CounterState | _SamplingState:
        if self.mode == "counter":
            last = self._last_tick
            self._last_tick = None
            if (
                last is not None
                and self._clock() - last[0] <= self.reuse_tick_s
                and self._counter_mj() == last[1]
            ):
                return _CounterState(t0=last[0], mj0=last[1])  # back-to-back windows: no second wait
            t0, mj0 = self._next_tick()
            return _CounterState(t0=t0, mj0=mj0)
        first = (self._clock(), self._power_w())
        sampler = _Sampler(self._power_w, self._clock, self.sample_interval_s)
        sampler.start()
        return _SamplingState(first=first, sampler=sampler)

    def _end(self, state: _CounterState | _SamplingState) -> Reading:
        if isinstance(state, _CounterState):
            done = self._clock()
            t1, mj1 = self._next_tick()
            self._last_tick = (t1, mj1) if self.align_ticks else None
            return Reading(
                energy_j=(mj1 - state.mj0) / 1000.0, seconds=t1 - state.t0, busy_seconds=done - state.t0
            )
        sampler = state.sampler
        sampler.stop_event.set()
        sampler.join()
        if sampler.error is not None:
            raise MeterUnavailable(f"nvml: power sampling failed: {sampler.error}") from sampler.error
        last = (self._clock(), self._power_w())
        samples = [state.first, *sampler.samples, last]
        return Reading(energy_j=trapezoid(samples), seconds=last[0] - state.first[0])

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):  # nothing to do if the driver is already gone
                self._nvml.nvmlShutdown()
