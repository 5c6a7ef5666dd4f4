"""A user's own images: one folder per class, optionally under train/ and test/, read with Pillow.

Real folders hold more than images, and one bad file should not cost a run: hidden files and folders
(dot-files, ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``) are ignored; a file Pillow cannot open or decode is
skipped and recorded (how many, the first few with why) so the run can say so; a class folder without a
single readable image is left out and named. What cannot make a dataset (a missing path, fewer than two
classes, no image at all, a test/ whose classes differ from train/'s) is an `EvowattError` naming the fix.

Every image becomes uint8 pixels of the declared size: EXIF orientation applied, transparency composited
onto white, palettes expanded, 16-bit images reduced to 8 bits, then stretched (bilinear) to ``image_size``.
The dataset divides by 255 like the IDX and CIFAR sets. No torch import.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evowatt.errors import EvowattError

# names a file manager or an archive adds, never data (compared lower-case); anything starting with "." too
SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "@eadir", "$recycle.bin"})
# a top level holding train/ and only these is the split layout; val/ and the like join the training set,
# from which evowatt splits its own evo_validation
SPLIT_DIRS = ("train", "test", "val", "valid", "validation")
SHOWN = 5  # skipped files named in a note; the rest are counted

HOW = (
    "dataset.path must name a folder holding one folder of images per class (e.g. cats/, dogs/), "
    "optionally under train/ and test/"
)


@dataclass(frozen=True)
class SkippedFile:
    path: str
    why: str


@dataclass(frozen=True)
class FolderReport:
    """What reading the folder found beside the images it used, so a run can say it (``notes``)."""

    root: str
    layout: str  # "classes" (one folder per class), or "train/test", "train" (split folders above them)
    images: int  # images read, test/ included
    channels: int
    skipped: int = 0  # files that are not readable images
    first_skipped: tuple[SkippedFile, ...] = ()  # the first SHOWN of them
    empty_classes: tuple[str, ...] = ()  # class folders without a readable training image: left out
    joined_training: tuple[str, ...] = ()  # split folders (val/) whose images joined the training set

    def notes(self) -> list[str]:
        lines = []
        if self.skipped:
            shown = "; ".join(f"{s.path} ({s.why})" for s in self.first_skipped)
            more = f" and {self.skipped - len(self.first_skipped)} more" if self.skipped > SHOWN else ""
            lines.append(
                f"dataset {self.root}: skipped {self.skipped} file(s) that are not readable images: "
                f"{shown}{more}"
            )
        if self.empty_classes:
            lines.append(
                f"dataset {self.root}: class folder(s) {', '.join(self.empty_classes)} hold no readable "
                "training image and were left out; add images to them or remove them"
            )
        if self.joined_training:
            lines.append(
                f"dataset {self.root}: the images of {', '.join(f'{d}/' for d in self.joined_training)} "
                "joined the training set (evowatt splits its own evo_validation from it)"
            )
        return lines


@dataclass(frozen=True, eq=False)
class ImageFolder:
    """The images of a folder as arrays; ``x_test`` is None where the folder has no test/."""

    x_train: np.ndarray  # uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 (N,), the index of the class folder in ``class_names``
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: tuple[str, ...]  # the kept class folders, sorted by name: label i is class_names[i]
    report: FolderReport


def hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def read_image_folder(
    path: str | os.PathLike[str], image_size: tuple[int, int], channels: int | None = None
) -> ImageFolder:
    """Read every image under ``path`` at ``image_size`` (H, W); ``channels`` 1 or 3, or None: 1 where
    every image is grey, else 3."""
    root = Path(path).expanduser()
    if not root.exists():
        raise EvowattError(f"Dataset 'folder': dataset.path {path} not found (it does not exist); {HOW}.")
    if not root.is_dir():
        raise EvowattError(f"Dataset 'folder': dataset.path {path} is a file, not a directory; {HOW}.")
    skipped: list[SkippedFile] = []
    dirs, files = _entries(root)
    by_name = {d.name.lower(): d for d in dirs}
    split = "train" in by_name and all(name in SPLIT_DIRS for name in by_name)
    if split:
        train_roots = [by_name[n] for n in ("train", "val", "valid", "validation") if n in by_name]
        test_root = by_name.get("test")
        layout = "train/test" if test_root is not None else "train"
        skipped += [SkippedFile(str(f), "not in a class folder") for f in files]
    else:  # the files beside the class folders are recorded as the class folders are listed
        train_roots, test_root, layout = [root], None, "classes"

    train_classes = _classes(train_roots[0], skipped)
    for extra in train_roots[1:]:
        _same_classes(train_roots[0], train_classes, extra, _classes(extra, skipped))
    test_classes = _classes(test_root, skipped) if test_root is not None else None
    if test_classes is not None:
        _same_classes(train_roots[0], train_classes, test_root, test_classes)
    if not train_classes:
        raise EvowattError(f"{root} holds no class folder; {HOW}.")

    reader = _Reader((int(image_size[0]), int(image_size[1])), channels, skipped)
    train = {c: reader.read_class([r / c for r in train_roots]) for c in train_classes}
    test = {c: reader.read_class([test_root / c]) for c in test_classes or ()}
    kept = tuple(c for c in train_classes if train[c])
    empty = tuple(c for c in train_classes if not train[c])
    if reader.count == 0:
        raise EvowattError(
            f"{root} holds no readable image ({len(skipped)} file(s) skipped"
            + (f", e.g. {skipped[0].path}: {skipped[0].why}" if skipped else "")
            + "); evowatt reads PNG, JPEG and whatever else Pillow opens (BMP, GIF, WebP, TIFF)."
        )
    if len(kept) < 2:
        found = f"only {kept[0]!r} holds images" if kept else "none holds images"
        left = f"; empty: {', '.join(empty)}" if empty else ""
        raise EvowattError(
            f"{root}: a classifier needs at least 2 classes, one folder of images each, but {found} "
            f"(class folders: {', '.join(train_classes)}{left}). {HOW}."
        )
    final_channels = channels or (1 if reader.all_grey else 3)
    x_train, y_train = _stack([train[c] for c in kept], image_size, final_channels)
    x_test = y_test = None
    if test_classes is not None:
        x_test, y_test = _stack([test[c] for c in kept], image_size, final_channels)
    first = tuple(skipped[:SHOWN])
    report = FolderReport(
        root=str(root),
        layout=layout,
        images=len(y_train) + (0 if y_test is None else len(y_test)),
        channels=final_channels,
        skipped=len(skipped),
        first_skipped=first,
        empty_classes=empty,
        joined_training=tuple(r.name for r in train_roots[1:]),
    )
    return ImageFolder(x_train, y_train, x_test, y_test, kept, report)


# --------------------------------------------------------------------------------------------- listing


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and files of ``folder``, sorted by name."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if not hidden(e.name))
    except OSError as e:
        raise EvowattError(f"Cannot read the folder {folder}: {e.strerror or e}.") from None
    paths = [folder / n for n in names]
    return [p for p in paths if p.is_dir()], [p for p in paths if not p.is_dir()]


def _classes(folder: Path, skipped: list[SkippedFile]) -> list[str]:
    dirs, files = _entries(folder)
    skipped += [SkippedFile(str(f), "not in a class folder") for f in files]
    return [d.name for d in dirs]


def _same_classes(train_root: Path, train: list[str], other_root: Path, other: list[str]) -> None:
    if other == train:
        return
    only_other = [c for c in other if c not in train]
    only_train = [c for c in train if c not in other]
    parts = []
    if only_other:
        parts.append(f"{other_root} has {', '.join(only_other)}, which {train_root} lacks")
    if only_train:
        parts.append(f"{train_root} has {', '.join(only_train)}, which {other_root} lacks")
    raise EvowattError(
        f"the class folders of {other_root} differ from those of {train_root}: {'; '.join(parts)}. Every "
        "split folder needs the same class folders (an empty one is allowed): rename, add or remove them."
    )


def _files(folder: Path) -> list[Path]:
    """Every visible file under ``folder``, sub-folders included, in a fixed (sorted) order."""
    out: list[Path] = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not hidden(d))
        out += [Path(directory, n) for n in sorted(names) if not hidden(n)]
    return out


# --------------------------------------------------------------------------------------------- reading


class _Reader:
    """Decodes files into uint8 arrays of one size, counting them and whether every one was grey: an image
    is grey when its red, green and blue are equal at every pixel, whatever its file's mode."""

    def __init__(self, size: tuple[int, int], channels: int | None, skipped: list[SkippedFile]):
        self.size = size  # (H, W)
        self.channels = channels
        self.skipped = skipped
        self.count = 0
        self.all_grey = True

    def read_class(self, folders: list[Path]) -> list[np.ndarray]:
        from PIL import Image

        images = []
        # Pillow warns about odd but readable files (EXIF, palettes, large images): not the user's concern
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for file in (f for folder in folders for f in _files(folder)):
                try:
                    pixels = self._read(file)
                except Exception as e:  # noqa: BLE001 - a damaged file makes decoders raise many kinds
                    why = "not an image Pillow can open" if isinstance(e, Image.UnidentifiedImageError) else e
                    self.skipped.append(SkippedFile(str(file), str(why) or type(e).__name__))
                    continue
                images.append(pixels)
        self.count += len(images)
        return images

    def _read(self, file: Path) -> np.ndarray:
        """(H, W) for a grey image, (H, W, 3) for a colour one, uint8."""
        from PIL import Image, ImageOps

        h, w = self.size
        with Image.open(file) as opened:
            if opened.format == "JPEG":  # decode at a reduced scale still >= the size, turned or not
                opened.draft(None, (max(w, h), max(w, h)))
            # a phone's photo is stored sideways with an EXIF tag that says how to turn it; damaged EXIF
            # data leaves the pixels good
            with contextlib.suppress(Exception):
                ImageOps.exif_transpose(opened, in_place=True)
            image = _rgb_or_grey(opened)
            if self.channels is not None:
                image = image.convert("L" if self.channels == 1 else "RGB")
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
            pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 3:
            # grey content in a colour file (a scan saved as RGB, a grey palette): keep one channel
            if self.channels is None and _equal_channels(pixels):
                return pixels[..., 0]
            self.all_grey = False
        return pixels


def _equal_channels(pixels: np.ndarray) -> bool:
    return bool(
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    )


def _rgb_or_grey(image):  # noqa: ANN001, ANN202 - PIL's Image, imported lazily
    """An "L" image for a grey mode, else an "RGB" one; transparency is composited onto white."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I"):  # 16- or 32-bit integers: 16-bit images are scaled to 8 bits
        raw = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(raw / 257.0), 0, 255).astype(np.uint8))  # 2-D uint8: "L"
    if mode in ("1", "L", "F"):
        return image.convert("L")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    else:  # RGB, P, CMYK, YCbCr, ...
        rgb = image if mode == "RGB" else image.convert("RGB")
    return rgb.convert("L") if mode in ("LA", "La") else rgb


def _stack(
    per_class: list[list[np.ndarray]], image_size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, H, W) and int64 labels; a grey image gets 3 equal channels where colour is asked."""
    h, w = int(image_size[0]), int(image_size[1])
    n = sum(len(images) for images in per_class)
    x = np.empty((n, channels, h, w), dtype=np.uint8)
    y = np.empty(n, dtype=np.int64)
    i = 0
    for label, images in enumerate(per_class):
        for pixels in images:
            x[i] = pixels[None, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
            y[i] = label
            i += 1
    return x, y
