"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
tech. report, 2009): 32x32 colour images, 50,000 for training and 10,000 for testing.

Reads the official python archives as extracted (`cifar-10-batches-py/data_batch_1..5`,
`test_batch`, `batches.meta`; `cifar-100-python/train`, `test`, `meta`, with fine or coarse
labels). Each file is a pickle of a dict (`data`: uint8 (N, 3072) rows of 1024 red, 1024 green
and 1024 blue values in row-major order; `labels` or `fine_labels`/`coarse_labels`); it is
unpickled with an unpickler that builds numpy arrays and nothing else, then checked. All images
are kept in memory as one uint8 (N, 32, 32, 3) tensor: no per-image files, no decoding per
sample.

The official train/test split is used, with a seeded, class-stratified validation hold-out from
the training images (5,000 by default, the 45k/5k split of He et al., "Deep Residual Learning
for Image Recognition", CVPR 2016, arXiv:1512.03385), or none (`val_images: 0`: validation then
evaluates the test set, so report the last epoch). Training augmentation is theirs: 4-pixel zero
padding, a random 32x32 crop and a horizontal flip; images are normalised with the per-channel
CIFAR mean and std. One domain (`cifar10` / `cifar100`) of the multi-domain machinery, so the
metrics (`val/acc/cifar10`, `val/acc_mean`), style-shifted evaluation (with
`style_shift.style_folder`) and the comparison report work unchanged.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from datamodules.base import SPLITS, MultiDomainDataModule
from datamodules.data.cifar_archive import (
    CIFAR_IMAGE_SIZE,
    CIFARArchive,
    CIFARFormatError,
    load_archive,
)
from datamodules.data.dataset import InMemoryImageDataset
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource
from datamodules.data.samples import LabelledRows, SampleArray
from datamodules.data.splitting import stratified_split
from datamodules.data.style_shift import StyleShiftConfig
from datamodules.data.transforms import AugmentationConfig, split_transform
from datamodules.demo.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_TRAIN_BATCHES,
    CIFAR100_FOLDER,
    ensure_cifar10_demo,
    ensure_cifar100_demo,
)
from datamodules.generated import GeneratedData

#: Per-channel statistics of the training images (of [0, 1] RGB).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR100_LABELS = ("fine", "coarse")


def cifar_augmentation() -> AugmentationConfig:
    """He et al.'s CIFAR augmentation: 4-pixel zero padding, random 32x32 crop, flip."""
    return AugmentationConfig(crop="pad_random", padding=4, horizontal_flip=0.5)


def cifar_help(archive: str, folder: str, demo: str) -> str:
    return (
        f"CIFAR cannot be downloaded here. Get {archive} (the python version) from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the folder holding "
        f"{folder}/ (or {folder}/ itself) as `--data.init_args.root`. To try the pipeline "
        f"without it: python -m experiments.cifar fit --config {demo}"
    )


