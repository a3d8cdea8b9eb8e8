"""The data check: every domain and split scanned for files that would break or bias a run.

Used by `python -m experiments.check_data --config <file>` and, with `data.check_data: true`,
before training starts. It reports unreadable, truncated, zero-byte and non-image files, class
folder mismatches, empty classes and domains, identical files across train/val/test (leakage, by
content hash) and list-file entries that are absolute or leave the dataset root. Images in
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

from datamodules.image_io import IMAGE_EXTENSIONS, load_rgb

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: how bad (`error` stops training, `warning` does not), what kind, where."""

    severity: str
    kind: str
    message: str
    path: str | None = None

    def format(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.severity.upper()} [{self.kind}]{where} {self.message}"


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


def check_domains(domains: Sequence) -> list[Finding]:
    """Class-folder mismatches, empty classes and empty domains (`DomainData` list), no raising."""
    findings: list[Finding] = []
    if not domains:
        return [Finding(ERROR, "no-domains", "no domains were given")]
    reference = domains[0]
    reference_classes = set(reference.files_by_class)
    for domain in domains:
        if not domain.files_by_class or domain.num_images == 0:
            findings.append(
                Finding(
                    ERROR, "empty-domain", f"domain {domain.name!r} has no images", str(domain.root)
                )
            )
            continue
        classes = set(domain.files_by_class)
        missing, extra = sorted(reference_classes - classes), sorted(classes - reference_classes)
        if missing or extra:
            findings.append(
                Finding(
                    ERROR,
                    "class-mismatch",
                    f"domain {domain.name!r} differs from {reference.name!r}: "
                    f"missing {missing}, extra {extra}",
                    str(domain.root),
                )
            )
        for name, files in sorted(domain.files_by_class.items()):
            if not files:
                findings.append(
                    Finding(
                        ERROR,
                        "empty-class",
                        f"class {name!r} of domain {domain.name!r} has no images",
                        str(Path(domain.root) / name),
                    )
                )
    return findings


def find_non_image_files(domains: Sequence) -> list[Finding]:
    """Files in class folders that training ignores (wrong extension): warnings, not errors."""
    findings = []
    for domain in domains:
        for name in domain.files_by_class:
            class_dir = Path(domain.root) / name
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


def parse_list_line(line: str) -> str | None:
    """The path of one list-file line (`path` or `path label`); None for blanks and comments."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.rsplit(maxsplit=1)
    # A trailing integer is a label; paths may hold spaces ("Real World/...").
    if len(parts) == 2 and parts[1].lstrip("-").isdigit():
        return parts[0]
    return line


def check_list_file(list_file: str | Path, root: str | Path) -> list[Finding]:
    """Entries of an image-list file: absolute paths and paths leaving `root` are rejected.

    Missing files are errors too. Works for any list whose lines are `relative/path [label]`.
    """
    list_file, root = Path(list_file), Path(root).resolve()
    if not list_file.is_file():
        return [Finding(ERROR, "missing-list-file", "list file does not exist", str(list_file))]
    findings = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = parse_list_line(line)
        if entry is None:
            continue
        where = f"{list_file}:{number}"
        if os.path.isabs(entry) or entry.startswith("~"):
            findings.append(
                Finding(
                    ERROR,
                    "absolute-path",
                    f"{entry!r} is absolute; list paths must be relative to {root}",
                    where,
                )
            )
            continue
        resolved = (root / entry).resolve()
        if not resolved.is_relative_to(root):
            findings.append(
                Finding(ERROR, "escaping-path", f"{entry!r} leaves the dataset root {root}", where)
            )
        elif not resolved.is_file():
            findings.append(Finding(ERROR, "missing-file", f"{entry!r} does not exist", where))
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
    """Check a built `MultiDomainDataModule`: its domains, every split's files, its list files."""
    report = DataReport()
    report.findings += check_domains(datamodule.domains)
    report.findings += find_non_image_files(datamodule.domains)
    for list_file, root in datamodule.list_files():
        report.findings += check_list_file(list_file, root)
    split_paths = {
        split: [sample.path for sample in samples]
        for split, samples in datamodule.split_samples.items()
    }
    report.split_counts = {split: len(paths) for split, paths in split_paths.items()}
    if decode:
        paths = sorted({p for paths in split_paths.values() for p in paths})
        report.images_checked = len(paths)
        # A small decode size is enough to prove a file is complete and fast on large photos.
        results = _map(lambda p: check_image_file(p, min_side=32), paths, workers)
        report.findings += [finding for finding in results if finding is not None]
    report.findings += find_leakage(split_paths)
    return report


def build_datamodule(config_path: str, overrides: Sequence[str] = ()):
    """The DataModule of a training config's `data` section, parsed as the training CLI parses
    it (class_path/init_args, `--data.*` overrides), without building the model or trainer."""
    import yaml
    from jsonargparse import ArgumentParser

    from datamodules.base import MultiDomainDataModule

    with open(config_path) as handle:
        config = yaml.safe_load(handle) or {}
    if "data" not in config:
        raise ValueError(f"{config_path} has no `data` section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MultiDomainDataModule, "data")
    parser.set_defaults(data=config["data"])
    namespace = parser.parse_args(list(overrides))
    # `instantiate` replaced `instantiate_classes` in jsonargparse 4.49.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(namespace).data


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m experiments.check_data --config <file> [--data.init_args.<key> <value> ...]`.

    Prints one line per problem and a summary; the exit status is 1 when errors were found,
    2 when the DataModule cannot even be built (wrong root, mismatched class folders, ...).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m experiments.check_data", description=main.__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="a training config (its data section)")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument(
        "--no-decode", action="store_true", help="skip decoding images (layout and hashes only)"
    )
    args, overrides = parser.parse_known_args(argv)
    try:
        datamodule = build_datamodule(args.config, overrides)
    # Any failure to build (layout, unknown domain, bad value) is the one line to show.
    except Exception as error:
        print(f"ERROR: cannot build the DataModule from {args.config}: {error}", file=sys.stderr)
        return 2
    report = check_datamodule(datamodule, decode=not args.no_decode, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1
