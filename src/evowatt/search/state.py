"""The parts a search's checkpoint state is made of, checked field by field when a checkpoint is read.

``checkpoint.json`` is valid JSON in the right place, yet a hand edit, a bad merge or a file from another
tool can give a field the wrong type (a list where an object belongs, a string for an id). Each model
names the first such field by its path (``pending.0.genome.modules``), so resume says which field is wrong
instead of failing somewhere later. Each search owns the model of its whole state, beside it: the ES's
``EvolutionState`` (search/es.py), the Pareto and random searches' ``ParetoState`` (search/pareto.py),
successive halving's ``FidelityState`` (search/fidelity.py); they share the genome, candidate, generator
and archive models here. The store keeps only its own envelope (driver/checkpoint.py). Torch-free:
pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class CheckpointError(ValueError):
    """A checkpoint field of the wrong type or range; the message names the field by its path."""


class StateModel(BaseModel):
    # strict: "5" is not an id and true is not a count; extra keys are ignored (not read, not trusted)
    model_config = ConfigDict(strict=True, extra="ignore")


# --- genomes ----------------------------------------------------------------------------------------
class NodeState(StateModel):
    symbol: str
    choice: int = Field(ge=0)
    params: dict[str, list[int | float]] = {}
    children: list[NodeState] = []
    id: int | None = Field(None, ge=0)  # a hidden layer's stable id (weight inheritance)


class ModuleState(StateModel):
    type: str
    layers: list[NodeState]
    connections: list[list[int]]


class GenomeState(StateModel):
    modules: list[ModuleState]
    output: NodeState
    macro: dict[str, NodeState] = {}
    next_layer_id: int = Field(0, ge=0)
    width: float = Field(1.0, gt=0, allow_inf_nan=False)


# --- what every search keeps ------------------------------------------------------------------------
class CandidateState(StateModel):
    id: int = Field(ge=0)
    generation: int = Field(ge=0)
    kind: Literal["random", "parent", "mutant", "train_longer", "final"]
    genome: GenomeState
    seed: int = Field(ge=0)
    parent_id: int | None = Field(None, ge=0)
    continue_from: int | None = Field(None, ge=0)
    mutations: list[str] = []
    measure_modules: list[int] = []
    inherit: bool = False
    budget: dict[str, int | float] | None = None
    fidelity: dict[str, int | float | str] | None = None


class PCG64State(StateModel):
    state: int = Field(ge=0)
    inc: int = Field(ge=0)


class RngState(StateModel):
    bit_generator: Literal["PCG64"]
    state: PCG64State
    has_uint32: int = Field(ge=0, le=1)
    uinteger: int = Field(ge=0)


class ArchiveEntryState(StateModel):
    key: str
    module: ModuleState
    type: str
    cost: float = Field(gt=0)
    metric: str
    method: str
    input_shape: list[int]
    source_id: int


class ArchiveState(StateModel):
    capacity: int = Field(ge=1)
    entries: list[ArchiveEntryState]


# --- checking ---------------------------------------------------------------------------------------
def _describe(error: ValidationError, prefix: str = "") -> str:
    items = error.errors()
    first = items[0]
    where = (prefix + ".".join(str(p) for p in first["loc"])).rstrip(".").replace(".[key]", " (a key)")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "required field is missing"
    elif "input" in first:
        shown = repr(first["input"])
        message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"field '{where or '(top level)'}': {message}{more}"


def validate(model: type[StateModel], data: Any, prefix: str = "") -> StateModel:
    """``data`` checked against ``model``; a CheckpointError naming the first wrong field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(_describe(exc, prefix)) from None


def check_genome(genome: dict[str, Any], grammar: Any, where: str) -> None:
    """A genome (already of the right shape) whose derivations fit ``grammar``: rules, choices, values."""
    from evowatt.representation.genome import Genome

    parsed = Genome.from_json(genome)
    try:
        for i, module in enumerate(parsed.modules):
            if module.type not in grammar:
                raise ValueError(f"module {i} has type '{module.type}', which is not a rule of the grammar")
            if len(module.connections) != len(module.layers):
                raise ValueError(
                    f"module {i} has {len(module.layers)} layers but {len(module.connections)} connections"
                )
            for node in module.layers:
                grammar.validate(node)
        grammar.validate(parsed.output)
        for node in parsed.macro.values():
            grammar.validate(node, parsed.partition_bounds())
    except ValueError as exc:
        raise CheckpointError(f"field '{where}': does not fit the run's grammar ({exc})") from None
