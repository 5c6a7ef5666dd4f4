"""How long `dataset: {name: folder}` takes to read a folder of images (issue 29: seconds for 10,000).

    python bench/folder.py                          # 10,000 28x28 grey PNGs in 10 classes
    python bench/folder.py --size 64 --colour      # 64x64 RGB PNGs, resized to 32x32
    python bench/folder.py --jpeg --size 640 --image-size 64   # photos: large JPEGs, decoded in draft mode

Writes the images into a temporary folder (not timed), then times `load_splits` (read, convert, resize,
split and normalise) once, cold, in this process. Printed: images, seconds and images per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from evowatt.data.datasets import load_splits


def write_images(root: Path, n: int, classes: int, size: int, colour: bool, jpeg: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if colour else (size, size)
    for i in range(n):
        folder = root / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.{'jpg' if jpeg else 'png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=28, help="side of the images written")
    parser.add_argument(
        "--image-size", type=int, default=None, help="side they are read at (default: --size)"
    )
    parser.add_argument("--colour", action="store_true")
    parser.add_argument("--jpeg", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_images(root, args.images, args.classes, args.size, args.colour, args.jpeg)
        start = time.perf_counter()
        splits = load_splits("folder", str(root), image_size=args.image_size or args.size)
        seconds = time.perf_counter() - start
    kind = f"{args.size}x{args.size} {'RGB' if args.colour else 'grey'} {'JPEG' if args.jpeg else 'PNG'}"
    print(
        f"{args.images} {kind} images read at {splits.input_shape}: {seconds:.2f} s "
        f"({args.images / seconds:,.0f} images/s)"
    )


if __name__ == "__main__":
    main()
