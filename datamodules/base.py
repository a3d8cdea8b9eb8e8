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
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from datamodules.domains import ExtraDomain, scan_extra_domain
from datamodules.image_io import is_image_file, load_rgb
from datamodules.samplers import DomainBalancedSampler, UnpaddedDistributedSampler
from datamodules.style_shift import (
    ScheduledLoader,
    StyleShiftConfig,
    StyleShiftedDataset,
    create_style_shift,
    draw_references,
    style_evaluation_due,
    style_folder_images,
)
from datamodules.transforms import AugmentationConfig, eval_transform, train_transform

#: Label of adaptation-target training samples (`target_domains`): their labels are not used.
UNLABELLED = -1
#: The split holding the target domains' unlabelled training images.
TARGET_TRAIN_SPLIT = "train_target"


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
    """(path, label, domain index) samples -> (uint8 image tensor, label, domain index).

    With `on_bad_image="skip"`, an image that cannot be decoded gives None (dropped by
    `collate_skipping_none`) and its path is appended to a file in `bad_image_dir`: files, not
    memory, because DataLoader workers are separate processes.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform,
        min_decode_side: int | None = None,
        on_bad_image: str = "error",
        bad_image_dir: str | None = None,
    ):
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image={on_bad_image!r}; valid choices: ['error', 'skip']")
        self.samples = list(samples)
        self.transform = transform
        self.min_decode_side = min_decode_side
        self.on_bad_image = on_bad_image
        self.bad_image_dir = bad_image_dir

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        sample = self.samples[index]
        try:
            image = load_rgb(sample.path, min_side=self.min_decode_side)
        except OSError:
            if self.on_bad_image == "error":
                raise
            if self.bad_image_dir is not None:
                # One file per process; appends of short lines are atomic enough here.
                log = Path(self.bad_image_dir) / f"bad-{os.getpid()}.txt"
                with open(log, "a") as handle:
                    handle.write(sample.path + "\n")
            return None
        return self.transform(image), sample.label, sample.domain_index


def collate_skipping_none(batch: list):
    """default_collate without the samples a dataset skipped (None); None if all were skipped."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


