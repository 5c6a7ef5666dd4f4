"""What the store's part of a checkpoint and its rows must hold, field by field, checked when read.

``checkpoint.json`` holds the search's state beside the store's own section (``StoreSection``: the format
and the weight files the state needs). Each search owns the model of its state, beside it (search/es.py,
search/pareto.py, search/fidelity.py, built from search/state.py); the store keeps only this envelope,
and the model of the JSON columns of its evaluation rows (``StoredColumns``). A wrong field is a
``CheckpointError`` naming it by its path. Torch-free: pydantic only.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from evowatt.search.state import CheckpointError, GenomeState, StateModel, validate

__all__ = ["CheckpointError", "StoreSection", "StoredColumns", "check_row", "check_store_section"]


# --- the store's section ----------------------------------------------------------------------------
class WeightFile(StateModel):
    file: str = Field(min_length=1)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("file")
    @classmethod
    def _inside_the_run(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError("must be a path inside the run directory (relative, no '..')")
        return value


class StoreSection(StateModel):
    """``checkpoint.json``'s ``checkpoint`` key: the format and the weight files the search state needs."""

    format: int = Field(1, ge=1)
    weights: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]+$")], WeightFile] = {}
    # the optimiser states kept beside those weights (format 2), for continuations that resume them
    optimisers: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]+$")], WeightFile] = {}


def check_store_section(section: Any) -> StoreSection:
    """The store's section; a newer format is reported by the caller before the fields are checked."""
    return validate(StoreSection, section, prefix="checkpoint.")  # type: ignore[return-value]


# --- the store's rows -------------------------------------------------------------------------------
class MetricState(BaseModel):
    model_config = ConfigDict(extra="allow")  # ci, n, ... as the meter reported them

    value: float | None = None
    method: str | None = None


class StoredColumns(StateModel):
    """The JSON columns of one row of the evaluations table, as the store decodes them."""

    genome: GenomeState | None  # None: an empty object, the placeholder of hand-built test stores
    metrics: dict[str, MetricState | float | None]
    mutations: list[str] | None = None
    train: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    score: dict[str, Any] | None = None


def check_row(columns: dict[str, Any], evaluation_id: Any) -> None:
    """A stored evaluation's decoded JSON columns; CheckpointError naming the column and field."""
    if columns.get("genome") == {}:
        columns = {**columns, "genome": None}
    validate(StoredColumns, columns, prefix=f"evaluation {evaluation_id}: ")
