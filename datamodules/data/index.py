"""The file index of a dataset folder, scanned once per machine and shared by every process.

Scanning `<root>/<Class>/<image>` trees is slow at ImageNet scale (1.3M files: tens of seconds),
and holding the result as Python lists costs about a kilobyte per file in every process; worse,
DataLoader workers forked from the main process slowly copy those lists (reading a Python object
writes its reference count, so each page touched is copied). Here a scan is written once to an
index file in the cache (`$STYLEBENCH_DATA_DIR/index`, default `~/.cache/stylebench/index`) and
every process memory-maps it:

- `PathTable`: the paths as one contiguous uint8 buffer of UTF-8 bytes plus int64 offsets (row
  `i` is `prefix + buffer[offsets[i]:offsets[i + 1]]`, the prefix being the scanned folder,
  stored once), and the class of each row;
- `IndexedFiles`: a scanned domain's `files_by_class` as a read-only mapping of row ranges of a
  table (class folders are sorted and each one's files are consecutive rows);
- `SampleArray`: the samples of a split as integer arrays (table, row, label, domain index) over
  such tables; it behaves as a sequence of `Sample`s, built one at a time when indexed.

Nothing in these is a per-sample Python object, so forked workers share the pages (they are
never written) and the memory per sample is constant: about 15 bytes of arrays per sample plus
the shared path bytes.

The index file is one file per scanned folder, named by a hash of the folder's resolved path. It
records a fingerprint of the tree: the names and modification times (ns) of the folder and of
each class folder. Adding, removing or renaming a file changes its class folder's mtime, so a
stale index is detected with one `stat` per class folder and rebuilt (never used silently); a
class folder modified within `RACY_SECONDS` of the scan (where a later change could keep the same
timestamp) is listed again and compared file by file. Index files are written to a temporary
file and renamed into place, so a crash never leaves a corrupt index, and built under a file
lock, so the processes of a machine (DDP ranks started at once) scan once between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from filelock import FileLock

from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    DomainSource,
    Sample,
    class_folder_entries,
    class_folder_images,
)

log = logging.getLogger(__name__)

#: First bytes of an index file; the version is bumped whenever the layout changes.
MAGIC = b"STYLEBENCH-INDEX\x00v2\n"
#: A class folder modified this close to (or after) the scan is compared file by file.
RACY_SECONDS = 2.0
#: If set, every scan appends one line to this file: how tests and benchmarks count the scans
#: made on a machine across processes.
SCAN_LOG_ENV = "STYLEBENCH_SCAN_LOG"
#: If set, the folder that holds the index files (default: beside the demo sets' cache).
INDEX_DIR_ENV = "STYLEBENCH_INDEX_DIR"
_ALIGN = 64

#: Scans made by this process (all folders).
scan_count = 0


def default_index_dir() -> Path:
    """`$STYLEBENCH_INDEX_DIR`, else `$STYLEBENCH_DATA_DIR/index`, else
    `~/.cache/stylebench/index` (beside the demo sets)."""
    from datamodules.demo.cache import default_cache_dir

    if configured := os.environ.get(INDEX_DIR_ENV):
        return Path(configured).expanduser()

    return default_cache_dir() / "index"


# ----- path tables and the sequences over them --------------------------------------------------
class PathTable:
    """Paths as one uint8 buffer of UTF-8 bytes plus offsets, and each row's class index.

    A table read from an index file is memory-mapped; pickling it (spawned workers) sends the
    file name and reopens the mapping instead of copying the arrays.
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
            self.__dict__.update(read_index(Path(state["source_file"]))[1].__dict__)
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
    """A scanned domain's `files_by_class` (sorted class name -> its sorted files) over a table."""

    def __init__(self, table: PathTable, class_names: Sequence[str]) -> None:
        self.table = table
        self.class_names = list(class_names)
        counts = np.bincount(table.classes, minlength=len(self.class_names))
        self.starts = np.zeros(len(self.class_names) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.starts[1:])
        self._position = {name: i for i, name in enumerate(self.class_names)}

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


class LabelledRows:
    """Rows of a table with their labels: a split of one domain without per-file objects.

    Iterating gives `(path, label)` pairs, as the list form of `official_splits` does.
    """

    def __init__(self, table: PathTable, rows: np.ndarray, labels: np.ndarray) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for row, label in zip(self.rows.tolist(), self.labels.tolist(), strict=True):
            yield self.table.path(row), label


