"""Lamarckian weight inheritance: a child network starts from its parent's trained weights where it can.

Layers are matched by their stable id (``Node.id``, see genome.py), not by position, so inserting or
removing a layer elsewhere does not break the match. A layer is inherited whole or not at all: every
tensor of it (weights, bias, batch-norm statistics) must exist in the parent's layer with the same name
and shape; otherwise the layer keeps its fresh initialisation. A tensor of the wrong shape is never
loaded. The output layer is matched as ``"output"``; the early-exit head as ``"exit_head"`` when both
networks attach it to the same layer id.

``inherit_weights`` only decides which tensors load and copies them; where the parent's weights come
from (a file, bytes in the task) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from evowatt.representation.genome import PARTITION_PARAM, PARTITION_RULE, Genome
from evowatt.representation.grammar import Grammar

LayerKey = int | str  # a hidden layer's id, or "output" / "exit_head"


@dataclass
class Inheritance:
    inherited: list[LayerKey] = field(default_factory=list)  # layers whose every tensor was copied
    fresh: list[LayerKey] = field(default_factory=list)  # layers left at their fresh initialisation
    # each copied tensor's name in the child -> its name in the parent (whose optimiser state may follow)
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self, source: int | None) -> dict:
        return {"from": source, "layers": list(self.inherited), "fresh": list(self.fresh)}


def _groups(
    state: dict[str, torch.Tensor], ids: list[int | None]
) -> dict[LayerKey, dict[str, tuple[str, torch.Tensor]]]:
    """A network's state dict by layer key (``layers.<index>.rest`` under the layer's id): each tensor
    by the rest of its name, with its full name beside it."""
    groups: dict[LayerKey, dict[str, tuple[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        head, _, rest = name.partition(".")
        if head == "layers":
            index, _, rest = rest.partition(".")
            key: LayerKey = ids[int(index)]  # type: ignore[assignment]
        else:
            key = head  # output, exit_head
        groups.setdefault(key, {})[rest] = (name, tensor)
    return groups


def exit_layer_id(genome: Genome, grammar: Grammar | None) -> int | None:
    """The id of the layer the early-exit head reads (None without a partition point)."""
    ids = genome.layer_ids()
    if grammar is None or PARTITION_RULE not in genome.macro or not ids:
        return None
    point = int(grammar.decode(genome.macro[PARTITION_RULE]).get(PARTITION_PARAM, 0))
    return ids[min(max(point, 0), len(ids) - 1)]


def inherit_weights(
    parent_genome: Genome,
    parent_state: dict[str, torch.Tensor],
    child_genome: Genome,
    child: nn.Module,
    grammar: Grammar | None = None,
) -> Inheritance:
    """Copy into ``child`` the tensors of every layer it shares with the parent (same id, same shapes)."""
    parent_ids, child_ids = parent_genome.layer_ids(), child_genome.layer_ids()
    if None in parent_ids or None in child_ids:
        raise ValueError("every layer needs an id before weights can be inherited (Genome.assign_ids)")
    if len(set(child_ids)) != len(child_ids):
        raise ValueError(f"layer ids repeat within the child genome: {child_ids}")
    theirs = _groups(parent_state, parent_ids)
    ours = _groups(child.state_dict(), child_ids)
    same_exit = exit_layer_id(parent_genome, grammar) == exit_layer_id(child_genome, grammar)
    outcome = Inheritance()
    for key, tensors in ours.items():
        source = theirs.get(key)
        usable = (
            source is not None
            and (key != "exit_head" or same_exit)
            and source.keys() == tensors.keys()
            and all(
                source[rest][1].shape == t.shape and source[rest][1].dtype == t.dtype
                for rest, (_, t) in tensors.items()
            )
        )
        if not usable:
            outcome.fresh.append(key)
            continue
        with torch.no_grad():
            for rest, (name, tensor) in tensors.items():
                origin, value = source[rest]  # type: ignore[index]
                tensor.copy_(value)  # state_dict tensors share storage with the module's
                outcome.sources[name] = origin
        outcome.inherited.append(key)
    # parameterless layers (pooling, dropout) have nothing to copy: inherited when the parent has the id
    for key in child_ids:
        if key not in ours and key not in outcome.fresh:
            (outcome.inherited if key in parent_ids else outcome.fresh).append(key)
    outcome.inherited.sort(key=_order)
    outcome.fresh.sort(key=_order)
    return outcome


def _order(key: LayerKey) -> tuple[int, int | str]:
    return (0, key) if isinstance(key, int) else (1, key)
