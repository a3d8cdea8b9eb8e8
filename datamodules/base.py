"""The one multi-domain DataModule every dataset builds on.

A dataset is a list of domains, each a folder in `<root>/<Class>/<image>` layout (or an image
list); all domains share one class list. Each domain is split into train/val/test with a seeded,
class-stratified split, or by the dataset's official splits; held-out domains are evaluated
only. Batches are `(uint8 images (B, 3, H, W), labels (B,), domain indices (B,))`, where the
domain index refers to `domain_names`; `on_after_batch_transfer` turns the images into
normalised floats on the device.

A dataset subclass provides:
- `domain_sources()` (required): its domains, in a fixed order;
- `official_splits(domain)` (optional): a domain's official train/val/test files, where the
  dataset has them (DTD's label files, Stylized-ImageNet's train/ and val/ folders);
- `list_files()` (optional, extend with `super().list_files()`): the image lists it reads, so
  the data check reads them as training does;
- `generate_root()` (optional): for generated data (the demos), make the data and return its
  folder; called on first use when `root` is null.

Constructing a DataModule validates its settings and reads nothing from disk. The domains are
scanned on first use (the CLI's link of `class_names`, `domain_names` and `num_classes` to the
model, or `setup`), once per process. What there is (domains, classes, splits, datasets) comes
from the DataModule's sample source (`datamodules/data/sources/`): the file tree, or LitData
shards with `shards`; the DataModule keeps the settings and Lightning's hooks.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from functools import cached_property
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from datamodules.data.cue_conflict import CueConflictStimuli
from datamodules.data.dataset import BAD_IMAGE_POLICIES, read_bad_images
from datamodules.data.extra_domains import ExtraDomain
from datamodules.data.image_lists import ImageListFile
from datamodules.data.index import indexed_domain
from datamodules.data.layout import DatasetLayoutError, DomainData, DomainSource, Sample
from datamodules.data.loaders import (
    default_num_workers,
    evaluation_loaders,
    in_order_loader,
    split_loader,
    training_loaders,
)
from datamodules.data.samples import SampleArray
from datamodules.data.sources import SampleSource, source_for
from datamodules.data.splitting import (
    SPLITS,
    TARGET_TRAIN_SPLIT,
    TRAINING_SPLITS,
    UNLABELLED,
    LabelledFiles,
)
from datamodules.data.style_shift import StyleShiftConfig, create_style_shift, style_shifted_sets
from datamodules.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    normalize_batches,
    split_transform,
)
from datamodules.demo import ensure_cue_conflict_demo

__all__ = [
    "SPLITS",
    "TARGET_TRAIN_SPLIT",
    "UNLABELLED",
    "DatasetLayoutError",
    "DomainData",
    "DomainSource",
    "MultiDomainDataModule",
    "Sample",
]


#: `data.eval_order` choices (see `MultiDomainDataModule`).
EVAL_ORDERS = ("listed", "shuffled")


class MultiDomainDataModule(CueConflictStimuli, pl.LightningDataModule):
    """Base DataModule: domains -> seeded or official splits -> datasets -> loaders."""

    #: Name of the dataset: the MLflow experiment and the `dataset` tag.
    dataset_name = "multidomain"
    #: Per-channel mean and std (of [0, 1] RGB) that `on_after_batch_transfer` normalises
    #: with: ImageNet's, which torchvision's weights expect; a dataset trained from scratch
    #: on its own statistics (CIFAR) sets its own.
    normalization_mean: tuple[float, float, float] = IMAGENET_MEAN
    normalization_std: tuple[float, float, float] = IMAGENET_STD
    #: Whether the samples' images are rows of an in-memory array (CIFAR) rather than files:
    #: the data check then has no files to decode or hash (`sample.path` names the source).
    images_in_memory = False
    #: Generates the cue-conflict demo set (`cue_conflict_set` without a folder).
    cue_conflict_demo = staticmethod(ensure_cue_conflict_demo)

    def __init__(
        self,
        root: str,
        held_out_domains: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        image_size: int = 224,
        resize_size: int | None = None,
        augmentation: AugmentationConfig | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        eval_order: str = "listed",
        num_workers: int | None = None,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        decode_at_reduced_size: bool = True,
        domain_proportions: dict[str, float] | None = None,
        batch_size_per_domain: int | None = None,
        on_bad_image: str = "error",
        check_data: bool = False,
        style_shift: StyleShiftConfig | None = None,
        target_domains: list[str] | None = None,
        extra_domains: list[ExtraDomain] | None = None,
        index_dir: str | None = None,
        shards: str | None = None,
    ) -> None:
        """Validate the settings (nothing is read from disk yet).

        Args:
            root: the dataset's root folder.
            held_out_domains: domains that are only evaluated (leave-one-domain-out): they get
                no classifier head and none of their images is trained on; their whole data is
                the validation and test set.
            val_fraction: fraction of each trained domain's images (per class) for validation.
            test_fraction: fraction for the test split; 0 means `test` evaluates the validation
                split (Office-Home has no official test split).
            split_seed: seed of the per-domain split (independent of the training seed).
            image_size: side of the square training and evaluation crops.
            resize_size: shorter side before the evaluation centre crop (default 256/224 of
                `image_size`).
            augmentation: training augmentation settings.
            batch_size: training batch size (per process).
            eval_batch_size: validation/test batch size (default: `batch_size`).
            eval_order: order of the validation and test images: `listed` (each domain's
                images class by class) or `shuffled` (each domain's images in an order seeded by
                `split_seed`, as DomainBed evaluates). Accuracy does not depend on it; methods
                whose predictions depend on the batch (ARM's context) do.
            num_workers: DataLoader worker processes (default: the usable cores shared among
                the machine's GPUs, one left per process, at most 8: `default_num_workers`).
            persistent_workers: keep workers between epochs (only with `num_workers > 0`).
            pin_memory: page-locked host memory for faster copies to the GPU (only when CUDA is
                available; ignored on the CPU).
            decode_at_reduced_size: decode JPEGs at the smallest libjpeg scale that still
                covers the crop, instead of at full size.
            domain_proportions: draw every training batch from the trained domains in these
                proportions (e.g. `{Art: 1, Clipart: 1, Product: 1, Real World: 1}` for equal
                shares); null samples uniformly over all training images. Works across DDP
                ranks: each rank gets a disjoint part of each epoch.
            batch_size_per_domain: exactly this many images of every trained domain in each
                training batch (DomainBed's per-domain minibatches, whichever domains are held
                out): the training batch is this times the number of trained domains, per
                process, and `batch_size` then only sets the evaluation batch (unless
                `eval_batch_size` does); null: `batch_size` and `domain_proportions` decide.
            on_bad_image: what an image that cannot be used (any `BadImageError`: empty,
                truncated, undecodable, decompression bomb, non-UTF-8 name, symlink loop, or a
                missing listed file) does in every stage: `error` stops the run naming the
                file; `skip` drops it from its batch, and the counts (`data/bad_images`,
                `data/bad_images/<split>`) and list (`bad_images.txt`) go to MLflow.
            check_data: run the data check (`python -m experiments.check_data`) before
                training; errors stop the run before the first step.
            style_shift: evaluate a style-shifted copy of the validation and test sets (each
                image rendered in the style of another domain) as a second DataLoader, for the
                `style_acc` and `style_robustness` metrics; default: off.
            target_domains: unlabelled adaptation targets (e.g. `[Clipart]` for Art to
                Clipart): no head, their training images are drawn beside the labelled ones
                without labels (for `model.adaptation`), and they are evaluated with labels like
                held-out domains. Model selection stays on the trained domains.
            extra_domains: domains added by configuration, each `name` plus `root`
                (ImageFolder layout) or `image_list` (`path label` lines), an optional
                `class_mapping` and a `role` (`train`, `held_out`, `target`); see
                `datamodules/data/extra_domains.py` and the README's "New domains".
            index_dir: where the file index of each scanned folder is kept (default:
                `$STYLEBENCH_DATA_DIR/index` or `~/.cache/stylebench/index`); each folder is
                scanned once per machine and the index memory-mapped by every process.
            shards: a folder or object-store URI (`s3://...`) of LitData shards written by
                `python -m experiments.make_shards` from this same configuration: the images
                are then streamed from the shards instead of read from `root`.
        """
        super().__init__()
        if (
            not 0 <= val_fraction < 1
            or not 0 <= test_fraction < 1
            or val_fraction + test_fraction >= 1
        ):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                "and leave images for training (their sum must be below 1)"
            )
        if image_size < 16:
            raise ValueError(f"image_size={image_size} is too small; use at least 16 pixels")
        if batch_size_per_domain is not None:
            if batch_size_per_domain < 1:
                raise ValueError(
                    f"data.batch_size_per_domain={batch_size_per_domain} must be at least 1"
                )
            if domain_proportions:
                raise ValueError(
                    "data.batch_size_per_domain draws equal shares of the trained domains: set "
                    "data.domain_proportions or batch_size_per_domain to null"
                )
        if eval_order not in EVAL_ORDERS:
            raise ValueError(f"data.eval_order={eval_order!r}; valid choices: {list(EVAL_ORDERS)}")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(
                f"data.on_bad_image={on_bad_image!r}; valid choices: {list(BAD_IMAGE_POLICIES)}"
            )
        self._root = root
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.image_size = image_size
        self.resize_size = resize_size or round(image_size * 256 / 224)
        self.augmentation = augmentation or AugmentationConfig()
        self._batch_size = batch_size
        self.batch_size_per_domain = batch_size_per_domain
        self.eval_batch_size = eval_batch_size or batch_size
        self.eval_order = eval_order
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.pin_memory = pin_memory
        self.decode_at_reduced_size = decode_at_reduced_size
        self.domain_proportions = domain_proportions
        self.on_bad_image = on_bad_image
        self.check_data = check_data
        self.bad_image_dir: str | None = None
        self.style_shift = style_shift or StyleShiftConfig()
        # Built now so that a bad setting (missing AdaIN weights) stops the run before
        # training instead of at the first validation.
        self.style_shift_fn = (
            create_style_shift(self.style_shift) if self.style_shift.enabled else None
        )
        self.extra_domains = list(extra_domains or [])
        roles = {
            role: [d.name for d in self.extra_domains if d.role == role]
            for role in ("held_out", "target")
        }
        self.held_out_domains = list(held_out_domains or []) + roles["held_out"]
        self.target_domains = list(target_domains or []) + roles["target"]
        self.index_dir = index_dir
        #: Scan the folders again even where their index is fresh (`check_data --rescan`).
        self.rescan_index = False
        self.shards = shards
        #: Where the samples come from: the file tree, or the shards (`shards`).
        self.source: SampleSource = source_for(self)

    # ----- what subclasses provide -------------------------------------------------------------
    @property
    def root(self) -> str:
        """The dataset's root folder (generated on first use for data made by the project)."""
        if self._root is None:
            self._root = str(self.generate_root())
        return self._root

    def generate_root(self) -> str | Path:
        """Generate the data and return its folder; only generated datasets implement this."""
        raise ValueError(f"{type(self).__name__} needs data.init_args.root (the dataset's folder)")

    def domain_sources(self) -> list[DomainSource]:
        """The dataset's domains, in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must implement domain_sources()")

    def official_splits(self, domain: DomainData) -> dict[str, LabelledFiles] | None:
        """A domain's official splits, `{"train"|"val"|"test": [(path, label), ...]}` (labels
        index `class_names`; or rows of the file index, `datamodules.data.samples.labelled_rows`),
        or None to split it by `val_fraction` and `test_fraction`.

        Called once per dataset domain (extra domains are always split by the fractions). A
        held-out domain is evaluated on its official `val` and `test`; its `train` is unused.
        """
        return None

    def list_files(self) -> list[ImageListFile]:
        """The image-list files this DataModule reads, for the data check; subclasses that
        read more lists extend this list."""
        return [listed for d in self.extra_domains if (listed := d.list_file()) is not None]

    # ----- what there is (read on first use, from the source) -----------------------------------
    def scan_domain(self, source: DomainSource) -> DomainData:
        """A `<root>/<Class>/<image>` folder's files, from its file index (scanned once per
        machine; rescanned when a class folder changed or `rescan_index` is set)."""
        index_dir = Path(self.index_dir).expanduser() if self.index_dir else None
        return indexed_domain(source, index_dir, rescan=self.rescan_index)

    def rescan(self) -> None:
        """Scan the folders again on next use, replacing their index even where it looks
        fresh (`python -m experiments.check_data --rescan`)."""
        self.rescan_index = True
        for name in ("domains", "class_names", "split_samples"):
            self.__dict__.pop(name, None)

    @cached_property
    def domains(self) -> list[DomainData]:
        """Every domain's class folders and files: the dataset's own, then the extra ones
        (`DataProblemsError` listing every problem the scan finds)."""
        return self.source.domains()

    @property
    def domain_names(self) -> list[str]:
        return self.source.domain_names()

    @cached_property
    def class_names(self) -> list[str]:
        return self.source.class_names()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def trained_domains(self) -> list[str]:
        """Domains with labelled training data (and so a classifier head)."""
        evaluated_only = set(self.held_out_domains) | set(self.target_domains)
        return [name for name in self.domain_names if name not in evaluated_only]

    @property
    def batch_size(self) -> int:
        """The training batch per process: `batch_size_per_domain` x the trained domains when
        that is set, else `batch_size`."""
        if self.batch_size_per_domain is None:
            return self._batch_size
        return self.batch_size_per_domain * len(self.trained_domains)

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        # A batch size set from outside (Lightning's batch-size finder) is the whole batch.
        self._batch_size = value
        self.batch_size_per_domain = None

    @property
    def training_domain_proportions(self) -> dict[str, float] | None:
        """The trained domains' shares of every training batch (by name), or None to sample
        uniformly over the training images: `domain_proportions`, or equal shares with
        `batch_size_per_domain`."""
        if self.batch_size_per_domain is not None:
            return dict.fromkeys(self.trained_domains, 1.0)
        return self.domain_proportions

    @property
    def protocol(self) -> str:
        if self.target_domains:
            trained = "+".join(self.trained_domains)
            return f"{trained}_to_" + "+".join(self.target_domains)
        if self.held_out_domains:
            return "leave_out_" + "+".join(self.held_out_domains)
        return "multi_domain"

    @cached_property
    def split_samples(self) -> dict[str, SampleArray]:
        """Every split's samples, over all domains (and `train_target` with target domains).

        Each split is a `SampleArray` (integer arrays over the domains' path tables), not a list
        of `Sample` objects: constant memory per sample, shared by forked workers.
        """
        return self.source.split_samples()

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Images per split and domain, e.g. for a summary table."""
        counts: dict[str, dict[str, int]] = {}
        for split, samples in self.split_samples.items():
            per_domain = Counter(self.domain_names[i] for i in samples.domain_indices.tolist())
            counts[split] = {name: per_domain.get(name, 0) for name in self.domain_names}
        return counts

    # ----- datasets and loaders -----------------------------------------------------------------
    def make_dataset(self, split: str, augment: bool | None = None) -> Dataset:
        """The split's Dataset; `augment` (default: for the training splits) picks the training
        transform over the evaluation one."""
        transform, min_side = split_transform(
            split in TRAINING_SPLITS if augment is None else augment,
            self.image_size,
            self.resize_size,
            self.augmentation,
        )
        return self.source.dataset(
            split, transform, min_side if self.decode_at_reduced_size else None
        )

    def bad_images(self, split: str | None = None) -> list[str]:
        """Images skipped so far under `on_bad_image: skip` (from every worker process), in
        `split` or in any split."""
        per_split = self.bad_image_dir is not None and split is not None
        return read_bad_images(f"{self.bad_image_dir}/{split}" if per_split else self.bad_image_dir)

    def prepare_data(self) -> None:
        # Once per node, before setup: the source builds what the other ranks then read.
        self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.on_bad_image == "skip" and self.bad_image_dir is None:
            self.bad_image_dir = tempfile.mkdtemp(prefix="stylebench-bad-images-")
        self.datasets = {split: self.make_dataset(split) for split in SPLITS}
        if self.split_samples.get(TARGET_TRAIN_SPLIT):
            self.datasets[TARGET_TRAIN_SPLIT] = self.make_dataset(TARGET_TRAIN_SPLIT)
        if self.style_shift_fn is not None:
            self.datasets |= style_shifted_sets(
                self.datasets, self.style_shift, self.style_shift_fn, self.source.style_shifted
            )

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """uint8 images -> normalised floats, once per batch on the device (not per image in
        the workers); labels and domain indices pass through."""
        return normalize_batches(batch, self.normalization_mean, self.normalization_std)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the data (with `shards`: the training streams' positions,
        so a resumed run continues the epoch where it stopped)."""
        return self.source.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.source.load_state_dict(state_dict)

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The labelled training loader; with target domains, a CombinedLoader of
        `{"source": labelled batch, "target": unlabelled batch}` that cycles the shorter one."""
        return training_loaders(self)

    def val_dataloader(self) -> DataLoader | list:
        """The validation loader; with `style_shift`, [plain, style-shifted]."""
        return evaluation_loaders(self, "val")

    def test_dataloader(self) -> DataLoader | list:
        """The test loader; with `style_shift`, [plain, style-shifted]."""
        return evaluation_loaders(self, "test")

    def predict_dataloader(self) -> DataLoader:
        return split_loader(self, "test", shuffle=False)

    def evaluation_dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Any split's images in order with the evaluation transform (no augmentation, no
        style shift): what analysis tools read, e.g. the training split for gate statistics."""
        return in_order_loader(self, split, batch_size)
