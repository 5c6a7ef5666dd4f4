"""`evowatt export`: a run's chosen models as ONNX, torch.export `.pt2` or TorchScript, with a model card.

Each exported model takes the dataset's raw input (pixel values as its files hold them: 0..255 for the IDX
and CIFAR sets, 0..16 for sklearn's digits), as float32 of shape (N, C, H, W) with any N, and returns
logits (N, classes): the scaling and the run's normalisation (evo_train's per-channel mean and std) are
baked in as one multiply-add per pixel, unless ``normalise=False`` (then it takes the normalised input the
search trained on). Every exit of a partitioned network is its own standalone model (exit 0: the full
network; exit 1: the early exit).

This module chooses what to export and runs the steps, each in its own module: rebuild.py (the model from
the run's store and weights), formats.py (writing and loading each format), verify.py (every file checked
against evowatt's model the moment it is written) and model_card.py (the card beside each model).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evowatt.data.loaders import raw_scale
from evowatt.driver.store import RunStore
from evowatt.errors import EvowattError
from evowatt.handover.formats import DEFAULT_FORMATS, FORMATS, SUFFIX
from evowatt.handover.model_card import build_card, card_markdown
from evowatt.handover.rebuild import RawInput, rebuild
from evowatt.handover.verify import VERIFY_IMAGES, tolerance, verification_images, write_verified
from evowatt.nn.train import evaluate_split


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
    from evowatt.driver.results import front

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
        from evowatt.driver.results import answer

        model = answer(store.dir)  # every exit of the model to take's evaluation, as before
        chosen[model.id if model is not None else _best_id(store)] = None
    if front:
        members, skipped = front_members(store)
        for evaluation_id, exits in members.items():
            add(evaluation_id, exits)
    if pick:
        from evowatt.driver.results import pick as pick_model

        model = pick_model(store.dir, *pick)
        if model is None:
            raise EvowattError(
                f"no model of {store.dir} meets {' and '.join(pick)} (and the run's constraints)"
            )
        add(model.id, {int(model.exit)})
    if not chosen:
        raise EvowattError("name what to export: evaluation ids, --best, --front or --pick")
    return chosen, skipped


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
        return export_models(
            store, chosen, formats, Path(out) if out else store.dir / "export", normalise, verify_images
        )
    finally:
        store.close()


def export_models(
    store: RunStore,
    chosen: dict[int, set[int] | None],
    formats: tuple[str, ...],
    out: Path,
    normalise: bool,
    n_images: int,
) -> list[ExportedModel]:
    """Export ``chosen`` ({evaluation id: its exits, None for every exit}) from an open store into ``out``:
    every file verified, a card beside each model; the formats are checked by the caller."""
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
    verify_norm, verify_raw = verification_images(test_x, splits, scale, n_images)
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
            bound = tolerance(reference)
            for fmt in formats:
                path = out / f"{stem}{SUFFIX[fmt]}"
                name = f"evaluation {evaluation_id} exit {exit_index}"
                diffs[fmt] = write_verified(wrapped, x, reference, bound, fmt, path, name)
                files[fmt] = path
            test_metric = rebuilt.row.metrics.get(f"test_accuracy{suffix}")
            if test_metric is None:  # scored here, from the same weights; the store is not written
                _, accuracy = evaluate_split(model, test_x, test_y, 1024)
                test_metric = {"value": accuracy, "method": "computed:test", "source": "evowatt export"}
            card = build_card(
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
