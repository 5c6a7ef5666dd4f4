"""The `meters` and `measure` sub-commands; `evowatt.cli` calls `add_commands` when this module exists.

Registering them imports nothing heavy: torch loads only when one of them runs, so `evowatt show` and
`evowatt check-grammar --help` start fast.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from pydantic import ValidationError

from evowatt.cli import input_shape_arg, non_negative_int, positive_float, positive_int
from evowatt.energy.settings import MeasureSettings, MeterName
from evowatt.errors import EvowattError


def _cmd_meters(args: argparse.Namespace) -> int:
    from evowatt.energy.commands import meters_command

    return meters_command(as_json=args.json)


def _cmd_measure(args: argparse.Namespace) -> int:
    from evowatt.energy.commands import measure_command

    overrides: dict[str, Any] = {"batch_size": args.batch_size, "time_cap_s": args.time_cap}
    try:
        settings = MeasureSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EvowattError(f"measure settings: {problems}") from exc
    return measure_command(
        args.model,
        args.input_shape,
        meter=args.meter,
        device=args.device,
        settings=settings,
        as_json=args.json,
        nvml_index=args.nvml_index,
    )


def add_commands(sub: Any) -> None:
    p = sub.add_parser("meters", help="which energy meters can be read here, and why not")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_meters)

    p = sub.add_parser("measure", help="measure a saved model's inference energy (.onnx, .pt2, TorchScript)")
    p.add_argument(
        "model", help="ONNX (.onnx, through onnxruntime), torch.export (.pt2) or TorchScript (torch.jit.save)"
    )
    p.add_argument("--input-shape", type=input_shape_arg, required=True, metavar="C,H,W")
    p.add_argument("--meter", choices=get_args(MeterName), default="auto")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"measurement batch (default {MeasureSettings().batch_size})",
    )
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=None,
        help=f"seconds of repeats at most (default {MeasureSettings().time_cap_s:g})",
    )
    p.add_argument(
        "--nvml-index",
        type=non_negative_int,
        default=None,
        help="NVML GPU index (PCI order; default: the CUDA ordinal)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_measure)
