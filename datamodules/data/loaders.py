"""The DataLoaders a `MultiDomainDataModule` gives Lightning: per split, its sampler
(domain-balanced training, unpadded evaluation under DDP), the seeding of its augmentation and
the collate of `on_bad_image: skip`; the combined source/target training loader; the plain and
style-shifted evaluation loaders.

Each function reads the DataModule's settings and its `datasets` (made by `setup`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from datamodules.data.dataset import collate_skipping_none
from datamodules.data.samplers import DomainBalancedSampler, UnpaddedDistributedSampler
from datamodules.data.samples import SampleArray
from datamodules.data.splitting import TARGET_TRAIN_SPLIT, TRAINING_SPLITS
from datamodules.data.style_shift import ScheduledLoader, style_evaluation_due
from datamodules.data.transforms import (
    AugmentationSeeder,
    augmentation_seed,
    seed_dataset_transform,
    stream_id,
)


def domain_balanced_sampler(
    samples: SampleArray,
    proportions: Mapping[str, float],
    domain_names: Sequence[str],
    trained_domains: Sequence[str],
    batch_size: int,
    seed: int,
) -> DomainBalancedSampler:
    """Training batches drawn from the domains in `proportions` (`data.domain_proportions`,
    by domain name; each must be a trained domain)."""
    known = {name: index for index, name in enumerate(domain_names)}
    by_index = {}
    for name, weight in proportions.items():
        if name not in trained_domains:
            raise ValueError(
                f"data.domain_proportions names {name!r}, which is not a trained domain; "
                f"valid choices: {list(trained_domains)}"
            )
        by_index[known[name]] = float(weight)
    return DomainBalancedSampler(
        samples.domain_indices, batch_size=batch_size, proportions=by_index, seed=seed
    )


def split_sampler(datamodule, split: str, dataset: Dataset):
    """The split's sampler, or None to let the DataLoader (and Lightning, under DDP) decide:
    domain-balanced for `train` with `domain_proportions` or `batch_size_per_domain`, unpadded
    for the other splits under DDP (Lightning's default pads the last batch with repeated
    samples, which per-domain accuracy would count twice)."""
    proportions = datamodule.training_domain_proportions if split == "train" else None
    if proportions:
        return domain_balanced_sampler(
            dataset.samples,
            proportions,
            datamodule.domain_names,
            datamodule.trained_domains,
            datamodule.batch_size,
            datamodule.split_seed,
        )
    if split != "train" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return UnpaddedDistributedSampler(dataset)
    return None


def split_loader(datamodule, split: str, shuffle: bool) -> DataLoader:
    """The DataLoader of one split (the source's own stream for a training split, where it
    streams one), its augmentation seeded for this rank and split.

    Augmentation draws from albumentations' own generators: seeded from the run seed, the rank
    and the split here, and per worker (and epoch) in the workers.
    """
    training = split in TRAINING_SPLITS
    if training and (streamed := datamodule.source.training_loader(split)) is not None:
        return streamed
    dataset = datamodule.datasets[split]
    sampler = split_sampler(datamodule, split, dataset)
    trainer = datamodule.trainer
    rank = trainer.global_rank if trainer is not None else 0
    stream = stream_id(split)
    seed_dataset_transform(dataset, augmentation_seed(torch.initial_seed(), rank, stream))
    workers = datamodule.num_workers
    return DataLoader(
        dataset,
        worker_init_fn=AugmentationSeeder(rank, stream) if workers > 0 else None,
        batch_size=datamodule.batch_size if training else datamodule.eval_batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=shuffle and len(dataset) > datamodule.batch_size,
        num_workers=workers,
        persistent_workers=datamodule.persistent_workers,
        # Only `skip` can produce None samples; otherwise keep the default collate.
        collate_fn=collate_skipping_none if datamodule.on_bad_image == "skip" else None,
        pin_memory=datamodule.pin_memory and torch.cuda.is_available(),
    )


def training_loaders(datamodule) -> DataLoader | CombinedLoader:
    """The labelled training loader; with target domains, a CombinedLoader of
    `{"source": labelled batch, "target": unlabelled batch}` that cycles the shorter one."""
    source = split_loader(datamodule, "train", shuffle=True)
    if TARGET_TRAIN_SPLIT not in datamodule.datasets:
        return source
    target = split_loader(datamodule, TARGET_TRAIN_SPLIT, shuffle=True)
    return CombinedLoader({"source": source, "target": target}, mode="max_size_cycle")


def evaluation_loaders(datamodule, split: str) -> DataLoader | list:
    """The split's loader; with `style_shift`, [plain, style-shifted] (dataloader_idx 0, 1),
    the shifted validation loader yielding only on the epochs it is due."""
    loader = split_loader(datamodule, split, shuffle=False)
    if datamodule.style_shift_fn is None:
        return loader
    shifted = split_loader(datamodule, f"{split}_style", shuffle=False)
    if split == "val":
        every_n = datamodule.style_shift.every_n_epochs
        shifted = ScheduledLoader(
            shifted, lambda: style_evaluation_due(datamodule.trainer, every_n)
        )
    return [loader, shifted]


def in_order_loader(datamodule, split: str, batch_size: int | None = None) -> DataLoader:
    """Any split's images in order with the evaluation transform (no augmentation, no style
    shift); `ValueError` naming the splits that have images if this one has none."""
    if not datamodule.split_samples.get(split):
        raise ValueError(
            f"split {split!r} has no images; valid choices: "
            f"{sorted(name for name, samples in datamodule.split_samples.items() if samples)}"
        )
    return DataLoader(
        datamodule.make_dataset(split, augment=False),
        batch_size=batch_size or datamodule.eval_batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        collate_fn=collate_skipping_none if datamodule.on_bad_image == "skip" else None,
    )
