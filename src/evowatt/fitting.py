"""`evowatt.fit(x, y, minutes=...)`: a search on arrays already in memory, for a Python user.

The arrays travel to evaluation as the `npz` dataset does: fit writes them into the new run directory
(``data.npz``) and the run's config names that file, so ``evaluate`` stays a pure function of a serialisable
task, and the run can be shown, resumed, reported and exported like any other. The result holds the run's
front and the model to take (``results.answer``), which predicts on raw arrays shaped like ``x`` and exports
as the CLI's ``export --best`` does.

Defaults: the Pareto search on accuracy and energy of examples/digits-pareto.yaml (small networks, one
second per evaluation, a final training of the two most accurate), without its fixed accuracy floor, which
another dataset may never reach.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evowatt.driver.rundir import DATA_NAME, DB_NAME
from evowatt.errors import EvowattError

if TYPE_CHECKING:
    import torch

    from evowatt.config.schema import RunConfig
    from evowatt.driver.results import FrontModel
    from evowatt.driver.session import Progress, RunResult
    from evowatt.handover.export import ExportedModel

DEFAULT_CONFIG: dict[str, Any] = {
    "grammar": "cnn",
    "network": {
        "modules": [
            {"name": "features", "network_structure_init": [1, 2, 3], "network_structure": [0, 10]},
            {"name": "classification", "network_structure_init": [1, 2], "network_structure": [0, 5]},
        ],
        "macro_structure": ["learning", "model_partition"],
    },
    "search": {
        "algorithm": "pareto",
        "population": 8,
        "lambda": 8,
        "objectives": [
            {"metric": "accuracy", "objective": "maximize"},
            {"metric": "energy", "objective": "minimize"},
        ],
    },
    "training": {
        "budget": {"seconds": 1},
        "final_training": {"budget": {"seconds": 5}, "models": 2},
    },
    "output": {"dir": "runs"},
}
GENERATIONS = 5  # without `minutes`: the example's
PREDICT_BATCH = 1024


@dataclass
class FitResult:
    """A finished fit: its run, front and the model to take, which predicts and exports."""

    run_dir: Path
    run: RunResult
    front: list[FrontModel]
    model: FrontModel | None  # the model to take (results.answer); None when none meets the constraints
    classes: np.ndarray  # the label values of y, in the order of the model's outputs
    input_shape: tuple[int, int, int]  # (C, H, W) the model takes
    _network: torch.nn.Module | None = field(default=None, init=False, repr=False)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The chosen model's logits (N, classes) on raw images shaped and scaled like fit's ``x``."""
        import torch

        images = _images(x, "x", self.input_shape)
        network = self._raw_network()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), PREDICT_BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + PREDICT_BATCH]))
                out.append(network(batch).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted label of each image, as values of fit's ``y``."""
        return self.classes[self.logits(x).argmax(axis=1)]

    def export(
        self, out: str | os.PathLike[str] | None = None, formats: tuple[str, ...] | list[str] = ("onnx",)
    ) -> list[ExportedModel]:
        """The chosen model (its exit alone) as files, ONNX by default, with its model card, each verified
        as ``evowatt export`` verifies; it takes float32 (N, C, H, W) raw values, as ``x`` holds them, and
        returns logits. (``export --best`` exports every exit of the chosen model's evaluation.)"""
        from evowatt.driver.store import RunStore
        from evowatt.handover.export import export_models
        from evowatt.handover.formats import FORMATS
        from evowatt.handover.verify import VERIFY_IMAGES

        chosen = self._chosen()
        formats = tuple(dict.fromkeys(formats))
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise EvowattError(f"unknown format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        target = Path(out) if out is not None else self.run_dir / "export"
        if target.exists() and not target.is_dir():
            raise EvowattError(f"out={target} is an existing file; give a directory for the exported model")
        store = RunStore(self.run_dir)
        try:
            return export_models(store, {chosen.id: {int(chosen.exit)}}, formats, target, True, VERIFY_IMAGES)
        finally:
            store.close()

    def _chosen(self) -> FrontModel:
        if self.model is None:
            raise EvowattError(
                f"the run {self.run_dir} has no model to take: none meets its constraints; loosen them "
                "(constraints=...) or give it more time (minutes=...)"
            )
        return self.model

    def _raw_network(self) -> torch.nn.Module:
        """The chosen model behind the run's input pipeline (scale, normalisation), as the export has it."""
        if self._network is None:
            from evowatt.data.loaders import raw_scale
            from evowatt.driver.results import run_config
            from evowatt.driver.store import RunStore
            from evowatt.driver.tasks import data_ref
            from evowatt.handover.rebuild import RawInput, rebuild

            chosen = self._chosen()
            store = RunStore(self.run_dir)
            try:
                data = data_ref(run_config(store))
                splits = data.load()
                rebuilt = rebuild(store, chosen.id, splits.input_shape, splits.num_classes)
            finally:
                store.close()
            scale, _ = raw_scale(data.name, data.path)
            model = rebuilt.models[int(chosen.exit)]
            self._network = RawInput(model, scale, splits.mean, splits.std).eval()
        return self._network


def fit(
    x: np.ndarray,
    y: np.ndarray,
    minutes: float | None = None,
    *,
    objectives: list[str | dict[str, Any]] | None = None,
    constraints: list[str] | None = None,
    config: RunConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> FitResult:
    """Search networks for images ``x`` (N, H, W), (N, H, W, C) or (N, C, H, W) with labels ``y``.

    ``minutes``: the whole run's wall time, final training included (the config's ``minutes``: the run
    plans what is left unset, docs/configuration.md#minutes-the-time-as-the-one-knob); without it, the
    config's generations.
    ``objectives``: metric names ("accuracy" is maximised, any other minimised) or {metric, objective}.
    ``constraints``: e.g. ["energy < 300nJ"]. ``config``: a RunConfig, a dict or a config file in place of
    the defaults; its dataset is replaced by the arrays. ``overrides``: config sections or dotted keys, e.g.
    ``search={"population": 4}`` or ``**{"training.budget": {"steps": 50}}``. Without ``x_test``, a seeded
    stratified 20 % of the data is held out as the test split (reported only, never selected on).
    """
    from evowatt.driver.session import run
    from evowatt.driver.setup import default_run_dir

    first = fit_config(  # checked before anything is written; names the default run directory
        minutes=minutes,
        objectives=objectives,
        constraints=constraints,
        config=config,
        seed=seed,
        overrides=overrides,
        data_path=DATA_NAME,
    )
    train, test, classes = _arrays(x, y, x_test, y_test, first.seed)
    run_dir = Path(out) if out is not None else default_run_dir(first)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise EvowattError(
            f"fit starts a new run, but {run_dir} (out) already exists and is not an empty directory; give "
            "a new or empty directory"
        )
    file = (run_dir / DATA_NAME).resolve()
    # the checked config, its dataset now naming the file the arrays go to (nothing else differs)
    cfg = first.model_copy(update={"dataset": first.dataset.model_copy(update={"path": str(file)})})
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(file, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    except OSError as exc:
        raise EvowattError(
            f"cannot write {file}: {exc.strerror or exc}; give out= a directory you can write"
        ) from None
    try:
        result = run(cfg, out=run_dir, progress=progress)
    except BaseException:
        if not (run_dir / DB_NAME).exists():  # refused before it started: leave nothing behind
            file.unlink(missing_ok=True)
            if created and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
    return _result(run_dir, result, classes, cfg)


def fit_config(
    *,
    minutes: float | None = None,
    objectives: list[str | dict[str, Any]] | None = None,
    constraints: list[str] | None = None,
    config: RunConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    data_path: str,
) -> RunConfig:
    """The run's config: the defaults (or ``config``) with the overrides, the arrays' npz as the dataset."""
    from evowatt.config.load import load_config, validate_config
    from evowatt.config.schema import RunConfig

    if config is None:
        data = copy.deepcopy(DEFAULT_CONFIG)
    elif isinstance(config, RunConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        data = load_config(config).to_dict()
    for key, value in (overrides or {}).items():
        *parts, last = key.split(".")
        node = data
        for part in parts:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EvowattError(f"fit override {key!r}: {part!r} is a value, not a section")
        if _section(value) and _section(node.get(last)):
            node[last] = _merged(node[last], value)
        else:
            node[last] = copy.deepcopy(value)
    search = data.setdefault("search", {})
    if objectives is not None:
        search["objectives"] = [_objective(o) for o in objectives]
    if constraints is not None:
        search["constraints"] = list(constraints)
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0:
            raise EvowattError(f"minutes must be a positive number, got {minutes!r}")
        if not math.isfinite(minutes):
            raise EvowattError(f"minutes must be finite, got {minutes!r}; leave it out for no time limit")
        data["minutes"] = float(minutes)  # the whole run's time: the plan sizes what is left unset
        if config is None:  # the defaults' sizes are the example's; with a time, the plan's instead
            for key in ("generations", "population", "lambda"):
                if key not in (overrides or {}).get("search", {}) and f"search.{key}" not in (
                    overrides or {}
                ):
                    search.pop(key, None)
            training = data.get("training", {})
            for key in ("budget", "final_training"):
                if key not in (overrides or {}).get("training", {}) and f"training.{key}" not in (
                    overrides or {}
                ):
                    training.pop(key, None)
    else:
        search.setdefault("generations", GENERATIONS)
    kept = {k: v for k, v in (data.get("dataset") or {}).items() if k in ("splits", "train_subset")}
    data["dataset"] = {**kept, "name": "npz", "path": data_path}
    data["seed"] = seed
    return validate_config(data, source="evowatt.fit's config")


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra``'s keys over ``base``'s, section by section; a budget ({seconds} or {steps}) is one value."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if _section(value) and _section(out.get(key)):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _section(value: Any) -> bool:
    return isinstance(value, dict) and not (value and set(value) <= {"seconds", "steps"})


def _objective(objective: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(objective, str):
        return {"metric": objective, "objective": "maximize" if objective == "accuracy" else "minimize"}
    return dict(objective)


def _images(x: Any, what: str, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """``x`` as float32 (N, C, H, W) raw values; ``shape``: the (C, H, W) it must have."""
    from evowatt.data.formats import channels_first

    array = np.asarray(x)
    images = channels_first(array, what).astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise EvowattError(f"{what} holds NaN or infinite values")
    if shape is not None and tuple(images.shape[1:]) != tuple(shape):
        raise EvowattError(
            f"{what} holds images of (C, H, W) {tuple(images.shape[1:])}, but the model takes "
            f"{tuple(shape)}: give images shaped like the ones it was fitted on"
        )
    return images


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise EvowattError(f"{what} must hold one label per image ({n}); it has shape {labels.shape}")
    if labels.dtype.kind not in "biuUS":
        raise EvowattError(
            f"{what} must hold integer (or string) class labels, not {labels.dtype}; e.g. {what}.astype(int)"
        )
    return labels


Pair = tuple[np.ndarray, np.ndarray]


def _arrays(x: Any, y: Any, x_test: Any, y_test: Any, seed: int) -> tuple[Pair, Pair, np.ndarray]:
    """(train, test, classes): the images as given, labels as 0..K-1; without x_test a held-out split."""
    from evowatt.data.splits import held_out

    x = np.asarray(x)
    shape = _images(x, "x").shape[1:]
    labels = _labels(y, len(x), "y")
    if (x_test is None) != (y_test is None):
        raise EvowattError("give x_test and y_test together, or neither (then 20 % of x is held out)")
    if x_test is not None:
        x_test = np.asarray(x_test)
        _images(x_test, "x_test", shape)
        test_labels = _labels(y_test, len(x_test), "y_test")
        classes = np.unique(np.concatenate([labels, test_labels]))
    else:
        classes = np.unique(labels)
    if len(classes) < 2:
        raise EvowattError(f"y holds a single class ({classes[0] if len(classes) else 'none'}); fit needs 2")
    y_int = np.searchsorted(classes, labels).astype(np.int64)
    if x_test is not None:
        return (x, y_int), (x_test, np.searchsorted(classes, test_labels).astype(np.int64)), classes
    i_train, i_test = held_out(y_int, seed, "x into training and a held-out test split")
    return (x[i_train], y_int[i_train]), (x[i_test], y_int[i_test]), classes


def _result(run_dir: Path, run: RunResult, classes: np.ndarray, config: RunConfig) -> FitResult:
    from evowatt.driver.results import answer, front
    from evowatt.driver.tasks import data_ref

    shape = data_ref(config).load().input_shape
    return FitResult(run_dir, run, front(run_dir), answer(run_dir), classes, tuple(shape))
