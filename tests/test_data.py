"""Datasets and splits: digits (bundled), tiny IDX / CIFAR / npz files written here, real Fashion-MNIST
when the Debian package is installed."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from evowatt.data import loaders
from evowatt.data.datasets import Splits, load_splits
from evowatt.data.formats import read_idx
from evowatt.data.loaders import DATASETS, IDX_FILES
from evowatt.errors import EvowattError

EVO = ("evo_train", "evo_validation", "evo_test")
ALL = (*EVO, "test")


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch):
    """Each test sees its own files and environment, not a memo from another test."""
    monkeypatch.delenv(loaders.ENV_VAR, raising=False)
    load_splits.cache_clear()
    yield
    load_splits.cache_clear()


# ------------------------------------------------------------------------------------------------ helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    assert arr.dtype == np.uint8
    return (
        struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    )


def make_images(n: int, classes: int, offset: int = 0, hw: tuple[int, int] = (5, 6)):
    """Image i is constant (offset + i) so a sample can be identified after normalisation."""
    ids = np.arange(offset, offset + n)
    x = np.broadcast_to(ids[:, None, None], (n, *hw)).astype(np.uint8)
    y = (ids % classes).astype(np.uint8)
    return x, y


def write_idx_set(directory: Path, gz: bool, n_train: int = 90, n_test: int = 12, classes: int = 3) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = make_images(n_train, classes)
    x_te, y_te = make_images(n_test, classes, offset=200)
    for stem, arr in zip(IDX_FILES, (x_tr, y_tr, x_te, y_te), strict=True):
        raw = idx_bytes(arr)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)


def sample_ids(s: Splits, split: str) -> np.ndarray:
    """Undo the normalisation of make_images data: the id each sample was built from."""
    x = getattr(s, split).x
    return np.rint((x[:, 0, 0, 0] * s.std[0] + s.mean[0]) * 255).astype(int)


# ----------------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_counts():
    s = load_splits("digits")
    assert s.name == "digits" and s.num_classes == 10 and s.input_shape == (1, 8, 8)
    for name in ALL:
        sp = getattr(s, name)
        assert sp.x.dtype == np.float32 and sp.y.dtype == np.int64
        assert sp.x.shape[1:] == (1, 8, 8) and sp.x.shape[0] == sp.y.shape[0]
        assert sp.x.flags.c_contiguous
    n = {name: len(getattr(s, name).y) for name in ALL}
    assert n["test"] == 360  # 20% of 1797 held out
    assert n["evo_train"] + n["evo_validation"] + n["evo_test"] == 1797 - 360
    assert n["evo_validation"] == round(1437 * 0.2) and n["evo_test"] == round(1437 * 0.1)


def test_digits_stratified_every_class_in_every_split():
    s = load_splits("digits")
    train_counts = np.bincount(np.concatenate([getattr(s, k).y for k in EVO]), minlength=10)
    for name, frac in zip(EVO, (0.7, 0.2, 0.1), strict=True):
        counts = np.bincount(getattr(s, name).y, minlength=10)
        assert (counts > 0).all()
        assert np.abs(counts - train_counts * frac).max() <= 1.5  # proportional per class
    assert (np.bincount(s.test.y, minlength=10) > 0).all()


def test_digits_deterministic_per_seed_and_seeds_differ():
    a = load_splits("digits", seed=3)
    assert load_splits("digits", seed=3) is a  # memoised
    load_splits.cache_clear()
    b = load_splits("digits", seed=3)
    assert b is not a
    for name in ALL:
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
        np.testing.assert_array_equal(getattr(a, name).y, getattr(b, name).y)
    c = load_splits("digits", seed=4)
    for name in ALL:
        assert not np.array_equal(getattr(a, name).x, getattr(c, name).x)


def test_normalised_with_evo_train_statistics_only():
    s = load_splits("digits")
    x = s.evo_train.x.astype(np.float64)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-5
    raw_train = s.evo_train.x * s.std[0] + s.mean[0]
    assert raw_train.min() >= -1e-6 and raw_train.max() <= 1 + 1e-6  # 0..16 scaled to [0, 1]
    # Other splits are normalised with evo_train's statistics, not their own.
    assert abs(float(s.evo_validation.x.mean())) > 1e-4


def test_arrays_are_read_only_so_the_memo_cannot_be_corrupted():
    s = load_splits("digits")
    with pytest.raises(ValueError):
        s.evo_train.x[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        s.test.y[0] = 1


def test_train_subset_and_test_subset_counts_and_stratification():
    full = load_splits("digits")
    s = load_splits("digits", train_subset=300, test_subset=100)
    assert sum(len(getattr(s, k).y) for k in EVO) == 300
    assert len(s.test.y) == 100
    for name in ALL:
        assert (np.bincount(getattr(s, name).y, minlength=10) > 0).all()
    # Stratified: class proportions of the subset follow the full training set's.
    full_p = np.bincount(np.concatenate([getattr(full, k).y for k in EVO]), minlength=10) / 1437
    sub = np.bincount(np.concatenate([getattr(s, k).y for k in EVO]), minlength=10)
    assert np.abs(sub - full_p * 300).max() <= 1.5
    # A subset at least as large as the set keeps all of it.
    big = load_splits("digits", train_subset=10_000)
    assert sum(len(getattr(big, k).y) for k in EVO) == 1437


def test_test_subset_leaves_the_evolution_splits_alone():
    a = load_splits("digits", seed=1)
    b = load_splits("digits", seed=1, test_subset=50)
    for name in EVO:
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
    assert len(b.test.y) == 50


def test_custom_fractions():
    s = load_splits("digits", fractions=(0.5, 0.25, 0.25))
    assert len(s.evo_validation.y) == round(1437 * 0.25) == len(s.evo_test.y)


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(EvowattError) as e:
        load_splits("imagenet")
    for name in DATASETS:
        assert name in str(e.value)


@pytest.mark.parametrize("fractions", [(0.7, 0.2), (0.7, 0.3, 0.0), (0.8, 0.2, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(EvowattError, match="fractions"):
        load_splits("digits", fractions=fractions)


def test_bad_subset_and_seed():
    with pytest.raises(EvowattError, match="train_subset"):
        load_splits("digits", train_subset=0)
    with pytest.raises(EvowattError, match="seed"):
        load_splits("digits", seed=-1)


@pytest.mark.parametrize("rare", [2, 4])
def test_class_with_too_few_samples(tmp_path, rare):
    y_train = np.array([0] * 50 + [1] * 50 + [2] * rare)
    x = np.random.default_rng(0).random((len(y_train), 4, 4)).astype(np.float32)
    f = tmp_path / "d.npz"
    np.savez(f, x_train=x, y_train=y_train, x_test=x[:6], y_test=y_train[:6])
    with pytest.raises(EvowattError, match="Too few samples") as e:
        load_splits("npz", path=str(f))
    assert ("class 2" in str(e.value) or "class, 2," in str(e.value)) and "train_subset" in str(e.value)
    # Enough per class overall, but a tiny train_subset cannot give every split every class.
    with pytest.raises(EvowattError):
        load_splits("digits", train_subset=40)


# ------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_from_path(tmp_path, name, gz):
    write_idx_set(tmp_path, gz=gz)
    s = load_splits(name, path=str(tmp_path))
    assert s.input_shape == (1, 5, 6) and s.num_classes == 3
    assert len(s.test.y) == 12
    ids = {k: sample_ids(s, k) for k in ALL}
    # The evolution splits partition the official training set; the test split is the official test set.
    evo_ids = np.concatenate([ids[k] for k in EVO])
    assert sorted(evo_ids.tolist()) == list(range(90))
    assert sorted(ids["test"].tolist()) == list(range(200, 212))
    for k in ALL:  # labels travel with their images
        np.testing.assert_array_equal(getattr(s, k).y, ids[k] % 3)
    assert (len(s.evo_train.y), len(s.evo_validation.y), len(s.evo_test.y)) == (63, 18, 9)


def test_idx_via_env_var_and_subdirectory(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist", gz=True)
    monkeypatch.setenv(loaders.ENV_VAR, str(tmp_path))
    s = load_splits("mnist")
    assert sum(len(getattr(s, k).y) for k in EVO) == 90

    load_splits.cache_clear()
    write_idx_set(tmp_path / "flat", gz=False, n_train=60)
    monkeypatch.setenv(loaders.ENV_VAR, str(tmp_path / "flat"))
    s = load_splits("mnist")
    assert sum(len(getattr(s, k).y) for k in EVO) == 60


def test_explicit_path_wins_over_env(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "a", gz=True, n_train=60)
    write_idx_set(tmp_path / "b", gz=True, n_train=90)
    monkeypatch.setenv(loaders.ENV_VAR, str(tmp_path / "b"))
    s = load_splits("mnist", path=str(tmp_path / "a"))
    assert sum(len(getattr(s, k).y) for k in EVO) == 60


def test_missing_fashion_mnist_names_every_place_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(loaders.SYSTEM_DIRS, "fashion-mnist", tmp_path / "system")
    env = tmp_path / "env"
    env.mkdir()
    (env / IDX_FILES[0]).write_bytes(b"")  # a partial set: the message says what is missing
    monkeypatch.setenv(loaders.ENV_VAR, str(env))
    with pytest.raises(EvowattError) as e:
        load_splits("fashion-mnist")
    msg = str(e.value)
    for place in (env, env / "fashion-mnist", tmp_path / "system"):
        assert str(place) in msg
    assert "sudo apt-get update && sudo apt-get install dataset-fashion-mnist" in msg
    assert "EVOWATT_DATA" in msg and "dataset.path" in msg
    assert "missing train-labels-idx1-ubyte[.gz]" in msg and "missing train-images" not in msg

    with pytest.raises(EvowattError) as e:
        load_splits("fashion-mnist", path=str(tmp_path / "given"))
    assert str(tmp_path / "given") in str(e.value) and "apt-get install" in str(e.value)


def test_missing_mnist_and_cifar_say_where_to_download(tmp_path):
    with pytest.raises(EvowattError) as e:
        load_splits("mnist", path=str(tmp_path))
    assert "t10k-images-idx3-ubyte" in str(e.value) and "http" in str(e.value)
    with pytest.raises(EvowattError) as e:
        load_splits("cifar10", path=str(tmp_path))
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "data_batch_1" in msg and "test_batch" in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"\x08\x03" + b[2:],  # bad magic
        lambda b: b[:-7],  # truncated data
        lambda b: b[:6],  # truncated header
        lambda b: b + b"\x00",  # trailing junk
    ],
)
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_idx_names_the_file(tmp_path, damage, gz):
    write_idx_set(tmp_path, gz=False)
    victim = tmp_path / IDX_FILES[2]
    broken = damage(victim.read_bytes())
    victim.unlink()
    if gz:
        victim = victim.with_name(victim.name + ".gz")
        broken = gzip.compress(broken)
    victim.write_bytes(broken)
    with pytest.raises(EvowattError) as e:
        load_splits("mnist", path=str(tmp_path))
    assert str(victim) in str(e.value)


def test_truncated_gzip_names_the_file(tmp_path):
    write_idx_set(tmp_path, gz=True)
    victim = tmp_path / f"{IDX_FILES[0]}.gz"
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(EvowattError) as e:
        load_splits("fashion-mnist", path=str(tmp_path))
    assert str(victim) in str(e.value)


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


# ------------------------------------------------------------------------------------------------- npz


def _npz_base(rng: np.random.Generator, channels: int):
    x_train = rng.integers(0, 256, (60, channels, 4, 5), dtype=np.uint8)
    x_test = rng.integers(0, 256, (9, channels, 4, 5), dtype=np.uint8)
    y_train = np.array([3, 7, 11] * 20)
    y_test = np.array([11, 7, 3] * 3)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_layouts_agree_and_labels_are_remapped(tmp_path, channels):
    x_tr, y_tr, x_te, y_te = _npz_base(np.random.default_rng(channels), channels)
    layouts = {
        "nchw": (x_tr, x_te),
        "nhwc": (x_tr.transpose(0, 2, 3, 1), x_te.transpose(0, 2, 3, 1)),
    }
    if channels == 1:
        layouts["nhw"] = (x_tr[:, 0], x_te[:, 0])
    results = {}
    for layout, (a, b) in layouts.items():
        f = tmp_path / f"{layout}.npz"
        np.savez(f, x_train=a, y_train=y_tr, x_test=b, y_test=y_te)
        results[layout] = load_splits("npz", path=str(f), seed=5)
    ref = results["nchw"]
    assert ref.input_shape == (channels, 4, 5) and ref.num_classes == 3
    assert len(ref.mean) == channels
    assert set(np.unique(ref.evo_train.y)) == {0, 1, 2}
    np.testing.assert_array_equal(np.sort(ref.test.y), np.sort(np.searchsorted([3, 7, 11], y_te)))
    for s in results.values():
        for k in ALL:
            np.testing.assert_array_equal(getattr(s, k).x, getattr(ref, k).x)
            np.testing.assert_array_equal(getattr(s, k).y, getattr(ref, k).y)
    # uint8 is scaled by 1/255: the same data as floats in [0, 1] gives the same statistics.
    f = tmp_path / "float.npz"
    np.savez(f, x_train=x_tr / 255.0, y_train=y_tr, x_test=x_te / 255.0, y_test=y_te)
    fl = load_splits("npz", path=str(f), seed=5)
    np.testing.assert_allclose(fl.mean, ref.mean, rtol=1e-5)
    np.testing.assert_allclose(fl.evo_train.x, ref.evo_train.x, atol=1e-4)


def test_npz_float_values_kept(tmp_path):
    x = np.full((30, 2, 2), 40.0, dtype=np.float32)
    x[:, 0, 0] = np.arange(30)
    f = tmp_path / "f.npz"
    np.savez(f, x_train=x, y_train=np.arange(30) % 2, x_test=x[:4], y_test=np.array([0, 1, 0, 1]))
    s = load_splits("npz", path=str(f))
    assert s.mean[0] > 30  # not divided by 255


def test_npz_errors(tmp_path):
    with pytest.raises(EvowattError, match="x_train"):
        load_splits("npz")
    with pytest.raises(EvowattError, match="does not exist"):
        load_splits("npz", path=str(tmp_path / "nope.npz"))
    f = tmp_path / "partial.npz"
    np.savez(f, x_train=np.zeros((3, 2, 2)), y_train=np.zeros(3))
    with pytest.raises(EvowattError, match="x_test, y_test"):
        load_splits("npz", path=str(f))
    f = tmp_path / "shape.npz"
    np.savez(
        f,
        x_train=np.zeros((30, 5, 4, 4)),
        y_train=np.zeros(30),
        x_test=np.zeros((3, 5, 4, 4)),
        y_test=[0] * 3,
    )
    with pytest.raises(EvowattError, match="shape"):
        load_splits("npz", path=str(f))
    f = tmp_path / "junk.npz"
    f.write_bytes(b"not a zip file")
    with pytest.raises(EvowattError, match=str(f)):
        load_splits("npz", path=str(f))


# ----------------------------------------------------------------------------------------------- CIFAR-10


def write_cifar(directory: Path, per_batch: int = 12, n_test: int = 9, classes: int = 3) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        d = np.empty((n, 3072), dtype=np.uint8)
        d[:, :1024] = rng.integers(0, 50, (n, 1024))  # red dark
        d[:, 1024:2048] = 128  # green constant
        d[:, 2048:] = rng.integers(200, 256, (n, 1024))  # blue bright
        batch = {b"batch_label": name.encode(), b"labels": [i % classes for i in range(n)], b"data": d}
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar10_from_fake_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    s = load_splits("cifar10", path=str(tmp_path))
    assert s.input_shape == (3, 32, 32) and s.num_classes == 3
    assert sum(len(getattr(s, k).y) for k in EVO) == 60 and len(s.test.y) == 9
    assert s.evo_train.x.dtype == np.float32 and s.evo_train.x.shape[1:] == (3, 32, 32)
    # Channel order R, G, B from the row layout of `data`.
    assert s.mean[0] < 50 / 255 and abs(s.mean[1] - 128 / 255) < 1e-6 and s.mean[2] > 200 / 255
    assert s.std[1] == 1.0  # a constant channel is left unscaled rather than divided by zero


def test_cifar10_corrupt_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(EvowattError, match="data_batch_3"):
        load_splits("cifar10", path=str(tmp_path))


# ------------------------------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(
    not (loaders.SYSTEM_DIRS["fashion-mnist"] / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_from_system_location():
    s = load_splits("fashion-mnist", train_subset=2000)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert len(s.test.y) == 10_000 and set(np.unique(s.test.y)) == set(range(10))
    assert sum(len(getattr(s, k).y) for k in EVO) == 2000
    for k in EVO:
        assert (np.bincount(getattr(s, k).y, minlength=10) > 0).all()
    assert 0.2 < s.mean[0] < 0.4  # Fashion-MNIST's pixel mean is about 0.286
