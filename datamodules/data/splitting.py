"""Seeded, class-stratified splits: train/val/test fractions, and k folds.

Both are per class, so every class keeps its share in every split, and seeded, so a split is the
same in every run and on every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

#: (path, label) pairs of one split; the label indexes the dataset's class list.
LabelledFiles = list[tuple[str, int]]


def stratified_split(
    files_by_class: dict[str, list[str]],
    class_names: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[LabelledFiles, LabelledFiles, LabelledFiles]:
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


def stratified_folds(
    files_by_class: dict[str, list[str]], class_names: Sequence[str], num_folds: int, seed: int
) -> list[int]:
    """Fold index of every file (in class order, then file order): each class is shuffled and
    dealt round-robin, continuing where the previous class stopped, so that per-class and total
    fold sizes differ by at most one."""
    folds: list[int] = []
    offset = 0
    for class_name in class_names:
        files = files_by_class[class_name]
        # A per-class stream: a class's folds do not depend on which other classes exist.
        rng = np.random.default_rng([seed, zlib.crc32(class_name.encode())])
        fold_of_rank = (np.arange(len(files)) + offset) % num_folds
        class_folds = np.empty(len(files), dtype=int)
        class_folds[rng.permutation(len(files))] = fold_of_rank
        folds += class_folds.tolist()
        offset += len(files)
    return folds
