"""Datasets as in-memory numpy arrays and seeded, stratified evolution splits.

Everything lives in memory (the largest supported set, CIFAR-10, is about 700 MB as float32) because the
trainer and the energy meters want tensors, not a loader. Nothing here downloads: a missing dataset is an
`EvowattError` that names every place evowatt looked and how to get the files. No torch import, so the
search side and worker processes can reason about data without pulling torch in.

Split protocol (DESIGN.md 1 and 2a): the official training set (optionally a stratified `train_subset` of
it) is split, stratified and seeded, into evo_train / evo_validation / evo_test by `fractions`; the official
test set (a seeded 20% held-out split for `digits` and a `folder` without test/, which have none) is
`test`, reported only. Per-channel
mean/std come from evo_train alone, so no statistic leaks from the data selection is scored on.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evowatt.data.imagefolder import FolderReport
from evowatt.errors import EvowattError, require_file

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "npz", "folder")
HELD_OUT = 0.2  # the share of a dataset without a test set that is held out as one

ENV_VAR = "EVOWATT_DATA"

# Where Debian's `dataset-fashion-mnist` puts the real files; no such package exists for mnist, but the
# same layout is the natural place for a system-wide copy.
SYSTEM_DIRS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_SUBDIR = "cifar-10-batches-py"

_HOW_TO_GET = {
    "fashion-mnist": (
        "Install it with `sudo apt-get update && sudo apt-get install dataset-fashion-mnist` (files land "
        "in /usr/share/datasets/fashion-mnist), or set EVOWATT_DATA / dataset.path to a directory holding "
        "the four IDX files (from https://github.com/zalandoresearch/fashion-mnist, "
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/): "
        + ", ".join(f"{f}[.gz]" for f in IDX_FILES)
        + "."
    ),
    "mnist": (
        "Download the four official IDX files (http://yann.lecun.com/exdb/mnist/, mirrored at "
        "https://ossci-datasets.s3.amazonaws.com/mnist/): "
        + ", ".join(f"{f}[.gz]" for f in IDX_FILES)
        + "; then set EVOWATT_DATA or dataset.path to the directory holding them "
        "(or put them in /usr/share/datasets/mnist)."
    ),
    "cifar10": (
        "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it "
        "(`tar xzf cifar-10-python.tar.gz`), and set EVOWATT_DATA or dataset.path to the extracted "
        f"{CIFAR_SUBDIR}/ directory (or its parent); it must hold " + ", ".join(CIFAR_FILES) + "."
    ),
}

# The class names of the datasets that have them, in label order (for model cards and reports).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip


def raw_scale(name: str, path: str | os.PathLike[str] | None = None) -> tuple[float, str]:
    """What the dataset's files hold per pixel, as the divisor evowatt applied and a description.

    evowatt scales stored pixels to [0, 1] before normalising: IDX and CIFAR bytes (and uint8 npz arrays)
    are divided by 255, sklearn's digits (0..16) by 16; float npz arrays are kept as they are.
    """
    if name == "digits":
        return 16.0, "sklearn digits pixel values, 0..16"
    if name in ("fashion-mnist", "mnist", "cifar10"):
        return 255.0, "uint8 pixel values as the dataset files hold them, 0..255"
    if name == "folder":
        return 255.0, "8-bit pixel values of the images (grey, or R, G, B), 0..255, at the run's image_size"
    if name == "npz" and path is not None:
        try:
            with np.load(Path(path).expanduser(), allow_pickle=False) as npz:
                dtype = npz["x_train"].dtype
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise EvowattError(f"Cannot read {path}: {e}.") from None
        if dtype == np.uint8:
            return 255.0, "uint8 pixel values as x_train holds them, 0..255"
        return 1.0, f"{dtype} values as x_train holds them"
    raise EvowattError(f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}.")


# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


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


# --------------------------------------------------------------------------------------------- public API


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
    fr = _check_fractions(fractions)
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
        raw, class_names, source = _load_folder(path, image_size, channels, seed)
        x_train, y_train, x_test, y_test = raw
    elif image_size is not None or channels is not None:
        raise EvowattError(
            f"dataset.image_size and dataset.channels apply to name: folder only; dataset {name!r} has its "
            "own size and channels: remove them."
        )
    else:
        x_train, y_train, x_test, y_test = _load_raw(name, path, seed)
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
    _check_classes(name, path, y_train, y_test)

    if train_subset is not None and train_subset < len(y_train):
        idx = _stratified_subset(y_train, int(train_subset), _step_seed(seed, 1), "train_subset")
        x_train, y_train = x_train[idx], y_train[idx]
    if test_subset is not None and test_subset < len(y_test):
        idx = _stratified_subset(y_test, int(test_subset), _step_seed(seed, 2), "test_subset")
        x_test, y_test = x_test[idx], y_test[idx]

    i_tr, i_va, i_te = _three_way_split(y_train, fr, (_step_seed(seed, 3), _step_seed(seed, 4)))

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


# ------------------------------------------------------------------------------------------------ splitting


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    ok = (
        len(values) == 3
        and all(math.isfinite(v) and v > 0 for v in values)
        and abs(sum(values) - 1.0) <= 1e-6
    )
    if not ok:
        raise EvowattError(
            f"dataset.fractions must be three positive numbers (evo_train, evo_validation, evo_test) "
            f"summing to 1, e.g. (0.7, 0.2, 0.1); got {fractions!r}."
        )
    return values  # type: ignore[return-value]


def _step_seed(seed: int, step: int) -> int:
    """An independent stream per split step, so e.g. changing test_subset leaves the evo splits alone."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint32)[0])


