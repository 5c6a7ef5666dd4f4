"""Genome -> torch.nn.Module.

Shapes, parameter and FLOP counts are worked out first, in plain Python (``plan_network``): a genome
that cannot become a network (a spatial size below 1) or exceeds the caps is rejected with its reason
before a single weight is allocated. ``build_network`` then allocates the planned layers.

Choices that differ from the reference code, on purpose:
- the output rule's ``act:softmax`` is dropped: the network returns logits and trains with
  cross-entropy on them (the reference applies softmax twice); the output width is the class count;
- ``padding:same`` follows TensorFlow (output = ceil(size / stride), extra padding on the bottom/right),
  since the grammars come from a Keras lineage; max pooling pads with -inf, average pooling with zeros;
- several inputs are merged by sum, each reconciled to the first input's shape: spatial size by
  adaptive average pooling, channels (or features) by zero-padding or truncation — no new weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evowatt.nn.seeding import seeded
from evowatt.representation.genome import PARTITION_PARAM, PARTITION_RULE, Genome
from evowatt.representation.grammar import Grammar

Shape = tuple[int, ...]  # (C, H, W) for images, (F,) for vectors; batch excluded


class InvalidNetwork(Exception):
    """A genome that cannot become a network, or exceeds a cap; the message is the recorded reason."""


@dataclass
class LayerPlan:
    kind: str
    spec: dict[str, Any]
    inputs: list[int]  # global layer indices; -1 is the network input
    in_shape: Shape
    out_shape: Shape
    params: int
    flops: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom


@dataclass
class NetworkPlan:
    input_shape: Shape
    num_classes: int
    layers: list[LayerPlan]  # hidden layers in layer-index order
    output: LayerPlan
    input_shapes: list[list[Shape]] = field(default_factory=list)  # per layer, the shapes before merging
    exit_layer: int | None = None  # the partition point: an extra head reads this hidden layer
    exit_head: LayerPlan | None = None

    @property
    def params(self) -> int:
        """Of model 0, the full network (the extra head excluded)."""
        return sum(p.params for p in self.layers) + self.output.params

    @property
    def flops(self) -> int:
        return sum(p.flops for p in self.layers) + self.output.flops

    def ancestors(self, index: int) -> list[int]:
        """The hidden layers that layer ``index`` depends on, itself included, in index order."""
        needed, stack = set(), [index]
        while stack:
            i = stack.pop()
            if i >= 0 and i not in needed:
                needed.add(i)
                stack.extend(self.layers[i].inputs)
        return sorted(needed)

    @property
    def partition_params(self) -> int | None:
        """Of model 1: the layers the partition point depends on, plus the extra head."""
        if self.exit_layer is None or self.exit_head is None:
            return None
        return sum(self.layers[i].params for i in self.ancestors(self.exit_layer)) + self.exit_head.params

    @property
    def partition_flops(self) -> int | None:
        if self.exit_layer is None or self.exit_head is None:
            return None
        return sum(self.layers[i].flops for i in self.ancestors(self.exit_layer)) + self.exit_head.flops


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _spatial(
    shape: Shape, kernel: int, stride: int, padding: str
) -> tuple[int, int, tuple[int, int, int, int]]:
    _, h, w = shape
    if padding == "same":
        oh, top, bottom = _same_pad(h, kernel, stride)
        ow, left, right = _same_pad(w, kernel, stride)
        return oh, ow, (left, right, top, bottom)
    return (h - kernel) // stride + 1, (w - kernel) // stride + 1, (0, 0, 0, 0)


def _activation_flops(act: str, numel: int) -> int:
    return {"relu": numel, "sigmoid": 4 * numel}.get(act, 0)


CONV_BN_MIN, CONV_BN_MAX = 16, 256  # a conv_bn block's width bounds


def conv_bn_channels(c_in: int, widen: float) -> int:
    """A conv_bn block's width: its input's times ``widen``, rounded up to a multiple of 8, in 16 .. 256."""
    wanted = math.ceil(c_in * float(widen) / 8) * 8
    return min(max(wanted, CONV_BN_MIN), CONV_BN_MAX)


def _check_choices(kind: str, spec: dict[str, Any], where: str) -> None:
    """Reject unknown padding or activation values here, before any weight is allocated."""
    if kind in ("conv", "conv_bn") or kind.startswith("pool"):
        padding = str(spec.get("padding", "valid"))
        if padding not in ("same", "valid"):
            raise InvalidNetwork(f"{where}: unknown padding '{padding}'; expected same or valid")
    if kind in ("conv", "conv_bn", "fc"):
        act = str(spec.get("act", "linear"))
        if act not in _ACTIVATIONS:
            allowed = ", ".join(_ACTIVATIONS)
            raise InvalidNetwork(f"{where}: unknown activation '{act}'; expected one of {allowed}")


def _positive(spec: dict[str, Any], key: str, where: str) -> int:
    """An integer field a layer kind needs (a hand-edited genome or grammar may lack it or break it)."""
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "missing" if value is None else f"{value!r}"
        raise InvalidNetwork(f"{where}: {key} is {what}; it must be an integer >= 1")
    return value


_NEEDED = {
    "conv": ("out_channels", "kernel_size", "stride"),
    "conv_bn": ("kernel_size", "stride"),
    "pool": ("kernel_size", "stride"),
    "fc": ("out_features",),
    "output": ("out_features",),
}


def plan_layer(
    kind: str, spec: dict[str, Any], shape: Shape, index: int, channels: int | None = None
) -> LayerPlan:
    """One layer's plan; ``channels`` replaces the output channels or units of a conv, conv_bn or fc
    layer (a widened genome's)."""
    where = f"layer {index} ({kind})"
    _check_choices(kind, spec, where)
    for key in _NEEDED.get("pool" if kind.startswith("pool") else kind, ()):
        _positive(spec, key, where)
    if kind == "global_avg_pool":  # on a vector (after a dense layer) it is the identity
        out = (shape[0],)
        return LayerPlan(kind, spec, [], shape, out, 0, _numel(shape) if len(shape) == 3 else 0)
    if kind == "conv_bn":
        widen = spec.get("widen", 1.0)
        if isinstance(widen, bool) or not isinstance(widen, (int, float)) or not 0 < widen < math.inf:
            raise InvalidNetwork(f"{where}: widen is {widen!r}; it must be a number above 0")
    if kind in ("conv", "conv_bn") or kind.startswith("pool"):
        if len(shape) != 3:
            raise InvalidNetwork(f"{where} needs an image input but receives a vector of {shape[0]} features")
        kernel, stride = int(spec["kernel_size"]), int(spec["stride"])
        oh, ow, pad = _spatial(shape, kernel, stride, str(spec.get("padding", "valid")))
        if oh < 1 or ow < 1:
            raise InvalidNetwork(
                f"{where}: kernel {kernel} stride {stride} {spec.get('padding')} padding on a "
                f"{shape[1]}x{shape[2]} input gives spatial size {oh}x{ow} (below 1)"
            )
        if kind == "conv":
            c_in, c_out, bias = shape[0], channels or int(spec["out_channels"]), bool(spec.get("bias", True))
            out = (c_out, oh, ow)
            params = kernel * kernel * c_in * c_out + (c_out if bias else 0)
            flops = 2 * kernel * kernel * c_in * _numel(out) + (_numel(out) if bias else 0)
            flops += _activation_flops(str(spec.get("act", "linear")), _numel(out))
            return LayerPlan(kind, spec, [], shape, out, params, flops, pad)
        if kind == "conv_bn":  # convolution without bias, batch norm, activation: one block
            c_in = shape[0]
            c_out = channels or conv_bn_channels(c_in, float(spec.get("widen", 1.0)))
            out = (c_out, oh, ow)
            params = kernel * kernel * c_in * c_out + 2 * c_out
            flops = 2 * kernel * kernel * c_in * _numel(out) + 2 * _numel(out)
            flops += _activation_flops(str(spec.get("act", "relu")), _numel(out))
            return LayerPlan(kind, spec, [], shape, out, params, flops, pad)
        if kind not in ("pool_max", "pool_avg"):
            raise InvalidNetwork(f"{where}: unknown pooling '{kind}'; expected pool_max or pool_avg")
        out = (shape[0], oh, ow)
        return LayerPlan(kind, spec, [], shape, out, 0, kernel * kernel * _numel(out), pad)
    if kind == "batch_norm":
        channels = shape[0]
        return LayerPlan(kind, spec, [], shape, shape, 2 * channels, 2 * _numel(shape))
    if kind == "dropout":
        rate = spec.get("rate", 0.5)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise InvalidNetwork(f"{where}: dropout rate {rate} outside [0, 1)")
        return LayerPlan(kind, spec, [], shape, shape, 0, 0)
    if kind in ("fc", "output"):
        f_in, f_out, bias = _numel(shape), channels or int(spec["out_features"]), bool(spec.get("bias", True))
        params = f_in * f_out + (f_out if bias else 0)
        flops = 2 * f_in * f_out + (f_out if bias else 0)
        if kind == "fc":
            flops += _activation_flops(str(spec.get("act", "linear")), f_out)
        return LayerPlan(kind, spec, [], shape, (f_out,), params, flops)
    raise InvalidNetwork(f"{where}: unknown layer type '{kind}'")


def _merged_shape(shapes: list[Shape]) -> Shape:
    """Inputs are reconciled to the first one; a vector among them makes the merge a vector merge."""
    first = shapes[0]
    if len(shapes) > 1 and any(len(s) == 1 for s in shapes):
        return (_numel(first),)
    return first


def plan_network(
    genome: Genome,
    grammar: Grammar,
    input_shape: Shape,
    num_classes: int,
    max_params: int | None = None,
    max_flops: int | None = None,
    partition: bool = True,
) -> NetworkPlan:
    """Shapes, parameters and FLOPs of every layer, or InvalidNetwork with the reason.

    With a ``model_partition`` macro gene and at least one hidden layer, an extra head (flatten + linear to
    the classes) is planned on the partition point; the parameter cap counts it, since it is trained.
    """
    widths = _widened_channels(genome, grammar, input_shape, num_classes)
    layers: list[LayerPlan] = []
    input_shapes: list[list[Shape]] = []
    shapes: dict[int, Shape] = {-1: tuple(input_shape)}
    module_input = -1
    for module in genome.modules:
        base = len(layers)
        for i, node in enumerate(module.layers):
            spec = grammar.decode(node)
            inputs = [base + c if c >= 0 else module_input for c in module.connections[i]]
            in_shapes = [shapes[j] for j in inputs]
            plan = plan_layer(
                str(spec.get("layer")), spec, _merged_shape(in_shapes), base + i, widths.get(base + i)
            )
            plan.inputs = inputs
            shapes[base + i] = plan.out_shape
            layers.append(plan)
            input_shapes.append(in_shapes)
        if module.layers:
            module_input = len(layers) - 1
    out_spec = dict(grammar.decode(genome.output))
    out_spec["out_features"] = num_classes
    output = plan_layer("output", out_spec, shapes[module_input], len(layers))
    output.inputs = [module_input]
    plan = NetworkPlan(tuple(input_shape), num_classes, layers, output, input_shapes)
    if partition and PARTITION_RULE in genome.macro and layers:
        point = int(grammar.decode(genome.macro[PARTITION_RULE]).get(PARTITION_PARAM, 0))
        plan.exit_layer = min(max(point, 0), len(layers) - 1)
        plan.exit_head = plan_layer("output", out_spec, layers[plan.exit_layer].out_shape, len(layers))
        plan.exit_head.inputs = [plan.exit_layer]
    trained_params = plan.params + (plan.exit_head.params if plan.exit_head else 0)
    if max_params is not None and trained_params > max_params:
        raise InvalidNetwork(
            f"{trained_params:,} parameters exceed the cap of {max_params:,} (search.caps.max_params)"
        )
    if max_flops is not None and plan.flops > max_flops:
        raise InvalidNetwork(
            f"{plan.flops:,} FLOPs per inference exceed the cap of {max_flops:,} (search.caps.max_flops)"
        )
    return plan


def _widened_channels(
    genome: Genome, grammar: Grammar, input_shape: Shape, num_classes: int
) -> dict[int, int]:
    """A widened genome's output channels (units) per layer index: those of the genome at width 1 times
    the width, rounded (conv_bn up to its multiple of 8, without its 256 cap); empty at width 1."""
    width = genome.width
    if not 0 < width < math.inf:  # NaN fails too
        raise InvalidNetwork(f"width is {width!r}; it must be a number above 0")
    if width == 1:
        return {}
    narrow = genome.copy()
    narrow.width = 1.0
    plan = plan_network(narrow, grammar, input_shape, num_classes, partition=False)
    channels = {}
    for index, layer in enumerate(plan.layers):
        if layer.kind == "conv_bn":
            channels[index] = math.ceil(layer.out_shape[0] * width / 8) * 8
        elif layer.kind in ("conv", "fc"):
            channels[index] = max(1, round(layer.out_shape[0] * width))
    return channels


_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


def _activation(spec: dict[str, Any]) -> nn.Module:
    act = str(spec.get("act", "linear"))
    if act not in _ACTIVATIONS:
        raise InvalidNetwork(f"unknown activation '{act}'; expected one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[act]()


def _padding(pad: tuple[int, int, int, int], value: float) -> list[nn.Module]:
    return [nn.ConstantPad2d(pad, value)] if any(pad) else []


def _convolution(plan: LayerPlan, bias: bool) -> list[nn.Module]:
    """A convolution with "same"-style padding: built in when symmetric, else an explicit pad before it."""
    left, right, top, bottom = plan.pad
    symmetric = left == right and top == bottom
    conv = nn.Conv2d(
        plan.in_shape[0],
        plan.out_shape[0],
        int(plan.spec["kernel_size"]),
        int(plan.spec["stride"]),
        padding=(top, left) if symmetric else 0,
        bias=bias,
    )
    return [conv] if symmetric else [*_padding(plan.pad, 0.0), conv]


def make_layer(plan: LayerPlan) -> nn.Module:
    spec = plan.spec
    if plan.kind == "conv_bn":
        return nn.Sequential(
            *_convolution(plan, bias=False),
            nn.BatchNorm2d(plan.out_shape[0]),
            _activation({"act": spec.get("act", "relu")}),
        )
    if plan.kind == "global_avg_pool":
        if len(plan.in_shape) != 3:
            return nn.Identity()
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if plan.kind == "conv":
        return nn.Sequential(*_convolution(plan, bias=bool(spec.get("bias", True))), _activation(spec))
    if plan.kind == "pool_max":
        pool = nn.MaxPool2d(int(spec["kernel_size"]), int(spec["stride"]))
        return nn.Sequential(*_padding(plan.pad, -math.inf), pool)
    if plan.kind == "pool_avg":
        pool = nn.AvgPool2d(int(spec["kernel_size"]), int(spec["stride"]))
        return nn.Sequential(*_padding(plan.pad, 0.0), pool)
    if plan.kind == "batch_norm":
        norm = nn.BatchNorm2d if len(plan.in_shape) == 3 else nn.BatchNorm1d
        return norm(plan.in_shape[0])
    if plan.kind == "dropout":
        return nn.Dropout(float(spec.get("rate", 0.5)))
    flatten = [nn.Flatten()] if len(plan.in_shape) > 1 else []
    linear = nn.Linear(_numel(plan.in_shape), plan.out_shape[0], bias=bool(spec.get("bias", True)))
    if plan.kind == "output":
        return nn.Sequential(*flatten, linear)
    return nn.Sequential(*flatten, linear, _activation(spec))


def reconcile(x: torch.Tensor, target: Shape) -> torch.Tensor:
    """Bring one merge input to the target shape without weights (pool / pad / truncate)."""
    if len(target) == 1:
        x = x.flatten(1)
        size = x.shape[1]
        return F.pad(x, (0, target[0] - size)) if size < target[0] else x[:, : target[0]]
    if x.dim() != 4:
        raise RuntimeError("a vector cannot be merged into an image")
    if tuple(x.shape[2:]) != tuple(target[1:]):
        x = F.adaptive_avg_pool2d(x, target[1:])
    channels = x.shape[1]
    if channels < target[0]:
        x = F.pad(x, (0, 0, 0, 0, 0, target[0] - channels))
    elif channels > target[0]:
        x = x[:, : target[0]]
    return x


class Network(nn.Module):
    """Hidden layers run in layer-index order; a plain chain takes the fast path of one call per layer.

    ``forward`` is model 0 (the full network). With a partition point, ``forward_both`` also returns the
    extra head's logits, for training both models in one step.
    """

    def __init__(self, plan: NetworkPlan):
        super().__init__()
        self.layers = nn.ModuleList(make_layer(p) for p in plan.layers)
        self.output = make_layer(plan.output)
        self.inputs: list[list[int]] = [list(p.inputs) for p in plan.layers]
        self.merge_shapes: list[Shape] = [_merged_shape(shapes) for shapes in plan.input_shapes]
        self.output_input = plan.output.inputs[0]
        self.is_chain = all(inputs == [i - 1] for i, inputs in enumerate(self.inputs)) and (
            self.output_input == len(self.inputs) - 1
        )
        self.exit_layer = plan.exit_layer
        self.exit_head = make_layer(plan.exit_head) if plan.exit_head is not None else None

    def hidden(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of hidden layers 0..upto (all when None)."""
        last = len(self.layers) - 1 if upto is None else upto
        outs: list[torch.Tensor] = []
        for i in range(last + 1):
            outs.append(self.layers[i](_layer_input(x, outs, self.inputs[i], self.merge_shapes[i])))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_chain:
            for layer in self.layers:
                x = layer(x)
            return self.output(x)
        outs = self.hidden(x)
        return self.output(x if self.output_input < 0 else outs[self.output_input])

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(full model logits, early-exit logits), sharing layers 0..partition point."""
        if self.exit_head is None or self.exit_layer is None:
            raise RuntimeError("this network has no partition point")
        outs = self.hidden(x)
        main = self.output(x if self.output_input < 0 else outs[self.output_input])
        return main, self.exit_head(outs[self.exit_layer])


def _layer_input(x: torch.Tensor, outs, inputs: list[int], merge_shape: Shape) -> torch.Tensor:
    if len(inputs) == 1:
        return x if inputs[0] < 0 else outs[inputs[0]]
    return sum(reconcile(x if j < 0 else outs[j], merge_shape) for j in inputs)


class SubNetwork(nn.Module):
    """Some hidden layers of a network as a standalone model (copies): ``source``'s output is its input."""

    def __init__(self, network: Network, order: list[int], source: int = -1, head: nn.Module | None = None):
        super().__init__()
        self.order = list(order)
        self.source = source
        self.layers = nn.ModuleDict({str(i): copy.deepcopy(network.layers[i]) for i in self.order})
        self.inputs = {i: [-1 if j == source else j for j in network.inputs[i]] for i in self.order}
        self.merge_shapes = {i: network.merge_shapes[i] for i in self.order}
        self.head = copy.deepcopy(head) if head is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: dict[int, torch.Tensor] = {}
        for i in self.order:
            outs[i] = self.layers[str(i)](_layer_input(x, outs, self.inputs[i], self.merge_shapes[i]))
        out = outs[self.order[-1]]
        return self.head(out) if self.head is not None else out


class EarlyExit(SubNetwork):
    """Model 1: only the layers the partition point depends on, then the extra head."""

    def __init__(self, network: Network, plan: NetworkPlan):
        if network.exit_head is None or plan.exit_layer is None:
            raise ValueError("the network has no partition point")
        super().__init__(network, plan.ancestors(plan.exit_layer), -1, network.exit_head)


def module_network(
    network: Network, plan: NetworkPlan, genome: Genome, index: int
) -> tuple[SubNetwork | None, Shape | None]:
    """Module ``index`` alone, with the input shape it receives in this network; (None, None) if empty."""
    start = sum(len(m.layers) for m in genome.modules[:index])
    count = len(genome.modules[index].layers)
    if count == 0:
        return None, None
    source = start - 1  # the last layer before this module feeds it (-1: the network input)
    shape = plan.layers[source].out_shape if source >= 0 else plan.input_shape
    return SubNetwork(network, list(range(start, start + count)), source), shape


def extract_models(network: Network, plan: NetworkPlan) -> tuple[Network, EarlyExit | None]:
    """Standalone model 0 (the full network without the extra head) and model 1 (None without a partition)."""
    full = copy.deepcopy(network)
    full.exit_head, full.exit_layer = None, None
    early = EarlyExit(network, plan) if network.exit_head is not None else None
    return full, early


def build_network(plan: NetworkPlan, seed: int) -> Network:
    """Allocate the planned layers; weights come from ``seed``; the global CPU RNG is left as it was.

    Under ``with torch.device("meta"):`` nothing is allocated: shapes and parameter counts only.
    """
    with seeded(seed):
        return Network(plan)
