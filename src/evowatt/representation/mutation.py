"""Every mutation of a genome, with ENERGIZE's rates (configurable), drawing from the run's generator.

``mutate`` returns the child and the list of mutations applied; ``train_longer`` means the child is the
parent unchanged and continues training from the parent's weights instead of starting from scratch.

Layer ids (see genome.py): unchanged layers keep theirs; an added layer (a copy too), a layer a DSGE
mutation changed and every layer of a reused module get new ones, numbered once the mutation is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evowatt.config.network import ModuleConfig, MutationConfig, NetworkConfig
from evowatt.representation.genome import PARTITION_PARAM, PARTITION_RULE, Genome, Module
from evowatt.representation.grammar import Grammar

# Draws a module of one of the given types (or None) from a module archive; the archive owns its bias.
ModuleSampler = Callable[[list[str], np.random.Generator], Module | None]


@dataclass
class MutationOutcome:
    genome: Genome
    applied: list[str] = field(default_factory=list)
    train_longer: bool = False


def normalise_connections(connections: list[list[int]], levels_back: int) -> list[list[int]]:
    """Keep every layer reading its predecessor; drop inputs outside the levels_back window."""
    fixed = []
    for i, inputs in enumerate(connections):
        extra = sorted({c for c in inputs if max(-1, i - levels_back) <= c < i - 1})
        fixed.append([i - 1, *extra])
    return fixed


def insert_layer(module: Module, position: int, layer, levels_back: int) -> None:
    shifted = [[c + 1 if c >= position else c for c in inputs] for inputs in module.connections]
    shifted.insert(position, [position - 1])
    module.layers.insert(position, layer)
    module.connections = normalise_connections(shifted, levels_back)


def remove_layer(module: Module, position: int, levels_back: int) -> None:
    del module.layers[position]
    del module.connections[position]
    rewired = [[c - 1 if c >= position else c for c in inputs] for inputs in module.connections]
    module.connections = normalise_connections(rewired, levels_back)


class Mutator:
    """Applies the configured mutations; owns no state beyond its configuration."""

    def __init__(self, grammar: Grammar, network: NetworkConfig, rates: MutationConfig):
        self.grammar = grammar
        self.network = network
        self.rates = rates
        self.specs: dict[str, ModuleConfig] = {m.name: m for m in network.modules}
        self.order: dict[str, int] = {m.name: i for i, m in enumerate(network.modules)}

    def mutate(
        self, parent: Genome, rng: np.random.Generator, reuse_sampler: ModuleSampler | None = None
    ) -> MutationOutcome:
        if rng.random() < self.rates.train_longer:
            return MutationOutcome(parent.copy(), ["train_longer"], train_longer=True)
        genome = parent.copy()
        applied: list[str] = []
        layers_before = genome.layer_count
        if rng.random() < self.rates.reuse_module:
            applied += self.reuse_module(genome, rng, reuse_sampler)
        if rng.random() < self.rates.remove_module:
            applied += self.remove_module(genome, rng)
        for index, module in enumerate(genome.modules):
            applied += self._mutate_module(index, module, rng)
        for rule, node in genome.macro.items():
            if rule != PARTITION_RULE and rng.random() < self.rates.macro_layer:
                genome.macro[rule] = self.grammar.mutate(node, rng)
                applied.append(f"macro_layer({rule})")
        if PARTITION_RULE in genome.macro:
            bounds = genome.partition_bounds()
            node = genome.macro[PARTITION_RULE]
            if genome.layer_count != layers_before:
                genome.macro[PARTITION_RULE] = self.grammar.resample_parameter(
                    node, PARTITION_PARAM, rng, bounds
                )
                applied.append("partition_point(resampled)")
            elif rng.random() < self.rates.macro_layer:
                genome.macro[PARTITION_RULE] = self.grammar.mutate(node, rng, bounds)
                applied.append(f"macro_layer({PARTITION_RULE})")
        return MutationOutcome(genome.assign_ids(), applied)

    def _mutate_module(self, index: int, module: Module, rng: np.random.Generator) -> list[str]:
        spec = self.specs[module.type]
        low, high = spec.network_structure
        applied = []
        for _ in range(int(rng.integers(1, 3))):
            if len(module.layers) < high and rng.random() < self.rates.add_layer:
                position = int(rng.integers(len(module.layers) + 1))
                if module.layers and rng.random() < self.rates.reuse_layer:
                    layer = module.layers[int(rng.integers(len(module.layers)))].copy()
                    layer.id = None  # a copy is a new layer: it has weights of its own
                    applied.append(f"add_layer(module {index}, at {position}, copy)")
                else:
                    layer = self.grammar.sample(module.type, rng)
                    applied.append(f"add_layer(module {index}, at {position})")
                insert_layer(module, position, layer, spec.levels_back)
        for _ in range(int(rng.integers(1, 3))):
            if len(module.layers) > low and rng.random() < self.rates.remove_layer:
                position = int(rng.integers(len(module.layers)))
                remove_layer(module, position, spec.levels_back)
                applied.append(f"remove_layer(module {index}, at {position})")
        for i in range(len(module.layers)):
            if rng.random() < self.rates.dsge_layer:
                before = module.layers[i]
                module.layers[i] = self.grammar.mutate(before, rng)
                module.layers[i].id = before.id if module.layers[i].same_derivation(before) else None
                applied.append(f"dsge_layer(module {index}, layer {i})")
            if rng.random() < self.rates.add_connection:
                choices = [
                    c for c in range(max(-1, i - spec.levels_back), i - 1) if c not in module.connections[i]
                ]
                if choices:
                    module.connections[i] = sorted([*module.connections[i], int(rng.choice(choices))])
                    module.connections[i] = normalise_connections(module.connections, spec.levels_back)[i]
                    applied.append(f"add_connection(module {index}, layer {i})")
            if rng.random() < self.rates.remove_connection and len(module.connections[i]) > 1:
                removable = module.connections[i][1:]
                module.connections[i].remove(int(rng.choice(removable)))
                applied.append(f"remove_connection(module {index}, layer {i})")
        return applied

    def valid_positions(self, genome: Genome, module_type: str) -> list[int]:
        """Insert positions keeping module types in configured order (features never after classification)."""
        rank = self.order[module_type]
        ranks = [self.order[m.type] for m in genome.modules]
        return [
            p
            for p in range(len(ranks) + 1)
            if (p == 0 or ranks[p - 1] <= rank) and (p == len(ranks) or rank <= ranks[p])
        ]

    def reuse_module(
        self, genome: Genome, rng: np.random.Generator, sampler: ModuleSampler | None
    ) -> list[str]:
        """Insert a copy of an archived module; a no-op without an archive or when it is empty."""
        if sampler is None:
            return []
        module = sampler(list(self.order), rng)
        if module is None:
            return []
        positions = self.valid_positions(genome, module.type)
        position = int(rng.choice(positions))
        inserted = module.copy()
        for layer in inserted.layers:
            layer.id = None  # archived layers are new to this genome
        genome.modules.insert(position, inserted)
        return [f"reuse_module({module.type}, at {position})"]

    def remove_module(self, genome: Genome, rng: np.random.Generator) -> list[str]:
        """Remove a module, never the last one of its configured type."""
        counts: dict[str, int] = {}
        for m in genome.modules:
            counts[m.type] = counts.get(m.type, 0) + 1
        removable = [i for i, m in enumerate(genome.modules) if counts[m.type] > 1]
        if not removable:
            return []
        index = int(rng.choice(removable))
        removed = genome.modules.pop(index)
        return [f"remove_module({removed.type}, at {index})"]
