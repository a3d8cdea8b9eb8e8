"""Tests of the generated Office-Home-like set: layout, determinism, rendering, styles."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.demo import (
    DEMO_CLASSES,
    DEMO_DOMAINS,
    RENDER_STYLES,
    generate_officehome_demo,
    render_object,
)

SMALL = {"num_classes": 3, "images_per_class": 2, "image_size": 40}


def _files(root: Path, suffix: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(f"*{suffix}"))}


def test_officehome_layout(tmp_path):
    root = generate_officehome_demo(
        tmp_path / "oh", num_classes=4, images_per_class=3, image_size=48
    )

    assert sorted(p.name for p in root.iterdir()) == sorted(DEMO_DOMAINS)
    assert "Real World" in DEMO_DOMAINS  # with a space, as in the original archive
    for domain in DEMO_DOMAINS:
        class_dirs = sorted(p.name for p in (root / domain).iterdir())
        assert class_dirs == sorted(DEMO_CLASSES[:4])
        for class_name in class_dirs:
            names = sorted(p.name for p in (root / domain / class_name).iterdir())
            assert names == ["00001.jpg", "00002.jpg", "00003.jpg"]
            assert all(re.fullmatch(r"\d{5}\.jpg", name) for name in names)
            with Image.open(root / domain / class_name / "00003.jpg") as image:
                assert image.format == "JPEG"
                assert image.size == (48, 48)
                assert image.mode == "RGB"
                image.load()


def test_officehome_domain_subset_and_repackaged_spelling(tmp_path):
    root = generate_officehome_demo(tmp_path, domains=("Real_World", "Art"), **SMALL)
    assert sorted(p.name for p in root.iterdir()) == ["Art", "Real_World"]
    # The image depends on the domain's style, not on the folder spelling or the other domains.
    spaced = generate_officehome_demo(tmp_path / "spaced", domains=("Real World",), **SMALL)
    assert _files(root / "Real_World", ".jpg") == _files(spaced / "Real World", ".jpg")


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = _files(generate_officehome_demo(tmp_path / "a", seed=7, **SMALL), ".jpg")
    again = _files(generate_officehome_demo(tmp_path / "b", seed=7, **SMALL), ".jpg")
    other = _files(generate_officehome_demo(tmp_path / "c", seed=8, **SMALL), ".jpg")

    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_more_images_keep_the_first_ones(tmp_path):
    few = _files(generate_officehome_demo(tmp_path / "few", **SMALL), ".jpg")
    more = _files(
        generate_officehome_demo(tmp_path / "more", **{**SMALL, "images_per_class": 3}), ".jpg"
    )
    assert all(more[name] == content for name, content in few.items())


@pytest.mark.parametrize("style", RENDER_STYLES)
def test_render_object(style):
    image = render_object(3, 1, style, np.random.default_rng(0), 32)
    assert image.shape == (32, 32, 3)
    assert image.dtype == np.uint8
    assert image.std() > 5  # not a blank image


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        generate_officehome_demo("unused", num_classes=len(DEMO_CLASSES) + 1)
    with pytest.raises(ValueError, match="style"):
        render_object(0, 0, "Watercolour", np.random.default_rng(0), 32)
    with pytest.raises(ValueError, match="shape_class"):
        render_object(len(DEMO_CLASSES), 0, "Art", np.random.default_rng(0), 32)


def _border(image: np.ndarray, width: int = 4) -> np.ndarray:
    rows = np.concatenate([image[:width], image[-width:]]).reshape(-1, 3)
    columns = np.concatenate([image[:, :width], image[:, -width:]], axis=1).reshape(-1, 3)
    return np.concatenate([rows, columns])


def test_domains_differ_in_style(tmp_path):
    """Simple image statistics, averaged per domain, tell the four styles apart."""
    root = generate_officehome_demo(tmp_path, num_classes=6, images_per_class=2, image_size=64)
    brightness, flatness, outline = {}, {}, {}
    for domain in DEMO_DOMAINS:
        images = [np.asarray(Image.open(p), np.float32) for p in (root / domain).rglob("*.jpg")]
        brightness[domain] = np.mean([_border(image).mean() for image in images])
        flatness[domain] = np.mean([_border(image).std(axis=0).mean() for image in images])
        outline[domain] = np.mean([(image.mean(axis=2) < 40).mean() for image in images])

    # Product and Clipart sit on plain light backgrounds; Art and Real World on busy ones.
    for plain in ("Product", "Clipart"):
        for busy in ("Art", "Real World"):
            assert brightness[plain] > brightness[busy] + 40
            assert flatness[plain] * 2 < flatness[busy]
    # Clipart has thick dark outlines.
    assert all(outline["Clipart"] > 2 * outline[d] for d in DEMO_DOMAINS if d != "Clipart")
    # Real World's scene (horizon, clutter, lighting) varies more than Art's painted canvas.
    assert flatness["Real World"] > 1.5 * flatness["Art"]