def _split_indices(
    idx: np.ndarray, y: np.ndarray, n_second: int, random_state: int, what: str, fix: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of `idx` into (len - n_second, n_second); sklearn's errors become user errors."""
    from sklearn.model_selection import train_test_split

    try:
        first, second = train_test_split(idx, test_size=n_second, stratify=y, random_state=random_state)
    except ValueError:  # sklearn's wording names its own arguments: say what the data holds instead
        classes, counts = np.unique(y, return_counts=True)
        rarest = int(np.argmin(counts))
        c, k = int(classes[rarest]), int(counts[rarest])
        held = f"{len(y)} samples of {len(classes)} classes, the rarest ({c}) with {k}"
        raise EvowattError(
            f"Too few samples to stratify {what}: it holds {held}; splitting off {n_second} needs at "
            f"least 2 samples of every class and one of every class on each side.{fix}"
        ) from None
    return np.asarray(first), np.asarray(second)


def _check_classes(name: str, path: object, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """Every class the test set holds must be learnable: evo_train/evo_validation/evo_test come from the
    training set, so a class it never shows could never be predicted. And a classifier needs two."""
    where = f"{path}" if path is not None else f"dataset {name!r}"
    train_classes = np.unique(y_train)
    if len(train_classes) < 2:
        raise EvowattError(
            f"{where}: the training labels hold a single class ({int(train_classes[0])}); a classifier "
            "needs at least 2 classes."
        )
    unseen, counts = np.unique(y_test[~np.isin(y_test, train_classes)], return_counts=True)
    if len(unseen):
        listed = ", ".join(f"{int(c)} ({int(k)} test samples)" for c, k in zip(unseen, counts, strict=True))
        raise EvowattError(
            f"{where}: the test labels hold class(es) {listed} that the training labels never show; "
            f"the training set ({len(train_classes)} classes) is split into evo_train/evo_validation/"
            "evo_test, so every class must appear in it. Add training samples of those classes or drop "
            "them from the test set."
        )


def _stratified_subset(y: np.ndarray, n: int, random_state: int, what: str) -> np.ndarray:
    classes, counts = np.unique(y, return_counts=True)
    rare = [(int(c), int(k)) for c, k in zip(classes, counts, strict=True) if k < 2]
    if rare:
        listed = ", ".join(f"class {c}: {k} sample" for c, k in rare)
        raise EvowattError(
            f"{what}={n} cannot be drawn stratified: {listed} in the {len(y)} samples it is drawn from; a "
            f"stratified subset needs at least 2 samples of every class. Add samples of that class, remove "
            f"it, or leave {what} unset to keep the whole set."
        )
    if n < len(classes) or len(y) - n < len(classes):
        raise EvowattError(
            f"{what}={n} cannot be drawn stratified from {len(y)} samples of {len(classes)} classes: it "
            f"needs at least {len(classes)} samples and to leave at least {len(classes)} out "
            f"(or be >= {len(y)} to keep the whole set)."
        )
    keep, _ = _split_indices(np.arange(len(y)), y, len(y) - n, random_state, what)
    return keep


def _three_way_split(
    y: np.ndarray, fractions: tuple[float, float, float], random_states: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """evo_train / evo_validation / evo_test indices; every class of the training set in every split."""
    classes, counts = np.unique(y, return_counts=True)
    few = [(int(c), int(k)) for c, k in zip(classes, counts, strict=True) if k < 3]
    if few:
        listed = ", ".join(f"class {c}: {k}" for c, k in few)
        raise EvowattError(
            f"Too few samples to stratify into evo_train/evo_validation/evo_test ({listed}); each class "
            f"needs at least 3 training samples. Use more training data (a larger or no train_subset)."
        )
    n = len(y)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    n_train = n - n_val - n_test
    sizes = {"evo_train": n_train, "evo_validation": n_val, "evo_test": n_test}
    small = {k: v for k, v in sizes.items() if v < len(classes)}
    if small:
        raise EvowattError(
            f"{n} training samples split by fractions {fractions} give {sizes}: each split needs at least "
            f"one sample per class ({len(classes)}). Use more training data or larger fractions."
        )
    rarest = int(np.argmin(counts))
    need = max(3, math.ceil(1 / min(fractions)), math.ceil(2 / (fractions[1] + fractions[2])))
    fix = (
        f" The rarest class, {int(classes[rarest])}, has {int(counts[rarest])} training samples: too few for "
        f"one in each of evo_train/evo_validation/evo_test at fractions {fractions}, which needs about "
        f"{need} per class. Use more training data (a larger or no train_subset) or larger fractions."
    )
    idx = np.arange(n)
    i_tr, rest = _split_indices(idx, y, n_val + n_test, random_states[0], "evo_train", fix)
    i_va, i_te = _split_indices(rest, y[rest], n_test, random_states[1], "evo_validation/evo_test", fix)
    for split_name, part in (("evo_train", i_tr), ("evo_validation", i_va), ("evo_test", i_te)):
        missing = np.setdiff1d(classes, y[part])
        if len(missing):
            raise EvowattError(
                f"Too few samples to stratify: {split_name} ({len(part)} samples) gets no sample of "
                f"class(es) {', '.join(str(int(c)) for c in missing)}. Use more training data (a larger or "
                f"no train_subset) or a larger fraction for {split_name}."
            )
    return i_tr, i_va, i_te


# ------------------------------------------------------------------------------------------------- loaders

Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _load_raw(name: str, path: str | os.PathLike[str] | None, seed: int) -> Raw:
    """(x_train, y_train, x_test, y_test): x float32 (N, C, H, W) scaled to [0, 1] where known; y int64."""
    if name == "digits":
        return _load_digits(seed)
    if name in ("fashion-mnist", "mnist"):
        return _load_idx_dataset(name, path)
    if name == "cifar10":
        return _load_cifar10(path)
    if name == "npz":
        return _load_npz(path)
    raise EvowattError(f"Unknown dataset {name!r}. Known datasets: {', '.join(DATASETS)}.")


def _load_digits(seed: int) -> Raw:
    """sklearn's bundled 8x8 digits (no download). It has no official test set, so a seeded stratified
    20% held-out split stands in for one."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    i_train, i_test = held_out(y, seed, "digits test")
    return x[i_train], y[i_train], x[i_test], y[i_test]


def held_out(y: np.ndarray, seed: int, what: str, fix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded, stratified HELD_OUT share of a dataset that has no test set."""
    n_test = math.ceil(HELD_OUT * len(y))
    return _split_indices(np.arange(len(y)), y, n_test, _step_seed(seed, 0), what, fix)


def _load_folder(
    path: str | os.PathLike[str] | None,
    image_size: tuple[int, int] | int | None,
    channels: int | None,
    seed: int,
) -> tuple[Raw, tuple[str, ...], FolderReport]:
    """A folder of class folders (imagefolder.py); without test/, a seeded held-out split is the test."""
    from evowatt.data.imagefolder import HOW, read_image_folder

    if path is None:
        raise EvowattError(f"Dataset 'folder' needs a path: {HOW}.")
    if image_size is None:
        raise EvowattError(
            "Dataset 'folder' needs dataset.image_size, the [height, width] every image is resized to "
            "(e.g. image_size: [32, 32], or 32 for a square)."
        )
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    if not (
        isinstance(image_size, tuple)
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in image_size)
    ):
        raise EvowattError(f"dataset.image_size must be [height, width] or one int, got {image_size!r}.")
    if channels not in (None, 1, 3):
        raise EvowattError(f"dataset.channels must be 1 (grey), 3 (colour) or unset, got {channels!r}.")
    folder = read_image_folder(path, image_size, channels)
    if folder.x_test is not None and len(folder.x_test) == 0:
        raise EvowattError(
            f"{path}: test/ holds no readable image of the classes in train/; add images to it, or remove "
            "it (then a seeded 20% of train/ is held out as the test split)."
        )
    names = folder.class_names
    counts = np.bincount(folder.y_train, minlength=len(names))
    need = 3 if folder.x_test is not None else 4  # one image in each evo split (and the held-out test)
    few = [f"{names[i]} ({int(k)})" for i, k in enumerate(counts) if k < need]
    if few:
        raise EvowattError(
            f"{path}: too few training images in class folder(s) {', '.join(few)}: each class needs at least "
            f"{need} (one in each of evo_train, evo_validation, evo_test"
            + ("" if folder.x_test is not None else " and the held-out test split")
            + "), and about 10 for a useful split. Add images, or remove the class folder."
        )
    x = _images_to_float(folder.x_train, path)
    if folder.x_test is not None and folder.y_test is not None:
        raw = (x, folder.y_train, _images_to_float(folder.x_test, path), folder.y_test)
    else:
        i_train, i_test = held_out(folder.y_train, seed, f"{path} into training and a held-out test split")
        raw = (x[i_train], folder.y_train[i_train], x[i_test], folder.y_train[i_test])
    return raw, names, folder.report


def _search_dirs(
    name: str, path: str | os.PathLike[str] | None, subdirs: Sequence[str]
) -> list[tuple[Path, str]]:
    """Candidate directories with where each came from, in search order."""
    dirs: list[tuple[Path, str]] = []
    if path is not None:
        base = Path(path).expanduser()
        dirs.append((base, "dataset.path"))
        dirs += [(base / s, "dataset.path") for s in subdirs]
        return dirs  # an explicit path is the user's choice: no fallback to other places
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        dirs.append((base, ENV_VAR))
        dirs += [(base / s, ENV_VAR) for s in subdirs]
    if name in SYSTEM_DIRS:
        dirs.append((SYSTEM_DIRS[name], "system location"))
    return dirs


def _not_found(name: str, looked: list[str], path: str | os.PathLike[str] | None) -> EvowattError:
    if path is None:
        unset = ["dataset.path: not set"] + ([] if os.environ.get(ENV_VAR) else [f"${ENV_VAR}: not set"])
        looked = unset + looked
    return EvowattError(
        f"Dataset {name!r} not found. evowatt looked in:\n"
        + "\n".join(f"  - {line}" for line in looked)
        + f"\n{_HOW_TO_GET[name]}"
    )


def _not_a_dir(path: Path) -> str:
    return "a file, not a directory" if path.exists() else "no such directory"


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(name: str, path: str | os.PathLike[str] | None) -> Raw:
    looked: list[str] = []
    for directory, origin in _search_dirs(name, path, (name,)):
        found = {stem: _find_file(directory, stem) for stem in IDX_FILES}
        files = [f for f in found.values() if f is not None]
        if len(files) == len(IDX_FILES):
            return _read_idx_pair(files[0], files[1]) + _read_idx_pair(files[2], files[3])
        missing = ", ".join(f"{stem}[.gz]" for stem, f in found.items() if f is None)
        state = "missing " + missing if directory.is_dir() else _not_a_dir(directory)
        looked.append(f"{directory} ({origin}): {state}")
    raise _not_found(name, looked, path)


def _read_idx_pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_file, ndim=3)
    labels = _read_idx(labels_file, ndim=1)
    if len(images) != len(labels):
        raise EvowattError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels; "
            "the files do not belong together. Re-download them."
        )
    return _images_to_float(images, images_file), _labels_to_int(labels, labels_file)