def labelled_rows(
    files_by_class: Mapping[str, Sequence[str]], class_names: Sequence[str]
) -> LabelledRows | list[tuple[str, int]]:
    """Every file of a domain with its label (index in `class_names`), in class order: rows of
    the table for an indexed domain, else the `(path, label)` list."""
    if isinstance(files_by_class, IndexedFiles):
        rows = [files_by_class.rows_of(name) for name in class_names]
        labels = [np.full(len(r), label, np.int32) for label, r in enumerate(rows)]
        return LabelledRows(
            files_by_class.table, _concat(rows, np.int64), _concat(labels, np.int32)
        )
    return [(p, label) for label, name in enumerate(class_names) for p in files_by_class[name]]


def relabelled(
    files: LabelledRows | Sequence[tuple[str, int]], label: int
) -> LabelledRows | list[tuple[str, int]]:
    """The same files, all with `label` (e.g. unlabelled adaptation targets)."""
    if isinstance(files, LabelledRows):
        return LabelledRows(files.table, files.rows, np.full(len(files), label, np.int32))
    return [(path, label) for path, _ in files]


def stratified_split_rows(
    files: IndexedFiles,
    class_names: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[LabelledRows, LabelledRows, LabelledRows]:
    """`splitting.stratified_split` on row arrays: the same random draws, the same samples in
    the same order, without building a tuple per file."""
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
            files.table, _concat([r for r, _ in p], np.int64), _concat([x for _, x in p], np.int32)
        )
        for p in parts
    )


