"""Stylized-ImageNet DataModule: official splits, SIN/IN as domains, train_on, errors, demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.data.layout import DatasetLayoutError
from datamodules.stylized_imagenet import (
    StylizedImageNetDataModule,
    StylizedImageNetDemoDataModule,
)
from tests.helpers.trees import write_jpeg

WNIDS = ("n01440764", "n01443537", "n01484850")


def make_imagenet_tree(root: Path, train_per_class: int, val_per_class: int, seed: int) -> Path:
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(WNIDS):
            for index in range(count):
                write_jpeg(root / split / wnid / f"{wnid}_{index}.JPEG", seed + 100 * label + index)
    (root / "train" / ".DS_Store").write_bytes(b"\x00")
    return root


@pytest.fixture
def roots(tmp_path: Path) -> tuple[str, str]:
    sin = make_imagenet_tree(tmp_path / "stylized-imagenet", 4, 2, seed=0)
    imagenet = make_imagenet_tree(tmp_path / "imagenet", 3, 1, seed=1000)
    return str(sin), str(imagenet)


def build(**kwargs) -> StylizedImageNetDataModule:
    return StylizedImageNetDataModule(image_size=16, num_workers=0, batch_size=4, **kwargs)


def test_train_on_sin_evaluates_both_with_official_splits(roots) -> None:
    sin, imagenet = roots
    data = build(root=sin, imagenet_root=imagenet, train_on="sin")
    assert data.domain_names == ["stylized", "imagenet"]
    assert data.trained_domains == ["stylized"]
    assert data.class_names == list(WNIDS) and data.num_classes == 3
    assert data.split_counts() == {
        "train": {"stylized": 12, "imagenet": 0},
        "val": {"stylized": 6, "imagenet": 3},
        "test": {"stylized": 6, "imagenet": 3},
    }
    assert data.protocol == "train_sin"
    assert all("/train/" in s.path for s in data.split_samples["train"])
    assert all("/val/" in s.path for s in data.split_samples["val"])
    data.setup()
    images, labels, domains = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]
    assert domains.tolist() == [0, 0, 0, 0]  # stylized first, then imagenet


@pytest.mark.parametrize(
    ("train_on", "trained", "train_counts"),
    [
        ("in", ["imagenet"], {"stylized": 0, "imagenet": 9}),
        ("sin+in", ["stylized", "imagenet"], {"stylized": 12, "imagenet": 9}),
    ],
)
def test_train_on_in_and_both(roots, train_on, trained, train_counts) -> None:
    sin, imagenet = roots
    data = build(root=sin, imagenet_root=imagenet, train_on=train_on)
    assert data.trained_domains == trained
    assert data.split_counts()["train"] == train_counts


def test_sin_alone_and_settings_that_do_not_apply(roots) -> None:
    sin, _ = roots
    data = build(root=sin)
    assert data.domain_names == ["stylized"]
    with pytest.raises(ValueError, match="imagenet_root"):
        build(root=sin, train_on="in")
    with pytest.raises(TypeError, match="val_fraction"):
        build(root=sin, val_fraction=0.1)


def test_missing_data_explains_layout_and_demo(tmp_path, roots) -> None:
    with pytest.raises(DatasetLayoutError) as error:
        build(root=str(tmp_path / "nowhere")).setup("fit")
    message = str(error.value)
    assert "train/<wnid>" in message and "rgeirhos/Stylized-ImageNet" in message
    assert "configs/stylized_imagenet/demo.yaml" in message
    sin, _ = roots
    (Path(sin) / "train" / WNIDS[0]).rename(Path(sin) / "train" / "n99999999")
    with pytest.raises(DatasetLayoutError, match="same classes"):
        build(root=sin).setup("fit")


def test_demo_uses_generated_styles_as_the_two_domains(tmp_path) -> None:
    data = StylizedImageNetDemoDataModule(
        demo_classes=3,
        images_per_class=4,
        val_images_per_class=2,
        demo_image_size=24,
        cache_dir=str(tmp_path),
        train_on="sin+in",
        image_size=16,
        num_workers=0,
    )
    assert data.class_names == ["Circle", "Square", "Triangle"]
    assert data.split_counts()["train"] == {"stylized": 12, "imagenet": 12}
    assert data.split_counts()["val"] == {"stylized": 6, "imagenet": 6}
    train_paths = {s.path for s in data.split_samples["train"]}
    assert not train_paths & {s.path for s in data.split_samples["val"]}
