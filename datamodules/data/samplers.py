"""Samplers that shard across DDP ranks: domain-balanced training, unpadded evaluation.

Both subclass `DistributedSampler`, so Lightning leaves them in place instead of wrapping the
loader's sampler in its own; with one process they behave as plain samplers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler


def distributed_world() -> tuple[int, int]:
    """(num_replicas, rank) of the default process group, (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def shuffled_within_domains(domain_indices: np.ndarray, seed: int) -> np.ndarray:
    """A seeded evaluation order: the domains in their listed order, each domain's samples in a
    random order (DomainBed evaluates each domain in a seeded shuffle; the splits here list a
    domain's images class by class)."""
    keys = np.random.default_rng(seed).random(len(domain_indices))
    return np.lexsort((keys, np.asarray(domain_indices)))


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` into integer parts proportional to `weights` (largest remainder)."""
    weights_array = np.asarray(weights, dtype=np.float64)
    exact = total * weights_array / weights_array.sum()
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


class DomainBalancedSampler(DistributedSampler):
    """Every batch draws from every domain in set proportions; ranks get disjoint samples.

    All ranks build the same global plan from `seed` and the epoch: a sequence of global steps,
    each made of one batch per rank with `apportion(batch_size, proportions)` samples of each
    domain. Each domain's samples are used in a fresh random order and reshuffled only when the
    domain is exhausted, so within one pass over a domain no sample is given to two ranks. An
    epoch has as many samples as the dataset (rounded down to whole global steps); small domains
    given a large proportion are oversampled, which is what balancing means.
    """

    def __init__(
        self,
        domain_of_sample: Sequence[int],
        batch_size: int,
        proportions: dict[int, float] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        """Plan batches that draw from every domain in `proportions`, split across the ranks.

        Args:
            domain_of_sample: the domain index of each sample of the dataset.
            batch_size: the per-process batch size (the loader must use the same).
            proportions: weight of each domain index in a batch (default: equal).
            num_replicas: number of processes (default: from the process group).
            rank: this process's rank (default: from the process group).
            seed: shared by all ranks; the epoch is added to it.
        """
        world, own_rank = distributed_world()
        self.num_replicas = world if num_replicas is None else num_replicas
        self.rank = own_rank if rank is None else rank
        self.epoch = 0
        self.seed = seed
        self.shuffle = True
        self.drop_last = True
        domains = np.asarray(domain_of_sample)
        self.domain_ids = sorted(set(domains.tolist()))
        self.members = {d: np.flatnonzero(domains == d) for d in self.domain_ids}
        proportions = proportions or dict.fromkeys(self.domain_ids, 1.0)
        unknown = set(proportions) - set(self.domain_ids)
        if unknown:
            raise ValueError(f"domain_proportions name domains with no training data: {unknown}")
        self.counts_per_batch = dict(
            zip(
                self.domain_ids,
                apportion(batch_size, [proportions.get(d, 0.0) for d in self.domain_ids]),
                strict=True,
            )
        )
        self.batch_size = batch_size
        self.steps = len(domains) // (batch_size * self.num_replicas)
        if self.steps == 0:
            raise ValueError(
                f"{len(domains)} training samples cannot fill one batch of {batch_size} on each of "
                f"{self.num_replicas} processes; lower the batch size"
            )
        self.num_samples = self.steps * batch_size
        self.total_size = self.num_samples * self.num_replicas

    def global_plan(self) -> list[list[int]]:
        """Per global step and rank, the batch's sample indices: plan[step * R + rank]."""
        rng = np.random.default_rng((self.seed, self.epoch))
        queues = {d: list(rng.permutation(self.members[d])) for d in self.domain_ids}
        plan = []
        for _ in range(self.steps * self.num_replicas):
            batch = []
            for domain, count in self.counts_per_batch.items():
                for _ in range(count):
                    if not queues[domain]:
                        queues[domain] = list(rng.permutation(self.members[domain]))
                    batch.append(int(queues[domain].pop()))
            # mix the domains inside the batch (BatchNorm statistics do not care, logs do)
            plan.append([batch[i] for i in rng.permutation(len(batch))])
        return plan

    def __iter__(self) -> Iterator[int]:
        plan = self.global_plan()
        for step in range(self.steps):
            yield from plan[step * self.num_replicas + self.rank]

    def __len__(self) -> int:
        return self.num_samples


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler: rank r takes samples r, r + R, ...; nothing is repeated to even out
    the ranks (PyTorch's DistributedSampler pads with repeats, which would count some samples
    twice in per-domain accuracy). Ranks may differ by one sample."""

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        order: Sequence[int] | None = None,
    ) -> None:
        """Take this rank's share of the dataset, in the dataset's order or in `order`.

        Args:
            dataset: the split's dataset.
            num_replicas: processes (default: the process group's size, 1 without one).
            rank: this process's rank (default: the process group's).
            order: the evaluation order, a permutation of the dataset's indices (default:
                as listed).
        """
        world, own_rank = distributed_world()
        super().__init__(
            dataset,
            num_replicas=world if num_replicas is None else num_replicas,
            rank=own_rank if rank is None else rank,
            shuffle=False,
        )
        self.order = list(range(len(dataset))) if order is None else [int(i) for i in order]
        if sorted(self.order) != list(range(len(dataset))):
            raise ValueError("order must be a permutation of the dataset's indices")
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
