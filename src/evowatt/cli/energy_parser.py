"""The `meters`, `measure` and `calibrate` sub-commands' options; `evowatt.cli.parser` calls `add_commands`,
and `energy_commands` does the work.

Registering them imports nothing heavy: torch loads only when one of them runs, so `evowatt show` and
`evowatt check-grammar --help` start fast.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from pydantic import ValidationError

from evowatt.cli.args import class_count, input_shape_arg, non_negative_int, positive_float, positive_int
from evowatt.config.energy import MeasureSettings, MeterName
from evowatt.errors import EvowattError


def _cmd_meters(args: argparse.Namespace) -> int:
    from evowatt.cli.energy_commands import meters_command

    return meters_command(as_json=args.json, profile=args.profile, config=args.config)


def _measure_settings(args: argparse.Namespace) -> MeasureSettings:
    """The protocol `measure` and `calibrate` use: the defaults with the batch and time cap given."""
    overrides: dict[str, Any] = {"batch_size": args.batch_size, "time_cap_s": args.time_cap}
    try:
        return MeasureSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EvowattError(f"measure settings: {problems}") from exc


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from evowatt.cli.energy_commands import calibrate_command

    settings = _measure_settings(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return calibrate_command(
        args.meter,
        grammar=args.grammar,
        input_shape=args.input_shape,
        dataset=args.dataset,
        classes=args.classes,
        samples=args.samples,
        out=args.out,
        seed=args.seed,
        device=args.device,
        max_flops=args.max_flops,
        settings=settings,
        as_json=args.json,
        nvml_index=args.nvml_index,
    )


def _cmd_measure(args: argparse.Namespace) -> int:
    from evowatt.cli.energy_commands import measure_command

    settings = _measure_settings(args)
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
    p.add_argument("--profile", help="show this calibrated profile (evowatt calibrate) and what it describes")
    p.add_argument("--config", help="show the calibrated profile this run config uses (energy.profile)")
    p.set_defaults(func=_cmd_meters)

    p = sub.add_parser(
        "calibrate", help="fit latency (and energy) to this device from sampled networks: a profile for runs"
    )
    p.add_argument(
        "--meter",
        choices=["clock", "rapl", "nvml"],
        required=True,
        help="clock: latency, on every machine; rapl / nvml: energy too (Intel/AMD CPU, NVIDIA GPU)",
    )
    p.add_argument("--grammar", default="cnn", help="grammar file, or a shipped grammar's name (default cnn)")
    p.add_argument("--input-shape", type=input_shape_arg, metavar="C,H,W", help="one input's shape")
    p.add_argument("--dataset", help="take the input shape and classes from this dataset (e.g. digits)")
    p.add_argument(
        "--classes", type=class_count, default=None, help="output classes (default 10 or the dataset's)"
    )
    p.add_argument("--samples", type=positive_int, default=200, help="networks to measure (default 200)")
    p.add_argument("--out", help="the profile's JSON file (default profile-METER.json)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda for nvml, else cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default torch's)")
    p.add_argument(
        "--max-flops",
        type=positive_int,
        default=None,
        help="largest network sampled, FLOPs per inference (default 2e8)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"measurement batch (default {MeasureSettings().batch_size}; a run should measure at the same)",
    )
    p.add_argument(
        "--time-cap",
        type=positive_float,
        default=None,
        help=f"seconds of repeats per network at most (default {MeasureSettings().time_cap_s:g})",
    )
    p.add_argument("--nvml-index", type=non_negative_int, default=None, help="NVML GPU index (PCI order)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON (progress goes to stderr)")
    p.set_defaults(func=_cmd_calibrate)

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
