from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from datamodules.data.layout import DatasetLayoutError
from tests.helpers.trees import (
    OFFICEHOME_CLASSES,
    build_officehome,
    make_officehome_tree,
    write_jpeg,
)


def test_real_layout_parses_into_domains_classes_and_counts(officehome_root: Path) -> None:
    data = build_officehome(officehome_root)
    assert data.domain_names == ["Art", "Clipart", "Product", "Real World"]
    assert data.class_names == sorted(OFFICEHOME_CLASSES)
    assert data.num_classes == 65
    # stray files (.DS_Store, Thumbs.db, csv, txt) are not images of any class
    totals = {d.name: d.num_images for d in data.domains}
    assert totals == {"Art": 130, "Clipart": 195, "Product": 130, "Real World": 65}
    counts = data.split_counts()
    for domain, total in totals.items():
        assert counts["train"][domain] + counts["val"][domain] == total


def test_real_world_with_underscore_is_accepted(tmp_path: Path) -> None:
    make_officehome_tree(
        tmp_path,
        images_per_class={"Art": 1, "Clipart": 1, "Product": 1, "Real_World": 1},
        classes=("Mug", "Pen"),
        real_world_folder="Real_World",
    )
    data = build_officehome(tmp_path, val_fraction=0.0)
    assert data.domain_names[-1] == "Real World"
    assert data.domains[-1].root.name == "Real_World"


def test_split_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    make_officehome_tree(
        tmp_path,
        images_per_class={d: 10 for d in ("Art", "Clipart", "Product", "Real World")},
        classes=("Mug", "Pen", "Fork"),
    )
    first = build_officehome(tmp_path, val_fraction=0.2, test_fraction=0.3)
    second = build_officehome(tmp_path, val_fraction=0.2, test_fraction=0.3)
    other_seed = build_officehome(tmp_path, val_fraction=0.2, test_fraction=0.3, split_seed=1)
    assert first.split_samples == second.split_samples
    assert first.split_samples["val"] != other_seed.split_samples["val"]
    paths = {split: {s.path for s in samples} for split, samples in first.split_samples.items()}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"]
    assert not paths["val"] & paths["test"]
    # per domain and class: 10 images -> 5 train, 2 val, 3 test
    per_class = Counter((s.domain_index, s.label) for s in first.split_samples["val"])
    assert set(per_class.values()) == {2}
    assert len(per_class) == 4 * 3


def test_class_mismatch_names_the_classes_and_domain(tmp_path: Path) -> None:
    make_officehome_tree(
        tmp_path,
        images_per_class={d: 1 for d in ("Art", "Clipart", "Product", "Real World")},
        classes=("Mug", "Pen"),
    )
    write_jpeg(tmp_path / "Clipart" / "Kettle" / "00001.jpg", seed=1)
    with pytest.raises(DatasetLayoutError, match=r"'Clipart'.*extra \['Kettle'\]"):
        build_officehome(tmp_path).setup("fit")


def test_missing_root_says_where_and_how(tmp_path: Path) -> None:
    data = build_officehome(tmp_path / "nowhere")  # constructing reads nothing from disk
    with pytest.raises(DatasetLayoutError) as error:
        data.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "<root>/<Domain>/<Class>/<NNNNN>.jpg" in message
    assert "configs/officehome/demo.yaml" in message
    assert "hemanthdv.org" in message


def test_missing_domain_folder_is_named(tmp_path: Path) -> None:
    make_officehome_tree(
        tmp_path, images_per_class={"Art": 1, "Clipart": 1, "Product": 1}, classes=("Mug",)
    )
    with pytest.raises(DatasetLayoutError, match="'Real World'"):
        build_officehome(tmp_path).setup("fit")


def test_leave_one_domain_out_holds_the_domain_out_of_training(officehome_root: Path) -> None:
    data = build_officehome(officehome_root, held_out_domains=["art"])
    assert data.held_out_domains == ["Art"]
    assert data.trained_domains == ["Clipart", "Product", "Real World"]
    assert data.protocol == "leave_out_Art"
    art = data.domain_names.index("Art")
    assert not any(s.domain_index == art for s in data.split_samples["train"])
    assert sum(s.domain_index == art for s in data.split_samples["val"]) == 130
    assert sum(s.domain_index == art for s in data.split_samples["test"]) == 130


def test_unknown_domain_lists_valid_choices(officehome_root: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown domain 'Sketch'.*Real World"):
        build_officehome(officehome_root, held_out_domains=["Sketch"])


def test_batches_are_uint8_images_labels_and_domains(officehome_root: Path) -> None:
    data = build_officehome(
        officehome_root, domains=["Art", "Clipart"], image_size=24, batch_size=8
    )
    data.setup("fit")
    images, labels, domains = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 24, 24)
    assert labels.dtype == torch.long and int(labels.min()) >= 0 and int(labels.max()) < 65
    assert set(domains.tolist()) <= {0, 1}
    val_images, _, _ = next(iter(data.val_dataloader()))
    assert val_images.shape[1:] == (3, 24, 24)
