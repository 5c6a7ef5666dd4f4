"""`evowatt meters` and `evowatt measure`: the CLI wires argparse to these; EvowattError means exit 2."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from evowatt.console import OutputConsole
from evowatt.energy.protocol import Measurement, MeasureSettings, measure_idle, measure_model, synthetic_batch
from evowatt.energy.select import list_meters, select_meter
from evowatt.errors import EvowattError, require_file
from evowatt.units import format_si

_UNITS = {"energy": "J", "energy_gross": "J", "power": "W", "power_gross": "W", "idle_power": "W"}
_UNITS.update({"latency": "s", "flops": "FLOP", "params": ""})


def meters_command(as_json: bool = False, console: Console | None = None, **options: Any) -> int:
    """List every meter with whether it can be read here and why; always exit 0 (it is a diagnosis)."""
    statuses = list_meters(**options)
    out = console or OutputConsole()
    if as_json:
        rows = [{"name": s.name, "available": s.available, "reason": s.reason} for s in statuses]
        out.file.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table(title="evowatt meters")
    table.add_column("meter")
    table.add_column("available")
    table.add_column("reason")
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.available else "[red]no[/]", s.reason)
    out.print(table)
    return 0


def _load(model_path: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    from evowatt.energy.exported import FORMAT_HINT, load_model

    path = Path(model_path)
    require_file(path, "model file", FORMAT_HINT)
    return load_model(path, device)


def _onnxruntime_errors(fmt: str) -> tuple[type[Exception], ...]:
    """The exceptions onnxruntime raises for an input it rejects (they derive from Exception only)."""
    if fmt != "onnx":
        return ()
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(
        getattr(state, n) for n in ("InvalidArgument", "Fail", "RuntimeException") if hasattr(state, n)
    )


def _gist(exc: BaseException) -> str:
    """The informative line of an error: TorchScript puts the real cause after its last `XxxError:`."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    marks = [i for i, line in enumerate(lines) if re.match(r"^\w*Error:", line)]
    if not marks:
        return lines[0]
    i = marks[-1]
    head, _, rest = lines[i].partition(":")
    return f"{head}: {rest.strip() or (lines[i + 1] if i + 1 < len(lines) else '')}".strip()


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise EvowattError(f"unknown device {device!r} — use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvowattError(f"device {device} requested but torch sees no CUDA GPU — use --device cpu")
    return dev


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (None when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_batch_fits(shape: tuple[int, ...], batch_size: int, device: torch.device) -> None:
    """Refuse an input batch that cannot fit before allocating it (like the search's network caps): the
    batch is built in host memory, then copied to the device; the model's activations need more still."""
    need = 4 * batch_size * math.prod(shape)  # float32
    shown = ",".join(str(d) for d in shape)
    for where in {torch.device("cpu"), device}:
        free = available_memory(where)
        if free is not None and need > free // 2:
            raise EvowattError(
                f"--input-shape {shown} with a measurement batch of {batch_size} needs "
                f"{format_si(need, 'B')} for the input batch alone, more than half of the "
                f"{format_si(free, 'B')} available on {where}: give the model's real input shape "
                "(C,H,W of one sample, e.g. 1,28,28) or a smaller --batch-size"
            )


def _print_measurement(out: Console, m: Measurement, title: str, reason: str) -> None:
    out.print(reason)
    table = Table(title=title)
    for col in ("metric", "value", "± 95% CI", "n", "method"):
        table.add_column(col)
    for name, stat in m.to_metrics().items():
        unit = _UNITS.get(name, "")
        ci = "" if stat["ci"] in (0, None) else format_si(stat["ci"], unit)
        table.add_row(name, format_si(stat["value"], unit), ci, str(stat["n"]), stat["method"])
    out.print(table)
    out.print(
        f"batch {m.batch_size}, {m.passes_per_window} passes per window, stopped by {m.stop_reason}, "
        f"{m.seconds:.2f} s"
    )
    if not m.valid:
        out.print(f"[red]invalid measurement:[/] {m.invalid_reason}")


def measure_command(
    model_path: str,
    input_shape: tuple[int, int, int],
    meter: str = "auto",
    device: str = "cpu",
    settings: MeasureSettings | None = None,
    as_json: bool = False,
    console: Console | None = None,
    **options: Any,
) -> int:
    """Measure a saved model (TorchScript, .pt2 or .onnx) with the search's protocol.

    Exit 0, or 1 if the result is invalid."""
    settings = settings or MeasureSettings()
    if len(input_shape) == 0 or any(int(d) < 1 for d in input_shape):
        raise EvowattError(f"input shape {input_shape} must be positive sizes, e.g. --input-shape 1,28,28")
    dev = _device(device)
    _check_batch_fits(tuple(int(d) for d in input_shape), settings.batch_size, dev)
    model, fmt = _load(model_path, dev)
    chosen, reason = select_meter(meter, dev, **options)
    cost = None
    if fmt == "onnx":
        from evowatt.energy.estimate import EstimateMeter
        from evowatt.energy.exported import onnx_estimate

        constants = chosen.constants if isinstance(chosen, EstimateMeter) else settings.estimate
        cost = onnx_estimate(Path(model_path), constants)
    out = console or OutputConsole()
    with chosen:
        idle = measure_idle(chosen, settings)
        inputs = synthetic_batch(tuple(int(d) for d in input_shape), settings.batch_size, dev)
        try:
            result = measure_model(model, inputs, chosen, settings, idle=idle, cost=cost)
        except (RuntimeError, *_onnxruntime_errors(fmt)) as exc:  # torch's and onnxruntime's refusals
            raise EvowattError(
                f"the model rejected a batch of shape {tuple(inputs.shape)} ({_gist(exc)}) — "
                "check --input-shape C,H,W"
            ) from exc
    if as_json:
        payload = {"model": str(model_path), "format": fmt, "input_shape": list(input_shape)}
        payload["device"] = str(dev)
        payload.update({"meter_reason": reason, **result.to_dict()})
        out.file.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        _print_measurement(out, result, f"evowatt measure {model_path}", reason)
    return 0 if result.valid else 1
