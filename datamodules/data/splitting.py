"""Seeded, class-stratified splits: train/val/test fractions, and k folds.

Both are per class, so every class keeps its share in every split, and seeded, so a split is the
same in every run and on every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from datamodules.data.samples import LabelledRows
from datamodules.data.tables import IndexedFiles, concat

#: The splits every DataModule has.
SPLITS = ("train", "val", "test")
#: The split holding the target domains' unlabelled training images.
TARGET_TRAIN_SPLIT = "train_target"
#: The splits that are trained on (augmented, shuffled); the others are evaluated.
TRAINING_SPLITS = ("train", TARGET_TRAIN_SPLIT)
#: Label of adaptation-target training samples (`target_domains`): their labels are not used.
UNLABELLED = -1

#: (path, label) pairs of one split; the label indexes the dataset's class list.
LabelledFiles = list[tuple[str, int]]


def stratified_split(
    files_by_class: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[LabelledRows, LabelledRows, LabelledRows]:
    """Seeded split of each class's files into (train, val, test) rows with their labels
    (iterating one gives its `(path, label)` pairs).

    Per class, in `class_names` order: the files are permuted by one generator seeded with
    `seed`; the first `round(n * val_fraction)` of the permutation go to val, the next
    `round(n * test_fraction)` to test, the rest to train, each in permutation order. A scanned
    domain's `IndexedFiles` is split in place; another mapping is put in a table first.
    """
    files = IndexedFiles.of(files_by_class)
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label, class_name in enumerate(class_names):
        rows = files.rows_of(class_name)
        order = rng.permutation(len(rows))
        num_val = round(len(rows) * val_fraction)
        num_test = round(len(rows) * test_fraction)
        ranges = (order[num_val + num_test :], order[:num_val], order[num_val : num_val + num_test])
        for split, chosen in zip(parts, ranges, strict=True):
            split.append((rows[chosen], np.full(len(chosen), label, np.int32)))
    return tuple(  # type: ignore[return-value]
        LabelledRows(
            files.table, concat([r for r, _ in p], np.int64), concat([x for _, x in p], np.int32)
        )
        for p in parts
    )


def stratified_folds(
    files_by_class: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    num_folds: int,
    seed: int,
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
