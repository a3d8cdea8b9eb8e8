"""Generated demo textures in the exact DTD layout: procedural texture classes with label files
for all ten partitions, so the DTD DataModule runs unchanged without the real dataset.

`<root>/images/<class>/<class>_<NNNN>.jpg` and `<root>/labels/{train,val,test}{1..10}.txt`
(each line `<class>/<class>_<NNNN>.jpg`); as in DTD, every partition splits each class into
thirds. Colour, scale, orientation, phase, line width, shading and noise are random per image,
so only the pattern's structure carries the class. Generation is seeded per image.

    python -m datamodules.dtd_demo_data --root data/dtd_demo --grid dtd_grid.png
"""

from __future__ import annotations

import argparse
import colorsys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datamodules.demo_data import JPEG_QUALITY, _ensure_generated, _save_grid

DTD_NUM_PARTITIONS = 10
DTD_SPLITS = ("train", "val", "test")
# Part of the cache folder's name: bump it whenever the rendering changes, so that stale caches
# are not reused (the shared DEMO_DATA_VERSION would also invalidate the Office-Home demo).
DTD_DEMO_VERSION = 1
# Streams of the per-image and per-partition random generators, kept apart from demo_data's.
_IMAGE_STREAM, _PARTITION_STREAM = 11, 12
# Patterns are drawn at this multiple of the output size, then area-downsampled (anti-aliasing).
_SUPERSAMPLE = 2
_MIN_PERIOD_PIXELS = 6


# ----------------------------------------------------------------------------------------------
# Patterns: each maps rotated pixel coordinates (u, v), the pattern period and a generator to a
# coverage mask in [0, 1]. Pairs of classes share structure on purpose (stripes/waves/zigzags,
# checks/grid/crosshatch, dots/blobs) so that the task needs more than one global statistic.


def _line_profile(phase: np.ndarray, width: float) -> np.ndarray:
    """1 within `width` (a fraction of the period) of an integer `phase`, else 0."""
    distance = np.abs(phase - np.round(phase))
    return (distance < width / 2).astype(np.float32)


def _stripes(u, v, period, rng):
    return _line_profile(u / period, rng.uniform(0.3, 0.6))


def _waves(u, v, period, rng):
    amplitude = rng.uniform(0.25, 0.6) * period
    wavelength = rng.uniform(1.5, 3.0) * period
    return _line_profile((u + amplitude * np.sin(2 * np.pi * v / wavelength)) / period, 0.4)


def _zigzags(u, v, period, rng):
    amplitude = rng.uniform(0.3, 0.7) * period
    wavelength = rng.uniform(1.0, 2.0) * period
    triangle = 2 * np.abs(v / wavelength - np.floor(v / wavelength + 0.5))  # 0..1 sawtooth
    return _line_profile((u + amplitude * triangle) / period, 0.4)


def _checks(u, v, period, rng):
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def _grid(u, v, period, rng):
    width = rng.uniform(0.12, 0.25)
    return np.maximum(_line_profile(u / period, width), _line_profile(v / period, width))


def _crosshatch(u, v, period, rng):
    # Two families of thin lines crossing at an oblique angle (a grid crosses at 90 degrees).
    tilt = np.deg2rad(rng.uniform(35, 65))
    second = u * np.cos(tilt) + v * np.sin(tilt)
    width = rng.uniform(0.12, 0.22)
    return np.maximum(_line_profile(u / period, width), _line_profile(second / period, width))


def _dots(u, v, period, rng):
    # A lattice of discs, every other row shifted by a random fraction (square to hexagonal).
    shift = rng.uniform(0.0, 0.5)
    row = np.floor(v / period)
    du = (u / period + shift * (row % 2)) % 1.0 - 0.5
    dv = (v / period) % 1.0 - 0.5
    radius = rng.uniform(0.2, 0.35)
    return (du**2 + dv**2 < radius**2).astype(np.float32)


def _rings(u, v, period, rng):
    side = u.shape[0]
    centre_u, centre_v = rng.uniform(-0.5, 0.5, size=2) * side
    distance = np.hypot(u - centre_u, v - centre_v)
    return _line_profile(distance / period, rng.uniform(0.3, 0.5))


