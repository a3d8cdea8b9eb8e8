"""The one multi-domain DataModule every dataset builds on.

A dataset is a list of domains, each a folder in `<root>/<Class>/<image>` layout (or an image
list); all domains share one class list. Each domain is split into train/val/test with a seeded,
class-stratified split; held-out domains are evaluated only. Batches are
`(uint8 images (B, 3, H, W), labels (B,), domain indices (B,))`, where the domain index refers to
`domain_names`.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.image_io import is_image_file, load_rgb
from datamodules.transforms import AugmentationConfig, eval_transform, train_transform


class DatasetLayoutError(ValueError):
    """The files on disk do not have the layout the DataModule expects."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    domain_index: int


@dataclass
class DomainSource:
    """Where one domain's images are.

    Args:
        name: the domain's name (used for heads and metric names).
        root: a folder in `<root>/<Class>/<image>` layout.
    """

    name: str
    root: str


@dataclass
class DomainData:
    """One scanned domain: its class folders and image files (label = index in the class list)."""

    name: str
    root: Path
    files_by_class: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.files_by_class.values())


def scan_class_folders(domain: DomainSource) -> DomainData:
    """List `<root>/<Class>/<image>` files, ignoring hidden and non-image files."""
    root = Path(domain.root)
    if not root.is_dir():
        raise DatasetLayoutError(f"domain {domain.name!r}: folder {root} does not exist")
    files_by_class: dict[str, list[str]] = {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        # os.scandir is several times faster than Path.glob on large class folders.
        with os.scandir(class_dir) as entries:
            files = sorted(e.path for e in entries if e.is_file() and is_image_file(e.name))
        files_by_class[class_dir.name] = files
    return DomainData(name=domain.name, root=root, files_by_class=files_by_class)


def check_same_classes(domains: Sequence[DomainData]) -> list[str]:
    """The class list shared by all domains; a mismatch names the classes that differ and where."""
    if not domains:
        raise DatasetLayoutError("no domains were given")
    reference = domains[0]
    reference_classes = set(reference.files_by_class)
    problems = []
    for domain in domains:
        if not domain.files_by_class:
            problems.append(f"domain {domain.name!r} ({domain.root}) has no class folders")
            continue
        classes = set(domain.files_by_class)
        missing = sorted(reference_classes - classes)
        extra = sorted(classes - reference_classes)
        if missing or extra:
            problems.append(
                f"domain {domain.name!r} ({domain.root}) differs from {reference.name!r} "
                f"({reference.root}): missing {missing}, extra {extra}"
            )
        empty = sorted(name for name, files in domain.files_by_class.items() if not files)
        if empty:
            problems.append(f"domain {domain.name!r} ({domain.root}) has empty classes {empty}")
    if problems:
        raise DatasetLayoutError(
            "all domains must have the same class folders, each with images:\n  "
            + "\n  ".join(problems)
        )
    return sorted(reference_classes)


def stratified_split(
    files_by_class: dict[str, list[str]],
    class_names: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """Seeded split of each class's files into (train, val, test) lists of (path, label)."""
    rng = np.random.default_rng(seed)
    splits: tuple[list, list, list] = ([], [], [])
    for label, class_name in enumerate(class_names):
        files = files_by_class[class_name]
        order = rng.permutation(len(files))
        num_val = round(len(files) * val_fraction)
        num_test = round(len(files) * test_fraction)
        for rank, index in enumerate(order):
            split = 1 if rank < num_val else 2 if rank < num_val + num_test else 0
            splits[split].append((files[index], label))
    return splits


class ImageSampleDataset(Dataset):
    """(path, label, domain index) samples -> (uint8 image tensor, label, domain index)."""

    def __init__(self, samples: Sequence[Sample], transform, min_decode_side: int | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.min_decode_side = min_decode_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.samples[index]
        image = load_rgb(sample.path, min_side=self.min_decode_side)
        return self.transform(image), sample.label, sample.domain_index


class MultiDomainDataModule(pl.LightningDataModule):
    """Base DataModule: domains -> seeded splits -> datasets -> loaders.

    Subclasses implement `domain_sources()`; everything else is shared. The domains are scanned
    when the DataModule is built, so `domain_names`, `class_names` and `num_classes` are known to
    the CLI, which passes them on to the model.
    """

    #: Name of the dataset: the MLflow experiment and the `dataset` tag.
    dataset_name = "multidomain"

    def __init__(
        self,
        root: str,
        held_out_domains: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        image_size: int = 224,
        resize_size: int | None = None,
        augmentation: AugmentationConfig | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        decode_at_reduced_size: bool = True,
    ) -> None:
        """Build the DataModule and scan the domains on disk.

        Args:
            root: the dataset's root folder.
            held_out_domains: domains that are only evaluated (leave-one-domain-out): they get
                no classifier head and none of their images is trained on; their whole data is
                the validation and test set.
            val_fraction: fraction of each trained domain's images (per class) for validation.
            test_fraction: fraction for the test split; 0 means `test` evaluates the validation
                split (Office-Home has no official test split).
            split_seed: seed of the per-domain split (independent of the training seed).
            image_size: side of the square training and evaluation crops.
            resize_size: shorter side before the evaluation centre crop (default 256/224 of
                `image_size`).
            augmentation: training augmentation settings.
            batch_size: training batch size (per process).
            eval_batch_size: validation/test batch size (default: `batch_size`).
            num_workers: DataLoader worker processes.
            persistent_workers: keep workers between epochs (only with `num_workers > 0`).
            pin_memory: page-locked host memory for faster copies to the GPU.
            decode_at_reduced_size: decode JPEGs at the smallest libjpeg scale that still
                covers the crop, instead of at full size.
        """
        super().__init__()
        if (
            not 0 <= val_fraction < 1
            or not 0 <= test_fraction < 1
            or val_fraction + test_fraction >= 1
        ):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                "and leave images for training (their sum must be below 1)"
            )
        if image_size < 16:
            raise ValueError(f"image_size={image_size} is too small; use at least 16 pixels")
        self.root = root
        self.held_out_domains = list(held_out_domains or [])
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.image_size = image_size
        self.resize_size = resize_size or round(image_size * 256 / 224)
        self.augmentation = augmentation or AugmentationConfig()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = pin_memory
        self.decode_at_reduced_size = decode_at_reduced_size

        self.domains = [scan_class_folders(source) for source in self.domain_sources()]
        self.domain_names = [domain.name for domain in self.domains]
        if len(set(self.domain_names)) != len(self.domain_names):
            duplicates = sorted(n for n, c in Counter(self.domain_names).items() if c > 1)
            raise ValueError(f"domain names must be unique; repeated: {duplicates}")
        unknown = sorted(set(self.held_out_domains) - set(self.domain_names))
        if unknown:
            raise ValueError(
                f"held_out_domains {unknown} are not domains of this dataset; "
                f"valid choices: {self.domain_names}"
            )
        if len(self.held_out_domains) == len(self.domain_names):
            raise ValueError("held_out_domains holds every domain: nothing is left to train on")
        self.class_names = check_same_classes(self.domains)
        self._build_splits()

    # ----- what subclasses provide -------------------------------------------------------------
    def domain_sources(self) -> list[DomainSource]:
        """The dataset's domains, in a fixed order."""
        raise NotImplementedError

    # ----- derived facts the CLI links into the model ------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def trained_domain_names(self) -> list[str]:
        """Domains with labelled training data (and so a classifier head)."""
        return [name for name in self.domain_names if name not in self.held_out_domains]

    @property
    def protocol(self) -> str:
        if self.held_out_domains:
            return "leave_out_" + "+".join(self.held_out_domains)
        return "multi_domain"

    # ----- splits, datasets, loaders -----------------------------------------------------------
    def _build_splits(self) -> None:
        self.split_samples: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
        for domain_index, domain in enumerate(self.domains):
            if domain.name in self.held_out_domains:
                everything = [
                    Sample(path, label, domain_index)
                    for label, name in enumerate(self.class_names)
                    for path in domain.files_by_class[name]
                ]
                self.split_samples["val"] += everything
                self.split_samples["test"] += everything
                continue
            # A per-domain seed keeps a domain's split unchanged when other domains are added.
            seed = self.split_seed + zlib.crc32(domain.name.encode())
            train, val, test = stratified_split(
                domain.files_by_class, self.class_names, self.val_fraction, self.test_fraction, seed
            )
            for split, pairs in (("train", train), ("val", val), ("test", test or val)):
                self.split_samples[split] += [Sample(p, label, domain_index) for p, label in pairs]

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Images per split and domain, e.g. for a summary table."""
        counts: dict[str, dict[str, int]] = {}
        for split, samples in self.split_samples.items():
            per_domain = Counter(self.domain_names[s.domain_index] for s in samples)
            counts[split] = {name: per_domain.get(name, 0) for name in self.domain_names}
        return counts

    def make_dataset(self, split: str) -> ImageSampleDataset:
        if split == "train":
            transform = train_transform(self.image_size, self.augmentation)
            min_side = self.image_size
        else:
            transform = eval_transform(self.image_size, self.resize_size)
            min_side = self.resize_size
        return ImageSampleDataset(
            self.split_samples[split],
            transform,
            min_decode_side=min_side if self.decode_at_reduced_size else None,
        )

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {split: self.make_dataset(split) for split in ("train", "val", "test")}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
