"""Tests of the generated demo data: layouts, determinism, the cache, and that styles differ."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import demo_data
from datamodules.demo_data import (
    COMPLETE_MARKER,
    DEMO_CLASSES,
    DEMO_DOMAINS,
    RENDER_STYLES,
    ensure_cue_conflict_demo,
    ensure_officehome_demo,
    generate_cue_conflict_demo,
    generate_officehome_demo,
    parse_cue_conflict_name,
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


def test_parse_cue_conflict_name():
    assert parse_cue_conflict_name("Lightning_Bolt12-Star3.png") == (
        "Lightning_Bolt",
        12,
        "Star",
        3,
    )
    with pytest.raises(ValueError, match="cue-conflict name"):
        parse_cue_conflict_name("Circle.png")


@pytest.fixture
def generation_counter(monkeypatch):
    """Counts calls of the Office-Home generator that `ensure_officehome_demo` makes."""
    calls = []
    real_generator = demo_data.generate_officehome_demo

    @functools.wraps(real_generator)
    def counting_generator(root, **settings):
        calls.append(settings)
        return real_generator(root, **settings)

    monkeypatch.setattr(demo_data, "generate_officehome_demo", counting_generator)
    return calls


def test_ensure_generates_once(tmp_path, generation_counter):
    first = ensure_officehome_demo(tmp_path, **SMALL)
    second = ensure_officehome_demo(tmp_path, **SMALL)

    assert first == second
    assert len(generation_counter) == 1
    assert first.parent == tmp_path
    assert first.name.startswith("officehome_demo-")
    marker = json.loads((first / COMPLETE_MARKER).read_text())
    assert marker["num_classes"] == 3
    assert marker["domains"] == list(DEMO_DOMAINS)
    # Nothing left behind but the finished tree.
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    assert len(list(first.rglob("*.jpg"))) == 4 * 3 * 2


def test_ensure_keys_the_cache_by_settings(tmp_path, generation_counter):
    small = ensure_officehome_demo(tmp_path, **SMALL)
    other_seed = ensure_officehome_demo(tmp_path, seed=1, **SMALL)
    assert small != other_seed
    assert len(generation_counter) == 2


def test_ensure_regenerates_an_incomplete_tree(tmp_path, generation_counter):
    root = ensure_officehome_demo(tmp_path, **SMALL)
    (root / COMPLETE_MARKER).unlink()
    (root / "Art" / DEMO_CLASSES[0] / "00001.jpg").unlink()

    assert ensure_officehome_demo(tmp_path, **SMALL) == root
    assert len(generation_counter) == 2
    assert (root / COMPLETE_MARKER).is_file()
    assert (root / "Art" / DEMO_CLASSES[0] / "00001.jpg").is_file()


def test_ensure_losing_the_race_keeps_the_winner(tmp_path, monkeypatch):
    """Another process (here: a nested call) finishes the same tree while this one generates."""
    real_generator = demo_data.generate_officehome_demo
    calls = []

    @functools.wraps(real_generator)
    def generator_with_a_rival(root, **settings):
        calls.append(root)
        if len(calls) == 1:
            rival = ensure_officehome_demo(tmp_path, **SMALL)  # the rival completes first
            (rival / "winner").write_text("rival")
        return real_generator(root, **settings)

    monkeypatch.setattr(demo_data, "generate_officehome_demo", generator_with_a_rival)
    root = ensure_officehome_demo(tmp_path, **SMALL)

    assert len(calls) == 2
    assert (root / "winner").read_text() == "rival"
    assert (root / COMPLETE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # the loser's copy is gone


def test_ensure_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBENCH_DATA_DIR", str(tmp_path / "cache"))
    root = ensure_cue_conflict_demo(num_classes=2, images_per_pair=1, image_size=32)
    assert root.parent == tmp_path / "cache"
    assert root.name.startswith("cue_conflict_demo-")
    assert len(list(root.rglob("*.png"))) == 2 * 2


def test_ensure_rejects_unknown_settings(tmp_path):
    with pytest.raises(TypeError, match="images_per_domain"):
        ensure_officehome_demo(tmp_path, images_per_domain=3)


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


def test_command_line_writes_data_and_grid(tmp_path, capsys):
    arguments = ["officehome", "--root", str(tmp_path / "oh"), "--num-classes", "2"]
    arguments += ["--images", "1", "--image-size", "32", "--grid", str(tmp_path / "grid.png")]
    demo_data.main(arguments)
    assert len(list((tmp_path / "oh").rglob("*.jpg"))) == 4 * 2
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG"
    assert "wrote 8 images" in capsys.readouterr().out
