"""Path tables: many file paths held as arrays, and the file format they are stored in.

Holding a million paths as Python strings costs about a kilobyte each in every process, and
DataLoader workers forked from the main process slowly copy them (reading a Python object
writes its reference count, so each page touched is copied). A table holds them instead as
arrays that forked workers share and never write:

- `PathTable`: the paths as one contiguous uint8 buffer of UTF-8 bytes plus int64 offsets (row
  `i` is `prefix + buffer[offsets[i]:offsets[i + 1]]`, the prefix being e.g. the scanned folder,
  stored once), and the class of each row;
- `PathSlice`: rows `start:stop` of a table as a read-only sequence of path strings;
- `IndexedFiles`: a domain's `files_by_class` (class name -> its files) as row ranges of a table
  whose rows are grouped by class.

A table is stored (`write_table`) as a magic line, a JSON header and the three arrays, each
aligned to 64 bytes, so that `read_table` memory-maps them instead of reading them; the file
index (`datamodules/data/index.py`) is such a file per scanned folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

#: First bytes of a table file; the version is bumped whenever the layout changes.
MAGIC = b"STYLEBENCH-INDEX\x00v2\n"
_ALIGN = 64


def concat(arrays: Sequence[np.ndarray], dtype) -> np.ndarray:
    """`np.concatenate` that also takes no arrays (an empty array of `dtype`)."""
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


class PathTable:
    """Paths as one uint8 buffer of UTF-8 bytes plus offsets, and each row's class index.

    A table read from a file is memory-mapped; pickling it (spawned workers) sends the file
    name and reopens the mapping instead of copying the arrays.
    """

    def __init__(
        self,
        buffer: np.ndarray,
        offsets: np.ndarray,
        classes: np.ndarray,
        source_file: str | None = None,
        prefix: str = "",
    ) -> None:
        self.buffer = buffer
        self.offsets = offsets
        self.classes = classes
        self.source_file = source_file
        #: Stored once instead of in every row (the scanned folder, for a scan's table).
        self.prefix = prefix

    @classmethod
    def from_paths(
        cls, paths: Sequence[str], classes: Sequence[int] | None = None, prefix: str = ""
    ) -> PathTable:
        if prefix and not all(p.startswith(prefix) for p in paths):
            prefix = ""
        encoded = [p[len(prefix) :].encode("utf-8", "surrogateescape") for p in paths]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        labels = np.asarray(classes if classes is not None else [0] * len(encoded), np.int32)
        return cls(buffer, offsets, labels, prefix=prefix)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def path(self, row: int) -> str:
        start, stop = self.offsets[row], self.offsets[row + 1]
        return self.prefix + self.buffer[start:stop].tobytes().decode("utf-8", "surrogateescape")

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes + self.offsets.nbytes + self.classes.nbytes

    def __getstate__(self) -> dict:
        if self.source_file is not None:
            return {"source_file": self.source_file}
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        if set(state) == {"source_file"}:
            self.__dict__.update(read_table(Path(state["source_file"]))[1].__dict__)
        else:
            self.__dict__.update(state)


class PathSlice(Sequence):
    """Rows `start:stop` of a table as a read-only sequence of path strings."""

    def __init__(self, table: PathTable, start: int, stop: int) -> None:
        self.table, self.start, self.stop = table, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.table.path(self.start + index)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"PathSlice({len(self)} paths from {self[0] if len(self) else None!r})"


class IndexedFiles(Mapping):
    """A domain's `files_by_class` (class name -> its files) over a table whose rows are
    grouped by class, in the order of `class_names`."""

    def __init__(self, table: PathTable, class_names: Sequence[str]) -> None:
        self.table = table
        self.class_names = list(class_names)
        counts = np.bincount(table.classes, minlength=len(self.class_names))
        self.starts = np.zeros(len(self.class_names) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.starts[1:])
        self._position = {name: i for i, name in enumerate(self.class_names)}

    @classmethod
    def from_mapping(cls, files_by_class: Mapping[str, Sequence[str]]) -> IndexedFiles:
        """A table of the files of a `{class name: [path, ...]}` mapping (e.g. an image list's
        domain), in its class order."""
        names = list(files_by_class)
        paths = [path for name in names for path in files_by_class[name]]
        classes = [label for label, name in enumerate(names) for _ in files_by_class[name]]
        return cls(PathTable.from_paths(paths, classes), names)

    @classmethod
    def of(cls, files_by_class: Mapping[str, Sequence[str]]) -> IndexedFiles:
        """The mapping as `IndexedFiles`: itself if it is one (a scan from the file index), else
        a new table of its files (`from_mapping`)."""
        return (
            files_by_class if isinstance(files_by_class, cls) else cls.from_mapping(files_by_class)
        )

    def __getitem__(self, name: str) -> PathSlice:
        i = self._position[name]
        return PathSlice(self.table, int(self.starts[i]), int(self.starts[i + 1]))

    def __iter__(self) -> Iterator[str]:
        return iter(self.class_names)

    def __len__(self) -> int:
        return len(self.class_names)

    def rows_of(self, name: str) -> np.ndarray:
        i = self._position[name]
        return np.arange(self.starts[i], self.starts[i + 1], dtype=np.int64)


# ----- the file a table is stored in ------------------------------------------------------------
def _data_start(header_length: int) -> int:
    return -(-(len(MAGIC) + 8 + header_length) // _ALIGN) * _ALIGN


def write_table(path: Path, table: PathTable, header: dict) -> None:
    """Store the table and `header` (any JSON object; `prefix` and the array layout are added)
    atomically: a temporary file in the same folder, renamed into place."""
    arrays = {"buffer": table.buffer, "offsets": table.offsets, "classes": table.classes}
    header = {**header, "prefix": table.prefix, "arrays": {}}
    offset = 0
    for name, array in arrays.items():
        header["arrays"][name] = [array.dtype.str, len(array), offset]
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    encoded = json.dumps(header).encode()
    start = _data_start(len(encoded))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(MAGIC + len(encoded).to_bytes(8, "little") + encoded)
            for name, array in arrays.items():
                out.seek(start + header["arrays"][name][2])
                out.write(np.ascontiguousarray(array).tobytes())
            out.truncate(start + offset)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def _header_and_start(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a stylebench index file (or an older version)")
        length = int.from_bytes(handle.read(8), "little")
        return json.loads(handle.read(length)), _data_start(length)


def read_header(path: Path) -> dict:
    """The header of a table file; `ValueError` if it is not one."""
    return _header_and_start(path)[0]


def read_table(path: Path) -> tuple[dict, PathTable]:
    """(header, memory-mapped table) of a table file; `ValueError` if it is not one."""
    header, start = _header_and_start(path)
    arrays = {}
    for name, (dtype, count, offset) in header["arrays"].items():
        arrays[name] = (
            np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=start + offset, shape=(count,))
            if count
            else np.zeros(0, np.dtype(dtype))
        )
    table = PathTable(
        arrays["buffer"], arrays["offsets"], arrays["classes"], str(path), header["prefix"]
    )
    return header, table
