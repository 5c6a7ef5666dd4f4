"""An optimiser's per-parameter state (Adam's moments, RMSprop's square average, SGD's momentum) by
parameter name, so that a training continued later resumes its optimiser instead of restarting it.

A continued training that builds a fresh optimiser starts over on trained weights: Adam's first
bias-corrected steps move every weight by about the learning rate, RMSprop's (no bias correction)
by several times it, and momentum is lost. Kept beside the weights (safetensors, no pickle), the
state travels in the task like the weights do and is restored only where it belongs: the same
optimiser kind and, for every parameter, a source parameter of the same shape (an inheriting mutant
passes the names of the tensors it inherited; its fresh layers start with no state).
"""

from __future__ import annotations

import torch
from torch import nn

SEPARATOR = ":"  # kind:parameter:key; parameter names hold dots, never colons


def _indexed(optimiser: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    """The parameter names by their index in ``optimiser.state_dict()`` (groups in order)."""
    names = {id(p): name for name, p in model.named_parameters()}
    out: dict[int, str] = {}
    index = 0
    for group in optimiser.param_groups:
        for p in group["params"]:
            out[index] = names[id(p)]
            index += 1
    return out


def optimiser_tensors(
    optimiser: torch.optim.Optimizer, model: nn.Module, kind: str
) -> dict[str, torch.Tensor]:
    """The optimiser's state as named CPU tensors (``kind:parameter:key``); empty before its first step."""
    names = _indexed(optimiser, model)
    out: dict[str, torch.Tensor] = {}
    for index, entry in optimiser.state_dict()["state"].items():
        for key, value in entry.items():
            if value is None:
                continue
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            out[SEPARATOR.join((kind, names[index], key))] = tensor.detach().cpu().contiguous().clone()
    return out


def restore_optimiser(
    optimiser: torch.optim.Optimizer,
    model: nn.Module,
    kind: str,
    tensors: dict[str, torch.Tensor],
    sources: dict[str, str] | None = None,
) -> list[str]:
    """Load the state ``tensors`` hold into a fresh ``optimiser``; returns the parameters restored.

    ``sources`` maps a parameter's name to the name it had where the state came from (an inheriting
    child's layers sit at other positions); None: the same network, every name its own. A parameter
    keeps a fresh state when the state is another optimiser kind's, or any of its tensors but the step
    count differs from the parameter's shape.
    """
    by_parameter: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        found_kind, parameter, key = name.split(SEPARATOR)
        if found_kind == kind:
            by_parameter.setdefault(parameter, {})[key] = tensor
    parameters = dict(model.named_parameters())
    state = optimiser.state_dict()
    restored: list[str] = []
    for index, name in _indexed(optimiser, model).items():
        source = name if sources is None else sources.get(name)
        entry = by_parameter.get(source) if source is not None else None
        if not entry or any(k != "step" and t.shape != parameters[name].shape for k, t in entry.items()):
            continue
        state["state"][index] = dict(entry)
        restored.append(name)
    if restored:
        optimiser.load_state_dict(state)  # torch casts step counts and moments to each parameter's place
    return restored
