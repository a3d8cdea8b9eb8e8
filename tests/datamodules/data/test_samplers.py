from __future__ import annotations

from collections import Counter

import pytest

from datamodules.data.samplers import DomainBalancedSampler, UnpaddedDistributedSampler, apportion


def test_apportion_sums_and_follows_weights() -> None:
    assert apportion(16, [1, 1, 1, 1]) == [4, 4, 4, 4]
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(8, [3, 1]) == [6, 2]


def test_every_batch_has_the_set_domain_proportions() -> None:
    # domain 0 is three times larger than domain 1, but batches are drawn 1:1
    domains = [0] * 60 + [1] * 20
    sampler = DomainBalancedSampler(
        domains, batch_size=8, proportions={0: 1, 1: 1}, num_replicas=1, rank=0
    )
    indices = list(sampler)
    assert len(indices) == len(sampler) == 80
    for start in range(0, len(indices), 8):
        assert Counter(domains[i] for i in indices[start : start + 8]) == {0: 4, 1: 4}


def test_ranks_get_disjoint_parts_that_cover_the_epoch() -> None:
    domains = [0] * 24 + [1] * 24 + [2] * 24
    ranks = [
        DomainBalancedSampler(domains, batch_size=6, num_replicas=2, rank=rank, seed=3)
        for rank in (0, 1)
    ]
    parts = [list(sampler) for sampler in ranks]
    assert len(parts[0]) == len(parts[1]) == 36
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(72))
    for part in parts:  # balanced on each rank too
        for start in range(0, 36, 6):
            assert Counter(domains[i] for i in part[start : start + 6]) == {0: 2, 1: 2, 2: 2}


def test_set_epoch_reshuffles_identically_on_every_rank() -> None:
    domains = [0, 1] * 20
    first = DomainBalancedSampler(domains, batch_size=4, num_replicas=2, rank=0)
    again = DomainBalancedSampler(domains, batch_size=4, num_replicas=2, rank=0)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0
    again.set_epoch(1)
    assert list(again) == list(first)


def test_too_few_samples_for_one_batch_per_rank_is_an_error() -> None:
    with pytest.raises(ValueError, match="lower the batch size"):
        DomainBalancedSampler([0, 1, 0], batch_size=4, num_replicas=2, rank=0)


def test_unpadded_sampler_counts_every_sample_exactly_once() -> None:
    dataset = list(range(10))
    parts = [list(UnpaddedDistributedSampler(dataset, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(index for part in parts for index in part) == dataset
