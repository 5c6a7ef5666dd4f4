"""`evowatt export`: a run's chosen models as ONNX, torch.export `.pt2` or TorchScript, with a model card.

Each exported model takes the dataset's raw input (pixel values as its files hold them: 0..255 for the IDX
and CIFAR sets, 0..16 for sklearn's digits), as float32 of shape (N, C, H, W) with any N, and returns
logits (N, classes): the scaling and the run's normalisation (evo_train's per-channel mean and std) are
baked in as one multiply-add per pixel, unless ``normalise=False`` (then it takes the normalised input the
search trained on). Every exit of a partitioned network is its own standalone model (exit 0: the full
network; exit 1: the early exit).

Every file is verified the moment it is written: it is loaded back (ONNX through onnxruntime, `.pt2`
through ``torch.export.load``, TorchScript through ``torch.jit.load``) and run on a batch of real test
images; its logits must equal evowatt's own model's within ``TOLERANCE`` x max(1, max |logit|), else the
export fails with the difference and the file is removed.

ONNX goes through torch's default exporter (``torch.onnx.export(..., dynamo=True)``, which needs
onnxscript): the TorchScript-based exporter is deprecated upstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from evowatt import __version__
from evowatt.data.loaders import CLASS_NAMES, raw_scale
from evowatt.driver.rundir import GRAMMAR_NAME
from evowatt.driver.store import Evaluation, RunStore
from evowatt.errors import EvowattError
from evowatt.nn.builder import build_network, extract_models, plan_network
from evowatt.nn.train import evaluate_split
from evowatt.representation.genome import Genome
from evowatt.representation.grammar import parse_grammar

FORMATS = ("onnx", "pt2", "torchscript")
DEFAULT_FORMATS = ("onnx", "pt2")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts.pt"}
TOLERANCE = 1e-4  # max |exported - evowatt| <= TOLERANCE * max(1, max |evowatt logit|)
VERIFY_IMAGES = 256
# the figures a card carries for each exit, with their store names (suffix _1 for the early exit)
CARD_METRICS = ("accuracy", "test_accuracy", "loss", "energy", "power", "latency", "flops", "params")
CARD_METRICS += ("energy_gross", "power_gross", "idle_power")


class RawInput(torch.nn.Module):
    """The model behind the run's input pipeline: raw pixels -> x / scale -> (x - mean) / std, folded."""

    def __init__(self, model: torch.nn.Module, scale: float, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.register_buffer("input_scale", (1.0 / (scale * s)).float())
        self.register_buffer("input_shift", (-m / s).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.input_scale + self.input_shift)


@dataclass
class ExportedModel:
    evaluation_id: int
    exit: int
    files: dict[str, Path]  # format -> file
    card_json: Path
    card_md: Path
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- choosing


def _best_id(store: RunStore) -> int:
    """The final training of the best genome when the run has one (of the screening's winner when the
    run screened: that is the model it handed over first), else the best individual."""
    generations = store.generations()
    best = generations[-1].best_id if generations else None
    finals = store.finals()
    screens = {row.id for row in store.screenings()}
    after_screening = [f for f in finals if f.parent_id in screens]
    if after_screening:
        return after_screening[0].id
    if best is not None:
        trained = [f for f in finals if f.parent_id == best]
        return trained[-1].id if trained else int(best)
    if finals:
        return finals[0].id
    if generations:
        raise EvowattError(
            f"{store.dir} is a Pareto run: it has a front, not one best model; use --front or an id"
        )
    raise EvowattError(
        f"{store.dir} has no finished generation yet, so no best individual; export an evaluation "
        "by id, or wait for generation 0 to end"
    )


def front_members(store: RunStore) -> tuple[dict[int, set[int]], list[str]]:
    """{evaluation id: its exits on the run's front} (`evowatt show --front`'s models) among the
    evaluations whose weights are kept, and the front members left out because theirs were pruned."""
    from evowatt.handover.results import front

    members: dict[int, set[int]] = {}
    skipped = []
    kept = store.with_weights()
    for model in front(store.dir):
        if model.id in kept:
            members.setdefault(model.id, set()).add(int(model.exit))
        else:
            skipped.append(f"#{model.id}/{model.exit}")
    if not members:
        raise EvowattError(
            f"no front member of {store.dir} has kept weights (an ES run keeps only its parents' and final "
            "models'); export by id or with --best"
        )
    return members, skipped


def choose(
    store: RunStore,
    ids: list[int] | None = None,
    best: bool = False,
    front: bool = False,
    pick: list[str] | None = None,
) -> tuple[dict[int, set[int] | None], list[str]]:
    """{evaluation id: the exits to export (None: every exit)}, and the front members left out."""
    chosen: dict[int, set[int] | None] = {int(i): None for i in ids or []}
    skipped: list[str] = []

    def add(evaluation_id: int, exits: set[int]) -> None:
        if evaluation_id not in chosen:
            chosen[evaluation_id] = set(exits)
        elif chosen[evaluation_id] is not None:
            chosen[evaluation_id] |= exits

    if best:
        from evowatt.handover.results import answer

        model = answer(store.dir)  # every exit of the model to take's evaluation, as before
        chosen[model.id if model is not None else _best_id(store)] = None
    if front:
        members, skipped = front_members(store)
        for evaluation_id, exits in members.items():
            add(evaluation_id, exits)
    if pick:
        from evowatt.handover.results import pick as pick_model

        model = pick_model(store.dir, *pick)
        if model is None:
            raise EvowattError(
                f"no model of {store.dir} meets {' and '.join(pick)} (and the run's constraints)"
            )
        add(model.id, {int(model.exit)})
    if not chosen:
        raise EvowattError("name what to export: evaluation ids, --best, --front or --pick")
    return chosen, skipped


# ------------------------------------------------------------------------------------------- rebuilding


@dataclass
class Rebuilt:
    row: Evaluation
    models: dict[int, torch.nn.Module]  # exit -> standalone model (eval mode, CPU)
    config: dict[str, Any]
    grammar_text: str
    layers: list[str]
    exit_layer: int | None


def rebuild(store: RunStore, evaluation_id: int, input_shape: tuple[int, int, int], classes: int) -> Rebuilt:
    row = store.get(evaluation_id)
    if row is None:
        known = store.max_id()
        raise EvowattError(
            f"{store.dir} has no evaluation {evaluation_id} (ids 0..{known}); `evowatt show {store.dir}` "
            "lists them"
        )
    if not row.ok:
        raise EvowattError(f"evaluation {evaluation_id} is {row.status} ({row.reason}): nothing to export")
    weights = row.weights
    if not weights or not Path(weights).is_file():
        raise EvowattError(
            f"the weights of evaluation {evaluation_id} are not kept (a run keeps only those of its parents "
            "and final models); export one of those, e.g. --best"
        )
    grammar_text = (store.dir / GRAMMAR_NAME).read_text(encoding="utf-8")
    grammar = parse_grammar(grammar_text, source=str(store.dir / GRAMMAR_NAME))
    genome = Genome.from_json(row.genome)
    plan = plan_network(genome, grammar, input_shape, classes)
    network = build_network(plan, int(row.seed or 0))
    try:
        network.load_state_dict(load_file(weights, device="cpu"))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise EvowattError(f"cannot load {weights} ({type(exc).__name__}: {exc}); restore it") from None
    full, early = extract_models(network, plan)
    models = {0: full.eval()}
    if early is not None:
        models[1] = early.eval()
    return Rebuilt(
        row, models, store.meta("config") or {}, grammar_text, genome.describe(grammar), plan.exit_layer
    )


# ------------------------------------------------------------------------------------------- writing


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


def _usage(fmt: str, filename: str, shape: tuple[int, ...]) -> list[str]:
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


def export_run(
    run_dir: str | Path,
    ids: list[int] | None = None,
    best: bool = False,
    front: bool = False,
    pick: list[str] | None = None,
    formats: tuple[str, ...] | list[str] = DEFAULT_FORMATS,
    out: str | Path | None = None,
    normalise: bool = True,
    verify_images: int = VERIFY_IMAGES,
) -> list[ExportedModel]:
    """Export the chosen evaluations (every exit of each), verify every file, write the model cards."""
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise EvowattError(f"unknown format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise EvowattError(
            f"--out {out} is an existing file, not a directory; give a directory for the exported models "
            "(it is created if missing)"
        )
    store = RunStore(run_dir)  # read only: a run still in progress can be exported from
    try:
        chosen, skipped = choose(store, ids, best, front, pick)
        if skipped:
            warnings.warn(
                f"front members without kept weights are not exported: {', '.join(skipped)}", stacklevel=2
            )
        return _export(
            store, chosen, formats, Path(out) if out else store.dir / "export", normalise, verify_images
        )
    finally:
        store.close()


def _export(
    store: RunStore,
    chosen: dict[int, set[int] | None],
    formats: tuple[str, ...],
    out: Path,
    normalise: bool,
    n_images: int,
) -> list[ExportedModel]:
    from evowatt.config.load import validate_config
    from evowatt.driver.tasks import data_ref

    recorded = store.meta("config")
    if recorded is None:
        raise EvowattError(f"{store.dir} records no config; it was not written by `evowatt run`")
    config = validate_config(
        json.loads(json.dumps(recorded)), source="the run's recorded config", recorded=True
    )
    data = data_ref(config)
    splits = data.load()
    scale, raw_description = raw_scale(data.name, data.path)
    test_x = torch.from_numpy(np.array(splits.test.x))
    test_y = torch.from_numpy(np.array(splits.test.y))
    verify_norm = test_x[:n_images]
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    raw = (verify_norm.double() * std.double() + mean.double()) * scale
    if scale in (16.0, 255.0):
        raw = raw.round()  # the files hold integers; undo the float round-off of normalising
    verify_raw = raw.float()
    meter = store.meta("meter") or {}
    exported: list[ExportedModel] = []
    for evaluation_id, exits in chosen.items():
        rebuilt = rebuild(store, evaluation_id, splits.input_shape, splits.num_classes)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvowattError(
                f"cannot create the export directory {out} (--out): {exc.strerror or exc}; give a "
                "directory in a place you can write"
            ) from None
        for exit_index, model in rebuilt.models.items():
            if exits is not None and exit_index not in exits:
                continue
            suffix = "" if exit_index == 0 else f"_{exit_index}"
            wrapped = RawInput(model, scale, splits.mean, splits.std).eval() if normalise else model
            x = verify_raw if normalise else verify_norm
            with torch.no_grad():
                reference = model(verify_norm).numpy()  # evowatt's model on evowatt's own input
            stem = f"evowatt-{evaluation_id}-exit{exit_index}"
            files: dict[str, Path] = {}
            diffs: dict[str, float] = {}
            bound = TOLERANCE * max(1.0, float(np.abs(reference).max()))
            for fmt in formats:
                path = out / f"{stem}{SUFFIX[fmt]}"
                try:
                    write_model(wrapped, x[:2].clone(), fmt, path)
                except EvowattError:
                    raise
                except Exception as exc:  # noqa: BLE001 - exporters raise many kinds; one message
                    path.unlink(missing_ok=True)
                    raise EvowattError(
                        f"exporting evaluation {evaluation_id} exit {exit_index} as {fmt} failed "
                        f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
                    ) from None
                got = run_exported(path, fmt, x.numpy())
                diff = float(np.abs(got - reference).max()) if got.shape == reference.shape else math.inf
                if not diff <= bound:
                    path.unlink(missing_ok=True)
                    raise EvowattError(
                        f"verification failed: {fmt} export of evaluation {evaluation_id} exit {exit_index} "
                        f"differs from evowatt's model by max |diff| {diff:.3g} on {len(x)} test images "
                        f"(tolerance {bound:.3g}, output shapes {got.shape} vs {reference.shape}); "
                        "file removed"
                    )
                files[fmt] = path
                diffs[fmt] = diff
            test_metric = rebuilt.row.metrics.get(f"test_accuracy{suffix}")
            if test_metric is None:  # scored here, from the same weights; the store is not written
                _, accuracy = evaluate_split(model, test_x, test_y, 1024)
                test_metric = {"value": accuracy, "method": "computed:test", "source": "evowatt export"}
            card = _card(
                store,
                rebuilt,
                exit_index,
                splits,
                data,
                meter,
                {"scale": scale, "raw": raw_description, "normalise": normalise},
                files,
                diffs,
                bound,
                len(x),
                test_metric,
            )
            card_json = out / f"{stem}.card.json"
            card_md = out / f"{stem}.card.md"
            card_json.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            card_md.write_text(card_markdown(card), encoding="utf-8")
            exported.append(ExportedModel(evaluation_id, exit_index, files, card_json, card_md, diffs, card))
    return exported


def _card(
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
        "usage": _usage(first, files[first].name, splits.input_shape) if first else [],
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
