"""DTD, the Describable Textures Dataset (Cimpoi et al., CVPR 2014): 47 texture classes.

One domain ("dtd") of the multi-domain machinery. Reads the archive as distributed
(`dtd/images/<class>/<class>_<NNNN>.jpg`, `dtd/labels/{train,val,test}{1..10}.txt`, each line a
path relative to `images/`). Two protocols:

- official partitions (`partition` 1..10): train on `train<p>` (or `train<p>` + `val<p>` with
  `train_on: train+val`), validate on `val<p>`, test on `test<p>`;
- stratified, seeded k-fold cross-validation over every image under `images/` (`num_folds`,
  `fold`; the SRM paper reports 5 folds): fold `k` is both the validation and the test split and
  the other folds are trained on; label files are not read.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path, PurePosixPath

from datamodules.base import MultiDomainDataModule
from datamodules.data.findings import ERROR, Finding
from datamodules.data.image_lists import ImageListFile, entry_problem, read_image_list
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.problems import raise_if_errors
from datamodules.data.splitting import LabelledFiles, stratified_folds
from datamodules.demo import DTD_NUM_PARTITIONS, DTD_SPLITS, ensure_dtd_demo
from datamodules.generated import GeneratedData

DTD_DOMAIN = "dtd"
TRAIN_ON_CHOICES = ("train", "train+val")

DTD_HELP = (
    "DTD cannot be downloaded here. Get dtd-r1.0.1.tar.gz from "
    "https://www.robots.ox.ac.uk/~vgg/data/dtd/, extract it, and pass the `dtd` folder (the one "
    "holding images/ and labels/) as `--data.init_args.root`. Expected layout: "
    "<root>/images/<class>/<class>_<NNNN>.jpg (47 class folders) and "
    "<root>/labels/{train,val,test}{1..10}.txt. To try the pipeline without it: "
    "python -m experiments.dtd fit --config configs/dtd/demo.yaml"
)


def find_dtd_root(root: str | Path) -> Path:
    """The folder holding `images/` and `labels/`: `root` itself, `root/dtd` (the extracted
    archive's parent) or `root/dtd/dtd` (torchvision's download folder)."""
    root = Path(root).expanduser()
    candidates = [root, root / "dtd", root / "dtd" / "dtd"]
    for candidate in candidates:
        if (candidate / "images").is_dir():
            return candidate
    looked = ", ".join(str(c / "images") for c in candidates)
    raise DatasetLayoutError(f"DTD not found: no images/ folder at {looked}. {DTD_HELP}")


def _label_line_problem(
    entry: str, images_dir: Path, class_names: set[str]
) -> tuple[str, str] | None:
    """(kind, message) of what is wrong with one label-file entry, or None; the kinds are the
    data check's (`python -m experiments.check_data`)."""
    problem = entry_problem(entry, images_dir)
    if problem is not None:
        return problem[0], f"{entry!r}: {problem[1]}; paths must be relative to images/"
    relative = PurePosixPath(entry)
    if len(relative.parts) != 2:
        return "malformed-list", f"{entry!r}: expected <class>/<file>"
    if relative.parts[0] not in class_names:
        folder = images_dir / relative.parts[0]
        return (
            "unknown-class",
            f"{entry!r}: unknown class {relative.parts[0]!r} (no folder {folder})",
        )
    if not (images_dir / entry).is_file():
        return "missing-file", f"{entry!r}: file {images_dir / entry} does not exist"
    return None


def read_label_file(path: Path, images_dir: Path, class_names: set[str]) -> list[str]:
    """Relative image paths listed in one label file, checked line by line.

    Every line must be `<class>/<file>` inside `images/` (no absolute paths, nothing leaving
    `images/`), with a known class, an existing file and no repetition. The whole file is
    read: `DataProblemsError` names the first bad line (`<file>, line N: ...`) and lists every
    one as `file:line`, as the data check does.
    """
    if not path.is_file():
        raise DatasetLayoutError(f"DTD label file {path} does not exist. {DTD_HELP}")
    first_line: dict[str, int] = {}
    findings: list[Finding] = []
    for entry in read_image_list(path, labels="none"):
        problem = _label_line_problem(entry.path, images_dir, class_names)
        if problem is None and entry.path in first_line:
            problem = "duplicate", f"{entry.path!r}: duplicate of line {first_line[entry.path]}"
        if problem is not None:
            findings.append(Finding(ERROR, *problem, str(path), entry.line_number))
            continue
        first_line[entry.path] = entry.line_number
    if findings:
        first, more = findings[0], len(findings) - 1
        headline = f"{path}, line {first.line}: {first.message}" + (
            f" (and {more} more bad lines)" if more else ""
        )
        raise_if_errors(findings, headline=headline)
    if not first_line:
        raise DatasetLayoutError(f"DTD label file {path} lists no images")
    return list(first_line)


