"""dataset name: folder: a user's images, one folder per class (optionally under train/ and test/), read
with Pillow whatever they mix (formats, sizes, modes); hidden files ignored, unreadable files skipped and
said, what cannot make a dataset refused with one message and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from evowatt.config.load import validate_config
from evowatt.config.schema import DatasetConfig
from evowatt.data.datasets import load_splits
from evowatt.data.imagefolder import read_image_folder
from evowatt.errors import EvowattError
from tests.conftest import FAST_ESTIMATE
from tests.hardening import TINY_RUN, fails


@pytest.fixture(autouse=True)
def _fresh_memo():
    load_splits.cache_clear()
    yield
    load_splits.cache_clear()


def _save(path, image: Image.Image, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)


def _colour(folder, n: int) -> None:
    """n red-dominated images of mixed formats, sizes and modes (RGB, RGBA, P, CMYK)."""
    for i in range(n):
        size = (10 + 3 * i, 8 + 2 * i)
        kind = i % 5
        if kind == 0:
            _save(folder / f"{i}.png", Image.new("RGB", size, (250, 0, 0)))
        elif kind == 1:
            _save(folder / f"{i}.jpg", Image.new("RGB", size, (250, 0, 0)))
        elif kind == 2:
            _save(folder / f"{i}.png", Image.new("RGBA", size, (250, 0, 0, 255)))
        elif kind == 3:
            _save(folder / f"{i}.gif", Image.new("RGB", size, (250, 0, 0)).convert("P"))
        else:
            _save(folder / "deeper" / f"{i}.jpeg", Image.new("CMYK", size, (0, 255, 255, 5)))


def _grey(folder, n: int, value: int = 40) -> None:
    """n dark grey images: L PNG and JPEG, 16-bit PNG, LA, 1-bit BMP, a grey palette."""
    for i in range(n):
        size = (6 + i, 9 + i)
        kind = i % 6
        if kind == 0:
            _save(folder / f"{i}.png", Image.new("L", size, value))
        elif kind == 1:
            _save(folder / f"{i}.jpg", Image.new("L", size, value))
        elif kind == 2:
            _save(folder / f"{i}.png", Image.fromarray(np.full(size[::-1], value * 257, np.uint16)))
        elif kind == 3:
            _save(folder / f"{i}.png", Image.new("LA", size, (value, 255)))
        elif kind == 4:
            _save(folder / f"{i}.bmp", Image.new("1", size, 0))
        else:
            _save(folder / f"{i}.png", Image.new("L", size, value).convert("P"))


def _junk(root, class_dir: str) -> None:
    """What real folders hold beside images: hidden files and folders, a corrupt image, a note, a text."""
    (root / class_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / class_dir / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / class_dir / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # an AppleDouble file
    (root / "__MACOSX" / class_dir).mkdir(parents=True)
    (root / "__MACOSX" / class_dir / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (root / ".cache").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".cache" / "x.png")  # a hidden folder's image is not data
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    _save(root / class_dir / "broken.png", Image.fromarray(noise))
    png = (root / class_dir / "broken.png").read_bytes()
    (root / class_dir / "broken.png").write_bytes(png[: len(png) // 2])  # a copy cut short
    (root / class_dir / "notes.txt").write_text("not an image")


@pytest.fixture
def mixed(tmp_path):
    """cats (colour, 12), dogs (grey, 12), empty/ (no image), junk, a README at the top."""
    root = tmp_path / "pets"
    _colour(root / "cats", 12)
    _grey(root / "dogs", 12)
    (root / "empty").mkdir()
    _junk(root, "dogs")
    (root / "README.txt").write_text("my pets")
    return root


def test_a_mixed_folder_reads_as_one_dataset(mixed):
    folder = read_image_folder(mixed, (8, 12))
    assert folder.class_names == ("cats", "dogs")  # sorted; the empty class left out
    assert folder.x_train.shape == (24, 3, 8, 12) and folder.x_train.dtype == np.uint8
    assert folder.x_test is None
    assert np.bincount(folder.y_train).tolist() == [12, 12]
    cats, dogs = folder.x_train[folder.y_train == 0], folder.x_train[folder.y_train == 1]
    # every cat red whatever its format or mode (CMYK (0, 255, 255, 5) is nearly pure red too)
    assert (cats[:, 0] >= 240).all() and (cats[:, 1:] <= 15).all()
    # a grey image gets three equal channels; 16-bit 40*257 is 8-bit 40; the 1-bit image is black
    assert (dogs[:, 0] == dogs[:, 1]).all() and (dogs[:, 1] == dogs[:, 2]).all()
    levels = sorted({int(v) for v in np.unique(dogs)})
    assert set(levels) <= {0, 39, 40, 41}, levels  # JPEG may round by one
    report = folder.report
    assert report.channels == 3 and report.layout == "classes" and report.images == 24
    skipped = {p.path.split("pets/")[1]: p.why for p in report.first_skipped}
    assert set(skipped) == {"README.txt", "dogs/broken.png", "dogs/notes.txt"} and report.skipped == 3
    assert "truncated" in skipped["dogs/broken.png"] and "not an image" in skipped["dogs/notes.txt"]
    assert report.empty_classes == ("empty",)
    notes = " ".join(report.notes())
    assert "skipped 3 file(s)" in notes and "dogs/broken.png" in notes and "empty hold no readable" in notes
    assert all(hidden not in notes for hidden in (".DS_Store", "Thumbs.db", "__MACOSX", ".cache", "._0"))


def test_transparency_is_white_and_channels_follow_the_images(tmp_path):
    root = tmp_path / "d"
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    half.paste((0, 0, 0, 0), (0, 0, 4, 2))  # the top half transparent
    for i in range(4):
        _save(root / "a" / f"{i}.png", half)
        _save(root / "b" / f"{i}.png", Image.new("LA", (4, 4), (0, 0)))
    folder = read_image_folder(root, (4, 4))
    a = folder.x_train[folder.y_train == 0]
    assert (a[:, :, :2, :] == 255).all() and (a[:, :, 2:, :] == 0).all()  # rows: transparent top half
    assert (folder.x_train[folder.y_train == 1] == 255).all()
    assert folder.report.channels == 1  # black and white in RGBA, grey with alpha: grey content

    grey = tmp_path / "g"
    _grey(grey / "x", 6)
    _grey(grey / "y", 6, value=200)
    assert read_image_folder(grey, (5, 5)).x_train.shape == (12, 1, 5, 5)  # every image grey: 1 channel
    assert read_image_folder(grey, (5, 5), channels=3).x_train.shape == (12, 3, 5, 5)
    mixed = tmp_path / "m"
    _colour(mixed / "red", 5)
    _grey(mixed / "grey", 5)
    as_grey = read_image_folder(mixed, (4, 4), channels=1)
    assert as_grey.x_train.shape == (10, 1, 4, 4)
    red = as_grey.x_train[as_grey.y_train == 1]
    assert ((red >= 70) & (red <= 80)).all()  # luma of red, 0.299 * 250


def test_splits_scale_and_hold_out_like_the_other_datasets(mixed):
    splits = load_splits("folder", str(mixed), image_size=(8, 12))
    assert splits.input_shape == (3, 8, 12) and splits.num_classes == 2
    assert splits.class_names == ("cats", "dogs")
    parts = [splits.evo_train, splits.evo_validation, splits.evo_test, splits.test]
    assert sum(len(p.y) for p in parts) == 24 and len(splits.test.y) == 5  # a seeded 20 % held out
    for part in parts:
        assert set(np.unique(part.y)) == {0, 1}  # stratified
    # pixels / 255, normalised with evo_train's statistics, as for the IDX and CIFAR sets
    assert abs(float(splits.evo_train.x.mean())) < 1e-5
    again = load_splits("folder", str(mixed), image_size=(8, 12))
    assert again is splits  # memoised
    other = load_splits("folder", str(mixed), seed=1, image_size=(8, 12))
    assert not np.array_equal(other.test.x, splits.test.x)  # the held-out split follows the seed
    assert splits.notes() and "skipped 3 file(s)" in splits.notes()[0]


def test_train_and_test_folders(tmp_path):
    root = tmp_path / "split"
    for split, n in (("train", 10), ("val", 2), ("test", 3)):
        _colour(root / split / "cat", n)
        _grey(root / split / "dog", n)
    splits = load_splits("folder", str(root), image_size=16)
    assert len(splits.test.y) == 6 and np.bincount(splits.test.y).tolist() == [3, 3]  # test/ is the test
    evo = sum(len(p.y) for p in (splits.evo_train, splits.evo_validation, splits.evo_test))
    assert evo == 24  # train/ and val/, which joined it
    assert splits.source.layout == "train/test" and splits.source.joined_training == ("val",)
    assert "val/ joined the training set" in " ".join(splits.notes())


def test_a_class_named_train_is_a_class(tmp_path):
    root = tmp_path / "vehicles"
    _colour(root / "train", 6)
    _grey(root / "bus", 6)
    folder = read_image_folder(root, (4, 4))
    assert folder.class_names == ("bus", "train") and folder.report.layout == "classes"


def test_image_size_and_channels_in_the_config(tmp_path):
    config = DatasetConfig(name="folder", path=str(tmp_path), image_size=28)
    assert config.image_size == (28, 28) and config.channels is None
    assert DatasetConfig(name="folder", path=".", image_size=[32, 24], channels=3).image_size == (32, 24)
    for bad, says in (
        ({"name": "folder", "path": "."}, "needs image_size"),
        ({"name": "folder", "image_size": 8}, "needs path"),
        ({"name": "folder", "path": ".", "image_size": [0, 8]}, "from 1 to 4096"),
        ({"name": "folder", "path": ".", "image_size": 8, "channels": 2}, "channels"),
        ({"name": "digits", "image_size": 8}, "apply to name: folder only"),
    ):
        with pytest.raises(EvowattError, match=says):
            validate_config({**TINY_RUN, "dataset": bad})


def _write_config(tmp_path, dataset: dict) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_RUN, "dataset": dataset}))
    return str(cfg)


def _one_class(root):
    _grey(root / "only", 6)


def _no_image(root):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "x.txt").write_text("text")


def _classes_differ(root):
    for split, classes in (("train", ("a", "b")), ("test", ("a", "c"))):
        for c in classes:
            _grey(root / split / c, 4)


def _empty_test(root):
    for c in ("a", "b"):
        _grey(root / "train" / c, 6)
        (root / "test" / c).mkdir(parents=True)


def _too_few(root):
    _grey(root / "a", 6)
    _grey(root / "b", 2)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (None, "not found (it does not exist)"),
        (_one_class, "a classifier needs at least 2 classes, one folder of images each, but only 'only'"),
        (_no_image, "holds no readable image (2 file(s) skipped"),
        (_classes_differ, "differ from those of"),
        (_too_few, "too few training images in class folder(s) b (2)"),
        (_empty_test, "test/ holds no readable image of the classes in train/"),
    ],
)
def test_what_cannot_make_a_dataset_is_one_message(make, says, tmp_path, capsys):
    root = tmp_path / "data"
    if make is not None:
        make(root)
    cfg = _write_config(tmp_path, {"name": "folder", "path": str(root), "image_size": 8})
    err = fails(capsys, ["run", cfg, "--out", tmp_path / "r"], says)
    assert str(root) in " ".join(err.split())
    assert not (tmp_path / "r").exists()


def test_the_cli_refuses_a_folder_without_a_size_in_a_fresh_process(tmp_path):
    cfg = _write_config(tmp_path, {"name": "folder", "path": str(tmp_path)})
    proc = subprocess.run(
        [sys.executable, "-m", "evowatt.cli", "run", cfg, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "needs image_size" in proc.stderr


def test_a_run_on_a_folder_says_what_it_skipped(tmp_path, capsys):
    from evowatt.cli.main import main

    root = tmp_path / "data"
    _colour(root / "red", 10)
    _grey(root / "grey", 10)
    (root / "grey" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = {**TINY_RUN, "dataset": {"name": "folder", "path": str(root), "image_size": 8}}
    data["energy"] = FAST_ESTIMATE
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg), "--out", str(tmp_path / "r")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skipped 1 file(s) that are not readable images" in out and "bad.jpg" in out
