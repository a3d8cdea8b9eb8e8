"""Tests of the generated DTD-like set: layout, label files, partitions, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.demo import (
    DTD_DEMO_CLASSES,
    DTD_NUM_PARTITIONS,
    DTD_SPLITS,
    generate_dtd_demo,
    partition_split,
    render_texture,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.*"))}


def test_dtd_layout_and_label_files(tmp_path):
    root = generate_dtd_demo(tmp_path, num_classes=3, images_per_class=7, image_size=16)
    classes = DTD_DEMO_CLASSES[:3]
    assert sorted(p.name for p in root.iterdir()) == ["images", "labels"]
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(classes)
    everything = sorted(str(p.relative_to(root / "images")) for p in root.glob("images/*/*"))
    assert everything == sorted(f"{c}/{c}_{n:04d}.jpg" for c in classes for n in range(1, 8))
    with Image.open(root / "images" / classes[2] / f"{classes[2]}_0007.jpg") as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (16, 16), "RGB")
    labels = sorted(p.name for p in (root / "labels").iterdir())
    assert labels == sorted(f"{s}{p}.txt" for s in DTD_SPLITS for p in range(1, 11))
    for partition in range(1, DTD_NUM_PARTITIONS + 1):
        splits = {
            s: (root / "labels" / f"{s}{partition}.txt").read_text().splitlines()
            for s in DTD_SPLITS
        }
        # Disjoint and complete; two of each class in val and test, the remainder in train.
        assert sorted(line for lines in splits.values() for line in lines) == everything
        for name, expected in (("train", 3), ("val", 2), ("test", 2)):
            assert [line.split("/")[0] for line in splits[name]].count(classes[1]) == expected


def test_partitions_differ_and_are_reproducible():
    first = partition_split(9, 1, 0, seed=0)
    assert first == partition_split(9, 1, 0, seed=0)
    assert first != partition_split(9, 2, 0, seed=0)
    assert sorted(n for numbers in first.values() for n in numbers) == list(range(1, 10))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    settings = {"num_classes": 2, "images_per_class": 3, "image_size": 16}
    first = _files(generate_dtd_demo(tmp_path / "a", seed=3, **settings))
    again = _files(generate_dtd_demo(tmp_path / "b", seed=3, **settings))
    other = _files(generate_dtd_demo(tmp_path / "c", seed=4, **settings))
    assert first == again
    assert all(first[name] != other[name] for name in first if name.startswith("images"))


@pytest.mark.parametrize("class_index", range(len(DTD_DEMO_CLASSES)))
def test_every_class_renders_a_two_colour_texture(class_index):
    image = render_texture(class_index, np.random.default_rng(class_index), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert image.std() > 10  # both colours show, not a blank image


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="num_classes=11"):
        generate_dtd_demo("unused", num_classes=11)
    with pytest.raises(ValueError, match="images_per_class=2"):
        generate_dtd_demo("unused", images_per_class=2)
    with pytest.raises(ValueError, match="image_size=4"):
        generate_dtd_demo("unused", image_size=4)
    with pytest.raises(ValueError, match="class_index"):
        render_texture(len(DTD_DEMO_CLASSES), np.random.default_rng(0), 16)
