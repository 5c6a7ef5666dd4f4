"""The space of networks the search explores: the modules a network is built of (``network``), how a
network may change (``search.mutation``) and how large it may grow (``search.caps``).

Its own module because the representation (genome, mutation, calibration) needs these sections and no
other: it imports them without the search, training or loading code.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from evowatt.config.base import Strict


class ModuleConfig(Strict):
    """One module: its type is a grammar start symbol."""

    name: str
    network_structure_init: list[int] = Field(min_length=1)
    network_structure: tuple[int, int]
    levels_back: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _init_within_bounds(self) -> ModuleConfig:
        low, high = self.network_structure
        if not 0 <= low <= high:
            raise ValueError(f"network_structure [{low}, {high}] must satisfy 0 <= min <= max")
        bad = [n for n in self.network_structure_init if not low <= n <= high]
        if bad:
            raise ValueError(
                f"network_structure_init values {bad} lie outside network_structure [{low}, {high}]"
            )
        return self


class NetworkConfig(Strict):
    modules: list[ModuleConfig] = Field(min_length=1)
    output: str = "softmax"
    macro_structure: list[str] = ["learning"]
    reuse_layer: float = Field(
        0.15, ge=0, le=1, description="at initialisation: p that a layer copies an earlier one"
    )


class MutationConfig(Strict):
    """ENERGIZE's default rates."""

    add_layer: float = Field(0.25, ge=0, le=1)
    reuse_layer: float = Field(0.15, ge=0, le=1)
    remove_layer: float = Field(0.25, ge=0, le=1)
    reuse_module: float = Field(0.15, ge=0, le=1)
    remove_module: float = Field(0.25, ge=0, le=1)
    dsge_layer: float = Field(0.15, ge=0, le=1)
    macro_layer: float = Field(0.3, ge=0, le=1)
    add_connection: float = Field(0.0, ge=0, le=1)
    remove_connection: float = Field(0.0, ge=0, le=1)
    train_longer: float = Field(0.2, ge=0, le=1)


class CapsConfig(Strict):
    """Networks above these are rejected before any weight is allocated."""

    max_params: int = Field(5_000_000, gt=0)
    max_flops: int = Field(2_000_000_000, gt=0, description="per inference; a multiply-add counts 2")
