"""`evowatt meters` and `evowatt measure`: the CLI wires argparse to these; EvowattError means exit 2."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from evowatt.console import OutputConsole
from evowatt.energy.protocol import Measurement, MeasureSettings, measure_idle, measure_model, synthetic_batch
from evowatt.energy.select import list_meters, select_meter
from evowatt.errors import EvowattError, error_gist, require_file
from evowatt.units import format_si

_UNITS = {"energy": "J", "energy_gross": "J", "power": "W", "power_gross": "W", "idle_power": "W"}
_UNITS.update({"latency": "s", "flops": "FLOP", "params": ""})


def meters_command(
    as_json: bool = False,
    console: Console | None = None,
    profile: str | None = None,
    config: str | None = None,
    **options: Any,
) -> int:
    """List every meter with whether it can be read here and why, and the active calibrated profile
    (``profile``, or ``config``'s energy.profile); exit 0 (it is a diagnosis) unless the profile is bad."""
    use = active_profile(profile, config) if profile or config else None
    statuses = list_meters(**options)
    out = console or OutputConsole()
    if as_json:
        rows = [{"name": s.name, "available": s.available, "reason": s.reason} for s in statuses]
        payload: Any = rows if use is None else {"meters": rows, "profile": use.to_dict()}
        out.file.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table(title="evowatt meters")
    table.add_column("meter")
    table.add_column("available")
    table.add_column("reason")
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.available else "[red]no[/]", s.reason)
    out.print(table)
    if use is not None:
        for line in _profile_lines(use):
            out.print(line, highlight=False)
    elif profile or config:
        out.print("profile: none (the config sets no energy.profile)", highlight=False)
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
                f"the model rejected a batch of shape {tuple(inputs.shape)} ({error_gist(exc)}) — "
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


def _profile_lines(use: Any) -> list[str]:
    """What `evowatt meters` says about the active profile."""
    p = use.profile
    lines = [
        f"profile: {use.path} ({p.digest[:19]}), {p.meter} meter, {' and '.join(sorted(p.predictors))} "
        f"-> estimated:calibrated",
        f"  describes: {p.device.describe()}"
        + ("  (this device)" if use.this_device else f"  (NOT this device: {use.here.name})"),
        f"  fitted on {p.samples} networks of input {','.join(map(str, p.input_shape))} "
        f"at batch {p.batch_size}",
    ]
    for target in sorted(p.predictors):
        held = p.held_out.get(target, {}).get("calibrated") or {}
        if held.get("within_10") is not None:
            lines.append(
                f"  held-out {target}: {held['within_10']:.0%} within ±10 %, {held['within_25']:.0%} within "
                f"±25 %, Spearman {held['spearman']:.3f} ({held['n']} networks)"
            )
    lines += [f"  warning: {w}" for w in use.warnings]
    return lines


def active_profile(profile: str | None = None, config: str | None = None) -> Any:
    """The profile `--profile` names, else the one `--config`'s energy.profile names, compared with this
    device (and with the config's input shape and batch); None without one."""
    from evowatt.energy.profile import this_device, use_profile

    shape, batch = None, None
    if config is not None:
        from evowatt.config.load import load_config
        from evowatt.driver.tasks import data_ref

        run_config = load_config(config)
        profile = profile or run_config.energy.profile
        if profile is not None:
            shape, batch = tuple(data_ref(run_config).load().input_shape), run_config.energy.batch_size
    if profile is None:
        return None
    return use_profile(profile, this_device(), shape, batch)


