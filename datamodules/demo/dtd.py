"""The generated DTD-like set: procedural texture classes in the exact DTD layout, with label
files for all ten partitions, so the DTD DataModule runs unchanged without the real dataset.

`<root>/images/<class>/<class>_<NNNN>.jpg` and `<root>/labels/{train,val,test}{1..10}.txt`
(each line `<class>/<class>_<NNNN>.jpg`); as in DTD, every partition splits each class into
thirds. Colour, scale, orientation, phase, line width, shading and noise are random per image,
so only the pattern's structure carries the class. Generation is seeded per image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

import datamodules.demo.drawing as drawing
from datamodules.demo.cache import ensure_generated
from datamodules.demo.preview import save_grid

DTD_NUM_PARTITIONS = 10
DTD_SPLITS = ("train", "val", "test")
# Part of the cache key (and of the cache folder's name): bump it whenever the rendering
# changes (here or in the drawing.py functions it uses), so that stale caches are not reused.
DTD_DEMO_VERSION = 1
# Streams of the per-image and per-partition random generators, apart from the other sets'.
_IMAGE_STREAM, _PARTITION_STREAM = 11, 12
_MIN_PERIOD_PIXELS = 6


# ----------------------------------------------------------------------------------------------
# Classes: each draws its random parameters, then a shared pattern of rotated pixel coordinates
# (u, v) with the given period. Pairs of classes share structure on purpose
# (stripes/waves/zigzags, checks/grid/crosshatch, dots/blobs) so that the task needs more than
# one global statistic. The lines sit on integer phases (drawing's default offset).


def _draw_stripes(u, v, period, rng):
    return drawing.stripes(u, width=rng.uniform(0.3, 0.6), period=period)


def _draw_waves(u, v, period, rng):
    amplitude = rng.uniform(0.25, 0.6) * period
    wavelength = rng.uniform(1.5, 3.0) * period
    angle = 2 * np.pi * v / wavelength
    return drawing.waves(u, angle, amplitude=amplitude, width=0.4, period=period)


def _draw_zigzags(u, v, period, rng):
    amplitude = rng.uniform(0.3, 0.7) * period
    wavelength = rng.uniform(1.0, 2.0) * period
    return drawing.zigzag(u, v / wavelength, amplitude=amplitude, width=0.4, period=period)


def _draw_checks(u, v, period, rng):
    return drawing.checks(u, v, scale=0.5, parity=True, period=period)  # squares of a period


def _draw_grid(u, v, period, rng):
    return drawing.grid(u, v, width=rng.uniform(0.12, 0.25), period=period)


def _draw_crosshatch(u, v, period, rng):
    # Two families of thin lines crossing at an oblique angle (a grid crosses at 90 degrees).
    tilt = np.deg2rad(rng.uniform(35, 65))
    second = u * np.cos(tilt) + v * np.sin(tilt)
    return drawing.grid(u, second, width=rng.uniform(0.12, 0.22), period=period)


def _draw_dots(u, v, period, rng):
    # A lattice of discs, every other row shifted by a random fraction (square to hexagonal).
    shift = rng.uniform(0.0, 0.5)
    radius = rng.uniform(0.2, 0.35)
    return drawing.dots(
        u,
        v,
        radius=radius,
        row_shift=shift,
        alternate_rows=True,
        squared_distance=True,
        period=period,
    )


def _draw_rings(u, v, period, rng):
    side = u.shape[0]
    centre_u, centre_v = rng.uniform(-0.5, 0.5, size=2) * side
    distance = np.hypot(u - centre_u, v - centre_v)
    return drawing.rings(distance, width=rng.uniform(0.3, 0.5), period=period)


def _draw_cracks(u, v, period, rng):
    # Edges of a random Voronoi tessellation, about two cells per period squared.
    extent = np.abs(u).max() + np.abs(v).max()
    count = max(4, int((2 * extent / period) ** 2 / 2))
    seeds = rng.uniform(-extent, extent, size=(count, 2)).astype(np.float32)
    return drawing.cracks(u, v, seeds, width=rng.uniform(0.06, 0.12) * period)


def _draw_blobs(u, v, period, rng):
    # Thresholded smooth noise: irregular patches with no lattice.
    side = u.shape[0]
    noise = drawing.smooth_noise(rng, side, max(2, round(side / period)), distribution="normal")
    return drawing.blotches(noise, threshold=rng.uniform(-0.3, 0.3))


# Class name -> (u, v, period, rng) -> signed field of the pattern colour, in generation order
# (the first `num_classes` are used).
DTD_DEMO_PATTERNS: dict[str, Callable] = {
    "stripes": _draw_stripes,
    "dots": _draw_dots,
    "checks": _draw_checks,
    "waves": _draw_waves,
    "zigzags": _draw_zigzags,
    "grid": _draw_grid,
    "cracks": _draw_cracks,
    "blobs": _draw_blobs,
    "crosshatch": _draw_crosshatch,
    "rings": _draw_rings,
}
DTD_DEMO_CLASSES: tuple[str, ...] = tuple(DTD_DEMO_PATTERNS)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours that differ in brightness, in random order (RGB in [0, 1])."""
    hue = rng.random()
    light = drawing.hsv(hue, rng.uniform(0.1, 0.8), rng.uniform(0.7, 1.0))
    other_hue = (hue + rng.uniform(-0.2, 0.2) + (0.5 if rng.random() < 0.3 else 0.0)) % 1.0
    dark = drawing.hsv(other_hue, rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.45))
    pair = (np.asarray(light, np.float32), np.asarray(dark, np.float32))
    return pair if rng.random() < 0.5 else pair[::-1]


def render_texture(class_index: int, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """One (image_size, image_size, 3) uint8 texture of class `DTD_DEMO_CLASSES[class_index]`."""
    if not 0 <= class_index < len(DTD_DEMO_CLASSES):
        raise ValueError(f"class_index={class_index} must be in 0..{len(DTD_DEMO_CLASSES) - 1}")
    side = image_size * drawing.SUPERSAMPLE
    angle = rng.uniform(0.0, np.pi)
    # A floor in pixels keeps the finest patterns legible in small images (no aliasing to grey).
    period = max(rng.uniform(0.1, 0.3) * side, _MIN_PERIOD_PIXELS * drawing.SUPERSAMPLE)
    x, y = drawing.pixel_grid(side, origin=-side / 2)
    u = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, period)
    v = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, period)
    signed = DTD_DEMO_PATTERNS[DTD_DEMO_CLASSES[class_index]](u, v, period, rng)
    mask = drawing.downsample(drawing.hard_coverage(signed), image_size)
    background, foreground = _colour_pair(rng)
    image = drawing.paint(mask, background, foreground)
    # Uneven lighting and sensor noise, as in photographs of real surfaces.
    gradient_angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, image_size, dtype=np.float32)
    ramp_y, ramp_x = np.meshgrid(ramp, ramp, indexing="ij")
    shading = 1 + rng.uniform(0, 0.25) * (
        ramp_x * np.cos(gradient_angle) + ramp_y * np.sin(gradient_angle)
    )
    image = image * shading[..., None] + rng.normal(0, 0.04, image.shape).astype(np.float32)
    return drawing.to_uint8(image, rounding="half_even")


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
            drawing.save_jpeg(image, class_dir / f"{class_name}_{number:04d}.jpg")
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
    return ensure_generated(
        f"dtd_v{DTD_DEMO_VERSION}", DTD_DEMO_VERSION, generate_dtd_demo, cache_dir, settings
    )


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
    return save_grid(cells, classes, columns, f"DTD demo: {root}", output)
