"""The DataLoaders a `MultiDomainDataModule` gives Lightning: per split, its sampler
(domain-balanced training, unpadded evaluation under DDP), the seeding of its augmentation and
the collate of `on_bad_image: skip`; the combined source/target training loader; the plain and
style-shifted evaluation loaders.

Training loaders resume mid-epoch on the trajectory of an uninterrupted run
(`datamodules.data.resumable`). Every loader draws its workers' seeds from a generator of its
own, so that making or starting a loader never moves the global RNG the model draws from.
Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the main process
stops them) and exit quietly when the main process stops them (`quiet_worker_signals`).

Each function reads the DataModule's settings and its `datasets` (made by `setup`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence

import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.data.dataset import collate_skipping_none
from datamodules.data.resumable import PositionedSampler, ResumableLoader, SeededSamples
from datamodules.data.samplers import (
    DomainBalancedSampler,
    UnpaddedDistributedSampler,
    distributed_world,
    shuffled_within_domains,
)
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
    samples, which per-domain accuracy would count twice) or with `eval_order: shuffled`."""
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
    if split == "train":
        return None
    if datamodule.eval_order == "shuffled":
        order = shuffled_within_domains(dataset.samples.domain_indices, datamodule.split_seed)
        return UnpaddedDistributedSampler(dataset, order=order)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return UnpaddedDistributedSampler(dataset)
    return None


def quiet_worker_signals() -> None:
    """In a DataLoader worker: leave stopping to the main process.

    SIGINT is ignored: a terminal sends Ctrl-C to the whole process group, and the main process
    stops the run at the next batch and then its workers. SIGTERM is blocked and waited for by
    a thread: from the main process (which stops workers that do not exit in time) or once the
    main process is gone, the worker exits quietly (status 0, which the main process does not
    report as a failure); from anyone else (a `kill` of the process group) it is ignored, since
    the main process got it too. Without `sigwaitinfo` (not Linux) only SIGINT is ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait_for_sigterm() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=wait_for_sigterm, name="sigterm-watch", daemon=True).start()


class WorkerStart:
    """A DataLoader `worker_init_fn`: `quiet_worker_signals`, then `then(worker_id)`.

    Args:
        then: the loader's own worker initialisation (the augmentation seeder), if any.
    """

    def __init__(self, then: Callable[[int], None] | None = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        quiet_worker_signals()
        if self.then is not None:
            self.then(worker_id)


def loader_generator(*parts: int) -> torch.Generator:
    """A generator of the loader's own for its workers' seeds (torch draws one each time it
    starts them), seeded from `parts`: with `DataLoader(generator=None)` the draw would come
    from the global RNG, and resuming (or adding a loader) would shift the model's draws."""
    return torch.Generator().manual_seed(augmentation_seed(torch.initial_seed(), *parts))


def split_loader(datamodule, split: str, shuffle: bool) -> DataLoader:
    """The DataLoader of one split (the source's own stream for a training split, where it
    streams one), its augmentation seeded for this rank and split.

    Augmentation draws from albumentations' own generators. A shuffled (training) loader is a
    `ResumableLoader`: each sample's augmentation is seeded from the run seed, the rank, the
    split, the epoch and its position (`datamodules.data.resumable`). Other loaders are seeded
    from the run seed, the rank and the split here, and per worker in the workers.
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
    drop_last = shuffle and len(dataset) > datamodule.batch_size
    loader_class: type[DataLoader] = DataLoader
    if shuffle:
        if sampler is None:
            # Every rank draws the same order from the same seed; each takes its share.
            replicas, own_rank = distributed_world()
            order_seed = augmentation_seed(torch.initial_seed(), stream) % 2**31
            sampler = DistributedSampler(dataset, replicas, own_rank, shuffle=True, seed=order_seed)
        sampler = PositionedSampler(sampler, augmentation_seed(torch.initial_seed(), rank, stream))
        dataset, loader_class = SeededSamples(dataset), ResumableLoader
    return loader_class(
        dataset,
        worker_init_fn=WorkerStart(AugmentationSeeder(rank, stream)) if workers > 0 else None,
        batch_size=datamodule.batch_size if training else datamodule.eval_batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=datamodule.persistent_workers,
        # Only `skip` can produce None samples; otherwise keep the default collate.
        collate_fn=collate_skipping_none if datamodule.on_bad_image == "skip" else None,
        pin_memory=datamodule.pin_memory and torch.cuda.is_available(),
        generator=loader_generator(rank, stream),
    )


#: The most loader workers a default gives each device: beyond about 8, decoding and augmenting
#: small images no longer limits a GPU's step, and every worker holds a copy of the dataset.
MAX_DEFAULT_WORKERS = 8


def default_num_workers(cores: int | None = None, local_devices: int | None = None) -> int:
    """Loader workers per process when `data.num_workers` is not set: the cores this process
    may use (`os.sched_getaffinity`) shared among the machine's devices (one training process
    each under DDP), one core per process left to the training loop, at least 1, at most
    `MAX_DEFAULT_WORKERS`."""
    if cores is None:
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    if local_devices is None:
        local_devices = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores // max(1, local_devices) - 1))


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
    workers = datamodule.num_workers
    return DataLoader(
        datamodule.make_dataset(split, augment=False),
        batch_size=batch_size or datamodule.eval_batch_size,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=WorkerStart() if workers > 0 else None,
        collate_fn=collate_skipping_none if datamodule.on_bad_image == "skip" else None,
        generator=loader_generator(stream_id(split)),
    )
