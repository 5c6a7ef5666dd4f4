"""The datasets evowatt knows and where their files are: names, class names and pixel scale, the search
for files (dataset.path, then $EVOWATT_DATA, then the system location) and the loaders that turn each
dataset into raw arrays (x_train, y_train, x_test, y_test).

Nothing here downloads: a missing dataset is an `EvowattError` that names every place evowatt looked and
how to get the files. Its own module because finding and dispatching is a job apart from parsing the file
formats (formats.py) and splitting (splits.py); datasets.py builds the public `load_splits` on it.
No torch import.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evowatt.data.formats import Raw, images_to_float, read_cifar_batch, read_idx_pair, read_npz
from evowatt.data.imagefolder import FolderReport
from evowatt.data.splits import held_out
from evowatt.errors import EvowattError

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "npz", "folder")

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


def load_raw(name: str, path: str | os.PathLike[str] | None, seed: int) -> Raw:
    """(x_train, y_train, x_test, y_test): x float32 (N, C, H, W) scaled to [0, 1] where known; y int64."""
    if name == "digits":
        return _load_digits(seed)
    if name in ("fashion-mnist", "mnist"):
        return _load_idx_dataset(name, path)
    if name == "cifar10":
        return _load_cifar10(path)
    if name == "npz":
        return read_npz(path)
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


def load_folder(
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
    x = images_to_float(folder.x_train, path)
    if folder.x_test is not None and folder.y_test is not None:
        raw = (x, folder.y_train, images_to_float(folder.x_test, path), folder.y_test)
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
            return read_idx_pair(files[0], files[1]) + read_idx_pair(files[2], files[3])
        missing = ", ".join(f"{stem}[.gz]" for stem, f in found.items() if f is None)
        state = "missing " + missing if directory.is_dir() else _not_a_dir(directory)
        looked.append(f"{directory} ({origin}): {state}")
    raise _not_found(name, looked, path)


def _load_cifar10(path: str | os.PathLike[str] | None) -> Raw:
    """CIFAR-10's "python version": the dataset's own distribution format is pickled dicts (`data` uint8
    (N, 3072), `labels`), read with an unpickler that builds only those (formats.py; encoding="bytes",
    the files come from Python 2).
    Only files the user points at are opened."""
    looked: list[str] = []
    for directory, origin in _search_dirs(
        "cifar10", path, (CIFAR_SUBDIR, "cifar10", f"cifar10/{CIFAR_SUBDIR}")
    ):
        missing = [f for f in CIFAR_FILES if not (directory / f).is_file()]
        if not missing:
            parts = [read_cifar_batch(directory / f) for f in CIFAR_FILES]
            x_train = np.concatenate([p[0] for p in parts[:5]])
            y_train = np.concatenate([p[1] for p in parts[:5]])
            return x_train, y_train, parts[5][0], parts[5][1]
        state = _not_a_dir(directory) if not directory.is_dir() else "missing " + ", ".join(missing)
        looked.append(f"{directory} ({origin}): {state}")
    raise _not_found("cifar10", looked, path)
