"""The module archive: modules measured on their own, drawn back with probability proportional to 1/cost.

It belongs to the run (it travels in the search state and the checkpoint; nothing lives on a class),
keeps one entry per distinct module, and is bounded: when full, the costliest entry makes way for a
cheaper newcomer. Cost is the module's inference energy (J) or power (W), whichever the fitness uses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evowatt.representation.genome import Module


def module_key(module: dict[str, Any]) -> str:
    """Identity of a module: its type, layers and connections, canonically serialised (layer ids left out:
    the same module in two genomes is one entry)."""
    return json.dumps(_without_ids(module), sort_keys=True, separators=(",", ":"))


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


@dataclass
class ArchiveEntry:
    key: str
    module: dict[str, Any]
    type: str
    cost: float
    metric: str  # energy | power
    method: str  # how the cost was obtained, e.g. estimated:model
    input_shape: list[int]
    source_id: int  # the evaluation that measured it


class ModuleArchive:
    def __init__(self, capacity: int = 100):
        self.capacity = capacity
        self.entries: list[ArchiveEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, module: dict[str, Any]) -> bool:
        key = module_key(module)
        return any(e.key == key for e in self.entries)

    def add(
        self,
        module: dict[str, Any],
        cost: float | None,
        metric: str,
        method: str,
        input_shape: list[int],
        source_id: int,
    ) -> bool:
        """Keep a measured module; False for a duplicate, an unmeasured one, or one costlier than all kept."""
        if cost is None or not np.isfinite(cost) or cost <= 0 or module in self:
            return False
        entry = ArchiveEntry(
            module_key(module),
            module,
            str(module["type"]),
            float(cost),
            metric,
            method,
            list(input_shape),
            source_id,
        )
        if len(self.entries) >= self.capacity:
            costliest = max(range(len(self.entries)), key=lambda i: self.entries[i].cost)
            if self.entries[costliest].cost <= entry.cost:
                return False
            del self.entries[costliest]
        self.entries.append(entry)
        return True

    def probabilities(self, types: list[str]) -> tuple[list[ArchiveEntry], np.ndarray]:
        """Entries of the allowed types and their draw probabilities, proportional to 1/cost."""
        allowed = [e for e in self.entries if e.type in types]
        if not allowed:
            return [], np.zeros(0)
        weights = np.array([1.0 / e.cost for e in allowed])
        return allowed, weights / weights.sum()

    def sample(self, types: list[str], rng: np.random.Generator) -> Module | None:
        """A copy of an archived module (None when the archive holds none of these types)."""
        allowed, p = self.probabilities(types)
        if not allowed:
            return None
        return Module.from_json(allowed[int(rng.choice(len(allowed), p=p))].module)

    def state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "entries": [asdict(e) for e in self.entries]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.entries = [ArchiveEntry(**e) for e in state["entries"]]
