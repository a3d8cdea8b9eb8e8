"""The shared DataModule of DomainBed's image-folder datasets (PACS, VLCS, TerraIncognita,
DomainNet): one code path, each dataset a few constants (`domainbed_facts.py`) plus, where it
has them, its official split lists.

Layout: `<root>/<domain>/<class>/<image>`, where `root` may also be the folder above it: the
archive's own folder (PACS's `kfold/`) or the one DomainBed's download script leaves
(`<data_dir>/PACS/`, `VLCS/`, `terra_incognita/`, `domain_net/`). Only the dataset's own domain
folders are read, so stray folders beside them (`__MACOSX/`, leftover temp folders, an `MNIST/`
that DomainBed would take for extra environments) are ignored, and so are stray files
(`.DS_Store`, `Thumbs.db`: only image files are samples). Domains may be named as distributed
(`art_painting`) or by DomainBed's environment names (`A`), in any case.

Splits (`split`):
- `holdout` (default, DomainBed's protocol): a seeded 20% of every trained domain is its
  validation split (`val_fraction: 0.2`). DomainBed shuffles each environment with its own seed
  and takes the first `int(0.2 n)`; here the split is the project's seeded split, stratified by
  class, so the sizes match to rounding but not the images. A held-out domain (DomainBed's test
  environment) is evaluated whole.
- `official`: the dataset's published lists, where it has them (PACS, DomainNet), parsed with
  errors naming the list file and line.

Batches (`batch_size_per_domain`): DomainBed draws `batch_size` images from every training
environment at each step (32 for ResNets); set this to the same number and every training batch
holds that many images of each trained domain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path, PurePosixPath

from datamodules.base import MultiDomainDataModule
from datamodules.data.domainbed_facts import ImageFolderFacts
from datamodules.data.image_lists import ImageListFile, read_image_list
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.splitting import LabelledFiles

SPLIT_CHOICES = ("holdout", "official")

#: (relative path `<domain>/<class>/<file>`, class name, label as written) of one list line.
ListedImage = tuple[str, str, int]
#: Checks a list line's label for its class: None if it fits, else what is wrong.
LabelRule = Callable[[str, int], str | None]


def resolve_domain_name(name: str, facts: ImageFolderFacts) -> str:
    """The domain folder a user-written name means: the folder name or DomainBed's environment
    name (`A` -> `art_painting`), in any case; ValueError listing the choices otherwise."""
    for candidates in (facts.domains, facts.environments):
        for domain, candidate in zip(facts.domains, candidates, strict=True):
            if name == candidate or name.strip().lower() == candidate.lower():
                return domain
    choices = [f"{d} ({e})" for d, e in zip(facts.domains, facts.environments, strict=True)]
    raise ValueError(f"unknown {facts.title} domain {name!r}; valid choices: {choices}")


def find_image_root(root: str | Path, facts: ImageFolderFacts, domains: Sequence[str]) -> Path:
    """The folder holding every one of `domains`: `root`, or one of the dataset's known
    sub-folders of it; `DatasetLayoutError` saying where it looked and how to get the data."""
    root = Path(root).expanduser()
    candidates = [root, *(root / sub for sub in facts.image_folders)]
    for candidate in candidates:
        if all((candidate / domain).is_dir() for domain in domains):
            return candidate
    if not root.is_dir():
        raise DatasetLayoutError(f"{facts.title} root {root} does not exist. {facts.how_to_get}")
    # Report against the candidate that holds most of the domains (the user's intended one).
    best = max(candidates, key=lambda c: sum((c / d).is_dir() for d in domains))
    missing = [d for d in domains if not (best / d).is_dir()]
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetLayoutError(
        f"{facts.title} domain folders {missing} not found in {best} (looked for "
        f"{list(domains)} in {looked}). {facts.how_to_get}"
    )


def find_list_folder(candidates: Sequence[Path], first_list: str, title: str, how: str) -> Path:
    """The first folder holding `first_list`; `DatasetLayoutError` naming the places tried."""
    for folder in candidates:
        if (folder / first_list).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetLayoutError(
        f"{title} split list {first_list} not found (looked in {looked}); `split: official` "
        f"needs the official lists (or set `split: holdout`). {how}"
    )


def read_split_list(
    list_file: Path,
    image_root: Path,
    domain: DomainData,
    label_rule: LabelRule,
    skip: frozenset[str] = frozenset(),
) -> list[ListedImage]:
    """The images one official split list names, each line checked.

    A line is `<domain>/<class>/<file> <label>` with the path relative to `image_root` (the
    folder holding the domain folders). Every problem raises `DatasetLayoutError` naming the
    file and line: no label or a label that is not an integer, a path that is absolute or
    leaves `image_root`, another domain, an unknown class, a file that is not in the scanned
    domain, a label `label_rule` rejects, or a path listed twice. Lines whose path is in `skip`
    (dropped duplicates) are left out.
    """
    scanned = {
        f"{class_name}/{os.path.basename(path)}": path
        for class_name, paths in domain.files_by_class.items()
        for path in paths
    }
    folder = domain.root.name
    listed: list[ListedImage] = []
    first_line: dict[str, int] = {}
    for entry in read_image_list(list_file, labels="required"):
        where = f"{entry.where(list_file)}: {entry.path!r}"
        parts = PurePosixPath(entry.path).parts
        # Lexical checks suffice (no resolve() per line: DomainNet's lists have 586k lines):
        # a listed file must also be one the scan found inside the domain folder.
        if entry.path.startswith(("/", "~")) or ".." in parts:
            message = f"list paths must be relative to {image_root}, without '..'"
        elif not entry.label.lstrip("-").isdigit():
            message = f"label {entry.label!r} is not an integer"
        elif len(parts) != 3:
            message = f"expected <domain>/<class>/<file> (relative to {image_root})"
        elif parts[0] != folder:
            message = f"names domain {parts[0]!r}; this list is domain {folder!r}'s"
        elif parts[1] not in domain.files_by_class:
            message = f"unknown class {parts[1]!r} (no folder {domain.root / parts[1]})"
        elif entry.path in skip:
            continue
        elif f"{parts[1]}/{parts[2]}" not in scanned:
            message = f"file {image_root / entry.path} does not exist (or is not an image)"
        elif entry.path in first_line:
            message = f"listed again (first at line {first_line[entry.path]})"
        else:
            message = label_rule(parts[1], int(entry.label))
        if message is not None:
            raise DatasetLayoutError(f"{where}: {message}")
        first_line[entry.path] = entry.line_number
        listed.append((scanned[f"{parts[1]}/{parts[2]}"], parts[1], int(entry.label)))
    if not listed:
        raise DatasetLayoutError(f"split list {list_file} lists no images")
    return listed


def check_disjoint(lists: dict[str, list[ListedImage]], files: dict[str, Path]) -> None:
    """`DatasetLayoutError` naming both files if two of the split lists share an image."""
    names = list(lists)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            shared = sorted({p for p, _, _ in lists[first]} & {p for p, _, _ in lists[second]})
            if shared:
                raise DatasetLayoutError(
                    f"{files[first]} and {files[second]} share {len(shared)} images, e.g. "
                    f"{shared[:3]}; a training and an evaluation split must be disjoint"
                )


def labelled(listed: list[ListedImage], class_names: Sequence[str]) -> LabelledFiles:
    """(path, label) pairs, the label indexing `class_names` (the sorted class folders)."""
    label_of = {name: index for index, name in enumerate(class_names)}
    return [(path, label_of[class_name]) for path, class_name, _ in listed]


class DomainBedImageFolderDataModule(MultiDomainDataModule):
    """A DomainBed image-folder dataset; subclasses set `facts` and, if the dataset has official
    split lists, `has_official_splits`, `official_list_splits`, `list_file` and
    `official_split_lists`."""

    facts: ImageFolderFacts
    #: Whether `split: official` is offered (the dataset publishes split lists).
    has_official_splits = False
    #: The split names of the official lists (`list_file(domain, split)` names each file).
    official_list_splits: tuple[str, ...] = ()

    def __init__(
        self,
        root: str,
        domains: list[str] | None = None,
        held_out_domains: list[str] | None = None,
        target_domains: list[str] | None = None,
        split: str = "holdout",
        batch_size_per_domain: int | None = None,
        **kwargs,
    ) -> None:
        """DomainBed image-folder DataModule.

        Args:
            root: the folder holding the domain folders, or the folder above it (the archive's
                or DomainBed's `<data_dir>`).
            domains: the domains to use (default: all), by folder name or DomainBed's
                environment name.
            held_out_domains: domains only evaluated (DomainBed's `--test_envs`), e.g. `[A]`.
            target_domains: unlabelled adaptation targets (see `MultiDomainDataModule`).
            split: `holdout` (DomainBed: a seeded `val_fraction` of every trained domain) or
                `official` (the published split lists, where the dataset has them).
            batch_size_per_domain: DomainBed's batches: this many images of every trained
                domain in each training batch (DomainBed's `batch_size`, 32 for ResNets);
                replaces `batch_size` for training. Null: `batch_size` images drawn over all
                training images.
            **kwargs: the shared split, augmentation and loader settings of
                `MultiDomainDataModule`.
        """
        facts = self.facts
        choices = SPLIT_CHOICES if self.has_official_splits else SPLIT_CHOICES[:1]
        if split not in choices:
            raise ValueError(
                f"split={split!r}; valid choices for {facts.title}: {list(choices)}"
                + ("" if self.has_official_splits else " (it has no official split lists)")
            )
        self.split = split
        self.selected_domains = [resolve_domain_name(d, facts) for d in domains or facts.domains]
        held_out = [resolve_domain_name(d, facts) for d in held_out_domains or []]
        targets = [resolve_domain_name(d, facts) for d in target_domains or []]
        not_selected = sorted(set(held_out + targets) - set(self.selected_domains))
        if not_selected:
            raise ValueError(
                f"held_out_domains/target_domains {not_selected} are not among domains "
                f"{self.selected_domains}"
            )
        super().__init__(
            root=root,
            held_out_domains=held_out,
            target_domains=targets,
            batch_size_per_domain=batch_size_per_domain,
            **kwargs,
        )

    @cached_property
    def image_root(self) -> Path:
        """The folder holding the domain folders."""
        return find_image_root(self.root, self.facts, self.selected_domains)

    def domain_sources(self) -> list[DomainSource]:
        return [DomainSource(name=d, root=str(self.image_root / d)) for d in self.selected_domains]

    @property
    def protocol(self) -> str:
        return super().protocol + ("_official" if self.split == "official" else "")

    def official_splits(self, domain: DomainData) -> dict[str, LabelledFiles] | None:
        if self.split != "official":
            return None
        return self.official_split_lists(domain)

    def official_split_lists(self, domain: DomainData) -> dict[str, LabelledFiles]:
        """A domain's splits from the dataset's lists (datasets with `has_official_splits`)."""
        raise NotImplementedError(f"{type(self).__name__} has no official split lists")

    def list_file(self, domain: str, split: str) -> Path:
        """The official list of a domain's split (datasets with `has_official_splits`)."""
        raise NotImplementedError(f"{type(self).__name__} has no official split lists")

    def list_files(self) -> list[ImageListFile]:
        """With `split: official`, also every official list of the selected domains (each read
        whole before training)."""
        if self.split != "official":
            return super().list_files()
        return super().list_files() + [
            ImageListFile(str(self.list_file(d, s)), str(self.image_root), labels="required")
            for d in self.selected_domains
            for s in self.official_list_splits
        ]