def _cracks(u, v, period, rng):
    # Edges of a random Voronoi tessellation: thin, irregular, branching lines.
    side = u.shape[0]
    extent = np.abs(u).max() + np.abs(v).max()
    count = max(4, int((2 * extent / period) ** 2 / 2))
    seeds = rng.uniform(-extent, extent, size=(count, 2)).astype(np.float32)
    points = np.stack([u.ravel(), v.ravel()], axis=1)
    distances = np.sqrt(((points[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=2))
    nearest_two = np.partition(distances, 1, axis=1)[:, :2]
    gap = (nearest_two[:, 1] - nearest_two[:, 0]).reshape(side, side)
    return (gap < rng.uniform(0.06, 0.12) * period).astype(np.float32)


def _blobs(u, v, period, rng):
    # Thresholded smooth noise: irregular patches with no lattice.
    side = u.shape[0]
    cells = max(2, round(side / period))
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    smooth = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    return (smooth > rng.uniform(-0.3, 0.3)).astype(np.float32)


# Class name -> pattern, in generation order (the first `num_classes` are used).
DTD_DEMO_PATTERNS: dict[str, Callable] = {
    "stripes": _stripes,
    "dots": _dots,
    "checks": _checks,
    "waves": _waves,
    "zigzags": _zigzags,
    "grid": _grid,
    "cracks": _cracks,
    "blobs": _blobs,
    "crosshatch": _crosshatch,
    "rings": _rings,
}
DTD_DEMO_CLASSES: tuple[str, ...] = tuple(DTD_DEMO_PATTERNS)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours that differ in brightness, in random order (RGB in [0, 1])."""
    hue = rng.random()
    light = colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.8), rng.uniform(0.7, 1.0))
    other_hue = (hue + rng.uniform(-0.2, 0.2) + (0.5 if rng.random() < 0.3 else 0.0)) % 1.0
    dark = colorsys.hsv_to_rgb(other_hue, rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.45))
    pair = (np.asarray(light, np.float32), np.asarray(dark, np.float32))
    return pair if rng.random() < 0.5 else pair[::-1]


def render_texture(class_index: int, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """One (image_size, image_size, 3) uint8 texture of class `DTD_DEMO_CLASSES[class_index]`."""
    if not 0 <= class_index < len(DTD_DEMO_CLASSES):
        raise ValueError(f"class_index={class_index} must be in 0..{len(DTD_DEMO_CLASSES) - 1}")
    side = image_size * _SUPERSAMPLE
    angle = rng.uniform(0.0, np.pi)
    # A floor in pixels keeps the finest patterns legible in small images (no aliasing to grey).
    period = max(rng.uniform(0.1, 0.3) * side, _MIN_PERIOD_PIXELS * _SUPERSAMPLE)
    coordinates = np.arange(side, dtype=np.float32) - side / 2
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, period)
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, period)
    mask = DTD_DEMO_PATTERNS[DTD_DEMO_CLASSES[class_index]](u, v, period, rng)
    mask = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_AREA)
    background, foreground = _colour_pair(rng)
    image = background + mask[..., None] * (foreground - background)
    # Uneven lighting and sensor noise, as in photographs of real surfaces.
    gradient_angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, image_size, dtype=np.float32)
    ramp_y, ramp_x = np.meshgrid(ramp, ramp, indexing="ij")
    shading = 1 + rng.uniform(0, 0.25) * (
        ramp_x * np.cos(gradient_angle) + ramp_y * np.sin(gradient_angle)
    )
    image = image * shading[..., None] + rng.normal(0, 0.04, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Writing the data set


def partition_split(
    images_per_class: int, partition: int, class_index: int, seed: int
) -> dict[str, list[int]]:
    """Image numbers (1-based) of one class in each split of a partition: thirds, as in DTD;
    when the count is not a multiple of 3, train gets the remainder."""
    rng = np.random.default_rng([_PARTITION_STREAM, seed, partition, class_index])
    order = (rng.permutation(images_per_class) + 1).tolist()
    third = images_per_class // 3
    return {
        "val": sorted(order[:third]),
        "test": sorted(order[third : 2 * third]),
        "train": sorted(order[2 * third :]),
    }


def generate_dtd_demo(
    root: str | Path,
    *,
    num_classes: int = 8,
    images_per_class: int = 30,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a DTD-layout texture set under `root` and return root.

    Args:
        root: output folder (created if needed); it gets `images/` and `labels/`.
        num_classes: the first `num_classes` of `DTD_DEMO_CLASSES` (2..10).
        images_per_class: images per class, numbered 0001, 0002, ...; at least 3, so that every
            split of every partition holds each class.
        image_size: side of the square images in pixels.
        seed: base seed; every image and every partition has its own stream.
    """
    if not 2 <= num_classes <= len(DTD_DEMO_CLASSES):
        raise ValueError(
            f"num_classes={num_classes} must be in 2..{len(DTD_DEMO_CLASSES)} "
            f"(classes: {', '.join(DTD_DEMO_CLASSES)})"
        )
    if images_per_class < 3:
        raise ValueError(f"images_per_class={images_per_class} must be at least 3")
    if image_size < 8:
        raise ValueError(f"image_size={image_size} must be at least 8")
    root = Path(root)
    classes = DTD_DEMO_CLASSES[:num_classes]
    for class_index, class_name in enumerate(classes):
        class_dir = root / "images" / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for number in range(1, images_per_class + 1):
            rng = np.random.default_rng([_IMAGE_STREAM, seed, class_index, number])
            image = render_texture(class_index, rng, image_size)
            Image.fromarray(image).save(
                class_dir / f"{class_name}_{number:04d}.jpg", quality=JPEG_QUALITY
            )
    labels_dir = root / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    for partition in range(1, DTD_NUM_PARTITIONS + 1):
        lines: dict[str, list[str]] = {split: [] for split in DTD_SPLITS}
        for class_index, class_name in enumerate(classes):
            split = partition_split(images_per_class, partition, class_index, seed)
            for name in DTD_SPLITS:
                lines[name] += [f"{class_name}/{class_name}_{n:04d}.jpg" for n in split[name]]
        for name in DTD_SPLITS:
            (labels_dir / f"{name}{partition}.txt").write_text("\n".join(lines[name]) + "\n")
    return root


def ensure_dtd_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The DTD demo for these settings, generated into the cache on first use.

    Args:
        cache_dir: cache folder; default `$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`.
        **settings: keyword arguments of `generate_dtd_demo` (not `root`).

    Returns:
        `<cache_dir>/dtd_v<version>_demo-<hash of settings>`, complete and safe to call from
        several processes at once (same contract as `ensure_officehome_demo`).
    """
    return _ensure_generated(f"dtd_v{DTD_DEMO_VERSION}", generate_dtd_demo, cache_dir, settings)


def save_dtd_grid(root: str | Path, output: str | Path, samples_per_class: int = 6) -> Path:
    """Save a PNG of a DTD-layout folder: one row per class."""
    images_dir = Path(root) / "images"
    classes = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    cells = []
    for class_name in classes:
        files = sorted((images_dir / class_name).glob("*.jpg"))[:samples_per_class]
        row = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        cells.append(row + [None] * (samples_per_class - len(row)))
    columns = [str(i + 1) for i in range(samples_per_class)]
    return _save_grid(cells, classes, columns, f"DTD demo: {root}", output)


def main(args: Sequence[str] | None = None) -> None:
    """Command line: generate the demo textures into a folder, optionally with a sample grid."""
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.dtd_demo_data", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--root", required=True, help="output folder (gets images/, labels/)")
    parser.add_argument("--num-classes", type=int, default=8)
    parser.add_argument("--images", type=int, default=30, help="images per class")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None, help="also save a sample grid PNG here")
    options = parser.parse_args(args)
    started = time.perf_counter()
    root = generate_dtd_demo(
        options.root,
        num_classes=options.num_classes,
        images_per_class=options.images,
        image_size=options.image_size,
        seed=options.seed,
    )
    count = sum(1 for _ in Path(root).glob("images/*/*.jpg"))
    print(f"wrote {count} images to {root} in {time.perf_counter() - started:.1f} s")
    if options.grid:
        print(f"grid: {save_dtd_grid(root, options.grid)}")


if __name__ == "__main__":
    main()
