"""Per-layer features of one network, the inputs of a calibrated cost predictor.

Why per layer kind: on a small CPU a network's latency is not its FLOPs. A convolution, a ReLU and a
pooling layer each do their arithmetic at a different rate, each call pays a fixed overhead, and small
layers are bound by the bytes they move. So every kind of layer (the torch module class that runs the
operations: ``Conv2d``, ``ReLU``, ``Linear`` ...) gets three features, for one measurement batch:
``<kind>.flops`` (its counted FLOPs), ``<kind>.bytes`` (activation bytes read and written, plus the
parameters read once per batch) and ``<kind>.calls`` (how often a module of that kind runs); ``merge``
is the work a network does outside any module (summing branches), and ``network`` (always 1) is the
fixed cost of one forward pass. A cost is then a non-negative weighted sum of these features.
"""

from __future__ import annotations

from collections import Counter

import torch

from evowatt.energy.estimate import count_model

#: The fixed cost of one forward pass of the batch.
NETWORK_FEATURE = "network"
#: Operations outside any module (the sums that merge branches, reconciling their shapes).
MERGE_KIND = "merge"
PARTS = ("calls", "flops", "bytes")


def _count_calls(model: torch.nn.Module, inputs: torch.Tensor) -> Counter[str]:
    """How many times each kind of module runs in one forward pass (the model itself not counted)."""
    calls: Counter[str] = Counter()
    handles = []
    for name, module in model.named_modules():
        if name:
            kind = type(module).__name__
            handles.append(module.register_forward_pre_hook(lambda *_, kind=kind: calls.update((kind,))))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def network_features(model: torch.nn.Module, sample: torch.Tensor, batch_size: int) -> dict[str, float]:
    """The features of ``model`` for one batch of ``batch_size`` inputs shaped like ``sample`` (one row
    is enough: operations and activation bytes are per input, parameters are read once per batch)."""
    was_training = model.training
    model.eval()
    try:
        calls = _count_calls(model, sample[:1])
        layers, _, _ = count_model(model, sample[:1])
    finally:
        model.train(was_training)
    rows = int(sample[:1].shape[0])
    out: dict[str, float] = {NETWORK_FEATURE: 1.0}
    for kind, n in calls.items():
        out[f"{kind}.calls"] = float(n)
    modules = dict(model.named_modules())
    for name, cost in layers.items():
        kind = type(modules[name]).__name__ if name in modules and name else MERGE_KIND
        scale = batch_size / rows
        out[f"{kind}.flops"] = out.get(f"{kind}.flops", 0.0) + cost.flops * scale
        out[f"{kind}.bytes"] = (
            out.get(f"{kind}.bytes", 0.0) + cost.activation_bytes * scale + cost.param_bytes
        )
    return out


def feature_order(name: str) -> tuple[int, str, int]:
    """A stable order: the network's fixed cost first, then per kind its calls, FLOPs and bytes (a
    feature that only repeats earlier ones is the one dropped, see ``fit.independent_columns``)."""
    if name == NETWORK_FEATURE:
        return (0, "", 0)
    kind, _, part = name.rpartition(".")
    return (1, kind, PARTS.index(part) if part in PARTS else len(PARTS))
