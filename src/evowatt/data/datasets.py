"""Datasets as in-memory numpy arrays and seeded, stratified evolution splits: the public `load_splits`.

Everything lives in memory (the largest supported set, CIFAR-10, is about 700 MB as float32) because the
trainer and the energy meters want tensors, not a loader. Nothing here downloads: a missing dataset is an
`EvowattError` that names every place evowatt looked and how to get the files. No torch import, so the
search side and worker processes can reason about data without pulling torch in.

Split protocol (DESIGN.md 1 and 2a): the official training set (optionally a stratified `train_subset` of
it) is split, stratified and seeded, into evo_train / evo_validation / evo_test by `fractions`; the official
test set (a seeded 20% held-out split for `digits` and a `folder` without test/, which have none) is
`test`, reported only. Per-channel
mean/std come from evo_train alone, so no statistic leaks from the data selection is scored on.

This module is the entry point and the split records; finding and reading the files is loaders.py's and
formats.py's job, the splitting helpers are splits.py's.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from evowatt.data.formats import Raw
from evowatt.data.imagefolder import FolderReport
from evowatt.data.loaders import CLASS_NAMES, DATASETS, load_folder, load_raw
from evowatt.data.splits import check_classes, check_fractions, step_seed, stratified_subset, three_way_split
from evowatt.errors import EvowattError


@dataclass(frozen=True, eq=False)
class Split:
    """One split. Arrays are read-only: they are shared through `load_splits`' memo, and a caller that
    edited them in place would silently change the data every later evaluation in the process sees.
    (`eq=False`: element-wise array equality has no single truth value; compare arrays explicitly.)"""

    x: np.ndarray  # float32, (N, C, H, W), normalised with the evo_train statistics
    y: np.ndarray  # int64, (N,)


@dataclass(frozen=True, eq=False)
class Splits:
    """The four splits of one dataset and the statistics they were normalised with."""

    name: str
    evo_train: Split  # training
    evo_validation: Split  # early stopping
    evo_test: Split  # fitness and energy
    test: Split  # official test set (seeded held-out split where none exists); reported only
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, from evo_train only
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None  # label i's name, where the dataset has names
    source: FolderReport | None = None  # a folder dataset: what reading it skipped or left out

    def notes(self) -> list[str]:
        """What a run should tell the user about its data (files skipped, classes left out); [] if none."""
        return self.source.notes() if self.source is not None else []


@functools.lru_cache(maxsize=4)
def load_splits(
    name: str,
    path: str | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    train_subset: int | None = None,
    test_subset: int | None = None,
    image_size: tuple[int, int] | int | None = None,
    channels: int | None = None,
) -> Splits:
    """Load dataset `name` and split it; the same arguments always give identical arrays.

    Memoised (`lru_cache`, 4 entries) because every evaluation in a process asks for the same data and
    parsing Fashion-MNIST or CIFAR-10 costs seconds. This is the memo of a pure function of its arguments,
    not run state: the result depends only on the arguments and the files on disk. The environment
    (`EVOWATT_DATA`) is read inside, so code that changes it must call `load_splits.cache_clear()`.
    All arguments must be hashable (pass `fractions` as a tuple).

    `path`: a directory for the IDX and CIFAR sets and `folder`, a .npz file for `npz`, ignored for
    `digits`. `train_subset` / `test_subset`: at most this many samples of the official training / test set,
    drawn stratified and seeded before the evolution split (a value >= the set's size keeps all of it).
    `image_size` (H, W) and `channels` (1, 3 or None: grey where every image is): `folder` only.
    """
    if name not in DATASETS:
        raise EvowattError(f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}.")
    fr = check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise EvowattError(f"Dataset seed must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    for label, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise EvowattError(f"dataset.{label} must be a positive integer or unset, got {value!r}.")

    class_names: tuple[str, ...] | None = CLASS_NAMES.get(name)
    source: FolderReport | None = None
    if name == "folder":
        raw, class_names, source = load_folder(path, image_size, channels, seed)
        x_train, y_train, x_test, y_test = raw
    elif image_size is not None or channels is not None:
        raise EvowattError(
            f"dataset.image_size and dataset.channels apply to name: folder only; dataset {name!r} has its "
            "own size and channels: remove them."
        )
    else:
        x_train, y_train, x_test, y_test = load_raw(name, path, seed)
    try:
        splits = _split(name, path, seed, fr, train_subset, test_subset, (x_train, y_train, x_test, y_test))
    except EvowattError as e:
        if source is None or class_names is None:
            raise
        legend = ", ".join(f"{i} = {c}" for i, c in enumerate(class_names[:12]))
        more = ", ..." if len(class_names) > 12 else ""
        raise EvowattError(f"{e} (Classes are numbered by folder name: {legend}{more}.)") from None
    return dataclasses.replace(splits, class_names=class_names, source=source)


def _split(
    name: str,
    path: str | None,
    seed: int,
    fr: tuple[float, float, float],
    train_subset: int | None,
    test_subset: int | None,
    raw: Raw,
) -> Splits:
    """The splits of the loaded raw arrays, normalised with evo_train's statistics."""
    x_train, y_train, x_test, y_test = raw
    num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1)) + 1)
    if len(y_train) == 0 or len(y_test) == 0:
        raise EvowattError(f"Dataset {name!r} has an empty training or test set.")
    check_classes(name, path, y_train, y_test)

    if train_subset is not None and train_subset < len(y_train):
        idx = stratified_subset(y_train, int(train_subset), step_seed(seed, 1), "train_subset")
        x_train, y_train = x_train[idx], y_train[idx]
    if test_subset is not None and test_subset < len(y_test):
        idx = stratified_subset(y_test, int(test_subset), step_seed(seed, 2), "test_subset")
        x_test, y_test = x_test[idx], y_test[idx]

    i_tr, i_va, i_te = three_way_split(y_train, fr, (step_seed(seed, 3), step_seed(seed, 4)))

    x_evo_train = x_train[i_tr]
    mean = x_evo_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_evo_train.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std < 1e-12, 1.0, std)  # a constant channel carries no information; avoid 0-division

    def finish(x: np.ndarray, y: np.ndarray, copy: bool = False) -> Split:
        """Normalise in place: the evo splits are fresh fancy-indexed copies; `copy` for one that is not."""
        xs = x.astype(np.float32, order="C", copy=copy)
        xs -= mean.astype(np.float32)[None, :, None, None]
        xs /= std.astype(np.float32)[None, :, None, None]
        ys = np.ascontiguousarray(y, dtype=np.int64)
        xs.flags.writeable = False
        ys.flags.writeable = False
        return Split(x=xs, y=ys)

    c, h, w = x_train.shape[1:]
    return Splits(
        name=name,
        evo_train=finish(x_evo_train, y_train[i_tr]),
        evo_validation=finish(x_train[i_va], y_train[i_va]),
        evo_test=finish(x_train[i_te], y_train[i_te]),
        test=finish(x_test, y_test, copy=True),
        num_classes=num_classes,
        input_shape=(int(c), int(h), int(w)),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
