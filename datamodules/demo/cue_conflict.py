"""The generated cue-conflict set: each shape class drawn with every class's texture, in
Geirhos et al.'s layout `<root>/<shape>/<shape><i>-<texture><j>.png` (the names are those that
`datamodules.data.cue_conflict` reads), for measuring shape bias without the real stimuli.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.data.cue_conflict import cue_conflict_name
from datamodules.demo.cache import ensure_generated
from datamodules.demo.objects import (
    DEMO_DATA_VERSION,
    DEMO_TEXTURES,
    check_num_classes,
    check_positive,
    render_image,
    sample_appearance,
)
from datamodules.demo.preview import first_image, save_grid
from datamodules.demo.shapes import DEMO_CLASSES, sample_geometry
from datamodules.demo.styles import RENDER_STYLES, canonical_style

# First element of every per-image seed, so the generators never share random streams.
_CUE_CONFLICT_STREAM = 2


def generate_cue_conflict_demo(
    root: str | Path,
    *,
    num_classes: int = 6,
    images_per_pair: int = 10,
    image_size: int = 96,
    seed: int = 0,
    style: str = "Neutral",
) -> Path:
    """Write cue-conflict images to `<root>/<shape>/<shape><i>-<texture><j>.png`; return root.

    Every (shape class, texture class) pair gets `images_per_pair` images, including the pairs
    where both agree (excluded from shape bias, as in Geirhos et al.'s set). As there, `i`
    numbers the shape instance and `j` the texture instance: `Circle3-Star3.png` and
    `Circle3-Heart3.png` share the same circle (position, size, rotation) and
    `Circle3-Star3.png` and `Cross3-Star3.png` the same star texture (colours, period, phase).

    Args:
        root: output folder (created if needed).
        num_classes: the first `num_classes` of `DEMO_CLASSES` (1..10).
        images_per_pair: images per (shape, texture) pair; i = j = 1..images_per_pair.
        image_size: side of the square images in pixels.
        seed: base seed.
        style: rendering style, "Neutral" (plain grey background) or a demo domain name.
    """
    check_num_classes(num_classes)
    check_positive(images_per_pair=images_per_pair, image_size=image_size)
    style = canonical_style(style)
    style_index = RENDER_STYLES.index(style)
    root = Path(root)
    classes = DEMO_CLASSES[:num_classes]
    for shape_index, shape_name in enumerate(classes):
        shape_dir = root / shape_name
        shape_dir.mkdir(parents=True, exist_ok=True)
        for number in range(1, images_per_pair + 1):
            stream = [_CUE_CONFLICT_STREAM, seed, style_index]
            geometry = sample_geometry(
                style, np.random.default_rng([*stream, 0, shape_index, number])
            )
            for texture_index, texture_name in enumerate(classes):
                appearance = sample_appearance(
                    style, np.random.default_rng([*stream, 1, texture_index, number])
                )
                rng = np.random.default_rng([*stream, 2, shape_index, texture_index, number])
                image = render_image(
                    shape_index, texture_index, style, geometry, appearance, rng, image_size
                )
                name = cue_conflict_name(shape_name, number, texture_name, number)
                Image.fromarray(image).save(shape_dir / name)
    return root


def ensure_cue_conflict_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The cue-conflict demo for these settings, generated into the cache on first use.

    Same contract as `ensure_officehome_demo`, with the settings of
    `generate_cue_conflict_demo`; returns `<cache_dir>/cue_conflict_demo-<hash>`.
    """
    return ensure_generated(
        "cue_conflict", DEMO_DATA_VERSION, generate_cue_conflict_demo, cache_dir, settings
    )


def save_cue_conflict_grid(root: str | Path, output: str | Path) -> Path:
    """Save a PNG of a cue-conflict folder: rows = shape classes, columns = texture classes."""
    root = Path(root)
    shapes = [c for c in DEMO_CLASSES if (root / c).is_dir()]
    cells = [
        [first_image(root / shape, cue_conflict_name(shape, 1, texture, 1)) for texture in shapes]
        for shape in shapes
    ]
    column_labels = [f"texture: {DEMO_TEXTURES[DEMO_CLASSES.index(c)]}\n({c})" for c in shapes]
    row_labels = [f"shape: {c}" for c in shapes]
    return save_grid(cells, row_labels, column_labels, f"Cue-conflict demo: {root}", output)
