"""DomainNet (Peng et al., "Moment Matching for Multi-Source Domain Adaptation", ICCV 2019): six
domains (`clipart`, `infograph`, `painting`, `quickdraw`, `real`, `sketch`; DomainBed's clip,
info, paint, quick, real, sketch), 345 classes, 586,575 images in the cleaned release (train /
test: clipart 33,525 / 14,604, infograph 36,023 / 15,582, painting 50,416 / 21,850, quickdraw
120,750 / 51,750, real 120,906 / 52,041, sketch 48,212 / 20,916).

Read as the six archives unzip, `<domain>/<class>/<domain>_<CCC>_<NNNNNN>.jpg`, into one folder,
or as DomainBed's download script leaves them (`domain_net/<domain>/...`); see
`datamodules/domainbed.py` for what is shared. Class indices here are the sorted (ASCII) class
folders, as in DomainBed, so the three `The_*` classes come first: they are not the official
lists' label numbers.

- `split: official` reads `<domain>_train.txt` and `<domain>_test.txt` (from `split_dir`, else
  `root`, `root/splits/`, `root/image_list/`, `root/txt/` or beside the domain folders). Each
  line is `<domain>/<class>/<file>.jpg <label>`, the path relative to the folder holding the
  domain folders, the label 0-based (0..344). The class is taken from the path; the labels are
  checked to name one class each, consistently across the lists. A trained domain trains on
  its train list less a seeded `val_fraction` (stratified: its validation split) and is tested
  on its test list; a held-out domain is evaluated on its test list.
- `duplicates_file`: DomainBed's `domainbed/misc/domain_net_duplicates.txt` (9,431 paths: one
  `<domain>/<class>/<file>.jpg` per line, relative to `domain_net/`; none in quickdraw). Its
  files are left out of every split, as DomainBed's download script deletes them; listed
  files that are missing (already deleted) are ignored.
"""

from __future__ import annotations

import os
import zlib
from functools import cached_property
from pathlib import Path, PurePosixPath

from datamodules.data.domainbed_facts import DOMAINNET, DOMAINNET_NUM_CLASSES
from datamodules.data.image_lists import read_image_list
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.splitting import LabelledFiles, stratified_split
from datamodules.demo.domainbed import DOMAINNET_DUPLICATES_FILE, ensure_domainnet_demo
from datamodules.domainbed import (
    DomainBedImageFolderDataModule,
    check_disjoint,
    find_list_folder,
    labelled,
    read_split_list,
)
from datamodules.generated import GeneratedData

DOMAINNET_LIST_SPLITS = ("train", "test")


