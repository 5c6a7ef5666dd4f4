"""Models saved to files, for `evowatt measure`: TorchScript, torch.export `.pt2` and ONNX.

Every format is measured with the same protocol (`measure_model`) and carries the same labels. What differs
is how the estimate counts operations:

* TorchScript and `.pt2` run as torch modules, so the estimate counts their aten operations exactly as the
  search counted evowatt's own model (an exported model without normalisation gives the card's figures);
* an `.onnx` file runs in onnxruntime, which torch cannot see into; its graph is counted node by node with
  the estimate's own rules (`OP_RULES` per output element; convolutions and matrix products as
  multiply-adds, bias additions separate) on shapes from ONNX shape inference, parameters and constants
  read once per batch, activations read and written per operation. torch's ONNX exporter optimises the
  graph (a batch norm after a convolution is folded into it, constant padding into the convolution's
  pads), so an `.onnx` counts those operations as the file has them: no batch norm, no padding copy.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evowatt.energy.estimate import OP_RULES, EnergyEstimate, EstimateConstants
from evowatt.errors import EvowattError, error_gist

FORMAT_HINT = (
    "give a TorchScript file (torch.jit.save), a torch.export program (.pt2, torch.export.save) or an "
    "ONNX model (.onnx), e.g. one written by `evowatt export`"
)


_NAMES = {"onnx": "ONNX", "pt2": "torch.export (.pt2)", "torchscript": "TorchScript"}


def model_format(path: Path) -> str:
    """onnx | pt2 | torchscript, from the file's content first and its name second."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK"):  # a zip: torch.export (.pt2) or TorchScript
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "pt2" if path.suffix == ".pt2" else "torchscript"
        if any(n.endswith("models/model.json") or "/models/" in n for n in names) or path.suffix == ".pt2":
            return "pt2"
        return "torchscript"
    if path.suffix == ".onnx" or head[:1] == b"\x08":  # ONNX protobuf starts with ir_version (field 1)
        return "onnx"
    return "torchscript"


def _frozen_pt2(module: torch.nn.Module) -> torch.nn.Module:
    """A `.pt2` program's module refuses train()/eval(); it was exported in eval mode, so both are no-ops."""
    module.train = lambda mode=True: module  # type: ignore[method-assign]
    module.eval = lambda: module  # type: ignore[method-assign]
    return module


class OnnxModule(torch.nn.Module):
    """An onnxruntime session behind a torch module's call, so the protocol can time it unchanged."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)


def load_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The model and its format; a corrupt or foreign file is one EvowattError naming what was expected."""
    fmt = model_format(path)
    try:
        if fmt == "onnx":
            if device.type != "cpu":
                raise EvowattError(
                    f"{path} is ONNX, measured through onnxruntime on the CPU: use --device cpu"
                )
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
            except ImportError:
                raise EvowattError("measuring an .onnx file needs pip install 'evowatt[export]'") from None
            return OnnxModule(path), fmt
        if fmt == "pt2":
            logger = logging.getLogger("torch.export")  # it logs a traceback of its own for a bad file
            level = logger.level
            logger.setLevel(logging.CRITICAL)
            try:
                program = torch.export.load(str(path))
            finally:
                logger.setLevel(level)
            return _frozen_pt2(program.module().to(device)), fmt
        return torch.jit.load(str(path), map_location=device), fmt
    except EvowattError:
        raise
    except Exception as exc:  # noqa: BLE001 - every loader raises its own kinds for a bad file
        raise EvowattError(
            f"{path} is not a readable {_NAMES[fmt]} model ({error_gist(exc)}) — {FORMAT_HINT}"
        ) from None


# ------------------------------------------------------------------------------------------ ONNX counting

_ONNX_ACT = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Elu": "elu",
    "Gelu": "gelu",
    "Softmax": "_softmax",
    "LogSoftmax": "_log_softmax",
    "Add": "add",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "div",
    "BatchNormalization": "native_batch_norm",
}
# operations that neither compute nor move data (views and shape arithmetic in torch's terms)
_ONNX_FREE = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Shape", "Constant", "Gather",
    "Slice", "Cast", "CastLike", "Dropout", "Expand", "ConstantOfShape", "Range",
}  # fmt: skip
_ONNX_MOVE = {"Pad", "Concat"}  # data movement, no compute
_ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}