class DTDDataModule(MultiDomainDataModule):
    """DTD in its published layout: official partitions or stratified k-fold cross-validation.

    In fold mode the held-out fold is both `val` and `test` (there is no third split to select
    models on), so report the last epoch's model, not the best on validation.
    """

    dataset_name = "dtd"

    def __init__(
        self,
        root: str,
        partition: int = 1,
        train_on: str = "train+val",
        num_folds: int | None = None,
        fold: int = 1,
        **kwargs,
    ) -> None:
        """DTD DataModule.

        Args:
            root: the `dtd` folder holding `images/` and `labels/` (its parent, or torchvision's
                download folder `<root>/dtd/dtd`, are found too).
            partition: official partition 1..10 (ignored in fold mode).
            train_on: "train" (validate on `val<p>`) or "train+val" (the usual protocol: train
                on both, test on `test<p>`; the validation metrics are then on training images).
            num_folds: k of a stratified, seeded k-fold cross-validation over all images (e.g.
                5, as in the SRM paper); null uses the official partitions.
            fold: the held-out fold 1..num_folds: both the validation and the test split; the
                other folds are trained on. Folds are seeded by `split_seed`.
            **kwargs: the shared image, augmentation and loader settings of
                `MultiDomainDataModule` (`split_seed` seeds the folds).
        """
        if not 1 <= partition <= DTD_NUM_PARTITIONS:
            raise ValueError(f"partition={partition} must be in 1..{DTD_NUM_PARTITIONS}")
        if train_on not in TRAIN_ON_CHOICES:
            raise ValueError(f"train_on={train_on!r} must be one of {list(TRAIN_ON_CHOICES)}")
        if num_folds is not None and (num_folds < 2 or not 1 <= fold <= num_folds):
            raise ValueError(
                f"num_folds={num_folds} must be at least 2 and fold={fold} in 1..num_folds"
            )
        self.partition = partition
        self.train_on = train_on
        self.num_folds = num_folds
        self.fold = fold
        # Splits come from label files or folds, so the fractions are fixed here; LightningCLI
        # reads this call and does not offer them (and Python rejects them given twice).
        super().__init__(
            root=root, held_out_domains=None, val_fraction=0.0, test_fraction=0.0, **kwargs
        )

    @cached_property
    def dtd_root(self) -> Path:
        """The folder holding `images/` and `labels/`."""
        return find_dtd_root(self.root)

    def domain_sources(self) -> list[DomainSource]:
        return [DomainSource(name=DTD_DOMAIN, root=str(self.dtd_root / "images"))]

    @property
    def protocol(self) -> str:
        if self.num_folds is not None:
            return f"fold{self.fold}of{self.num_folds}"
        return f"partition{self.partition}" + ("_trainval" if self.train_on == "train+val" else "")

    def official_splits(self, domain: DomainData) -> dict[str, LabelledFiles]:
        """The held-out fold as val and test (fold mode), else the partition's label files."""
        label_of = {name: index for index, name in enumerate(self.class_names)}
        if self.num_folds is not None:
            splits: dict[str, LabelledFiles] = {"train": [], "val": []}
            paths = [(p, label_of[c]) for c in self.class_names for p in domain.files_by_class[c]]
            folds = stratified_folds(
                domain.files_by_class, self.class_names, self.num_folds, self.split_seed
            )
            for pair, fold in zip(paths, folds, strict=True):
                splits["val" if fold == self.fold - 1 else "train"].append(pair)
            return {**splits, "test": splits["val"]}
        lists = self._read_partition()
        chosen = {
            "train": lists["train"] + (lists["val"] if self.train_on == "train+val" else []),
            "val": lists["val"],
            "test": lists["test"],
        }
        return {
            split: [(str(domain.root / e), label_of[PurePosixPath(e).parts[0]]) for e in entries]
            for split, entries in chosen.items()
        }

    def list_files(self) -> list[ImageListFile]:
        """The partition's label files, for the data check (fold mode reads none)."""
        if self.num_folds is not None:
            return super().list_files()
        labels_dir, images_dir = self.dtd_root / "labels", str(self.dtd_root / "images")
        return super().list_files() + [
            ImageListFile(str(labels_dir / f"{s}{self.partition}.txt"), images_dir, labels="none")
            for s in DTD_SPLITS
        ]

    def _read_partition(self) -> dict[str, list[str]]:
        """The partition's three label files, validated, and checked to be disjoint."""
        images_dir = self.dtd_root / "images"
        labels_dir = self.dtd_root / "labels"
        if not labels_dir.is_dir():
            raise DatasetLayoutError(f"DTD labels folder {labels_dir} does not exist. {DTD_HELP}")
        lists = {
            split: read_label_file(
                labels_dir / f"{split}{self.partition}.txt", images_dir, set(self.class_names)
            )
            for split in DTD_SPLITS
        }
        for index, first in enumerate(DTD_SPLITS):
            for second in DTD_SPLITS[index + 1 :]:
                shared = sorted(set(lists[first]) & set(lists[second]))
                if shared:
                    raise DatasetLayoutError(
                        f"{labels_dir}: {first}{self.partition}.txt and "
                        f"{second}{self.partition}.txt share {len(shared)} images, e.g. "
                        f"{shared[:3]}; the splits of a partition must be disjoint"
                    )
        return lists


class DTDDemoDataModule(GeneratedData, DTDDataModule):
    """Generated textures in the DTD layout (with all ten partitions), created on first use.

    Same layout and code path as the real dataset.
    """

    demo_generator = staticmethod(ensure_dtd_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 8,
        images_per_class: int = 30,
        demo_image_size: int = 64,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """DTD demo DataModule.

        Args:
            root: where the demo data is (default: generated into the cache folder).
            demo_classes: number of procedural texture classes to generate (2..10).
            images_per_class: images per class (each split of a partition gets a third).
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `DTDDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)
