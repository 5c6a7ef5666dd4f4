"""Readers of the dataset file formats: IDX (MNIST, Fashion-MNIST; gzip or raw), CIFAR-10's pickled
batches and a user's .npz archive, each into float32 images (N, C, H, W) and int64 labels.

A damaged or crafted file is an `EvowattError` that names the file and the fix: sizes are checked against
the IDX header, a CIFAR-10 batch goes through an unpickler that builds only arrays and refuses any other
global before anything is called, and an .npz is never loaded with pickle. Its own module because these
byte-level checks are a job apart from finding the files (loaders.py) and splitting them (splits.py).
No torch import.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from evowatt.errors import EvowattError, require_file

# (x_train, y_train, x_test, y_test): x float32 (N, C, H, W) scaled to [0, 1] where known; y int64
Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_pair(images_file: Path, labels_file: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_file, ndim=3)
    labels = _read_idx(labels_file, ndim=1)
    if len(images) != len(labels):
        raise EvowattError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels; "
            "the files do not belong together. Re-download them."
        )
    return images_to_float(images, images_file), _labels_to_int(labels, labels_file)


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


def images_to_float(x: np.ndarray, source: Path | str) -> np.ndarray:
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


def read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            # the dataset's own format, see loaders._load_cifar10; never plain pickle.load on a user's file
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


def read_npz(path: str | os.PathLike[str] | None) -> Raw:
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
    return images_to_float(channels_first(x, source), source)


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
