"""Analytical energy estimate: counted operations and memory traffic times per-access energies.

Why an estimate: in a virtual machine no energy counter is readable, yet evolution still needs a cost
that ranks networks. Counted FLOPs ranked measured latency well on a 2-core CPU, but small networks are
dominated by memory traffic, so the estimate counts bytes too. It is deterministic and has no time
base: it gives joules per inference, never watts. Every value it produces is labelled `estimated:model`.

How operations are counted (one forward pass of the measurement batch, divided by the batch size):

* convolutions and matrix products: the formulas of `torch.utils.flop_counter.FlopCounterMode`
  (its `flop_registry`; a multiply-add is 2 FLOPs: one multiplication and one addition), plus one
  addition per output element for a bias, which FlopCounterMode leaves out;
* everything FlopCounterMode leaves at zero, per output element unless said otherwise (see `OP_RULES`):
  ReLU/clamp 1 comparison (an addition); max pooling k-1 comparisons and average pooling k-1
  additions and 1 multiplication for a k-element window; adaptive pooling the same with the window the
  input/output ratio; batch norm in eval 1 multiplication and 1 addition (scale and shift folded, as
  PyTorch's CPU kernel and every inference engine do); element-wise add/sub (the sums that merge
  branches) 1 addition, mul/div 1 multiplication (division priced as a multiplication); mean/sum one
  addition per input element; an exponential or tanh 4 multiplications and 4 additions (a polynomial
  approximation), so sigmoid 5+5 and softmax 7 additions and 5 multiplications per element;
* dropout in eval mode does no work (PyTorch returns its input: no operation reaches the dispatcher);
* views (reshape, flatten, transpose) neither compute nor move data; copies and concatenation move
  data but do not compute.
* any other operation is counted at zero and listed in `EnergyEstimate.uncounted_ops`.

Memory traffic: each parameter or buffer the forward pass reads (BatchNorm running statistics included)
is read once per measurement batch from `params_level` (DRAM by default: weights do not stay on chip
between batches); each operation reads its activation inputs and writes its first output in
`activations_level` (on-chip SRAM by default). Auxiliary outputs such as max-pool indices are training
by-products and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from evowatt.config.energy import EstimateConstants as EstimateConstants  # re-exported
from evowatt.energy.base import METHOD_ESTIMATE, Meter

# ---------------------------------------------------------------------------------------------------
# Operation rules: op name -> (additions, multiplications) per output element, given the op's call.

Rule = Callable[[tuple[Any, ...], torch.Tensor], tuple[float, float]]
_EXP = (4.0, 4.0)  # one exponential / tanh / erf: a degree-4 polynomial in Horner form


def _per_elem(adds: float, mults: float) -> Rule:
    return lambda args, out: (adds * out.numel(), mults * out.numel())


def _window(kernel: Any) -> int:
    sizes = [kernel] if isinstance(kernel, int) else list(kernel)
    return math.prod(int(k) for k in sizes)


def _max_pool(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return (_window(args[1]) - 1) * out.numel(), 0.0


def _avg_pool(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return (_window(args[1]) - 1) * out.numel(), float(out.numel())


def _adaptive_ratio(args: tuple[Any, ...], out: torch.Tensor) -> float:
    return args[0].numel() / max(out.numel(), 1)


def _adaptive_max(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return (_adaptive_ratio(args, out) - 1) * out.numel(), 0.0


def _adaptive_avg(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return (_adaptive_ratio(args, out) - 1) * out.numel(), float(out.numel())


def _reduce_sum(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return float(args[0].numel() - out.numel()), 0.0


def _reduce_mean(args: tuple[Any, ...], out: torch.Tensor) -> tuple[float, float]:
    return float(args[0].numel() - out.numel()), float(out.numel())


def _exp_plus(adds: float, mults: float) -> Rule:
    return _per_elem(_EXP[0] + adds, _EXP[1] + mults)


OP_RULES: Mapping[str, Rule] = MappingProxyType(
    {
        # activations
        "relu": _per_elem(1, 0),
        "relu_": _per_elem(1, 0),
        "threshold": _per_elem(1, 0),
        "hardtanh": _per_elem(2, 0),
        "hardtanh_": _per_elem(2, 0),
        "clamp": _per_elem(2, 0),
        "clamp_min": _per_elem(1, 0),
        "leaky_relu": _per_elem(1, 1),
        "leaky_relu_": _per_elem(1, 1),
        "sigmoid": _exp_plus(1, 1),  # 1 / (1 + exp(-x))
        "sigmoid_": _exp_plus(1, 1),
        "tanh": _exp_plus(0, 0),
        "tanh_": _exp_plus(0, 0),
        "exp": _exp_plus(0, 0),
        "elu": _exp_plus(2, 1),
        "silu": _exp_plus(1, 2),
        "gelu": _exp_plus(2, 3),  # 0.5 x (1 + erf(x / sqrt 2))
        "_softmax": _exp_plus(3, 1),  # max, subtract, exp, sum, divide
        "_log_softmax": _exp_plus(3, 1),
        # normalisation (eval: folded scale and shift)
        "native_batch_norm": _per_elem(1, 1),
        "_native_batch_norm_legit_no_training": _per_elem(1, 1),
        "_native_batch_norm_legit": _per_elem(1, 1),
        # pooling
        "max_pool1d": _max_pool,
        "max_pool2d": _max_pool,
        "max_pool3d": _max_pool,
        "max_pool2d_with_indices": _max_pool,
        "max_pool3d_with_indices": _max_pool,
        "avg_pool1d": _avg_pool,
        "avg_pool2d": _avg_pool,
        "avg_pool3d": _avg_pool,
        "_adaptive_avg_pool2d": _adaptive_avg,
        "_adaptive_avg_pool3d": _adaptive_avg,
        "adaptive_max_pool2d": _adaptive_max,
        "adaptive_max_pool3d": _adaptive_max,
        # element-wise arithmetic: the sums that merge branches
        "add": _per_elem(1, 0),
        "add_": _per_elem(1, 0),
        "sub": _per_elem(1, 0),
        "sub_": _per_elem(1, 0),
        "rsub": _per_elem(1, 0),
        "mul": _per_elem(0, 1),
        "mul_": _per_elem(0, 1),
        "div": _per_elem(0, 1),
        "div_": _per_elem(0, 1),
        # reductions
        "sum": _reduce_sum,
        "mean": _reduce_mean,
        # data movement only
        "cat": _per_elem(0, 0),
        "stack": _per_elem(0, 0),
        "clone": _per_elem(0, 0),
        "contiguous": _per_elem(0, 0),
        "copy_": _per_elem(0, 0),
        "_to_copy": _per_elem(0, 0),
        "constant_pad_nd": _per_elem(0, 0),
    }
)

#: Operations that neither compute nor move data (allocation, aliasing); views are detected by `is_view`.
FREE_OPS = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "detach",
        "alias",
        "lift_fresh",
        "lift_fresh_copy",
        "_unsafe_view",
    }
)

_DROPOUTS = frozenset({"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"})

#: Matrix products and convolutions whose bias input FlopCounterMode leaves out: name -> bias arg index.
_BIAS_ARG = MappingProxyType({"convolution": 2, "_convolution": 2, "addmm": 0, "baddbmm": 0})


@dataclass
class LayerCost:
    """Counts for one module (batch totals); the sums that merge branches land on the module doing them."""

    name: str
    adds: float = 0.0
    mults: float = 0.0
    matmul_flops: float = 0.0
    activation_bytes: float = 0.0
    param_bytes: float = 0.0

    @property
    def flops(self) -> float:
        return self.adds + self.mults


@dataclass(frozen=True)
class EnergyEstimate:
    """Per-inference figures of one model at one measurement batch size."""

    batch_size: int
    flops: float  # per inference; a multiply-add counts 2
    matmul_flops: float  # the part from FlopCounterMode's formulas
    adds: float
    mults: float
    params: int  # trainable parameter count
    param_bytes: float  # per batch: parameters and buffers read once
    activation_bytes: float  # per inference
    compute_j: float
    param_memory_j: float
    activation_memory_j: float
    layers: tuple[LayerCost, ...] = field(default=())
    uncounted_ops: tuple[str, ...] = field(default=())

    @property
    def energy_j(self) -> float:
        return self.compute_j + self.param_memory_j + self.activation_memory_j


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _CostMode(TorchDispatchMode):
    """Sees every aten operation of one forward pass and charges it to the innermost running module."""

    def __init__(self, param_storages: Mapping[int, int], stack: list[str]) -> None:
        super().__init__()
        self._param_storages = param_storages
        self._params_seen: set[int] = set()
        self._stack = stack
        self.layers: dict[str, LayerCost] = {}
        self.uncounted: set[str] = set()

    def _layer(self) -> LayerCost:
        name = self._stack[-1] if self._stack else ""
        if name not in self.layers:
            self.layers[name] = LayerCost(name=name)
        return self.layers[name]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        packet = func._overloadpacket
        op = packet.__name__
        if op in _DROPOUTS and len(args) > 2 and args[2] is False:
            return func(*args, **kwargs)  # eval-mode dropout returns its input: no work, as under no_grad
        counted = packet in flop_registry or op in OP_RULES
        if not counted and not func.is_view and op not in FREE_OPS:
            with self:  # CompositeImplicit ops (inference mode) come back to this mode as their parts
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if func.is_view or op in FREE_OPS:
            return out
        first_out = next(iter(_tensors(out)), None)
        if first_out is None:
            return out
        layer = self._layer()
        if packet in flop_registry:
            flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
            layer.matmul_flops += flops
            layer.adds += flops / 2
            layer.mults += flops / 2
            bias_at = _BIAS_ARG.get(op)
            bias = args[bias_at] if bias_at is not None and bias_at < len(args) else None
            if isinstance(bias, torch.Tensor):
                layer.adds += first_out.numel()
        elif op in OP_RULES:
            adds, mults = OP_RULES[op](args, first_out)
            layer.adds += adds
            layer.mults += mults
        else:
            self.uncounted.add(op)
        for t in _tensors((args, list(kwargs.values()))):
            key = _storage_key(t)
            if key in self._param_storages:
                if key not in self._params_seen:
                    self._params_seen.add(key)
                    layer.param_bytes += self._param_storages[key]
            else:
                layer.activation_bytes += t.numel() * t.element_size()
        layer.activation_bytes += first_out.numel() * first_out.element_size()
        return out


def _attach_stack(model: torch.nn.Module, stack: list[str]) -> list[Any]:
    """Forward hooks that keep `stack` naming the running module; TorchScript modules refuse hooks."""
    handles: list[Any] = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(_m: Any, _i: Any, name: str = name) -> None:
            stack.append(name)

        def post(_m: Any, _i: Any, _o: Any) -> None:
            stack.pop()

        try:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        except (NotImplementedError, RuntimeError, AttributeError):
            for handle in handles:
                handle.remove()
            return []
    return handles


def count_model(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[dict[str, LayerCost], set[str], int]:
    """Run one forward pass of the batch under the counting mode; batch totals per module."""
    param_storages: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        param_storages[_storage_key(tensor)] = tensor.untyped_storage().nbytes()
    stack: list[str] = []
    handles = _attach_stack(model, stack)
    was_training = model.training
    model.eval()
    mode = _CostMode(param_storages, stack)
    try:
        # no_grad, not inference_mode: composite ops then decompose into the aten ops the rules name
        with torch.no_grad(), mode:
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return mode.layers, mode.uncounted, params


class EstimateMeter(Meter):
    """Energy from the model alone: runs anywhere, identical on every run, labelled as an estimate."""

    name = "estimate"
    method = METHOD_ESTIMATE
    gives_power = False

    def __init__(self, constants: EstimateConstants | None = None) -> None:
        self.constants = constants or EstimateConstants()

    def describe(self) -> str:
        c = self.constants
        return (
            f"estimate: counted FLOPs and bytes x Horowitz 2014 45 nm energies "
            f"(params from {c.params_level}, activations in {c.activations_level}); no hardware read"
        )

    def estimate(
        self, model: torch.nn.Module, inputs: torch.Tensor, batch_size: int | None = None
    ) -> EnergyEstimate:
        """Per-inference figures; parameters are read once per measurement batch of `batch_size`.

        Operations and activation bytes are per sample, so `inputs` may be a slice of the measurement
        batch (one sample is enough and cheapest); `batch_size` defaults to the rows of `inputs`.
        """
        layers, uncounted, params = count_model(model, inputs)
        rows = int(inputs.shape[0])
        batch = int(batch_size) if batch_size is not None else rows
        c = self.constants
        adds = sum(layer.adds for layer in layers.values())
        mults = sum(layer.mults for layer in layers.values())
        matmul = sum(layer.matmul_flops for layer in layers.values())
        param_bytes = sum(layer.param_bytes for layer in layers.values())
        act_bytes = sum(layer.activation_bytes for layer in layers.values())
        pj = 1e-12
        return EnergyEstimate(
            batch_size=batch,
            flops=(adds + mults) / rows,
            matmul_flops=matmul / rows,
            adds=adds / rows,
            mults=mults / rows,
            params=params,
            param_bytes=param_bytes,
            activation_bytes=act_bytes / rows,
            compute_j=(adds * c.pj_fp_add + mults * c.pj_fp_mult) / rows * pj,
            param_memory_j=param_bytes * c.pj_per_byte(c.params_level) / batch * pj,
            activation_memory_j=act_bytes * c.pj_per_byte(c.activations_level) / rows * pj,
            layers=tuple(layers.values()),
            uncounted_ops=tuple(sorted(uncounted)),
        )
