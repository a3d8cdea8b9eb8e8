"""Training loaders that a checkpoint can resume mid-epoch, on the same trajectory.

A run resumed from a checkpoint should compute, from the next step on, the losses an
uninterrupted run computes. Three things decide a training batch:

- the order of the epoch: the sampler's, a function of its seed and the epoch only
  (`torch.utils.data.DistributedSampler`, or `DomainBalancedSampler`), never of the global RNG;
- the augmentation of each image: `PositionedSampler` pairs every index with a seed of its own,
  drawn from (run seed, rank, stream, epoch, position in the epoch), and `SeededSamples`
  reseeds the transform with it before the image is read. An image's augmentation so depends
  neither on which worker reads it, nor on how many workers there are, nor on whether the
  workers were restarted by a resume;
- the position in the epoch: `ResumableLoader` has Lightning's stateful-loader interface
  (`state_dict`/`load_state_dict`), which Lightning calls when it writes a checkpoint and when
  it resumes one. The state is the sampler's epoch and the batches yielded in it; a resume in
  the same epoch starts at the next batch, without reading the batches before it.

The global RNG (dropout, the style layers' coins) is the model side's to restore
(`lightning_modules.callbacks.resume.ExactResume`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from datamodules.data.transforms import augmentation_seed, seed_dataset_transform


class PositionedSampler(DistributedSampler):
    """`(index, seed)` pairs from a seeded sampler: each index with its own augmentation seed.

    Subclasses `DistributedSampler` (without calling its constructor, as `DomainBalancedSampler`
    does) so that Lightning leaves it in place under DDP: the wrapped sampler shards the indices.

    Args:
        sampler: a sampler whose order is a function of its seed and epoch (`set_epoch`).
        seed: the base of the per-sample seeds (the run seed, rank and stream mixed).
    """

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self.sampler = sampler
        self.base_seed = seed
        self._start = 0

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    @property
    def num_replicas(self) -> int:
        return int(getattr(self.sampler, "num_replicas", 1))

    @property
    def rank(self) -> int:
        return int(getattr(self.sampler, "rank", 0))

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def start_at(self, position: int) -> None:
        """Make the next pass over the epoch begin at `position` (samples of this rank)."""
        self._start = position

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self._start = self._start, 0
        epoch = self.epoch
        for position, index in itertools.islice(enumerate(self.sampler), start, None):
            yield int(index), augmentation_seed(self.base_seed, epoch, position)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededSamples(Dataset):
    """A dataset read by `(index, seed)`: the transform is reseeded with `seed`, then item
    `index` is read, so that the sample's augmentation is that seed's alone.

    Args:
        dataset: the split's dataset (its `transform` is reseeded when it is seedable).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        seed_dataset_transform(self.dataset, seed)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # The split's dataset as seen by code that reads its attributes (samples, transform).
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableLoader(DataLoader):
    """A training DataLoader whose position within the epoch Lightning keeps in checkpoints.

    Its sampler must be a `PositionedSampler`. `state_dict()` is `{"epoch", "batches"}`: the
    sampler's epoch and the batches this loader has yielded in it (Lightning fetches a sized
    loader's batches one at a time, so these are the batches trained on). `load_state_dict`
    keeps the state until the next pass starts; by then Lightning has set the epoch it resumes
    (`set_epoch`), and if that is the saved epoch the pass starts after the saved batches. A
    checkpoint written at the end of an epoch so resumes at the next one's start.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, PositionedSampler):
            raise TypeError("ResumableLoader needs a PositionedSampler")
        self._batches = 0
        self._pending: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # A generator: it starts at the first batch asked for, after Lightning's `set_epoch`.
        pending, self._pending = self._pending, None
        if pending is not None and pending["epoch"] == self.sampler.epoch:
            self.sampler.start_at(pending["batches"] * self.batch_size)
            self._batches = pending["batches"]
        else:
            self._batches = 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._pending = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
