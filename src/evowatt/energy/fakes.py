"""Fake NVML and RAPL devices that tick and jitter like the real ones, driven by a simulated power model.

Why in the package: the meters must be exercised where no GPU or RAPL exists (CI, virtual machines),
by the energy tests, by `bench/measurement.py` and by any test of the search that wants a hardware-like
meter. The simulated device draws idle power plus power proportional to this process's CPU use, so a
model that computes more really does cost more energy.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from evowatt.energy.base import Clock


class PowerModel:
    """Cumulative true energy: `idle_w` all the time plus `w_per_cpu` per CPU-second this process uses."""

    def __init__(
        self,
        idle_w: float = 30.0,
        w_per_cpu: float = 20.0,
        clock: Clock = time.perf_counter,
        cpu_clock: Clock = time.process_time,
    ) -> None:
        self.idle_w = idle_w
        self.w_per_cpu = w_per_cpu
        self._clock = clock
        self._cpu = cpu_clock
        self._t0 = clock()
        self._c0 = cpu_clock()

    def energy_j(self) -> tuple[float, float]:
        """(now, energy since creation)."""
        now = self._clock()
        return now, self.idle_w * (now - self._t0) + self.w_per_cpu * (self._cpu() - self._c0)


class TickingCounter:
    """An energy register the device refreshes every `period_s` (± `jitter_s`); reads in between see the
    last value. Each refresh adds the true increment times (1 + N(0, `noise`)), as sensor noise does.

    Evaluated lazily on reads (the true energy is interpolated between reads), so it costs no thread.
    """

    def __init__(
        self, power: PowerModel, period_s: float, jitter_s: float = 0.0, noise: float = 0.0, seed: int = 0
    ) -> None:
        self._power = power
        self.period_s = period_s
        self._jitter = jitter_s
        self._noise = noise
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        t, e = power.energy_j()
        self._last_t, self._last_e = t, e
        self._tick_e = e
        self._tick_t = t
        self._next_tick = t + self._step()
        self.value_j = 0.0
        self.last_power_w = power.idle_w

    def _step(self) -> float:
        return max(self.period_s + self._rng.uniform(-self._jitter, self._jitter), 1e-6)

    def read_j(self) -> float:
        with self._lock:
            now, e_now = self._power.energy_j()
            span = now - self._last_t
            while self._next_tick <= now:
                frac = (self._next_tick - self._last_t) / span if span > 0 else 1.0
                e_tick = self._last_e + frac * (e_now - self._last_e)
                inc = (e_tick - self._tick_e) * (1.0 + self._rng.gauss(0.0, self._noise))
                self.value_j += max(inc, 0.0)
                self.last_power_w = inc / (self._next_tick - self._tick_t)
                self._tick_e, self._tick_t = e_tick, self._next_tick
                self._next_tick += self._step()
            self._last_t, self._last_e = now, e_now
            return self.value_j


# ------------------------------------------------------------------------------------------------ NVML


class NVMLError(Exception):
    """Shaped like pynvml's: the error code in `.value`."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
    def __init__(self, value: int = 3) -> None:
        super().__init__(value)


class NVMLError_NoPermission(NVMLError):  # noqa: N801 - pynvml's name
    def __init__(self, value: int = 4) -> None:
        super().__init__(value)


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801 - pynvml's name
    def __init__(self, value: int = 9) -> None:
        super().__init__(value)


class FakeNvml:
    """Stands in for the `pynvml` module: pass it as `NvmlMeter(nvml=...)`.

    `energy_mj` / `power_mw` return the counter and power of GPU 0; None makes that call answer
    NotSupported, like a GPU older than Volta for the energy counter.
    """

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_NO_PERMISSION = 4

    def __init__(
        self,
        energy_mj: Callable[[], int] | None = None,
        power_mw: Callable[[], int] | None = None,
        name: str = "Fake GPU",
        count: int = 1,
        init_error: Exception | None = None,
    ) -> None:
        self._energy_mj = energy_mj
        self._power_mw = power_mw
        self._name = name
        self._count = count
        self._init_error = init_error
        self.initialised = 0
        self.energy_calls = 0
        self.power_calls = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's name
        if self._init_error is not None:
            raise self._init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self._count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if not 0 <= index < self._count:
            raise NVMLError(2)
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return self._name.encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        self.energy_calls += 1
        if self._energy_mj is None:
            raise NVMLError_NotSupported()
        return int(self._energy_mj())

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        self.power_calls += 1
        if self._power_mw is None:
            raise NVMLError_NotSupported()
        return int(self._power_mw())


def simulated_nvml(
    power: PowerModel,
    period_s: float = 0.05,
    jitter_s: float = 0.02,
    noise: float = 0.02,
    counter: bool = True,
    seed: int = 0,
) -> FakeNvml:
    """A GPU whose energy counter (and power reading) refresh every `period_s` ± `jitter_s`."""
    ticks = TickingCounter(power, period_s, jitter_s, noise, seed)

    def energy_mj() -> int:
        return int(ticks.read_j() * 1000)

    def power_mw() -> int:
        ticks.read_j()
        return int(ticks.last_power_w * 1000)

    return FakeNvml(energy_mj=energy_mj if counter else None, power_mw=power_mw, name="Simulated GPU")


# ------------------------------------------------------------------------------------------------ RAPL


def write_rapl_tree(root: Path, zones: dict[str, tuple[str, int, int]]) -> Path:
    """Write a powercap tree: zone id (`intel-rapl:0`, `intel-rapl:0:1`) -> (name, energy_uj, max range).

    Sub-zones are written both nested and as top-level entries, as the kernel exposes them.
    """
    root.mkdir(parents=True, exist_ok=True)
    for zone_id, (name, energy_uj, max_range) in zones.items():
        parts = zone_id.split(":")
        dirs = [root / zone_id]
        if len(parts) == 3:
            dirs.append(root / ":".join(parts[:2]) / zone_id)
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(f"{name}\n")
            (d / "energy_uj").write_text(f"{energy_uj}\n")
            (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def simulated_rapl(
    root: Path,
    power: PowerModel,
    packages: int = 1,
    dram: bool = True,
    dram_share: float = 0.15,
    period_s: float = 0.001,
    jitter_s: float = 0.0002,
    noise: float = 0.01,
    max_range_uj: int = 262_143_328_850,
    seed: int = 0,
) -> tuple[Path, Callable[[Path], str]]:
    """A powercap tree under `root` and a reader whose energy_uj values follow `power`, split over zones.

    Pass both to `RaplMeter(root=..., read_text=...)`.
    """
    zones: dict[str, tuple[str, int, int]] = {}
    shares: dict[str, float] = {}
    pkg_share = (1.0 - (dram_share if dram else 0.0)) / packages
    for p in range(packages):
        zones[f"intel-rapl:{p}"] = (f"package-{p}", 0, max_range_uj)
        shares[f"intel-rapl:{p}"] = pkg_share
        zones[f"intel-rapl:{p}:0"] = ("core", 0, max_range_uj)
        if dram:
            zones[f"intel-rapl:{p}:1"] = ("dram", 0, max_range_uj)
            shares[f"intel-rapl:{p}:1"] = dram_share / packages
    write_rapl_tree(root, zones)
    ticks = TickingCounter(power, period_s, jitter_s, noise, seed)

    def read_text(path: Path) -> str:
        if path.name == "energy_uj" and path.parent.name in shares:
            uj = int(ticks.read_j() * shares[path.parent.name] * 1e6)
            return f"{uj % max_range_uj}\n"
        return path.read_text()

    return root, read_text