def calibrate_command(
    meter: str,
    grammar: str = "cnn",
    input_shape: tuple[int, ...] | None = None,
    dataset: str | None = None,
    classes: int | None = None,
    samples: int = 200,
    out: str | None = None,
    seed: int = 0,
    device: str | None = None,
    max_flops: int | None = None,
    settings: MeasureSettings | None = None,
    as_json: bool = False,
    console: Console | None = None,
    **options: Any,
) -> int:
    """Measure sampled networks on this device, fit, report on held-out ones and write the profile."""
    from evowatt.energy.calibrate import MAX_FLOPS, calibrate, open_calibration_meter
    from evowatt.energy.profile import write_profile
    from evowatt.representation.grammar import load_grammar

    settings = settings or MeasureSettings()
    if (input_shape is None) == (dataset is None):
        raise EvowattError("give the input either as --input-shape C,H,W or as --dataset NAME (not both)")
    if dataset is not None:
        from evowatt.data.datasets import load_splits

        splits = load_splits(dataset)
        input_shape, classes = splits.input_shape, classes or splits.num_classes
    classes = classes or 10
    if meter == "nvml" and device is None and not torch.cuda.is_available():
        raise EvowattError(
            "--meter nvml meters an NVIDIA GPU and torch sees none: use --meter clock (or rapl)"
        )
    dev = _device(device or ("cuda" if meter == "nvml" else "cpu"))
    target = Path(out or f"profile-{meter}.json")
    if target.is_dir():
        raise EvowattError(
            f"--out {target} is a directory; give the profile's file name, e.g. {target}/profile.json"
        )
    if not target.parent.exists():
        raise EvowattError(f"--out {target}: the directory {target.parent} does not exist; create it first")
    grammar_ = load_grammar(grammar)
    chosen = open_calibration_meter(meter, str(dev), **options)
    con = console or OutputConsole(stderr=as_json)
    per_model = settings.time_cap_s + settings.warmup * 0.05
    low, high = samples * per_model / 60, samples * (per_model + 1) / 60
    con.print(
        f"calibrating {meter} on {dev}: {samples} networks from {grammar_.source}, input "
        f"{','.join(map(str, input_shape))}, batch {settings.batch_size}; about {low:.0f}-{high:.0f} min "
        f"(at most {settings.time_cap_s:g} s of windows per network)",
        highlight=False,
    )
    with chosen, _CalibrationProgress(con, samples) as progress:
        result = calibrate(
            grammar_,
            tuple(int(d) for d in input_shape),
            int(classes),
            samples,
            meter,
            chosen,
            settings,
            device=str(dev),
            seed=seed,
            max_flops=max_flops or MAX_FLOPS,
            progress=progress,
        )
    write_profile(result.profile, target)
    if as_json:
        out_file = (console or OutputConsole()).file
        out_file.write(json.dumps({"profile": str(target), **result.profile.to_dict()}, indent=2) + "\n")
        return 0
    _print_calibration(con, result, target)
    return 0


class _CalibrationProgress:
    """A live bar with the time left on a terminal; a line every tenth of the way anywhere else."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.bar, self.task, self.shown = console, total, None, None, 0

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("measuring"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("calibrate", total=self.total)
        return self

    def __call__(self, done: int, total: int, seconds: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)
            return
        if done * 10 // total > self.shown or done == total:
            self.shown = done * 10 // total
            left = seconds / done * (total - done)
            self.console.print(f"measured {done}/{total} networks, {seconds:.0f} s, about {left:.0f} s left")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _print_calibration(out: Console, result: Any, target: Path) -> None:
    p = result.profile
    out.print(f"device: {p.device.describe()}", highlight=False)
    skipped = ", ".join(f"{n} {why}" for why, n in result.skipped.items())
    out.print(
        f"{p.samples} networks measured in {p.seconds:.0f} s"
        + (f" ({skipped})" if skipped else "")
        + f"; fitted on {p.samples - len(result.held_out)}, judged on {len(result.held_out)} held out",
        highlight=False,
    )
    for target_name, rows in p.held_out.items():
        table = Table(title=f"held-out {target_name}: predicted vs measured")
        for col in ("predictor", "Spearman", "median |error|", "within ±10 %", "within ±25 %"):
            table.add_column(col)
        labels = {
            "flops": "FLOPs alone (best scale)",
            "estimate": "uncalibrated estimate (best scale)",
            "calibrated": "calibrated",
        }
        for name, label in labels.items():
            a = rows[name]

            def pct(v: Any) -> str:
                return "-" if v is None else f"{100 * v:.1f} %"

            table.add_row(
                label,
                "-" if a["spearman"] is None else f"{a['spearman']:.3f}",
                pct(a["mdape"]),
                pct(a["within_10"]),
                pct(a["within_25"]),
            )
        out.print(table)
    out.print(
        f"profile written to {target} ({p.digest[:19]}); use it with energy.profile: {target}",
        highlight=False,
    )
