"""An individual: modules of grammar-derived layers, an output layer and macro genes; JSON round-trip.

Layer index (used by the partition point): the hidden layers of all modules in order, output layer
excluded, every layer counted (dropout and batch norm too): 0 .. L-1.

Layer id: each hidden layer also carries a stable id (``Node.id``) that survives mutations elsewhere in
the genome, so that weight inheritance can match a child's layers to its parent's whatever their
positions. A genome numbers its new layers from its own counter (``next_layer_id``, carried from parent
to child), so an id is never given twice along a lineage; no random draw is spent on ids. Genomes
written before ids existed get ids 0 .. L-1 in layer order when they are read.

Width: a genome may carry a width factor (``width``, 1 unless set) that multiplies every hidden layer's
channel or unit count when the network is built (nn/builder.py). The search never sets it; the final
training may, to train the found architecture wider than it was searched
(``experimental.final_training.width``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evowatt.config.network import ModuleConfig, NetworkConfig
from evowatt.representation.grammar import Bounds, Grammar, Node

PARTITION_RULE = "model_partition"
PARTITION_PARAM = "partition_point"


@dataclass
class Module:
    """Layers derived from one start symbol; ``connections[i]`` lists layer i's inputs (-1: module input)."""

    type: str
    layers: list[Node]
    connections: list[list[int]]

    def copy(self) -> Module:
        return Module(self.type, [n.copy() for n in self.layers], [list(c) for c in self.connections])

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "layers": [n.to_json() for n in self.layers],
            "connections": [list(c) for c in self.connections],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Module:
        return cls(
            str(data["type"]),
            [Node.from_json(n) for n in data["layers"]],
            [[int(i) for i in c] for c in data["connections"]],
        )


