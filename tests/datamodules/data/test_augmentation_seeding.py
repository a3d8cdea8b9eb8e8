"""Seeded, per-worker augmentation: albumentations' own generators follow the run seed, and
workers, ranks and (non-persistent) epochs draw different augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning import seed_everything
from torch.utils.data import DataLoader, Dataset

from datamodules.data.transforms import (
    AugmentationConfig,
    AugmentationSeeder,
    augmentation_seed,
    train_transform,
)
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import small_officehome_tree


class OneImage(Dataset):
    """The same image `length` times through the training transform."""

    def __init__(self, length: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
        self.transform = train_transform(16, AugmentationConfig(rotate_degrees=30))
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def epochs(loader: DataLoader, count: int) -> list[list[torch.Tensor]]:
    return [[item for batch in loader for item in batch] for _ in range(count)]


def loader(dataset: Dataset, persistent: bool = False, seeded: bool = True) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        persistent_workers=persistent,
        worker_init_fn=AugmentationSeeder(rank=0, stream=1) if seeded else None,
    )


def test_unseeded_workers_repeat_each_other() -> None:
    # Why the seeder exists: forked workers inherit one Compose state and draw alike.
    torch.manual_seed(0)
    first, *_ = epochs(loader(OneImage(4), seeded=False), 1)
    assert torch.equal(first[0], first[1])  # item 0 from worker 0, item 1 from worker 1


def test_workers_and_epochs_differ_and_a_seed_repeats_them() -> None:
    torch.manual_seed(0)
    one, two = epochs(loader(OneImage(4)), 2)
    assert not torch.equal(one[0], one[1])  # two workers, one image: different augmentations
    assert any(not torch.equal(a, b) for a, b in zip(one, two, strict=True))  # epoch 1 != 2
    torch.manual_seed(0)
    again, _ = epochs(loader(OneImage(4)), 2)
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))


def test_ranks_get_different_seeds() -> None:
    assert augmentation_seed(7, 0, 0, 1) != augmentation_seed(7, 0, 1, 1)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return small_officehome_tree(tmp_path / "officehome", per_class=4)


def first_batch(root: Path, seed: int) -> torch.Tensor:
    seed_everything(seed)
    datamodule = OfficeHomeDataModule(
        root=str(root), image_size=16, num_workers=0, batch_size=8, val_fraction=0.25
    )
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))[0]


def test_the_main_process_follows_the_run_seed(tree: Path) -> None:
    # num_workers 0: the transform is seeded from the run seed when the loader is made.
    assert torch.equal(first_batch(tree, 3), first_batch(tree, 3))
    assert not torch.equal(first_batch(tree, 3), first_batch(tree, 4))
