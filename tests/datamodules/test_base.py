"""MultiDomainDataModule's contract: lazy scanning, official splits, normalisation, stimuli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import datamodules.base as base
from datamodules.base import MultiDomainDataModule
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.shards import ShardsError
from datamodules.data.sources import FileTreeSource, ShardsSource
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import make_officehome_tree

CLASSES = ("Bike", "Mug")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "officehome"
    make_officehome_tree(
        root, {d: 4 for d in ("Art", "Clipart", "Product", "Real World")}, classes=CLASSES
    )
    return root


def test_constructing_reads_nothing_and_first_use_scans_once(small_root: Path, monkeypatch) -> None:
    scanned: list[str] = []
    original = base.indexed_domain

    def counting(source: DomainSource, *args, **kwargs) -> DomainData:
        scanned.append(source.name)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(base, "indexed_domain", counting)
    missing = OfficeHomeDataModule(root=str(small_root / "nowhere"), num_workers=0)
    assert scanned == []
    with pytest.raises(DatasetLayoutError, match="nowhere"):
        _ = missing.class_names
    data = OfficeHomeDataModule(root=str(small_root), image_size=16, num_workers=0)
    assert scanned == []
    assert data.class_names == list(CLASSES) and data.num_classes == 2
    assert len(data.split_samples["train"]) == 3 * 2 * 4  # 3 of 4 per class, 2 classes, 4 domains
    data.setup("fit")
    data.setup("test")
    assert scanned == ["Art", "Clipart", "Product", "Real World"]


class WithOfficialSplits(MultiDomainDataModule):
    """Two domains; `Art` has official splits by file name, `Clipart` is split by fractions."""

    dataset_name = "official"

    def domain_sources(self) -> list[DomainSource]:
        return [DomainSource(d, str(Path(self.root) / d)) for d in ("Art", "Clipart")]

    def official_splits(self, domain: DomainData):
        if domain.name != "Art":
            return None
        by_split: dict[str, list] = {"train": [], "val": [], "test": []}
        for label, name in enumerate(self.class_names):
            for path in domain.files_by_class[name]:
                number = int(Path(path).stem)
                split = "train" if number <= 2 else "val" if number == 3 else "test"
                by_split[split].append((path, label))
        return by_split


def test_official_splits_are_used_as_given(small_root: Path) -> None:
    data = WithOfficialSplits(root=str(small_root), image_size=16, num_workers=0, val_fraction=0.25)
    art = [s for s in data.split_samples["train"] if s.domain_index == 0]
    assert sorted(Path(s.path).stem for s in art) == ["00001", "00001", "00002", "00002"]
    assert {Path(s.path).stem for s in data.split_samples["val"] if s.domain_index == 0} == {
        "00003"
    }
    assert {Path(s.path).stem for s in data.split_samples["test"] if s.domain_index == 0} == {
        "00004"
    }
    # Clipart is split by the fraction: one of four images per class is validation.
    assert data.split_counts()["val"]["Clipart"] == 2
    held_out = WithOfficialSplits(root=str(small_root), image_size=16, held_out_domains=["Art"])
    assert held_out.split_counts()["train"]["Art"] == 0
    assert {Path(s.path).stem for s in held_out.split_samples["test"] if s.domain_index == 0} == {
        "00004"
    }


def test_uint8_batches_are_normalised_on_transfer(small_root: Path) -> None:
    data = OfficeHomeDataModule(root=str(small_root), num_workers=0)
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    labels, domains = torch.tensor([0, 1]), torch.tensor([0, 0])
    normalised, same_labels, same_domains = data.on_after_batch_transfer([images, labels, domains])
    assert normalised.dtype == torch.float32 and same_labels is labels and same_domains is domains
    torch.testing.assert_close(
        normalised[0, :, 0, 0],
        torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]),
    )
    combined = data.on_after_batch_transfer(
        {"source": (images, labels, domains), "target": (images,)}
    )
    assert combined["target"][0].dtype == torch.float32
    floats = torch.zeros(1, 3, 2, 2)
    assert data.on_after_batch_transfer((floats,))[0] is floats
    assert data.on_after_batch_transfer(None) is None


def test_cue_conflict_set_uses_the_evaluation_transform(small_root: Path, tmp_path: Path) -> None:
    data = OfficeHomeDataModule(root=str(small_root), image_size=24, resize_size=28, num_workers=0)
    stimuli = data.cue_conflict_set(
        cache_dir=str(tmp_path / "cache"),
        demo_classes=3,
        demo_images_per_pair=1,
        demo_image_size=32,
    )
    assert len(stimuli.categories) == 3 and len(stimuli.images) == len(stimuli.dataset) == 9
    assert {(i.shape, i.texture) for i in stimuli.images} == {
        (s, t) for s in stimuli.categories for t in stimuli.categories
    }
    image, index = stimuli.dataset[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 24) and index == 4
    with pytest.raises(FileNotFoundError, match="texture-vs-shape"):
        data.cue_conflict_set(root=str(tmp_path / "no-stimuli"))


def test_the_sample_source_is_the_file_tree_or_the_shards(small_root: Path, tmp_path) -> None:
    tree = OfficeHomeDataModule(root=str(small_root), num_workers=0)
    shards = OfficeHomeDataModule(root=str(small_root), num_workers=0, shards=str(tmp_path))
    assert isinstance(tree.source, FileTreeSource) and tree.source.datamodule is tree
    assert isinstance(shards.source, ShardsSource) and shards.source.uri == str(tmp_path)
    with pytest.raises(ShardsError, match="no folders to scan"):
        _ = shards.domains
    with pytest.raises(ValueError, match=r"domain_proportions does not apply to data\.shards"):
        OfficeHomeDataModule(
            root=str(small_root), shards=str(tmp_path), domain_proportions={"Art": 1.0}
        )


def test_base_module_does_not_branch_on_the_sample_source() -> None:
    # Where the samples come from is the source's business (datamodules/data/sources/): no
    # condition in base.py names the shards.
    tree = ast.parse(Path(base.__file__).read_text())
    conditions = [
        ast.unparse(node.test)
        for node in ast.walk(tree)
        if isinstance(node, ast.If | ast.IfExp | ast.While | ast.Assert)
    ]
    conditions += [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.BoolOp)]
    assert conditions  # the walk sees the module's conditions
    assert [c for c in conditions if "shards" in c or "prepared" in c] == []


@pytest.mark.parametrize("held_out", ["Art", "Product"])
def test_batch_size_per_domain_gives_that_many_of_each_trained_domain(
    small_root: Path, held_out: str
) -> None:
    data = OfficeHomeDataModule(
        root=str(small_root),
        held_out_domains=[held_out],
        image_size=16,
        batch_size=5,
        batch_size_per_domain=2,
        num_workers=0,
    )
    data.setup("fit")
    assert data.batch_size == 2 * 3  # three trained domains
    batches = list(data.train_dataloader())
    assert len(batches) == len(data.split_samples["train"]) // 6
    held_out_index = data.domain_names.index(held_out)
    for _, _, domains in batches:
        counts = torch.bincount(domains, minlength=4).tolist()
        assert counts == [0 if i == held_out_index else 2 for i in range(4)]
    # evaluation batches keep `batch_size`
    assert next(iter(data.val_dataloader()))[0].shape[0] == 5


def test_batch_size_per_domain_refuses_proportions_and_shards(small_root: Path, tmp_path) -> None:
    with pytest.raises(ValueError, match="batch_size_per_domain draws equal shares"):
        OfficeHomeDataModule(
            root=str(small_root), batch_size_per_domain=4, domain_proportions={"Art": 1.0}
        )
    with pytest.raises(ValueError, match=r"batch_size_per_domain does not apply to data\.shards"):
        OfficeHomeDataModule(root=str(small_root), batch_size_per_domain=4, shards=str(tmp_path))
    with pytest.raises(ValueError, match="batch_size_per_domain=0 must be at least 1"):
        OfficeHomeDataModule(root=str(small_root), batch_size_per_domain=0)
