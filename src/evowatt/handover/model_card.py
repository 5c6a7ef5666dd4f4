"""The model card: what an exported model is, takes and returns, its figures with their methods, the run
it came from, the versions that wrote it and how its files were verified; as JSON and as Markdown.

A module of its own because the card is a document format (its fields, their wording, the Markdown
layout), separate from how the files are written (formats.py) and checked (verify.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch

from evowatt.data.loaders import CLASS_NAMES
from evowatt.driver.store import RunStore
from evowatt.handover.formats import usage
from evowatt.handover.rebuild import Rebuilt
from evowatt.version import __version__

# the figures a card carries for each exit, with their store names (suffix _1 for the early exit)
CARD_METRICS = ("accuracy", "test_accuracy", "loss", "energy", "power", "latency", "flops", "params")
CARD_METRICS += ("energy_gross", "power_gross", "idle_power")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def _versions() -> dict[str, str]:
    versions = {"evowatt": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return versions


def build_card(
    store: RunStore,
    rebuilt: Rebuilt,
    exit_index: int,
    splits,
    data,
    meter: dict[str, Any],
    input_info: dict[str, Any],
    files: dict[str, Path],
    diffs: dict[str, float],
    bound: float,
    n_verify: int,
    test_metric: dict[str, Any],
) -> dict[str, Any]:
    row = rebuilt.row
    suffix = "" if exit_index == 0 else f"_{exit_index}"
    stored = row.metrics
    metrics = {}
    for name in CARD_METRICS:
        metric = stored.get(f"{name}{suffix}")
        if name == "test_accuracy":
            metric = test_metric
        if metric is not None:
            metrics[name] = dict(metric)
    measurement = (row.result.measurements if row.result else {}).get(str(exit_index)) or {}
    layers = rebuilt.layers
    if exit_index == 1 and rebuilt.exit_layer is not None:
        architecture = {
            "exit": "early exit: the hidden layers up to the partition point, then a linear head",
            "partition_point": rebuilt.exit_layer,
            "layers": [*layers[: rebuilt.exit_layer + 1], "head: flatten + linear"],
        }
    else:
        architecture = {"exit": "the full network", "layers": [*layers, "output: linear"]}
    c, h, w = splits.input_shape
    names = splits.class_names or CLASS_NAMES.get(data.name)
    config = rebuilt.config
    first = next(iter(files), None)
    return {
        "card_format": 1,
        "name": f"evowatt-{row.id}-exit{exit_index}",
        "evaluation": {
            "id": row.id,
            "kind": row.kind,
            "generation": row.generation,
            "exit": exit_index,
            "fitness": row.fitness,
        },
        "architecture": architecture,
        "input": {
            "name": "input",
            "shape": ["N", c, h, w],
            "dtype": "float32",
            "values": input_info["raw"]
            if input_info["normalise"]
            else "normalised: (pixel / scale - mean) / std, as the search trained on",
            "normalisation_baked_in": input_info["normalise"],
            "scale": input_info["scale"],
            "mean": list(splits.mean),
            "std": list(splits.std),
        },
        "output": {
            "name": "logits",
            "shape": ["N", splits.num_classes],
            "meaning": "logits; softmax for probabilities",
        },
        "classes": {"count": splits.num_classes, "names": list(names) if names else None},
        "dataset": {"name": data.name, "path": data.path, "train_subset": data.train_subset},
        "metrics": metrics,
        "measured_on": {
            "meter": meter.get("name"),
            "method": meter.get("method"),
            "reason": meter.get("reason"),
            "device": row.device,
            "host": row.host,
            "batch_size": measurement.get("batch_size"),
            "idle": meter.get("idle"),
        },
        "run": {
            "run_dir": str(store.dir),
            "seed": config.get("seed"),
            "evaluation_seed": row.seed,
            "config_sha256": config_digest(config),
            "grammar_sha256": store.meta("grammar_sha256"),
        },
        "versions": _versions(),
        "files": {
            fmt: {"file": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for fmt, p in files.items()
        },
        "verification": {
            "images": n_verify,
            "split": "test",
            "tolerance": bound,
            "max_abs_diff": diffs,
            "reference": "evowatt's model on the normalised test images",
        },
        "usage": usage(first, files[first].name, splits.input_shape) if first else [],
    }


def _fmt_metric(name: str, metric: dict[str, Any]) -> str:
    from evowatt.units import format_si

    units = {"energy": "J", "energy_gross": "J", "power": "W", "power_gross": "W", "idle_power": "W"}
    units.update({"latency": "s"})
    value = metric.get("value")
    if value is None:
        text = "-"
    elif name in units:
        text = format_si(float(value), units[name])
        if metric.get("ci"):
            text += f" ± {format_si(float(metric['ci']), units[name])}"
    elif name in ("flops", "params"):
        text = f"{int(value):,}"
    else:
        text = f"{float(value):.4f}"
    return f"{text} ({metric.get('method')})"


_LABELS = {
    "accuracy": "evo_test accuracy",
    "test_accuracy": "test accuracy (reported only, never selected on)",
    "loss": "evo_test loss",
    "energy": "energy per inference",
    "latency": "latency per inference",
    "flops": "FLOPs per inference",
    "params": "parameters",
}


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people: the same figures as the JSON, each with its method label."""
    ev, inp, out = card["evaluation"], card["input"], card["output"]
    lines = [
        f"# {card['name']}",
        "",
        f"Evaluation {ev['id']} ({ev['kind']}, generation {ev['generation']}), exit {ev['exit']}: "
        f"{card['architecture']['exit']}. Exported by evowatt {card['versions']['evowatt']} "
        f"(torch {card['versions']['torch']}).",
        "",
        "## Input and output",
        "",
        f"- input `{inp['name']}`: {inp['dtype']} of shape ({', '.join(map(str, inp['shape']))}), "
        f"{inp['values']}"
        + (
            f"; scaling (/ {inp['scale']:g}) and normalisation (mean {_short(inp['mean'])}, std "
            f"{_short(inp['std'])}) are baked in"
            if inp["normalisation_baked_in"]
            else ""
        ),
        f"- output `{out['name']}`: shape ({', '.join(map(str, out['shape']))}), {out['meaning']}",
        f"- classes: {card['classes']['count']}"
        + (f" ({', '.join(card['classes']['names'])})" if card["classes"]["names"] else ""),
        "",
        "## Architecture",
        "",
        *[f"{i}. {layer}" for i, layer in enumerate(card["architecture"]["layers"])],
        "",
        "## Figures",
        "",
        "| figure | value (method) |",
        "|---|---|",
        *[f"| {_LABELS.get(k, k)} | {_fmt_metric(k, m)} |" for k, m in card["metrics"].items()],
        "",
        f"Measured with meter `{card['measured_on']['meter']}` on {card['measured_on']['device']} "
        f"({card['measured_on']['host']}), batch {card['measured_on']['batch_size']}.",
        "",
        "## Run",
        "",
        f"- run directory: `{card['run']['run_dir']}`, seed {card['run']['seed']}",
        f"- config sha256: `{card['run']['config_sha256']}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        "",
        "## Verification",
        "",
        f"On {card['verification']['images']} real test images, against evowatt's model (tolerance "
        f"{card['verification']['tolerance']:.3g}):",
        "",
        *[
            f"- {fmt} (`{card['files'][fmt]['file']}`): max |diff| {diff:.3g}"
            for fmt, diff in card["verification"]["max_abs_diff"].items()
        ],
        "",
        "## Load and call",
        "",
        "```python",
        *card["usage"],
        "```",
        "",
    ]
    return "\n".join(lines)


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
