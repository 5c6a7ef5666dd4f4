"""Choosing a meter: `auto` takes the best readable one and says why; a named meter is that one or an error.

Never a silent fallback: a run that asked for `nvml` and got an estimate would compare numbers of two
different kinds without knowing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from evowatt.energy.base import Meter, MeterUnavailable, device_sync, setting_hint
from evowatt.energy.estimate import EstimateConstants, EstimateMeter
from evowatt.energy.nvml import NvmlMeter
from evowatt.energy.rapl import DEFAULT_ROOT, RaplMeter
from evowatt.errors import EvowattError

METERS = ("nvml", "rapl", "estimate")
CHOICES = ("auto", *METERS)

#: Metrics the energy package produces; the `_0` / `_1` partition suffixes are allowed on each.
ENERGY_METRICS = (
    "energy",
    "power",
    "energy_gross",
    "power_gross",
    "idle_power",
    "latency",
    "flops",
    "params",
)
#: Metrics that need a time base, hence a hardware meter.
POWER_METRICS = ("power", "power_gross", "idle_power", "energy_gross")


@dataclass(frozen=True)
class MeterStatus:
    name: str
    available: bool
    reason: str


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise EvowattError(f"unknown device {device!r} — use cpu, cuda or cuda:N") from exc


def open_meter(name: str, device: str | torch.device = "cpu", **options: Any) -> Meter:
    """Open one meter by name or raise MeterUnavailable saying why and what to do.

    Options: `nvml_index`, `nvml_module` (tests inject a fake), `sample_interval_s`, `rapl_root`,
    `rapl_read_text` (tests), `estimate_constants`.
    """
    dev = _device(device)
    if name == "nvml":
        if dev.type != "cuda":
            raise MeterUnavailable(
                f"nvml: the model runs on {dev}, and NVML meters a GPU — run it on the GPU "
                f"({setting_hint('training.device', 'cuda', 'device')}), or choose rapl (CPU) or estimate"
            )
        index = options.get("nvml_index")
        if index is None:  # NVML counts in PCI order; with CUDA_DEVICE_ORDER=PCI_BUS_ID the ordinals agree
            index = dev.index or 0
        kwargs: dict[str, Any] = {"index": index, "nvml": options.get("nvml_module")}
        if "sample_interval_s" in options:
            kwargs["sample_interval_s"] = options["sample_interval_s"]
        return NvmlMeter(sync=device_sync(dev), **kwargs)
    if name == "rapl":
        if dev.type != "cpu":
            raise MeterUnavailable(
                f"rapl: the model runs on {dev}, and RAPL meters the CPU package, not the accelerator — "
                f"choose nvml (GPU) or estimate, or run it on the CPU "
                f"({setting_hint('training.device', 'cpu', 'device')})"
            )
        kwargs = {"root": options.get("rapl_root", DEFAULT_ROOT)}
        if options.get("rapl_read_text") is not None:
            kwargs["read_text"] = options["rapl_read_text"]
        return RaplMeter(**kwargs)
    if name == "estimate":
        constants = options.get("estimate_constants")
        return EstimateMeter(constants if isinstance(constants, EstimateConstants) else None)
    raise EvowattError(f"unknown meter {name!r} — choose one of: {', '.join(CHOICES)}")


def select_meter(name: str, device: str | torch.device = "cpu", **options: Any) -> tuple[Meter, str]:
    """The meter and a sentence saying why it was chosen (printed when a run starts)."""
    dev = _device(device)
    if name != "auto":
        meter = open_meter(name, dev, **options)
        return meter, f"{name}: requested; {meter.describe()}"
    tried: list[str] = []
    candidates = ("nvml",) if dev.type == "cuda" else ("rapl",) if dev.type == "cpu" else ()
    for candidate in candidates:
        try:
            meter = open_meter(candidate, dev, **options)
        except MeterUnavailable as exc:
            tried.append(str(exc))
            continue
        return meter, f"auto chose {candidate}: the model runs on {dev} and {meter.describe()}"
    meter = open_meter("estimate", dev, **options)
    why = "; ".join(tried) if tried else f"no hardware meter reads {dev}"
    return meter, f"auto chose estimate (energy is modelled, not measured; no power): {why}"


def list_meters(device: str | torch.device | None = None, **options: Any) -> list[MeterStatus]:
    """Every meter, readable or not, and why. Without a device, nvml is tried on cuda and rapl on cpu."""
    out: list[MeterStatus] = []
    for name in METERS:
        dev = device if device is not None else ("cuda" if name == "nvml" else "cpu")
        try:
            meter = open_meter(name, dev, **options)
        except MeterUnavailable as exc:
            out.append(MeterStatus(name, False, str(exc)))
            continue
        try:
            out.append(MeterStatus(name, True, meter.describe()))
        finally:
            meter.close()
    return out


def check_metrics(metrics: Iterable[str], meter_name: str) -> None:
    """Refuse, before a run starts, a fitness or objective the chosen meter cannot give."""
    if meter_name != "estimate":
        return
    for metric in metrics:
        base, _, suffix = metric.rpartition("_")
        if not (base and suffix.isdigit()):
            base, suffix = metric, ""
        if base in POWER_METRICS:
            alt = "energy" + (f"_{suffix}" if suffix else "")
            raise EvowattError(
                f"metric {metric!r} needs a hardware meter (nvml or rapl): the estimate meter has no time "
                f"base and gives energy only — use {alt!r} (J per inference) instead, "
                "or set energy.meter to nvml or rapl"
            )