def _read_bytes(file: Path) -> bytes:
    """File contents, gunzipped when the gzip magic says so (whatever the file's name)."""
    try:
        data = file.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise EvowattError(
            f"Cannot read {file}: {e}. The file is truncated or corrupt; re-download it."
        ) from None
    return data


def read_idx(file: str | os.PathLike[str]) -> np.ndarray:
    """Parse one IDX file (gzip or raw) into an array of its own shape and dtype."""
    return _read_idx(Path(file), ndim=None)


def _read_idx(file: Path, ndim: int | None) -> np.ndarray:
    data = _read_bytes(file)

    def corrupt(why: str) -> EvowattError:
        return EvowattError(
            f"{file} is not a valid IDX file ({why}); it is truncated or corrupt. Re-download it."
        )

    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise corrupt(f"bad magic number {data[:4].hex() or 'empty'}")
    dims_n = data[3]
    if ndim is not None and dims_n != ndim:
        raise corrupt(f"{dims_n} dimensions, expected {ndim}")
    header = 4 + 4 * dims_n
    if len(data) < header:
        raise corrupt("header cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims_n, offset=4))
    dtype = _IDX_DTYPES[data[2]]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise corrupt(f"{len(data) - header} data bytes, the header announces {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _images_to_float(x: np.ndarray, source: Path | str) -> np.ndarray:
    """float32 (N, C, H, W); uint8 pixels scaled to [0, 1], floats kept as they are."""
    out = x.astype(np.float32)
    if x.dtype == np.uint8:
        out /= np.float32(255.0)
    if not np.isfinite(out).all():
        raise EvowattError(f"{source} holds NaN or infinite pixel values.")
    if out.ndim == 3:
        out = out[:, None, :, :]
    return np.ascontiguousarray(out)


def _labels_to_int(y: np.ndarray, source: Path | str) -> np.ndarray:
    if y.size and (y.min() < 0):
        raise EvowattError(f"{source} holds negative labels.")
    return y.astype(np.int64)


def _load_cifar10(path: str | os.PathLike[str] | None) -> Raw:
    """CIFAR-10's "python version": the dataset's own distribution format is pickled dicts (`data` uint8
    (N, 3072), `labels`), read with an unpickler that builds only those (`_CifarUnpickler`; encoding="bytes",
    the files come from Python 2).
    Only files the user points at are opened."""
    looked: list[str] = []
    for directory, origin in _search_dirs(
        "cifar10", path, (CIFAR_SUBDIR, "cifar10", f"cifar10/{CIFAR_SUBDIR}")
    ):
        missing = [f for f in CIFAR_FILES if not (directory / f).is_file()]
        if not missing:
            parts = [_read_cifar_batch(directory / f) for f in CIFAR_FILES]
            x_train = np.concatenate([p[0] for p in parts[:5]])
            y_train = np.concatenate([p[1] for p in parts[:5]])
            return x_train, y_train, parts[5][0], parts[5][1]
        state = _not_a_dir(directory) if not directory.is_dir() else "missing " + ", ".join(missing)
        looked.append(f"{directory} ({origin}): {state}")
    raise _not_found("cifar10", looked, path)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds: builtin containers, bytes, str and numbers (built by
    pickle's own opcodes, which run no code) and numpy arrays. Any other global a pickle names (a function
    or class that a crafted file would call) is refused before anything is called."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        allowed = _cifar_globals().get((module, name))
        if allowed is None:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


@functools.lru_cache(maxsize=1)
def _cifar_globals() -> dict[tuple[str, str], object]:
    """numpy's array reconstruction, under the module names numpy 1 and 2 pickle it with."""
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    core = getattr(np, "_core", None) or np.core
    frombuffer = getattr(core.numeric, "_frombuffer", None)  # protocol 5 pickles
    out: dict[tuple[str, str], object] = {}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        if frombuffer is not None:
            out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    out[("_codecs", "encode")] = _latin1_bytes  # how Python 3 writes bytes at pickle protocol 2
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            # the dataset's own format, see _load_cifar10; never plain pickle.load on a user's file
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise EvowattError(
            f"{file} is not a CIFAR-10 batch: it asks to call {e}, which a CIFAR-10 batch never does "
            "(it holds a dict of bytes, lists and a numpy array). It was refused before anything ran; "
            "replace the file with the one from the official archive."
        ) from None
    except Exception as e:  # unpickling a damaged file can raise almost anything; nothing else runs
        raise EvowattError(f"Cannot read CIFAR-10 batch {file}: {e}. Re-download the dataset.") from None
    if not isinstance(batch, dict):
        raise EvowattError(f"{file} is not a CIFAR-10 batch (expected a dict with data and labels).")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise EvowattError(f"{file} is not a CIFAR-10 batch (no data/labels entries).")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise EvowattError(
            f"{file} is not a CIFAR-10 batch: data {data.dtype} {data.shape}, {len(labels)} labels "
            "(expected uint8 (N, 3072) and N labels)."
        )
    x = data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x), _labels_to_int(labels, file)


def _load_npz(path: str | os.PathLike[str] | None) -> Raw:
    """A user's own data: x_train, y_train, x_test, y_test in one .npz (no pickle allowed)."""
    how = "dataset.path must name a .npz file holding x_train, y_train, x_test and y_test"
    if path is None:
        raise EvowattError(f"Dataset 'npz' needs a file: {how}.")
    file = Path(path).expanduser()
    require_file(file, "Dataset 'npz': dataset.path", f"{how}.")
    _check_npz_magic(file, how)
    arrays = {}
    key = None
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise EvowattError(f"{file} lacks {', '.join(missing)}; {how}.")
            for key in ("x_train", "y_train", "x_test", "y_test"):
                arrays[key] = npz[key]
    except EvowattError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():  # numpy's wording suggests unsafe loading: evowatt never does it
            raise EvowattError(
                f"{file}: {key} holds Python objects (an object array, stored as a pickle), which evowatt "
                f"never loads; store numeric arrays (e.g. x.astype('float32'), y.astype('int64')). {how}."
            ) from None
        raise EvowattError(f"Cannot read {file} ({key}): {e}. {how}.") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise EvowattError(f"Cannot read {file}: it is a damaged .npz archive ({e}). {how}.") from None

    x_train = _npz_images(arrays["x_train"], f"{file}:x_train")
    x_test = _npz_images(arrays["x_test"], f"{file}:x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise EvowattError(
            f"{file}: x_train samples are {x_train.shape[1:]} but x_test samples {x_test.shape[1:]}."
        )
    ys = []
    for key, x in (("y_train", x_train), ("y_test", x_test)):
        y = np.asarray(arrays[key])
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x):
            raise EvowattError(f"{file}:{key} must be 1-D with one label per sample; it is {y.shape}.")
        ys.append(y)
    # Any label values (ints, floats, strings) become 0..K-1 in sorted order; 0..K-1 already is unchanged.
    classes = np.unique(np.concatenate(ys))
    y_train, y_test = (np.searchsorted(classes, y).astype(np.int64) for y in ys)
    return x_train, y_train, x_test, y_test


def _check_npz_magic(file: Path, how: str) -> None:
    """An .npz is a zip of .npy arrays; anything else is named for what it is before numpy reads it."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(8)
    except OSError as e:
        raise EvowattError(f"Cannot read {file}: {e.strerror or e}. {how}.") from None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return
    if head.startswith(b"\x93NUMPY"):
        what = "a single .npy array, not an .npz archive"
    elif not head:
        what = "empty"
    else:
        what = f"not an .npz archive (a zip of .npy arrays): it starts with the bytes {head.hex(' ')}"
    raise EvowattError(
        f"{file} is {what}; {how}: numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
    )


def _npz_images(x: np.ndarray, source: str) -> np.ndarray:
    return _images_to_float(channels_first(x, source), source)


def channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """Images as (N, C, H, W), values untouched: (N, H, W) gets a channel; (N, C, H, W) is kept; (N, H, W, C)
    with C in (1, 3) is transposed. When both readings fit (e.g. (N, 3, 3, 3)) channels-first wins."""
    if x.dtype.kind not in "biuf":
        raise EvowattError(f"{source} must hold numbers, not {x.dtype}.")
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise EvowattError(
            f"{source} has shape {x.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3."
        )
    return x[:, None, :, :] if x.ndim == 3 else x
