"""Tests of the generated cue-conflict set: layout, shared instances, readable names."""

from __future__ import annotations

from collections import Counter

import numpy as np
from PIL import Image

from datamodules.data.cue_conflict import parse_cue_conflict_name, scan_cue_conflict
from datamodules.demo import DEMO_CLASSES, generate_cue_conflict_demo


def test_cue_conflict_layout(tmp_path):
    root = generate_cue_conflict_demo(tmp_path, num_classes=3, images_per_pair=2, image_size=40)
    classes = DEMO_CLASSES[:3]

    assert sorted(p.name for p in root.iterdir()) == sorted(classes)
    pairs = Counter()
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        shape, shape_instance, texture, texture_instance = parse_cue_conflict_name(path.name)
        assert path.parent.name == shape
        assert shape in classes
        assert texture in classes
        assert 1 <= shape_instance <= 2
        assert 1 <= texture_instance <= 2
        pairs[shape, texture] += 1
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (40, 40)
    # Every pair, including shape == texture (left out of shape bias, as in Geirhos et al.).
    assert pairs == {(s, t): 2 for s in classes for t in classes}


def test_the_reader_reads_the_generated_set(tmp_path):
    root = generate_cue_conflict_demo(tmp_path, num_classes=10, images_per_pair=1, image_size=8)
    categories, images = scan_cue_conflict(root)
    assert categories == sorted(DEMO_CLASSES)  # every class name survives the name format
    assert len(images) == 10 * 10


def test_cue_conflict_images_share_shape_and_texture_instances(tmp_path):
    root = generate_cue_conflict_demo(tmp_path, num_classes=2, images_per_pair=1, image_size=40)
    circle, triangle = DEMO_CLASSES[:2]

    def pixels(shape: str, texture: str) -> np.ndarray:
        return np.asarray(Image.open(root / shape / f"{shape}1-{texture}1.png"), dtype=np.int16)

    # Same circle, other texture: the silhouette (where the image is not background) is equal.
    background = pixels(circle, circle)[0, 0]
    silhouette_a = np.any(pixels(circle, circle) != background, axis=2)
    silhouette_b = np.any(pixels(circle, triangle) != pixels(circle, triangle)[0, 0], axis=2)
    assert (silhouette_a != silhouette_b).mean() < 0.02
    assert not np.array_equal(pixels(circle, circle), pixels(circle, triangle))
