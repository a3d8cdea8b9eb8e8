"""The file index of a dataset folder, scanned once per machine and shared by every process.

Scanning `<root>/<Class>/<image>` trees is slow at ImageNet scale (1.3M files: tens of seconds),
and holding the result as Python lists costs memory in every process (see
`datamodules/data/tables.py`). Here a scan is written once to an index file in the cache
(`$STYLEBENCH_DATA_DIR/index`, default `~/.cache/stylebench/index`) as a path table, and every
process memory-maps it; a scanned domain's `files_by_class` is an `IndexedFiles` over it.

The index file is one file per scanned folder, named by a hash of the folder's resolved path. It
records a fingerprint of the tree: the names and modification times (ns) of the folder and of
each class folder. Adding, removing or renaming a file changes its class folder's mtime, so a
stale index is detected with one `stat` per class folder and rebuilt (never used silently); a
class folder modified within `RACY_SECONDS` of the scan (where a later change could keep the same
timestamp) is listed again and compared file by file. Index files are written to a temporary
file and renamed into place, so a crash never leaves a corrupt index, and built under a file
lock, so the processes of a machine (DDP ranks started at once) scan once between them. Each
file also records `scans`, how many scans of its folder it has been written from (a rebuild
adds one), and each scan is logged (INFO) by this module's logger.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from datamodules.data.cache import default_cache_dir
from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    DomainSource,
    class_folder_entries,
    class_folder_images,
)
from datamodules.data.tables import (
    IndexedFiles,
    PathTable,
    concat,
    read_header,
    read_table,
    write_table,
)

log = logging.getLogger(__name__)

#: A class folder modified this close to (or after) the scan is compared file by file.
RACY_SECONDS = 2.0
#: If set, the folder that holds the index files (default: beside the demo sets' cache).
INDEX_DIR_ENV = "STYLEBENCH_INDEX_DIR"


def default_index_dir() -> Path:
    """`$STYLEBENCH_INDEX_DIR`, else `$STYLEBENCH_DATA_DIR/index`, else
    `~/.cache/stylebench/index` (beside the demo sets)."""
    if configured := os.environ.get(INDEX_DIR_ENV):
        return Path(configured).expanduser()
    return default_cache_dir() / "index"


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
    table.classes = concat(classes, np.int32)
    seconds = time.perf_counter() - began
    log.info(
        "scanned %s: %d files in %d class folders (%.1f s)",
        root,
        len(paths),
        len(class_names),
        seconds,
    )
    return table, class_names, taken, started_ns


def write_index(
    path: Path,
    root: Path,
    table: PathTable,
    class_names: list[str],
    taken: dict,
    started_ns: int,
    scans: int = 1,
) -> None:
    """Write the index atomically (`write_table`); `scans` counts the scans it was written from."""
    header = {
        "root": str(root),
        "class_names": class_names,
        "fingerprint": taken,
        "scan_started_ns": started_ns,
        "scans": scans,
    }
    write_table(path, table, header)


def recorded_scans(path: Path) -> int:
    """How many scans the index file at `path` was written from (0: none, or unreadable)."""
    try:
        return int(read_header(path).get("scans", 1))
    except (OSError, ValueError):
        return 0


def prune_index_dir(folder: Path) -> int:
    """Remove the index files (and their locks) of folders that no longer exist, e.g. test and
    benchmark trees, so the index folder does not grow without bound; returns how many."""
    removed = 0
    for path in folder.glob("*.index"):
        try:
            header = read_header(path)
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
    return read_table(path)


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
        write_index(path, root, *scan_folder(root), scans=recorded_scans(path) + 1)
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
