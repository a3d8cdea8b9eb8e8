"""Generated MNIST files in torchvision's raw layout (or DomainBed's), for the RotatedMNIST and
ColoredMNIST demos and tests: `<root>/MNIST/raw/{train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte}` in the IDX format
(`datamodules/data/mnist_idx.py`), optionally gzipped as distributed, read by torchvision's `MNIST`
as well as here.

Each digit is a font glyph (one of OpenCV's Hershey fonts, upright or italic) drawn with a
random stroke width, slant and size, then placed as MNIST's digits are: scaled to fit a 20x20
box, centred by its centre of mass in 28x28, white on black. Seeded per image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import datamodules.demo.drawing as drawing
from datamodules.data.domainbed_facts import MNIST_FILES
from datamodules.data.mnist_idx import write_idx
from datamodules.demo.cache import ensure_generated
from datamodules.demo.objects import check_positive

MNIST_DEMO_VERSION = 1
MNIST_SIDE, MNIST_BOX = 28, 20
MNIST_LAYOUTS = {"torchvision": ("MNIST", "raw"), "domainbed": ("MNIST", "MNIST", "raw")}
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)
_MNIST_STREAM = 25
_CANVAS = 112


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 MNIST-style image of `digit` (white on black)."""
    font = _FONTS[int(rng.integers(len(_FONTS)))] | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0)
    canvas = np.zeros((_CANVAS, _CANVAS), np.uint8)
    thickness = int(rng.integers(4, 11))
    cv2.putText(canvas, str(digit), (28, 84), font, 2.2, 255, thickness, cv2.LINE_AA)
    # A hand's slant and tilt.
    shear, angle = rng.uniform(-0.3, 0.3), rng.uniform(-12, 12)
    matrix = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), angle, 1.0)
    matrix[0, 1] += shear
    canvas = cv2.warpAffine(canvas, matrix, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR)
    rows, columns = np.nonzero(canvas > 20)
    glyph = canvas[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    scale = MNIST_BOX * rng.uniform(0.8, 1.0) / max(glyph.shape)
    height = max(1, round(glyph.shape[0] * scale))
    width = max(1, round(glyph.shape[1] * scale))
    glyph = glyph.astype(np.float32) / 255.0
    small = cv2.resize(glyph, (width, height), interpolation=cv2.INTER_AREA)
    # Centre of mass at the image centre, as in MNIST.
    total = small.sum()
    centre_y = (small.sum(axis=1) @ np.arange(height)) / total
    centre_x = (small.sum(axis=0) @ np.arange(width)) / total
    top = int(np.clip(round(MNIST_SIDE / 2 - 0.5 - centre_y), 0, MNIST_SIDE - height))
    left = int(np.clip(round(MNIST_SIDE / 2 - 0.5 - centre_x), 0, MNIST_SIDE - width))
    image = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float32)
    image[top : top + height, left : left + width] = small
    return drawing.to_uint8(image)


def _digits(count: int, seed: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` digits, the ten classes in turn in a seeded order (as balanced as possible)."""
    labels = np.random.default_rng([_MNIST_STREAM, seed, split]).permutation(np.arange(count) % 10)
    images = np.stack(
        [
            render_digit(int(label), np.random.default_rng([_MNIST_STREAM, seed, split, index]))
            for index, label in enumerate(labels)
        ]
    )
    return images, labels.astype(np.uint8)


def generate_mnist_demo(
    root: str | Path,
    *,
    train_images: int = 1200,
    test_images: int = 300,
    seed: int = 0,
    layout: str = "torchvision",
    gzipped: bool = False,
) -> Path:
    """Write the four MNIST IDX files and return `root`.

    Args:
        root: output folder; the files go to `<root>/MNIST/raw/` (torchvision) or
            `<root>/MNIST/MNIST/raw/` (DomainBed's download script).
        train_images: digits in the training files (MNIST: 60,000).
        test_images: digits in the test files (MNIST: 10,000).
        seed: base seed.
        layout: `torchvision` or `domainbed`.
        gzipped: write `<name>.gz` files, as distributed, instead of the unzipped ones.
    """
    check_positive(train_images=train_images, test_images=test_images)
    if layout not in MNIST_LAYOUTS:
        raise ValueError(f"layout={layout!r}; valid choices: {list(MNIST_LAYOUTS)}")
    folder = Path(root).joinpath(*MNIST_LAYOUTS[layout])
    suffix = ".gz" if gzipped else ""
    for split, count in ((0, train_images), (1, test_images)):
        images, labels = _digits(count, seed, split)
        prefix = "train" if split == 0 else "test"
        write_idx(folder / f"{MNIST_FILES[f'{prefix}_images']}{suffix}", images)
        write_idx(folder / f"{MNIST_FILES[f'{prefix}_labels']}{suffix}", labels)
    return Path(root)


def ensure_mnist_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The MNIST files for these settings (`generate_mnist_demo`'s), generated into the cache
    (`$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`) on first use."""
    return ensure_generated("mnist", MNIST_DEMO_VERSION, generate_mnist_demo, cache_dir, settings)
