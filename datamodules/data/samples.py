"""The samples of a split, as arrays over path tables: the one representation of samples.

- `LabelledRows`: rows of one table with their labels (one domain's split, or an official
  split), without a Python object per file; iterating gives `(path, label)` pairs;
- `SampleArray`: a split's samples over all domains as integer arrays (table, row, label,
  domain index); it behaves as a sequence of `Sample`s, built one at a time when indexed.

Nothing in these is a per-sample Python object, so forked DataLoader workers share the pages
(they are never written) and the memory per sample is constant: about 15 bytes of arrays per
sample plus the shared path bytes of its table (`datamodules/data/tables.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from datamodules.data.layout import Sample
from datamodules.data.tables import IndexedFiles, PathTable, concat


class LabelledRows:
    """Rows of a table with their labels: a split of one domain without per-file objects.

    Iterating gives `(path, label)` pairs, as the list form of `official_splits` does.
    """

    def __init__(self, table: PathTable, rows: np.ndarray, labels: np.ndarray) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int32)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, int]]) -> LabelledRows:
        """`(path, label)` pairs (the list form of `official_splits`) as rows of a new table."""
        pairs = list(pairs)
        table = PathTable.from_paths([path for path, _ in pairs])
        return cls(table, np.arange(len(pairs)), [label for _, label in pairs])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for row, label in zip(self.rows.tolist(), self.labels.tolist(), strict=True):
            yield self.table.path(row), label


def as_labelled_rows(files: Sequence[tuple[str, int]] | LabelledRows) -> LabelledRows:
    """A split as `official_splits` gives it: `(path, label)` pairs (the simple form, turned
    into rows of a new table here, once) or rows of the file index (`labelled_rows`, which keep
    a large split, ImageNet's 1.28M files, as arrays)."""
    return files if isinstance(files, LabelledRows) else LabelledRows.from_pairs(files)


def labelled_rows(files_by_class: IndexedFiles, class_names: Sequence[str]) -> LabelledRows:
    """Every file of a domain with its label (index in `class_names`), in class order."""
    rows = [files_by_class.rows_of(name) for name in class_names]
    labels = [np.full(len(r), label, np.int32) for label, r in enumerate(rows)]
    return LabelledRows(files_by_class.table, concat(rows, np.int64), concat(labels, np.int32))


def relabelled(files: LabelledRows, label: int) -> LabelledRows:
    """The same files, all with `label` (e.g. unlabelled adaptation targets)."""
    return LabelledRows(files.table, files.rows, np.full(len(files), label, np.int32))


class SampleArray(Sequence):
    """A split's samples as arrays over path tables; indexing builds one `Sample`.

    Args:
        tables: the path tables the samples come from.
        table_of: uint8, the table of each sample.
        rows: int64, the row of each sample in its table.
        labels: int32, the label of each sample.
        domain_indices: int16, the domain index of each sample.
    """

    def __init__(
        self,
        tables: Sequence[PathTable],
        table_of: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        domain_indices: np.ndarray,
    ) -> None:
        self.tables = list(tables)
        self.table_of = np.asarray(table_of, dtype=np.uint8)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.domain_indices = np.asarray(domain_indices, dtype=np.int16)

    @classmethod
    def build(cls, parts: Sequence[tuple[LabelledRows, int]]) -> SampleArray:
        """Concatenate `(labelled rows, domain index)` parts."""
        tables: list[PathTable] = []
        table_ids: dict[int, int] = {}
        table_of, rows, labels, domains = [], [], [], []
        for part, domain_index in parts:
            if len(part) == 0:
                continue
            if id(part.table) not in table_ids:
                table_ids[id(part.table)] = len(tables)
                tables.append(part.table)
            if len(tables) > 255:
                raise ValueError("a split spans more than 255 path tables")
            table_of.append(np.full(len(part), table_ids[id(part.table)], np.uint8))
            rows.append(part.rows)
            labels.append(part.labels)
            domains.append(np.full(len(part), domain_index, np.int16))
        return cls(
            tables,
            concat(table_of, np.uint8),
            concat(rows, np.int64),
            concat(labels, np.int32),
            concat(domains, np.int16),
        )

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> str:
        return self.tables[self.table_of[index]].path(self.rows[index])

    def __getitem__(self, index):
        if isinstance(index, slice):
            chosen = np.arange(len(self))[index]
            return SampleArray(
                self.tables,
                self.table_of[chosen],
                self.rows[chosen],
                self.labels[chosen],
                self.domain_indices[chosen],
            )
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return Sample(self.path(index), int(self.labels[index]), int(self.domain_indices[index]))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __add__(self, other: Sequence[Sample]) -> list[Sample]:
        return list(self) + list(other)

    def __repr__(self) -> str:
        return f"SampleArray({len(self)} samples)"

    @property
    def nbytes(self) -> int:
        """Bytes of the sample arrays plus the path tables they use (mapped or not)."""
        own = sum(a.nbytes for a in (self.table_of, self.rows, self.labels, self.domain_indices))
        return own + sum(t.nbytes for t in self.tables)
