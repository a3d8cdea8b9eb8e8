"""Domains on disk: where a domain is, what scanning it finds, and whether domains agree.

A domain is a folder in `<root>/<Class>/<image>` layout (ImageFolder) or an image list; all
domains of a dataset share one class list. `class_folder_findings` is the one check of that
rule: the DataModule raises on its errors, the data check reports them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datamodules.data.findings import ERROR, Finding
from datamodules.data.image_io import is_class_folder_entry, is_image_entry


class DatasetLayoutError(ValueError):
    """The files on disk do not have the layout the DataModule expects."""


@dataclass(frozen=True)
class Sample:
    """One image of a split: its file, its class index and the index of its domain."""

    path: str
    label: int
    domain_index: int


@dataclass
class DomainSource:
    """Where one domain's images are.

    Args:
        name: the domain's name (used for heads and metric names).
        root: a folder in `<root>/<Class>/<image>` layout.
    """

    name: str
    root: str


@dataclass
class DomainData:
    """One scanned domain: its class folders and image files (label = index in the class list).

    `files_by_class` maps each class to its sorted files: a dict of lists as a scan or reader
    gives them, or an `IndexedFiles` (`datamodules/data/tables.py`), a read-only mapping over a
    path table: what the DataModule's domains hold (a scanned folder's from the file index,
    memory-mapped), so that every domain is split the same way.
    """

    name: str
    root: Path
    files_by_class: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.files_by_class.values())


def class_folder_entries(root: str | os.PathLike) -> list[os.DirEntry]:
    """The class folders of a domain root, by name (hidden ones and symlink loops are not)."""
    with os.scandir(root) as entries:
        found = [e for e in entries if is_class_folder_entry(e)]
    return sorted(found, key=lambda e: e.name)


def class_folder_images(path: str | os.PathLike) -> list[str]:
    """The image files of one class folder, sorted (hidden and non-image files left out)."""
    # os.scandir is several times faster than Path.glob on large class folders.
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries if is_image_entry(e))


def scan_class_folders(domain: DomainSource) -> DomainData:
    """List `<root>/<Class>/<image>` files, ignoring hidden and non-image files."""
    root = Path(domain.root)
    if not root.is_dir():
        raise DatasetLayoutError(f"domain {domain.name!r}: folder {root} does not exist")
    files_by_class = {e.name: class_folder_images(e.path) for e in class_folder_entries(root)}
    return DomainData(name=domain.name, root=root, files_by_class=files_by_class)


def class_folder_findings(domains: Sequence[DomainData]) -> list[Finding]:
    """Class-folder mismatches against the first domain, empty classes and empty domains."""
    if not domains:
        return [Finding(ERROR, "no-domains", "no domains were given")]
    reference = domains[0]
    reference_classes = set(reference.files_by_class)
    findings: list[Finding] = []
    for domain in domains:
        if not domain.files_by_class or domain.num_images == 0:
            message = f"domain {domain.name!r} has no images"
            findings.append(Finding(ERROR, "empty-domain", message, str(domain.root)))
            continue
        classes = set(domain.files_by_class)
        missing, extra = sorted(reference_classes - classes), sorted(classes - reference_classes)
        if missing or extra:
            message = (
                f"domain {domain.name!r} differs from {reference.name!r} ({reference.root}): "
                f"missing {missing}, extra {extra}"
            )
            findings.append(Finding(ERROR, "class-mismatch", message, str(domain.root)))
        for name, files in sorted(domain.files_by_class.items()):
            if not files:
                message = f"class {name!r} of domain {domain.name!r} has no images"
                findings.append(Finding(ERROR, "empty-class", message, str(domain.root / name)))
    return findings


def shared_class_names(domains: Sequence[DomainData]) -> list[str]:
    """The class list all domains share; `DatasetLayoutError` listing every problem if not."""
    problems = [f for f in class_folder_findings(domains) if f.severity == ERROR]
    if problems:
        raise DatasetLayoutError(
            "all domains must have the same class folders, each with images:\n  "
            + "\n  ".join(f"{f.path}: {f.message}" if f.path else f.message for f in problems)
        )
    return sorted(domains[0].files_by_class)


def check_domain_roles(
    names: Sequence[str], held_out: Sequence[str], target: Sequence[str]
) -> None:
    """`ValueError` unless the domain names are unique, the held-out and target domains are
    among them and disjoint, and at least one domain is left to train on."""
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"domain names must be unique; repeated: {repeated}")
    for setting, chosen in (("held_out_domains", held_out), ("target_domains", target)):
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(
                f"{setting} {unknown} are not domains of this dataset; valid choices: {list(names)}"
            )
    both = sorted(set(target) & set(held_out))
    if both:
        raise ValueError(f"domains {both} are both held out and adaptation targets")
    if set(names) <= set(held_out) | set(target):
        raise ValueError(
            "held_out_domains and target_domains hold every domain: nothing is left to train on"
        )
