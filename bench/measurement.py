"""What the measurement protocol costs and how repeatable it is, per meter, on CNNs of different sizes.

For each network (1x28x28 input) and meter, the protocol measures the network `--repeats` times and
prints: the protocol's wall time per model and per individual as a share of a nominal training budget
(target <= 10 %), and the coefficient of variation (CV) of energy and latency over the repeats.

Meters: `estimate` (the analytical model: its energy is deterministic, its latency is clocked), and fake
NVML and RAPL devices that update and jitter like the real ones (NVML energy counter every 10-90 ms,
RAPL every ~1 ms, a few % noise per update), driven by a simulated power model: idle watts plus watts
per CPU-second this process uses. Their energies are simulated, not measured: what is measured is what
the protocol costs and how stable its result is where counters tick coarsely.

    .venv/bin/python bench/measurement.py            # about 2-3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from evowatt.energy.base import HardwareMeter, Meter, Reading
from evowatt.energy.estimate import EstimateMeter
from evowatt.energy.fakes import PowerModel, simulated_nvml, simulated_rapl
from evowatt.energy.nvml import NvmlMeter
from evowatt.energy.protocol import MeasureSettings, measure_idle, measure_model
from evowatt.energy.rapl import RaplMeter


def networks() -> dict[str, Callable[[], nn.Module]]:
    """Hand-built CNNs from tiny to a wide-conv-plus-wide-dense network like ENERGIZE's slowest."""
    return {
        "tiny": lambda: nn.Sequential(
            nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10)
        ),
        "small": lambda: nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        ),  # fmt: skip
        "plain": lambda: nn.Sequential(  # DESIGN.md's hand-written baseline CNN (4 conv + BN, dense 256)
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(256, 10),
        ),  # fmt: skip
        "wide": lambda: nn.Sequential(
            nn.Conv2d(1, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128 * 7 * 7, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        ),  # fmt: skip
        "wide-dense": lambda: nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        ),  # fmt: skip
    }


class TruthProbe(HardwareMeter):
    """Wraps a simulated meter and reads the simulation's true energy over each window it closes.

    The error of a window's reading against the truth isolates the meter and protocol (counter ticks,
    sensor noise, window edges) from the run-to-run variation of the workload itself.
    """

    def __init__(self, inner: HardwareMeter, power: PowerModel) -> None:
        super().__init__()
        self.inner = inner
        self.power = power
        self.name = inner.name  # type: ignore[misc]
        self.method = inner.method  # type: ignore[misc]
        self.errors: list[float] = []

    def describe(self) -> str:
        return self.inner.describe()

    def _begin(self) -> tuple[object, float]:
        state = self.inner.begin()
        return state, self.power.energy_j()[1]

    def _end(self, state: tuple[object, float]) -> Reading:
        reading = self.inner.end(state[0])
        true = self.power.energy_j()[1] - state[1]
        self.errors.append(abs(reading.energy_j - true) / true if true > 0 else 0.0)
        return reading

    def close(self) -> None:
        self.inner.close()


def make_meter(name: str, workdir: Path) -> Meter:
    if name == "estimate":
        return EstimateMeter()
    if name in ("nvml", "nvml-unaligned", "nvml-sampling"):
        power = PowerModel(idle_w=60.0, w_per_cpu=90.0)
        if name == "nvml-sampling":
            fake = simulated_nvml(power, period_s=0.02, jitter_s=0.005, noise=0.02, counter=False)
        else:
            fake = simulated_nvml(power, period_s=0.05, jitter_s=0.04, noise=0.02)
        return TruthProbe(NvmlMeter(nvml=fake, align_ticks=name != "nvml-unaligned"), power)
    if name == "rapl":
        power = PowerModel(idle_w=12.0, w_per_cpu=15.0)
        root, read_text = simulated_rapl(workdir / "powercap", power, noise=0.01)
        return TruthProbe(RaplMeter(root=root, read_text=read_text), power)
    raise SystemExit(f"unknown meter {name!r}: estimate, nvml, nvml-unaligned, nvml-sampling, rapl")


def cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.stdev(values) / abs(mean) if len(values) > 1 and mean else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=20.0, help="nominal training seconds per individual")
    parser.add_argument("--models-per-individual", type=int, default=2, help="full model + early exit")
    parser.add_argument("--repeats", type=int, default=10, help="measurements per network and meter")
    parser.add_argument("--meters", default="estimate,nvml,rapl")
    parser.add_argument("--networks", default=",".join(networks()))
    parser.add_argument("--time-cap", type=float, default=None, help="override MeasureSettings.time_cap_s")
    args = parser.parse_args()

    settings = MeasureSettings(**({"time_cap_s": args.time_cap} if args.time_cap else {}))
    torch.manual_seed(0)
    inputs = torch.randn(settings.batch_size, 1, 28, 28)
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"settings: {settings.model_dump(exclude={'estimate'})}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for meter_name in args.meters.split(","):
            meter = make_meter(meter_name, Path(tmp))
            t0 = time.perf_counter()
            idle = measure_idle(meter, settings)
            idle_s = time.perf_counter() - t0
            for net_name in args.networks.split(","):
                model = networks()[net_name]().eval()
                with torch.inference_mode():
                    model(inputs)  # first-call allocation, outside every figure
                if isinstance(meter, TruthProbe):
                    meter.errors.clear()
                results, seconds = [], []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    m = measure_model(model, inputs, meter, settings, idle=idle)
                    seconds.append(time.perf_counter() - t0)
                    results.append(m)
                energies = [m.energy.value for m in results if m.energy is not None and m.valid]
                first = results[0]
                per_model = statistics.fmean(seconds)
                stops = statistics.mode([m.stop_reason for m in results])
                rows.append(
                    (
                        net_name,
                        f"{first.params.value / 1e6:.3g}M",
                        f"{first.flops.value / 1e6:.3g}",
                        meter_name + (" (modelled)" if meter_name == "estimate" else " (simulated)"),
                        f"{statistics.fmean(energies) * 1e6:.3g}" if energies else "invalid",
                        f"{cv(energies) * 100:.1f}" if energies else "-",
                        f"{statistics.fmean(m.latency.value for m in results) * 1e6:.3g}",
                        f"{cv([m.latency.value for m in results]) * 100:.1f}",
                        f"{statistics.fmean(m.latency.n for m in results):.1f}",
                        f"{statistics.fmean(meter.errors) * 100:.2f}"
                        if isinstance(meter, TruthProbe)
                        else "-",
                        f"{stops} {sum(m.stop_reason == stops for m in results)}/{len(results)}",
                        f"{per_model:.2f}",
                        f"{per_model * args.models_per_individual / args.budget * 100:.1f}",
                        f"{idle_s:.1f}",
                    )
                )
                print("  ".join(rows[-1]), flush=True)
            meter.close()
    header = (
        "network", "params", "MFLOP/inf", "meter", "energy µJ/inf", "energy CV %", "latency µs/inf",
        "latency CV %", "windows", "window error %", "stop (mode)", "s/model",
        f"% of {args.budget:g}s x{args.models_per_individual}", "idle s/run",
    )  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"{args.repeats} measurements per network and meter; CV = stdev/mean over them. "
        "'windows' = mean repeats per measurement. "
        "'window error' = mean |reading - simulated true energy| / true, per window. "
        f"Idle baseline: once per run per meter. Total {time.perf_counter() - started:.0f} s; "
        f"load average {os.getloadavg()[0]:.2f} (other processes share these cores)."
    )


if __name__ == "__main__":
    main()