@dataclass
class Genome:
    modules: list[Module]
    output: Node
    macro: dict[str, Node] = field(default_factory=dict)
    next_layer_id: int = 0
    width: float = 1.0  # times every hidden layer's channels or units (a final training's widening)

    @property
    def layer_count(self) -> int:
        return sum(len(m.layers) for m in self.modules)

    def layers(self) -> list[Node]:
        """Hidden layers in layer-index order."""
        return [layer for m in self.modules for layer in m.layers]

    def layer_ids(self) -> list[int | None]:
        return [layer.id for layer in self.layers()]

    def assign_ids(self) -> Genome:
        """Number every layer without an id from this genome's counter, in layer-index order."""
        known = [i for i in self.layer_ids() if i is not None]
        self.next_layer_id = max([self.next_layer_id, *(i + 1 for i in known)])
        for layer in self.layers():
            if layer.id is None:
                layer.id = self.next_layer_id
                self.next_layer_id += 1
        return self

    def copy(self) -> Genome:
        return Genome(
            [m.copy() for m in self.modules],
            self.output.copy(),
            {k: v.copy() for k, v in self.macro.items()},
            self.next_layer_id,
            self.width,
        )

    def widened(self, factor: float) -> Genome:
        """A copy built ``factor`` times as wide as this genome (the same layers, ids and genes)."""
        genome = self.copy()
        genome.width = self.width * float(factor)
        return genome

    def to_json(self) -> dict[str, Any]:
        return {
            "modules": [m.to_json() for m in self.modules],
            "output": self.output.to_json(),
            "macro": {k: v.to_json() for k, v in self.macro.items()},
            "next_layer_id": self.next_layer_id,
            # written only when set, so that every genome of a search reads and hashes as before
            **({"width": self.width} if self.width != 1.0 else {}),
        }

    def network_key(self) -> str:
        """What decides the network built (layers, connections, output, partition point), as one string.

        Layer ids and learning genes are left out: two genomes with equal keys build networks of the same
        shape and cost, however they were reached and trained (the final training trains only one of them).
        """
        partition = self.macro.get(PARTITION_RULE)
        network = {
            "modules": [
                {"type": m.type, "layers": [n.to_json(ids=False) for n in m.layers], "inputs": m.connections}
                for m in self.modules
            ],
            "output": self.output.to_json(ids=False),
            "partition": partition.to_json(ids=False) if partition is not None else None,
            **({"width": self.width} if self.width != 1.0 else {}),
        }
        return json.dumps(network, sort_keys=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Genome:
        genome = cls(
            [Module.from_json(m) for m in data["modules"]],
            Node.from_json(data["output"]),
            {k: Node.from_json(v) for k, v in data.get("macro", {}).items()},
            int(data.get("next_layer_id", 0)),
            float(data.get("width", 1.0)),
        )
        return genome.assign_ids()

    def partition_bounds(self) -> Bounds:
        """Dynamic bounds of the partition point: 0 .. L-1 (0 .. 0 when there is no hidden layer)."""
        return {PARTITION_PARAM: (0, max(self.layer_count - 1, 0))}

    def describe(self, grammar: Grammar) -> list[str]:
        """One line per hidden layer, then the output layer: for tables and logs."""
        lines = []
        for module in self.modules:
            for i, layer in enumerate(module.layers):
                spec = grammar.decode(layer)
                kind = spec.pop("layer", "?")
                extra = f" <- {module.connections[i]}" if module.connections[i] != [i - 1] else ""
                args = ", ".join(f"{k}={_short(v)}" for k, v in spec.items())
                lines.append(f"{module.type}: {kind}({args}){extra}")
        if self.width != 1:  # the genes above are the searched widths
            lines.append(f"width: {self.width:g}x every hidden layer's channels and units")
        return lines


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def chain_connections(count: int, levels_back: int, rng: np.random.Generator) -> list[list[int]]:
    """Each layer reads the previous one, plus a random subset of earlier ones within ``levels_back``."""
    connections = []
    for i in range(count):
        extra = list(range(max(-1, i - levels_back), i - 1))
        k = int(rng.integers(len(extra) + 1)) if extra else 0
        chosen = sorted(int(c) for c in rng.choice(extra, size=k, replace=False)) if k else []
        connections.append([i - 1, *chosen])
    return connections


def random_module(
    grammar: Grammar, spec: ModuleConfig, reuse_layer: float, rng: np.random.Generator
) -> Module:
    count = int(rng.choice(spec.network_structure_init))
    layers: list[Node] = []
    for _ in range(count):
        if layers and rng.random() < reuse_layer:
            layers.append(layers[int(rng.integers(len(layers)))].copy())
        else:
            layers.append(grammar.sample(spec.name, rng))
    return Module(spec.name, layers, chain_connections(count, spec.levels_back, rng))


def random_genome(grammar: Grammar, network: NetworkConfig, rng: np.random.Generator) -> Genome:
    modules = [random_module(grammar, spec, network.reuse_layer, rng) for spec in network.modules]
    genome = Genome(modules, grammar.sample(network.output, rng), {})
    for rule in network.macro_structure:
        genome.macro[rule] = grammar.sample(rule, rng, genome.partition_bounds())
    return genome.assign_ids()


def check_network_against_grammar(grammar: Grammar, network: NetworkConfig) -> list[str]:
    """Problems that make a network config unusable with a grammar: rule names that do not exist, layers
    that cannot be built (see ``evowatt.representation.layers``), an unusable learning rule. One line each."""
    problems = []
    needed = [(m.name, "network.modules name") for m in network.modules]
    needed += [
        (network.output, "network.output"),
        *[(r, "network.macro_structure") for r in network.macro_structure],
    ]
    for name, key in needed:
        if name not in grammar:
            problems.append(
                f"{key} '{name}' is not a rule of {grammar.source} (rules: {', '.join(grammar.rules)})"
            )
    if problems:
        return problems
    from evowatt.representation.layers import (
        check_dynamic_bounds,
        check_layer_rule,
        check_learning_rule,
        check_output_rule,
    )

    for module in dict.fromkeys(m.name for m in network.modules):
        problems += check_dynamic_bounds(grammar, module)
        problems += check_layer_rule(grammar, module)
    problems += check_dynamic_bounds(grammar, network.output)
    problems += check_output_rule(grammar, network.output)
    for rule in network.macro_structure:
        problems += check_dynamic_bounds(grammar, rule, allowed=(PARTITION_PARAM,))
    if "learning" in network.macro_structure:
        problems += check_learning_rule(grammar, "learning")
    return list(dict.fromkeys(problems))
