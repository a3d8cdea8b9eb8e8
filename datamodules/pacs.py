"""PACS (Li et al., "Deeper, Broader and Artier Domain Generalization", ICCV 2017): four
domains (`art_painting`, `cartoon`, `photo`, `sketch`; DomainBed's A, C, P, S), seven classes
(`dog`, `elephant`, `giraffe`, `guitar`, `horse`, `house`, `person`), 9,991 images (art 2,048,
cartoon 2,344, photo 1,670, sketch 3,929); `.jpg`, sketches `.png`.

Read as distributed (`kfold/<domain>/<class>/<image>`) or as DomainBed's download script leaves
it (`PACS/<domain>/<class>/<image>`: the same folders, `kfold` renamed); see
`datamodules/domainbed.py` for what is shared (stray folders and files ignored, DomainBed's
environment names accepted, the 20% holdout, per-domain batches).

`split: official` reads the authors' lists `<domain>_{train,crossval,test}_kfold.txt` (from
`split_dir`, else `root`, `root/splits/` or beside the image folder). Each line is
`<domain>/<class>/<file> <label>`, one space, the path relative to `kfold/`, the label 1-based
in the class order above (so label - 1 is the class index here). A trained domain trains on
its train list and is validated and tested on its crossval list (the test list holds the whole
domain: third-party loaders use it as such, and testing on it would test on training images);
a held-out domain is evaluated on its test list.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from datamodules.data.domainbed_facts import PACS
from datamodules.data.layout import DomainData
from datamodules.data.splitting import LabelledFiles
from datamodules.demo.domainbed import PACS_LIST_SPLITS, ensure_pacs_demo
from datamodules.domainbed import (
    DomainBedImageFolderDataModule,
    check_disjoint,
    find_list_folder,
    labelled,
    read_split_list,
)
from datamodules.generated import GeneratedData


def pacs_label_problem(class_name: str, label: int) -> str | None:
    """None if `label` is PACS's 1-based number of `class_name`, else what is wrong."""
    if class_name not in PACS.classes:
        return f"class {class_name!r} is not one of PACS's {list(PACS.classes)}"
    expected = PACS.classes.index(class_name) + 1
    if label == expected:
        return None
    return (
        f"label {label} does not match class {class_name!r}: PACS lists number the classes "
        f"1..7 in the order {list(PACS.classes)}, so {class_name!r} is {expected}"
    )


class PACSDataModule(DomainBedImageFolderDataModule):
    """PACS as distributed or as DomainBed leaves it; holdout or official splits."""

    dataset_name = "pacs"
    facts = PACS
    has_official_splits = True
    official_list_splits = tuple(PACS_LIST_SPLITS)

    def __init__(self, root: str, split_dir: str | None = None, **kwargs) -> None:
        """PACS DataModule.

        Args:
            root: the folder holding the domain folders, or its parent holding `kfold/`
                (as distributed) or `PACS/` (DomainBed).
            split_dir: where the `<domain>_<split>_kfold.txt` lists are (`split: official`);
                default: `root`, `root/splits/`, or beside the image folder.
            **kwargs: the settings of `DomainBedImageFolderDataModule` (`domains`,
                `held_out_domains`, `split`, `batch_size_per_domain`, ...).
        """
        self.split_dir = split_dir
        super().__init__(root=root, **kwargs)

    @cached_property
    def list_folder(self) -> Path:
        """The folder holding the official lists."""
        if self.split_dir is not None:
            candidates = [Path(self.split_dir).expanduser()]
        else:
            root = Path(self.root).expanduser()
            candidates = [root, root / "splits", self.image_root.parent]
        first = f"{self.selected_domains[0]}_train_kfold.txt"
        return find_list_folder(list(dict.fromkeys(candidates)), first, "PACS", PACS.how_to_get)

    def list_file(self, domain: str, split: str) -> Path:
        return self.list_folder / f"{domain}_{split}_kfold.txt"

    def official_split_lists(self, domain: DomainData) -> dict[str, LabelledFiles]:
        files = {split: self.list_file(domain.name, split) for split in PACS_LIST_SPLITS}
        lists = {
            split: read_split_list(files[split], self.image_root, domain, pacs_label_problem)
            for split in PACS_LIST_SPLITS
        }
        check_disjoint({s: lists[s] for s in ("train", "crossval")}, files)
        pairs = {split: labelled(listed, self.class_names) for split, listed in lists.items()}
        if domain.name in self.held_out_domains:
            return {"train": [], "val": pairs["test"], "test": pairs["test"]}
        return {"train": pairs["train"], "val": pairs["crossval"], "test": pairs["crossval"]}


class PACSDemoDataModule(GeneratedData, PACSDataModule):
    """A generated PACS copy (the demo shapes in four styles, real folder names and lists),
    created on first use; the same code path as the real dataset."""

    demo_generator = staticmethod(ensure_pacs_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 7,
        images_per_class: int = 12,
        demo_image_size: int = 64,
        demo_seed: int = 0,
        demo_layout: str = "distributed",
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """PACS demo DataModule.

        Args:
            root: where the copy is (default: generated into the cache folder).
            demo_classes: the first `demo_classes` of the real classes (1..7).
            images_per_class: images per class and domain.
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            demo_layout: `distributed` (`kfold/` and the split lists) or `domainbed`.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `PACSDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
            layout=demo_layout,
        )
        super().__init__(root=root, **kwargs)
