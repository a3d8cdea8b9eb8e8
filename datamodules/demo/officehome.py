"""The generated Office-Home-like set: textured shapes (one class per shape and texture) drawn
in four styles (the domains), in the published layout `<root>/<Domain>/<Class>/<NNNNN>.jpg`,
so the demo runs through the same code path as the real dataset.

Generation is seeded per image, so the same settings give byte-identical files on the same
library versions, and counts or domain selection do not change the images that are generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.demo.cache import ensure_generated
from datamodules.demo.drawing import save_jpeg
from datamodules.demo.objects import (
    DEMO_DATA_VERSION,
    DEMO_TEXTURES,
    check_num_classes,
    check_positive,
    render_object,
)
from datamodules.demo.preview import save_grid
from datamodules.demo.shapes import DEMO_CLASSES
from datamodules.demo.styles import DEMO_DOMAINS, canonical_style

# First element of every per-image seed, so the generators never share random streams.
_OFFICEHOME_STREAM = 1


def generate_officehome_demo(
    root: str | Path,
    *,
    num_classes: int = 6,
    images_per_class: int = 40,
    image_size: int = 96,
    seed: int = 0,
    domains: Sequence[str] = DEMO_DOMAINS,
) -> Path:
    """Write an Office-Home-like set to `<root>/<Domain>/<Class>/<NNNNN>.jpg` and return root.

    Class k is the shape `DEMO_CLASSES[k]` with texture `DEMO_TEXTURES[k]`; each domain is a
    drawing style. Files are written in place (existing files with the same names are
    overwritten); use `ensure_officehome_demo` for a cached, atomically created copy.

    Args:
        root: output folder (created if needed).
        num_classes: the first `num_classes` of `DEMO_CLASSES` (1..10).
        images_per_class: images per class and domain, numbered 00001, 00002, ...
        image_size: side of the square images in pixels.
        seed: base seed; each image has its own stream, so counts and domain selection do not
            change the images that are generated.
        domains: domain folders to write; names from `DEMO_DOMAINS`, `Real_World` also accepted
            (the folder then carries that spelling).
    """
    check_num_classes(num_classes)
    check_positive(images_per_class=images_per_class, image_size=image_size)
    root = Path(root)
    for domain in domains:
        style = canonical_style(domain)
        if style not in DEMO_DOMAINS:
            raise ValueError(f"domain {domain!r} is not a demo domain; use {list(DEMO_DOMAINS)}")
        domain_index = DEMO_DOMAINS.index(style)
        for class_index, class_name in enumerate(DEMO_CLASSES[:num_classes]):
            class_dir = root / domain / class_name
            class_dir.mkdir(parents=True, exist_ok=True)
            for number in range(1, images_per_class + 1):
                rng = np.random.default_rng(
                    [_OFFICEHOME_STREAM, seed, domain_index, class_index, number]
                )
                image = render_object(class_index, class_index, style, rng, image_size)
                save_jpeg(image, class_dir / f"{number:05d}.jpg")
    return root


def ensure_officehome_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The Office-Home demo for these settings, generated into the cache on first use.

    Args:
        cache_dir: cache folder; default `$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`.
        **settings: keyword arguments of `generate_officehome_demo` (not `root`).

    Returns:
        `<cache_dir>/officehome_demo-<hash of settings>`, complete (holds a `.complete` marker
        with the settings). Safe to call from several processes at once.
    """
    return ensure_generated(
        "officehome", DEMO_DATA_VERSION, generate_officehome_demo, cache_dir, settings
    )


def save_officehome_grid(root: str | Path, output: str | Path, samples_per_class: int = 1) -> Path:
    """Save a PNG of an Office-Home-layout folder: rows = domains, columns = classes."""
    root = Path(root)
    domains = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = {p.name for p in (root / domains[0]).iterdir() if p.is_dir()}
    # Demo classes in generation order, any others after them.
    classes = [c for c in DEMO_CLASSES if c in found] + sorted(found - set(DEMO_CLASSES))
    cells, column_labels = [], []
    for class_name in classes:
        texture = (
            DEMO_TEXTURES[DEMO_CLASSES.index(class_name)] if class_name in DEMO_CLASSES else ""
        )
        column_labels += [f"{class_name}\n({texture})"] * samples_per_class
    for domain in domains:
        row = []
        for class_name in classes:
            files = sorted((root / domain / class_name).glob("*.jpg"))[:samples_per_class]
            images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
            row += images + [None] * (samples_per_class - len(images))
        cells.append(row)
    return save_grid(cells, domains, column_labels, f"Office-Home demo: {root}", output)
