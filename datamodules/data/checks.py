"""The data check: every domain and split scanned for files that would break or bias a run.

A library: `python -m experiments.check_data --config <file>` prints its report, and with
`data.check_data: true` the DataModule runs it before training starts. It reports unreadable,
truncated, zero-byte and non-image files, class folder mismatches, empty classes and domains,
identical files across train/val/test (leakage, by content hash) and list-file entries that are
malformed, absolute or leave the dataset root (read by the same parser training uses). Images in
grayscale, CMYK, RGBA, 16-bit or with an EXIF orientation are decoded (and converted) by
`load_rgb`, so they pass.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.data.findings import ERROR, WARNING, Finding
from datamodules.data.image_io import IMAGE_EXTENSIONS, load_rgb
from datamodules.data.image_lists import ImageListFile, LabelMode, entry_problem, read_image_list
from datamodules.data.layout import DatasetLayoutError, DomainData, class_folder_findings


@dataclass
class DataReport:
    """Everything one check found, plus what it looked at."""

    findings: list[Finding] = field(default_factory=list)
    images_checked: int = 0
    split_counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def bad_image_paths(self) -> list[str]:
        return sorted({f.path for f in self.errors if f.kind in IMAGE_PROBLEMS and f.path})

    def format(self) -> str:
        """A human-readable report: one line per finding, then a summary line."""
        lines = [f.format() for f in self.findings]
        splits = ", ".join(f"{name} {count}" for name, count in self.split_counts.items())
        lines.append(
            f"checked {self.images_checked} images ({splits}): "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )
        return "\n".join(lines)


# Kinds of problems with one image file (the ones `on_bad_image: skip` tolerates in training).
IMAGE_PROBLEMS = frozenset({"zero-byte", "truncated", "unreadable"})


def check_image_file(path: str | Path, min_side: int | None = 32) -> Finding | None:
    """Decode one image the way training does; None if it loads, else what is wrong with it.

    `min_side` lets JPEGs decode at a reduced scale (much faster); a truncated stream still fails.
    """
    path = str(path)
    try:
        if os.path.getsize(path) == 0:
            return Finding(ERROR, "zero-byte", "file is empty (0 bytes)", path)
        load_rgb(path, min_side=min_side)
    except OSError as error:
        message = str(error)
        # PIL's words for a stream that ends early: "truncated", "broken data stream".
        truncated = "truncated" in message or "broken data stream" in message
        kind = "truncated" if truncated else "unreadable"
        return Finding(ERROR, kind, f"cannot be decoded: {error.__cause__ or error}", path)
    return None


def find_non_image_files(domains: Sequence[DomainData]) -> list[Finding]:
    """Files in class folders that training ignores (wrong extension): warnings, not errors."""
    findings = []
    for domain in domains:
        for name in domain.files_by_class:
            class_dir = Path(domain.root) / name
            if not class_dir.is_dir():
                continue  # a domain read from an image list has no class folders to look in
            with os.scandir(class_dir) as entries:
                for entry in entries:
                    # Hidden files (.DS_Store) and known OS debris are never data; say nothing.
                    if entry.name.startswith(".") or entry.name == "Thumbs.db":
                        continue
                    if entry.is_file() and Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
                        findings.append(
                            Finding(
                                WARNING,
                                "non-image",
                                "not an image extension; ignored by training",
                                entry.path,
                            )
                        )
    return findings


def check_list_file(
    list_file: str | Path, root: str | Path, labels: LabelMode = "optional"
) -> list[Finding]:
    """Entries of an image-list file, read as training reads them: malformed lines, absolute
    paths, paths leaving `root` and missing files are errors (`path` is `list_file:line`)."""
    if not Path(list_file).is_file():
        return [Finding(ERROR, "missing-list-file", "list file does not exist", str(list_file))]
    try:
        entries = read_image_list(list_file, labels)
    except DatasetLayoutError as error:
        return [Finding(ERROR, "malformed-list", str(error), str(list_file))]
    findings = []
    for entry in entries:
        where = entry.where(list_file)
        problem = entry_problem(entry.path, root)
        if problem is not None:
            findings.append(Finding(ERROR, *problem, where))
        elif not (Path(root) / entry.path).resolve().is_file():
            findings.append(Finding(ERROR, "missing-file", f"{entry.path!r} does not exist", where))
    return findings


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_leakage(split_paths: dict[str, Iterable[str]]) -> list[Finding]:
    """Identical file contents in different splits (the same path in two splits is by design
    for held-out domains, whose data is both val and test, so only distinct paths count)."""
    paths_by_digest: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    unique_paths = {path for paths in split_paths.values() for path in paths}
    digests = dict(zip(sorted(unique_paths), _map(file_digest, sorted(unique_paths)), strict=True))
    for split, paths in split_paths.items():
        for path in paths:
            if digests[path] is not None:
                paths_by_digest[digests[path]][split].add(path)
    findings = []
    for by_split in paths_by_digest.values():
        all_paths = set().union(*by_split.values())
        if len(by_split) < 2 or len(all_paths) < 2:
            continue
        splits = sorted(by_split)
        described = "; ".join(f"{s}: {', '.join(sorted(by_split[s]))}" for s in splits)
        findings.append(
            Finding(ERROR, "leakage", f"identical content in splits {splits}: {described}")
        )
    return findings


def _map(function, items: list, workers: int = 4) -> list:
    """`function` over `items` in threads (PIL and hashlib release the GIL); None on OSError."""

    def safe(item):
        try:
            return function(item)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(safe, items))


def check_datamodule(datamodule, decode: bool = True, workers: int = 4) -> DataReport:
    """Check a `MultiDomainDataModule`: its domains, every split's files, its list files.

    Reads the DataModule's public `domains`, `split_samples` and `list_files()`.
    """
    report = DataReport()
    report.findings += class_folder_findings(datamodule.domains)
    report.findings += find_non_image_files(datamodule.domains)
    listed: list[ImageListFile] = datamodule.list_files()
    for list_file in listed:
        report.findings += check_list_file(list_file.path, list_file.root, list_file.labels)
    split_paths = {
        split: [sample.path for sample in samples]
        for split, samples in datamodule.split_samples.items()
    }
    report.split_counts = {split: len(paths) for split, paths in split_paths.items()}
    if datamodule.images_in_memory:
        # Arrays read (and checked) when the archive loads: there are no image files.
        message = "images are in-memory arrays, checked when read; no files to decode or hash"
        report.findings.append(Finding(WARNING, "in-memory", message))
        return report
    if decode:
        paths = sorted({p for paths in split_paths.values() for p in paths})
        report.images_checked = len(paths)
        # A small decode size is enough to prove a file is complete and fast on large photos.
        results = _map(lambda p: check_image_file(p, min_side=32), paths, workers)
        report.findings += [finding for finding in results if finding is not None]
    report.findings += find_leakage(split_paths)
    return report
