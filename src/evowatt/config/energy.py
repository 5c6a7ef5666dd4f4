"""Settings of the energy package: plain pydantic models, no torch, so the config can embed them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MemoryLevel = Literal["sram", "dram"]


class EstimateConstants(BaseModel):
    """Energies per operation and per byte; every default is from Horowitz, ISSCC 2014 (45 nm, 0.9 V).

    M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, pp. 10-14,
    Fig. 1.1.9. Values are for 32-bit floating point; override them for another process node, data type
    or memory hierarchy (e.g. a 32 KB SRAM costs 20 pJ and a 1 MB SRAM 100 pJ per 64-bit access).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pj_fp_add: float = Field(0.9, gt=0, description="32-bit float addition (also a comparison), pJ")
    pj_fp_mult: float = Field(3.7, gt=0, description="32-bit float multiplication (also a division), pJ")
    pj_sram_byte: float = Field(
        10.0 / 8, gt=0, description="8 KB on-chip SRAM: 10 pJ per 64-bit access = 1.25 pJ/byte"
    )
    pj_dram_byte: float = Field(
        1300.0 / 8,
        gt=0,
        description="DRAM: 1.3-2.6 nJ per 64-bit access; the lower bound, 162.5 pJ/byte",
    )
    params_level: MemoryLevel = Field("dram", description="where parameters are read from, once per batch")
    activations_level: MemoryLevel = Field("sram", description="where activations are read and written")

    def pj_per_byte(self, level: MemoryLevel) -> float:
        return self.pj_sram_byte if level == "sram" else self.pj_dram_byte


MeterName = Literal["auto", "nvml", "rapl", "estimate"]


class MeasureSettings(BaseModel):
    """How one model's inference is measured; the defaults keep it near 10 % of a 20 s training budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(64, ge=1, description="measurement batch, fixed for every model")
    warmup: int = Field(
        2,
        ge=0,
        description="passes before the windows (allocator, caches, clocks); they also size the windows",
    )
    min_window_s: float = Field(
        0.1, gt=0, description="a window repeats the batch until this long: counters tick every 1-100 ms"
    )
    min_repeats: int = Field(5, ge=2, description="windows before the CI may stop the loop")
    max_repeats: int = Field(30, ge=2, description="windows at most")
    ci_target: float = Field(0.05, gt=0, lt=1, description="stop when the 95% CI half-width < this x mean")
    time_cap_s: float = Field(
        0.8,
        gt=0,
        description="no new window after this long, counted from the start with warm-up (at least 2 windows "
        "are taken); 0.8 s keeps the two models of an individual near 10 % of a 20 s training budget",
    )
    idle_s: float = Field(1.0, gt=0, description="idle baseline duration, measured once per run")
    idle_windows: int = Field(5, ge=2, description="the idle baseline is split into this many windows")
    estimate: EstimateConstants = Field(default_factory=EstimateConstants)

    @model_validator(mode="after")
    def _repeats_ordered(self) -> MeasureSettings:
        if self.min_repeats > self.max_repeats:
            raise ValueError(
                f"min_repeats ({self.min_repeats}) must not exceed max_repeats ({self.max_repeats})"
            )
        return self


class EnergySettings(MeasureSettings):
    """The config's `energy` section: which meter, its options, and the measurement protocol."""

    meter: MeterName = "auto"
    nvml_index: int | None = Field(
        None,
        ge=0,
        description="NVML GPU index (PCI order, ignores CUDA_VISIBLE_DEVICES); default: the CUDA ordinal",
    )
    rapl_root: str = "/sys/class/powercap"
    training_energy: bool = Field(True, description="record each training run's energy (hardware meters)")
    profile: str | None = Field(
        None,
        description="a calibrated profile (evowatt calibrate): latency, and energy where its meter read "
        "energy, are predicted for the device it describes and labelled estimated:calibrated",
    )
    check_every: int | None = Field(
        None,
        ge=1,
        description="with a profile of this device: every k-th network is measured as well and the "
        "predictor's error recorded (latency_error); default off",
    )
