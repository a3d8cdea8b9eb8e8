"""Resumable training loaders: per-sample augmentation seeds, a mid-epoch state Lightning can
save and load, and workers that leave signals to the main process."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.data.loaders import WorkerStart
from datamodules.data.resumable import PositionedSampler, ResumableLoader, SeededSamples
from datamodules.data.transforms import AugmentationConfig, augmentation_seed, train_transform


class Images(Dataset):
    """`length` different images through a random training transform; item = (image, index)."""

    def __init__(self, length: int = 24) -> None:
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, size=(length, 40, 40, 3), dtype=np.uint8)
        self.transform = train_transform(16, AugmentationConfig(rotate_degrees=30))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), index


def loader(workers: int = 0, seed: int = 5, dataset: Dataset | None = None) -> ResumableLoader:
    dataset = dataset or Images()
    order = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return ResumableLoader(
        SeededSamples(dataset),
        batch_size=4,
        sampler=PositionedSampler(order, seed=seed),
        drop_last=True,
        num_workers=workers,
        worker_init_fn=WorkerStart() if workers else None,
    )


def batches(loader: DataLoader, epoch: int, count: int | None = None) -> list:
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch)
        if count is not None and len(out) == count:
            break
    return out


def same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )


def test_each_sample_gets_the_seed_of_its_epoch_and_position() -> None:
    order = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler = PositionedSampler(order, seed=11)
    sampler.set_epoch(2)
    pairs = list(sampler)
    order.set_epoch(2)
    assert [index for index, _ in pairs] == list(order)
    assert [seed for _, seed in pairs] == [augmentation_seed(11, 2, p) for p in range(10)]
    sampler.start_at(4)
    assert list(sampler) == pairs[4:]
    assert list(sampler) == pairs  # the skip applies to one pass only


def test_a_sample_is_augmented_by_its_seed_alone() -> None:
    samples = SeededSamples(Images())
    assert torch.equal(samples[(3, 7)][0], samples[(3, 7)][0])
    assert not torch.equal(samples[(3, 7)][0], samples[(3, 8)][0])
    assert samples.images is samples.dataset.images  # attributes of the split's dataset


def test_a_loaded_state_continues_the_epoch_where_it_stopped() -> None:
    first = loader()
    whole = batches(loader(), epoch=1)
    assert len(whole) == 6
    batches(first, epoch=1, count=2)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    assert same(batches(resumed, epoch=1), whole[2:])
    # The next pass is a whole epoch again.
    assert same(batches(resumed, epoch=1), whole)


def test_a_state_saved_at_an_epoch_end_resumes_at_the_next_epoch_start() -> None:
    first = loader()
    batches(first, epoch=0)
    assert first.state_dict() == {"epoch": 0, "batches": 6}
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    # Lightning sets the epoch it resumes (1) before the first batch: no skip.
    assert same(batches(resumed, epoch=1), batches(loader(), epoch=1))


def test_batches_do_not_depend_on_the_number_of_workers() -> None:
    # Each sample's augmentation is its seed's alone: 0, 1 and 2 workers draw alike, and a
    # restarted (resumed) set of workers draws what the first one would have.
    reference = batches(loader(workers=0), epoch=3)
    assert same(batches(loader(workers=1), epoch=3), reference)
    assert same(batches(loader(workers=2), epoch=3), reference)
    assert not same(batches(loader(workers=0), epoch=4), reference)


class Slow(Images):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(0.05)
        return super().__getitem__(index)


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="Linux: sigwaitinfo")
def test_workers_ignore_sigint_and_a_sigterm_that_is_not_their_parents() -> None:
    import multiprocessing

    # Children of earlier tests (a worker still shutting down) are not this loader's workers.
    earlier = set(multiprocessing.active_children())
    data = DataLoader(Slow(40), batch_size=4, num_workers=2, worker_init_fn=WorkerStart())
    iterator = iter(data)
    got = [next(iterator)]
    workers = [child for child in multiprocessing.active_children() if child not in earlier]
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the process group
        # From another process (not the parent), as a `kill` of the process group is.
        subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
    got += list(iterator)  # no "DataLoader worker (pid N) is killed by signal"
    assert len(got) == 10
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="Linux: sigwaitinfo")
def test_a_worker_exits_quietly_on_its_parents_sigterm() -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")

    def child() -> None:
        WorkerStart()(0)
        time.sleep(30)

    process = context.Process(target=child)
    process.start()
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.2)
    assert process.is_alive()  # SIGINT ignored
    process.terminate()  # SIGTERM from the parent: what torch does to a worker it stops
    process.join(timeout=10)
    assert process.exitcode == 0  # quietly, not "killed by signal: Terminated"
