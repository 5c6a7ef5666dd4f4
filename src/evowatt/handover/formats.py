"""The export formats: writing a model as ONNX, torch.export `.pt2` or TorchScript, and running a file back.

A module of its own so that each format's writer, its loader (as a deployer loads it, with no evowatt code)
and its usage snippet sit together; adding a format touches only this file.

ONNX goes through torch's default exporter (``torch.onnx.export(..., dynamo=True)``, which needs
onnxscript): the TorchScript-based exporter is deprecated upstream.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from evowatt.errors import EvowattError

FORMATS = ("onnx", "pt2", "torchscript")
DEFAULT_FORMATS = ("onnx", "pt2")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts.pt"}


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints progress and warns about torchvision ops it cannot register; keep a CLI clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _need(module: str, extra: str = "export") -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise EvowattError(f"this needs {module}: pip install 'evowatt[{extra}]'")


def write_model(model: torch.nn.Module, example: torch.Tensor, fmt: str, path: Path) -> None:
    batch = torch.export.Dim.DYNAMIC
    if fmt == "onnx":
        _need("onnxscript")
        _need("onnx")
        with _quiet_exporter():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            program.save(str(path))
    elif fmt == "pt2":
        with _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
    elif fmt == "torchscript":
        with _quiet_exporter(), torch.no_grad():
            traced = torch.jit.trace(model, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
    else:
        raise EvowattError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Logits of an exported file on ``x``, loaded as a deployer would (no evowatt code involved)."""
    if fmt == "onnx":
        _need("onnxruntime")
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        if fmt == "pt2":
            module = torch.export.load(str(path)).module()
        else:
            module = torch.jit.load(str(path), map_location="cpu")
        return module(torch.from_numpy(x)).numpy()


def usage(fmt: str, filename: str, shape: tuple[int, ...]) -> list[str]:
    c, h, w = shape
    if fmt == "onnx":
        return [
            "import numpy as np, onnxruntime as ort",
            f'session = ort.InferenceSession("{filename}")',
            f'logits = session.run(None, {{"input": np.zeros((1, {c}, {h}, {w}), np.float32)}})[0]',
        ]
    if fmt == "pt2":
        return [
            "import torch",
            f'model = torch.export.load("{filename}").module()',
            f"logits = model(torch.zeros(1, {c}, {h}, {w}))",
        ]
    return [
        "import torch",
        f'model = torch.jit.load("{filename}")',
        f"logits = model(torch.zeros(1, {c}, {h}, {w}))",
    ]