def _concat(arrays: Sequence[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


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
    def build(cls, parts: Sequence[tuple[LabelledRows | Sequence[tuple[str, int]], int]]):
        """Concatenate `(labelled files, domain index)` parts, row arrays or pair lists."""
        tables: list[PathTable] = []
        table_ids: dict[int, int] = {}
        table_of, rows, labels, domains = [], [], [], []
        for part, domain_index in parts:
            if not isinstance(part, LabelledRows):
                pairs = list(part)
                table = PathTable.from_paths([p for p, _ in pairs])
                part = LabelledRows(table, np.arange(len(pairs)), [label for _, label in pairs])
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
            _concat(table_of, np.uint8),
            _concat(rows, np.int64),
            _concat(labels, np.int32),
            _concat(domains, np.int16),
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


# ----- the index file -------------------------------------------------------------------------
def index_file(root: Path, index_dir: Path | None = None) -> Path:
    """The index file of a folder: named by a hash of its absolute path."""
    absolute = os.path.abspath(Path(root).expanduser())
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:20]
    return (index_dir or default_index_dir()) / f"{Path(absolute).name[:40]}-{digest}.index"


def fingerprint(root: Path) -> dict:
    """The folder's and each class folder's mtime (ns): what adding, removing or renaming a
    file or a class folder changes."""
    return {
        "root_mtime_ns": os.stat(root).st_mtime_ns,
        "classes": [[e.name, e.stat().st_mtime_ns] for e in class_folder_entries(root)],
    }


def scan_folder(root: Path) -> tuple[PathTable, list[str], dict, int]:
    """Scan `<root>/<Class>/<image>`: (table, class names, fingerprint, scan start in ns)."""
    global scan_count
    started_ns, began = time.time_ns(), time.perf_counter()
    # The fingerprint is taken before listing, so a change during the scan makes it stale.
    taken = fingerprint(root)
    class_names = [name for name, _ in taken["classes"]]
    paths: list[str] = []
    classes: list[np.ndarray] = []
    for label, name in enumerate(class_names):
        files = class_folder_images(os.path.join(root, name))
        paths += files
        classes.append(np.full(len(files), label, np.int32))
    table = PathTable.from_paths(paths, prefix=os.path.join(root, ""))
    table.classes = _concat(classes, np.int32)
    scan_count += 1
    seconds = time.perf_counter() - began
    log.info(
        "scanned %s: %d files in %d class folders (%.1f s)",
        root,
        len(paths),
        len(class_names),
        seconds,
    )
    scan_log = os.environ.get(SCAN_LOG_ENV)
    if scan_log:
        with open(scan_log, "a") as handle:
            handle.write(f"{os.getpid()}\t{root}\t{len(paths)}\t{seconds:.3f}\n")
    return table, class_names, taken, started_ns


def write_index(
    path: Path, root: Path, table: PathTable, class_names: list[str], taken: dict, started_ns: int
) -> None:
    """Write the index atomically: a temporary file in the same folder, renamed into place."""
    arrays = {"buffer": table.buffer, "offsets": table.offsets, "classes": table.classes}
    header = {
        "root": str(root),
        "prefix": table.prefix,
        "class_names": class_names,
        "fingerprint": taken,
        "scan_started_ns": started_ns,
        "arrays": {},
    }
    offset = 0
    for name, array in arrays.items():
        header["arrays"][name] = [array.dtype.str, len(array), offset]
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    encoded = json.dumps(header).encode()
    start = -(-(len(MAGIC) + 8 + len(encoded)) // _ALIGN) * _ALIGN
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


def prune_index_dir(folder: Path) -> int:
    """Remove the index files (and their locks) of folders that no longer exist, e.g. test and
    benchmark trees, so the index folder does not grow without bound; returns how many."""
    removed = 0
    for path in folder.glob("*.index"):
        try:
            with open(path, "rb") as handle:
                if handle.read(len(MAGIC)) != MAGIC:
                    continue
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
            if os.path.isdir(header["root"]):
                continue
            path.unlink()
            Path(str(path) + ".lock").unlink(missing_ok=True)
            removed += 1
        except (OSError, ValueError, KeyError):
            continue  # being replaced by another process, or not ours: leave it
    return removed


def read_index(path: Path) -> tuple[dict, PathTable]:
    """(header, memory-mapped table) of an index file; `ValueError` if it is not one."""
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a stylebench index file (or an older version)")
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    start = -(-(len(MAGIC) + 8 + length) // _ALIGN) * _ALIGN
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


def stale_reason(root: Path, header: dict, table: PathTable) -> str | None:
    """Why the index no longer describes the folder, or None if it does."""
    if header["root"] != str(root):
        return f"it indexes {header['root']}"
    current = fingerprint(root)
    recorded = header["fingerprint"]
    if [n for n, _ in current["classes"]] != [n for n, _ in recorded["classes"]]:
        return "the class folders changed"
    racy_ns = header["scan_started_ns"] - int(RACY_SECONDS * 1e9)
    files = IndexedFiles(table, header["class_names"])
    for (name, mtime), (_, old_mtime) in zip(current["classes"], recorded["classes"], strict=True):
        if mtime != old_mtime:
            return f"class folder {name!r} changed"
        if mtime >= racy_ns and class_folder_images(os.path.join(root, name)) != files[name]:
            # Changed within the timestamps' resolution of the scan: compare the files.
            return f"class folder {name!r} changed"
    return None


def indexed_domain(
    source: DomainSource, index_dir: Path | None = None, rescan: bool = False
) -> DomainData:
    """A domain's class folders and files from its index, scanning (once per machine) when
    the index is missing, stale or `rescan` is set.

    The result's `files_by_class` is an `IndexedFiles` over the memory-mapped table. If the
    index folder cannot be written, the domain is scanned into memory and a warning says why.
    """
    # Absolute but not resolved: the paths keep the folder's spelling, as a plain scan's do.
    root = Path(os.path.abspath(Path(source.root).expanduser()))
    if not root.is_dir():
        raise DatasetLayoutError(f"domain {source.name!r}: folder {source.root} does not exist")
    path = index_file(root, index_dir)
    if not rescan and (loaded := _fresh(path, root)) is not None:
        return _domain(source, root, *loaded)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as error:
        log.warning("cannot write the file index %s (%s); scanning into memory", path, error)
        table, class_names, _, _ = scan_folder(root)
        return _domain(source, root, {"class_names": class_names}, table)
    try:
        # Another process may have built it while this one waited for the lock.
        if not rescan and (loaded := _fresh(path, root, quiet=True)) is not None:
            return _domain(source, root, *loaded)
        write_index(path, root, *scan_folder(root))
        prune_index_dir(path.parent)
        return _domain(source, root, *read_index(path))
    finally:
        lock.release()


def _fresh(path: Path, root: Path, quiet: bool = False) -> tuple[dict, PathTable] | None:
    if not path.is_file():
        return None
    try:
        header, table = read_index(path)
    except (OSError, ValueError, KeyError) as error:
        if not quiet:
            log.warning("unreadable file index %s (%s): rescanning %s", path, error, root)
        return None
    reason = stale_reason(root, header, table)
    if reason is not None:
        if not quiet:
            log.warning("file index of %s is stale (%s): rescanning", root, reason)
        return None
    return header, table


def _domain(source: DomainSource, root: Path, header: dict, table: PathTable) -> DomainData:
    return DomainData(
        name=source.name,
        root=Path(source.root),
        files_by_class=IndexedFiles(table, header["class_names"]),
    )
