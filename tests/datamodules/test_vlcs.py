"""VLCS on a generated copy in DomainBed's layout (`VLCS/<domain>/<class>/<32 hex>.jpg`):
domains, classes, counts, the holdout split, environment names and the errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import generate_vlcs_demo
from datamodules.vlcs import VLCSDataModule

DOMAINS = ["Caltech101", "LabelMe", "SUN09", "VOC2007"]
CLASSES = ["bird", "car", "chair", "dog", "person"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_vlcs_demo(tmp_path_factory.mktemp("vlcs"), images_per_class=6, image_size=32)


def build(root: Path, **kwargs) -> VLCSDataModule:
    return VLCSDataModule(root=str(root), image_size=32, num_workers=0, **kwargs)


def test_domains_classes_counts_and_file_names(root: Path) -> None:
    for given in (root, root / "VLCS"):
        data = build(given)
        assert data.image_root == root / "VLCS"
        assert data.domain_names == DOMAINS and data.class_names == CLASSES
        assert {d.name: d.num_images for d in data.domains} == dict.fromkeys(DOMAINS, 30)
    names = [Path(p).name for p in data.domains[0].files_by_class["car"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}\.jpg", name) for name in names), names


def test_holdout_split_sizes_and_disjointness(root: Path) -> None:
    data = build(root, held_out_domains=["V"], val_fraction=0.2, test_fraction=0.2)
    counts = data.split_counts()
    # 6 per class: round(1.2) = 1 val and 1 test per class, 4 train
    assert counts["train"] == {"Caltech101": 20, "LabelMe": 20, "SUN09": 20, "VOC2007": 0}
    assert counts["val"] == {"Caltech101": 5, "LabelMe": 5, "SUN09": 5, "VOC2007": 30}
    assert counts["test"] == counts["val"]
    paths = {split: {s.path for s in samples} for split, samples in data.split_samples.items()}
    assert not paths["train"] & (paths["val"] | paths["test"])
    trained_val = {p for p in paths["val"] if "/VOC2007/" not in p}
    assert not trained_val & paths["test"]


def test_environment_names_select_domains(root: Path) -> None:
    data = build(root, domains=["c", "L", "s"], held_out_domains=["SUN09"])
    assert data.domain_names == ["Caltech101", "LabelMe", "SUN09"]
    assert data.trained_domains == ["Caltech101", "LabelMe"]


def test_no_official_split_and_a_missing_domain_says_how_to_get_the_data(
    root: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"valid choices for VLCS: \['holdout'\]"):
        build(root, split="official")
    (tmp_path / "VLCS" / "LabelMe").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"'SUN09', 'VOC2007'\] not found.*VLCS\.tar"):
        _ = build(tmp_path).domains