def read_duplicates_file(path: str | Path) -> frozenset[str]:
    """The paths of a DomainBed-style duplicates list, each line checked: `<domain>/<class>/
    <file>` relative to the folder holding the domain folders, a DomainNet domain, listed
    once; `DatasetLayoutError` naming the file and line otherwise (blank lines are skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetLayoutError(
            f"duplicates_file {path} does not exist; it is DomainBed's "
            "domainbed/misc/domain_net_duplicates.txt (or set duplicates_file: null)"
        )
    first_line: dict[str, int] = {}
    for entry in read_image_list(path, labels="none"):
        parts = PurePosixPath(entry.path).parts
        problem = None
        if entry.path.startswith(("/", "~")) or ".." in parts or len(parts) != 3:
            problem = "expected <domain>/<class>/<file>, relative to the domain folders' folder"
        elif parts[0] not in DOMAINNET.domains:
            problem = f"unknown domain {parts[0]!r}; valid: {list(DOMAINNET.domains)}"
        elif entry.path in first_line:
            problem = f"listed again (first at line {first_line[entry.path]})"
        if problem is not None:
            raise DatasetLayoutError(f"{entry.where(path)}: {entry.path!r}: {problem}")
        first_line[entry.path] = entry.line_number
    return frozenset(first_line)


class DomainNetDataModule(DomainBedImageFolderDataModule):
    """DomainNet as unzipped or as DomainBed leaves it; holdout or official splits, optionally
    without DomainBed's duplicates."""

    dataset_name = "domainnet"
    facts = DOMAINNET
    has_official_splits = True
    official_list_splits = tuple(DOMAINNET_LIST_SPLITS)

    def __init__(
        self,
        root: str,
        split_dir: str | None = None,
        duplicates_file: str | None = None,
        **kwargs,
    ) -> None:
        """DomainNet DataModule.

        Args:
            root: the folder holding the domain folders, or its parent holding `domain_net/`
                (DomainBed).
            split_dir: where `<domain>_{train,test}.txt` are (`split: official`); default:
                `root`, `root/splits/`, `root/image_list/`, `root/txt/` or beside the domains.
            duplicates_file: DomainBed's `domain_net_duplicates.txt`: its files are left out,
                as DomainBed deletes them; null keeps every file.
            **kwargs: the settings of `DomainBedImageFolderDataModule` (`domains`,
                `held_out_domains`, `split`, `batch_size_per_domain`, ...).
        """
        self.split_dir = split_dir
        self.duplicates_file = duplicates_file
        # The label each class carries in the official lists, and the class of each label.
        self._list_label: dict[str, int] = {}
        self._list_class: dict[int, str] = {}
        super().__init__(root=root, **kwargs)

    def duplicates_path(self) -> Path | None:
        return None if self.duplicates_file is None else Path(self.duplicates_file)

    @cached_property
    def duplicates(self) -> frozenset[str]:
        """The listed duplicates (`<domain>/<class>/<file>`), or none."""
        path = self.duplicates_path()
        return frozenset() if path is None else read_duplicates_file(path)

    def scan_domain(self, source: DomainSource) -> DomainData:
        """The domain's files less the listed duplicates."""
        domain = super().scan_domain(source)
        prefix = f"{source.name}/"
        dropped = {path for path in self.duplicates if path.startswith(prefix)}
        if not dropped:
            return domain
        kept = {
            class_name: [
                path
                for path in paths
                if f"{prefix}{class_name}/{os.path.basename(path)}" not in dropped
            ]
            for class_name, paths in domain.files_by_class.items()
        }
        return DomainData(domain.name, domain.root, kept)

    @cached_property
    def list_folder(self) -> Path:
        if self.split_dir is not None:
            candidates = [Path(self.split_dir).expanduser()]
        else:
            root = Path(self.root).expanduser()
            candidates = [root, *(root / s for s in ("splits", "image_list", "txt"))]
            candidates += [self.image_root, self.image_root / "splits"]
        first = f"{self.selected_domains[0]}_train.txt"
        return find_list_folder(list(dict.fromkeys(candidates)), first, "DomainNet", "")

    def list_file(self, domain: str, split: str) -> Path:
        return self.list_folder / f"{domain}_{split}.txt"

    def _label_problem(self, class_name: str, label: int) -> str | None:
        """Official labels are 0..344, one per class, the same in every list."""
        if not 0 <= label < DOMAINNET_NUM_CLASSES:
            return f"label {label} outside 0..{DOMAINNET_NUM_CLASSES - 1}"
        known = self._list_label.setdefault(class_name, label)
        owner = self._list_class.setdefault(label, class_name)
        if known != label:
            return f"label {label} for class {class_name!r}, which earlier lines label {known}"
        if owner != class_name:
            return f"label {label} for class {class_name!r}; earlier lines give it to {owner!r}"
        return None

    def official_split_lists(self, domain: DomainData) -> dict[str, LabelledFiles]:
        files = {split: self.list_file(domain.name, split) for split in DOMAINNET_LIST_SPLITS}
        lists = {
            split: read_split_list(
                files[split], self.image_root, domain, self._label_problem, self.duplicates
            )
            for split in DOMAINNET_LIST_SPLITS
        }
        check_disjoint(lists, files)
        test = labelled(lists["test"], self.class_names)
        if domain.name in self.held_out_domains:
            return {"train": [], "val": test, "test": test}
        by_class: dict[str, list[str]] = {name: [] for name in self.class_names}
        for path, class_name, _ in lists["train"]:
            by_class[class_name].append(path)
        # The same per-domain seed as the holdout split of the base class.
        seed = self.split_seed + zlib.crc32(domain.name.encode())
        train, val, _ = stratified_split(by_class, self.class_names, self.val_fraction, 0.0, seed)
        return {"train": train, "val": val, "test": test}


class DomainNetDemoDataModule(GeneratedData, DomainNetDataModule):
    """A generated DomainNet copy (the demo shapes in six styles, ten real class names, the
    real file names and lists, a few listed duplicates), created on first use; the same code
    path as the real dataset."""

    demo_generator = staticmethod(ensure_domainnet_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 10,
        images_per_class: int = 10,
        demo_image_size: int = 64,
        demo_seed: int = 0,
        demo_layout: str = "distributed",
        drop_duplicates: bool = True,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """DomainNet demo DataModule.

        Args:
            root: where the copy is (default: generated into the cache folder).
            demo_classes: number of classes (2..10, real DomainNet class names).
            images_per_class: images per class and domain.
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            demo_layout: `distributed` (domain folders, lists, duplicates) or `domainbed`.
            drop_duplicates: leave out the copy's listed duplicates (its own
                `domain_net_duplicates.txt`), as `duplicates_file` does for the real data.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `DomainNetDataModule`.
        """
        self.drop_duplicates = drop_duplicates
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
            layout=demo_layout,
        )
        super().__init__(root=root, **kwargs)

    def duplicates_path(self) -> Path | None:
        if self.duplicates_file is not None or not self.drop_duplicates:
            return super().duplicates_path()
        listed = Path(self.root) / DOMAINNET_DUPLICATES_FILE
        return listed if listed.is_file() else None  # the domainbed layout has none
