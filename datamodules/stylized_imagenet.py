"""Stylized-ImageNet (Geirhos et al., "ImageNet-trained CNNs are biased towards texture;
increasing shape bias improves accuracy and robustness", ICLR 2019, arXiv:1811.12231).

Two domains of the same 1000 classes: `stylized` (SIN, `<root>/{train,val}/<wnid>/*.JPEG`) and,
optionally, `imagenet` (the original images in the same layout). `train_on` (sin | in | sin+in)
picks the trained domains; every domain is evaluated, so one run reports `val/acc/stylized` and
`val/acc/imagenet`. A domain that is not trained on is a held-out domain of the multi-domain
machinery: it gets no head and is classified by the trained heads (with one trained domain,
that domain's head: exactly the single network of the paper). The official splits are used:
train from `train/`, validation and test from `val/`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from datamodules.base import MultiDomainDataModule
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.samples import LabelledRows, labelled_rows
from datamodules.demo import ensure_officehome_demo
from datamodules.generated import GeneratedData

STYLIZED, IMAGENET = "stylized", "imagenet"
TRAIN_ON_DOMAINS = {"sin": [STYLIZED], "in": [IMAGENET], "sin+in": [STYLIZED, IMAGENET]}
# Demo stand-ins: painterly drawings for SIN, photo-like renderings for ImageNet.
_DEMO_FOLDERS = {STYLIZED: "Art", IMAGENET: "Real World"}

SIN_HELP = (
    "Stylized-ImageNet is not redistributable: build it from ImageNet with "
    "github.com/rgeirhos/Stylized-ImageNet (or `python -m experiments.stylize` with the AdaIN "
    "weights), giving <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG, and pass that "
    "folder as --data.init_args.root (ImageNet itself, same layout, as "
    "--data.init_args.imagenet_root). To try the pipeline without it: python -m "
    "experiments.stylized_imagenet fit --config configs/stylized_imagenet/demo.yaml"
)


class StylizedImageNetDataModule(MultiDomainDataModule):
    """Stylized-ImageNet and ImageNet as two domains; train on SIN, IN or both, evaluate both."""

    dataset_name = "stylized_imagenet"

    def __init__(
        self,
        root: str,
        imagenet_root: str | None = None,
        train_on: Literal["sin", "in", "sin+in"] = "sin",
        **kwargs,
    ) -> None:
        """Stylized-ImageNet DataModule.

        Args:
            root: Stylized-ImageNet folder holding `train/` and `val/` (`<wnid>/*.JPEG` each).
            imagenet_root: ImageNet folder in the same layout; without it only SIN is used.
            train_on: `sin`, `in` or `sin+in` (Geirhos et al.'s three training sets); the other
                domain, if present, is evaluated only.
            **kwargs: the shared augmentation and loader settings of `MultiDomainDataModule`
                (`val_fraction`, `test_fraction` and `held_out_domains` do not apply: the
                official splits are used and `train_on` decides what is trained).
        """
        if train_on not in TRAIN_ON_DOMAINS:
            raise ValueError(f"train_on={train_on!r}; valid choices: {list(TRAIN_ON_DOMAINS)}")
        self.imagenet_root = imagenet_root
        self.train_on = train_on
        if IMAGENET not in self.present_domains() and train_on != "sin":
            raise ValueError(f"train_on={train_on!r} needs data.init_args.imagenet_root")
        held_out = [d for d in self.present_domains() if d not in TRAIN_ON_DOMAINS[train_on]]
        # The official folders are the splits, so the fractions are fixed here; LightningCLI
        # reads this call and does not offer them (and Python rejects them given twice).
        super().__init__(
            root=root, held_out_domains=held_out, val_fraction=0.0, test_fraction=0.0, **kwargs
        )

    @property
    def protocol(self) -> str:
        return f"train_{self.train_on}"

    def present_domains(self) -> list[str]:
        """The domains there is data for: `stylized`, and `imagenet` with `imagenet_root`."""
        return [STYLIZED] + ([IMAGENET] if self.imagenet_root is not None else [])

    def split_folder(self, domain: str, split: str) -> Path:
        """The `<Class>/<image>` folder of one domain's split (`train` or `val`)."""
        domain_root = self.root if domain == STYLIZED else self.imagenet_root
        folder = Path(domain_root).expanduser() / split
        if not folder.is_dir():
            raise DatasetLayoutError(f"{domain}: folder {folder} does not exist. {SIN_HELP}")
        return folder

    def domain_sources(self) -> list[DomainSource]:
        # Every domain is evaluated, so its val/ folder defines the shared class list.
        return [
            DomainSource(name, str(self.split_folder(name, "val")))
            for name in self.present_domains()
        ]

    def official_splits(self, domain: DomainData) -> dict[str, LabelledRows]:
        """Train from the domain's `train/` (trained domains only), val and test from `val/`."""
        # Rows of the file index (not lists of pairs): 1.28M training files stay arrays.
        evaluation = labelled_rows(domain.files_by_class, self.class_names)
        train = LabelledRows.from_pairs([])
        if domain.name not in self.held_out_domains:
            folder = self.split_folder(domain.name, "train")
            scanned = self.scan_domain(DomainSource(domain.name, str(folder)))
            if sorted(scanned.files_by_class) != self.class_names:
                raise DatasetLayoutError(
                    f"{domain.name}: the class folders of {scanned.root} differ from those of "
                    f"{domain.root}; train/ and val/ must hold the same classes"
                )
            train = labelled_rows(scanned.files_by_class, self.class_names)
        return {"train": train, "val": evaluation, "test": evaluation}


class StylizedImageNetDemoDataModule(GeneratedData, StylizedImageNetDataModule):
    """Stand-in for SIN/IN from the generated demo data: the demo's shape classes drawn in the
    painterly `Art` style play `stylized` and the photo-like `Real World` style plays `imagenet`.

    The demo is generated twice with different seeds, once as `train/` and once as `val/`, so
    the layout and the official-split code path are those of the real dataset.
    """

    demo_generator = staticmethod(ensure_officehome_demo)

    def __init__(
        self,
        demo_classes: int = 6,
        images_per_class: int = 40,
        val_images_per_class: int = 10,
        demo_image_size: int = 96,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        train_on: Literal["sin", "in", "sin+in"] = "sin",
        **kwargs,
    ) -> None:
        """Stylized-ImageNet demo DataModule.

        Args:
            demo_classes: number of shape classes to generate.
            images_per_class: training images per class and domain.
            val_images_per_class: validation images per class and domain.
            demo_image_size: side of the generated images.
            demo_seed: seed of the training images (validation uses `demo_seed + 1`).
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            train_on: `sin`, `in` or `sin+in`, as for the real dataset.
            **kwargs: the shared augmentation and loader settings of `MultiDomainDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            image_size=demo_image_size,
            domains=tuple(_DEMO_FOLDERS.values()),
        )
        self.demo_images_per_class = {"train": images_per_class, "val": val_images_per_class}
        self.demo_seed = demo_seed
        super().__init__(root=None, imagenet_root=None, train_on=train_on, **kwargs)

    @cached_property
    def demo_split_roots(self) -> dict[str, Path]:
        """The generated `train` and `val` trees (two seeds of the same generator)."""
        return {
            split: self.demo_generator(
                self.cache_dir,
                images_per_class=self.demo_images_per_class[split],
                seed=self.demo_seed + offset,
                **self.demo_settings,
            )
            for offset, split in enumerate(("train", "val"))
        }

    def generate_root(self) -> Path:
        return self.demo_split_roots["train"]

    def present_domains(self) -> list[str]:
        return [STYLIZED, IMAGENET]

    def split_folder(self, domain: str, split: str) -> Path:
        return self.demo_split_roots[split] / _DEMO_FOLDERS[domain]
