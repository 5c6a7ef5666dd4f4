"""Seeded, stratified splitting: a subset of a set, the evo_train / evo_validation / evo_test split of the
training set, and the held-out test split of a dataset that has none.

Every class of the training set lands in every split, and each step draws from its own seed stream, so
changing one (e.g. test_subset) leaves the others alone. sklearn's errors become messages about what the
data holds and how to fix it. Its own module because the split protocol (DESIGN.md 1 and 2a) is a job apart
from reading files; loaders.py uses `held_out` for the datasets without a test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from evowatt.errors import EvowattError

HELD_OUT = 0.2  # the share of a dataset without a test set that is held out as one


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
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


def step_seed(seed: int, step: int) -> int:
    """An independent stream per split step, so e.g. changing test_subset leaves the evo splits alone."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint32)[0])


def split_indices(
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


def check_classes(name: str, path: object, y_train: np.ndarray, y_test: np.ndarray) -> None:
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


def stratified_subset(y: np.ndarray, n: int, random_state: int, what: str) -> np.ndarray:
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
    keep, _ = split_indices(np.arange(len(y)), y, len(y) - n, random_state, what)
    return keep


def three_way_split(
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
    i_tr, rest = split_indices(idx, y, n_val + n_test, random_states[0], "evo_train", fix)
    i_va, i_te = split_indices(rest, y[rest], n_test, random_states[1], "evo_validation/evo_test", fix)
    for split_name, part in (("evo_train", i_tr), ("evo_validation", i_va), ("evo_test", i_te)):
        missing = np.setdiff1d(classes, y[part])
        if len(missing):
            raise EvowattError(
                f"Too few samples to stratify: {split_name} ({len(part)} samples) gets no sample of "
                f"class(es) {', '.join(str(int(c)) for c in missing)}. Use more training data (a larger or "
                f"no train_subset) or a larger fraction for {split_name}."
            )
    return i_tr, i_va, i_te


def held_out(y: np.ndarray, seed: int, what: str, fix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a seeded, stratified HELD_OUT share of a dataset that has no test set."""
    n_test = math.ceil(HELD_OUT * len(y))
    return split_indices(np.arange(len(y)), y, n_test, step_seed(seed, 0), what, fix)