def read_bad_images(bad_image_dir: str | None) -> list[str]:
    """The distinct paths skipped so far, gathered from every worker's file."""
    if bad_image_dir is None or not Path(bad_image_dir).is_dir():
        return []
    paths: set[str] = set()
    for log in Path(bad_image_dir).glob("bad-*.txt"):
        paths.update(line for line in log.read_text().splitlines() if line)
    return sorted(paths)


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
        domain_proportions: dict[str, float] | None = None,
        on_bad_image: str = "error",
        check_data: bool = False,
        style_shift: StyleShiftConfig | None = None,
        target_domains: list[str] | None = None,
        extra_domains: list[ExtraDomain] | None = None,
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
            domain_proportions: draw every training batch from the trained domains in these
                proportions (e.g. `{Art: 1, Clipart: 1, Product: 1, Real World: 1}` for equal
                shares); null samples uniformly over all training images. Works across DDP
                ranks: each rank gets a disjoint part of each epoch.
            on_bad_image: what an image that cannot be decoded does during training: `error`
                stops the run naming the file; `skip` drops it from its batch, and the count
                (`data/bad_images`) and list (`bad_images.txt`) go to MLflow.
            check_data: run the data check (`python -m experiments.check_data`) before
                training; errors stop the run before the first step.
            style_shift: evaluate a style-shifted copy of the validation and test sets (each
                image rendered in the style of another domain) as a second DataLoader, for the
                `style_acc` and `style_robustness` metrics; default: off.
            target_domains: unlabelled adaptation targets (e.g. `[Clipart]` for Art to
                Clipart): no head, their training images are drawn beside the labelled ones
                without labels (for `model.adaptation`), and they are evaluated with labels like
                held-out domains. Model selection stays on the trained domains.
            extra_domains: domains added by configuration, each `name` plus `root`
                (ImageFolder layout) or `image_list` (`path label` lines), an optional
                `class_mapping` and a `role` (`train`, `held_out`, `target`); see
                `datamodules/domains.py` and the README's "New domains".
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
        self.domain_proportions = domain_proportions
        if on_bad_image not in ("error", "skip"):
            raise ValueError(
                f"data.on_bad_image={on_bad_image!r}; valid choices: ['error', 'skip']"
            )
        self.on_bad_image = on_bad_image
        self.check_data = check_data
        self.bad_image_dir: str | None = None
        self.style_shift = style_shift or StyleShiftConfig()
        # Built now so that a bad setting (missing AdaIN weights) stops the run before
        # training instead of at the first validation.
        self.style_shift_fn = (
            create_style_shift(self.style_shift) if self.style_shift.enabled else None
        )

        self.target_domains = list(target_domains or [])
        self.extra_domains = list(extra_domains or [])
        self.domains = [scan_class_folders(source) for source in self.domain_sources()]
        if self.extra_domains:
            # Extra domains are read against the dataset's own classes (integer labels of image
            # lists index them; class_mapping renames onto them).
            dataset_classes = check_same_classes(self.domains)
            self.domains += [scan_extra_domain(d, dataset_classes) for d in self.extra_domains]
            for role, names in (
                ("held_out", self.held_out_domains),
                ("target", self.target_domains),
            ):
                names += [d.name for d in self.extra_domains if d.role == role]
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
        unknown = sorted(set(self.target_domains) - set(self.domain_names))
        if unknown:
            raise ValueError(
                f"target_domains {unknown} are not domains of this dataset; "
                f"valid choices: {self.domain_names}"
            )
        both = sorted(set(self.target_domains) & set(self.held_out_domains))
        if both:
            raise ValueError(f"domains {both} are both held out and adaptation targets")
        if not self.trained_domain_names:
            raise ValueError(
                "held_out_domains and target_domains hold every domain: nothing is left to train on"
            )
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
        evaluated_only = set(self.held_out_domains) | set(self.target_domains)
        return [name for name in self.domain_names if name not in evaluated_only]

    @property
    def protocol(self) -> str:
        if self.target_domains:
            trained = "+".join(self.trained_domain_names)
            return f"{trained}_to_" + "+".join(self.target_domains)
        if self.held_out_domains:
            return "leave_out_" + "+".join(self.held_out_domains)
        return "multi_domain"

    # ----- splits, datasets, loaders -----------------------------------------------------------
    def _build_splits(self) -> None:
        self.split_samples: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
        if self.target_domains:
            self.split_samples[TARGET_TRAIN_SPLIT] = []
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
            if domain.name in self.target_domains:
                # Unlabelled by construction: the label never leaves the DataModule, so no
                # model code can train on it by mistake.
                self.split_samples[TARGET_TRAIN_SPLIT] += [
                    Sample(p, UNLABELLED, domain_index) for p, _ in train
                ]
                train = []
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
        if split in ("train", TARGET_TRAIN_SPLIT):
            transform = train_transform(self.image_size, self.augmentation)
            min_side = self.image_size
        else:
            transform = eval_transform(self.image_size, self.resize_size)
            min_side = self.resize_size
        return ImageSampleDataset(
            self.split_samples[split],
            transform,
            min_decode_side=min_side if self.decode_at_reduced_size else None,
            on_bad_image=self.on_bad_image,
            bad_image_dir=self.bad_image_dir,
        )

    def list_files(self) -> list[tuple[str, str]]:
        """Image-list files this DataModule reads, each with the root its paths are relative
        to; the data check rejects absolute entries and entries leaving that root."""
        return []

    def bad_images(self) -> list[str]:
        """Images skipped so far under `on_bad_image: skip` (from every worker process)."""
        return read_bad_images(self.bad_image_dir)

    def prepare_data(self) -> None:
        # prepare_data runs once per node, before setup: the place for a check that reads
        # every file once.
        if not self.check_data:
            return
        from datamodules.checks import IMAGE_PROBLEMS, check_datamodule

        report = check_datamodule(self)
        errors = report.errors
        if self.on_bad_image == "skip":
            # Unreadable images are what `skip` is for; layout and leakage errors still stop.
            errors = [f for f in errors if f.kind not in IMAGE_PROBLEMS]
        if errors:
            raise DatasetLayoutError(
                "the data check found errors (data.check_data: true):\n" + report.format()
            )

    def setup(self, stage: str | None = None) -> None:
        if self.on_bad_image == "skip" and self.bad_image_dir is None:
            import tempfile

            self.bad_image_dir = tempfile.mkdtemp(prefix="stylebench-bad-images-")
        self.datasets = {split: self.make_dataset(split) for split in ("train", "val", "test")}
        if self.split_samples.get(TARGET_TRAIN_SPLIT):
            self.datasets[TARGET_TRAIN_SPLIT] = self.make_dataset(TARGET_TRAIN_SPLIT)
        if self.style_shift_fn is not None:
            style_images = (
                style_folder_images(self.style_shift.style_folder)
                if self.style_shift.style_folder
                else None
            )
            for split in ("val", "test"):
                plain = self.datasets[split]
                references = draw_references(plain.samples, self.style_shift.seed, style_images)
                self.datasets[f"{split}_style"] = StyleShiftedDataset(
                    plain, references, self.style_shift_fn
                )

    def _sampler(self, split: str):
        """The split's sampler, or None to let the DataLoader (and Lightning, under DDP) decide."""
        dataset = self.datasets[split]
        if split == "train" and self.domain_proportions:
            known = {name: index for index, name in enumerate(self.domain_names)}
            proportions = {}
            for name, weight in self.domain_proportions.items():
                if name not in self.trained_domain_names:
                    raise ValueError(
                        f"data.domain_proportions names {name!r}, which is not a trained domain; "
                        f"valid choices: {self.trained_domain_names}"
                    )
                proportions[known[name]] = float(weight)
            return DomainBalancedSampler(
                [sample.domain_index for sample in dataset.samples],
                batch_size=self.batch_size,
                proportions=proportions,
                seed=self.split_seed,
            )
        if (
            split != "train"
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            # Lightning's default pads the last batch with repeated samples, which per-domain
            # accuracy would count twice.
            return UnpaddedDistributedSampler(dataset)
        return None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler = self._sampler(split)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size
            if split in ("train", TARGET_TRAIN_SPLIT)
            else self.eval_batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            # Only `skip` can produce None samples; otherwise keep the default collate.
            collate_fn=collate_skipping_none if self.on_bad_image == "skip" else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The labelled training loader; with target domains, a CombinedLoader of
        `{"source": labelled batch, "target": unlabelled batch}` that cycles the shorter one."""
        source = self._loader("train", shuffle=True)
        if TARGET_TRAIN_SPLIT not in self.datasets:
            return source
        target = self._loader(TARGET_TRAIN_SPLIT, shuffle=True)
        return CombinedLoader({"source": source, "target": target}, mode="max_size_cycle")

    def _evaluation_loaders(self, split: str) -> DataLoader | list:
        """The split's loader; with `style_shift`, [plain, style-shifted] (dataloader_idx 0, 1)."""
        loader = self._loader(split, shuffle=False)
        if self.style_shift_fn is None:
            return loader
        shifted = self._loader(f"{split}_style", shuffle=False)
        if split == "val":
            every_n = self.style_shift.every_n_epochs
            shifted = ScheduledLoader(shifted, lambda: style_evaluation_due(self.trainer, every_n))
        return [loader, shifted]

    def val_dataloader(self) -> DataLoader | list:
        return self._evaluation_loaders("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._evaluation_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