class CIFARDataModule(MultiDomainDataModule):
    """The CIFAR archives as one in-memory domain; `CIFAR10DataModule`, `CIFAR100DataModule`."""

    images_in_memory = True
    #: The archive's folder name, the `.tar.gz` it comes from and the demo config.
    folder_name = CIFAR10_FOLDER
    archive_name = "cifar-10-python.tar.gz"
    demo_config = "configs/cifar10/demo.yaml"

    def __init__(
        self,
        root: str,
        val_images: int = 5000,
        split_seed: int = 0,
        augmentation: AugmentationConfig | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        style_shift: StyleShiftConfig | None = None,
    ) -> None:
        """CIFAR DataModule.

        Args:
            root: the folder holding the extracted archive folder (`cifar-10-batches-py/` or
                `cifar-100-python/`), or that folder itself.
            val_images: training images held out for validation, stratified by class and seeded
                by `split_seed` (5,000: He et al.'s 45k/5k split); 0 trains on all 50,000 and
                validates on the test set (report the last epoch then, not the best).
            split_seed: seed of the validation hold-out.
            augmentation: training augmentation; default He et al.'s 4-pixel padding, random
                32x32 crop and horizontal flip (`crop: pad_random`, `padding: 4`).
            batch_size: training batch size (per process).
            eval_batch_size: validation/test batch size (default: `batch_size`).
            num_workers: DataLoader worker processes.
            persistent_workers: keep workers between epochs (only with `num_workers > 0`).
            pin_memory: page-locked host memory for faster copies to the GPU.
            style_shift: style-shifted evaluation; one domain, so it needs `style_folder`.
        """
        if val_images < 0:
            raise ValueError(f"val_images={val_images} must be >= 0")
        self.val_images = val_images
        # The images are 32x32 arrays already in memory, so the image settings are fixed
        # here, and domains are not configurable; LightningCLI reads this call and does not
        # offer them.
        super().__init__(
            root=root,
            held_out_domains=None,
            val_fraction=0.0,
            test_fraction=0.0,
            split_seed=split_seed,
            image_size=CIFAR_IMAGE_SIZE,
            resize_size=CIFAR_IMAGE_SIZE,
            augmentation=augmentation or cifar_augmentation(),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            decode_at_reduced_size=False,
            domain_proportions=None,
            on_bad_image="error",
            check_data=False,
            style_shift=style_shift,
            target_domains=None,
            extra_domains=None,
        )

    def read_archive(self, folder: Path) -> CIFARArchive:
        """Read the archive in `folder`; each dataset says which files."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_archive()")

    @property
    def archive_folder(self) -> Path:
        """`<root>/<folder_name>`, or `root` itself when it is that folder."""
        root = Path(self.root).expanduser()
        for candidate in (root / self.folder_name, root):
            if candidate.name == self.folder_name and candidate.is_dir():
                return candidate
        raise DatasetLayoutError(
            f"no {self.folder_name}/ folder at {root}. "
            + cifar_help(self.archive_name, self.folder_name, self.demo_config)
        )

    @cached_property
    def archive(self) -> CIFARArchive:
        folder = self.archive_folder
        try:
            return self.read_archive(folder)
        except CIFARFormatError as error:
            raise CIFARFormatError(
                f"{error}. " + cifar_help(self.archive_name, self.folder_name, self.demo_config)
            ) from error

    def domain_sources(self) -> list[DomainSource]:
        return [DomainSource(name=self.dataset_name, root=str(self.archive_folder))]

    @cached_property
    def domains(self) -> list[DomainData]:
        """The one domain; its "files" are the archive rows (`<file>#<row>`), by class."""
        archive = self.archive
        files_by_class: dict[str, list[str]] = {name: [] for name in archive.class_names}
        for source, label in zip(archive.sources, archive.labels.tolist(), strict=True):
            files_by_class[archive.class_names[label]].append(source)
        return [DomainData(self.dataset_name, self.archive_folder, files_by_class)]

    @cached_property
    def class_names(self) -> list[str]:
        return list(self.archive.class_names)

    @property
    def protocol(self) -> str:
        return f"val{self.val_images}" if self.val_images else "trainval"

    @cached_property
    def split_samples(self) -> dict[str, SampleArray]:
        """Official train (less the hold-out) and test; val is the hold-out, or the test set."""
        archive = self.archive
        labels = archive.labels.tolist()
        train_by_class: dict[str, list[str]] = {name: [] for name in archive.class_names}
        for row in range(archive.num_train):
            train_by_class[archive.class_names[labels[row]]].append(archive.sources[row])
        if self.val_images >= archive.num_train:
            raise ValueError(
                f"val_images={self.val_images} leaves none of the {archive.num_train} "
                "training images to train on"
            )
        fraction = self.val_images / archive.num_train
        train, val, _ = stratified_split(
            train_by_class, archive.class_names, fraction, 0.0, self.split_seed
        )
        test = LabelledRows.from_pairs(
            (archive.sources[r], labels[r]) for r in range(archive.num_train, len(labels))
        )
        chosen = {"train": train, "val": val if self.val_images else test, "test": test}
        return {split: SampleArray.build([(chosen[split], 0)]) for split in SPLITS}

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {source: row for row, source in enumerate(self.archive.sources)}

    def make_dataset(self, split: str, augment: bool | None = None) -> InMemoryImageDataset:
        samples = self.split_samples[split]
        transform, _ = split_transform(
            split == "train" if augment is None else augment,
            self.image_size,
            self.resize_size,
            self.augmentation,
        )
        rows = [self._row_of[samples.path(index)] for index in range(len(samples))]
        return InMemoryImageDataset(self.archive.images, rows, samples, transform)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 10 classes, `cifar-10-batches-py/` (5 training batches of 10,000, 1 test)."""

    dataset_name = "cifar10"
    normalization_mean, normalization_std = CIFAR10_MEAN, CIFAR10_STD

    def read_archive(self, folder: Path) -> CIFARArchive:
        train = [f"data_batch_{i}" for i in range(1, CIFAR10_TRAIN_BATCHES + 1)]
        return load_archive(
            folder, train, ["test_batch"], "batches.meta", "label_names", "labels", 10
        )


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 100 fine classes in 20 coarse ones, `cifar-100-python/` (train, test)."""

    dataset_name = "cifar100"
    normalization_mean, normalization_std = CIFAR100_MEAN, CIFAR100_STD
    folder_name = CIFAR100_FOLDER
    archive_name = "cifar-100-python.tar.gz"
    demo_config = "configs/cifar100/demo.yaml"

    def __init__(self, root: str, labels: str = "fine", **kwargs) -> None:
        """CIFAR-100 DataModule.

        Args:
            root: the folder holding `cifar-100-python/`, or that folder itself.
            labels: "fine" (100 classes) or "coarse" (the 20 superclasses).
            **kwargs: the settings of `CIFARDataModule` (`val_images`, augmentation, loaders).
        """
        if labels not in CIFAR100_LABELS:
            raise ValueError(f"labels={labels!r} must be one of {list(CIFAR100_LABELS)}")
        self.labels = labels
        super().__init__(root=root, **kwargs)

    @property
    def protocol(self) -> str:
        return super().protocol + ("_coarse" if self.labels == "coarse" else "")

    def read_archive(self, folder: Path) -> CIFARArchive:
        count = 100 if self.labels == "fine" else 20
        names, labels = f"{self.labels}_label_names", f"{self.labels}_labels"
        return load_archive(folder, ["train"], ["test"], "meta", names, labels, count)


class CIFAR10DemoDataModule(GeneratedData, CIFAR10DataModule):
    """Generated CIFAR-10-format archives (the demo shapes at 32 px), created on first use.

    Same files and code path as the real dataset.
    """

    demo_generator = staticmethod(ensure_cifar10_demo)

    def __init__(
        self,
        root: str | None = None,
        images_per_class: int = 100,
        test_images_per_class: int = 20,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """CIFAR-10 demo DataModule.

        Args:
            root: where the demo archive is (default: generated into the cache folder).
            images_per_class: training images per class (of the 10).
            test_images_per_class: test images per class.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `CIFAR10DataModule`.
        """
        self.use_generated_data(
            cache_dir,
            images_per_class=images_per_class,
            test_images_per_class=test_images_per_class,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)


class CIFAR100DemoDataModule(GeneratedData, CIFAR100DataModule):
    """Generated CIFAR-100-format archives (100 shape x texture classes), made on first use."""

    demo_generator = staticmethod(ensure_cifar100_demo)

    def __init__(
        self,
        root: str | None = None,
        images_per_class: int = 5,
        test_images_per_class: int = 2,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """CIFAR-100 demo DataModule.

        Args:
            root: where the demo archive is (default: generated into the cache folder).
            images_per_class: training images per fine class (of the 100).
            test_images_per_class: test images per fine class.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `CIFAR100DataModule`.
        """
        self.use_generated_data(
            cache_dir,
            images_per_class=images_per_class,
            test_images_per_class=test_images_per_class,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)
