"""Tests of the demo-data cache: generated once per settings, atomically, under stable names."""

from __future__ import annotations

import functools
import json

import pytest

from datamodules.demo import (
    COMPLETE_MARKER,
    DEMO_CLASSES,
    DEMO_DOMAINS,
    ensure_cue_conflict_demo,
    ensure_dtd_demo,
    ensure_officehome_demo,
)
from datamodules.demo import officehome as officehome_demo
from datamodules.demo.cache import cache_folder_name
from datamodules.demo.cue_conflict import generate_cue_conflict_demo
from datamodules.demo.dtd import DTD_DEMO_VERSION, generate_dtd_demo
from datamodules.demo.objects import DEMO_DATA_VERSION

SMALL = {"num_classes": 3, "images_per_class": 2, "image_size": 40}


@pytest.fixture
def generation_counter(monkeypatch):
    """Counts calls of the Office-Home generator that `ensure_officehome_demo` makes."""
    calls = []
    real_generator = officehome_demo.generate_officehome_demo

    @functools.wraps(real_generator)
    def counting_generator(root, **settings):
        calls.append(settings)
        return real_generator(root, **settings)

    monkeypatch.setattr(officehome_demo, "generate_officehome_demo", counting_generator)
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
    real_generator = officehome_demo.generate_officehome_demo
    calls = []

    @functools.wraps(real_generator)
    def generator_with_a_rival(root, **settings):
        calls.append(root)
        if len(calls) == 1:
            rival = ensure_officehome_demo(tmp_path, **SMALL)  # the rival completes first
            (rival / "winner").write_text("rival")
        return real_generator(root, **settings)

    monkeypatch.setattr(officehome_demo, "generate_officehome_demo", generator_with_a_rival)
    root = ensure_officehome_demo(tmp_path, **SMALL)

    assert len(calls) == 2
    assert (root / "winner").read_text() == "rival"
    assert (root / COMPLETE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # the loser's copy is gone


def test_a_crash_leaves_no_tree_behind(tmp_path, monkeypatch):
    def crashing_generator(root, **settings):
        (root / "half").write_text("written before the crash")
        raise RuntimeError("disk full")

    monkeypatch.setattr(
        officehome_demo,
        "generate_officehome_demo",
        functools.wraps(officehome_demo.generate_officehome_demo)(crashing_generator),
    )
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_officehome_demo(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_ensure_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBENCH_DATA_DIR", str(tmp_path / "cache"))
    root = ensure_cue_conflict_demo(num_classes=2, images_per_pair=1, image_size=32)
    assert root.parent == tmp_path / "cache"
    assert root.name.startswith("cue_conflict_demo-")
    assert len(list(root.rglob("*.png"))) == 2 * 2


def test_ensure_rejects_unknown_settings(tmp_path):
    with pytest.raises(TypeError, match="images_per_domain"):
        ensure_officehome_demo(tmp_path, images_per_domain=3)


def test_dtd_demo_is_cached_under_its_version(tmp_path):
    root = ensure_dtd_demo(tmp_path, num_classes=2, images_per_class=3, image_size=8)
    assert root.name.startswith(f"dtd_v{DTD_DEMO_VERSION}_demo-")
    assert ensure_dtd_demo(tmp_path, num_classes=2, images_per_class=3, image_size=8) == root
    assert json.loads((root / COMPLETE_MARKER).read_text())["version"] == DTD_DEMO_VERSION


def test_cache_folder_names_stay_the_same():
    """Users' caches hold these folders: a changed name regenerates (gigabytes, minutes) and
    strands the old copy. Change them only together with the rendering (bump its version).
    The expected names are those the code before `datamodules.demo` gave."""
    names = {
        "officehome": cache_folder_name(
            "officehome", DEMO_DATA_VERSION, officehome_demo.generate_officehome_demo, {}
        ),
        "stylized_imagenet_val": cache_folder_name(
            "officehome",
            DEMO_DATA_VERSION,
            officehome_demo.generate_officehome_demo,
            {"images_per_class": 10, "seed": 1, "domains": ("Art", "Real World")},
        ),
        "cue_conflict": cache_folder_name(
            "cue_conflict", DEMO_DATA_VERSION, generate_cue_conflict_demo, {"images_per_pair": 4}
        ),
        "dtd": cache_folder_name(
            f"dtd_v{DTD_DEMO_VERSION}",
            DTD_DEMO_VERSION,
            generate_dtd_demo,
            {"images_per_class": 90},
        ),
    }
    assert names == {
        "officehome": "officehome_demo-b9ef1e1cfa71",
        "stylized_imagenet_val": "officehome_demo-d5c927af98c1",
        "cue_conflict": "cue_conflict_demo-ff708425adce",
        "dtd": "dtd_v1_demo-344720c0be20",
    }