class _Out:
    """Just enough of a tensor for an `OP_RULES` rule: its element count."""

    def __init__(self, numel: int):
        self._numel = numel

    def numel(self) -> int:
        return self._numel


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def onnx_estimate(path: Path, constants: EstimateConstants | None = None) -> Callable[[int], EnergyEstimate]:
    """Per-inference counts of an ONNX graph at batch 1, priced like `EstimateMeter.estimate`."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    graph_input = next(
        i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    )
    dims = graph_input.type.tensor_type.shape.dim
    if dims:
        dims[0].ClearField("dim_param")
        dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, tuple[tuple[int, ...], int]] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = info.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[info.name] = (tuple(d.dim_value for d in t.shape.dim), _ELEM_BYTES.get(t.elem_type, 4))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:  # Constant nodes are initializers by another name
        if node.op_type == "Constant" and node.output:
            value = _attrs(node).get("value")
            if value is not None:
                inits[node.output[0]] = numpy_helper.to_array(value)

    adds = mults = matmul = 0.0
    act_bytes = param_bytes = 0.0
    params = 0
    seen: set[str] = set()
    uncounted: set[str] = set()
    producers = {out: n.op_type for n in model.graph.node for out in n.output}

    def numel(name: str) -> int:
        if name in shapes:
            return math.prod(shapes[name][0])
        return int(inits[name].size) if name in inits else 0

    for node in model.graph.node:
        op = node.op_type
        if op in _ONNX_FREE:
            continue
        out = node.output[0]
        n_out = numel(out)
        a = _attrs(node)
        if op == "Conv":
            w = inits.get(node.input[1])
            per_out = int(np.prod(w.shape[1:])) if w is not None else 0
            macs = n_out * per_out
            matmul += 2 * macs
            adds += macs + (n_out if len(node.input) > 2 and node.input[2] else 0)
            mults += macs
        elif op in ("Gemm", "MatMul"):
            a_shape = shapes.get(node.input[0], ((),))[0]
            k = a_shape[0] if (op == "Gemm" and a.get("transA")) else (a_shape[-1] if a_shape else 0)
            macs = n_out * k
            matmul += 2 * macs
            adds += macs + (n_out if op == "Gemm" and len(node.input) > 2 and node.input[2] else 0)
            mults += macs
        elif op in ("MaxPool", "AveragePool"):
            window = math.prod(a.get("kernel_shape", [1]))
            adds += (window - 1) * n_out
            mults += n_out if op == "AveragePool" else 0
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            ratio = numel(node.input[0]) / max(n_out, 1)
            adds += (ratio - 1) * n_out
            mults += n_out if op == "GlobalAveragePool" else 0
        elif op == "Clip":
            adds += 2 * n_out
        elif op in ("ReduceSum", "ReduceMean"):
            adds += numel(node.input[0]) - n_out
            mults += n_out if op == "ReduceMean" else 0
        elif op in _ONNX_ACT:
            s, m = OP_RULES[_ONNX_ACT[op]]((), _Out(n_out))
            adds, mults = adds + s, mults + m
        elif op not in _ONNX_MOVE:
            uncounted.add(op)
        for index, name in enumerate(node.input):
            if not name:
                continue
            if name in inits:
                if name not in seen:
                    seen.add(name)
                    param_bytes += inits[name].nbytes
                    trainable = (op in ("Conv", "Gemm", "MatMul") and index >= 1) or (
                        op == "BatchNormalization" and index in (1, 2)
                    )
                    trainable |= op == "Add" and any(producers.get(i) == "MatMul" for i in node.input)
                    if trainable and inits[name].dtype.kind == "f":
                        params += int(inits[name].size)
            else:
                act_bytes += numel(name) * (shapes[name][1] if name in shapes else 4)
        act_bytes += n_out * (shapes[out][1] if out in shapes else 4)

    c = constants or EstimateConstants()
    pj = 1e-12

    def estimate(batch_size: int) -> EnergyEstimate:
        return EnergyEstimate(
            batch_size=batch_size,
            flops=adds + mults,
            matmul_flops=matmul,
            adds=adds,
            mults=mults,
            params=params,
            param_bytes=param_bytes,
            activation_bytes=act_bytes,
            compute_j=(adds * c.pj_fp_add + mults * c.pj_fp_mult) * pj,
            param_memory_j=param_bytes * c.pj_per_byte(c.params_level) / batch_size * pj,
            activation_memory_j=act_bytes * c.pj_per_byte(c.activations_level) * pj,
            uncounted_ops=tuple(sorted(uncounted)),
        )

    return estimate
