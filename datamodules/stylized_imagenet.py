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

from pathlib import Path
from typing import Literal

from datamodules.base import (
    DatasetLayoutError,
    DomainSource,
    MultiDomainDataModule,
    Sample,
    scan_class_folders,
)
from datamodules.demo_data import ensure_officehome_demo

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
        if imagenet_root is None and train_on != "sin":
            raise ValueError(f"train_on={train_on!r} needs data.init_args.imagenet_root")
        self.imagenet_root = imagenet_root
        self.train_on = train_on
        # The CLI passes test_fraction at its default (0) since the base signature has it.
        ignored = [k for k in ("val_fraction", "held_out_domains") if k in kwargs]
        ignored += ["test_fraction"] if kwargs.pop("test_fraction", 0.0) else []
        if ignored:
            raise ValueError(
                f"{ignored} do not apply to Stylized-ImageNet: the official train/ and val/ "
                "folders are the splits and train_on decides which domains are trained"
            )
        present = [STYLIZED] + ([IMAGENET] if imagenet_root is not None else [])
        held_out = [d for d in present if d not in TRAIN_ON_DOMAINS[train_on]]
        super().__init__(root=root, held_out_domains=held_out, val_fraction=0.0, **kwargs)

    @property
    def protocol(self) -> str:
        return f"train_{self.train_on}"

    def domain_roots(self) -> dict[str, Path]:
        """Each domain's folder holding `train/` and `val/`."""
        roots = {STYLIZED: Path(self.root).expanduser()}
        if self.imagenet_root is not None:
            roots[IMAGENET] = Path(self.imagenet_root).expanduser()
        return roots

    def split_folder(self, domain: str, split: str) -> Path:
        """The `<Class>/<image>` folder of one domain's split (`train` or `val`)."""
        folder = self.domain_roots()[domain] / split
        if not folder.is_dir():
            raise DatasetLayoutError(f"{domain}: folder {folder} does not exist. {SIN_HELP}")
        return folder

    def domain_sources(self) -> list[DomainSource]:
        # Every domain is evaluated, so its val/ folder defines the shared class list.
        return [
            DomainSource(name, str(self.split_folder(name, "val"))) for name in self.domain_roots()
        ]

    def _build_splits(self) -> None:
        """Official splits: train from each trained domain's `train/`, val and test from `val/`."""
        self.split_samples = {"train": [], "val": [], "test": []}
        for domain_index, domain in enumerate(self.domains):
            evaluation = [
                Sample(path, label, domain_index)
                for label, name in enumerate(self.class_names)
                for path in domain.files_by_class[name]
            ]
            self.split_samples["val"] += evaluation
            self.split_samples["test"] += evaluation
            if domain.name in self.held_out_domains:
                continue
            train = scan_class_folders(
                DomainSource(domain.name, str(self.split_folder(domain.name, "train")))
            )
            if sorted(train.files_by_class) != self.class_names:
                raise DatasetLayoutError(
                    f"{domain.name}: the class folders of {train.root} differ from those of "
                    f"{domain.root}; train/ and val/ must hold the same classes"
                )
            self.split_samples["train"] += [
                Sample(path, label, domain_index)
                for label, name in enumerate(self.class_names)
                for path in train.files_by_class[name]
            ]


class StylizedImageNetDemoDataModule(StylizedImageNetDataModule):
    """Stand-in for SIN/IN from the generated demo data: the demo's shape classes drawn in the
    painterly `Art` style play `stylized` and the photo-like `Real World` style plays `imagenet`.

    The demo is generated twice with different seeds, once as `train/` and once as `val/`, so
    the layout and the official-split code path are those of the real dataset.
    """

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
        settings = {
            "num_classes": demo_classes,
            "image_size": demo_image_size,
            "domains": tuple(_DEMO_FOLDERS.values()),
        }
        self.demo_split_roots = {
            "train": ensure_officehome_demo(
                cache_dir, images_per_class=images_per_class, seed=demo_seed, **settings
            ),
            "val": ensure_officehome_demo(
                cache_dir, images_per_class=val_images_per_class, seed=demo_seed + 1, **settings
            ),
        }
        super().__init__(
            root=str(self.demo_split_roots["train"]),
            imagenet_root=str(self.demo_split_roots["train"]),
            train_on=train_on,
            **kwargs,
        )

    def split_folder(self, domain: str, split: str) -> Path:
        return self.demo_split_roots[split] / _DEMO_FOLDERS[domain]
