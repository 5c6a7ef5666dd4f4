"""Energy of inference (and training): meters, the analytical estimate, and the measurement protocol.

Every value carries the method that produced it: `measured:nvml`, `measured:rapl`, `estimated:model`,
`measured:clock` (latency) or `counted:model` (FLOPs, parameters).
"""

from __future__ import annotations

import importlib
from typing import Any

# Names resolve on first use (PEP 562), so `evowatt.energy.settings` stays importable without torch:
# the config embeds those settings and the search side never imports torch.
_WHERE = {
    "ENERGY_METRICS": "select",
    "EnergyEstimate": "estimate",
    "EnergySettings": "settings",
    "EstimateConstants": "settings",
    "EstimateMeter": "estimate",
    "HardwareMeter": "base",
    "IdleBaseline": "protocol",
    "METHOD_CLOCK": "base",
    "METHOD_COUNTED": "base",
    "METHOD_ESTIMATE": "base",
    "METHOD_NVML": "base",
    "METHOD_RAPL": "base",
    "MeasureSettings": "settings",
    "Measurement": "protocol",
    "Meter": "base",
    "MeterStatus": "select",
    "MeterUnavailable": "base",
    "NvmlMeter": "nvml",
    "RaplMeter": "rapl",
    "Reading": "base",
    "Stat": "protocol",
    "TrainingEnergy": "training",
    "check_comparable": "sources",
    "check_metrics": "select",
    "list_meters": "select",
    "make_batch": "protocol",
    "measure_idle": "protocol",
    "measure_model": "protocol",
    "mixed_sources": "sources",
    "open_meter": "select",
    "select_meter": "select",
    "synthetic_batch": "protocol",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'evowatt.energy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"evowatt.energy.{_WHERE[name]}"), name)
