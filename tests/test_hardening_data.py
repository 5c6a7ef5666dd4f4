"""Classes 3, 8 and 9 of issue 14 for datasets: classes that do not fit the splits are described by what
the data holds and what the splits need; a .npz that is not one is named for what it is, never with a hint
to load it unsafely; CIFAR-10 batches are read by an unpickler that runs nothing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from evowatt.data.datasets import load_splits
from evowatt.data.formats import read_cifar_batch
from evowatt.errors import EvowattError


@pytest.fixture(autouse=True)
def _fresh_memo():
    load_splits.cache_clear()
    yield
    load_splits.cache_clear()


def _npz(path: Path, y_train, y_test, shape=(4, 4)) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.random((len(y_train), *shape)),
        y_train=np.array(y_train),
        x_test=rng.random((len(y_test), *shape)),
        y_test=np.array(y_test),
    )
    return path


# --- class 3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("y_train", "y_test", "kwargs", "says"),
    [
        ([0, 1] * 20, [0, 1, 2] * 3, {}, ["the test labels hold class(es) 2 (3 test samples)", "never show"]),
        ([0, 1] * 20, [0, 1, 2, 3, 3], {}, ["class(es) 2 (1 test samples), 3 (2 test samples)"]),
        ([0] * 30, [0] * 5, {}, ["the training labels hold a single class (0)", "at least 2 classes"]),
        ([0, 1] * 20 + [2], [0, 1, 2], {}, ["class 2: 1", "each class needs at least 3 training samples"]),
        ([0, 1] * 20 + [2, 2, 2], [0, 1, 2], {}, ["the rarest (2) with 1", "needs about 10 per class"]),
        (
            [0, 1, 2] * 20,
            [0, 1] * 20 + [2],
            {"test_subset": 10},
            ["test_subset=10 cannot be drawn stratified", "class 2: 1 sample"],
        ),
        (
            [0, 1] * 40 + [2],
            [0, 1, 2],
            {"train_subset": 30},
            ["train_subset=30 cannot be drawn stratified", "class 2: 1 sample"],
        ),
        (
            [0, 1, 2] * 4,
            [0, 1, 2],
            {"fractions": (0.8, 0.1, 0.1)},
            ["each split needs at least one sample per class"],
        ),
    ],
)
def test_classes_that_do_not_fit_the_splits(y_train, y_test, kwargs, says, tmp_path):
    path = _npz(tmp_path / "d.npz", y_train, y_test)
    with pytest.raises(EvowattError) as info:
        load_splits("npz", path=str(path), **kwargs)
    message = str(info.value)
    for text in says:
        assert text in message, message
    for internal in ("least populated", "n_splits", "test_size", "minimum number of groups"):
        assert internal not in message, message  # sklearn's wording names its arguments, not the data


def test_a_run_with_such_data_is_one_message(tmp_path, capsys):
    import yaml

    from tests.hardening import TINY_RUN, fails

    path = _npz(tmp_path / "d.npz", [0, 1] * 20, [0, 1, 2] * 3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "dataset": {"name": "npz", "path": str(path)}}))
    fails(capsys, ["run", cfg, "--out", tmp_path / "r"], f"{path}: the test labels hold class(es) 2")
    assert not (tmp_path / "r").exists()


# --- class 8: an .npz that is not one -----------------------------------------------------------------
def _text(path):
    path.write_text("x_train,y_train\n1,2\n")


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _empty(path):
    path.write_bytes(b"")


def _objects(path):
    np.savez(
        path,
        x_train=np.array([object()] * 3, dtype=object),
        y_train=np.zeros(3),
        x_test=np.zeros((3, 2, 2)),
        y_test=np.zeros(3),
    )


def _truncated(path):
    _npz(path, [0, 1] * 5, [0, 1])
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_text, "is not an .npz archive (a zip of .npy arrays): it starts with the bytes 78 5f"),
        (_npy, "is a single .npy array, not an .npz archive"),
        (_empty, "is empty"),
        (_objects, "x_train holds Python objects"),
        (_truncated, "it is a damaged .npz archive"),
    ],
)
def test_a_file_that_is_not_an_npz_is_named_for_what_it_is(make, says, tmp_path):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(EvowattError) as info:
        load_splits("npz", path=str(path))
    message = str(info.value)
    assert str(path) in message and says in message, message
    assert "allow_pickle" not in message and "unsafe" not in message  # never suggest loading a pickle


@pytest.mark.parametrize(
    ("name", "path_kind", "says"),
    [
        ("npz", "dir", "is a directory, not a file"),
        ("npz", "missing", "not found (it does not exist)"),
        ("fashion-mnist", "file", "a file, not a directory"),
        ("cifar10", "file", "a file, not a directory"),
    ],
)
def test_a_dataset_path_of_the_wrong_kind(name, path_kind, says, tmp_path):
    path = {"dir": tmp_path, "missing": tmp_path / "nope.npz", "file": tmp_path / "f.bin"}[path_kind]
    if path_kind == "file":
        path.write_bytes(b"data")
    with pytest.raises(EvowattError, match=None) as info:
        load_splits(name, path=str(path))
    assert says in str(info.value) and str(path) in str(info.value)


# --- class 9: CIFAR-10 pickles ------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "builtins.exec":
            return (exec, (f"open({str(self.marker)!r}, 'w').close()",))
        if self.how == "subprocess":
            import subprocess

            return (subprocess.call, (["touch", str(self.marker)],))
        return (Path.touch, (self.marker,))


def _batch(n: int = 2) -> dict:
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": list(range(n)),
        b"data": np.zeros((n, 3072), np.uint8),
        b"filenames": [b"a.png"] * n,
    }


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "subprocess", "pathlib"])
@pytest.mark.parametrize("where", ["top", "inside"])
def test_a_crafted_cifar_batch_runs_nothing(how, where, tmp_path):
    marker = tmp_path / "MARKER"
    payload = _Payload(marker, how)
    batch = payload if where == "top" else {**_batch(), b"data": payload}
    file = tmp_path / "data_batch_1"
    file.write_bytes(pickle.dumps(batch))
    with pytest.raises(EvowattError) as info:
        read_cifar_batch(file)
    assert "is not a CIFAR-10 batch: it asks to call" in str(info.value) and str(file) in str(info.value)
    assert "refused before anything ran" in str(info.value)
    assert not marker.exists()


def test_a_crafted_file_in_dataset_path_runs_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(pickle.dumps(_batch()))
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(_Payload(marker, "os.system")))
    with pytest.raises(EvowattError, match="data_batch_3 is not a CIFAR-10 batch"):
        load_splits("cifar10", path=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_genuine_batches_still_load(protocol, tmp_path):
    file = tmp_path / "data_batch_1"
    batch = _batch(4)
    batch[b"data"] = np.arange(4 * 3072, dtype=np.uint64).astype(np.uint8).reshape(4, 3072)
    file.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_batch(file)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 1, 2, 3]
    assert np.allclose(x.reshape(4, -1) * 255, batch[b"data"])


def test_a_batch_with_str_keys_loads(tmp_path):
    """A batch re-saved by Python 3 has str keys (and bytes written through _codecs.encode at protocol 2)."""
    file = tmp_path / "data_batch_1"
    file.write_bytes(
        pickle.dumps({"labels": [7], "data": np.zeros((1, 3072), np.uint8), "x": b"\xff"}, protocol=2)
    )
    x, y = read_cifar_batch(file)
    assert y.tolist() == [7] and x.shape == (1, 3, 32, 32)
