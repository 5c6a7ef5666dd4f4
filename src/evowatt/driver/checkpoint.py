"""What a checkpoint must hold, field by field: read from disk, it is validated before anything uses it.

``checkpoint.json`` is valid JSON in the right place, yet a hand edit, a bad merge or a file from another
tool can give a section the wrong type (a list where an object belongs, a string for an id). Each model
here names the first such field by its path (``pending.0.genome.modules``), so resume says which field is
wrong instead of failing somewhere later. The store's own section is ``StoreSection``; the (1+λ)-ES's
search state is ``EvolutionState`` (``check_es_state``, called by its ``load_state``), the Pareto and
random searches' ``ParetoState`` (``check_pareto_state``). A new search adds its model here the same
way. Torch-free and search-side: pydantic only.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator


class CheckpointError(ValueError):
    """A checkpoint field of the wrong type or range; the message names the field by its path."""


class _Model(BaseModel):
    # strict: "5" is not an id and true is not a count; extra keys are ignored (not read, not trusted)
    model_config = ConfigDict(strict=True, extra="ignore")


# --- the store's section ----------------------------------------------------------------------------
class WeightFile(_Model):
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


class StoreSection(_Model):
    """``checkpoint.json``'s ``checkpoint`` key: the format and the weight files the search state needs."""

    format: int = Field(1, ge=1)
    weights: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]+$")], WeightFile] = {}
    # the optimiser states kept beside those weights (format 2), for continuations that resume them
    optimisers: dict[Annotated[str, StringConstraints(pattern=r"^[0-9]+$")], WeightFile] = {}


# --- genomes ----------------------------------------------------------------------------------------
class NodeState(_Model):
    symbol: str
    choice: int = Field(ge=0)
    params: dict[str, list[int | float]] = {}
    children: list[NodeState] = []
    id: int | None = Field(None, ge=0)  # a hidden layer's stable id (weight inheritance)


class ModuleState(_Model):
    type: str
    layers: list[NodeState]
    connections: list[list[int]]


class GenomeState(_Model):
    modules: list[ModuleState]
    output: NodeState
    macro: dict[str, NodeState] = {}
    next_layer_id: int = Field(0, ge=0)
    width: float = Field(1.0, gt=0, allow_inf_nan=False)


# --- the (1+λ)-ES -----------------------------------------------------------------------------------
class ParentState(_Model):
    id: int = Field(ge=0)
    genome: GenomeState
    fitness: float | None


class CandidateState(_Model):
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


class PCG64State(_Model):
    state: int = Field(ge=0)
    inc: int = Field(ge=0)


class RngState(_Model):
    bit_generator: Literal["PCG64"]
    state: PCG64State
    has_uint32: int = Field(ge=0, le=1)
    uinteger: int = Field(ge=0)


class ArchiveEntryState(_Model):
    key: str
    module: ModuleState
    type: str
    cost: float = Field(gt=0)
    metric: str
    method: str
    input_shape: list[int]
    source_id: int


class ArchiveState(_Model):
    capacity: int = Field(ge=1)
    entries: list[ArchiveEntryState]


class GenerationState(_Model):
    generation: int = Field(ge=0)
    parent_id: int | None = Field(None, ge=0)
    best_fitness: float | None
    evaluations: list[int]


class EvolutionState(_Model):
    generation: int = Field(ge=0)
    next_id: int = Field(ge=0)
    parent: ParentState | None
    pending: list[CandidateState]
    history: list[GenerationState]
    rng: RngState
    archive: ArchiveState | None = None


# --- the Pareto and random searches ---------------------------------------------------------------
class PointState(_Model):
    values: list[float]
    violation: float = Field(ge=0)
    reason: str | None = None
    source: str | None = None  # how its energy was obtained (energy.sources.point_source)

    @field_validator("values", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:  # JSON ints are objective values too (e.g. params)
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]


class MemberState(_Model):
    id: int = Field(ge=0)
    genome: GenomeState
    points: dict[Literal["0", "1"], PointState] = {}
    rank: float | None = None
    crowding: float | Literal["inf"] = 0.0


class FrontPointState(_Model):
    id: int = Field(ge=0)
    exit: Literal["0", "1"]


class RecordState(_Model):
    generation: int = Field(ge=0)
    evaluations: list[int]
    survivors: list[int]
    front: list[FrontPointState] = []
    hypervolume: float | None = None


class ParetoState(_Model):
    algorithm: Literal["pareto", "random"]
    generation: int = Field(ge=0)
    next_id: int = Field(ge=0)
    population: list[MemberState]
    pending: list[CandidateState]
    history: list[RecordState]
    reference: list[float] | None
    rng: RngState
    archive: ArchiveState
    closest: MemberState | None = None  # the random search's infeasible network nearest the constraints


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


def validate(model: type[_Model], data: Any, prefix: str = "") -> _Model:
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


def check_es_state(state: Any, grammar: Any = None) -> EvolutionState:
    """The (1+λ)-ES's search state, checked (the ES keeps reading the plain dict, so genomes stay as
    recorded and compare equal to the store's); with ``grammar``, its genomes are checked against it."""
    checked = validate(EvolutionState, state)
    if grammar is not None:
        if state["parent"] is not None:
            check_genome(state["parent"]["genome"], grammar, "parent.genome")
        for i, candidate in enumerate(state["pending"]):
            check_genome(candidate["genome"], grammar, f"pending.{i}.genome")
    ids = [c.id for c in checked.pending]  # type: ignore[attr-defined]
    if len(set(ids)) != len(ids):
        raise CheckpointError(f"field 'pending': evaluation ids repeat ({ids})")
    next_id = checked.next_id  # type: ignore[attr-defined]
    if any(i >= next_id for i in ids):
        raise CheckpointError(f"field 'next_id': {next_id} is not above the pending ids {ids}")
    return checked  # type: ignore[return-value]


def check_pareto_state(state: Any, grammar: Any = None, objectives: int | None = None) -> ParetoState:
    """The Pareto (or random) search's state; with ``grammar``, its genomes are checked against it, and
    every point and the reference point must have one value per objective."""
    checked: ParetoState = validate(ParetoState, state)  # type: ignore[assignment]
    if grammar is not None:
        for i, member in enumerate(state["population"]):
            check_genome(member["genome"], grammar, f"population.{i}.genome")
        for i, candidate in enumerate(state["pending"]):
            check_genome(candidate["genome"], grammar, f"pending.{i}.genome")
    if objectives is not None:
        for i, member in enumerate(checked.population):
            for exit_, point in member.points.items():
                if len(point.values) != objectives:
                    raise CheckpointError(
                        f"field 'population.{i}.points.{exit_}.values': {len(point.values)} values for "
                        f"{objectives} objectives"
                    )
        if checked.reference is not None and len(checked.reference) != objectives:
            raise CheckpointError(
                f"field 'reference': {len(checked.reference)} values for {objectives} objectives"
            )
    ids = [c.id for c in checked.pending] + [m.id for m in checked.population]
    if any(i >= checked.next_id for i in ids):
        raise CheckpointError(f"field 'next_id': {checked.next_id} is not above the ids it holds")
    return checked


def check_store_section(section: Any) -> StoreSection:
    """The store's section; a newer format is reported by the caller before the fields are checked."""
    return validate(StoreSection, section, prefix="checkpoint.")  # type: ignore[return-value]


# --- the store's rows -------------------------------------------------------------------------------
class MetricState(BaseModel):
    model_config = ConfigDict(extra="allow")  # ci, n, ... as the meter reported them

    value: float | None = None
    method: str | None = None


class StoredColumns(_Model):
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
