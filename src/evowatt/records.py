"""Typed records that cross layers: what ``evaluate`` returns and what the search and the store receive.

Torch-free, so the search can use them. ``Metric`` is a TypedDict: a value with the method that produced
it (``measured:nvml``, ``estimated:model``, ``counted:plan``, ...), stored as JSON unchanged. ``Budget``
is what one evaluation was allowed to train: the one budget type from the config (``BudgetConfig.to_budget``)
through the search's candidates and the task to ``nn.train.train`` and the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, TypedDict


class Status(str, Enum):
    """How an evaluation ended; a ``str`` so it compares and serialises as its value."""

    OK = "ok"
    INVALID = "invalid"  # cannot become a network, over a cap, diverged, or lacks a metric it needs
    FAILED = "failed"  # raised while training or measuring (e.g. out of memory)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class Budget:
    """A training budget: wall seconds or optimiser steps (None: not limited by that one).

    It equals its compact JSON form too (``Budget(steps=5) == {"steps": 5}``), the form a candidate's
    budget takes in a checkpoint.
    """

    seconds: float | None = None
    steps: int | None = None

    def describe(self) -> str:
        return f"{self.seconds:g} s" if self.seconds is not None else f"{self.steps} steps"

    def to_json(self) -> dict[str, Any]:
        """The store's form: both keys, the unset one None."""
        return {"steps": self.steps, "seconds": self.seconds}

    def compact(self) -> dict[str, Any]:
        """The candidate's (checkpoint) form: only what is set, ``{"steps": n}`` or ``{"seconds": s}``."""
        return {k: v for k, v in self.to_json().items() if v is not None}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Budget):
            return (self.seconds, self.steps) == (other.seconds, other.steps)
        if isinstance(other, Mapping):
            return self.compact() == {k: v for k, v in other.items() if v is not None}
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.seconds, self.steps))

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Budget:
        """From ``to_json`` or a candidate's ``{"steps": n}`` / ``{"seconds": s}``."""
        data = data or {}
        return cls(seconds=data.get("seconds"), steps=data.get("steps"))

    @classmethod
    def coerce(cls, value: Budget | Mapping[str, Any] | None) -> Budget:
        return value if isinstance(value, Budget) else cls.from_json(value)


class Metric(TypedDict, total=False):
    value: Any
    method: str
    ci: float


@dataclass
class EvalResult:
    """One evaluation's outcome: status, metrics with their method, training and measurement details."""

    id: int
    status: Status
    reason: str | None = None
    metrics: dict[str, Metric] = field(default_factory=dict)
    train: dict[str, Any] | None = None
    wall_seconds: float = 0.0
    weights_path: str | None = None  # set by the driver once it has written `weights` into the run dir
    host: str = ""
    device: str = ""
    meter: str | None = None  # the meter that measured this evaluation's energy (None: not measured)
    measure_seconds: float | None = None  # time spent measuring energy (inference, modules)
    measurements: dict[str, Any] = field(default_factory=dict)  # protocol details per model: "0", "1"
    modules: list[dict[str, Any]] = field(default_factory=list)  # module costs for the archive
    # the trained weights as safetensors bytes (with task.return_weights); the driver writes them into the
    # run directory, and they are never part of the JSON record
    weights: bytes | None = field(default=None, repr=False, compare=False)
    # the optimiser's final state as safetensors bytes (with task.return_optimiser), written beside them
    optimiser: bytes | None = field(default=None, repr=False, compare=False)
    inherited: dict[str, Any] | None = None  # the weights it started from: {"from": id, "layers", "fresh"}
    fidelity: dict[str, Any] | None = None  # multi-fidelity: {"rung", "cumulative" budget, "unit", "root"}

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def metric(self, name: str) -> float | None:
        """A metric's value; ``x_0`` (the full model) is stored under ``x``."""
        entry = self.metrics.get(name)
        if entry is None and name.endswith("_0"):
            entry = self.metrics.get(name[:-2])
        value = entry.get("value") if isinstance(entry, dict) else entry
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        # asdict would copy the bytes only to drop them
        weights, optimiser, self.weights, self.optimiser = self.weights, self.optimiser, None, None
        try:
            data = asdict(self)
        finally:
            self.weights, self.optimiser = weights, optimiser
        data.pop("weights")
        data.pop("optimiser")
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        """From ``to_json`` or an older store's row; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("id", -1)  # a bare {status, metrics} (scoring a stored row) has no id
        for key in ("metrics", "measurements"):
            if values.get(key) is None:
                values[key] = {}
        if values.get("modules") is None:
            values["modules"] = []
        return cls(**values)

    @classmethod
    def coerce(cls, value: EvalResult | dict[str, Any]) -> EvalResult:
        return value if isinstance(value, EvalResult) else cls.from_json(value)
