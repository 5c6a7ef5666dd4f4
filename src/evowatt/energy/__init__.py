"""Energy of inference (and training): meters, the analytical estimate, and the measurement protocol.

Every value carries the method that produced it: `measured:nvml`, `measured:rapl`, `estimated:model`,
`measured:clock` (latency) or `counted:model` (FLOPs, parameters).
"""

from evowatt.energy.base import (
    METHOD_CLOCK,
    METHOD_COUNTED,
    METHOD_ESTIMATE,
    METHOD_NVML,
    METHOD_RAPL,
    HardwareMeter,
    Meter,
    MeterUnavailable,
    Reading,
)
from evowatt.energy.estimate import EnergyEstimate, EstimateConstants, EstimateMeter
from evowatt.energy.nvml import NvmlMeter
from evowatt.energy.protocol import (
    EnergySettings,
    IdleBaseline,
    Measurement,
    MeasureSettings,
    Stat,
    make_batch,
    measure_idle,
    measure_model,
    synthetic_batch,
)
from evowatt.energy.rapl import RaplMeter
from evowatt.energy.select import (
    ENERGY_METRICS,
    MeterStatus,
    check_metrics,
    list_meters,
    open_meter,
    select_meter,
)
from evowatt.energy.training import TrainingEnergy

__all__ = [
    "ENERGY_METRICS",
    "METHOD_CLOCK",
    "METHOD_COUNTED",
    "METHOD_ESTIMATE",
    "METHOD_NVML",
    "METHOD_RAPL",
    "EnergyEstimate",
    "EnergySettings",
    "EstimateConstants",
    "EstimateMeter",
    "HardwareMeter",
    "IdleBaseline",
    "MeasureSettings",
    "Measurement",
    "Meter",
    "MeterStatus",
    "MeterUnavailable",
    "NvmlMeter",
    "RaplMeter",
    "Reading",
    "Stat",
    "TrainingEnergy",
    "check_metrics",
    "list_meters",
    "make_batch",
    "measure_idle",
    "measure_model",
    "open_meter",
    "select_meter",
    "synthetic_batch",
]
