"""The data check: every domain and split scanned for files that would break or bias a run.

A library: `python -m experiments.check_data --config <file>` prints its report, and with
`data.check_data: true` the DataModule runs it before training starts. It reports, one finding
each: unreadable, truncated, zero-byte and non-image files, decompression bombs, file names that
are not UTF-8, symlink loops, class folder mismatches, empty classes and domains, list-file
entries that are malformed, absolute, leave their root, repeat a path or name no class (read by
the same parser training uses, extra domains' lists included), files in a training split and an
evaluation split (overlap) and identical files across splits (leakage, by content hash).

It never stops at the first problem: what the DataModule's scan raises (`DataProblemsError`) is
reported with everything the check can still read. Images in grayscale, CMYK, RGBA, 16-bit or
with an EXIF orientation are decoded (and converted) by `load_rgb`, so they pass.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.data.findings import ERROR, WARNING, Finding
from datamodules.data.image_io import IMAGE_EXTENSIONS, BadImageError, load_rgb
from datamodules.data.image_lists import (
    ImageListFile,
    LabelMode,
    entry_problem,
    identity,
    read_image_list,
    resolve_entry,
)
from datamodules.data.layout import DatasetLayoutError, DomainData
from datamodules.data.problems import DataProblemsError
from datamodules.data.splitting import TRAINING_SPLITS

# Kinds of problems with one image file: the ones `on_bad_image: skip` tolerates in training,
# as each of them fails to load there with a `BadImageError` of that kind.
IMAGE_PROBLEMS = frozenset(
    {
        "zero-byte",
        "truncated",
        "unreadable",
        "decompression-bomb",
        "undecodable-name",
        "symlink-loop",
    }
)


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

    def add(self, findings: Iterable[Finding]) -> None:
        """Append findings, once each: the scan and the list check may both see a list line."""
        seen = {(f.severity, f.kind, f.path, f.line) for f in self.findings}
        for finding in findings:
            key = (finding.severity, finding.kind, finding.path, finding.line)
            if key not in seen:
                seen.add(key)
                self.findings.append(finding)

    def bad_image_paths(self) -> list[str]:
        return sorted({f.path for f in self.errors if f.kind in IMAGE_PROBLEMS and f.path})

    def counts_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    def summary(self) -> str:
        splits = ", ".join(f"{name} {count}" for name, count in self.split_counts.items())
        splits = splits or "no splits: the domains could not be scanned"
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.counts_by_kind().items())
        return (
            f"checked {self.images_checked} images ({splits}): "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
            + (f" ({kinds})" if kinds else "")
        )

    def format(self) -> str:
        """A human-readable report: one line per finding, then a summary line."""
        return "\n".join([f.format() for f in self.findings] + [self.summary()])

    def to_dict(self) -> dict:
        """The JSON form (`check_data --json`)."""
        return {
            "ok": self.ok,
            "images_checked": self.images_checked,
            "split_counts": self.split_counts,
            "summary": {
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "by_kind": self.counts_by_kind(),
            },
            "findings": [f.to_dict() for f in self.findings],
        }


def check_image_file(path: str | Path, min_side: int | None = 32) -> Finding | None:
    """Decode one image the way training does; None if it loads, else what is wrong with it.

    `min_side` lets JPEGs decode at a reduced scale (much faster); a truncated stream still fails.
    """
    try:
        load_rgb(path, min_side=min_side)
    except BadImageError as error:
        return Finding(ERROR, error.kind, error.detail, str(path))
    return None


def check_file_exists(path: str) -> Finding | None:
    """Without decoding: the problems a `stat` shows (empty file, symlink loop, missing)."""
    try:
        if os.path.getsize(path) == 0:
            return Finding(ERROR, "zero-byte", "file is empty (0 bytes)", path)
    except OSError as error:
        kind = "symlink-loop" if error.errno == errno.ELOOP else "unreadable"
        return Finding(ERROR, kind, f"cannot be read: {error.strerror}", path)
    return None


def find_non_image_files(domains: Sequence[DomainData]) -> list[Finding]:
    """Files in class folders that training ignores (wrong extension): warnings, not errors;
    and class folders that are symlink loops (training cannot see their images): errors."""
    findings = []
    for domain in domains:
        findings += _class_folder_loops(Path(domain.root))
        for name in domain.files_by_class:
            class_dir = Path(domain.root) / name
            if not class_dir.is_dir():
                continue  # a domain read from an image list has no class folders to look in
            with os.scandir(class_dir) as entries:
                for entry in entries:
                    # Hidden files (.DS_Store) and known OS debris are never data; say nothing.
                    if entry.name.startswith(".") or entry.name == "Thumbs.db":
                        continue
                    if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                        continue
                    try:
                        is_file = entry.is_file()
                    except OSError:
                        is_file = False  # a symlink loop: `symlink_loop_findings` reports it
                    if is_file:
                        message = "not an image extension; ignored by training"
                        findings.append(Finding(WARNING, "non-image", message, entry.path))
    return findings


def symlink_loop_findings(domains: Sequence[DomainData]) -> list[Finding]:
    """Symlink loops among a domain's class folders and inside them, as errors: a loop with an
    image name fails when its batch loads (the same message, found before training), and any
    other loop (a folder linking to itself) would be passed over without a word. Only
    symlinks are looked at (a `stat` each); a domain read from an image list has no folders."""
    findings = []
    for domain in domains:
        root = Path(domain.root)
        findings += _class_folder_loops(root)
        for name in domain.files_by_class:
            class_dir = root / name
            if not class_dir.is_dir():
                continue
            with os.scandir(class_dir) as entries:
                links = [entry for entry in entries if entry.is_symlink()]
            for entry in links:
                try:
                    os.stat(entry.path)
                except OSError as error:
                    if error.errno != errno.ELOOP:
                        continue
                    if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                        message = "is a symlink loop (ELOOP); fix or remove the link"
                    else:
                        message = "is a symlink loop; training ignores it (and any images in it)"
                    findings.append(Finding(ERROR, "symlink-loop", message, entry.path))
    return findings


def _class_folder_loops(root: Path) -> list[Finding]:
    if not root.is_dir():
        return []
    findings = []
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.is_symlink() or entry.name.startswith("."):
                continue
            try:
                entry.stat()
            except OSError as error:
                if error.errno == errno.ELOOP:
                    message = "is a symlink loop; training ignores it (and any images in it)"
                    findings.append(Finding(ERROR, "symlink-loop", message, entry.path))
    return findings


def check_list_file(
    list_file: str | Path,
    root: str | Path,
    labels: LabelMode = "optional",
    allow_outside_root: bool = False,
    allow_option: str | None = None,
) -> list[Finding]:
    """Entries of an image-list file, read as training reads them: malformed lines, absolute
    paths, paths leaving `root` (unless allowed), repeated paths and missing files are errors
    at `list_file`, line N."""
    list_file = str(list_file)
    if not Path(list_file).is_file():
        return [Finding(ERROR, "missing-list-file", "list file does not exist", list_file)]
    try:
        entries = read_image_list(list_file, labels)
    except DatasetLayoutError as error:
        return [Finding(ERROR, "malformed-list", str(error), list_file)]
    listed = ImageListFile(list_file, str(root), labels, allow_outside_root, allow_option)
    findings = []
    first_line: dict[str, int] = {}
    for entry in entries:
        problem = entry_problem(entry.path, root, allow_outside_root, allow_option)
        if problem is not None:
            findings.append(Finding(ERROR, *problem, list_file, entry.line_number))
            continue
        path = resolve_entry(entry, listed)
        resolved = identity(path)
        if resolved in first_line:
            message = f"{entry.path!r} is listed again (first at line {first_line[resolved]})"
            findings.append(Finding(ERROR, "duplicate", message, list_file, entry.line_number))
            continue
        first_line[resolved] = entry.line_number
        if not Path(resolved).is_file() and not Path(path).is_symlink():
            message = f"{entry.path!r} does not exist"
            findings.append(Finding(ERROR, "missing-file", message, list_file, entry.line_number))
    return findings


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_overlap(split_paths: dict[str, Iterable[str]]) -> list[Finding]:
    """Files both in a training split and in the test split: tested on what was trained on.

    Only `test` counts: val and test sharing files is by design (`test_fraction: 0`, held-out
    domains), and so is training on val (DTD's `train_on: train+val`); the test split is
    always populated (it is val when there is no test split).
    """
    trained: dict[str, list[str]] = defaultdict(list)
    for split in TRAINING_SPLITS:
        for path in split_paths.get(split, ()):
            trained[path].append(split)
    findings = []
    for split in ("test",):
        for path in sorted(set(split_paths.get(split, ())) & set(trained)):
            message = f"in training split {trained[path][0]!r} and in {split!r}"
            findings.append(Finding(ERROR, "split-overlap", message, path))
    return findings


def find_leakage(split_paths: dict[str, Iterable[str]]) -> list[Finding]:
    """Identical file contents in different splits (leakage, an error) and under different
    paths in one split (duplicate content, a warning). The same path in several splits is
    `find_overlap`'s; pass only files that load, so that empty or broken junk files (which are
    bad images, all alike) are not mistaken for copies."""
    paths_by_digest: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    unique_paths = sorted({path for paths in split_paths.values() for path in paths})
    digests = dict(zip(unique_paths, _map(file_digest, unique_paths), strict=True))
    for split, paths in split_paths.items():
        for path in paths:
            if digests[path] is not None:
                paths_by_digest[digests[path]][split].add(path)
    findings = []
    for by_split in paths_by_digest.values():
        all_paths = set().union(*by_split.values())
        if len(all_paths) < 2:
            continue
        splits = sorted(by_split)
        described = "; ".join(f"{s}: {', '.join(sorted(by_split[s]))}" for s in splits)
        if len(by_split) >= 2:
            message = f"identical content in splits {splits}: {described}"
            findings.append(Finding(ERROR, "leakage", message))
        else:
            message = f"identical content under {len(all_paths)} paths in {described}"
            findings.append(Finding(WARNING, "duplicate-content", message))
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

    Reads the DataModule's public `domains`, `split_samples` and `list_files()`. Problems of
    the scan itself (class mismatch, empty domain, bad list lines) are findings too; the files
    of the domains that could be scanned are still decoded.
    """
    report = DataReport()
    scanned = True
    try:
        domains = datamodule.domains
    except DataProblemsError as error:
        report.add(error.findings)
        domains, scanned = error.domains, False
    except (DatasetLayoutError, ValueError, OSError) as error:
        report.add([Finding(ERROR, "layout", str(error))])
        domains, scanned = [], False
    report.add(find_non_image_files(domains))
    report.add(symlink_loop_findings(domains))
    report.add(list_file_findings(datamodule))
    split_paths: dict[str, list[str]] = {}
    if scanned:
        try:
            split_paths = {
                split: [sample.path for sample in samples]
                for split, samples in datamodule.split_samples.items()
            }
        except (DatasetLayoutError, ValueError, OSError) as error:  # e.g. official split lists
            report.add([Finding(ERROR, "splits", str(error))])
    report.split_counts = {split: len(paths) for split, paths in split_paths.items()}
    if datamodule.images_in_memory:
        # Arrays read (and checked) when the archive loads: there are no image files.
        message = "images are in-memory arrays, checked when read; no files to decode or hash"
        report.add([Finding(WARNING, "in-memory", message)])
        return report
    if split_paths:
        paths = sorted({p for paths in split_paths.values() for p in paths})
    else:  # no splits (the scan failed): every file of the domains that could be read
        paths = sorted({p for d in domains for files in d.files_by_class.values() for p in files})
    if decode:
        report.images_checked = len(paths)
        # A small decode size is enough to prove a file is complete and fast on large photos.
        results = _map(lambda p: check_image_file(p, min_side=32), paths, workers)
    else:
        results = _map(check_file_exists, paths, workers)
    bad = {finding.path for finding in results if finding is not None}
    report.add(finding for finding in results if finding is not None)
    report.add(find_overlap(split_paths))
    good = {split: [p for p in split_paths[split] if p not in bad] for split in split_paths}
    report.add(find_leakage(good))
    return report


def list_file_findings(datamodule) -> list[Finding]:
    """Every problem of every list and label file the DataModule reads (`list_files()`), read
    whole: the rows `check_data` prints for them (malformed lines, absolute or escaping paths,
    repeats, missing files), each at `file:line`."""
    findings: list[Finding] = []
    for listed in datamodule.list_files():
        options = (listed.labels, listed.allow_outside_root, listed.allow_option)
        findings += check_list_file(listed.path, listed.root, *options)
    return findings


def require_clean_data(datamodule) -> None:
    """The check before training (`data.check_data: true`): `DatasetLayoutError` listing the
    report if it found errors; under `on_bad_image: skip` unreadable images are not errors (the
    run skips them), while layout and leakage errors still are."""
    report = check_datamodule(datamodule)
    errors = report.errors
    if datamodule.on_bad_image == "skip":
        errors = [f for f in errors if f.kind not in IMAGE_PROBLEMS]
    if errors:
        raise DatasetLayoutError(
            "the data check found errors (data.check_data: true):\n" + report.format()
        )
