"""`data.eval_order: shuffled`: each domain's evaluation images in a seeded random order (as
DomainBed evaluates), the domains kept apart, every image once across DDP ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.data.samplers import UnpaddedDistributedSampler, shuffled_within_domains
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import make_officehome_tree

CLASSES = ("Bike", "Mug", "Pen")


def test_shuffled_order_keeps_domains_contiguous_and_is_seeded() -> None:
    domains = np.repeat([0, 1, 2], [7, 5, 9])
    order = shuffled_within_domains(domains, seed=3)
    assert sorted(order.tolist()) == list(range(len(domains)))
    # domain by domain in their listed order
    assert domains[order].tolist() == sorted(domains.tolist())
    # within a domain, not the listed order (the chance of the identity is 1/9!)
    third = order[domains[order] == 2]
    assert third.tolist() != sorted(third.tolist())
    assert order.tolist() == shuffled_within_domains(domains, seed=3).tolist()
    assert order.tolist() != shuffled_within_domains(domains, seed=4).tolist()


def test_ranks_share_an_order_without_repeats() -> None:
    dataset = list(range(11))
    order = np.random.default_rng(0).permutation(11).tolist()
    shares = [
        list(UnpaddedDistributedSampler(dataset, num_replicas=3, rank=r, order=order))
        for r in range(3)
    ]
    assert sorted(i for share in shares for i in share) == dataset
    assert shares[0] == order[0::3] and len(shares[2]) == len(
        UnpaddedDistributedSampler(dataset, num_replicas=3, rank=2, order=order)
    )
    with pytest.raises(ValueError, match="permutation"):
        UnpaddedDistributedSampler(dataset, num_replicas=1, rank=0, order=[0, 0, 1])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "officehome"
    make_officehome_tree(
        root, {d: 6 for d in ("Art", "Clipart", "Product", "Real World")}, classes=CLASSES
    )
    return root


def validation_labels(root: Path, eval_order: str, split_seed: int = 0) -> list[tuple]:
    data = OfficeHomeDataModule(
        root=str(root),
        image_size=16,
        num_workers=0,
        batch_size=4,
        eval_batch_size=5,
        eval_order=eval_order,
        split_seed=split_seed,
        held_out_domains=["Art"],
    )
    data.setup("fit")
    loader = data.val_dataloader()
    loader = loader if not isinstance(loader, list) else loader[0]
    pairs = []
    for _, labels, domains in loader:
        pairs += list(zip(domains.tolist(), labels.tolist(), strict=True))
    return pairs


def test_shuffled_evaluation_mixes_classes_within_each_domain(root: Path) -> None:
    listed = validation_labels(root, "listed")
    shuffled = validation_labels(root, "shuffled")
    # the same images, domain by domain, but no longer class by class
    assert sorted(listed) == sorted(shuffled)
    assert [d for d, _ in shuffled] == sorted(d for d, _ in shuffled)
    assert [label for _, label in listed] != [label for _, label in shuffled]
    assert shuffled == validation_labels(root, "shuffled")


def test_an_unknown_order_names_the_setting(root: Path) -> None:
    with pytest.raises(ValueError, match=r"data.eval_order='random'.*listed"):
        OfficeHomeDataModule(root=str(root), eval_order="random")


def test_shards_refuse_a_shuffled_order(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"eval_order: shuffled does not apply to data\.shards"):
        OfficeHomeDataModule(root=str(root), eval_order="shuffled", shards=str(tmp_path / "s"))
