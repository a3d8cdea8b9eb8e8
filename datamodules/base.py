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
model, or `setup`), once per process.
"""

from __future__ import annotations

import tempfile
import zlib
from collections import Counter
from functools import cached_property
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader

from datamodules.data.checks import IMAGE_PROBLEMS, check_datamodule
from datamodules.data.cue_conflict import CueConflictDataset, CueConflictSet, scan_cue_conflict
from datamodules.data.dataset import (
    BAD_IMAGE_POLICIES,
    ImageSampleDataset,
    collate_skipping_none,
    read_bad_images,
)
from datamodules.data.extra_domains import ExtraDomain, scan_domains
from datamodules.data.image_lists import ImageListFile
from datamodules.data.index import (
    IndexedFiles,
    SampleArray,
    indexed_domain,
    labelled_rows,
    relabelled,
    stratified_split_rows,
)
from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    DomainSource,
    Sample,
    check_domain_roles,
    shared_class_names,
)
from datamodules.data.problems import raise_if_errors
from datamodules.data.samplers import DomainBalancedSampler, UnpaddedDistributedSampler
from datamodules.data.shards import (
    PreparedDataError,
    PreparedImageDataset,
    PreparedStyleShiftedDataset,
    StreamingImageDataset,
    check_matches,
    read_meta,
)
from datamodules.data.shards import split_samples as prepared_split_samples
from datamodules.data.splitting import LabelledFiles, stratified_split
from datamodules.data.style_shift import (
    ScheduledLoader,
    StyleShiftConfig,
    StyleShiftedDataset,
    create_style_shift,
    draw_references,
    style_evaluation_due,
    style_folder_images,
)
from datamodules.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    AugmentationSeeder,
    augmentation_seed,
    eval_transform,
    normalize_batch,
    seed_dataset_transform,
    stream_id,
    train_transform,
)
from datamodules.demo import ensure_cue_conflict_demo

#: Label of adaptation-target training samples (`target_domains`): their labels are not used.
UNLABELLED = -1
#: The split holding the target domains' unlabelled training images.
TARGET_TRAIN_SPLIT = "train_target"
SPLITS = ("train", "val", "test")

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


class MultiDomainDataModule(pl.LightningDataModule):
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
        num_workers: int = 4,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        decode_at_reduced_size: bool = True,
        domain_proportions: dict[str, float] | None = None,
        on_bad_image: str = "error",
        check_data: bool = False,
        style_shift: StyleShiftConfig | None = None,
        target_domains: list[str] | None = None,
        extra_domains: list[ExtraDomain] | None = None,
        index_dir: str | None = None,
        prepared: str | None = None,
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
            num_workers: DataLoader worker processes.
            persistent_workers: keep workers between epochs (only with `num_workers > 0`).
            pin_memory: page-locked host memory for faster copies to the GPU.
            decode_at_reduced_size: decode JPEGs at the smallest libjpeg scale that still
                covers the crop, instead of at full size.
            domain_proportions: draw every training batch from the trained domains in these
                proportions (e.g. `{Art: 1, Clipart: 1, Product: 1, Real World: 1}` for equal
                shares); null samples uniformly over all training images. Works across DDP
                ranks: each rank gets a disjoint part of each epoch.
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
            prepared: a folder or object-store URI (`s3://...`) of prepared LitData shards
                written by `python -m experiments.prepare` from this same configuration: the
                images are then streamed from the shards instead of read from `root`.
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
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers and num_workers > 0
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
        self.prepared = prepared
        if prepared is not None and domain_proportions:
            raise ValueError(
                "data.domain_proportions does not apply to data.prepared (the shards are "
                "streamed in LitData's shuffled order); set one of them to null"
            )
        # LitData's stream positions, restored from a checkpoint before the loaders are built.
        self._stream_state: dict = {}
        self._stream_loaders: dict = {}

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
        index `class_names`), or None to split it by `val_fraction` and `test_fraction`.

        Called once per dataset domain (extra domains are always split by the fractions). A
        held-out domain is evaluated on its official `val` and `test`; its `train` is unused.
        """
        return None

    def list_files(self) -> list[ImageListFile]:
        """The image-list files this DataModule reads, for the data check; subclasses that
        read more lists extend this list."""
        return [listed for d in self.extra_domains if (listed := d.list_file()) is not None]

    # ----- what is on disk (scanned once, on first use) -----------------------------------------
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
    def prepared_meta(self) -> dict:
        """What `data.prepared` holds (classes, domains, splits), checked against this config."""
        meta = read_meta(self.prepared)
        check_matches(meta, self, self.prepared)
        return meta

    @cached_property
    def domains(self) -> list[DomainData]:
        """Every domain's class folders and files: the dataset's own, then the extra ones.

        Every problem the scan finds is collected and raised at once (`DataProblemsError`, a
        `DatasetLayoutError`, listing them all); extra domains are read against the dataset's
        own classes (integer labels of image lists index them; class_mapping renames onto them).
        """
        if self.prepared is not None:
            raise PreparedDataError(
                f"data.prepared={self.prepared!r}: the images are in the prepared shards, so "
                "there are no folders to scan; check the source with data.prepared unset"
            )
        sources = self.domain_sources()
        domains, findings = scan_domains(sources, self.extra_domains, scan=self.scan_domain)
        raise_if_errors(findings, domains, source=self)
        self._dataset_domain_count = len(sources)
        check_domain_roles([d.name for d in domains], self.held_out_domains, self.target_domains)
        return domains

    @property
    def domain_names(self) -> list[str]:
        if self.prepared is not None:
            return list(self.prepared_meta["domain_names"])
        return [domain.name for domain in self.domains]

    @cached_property
    def class_names(self) -> list[str]:
        if self.prepared is not None:
            return list(self.prepared_meta["class_names"])
        return shared_class_names(self.domains)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def trained_domains(self) -> list[str]:
        """Domains with labelled training data (and so a classifier head)."""
        evaluated_only = set(self.held_out_domains) | set(self.target_domains)
        return [name for name in self.domain_names if name not in evaluated_only]

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
        if self.prepared is not None:
            return {
                split: prepared_split_samples(self.prepared, split)
                for split in self.prepared_meta["splits"]
            }
        class_names = self.class_names
        splits: dict[str, list] = {split: [] for split in SPLITS}
        if self.target_domains:
            splits[TARGET_TRAIN_SPLIT] = []
        for domain_index, domain in enumerate(self.domains):
            held_out = domain.name in self.held_out_domains
            official = (
                self.official_splits(domain) if domain_index < self._dataset_domain_count else None
            )
            if official is not None:
                train, val, test = official["train"], official["val"], official["test"]
                if held_out:
                    train = []
            elif held_out:
                everything = labelled_rows(domain.files_by_class, class_names)
                train, val, test = [], everything, everything
            else:
                # A per-domain seed keeps a domain's split unchanged when other domains are added.
                seed = self.split_seed + zlib.crc32(domain.name.encode())
                split = (
                    stratified_split_rows
                    if isinstance(domain.files_by_class, IndexedFiles)
                    else stratified_split
                )
                train, val, test = split(
                    domain.files_by_class, class_names, self.val_fraction, self.test_fraction, seed
                )
            if domain.name in self.target_domains:
                # Unlabelled by construction: the label never leaves the DataModule, so no
                # model code can train on it by mistake.
                splits[TARGET_TRAIN_SPLIT].append((relabelled(train, UNLABELLED), domain_index))
                train = []
            for split, pairs in (("train", train), ("val", val), ("test", test or val)):
                splits[split].append((pairs, domain_index))
        return {split: SampleArray.build(parts) for split, parts in splits.items()}

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Images per split and domain, e.g. for a summary table."""
        counts: dict[str, dict[str, int]] = {}
        for split, samples in self.split_samples.items():
            indices = (
                samples.domain_indices.tolist()
                if isinstance(samples, SampleArray)
                else [s.domain_index for s in samples]
            )
            per_domain = Counter(self.domain_names[i] for i in indices)
            counts[split] = {name: per_domain.get(name, 0) for name in self.domain_names}
        return counts

    # ----- datasets and loaders -----------------------------------------------------------------
    def make_dataset(self, split: str, augment: bool | None = None) -> ImageSampleDataset:
        """The split's Dataset; `augment` (default: for the training splits) picks the training
        transform over the evaluation one."""
        if augment is None:
            augment = split in ("train", TARGET_TRAIN_SPLIT)
        if augment:
            transform = train_transform(self.image_size, self.augmentation)
            min_side = self.image_size
        else:
            transform = eval_transform(self.image_size, self.resize_size)
            min_side = self.resize_size
        if self.prepared is not None:
            return PreparedImageDataset(
                self.prepared,
                split,
                transform,
                min_decode_side=min_side if self.decode_at_reduced_size else None,
                samples=self.split_samples[split],
            )
        return ImageSampleDataset(
            self.split_samples[split],
            transform,
            min_decode_side=min_side if self.decode_at_reduced_size else None,
            on_bad_image=self.on_bad_image,
            # One folder per split, so that each stage's skipped images can be counted.
            bad_image_dir=None if self.bad_image_dir is None else f"{self.bad_image_dir}/{split}",
        )

    def bad_images(self, split: str | None = None) -> list[str]:
        """Images skipped so far under `on_bad_image: skip` (from every worker process), in
        `split` or in any split."""
        if self.bad_image_dir is None:
            return []
        return read_bad_images(
            self.bad_image_dir if split is None else f"{self.bad_image_dir}/{split}"
        )

    def prepare_data(self) -> None:
        # prepare_data runs once per node, before setup: the place to build the file index
        # (the other ranks then read it) and for a check that reads every file once.
        if self.prepared is not None:
            _ = self.prepared_meta
            return
        _ = self.split_samples
        if not self.check_data:
            return
        report = check_datamodule(self)
        errors = report.errors
        if self.on_bad_image == "skip":
            # Unreadable images are what `skip` is for; layout and leakage errors still stop.
            errors = [f for f in errors if f.kind not in IMAGE_PROBLEMS]
        if errors:
            raise DatasetLayoutError(
                "the data check found errors (data.check_data: true):\n" + report.format()
            )

    def setup(self, stage: str | None = None) -> None:
        if self.on_bad_image == "skip" and self.bad_image_dir is None:
            self.bad_image_dir = tempfile.mkdtemp(prefix="stylebench-bad-images-")
        self.datasets = {split: self.make_dataset(split) for split in SPLITS}
        if self.split_samples.get(TARGET_TRAIN_SPLIT):
            self.datasets[TARGET_TRAIN_SPLIT] = self.make_dataset(TARGET_TRAIN_SPLIT)
        if self.style_shift_fn is not None:
            style_images = (
                style_folder_images(self.style_shift.style_folder)
                if self.style_shift.style_folder
                else None
            )
            shifted = StyleShiftedDataset if self.prepared is None else PreparedStyleShiftedDataset
            for split in ("val", "test"):
                plain = self.datasets[split]
                references = draw_references(plain.samples, self.style_shift.seed, style_images)
                self.datasets[f"{split}_style"] = shifted(plain, references, self.style_shift_fn)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """uint8 images -> normalised floats, once per batch on the device (not per image in
        the workers); labels and domain indices pass through."""
        if batch is None:  # every sample skipped (data.on_bad_image: skip)
            return None
        if isinstance(batch, dict):  # {"source": ..., "target": ...} with target_domains
            return {
                key: self.on_after_batch_transfer(part, dataloader_idx)
                for key, part in batch.items()
            }
        images, *rest = batch
        if images.dtype == torch.uint8:
            images = normalize_batch(images, self.normalization_mean, self.normalization_std)
        return (images, *rest)

    def _sampler(self, split: str):
        """The split's sampler, or None to let the DataLoader (and Lightning, under DDP) decide."""
        dataset = self.datasets[split]
        if split == "train" and self.domain_proportions:
            known = {name: index for index, name in enumerate(self.domain_names)}
            proportions = {}
            for name, weight in self.domain_proportions.items():
                if name not in self.trained_domains:
                    raise ValueError(
                        f"data.domain_proportions names {name!r}, which is not a trained domain; "
                        f"valid choices: {self.trained_domains}"
                    )
                proportions[known[name]] = float(weight)
            samples = dataset.samples
            return DomainBalancedSampler(
                samples.domain_indices
                if isinstance(samples, SampleArray)
                else [sample.domain_index for sample in samples],
                batch_size=self.batch_size,
                proportions=proportions,
                seed=self.split_seed,
            )
        if (
            split != "train"
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            # Lightning's default pads the last batch with repeated samples, which per-domain
            # accuracy would count twice.
            return UnpaddedDistributedSampler(dataset)
        return None

    def _stream_loader(self, split: str):
        """A training split of `data.prepared`, streamed: LitData shuffles, shards across DDP
        ranks, nodes and workers, and keeps the stream position for resuming."""
        from litdata import StreamingDataLoader

        dataset = StreamingImageDataset(
            f"{self.prepared.rstrip('/')}/{split}",
            train_transform(self.image_size, self.augmentation),
            min_decode_side=self.image_size if self.decode_at_reduced_size else None,
            shuffle=True,
            drop_last=True,
            seed=self.split_seed,
        )
        loader = StreamingDataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=True,
        )
        if split in self._stream_state:
            loader.load_state_dict(self._stream_state[split])
        self._stream_loaders[split] = loader
        return loader

    def state_dict(self) -> dict:
        """With `data.prepared`: the training streams' positions (saved in checkpoints, so a
        resumed run continues the epoch where it stopped instead of starting it again)."""
        if not self._stream_loaders:
            return {}  # nothing to save: Lightning then stores no DataModule state
        return {
            "prepared_streams": {
                split: loader.state_dict() for split, loader in self._stream_loaders.items()
            }
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._stream_state = dict(state_dict.get("prepared_streams", {}))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.prepared is not None and split in ("train", TARGET_TRAIN_SPLIT):
            return self._stream_loader(split)
        sampler = self._sampler(split)
        # Augmentation draws from albumentations' own generators: seeded from the run seed, the
        # rank and the split here, and per worker (and epoch) in the workers.
        rank = self.trainer.global_rank if self.trainer is not None else 0
        stream = stream_id(split)
        seed_dataset_transform(
            self.datasets[split], augmentation_seed(torch.initial_seed(), rank, stream)
        )
        return DataLoader(
            self.datasets[split],
            worker_init_fn=AugmentationSeeder(rank, stream) if self.num_workers > 0 else None,
            batch_size=self.batch_size
            if split in ("train", TARGET_TRAIN_SPLIT)
            else self.eval_batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            # Only `skip` can produce None samples; otherwise keep the default collate.
            collate_fn=collate_skipping_none if self.on_bad_image == "skip" else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def evaluation_dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Any split's images in order with the evaluation transform (no augmentation, no
        style shift): what analysis tools read, e.g. the training split for gate statistics."""
        if not self.split_samples.get(split):
            raise ValueError(
                f"split {split!r} has no images; valid choices: "
                f"{sorted(name for name, samples in self.split_samples.items() if samples)}"
            )
        return DataLoader(
            self.make_dataset(split, augment=False),
            batch_size=batch_size or self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_skipping_none if self.on_bad_image == "skip" else None,
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """The labelled training loader; with target domains, a CombinedLoader of
        `{"source": labelled batch, "target": unlabelled batch}` that cycles the shorter one."""
        source = self._loader("train", shuffle=True)
        if TARGET_TRAIN_SPLIT not in self.datasets:
            return source
        target = self._loader(TARGET_TRAIN_SPLIT, shuffle=True)
        return CombinedLoader({"source": source, "target": target}, mode="max_size_cycle")

    def _evaluation_loaders(self, split: str) -> DataLoader | list:
        """The split's loader; with `style_shift`, [plain, style-shifted] (dataloader_idx 0, 1)."""
        loader = self._loader(split, shuffle=False)
        if self.style_shift_fn is None:
            return loader
        shifted = self._loader(f"{split}_style", shuffle=False)
        if split == "val":
            every_n = self.style_shift.every_n_epochs
            shifted = ScheduledLoader(shifted, lambda: style_evaluation_due(self.trainer, every_n))
        return [loader, shifted]

    def val_dataloader(self) -> DataLoader | list:
        return self._evaluation_loaders("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._evaluation_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ----- stimuli for evaluations beyond the splits --------------------------------------------
    def cue_conflict_set(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        demo_classes: int = 6,
        demo_images_per_pair: int = 4,
        demo_image_size: int = 96,
    ) -> CueConflictSet:
        """Cue-conflict stimuli (for shape bias) through this DataModule's evaluation transform.

        Args:
            root: cue-conflict folder (`<root>/<shape>/<shape><i>-<texture><j>.png`); null
                generates the demo set (the demo's shape classes, each drawn with every other
                class's texture) into the cache.
            cache_dir: demo set only: cache folder.
            demo_classes: demo set only: number of shape classes.
            demo_images_per_pair: demo set only: images per (shape, texture) pair.
            demo_image_size: demo set only: side of the generated images.
        """
        if root is None:
            folder = ensure_cue_conflict_demo(
                cache_dir,
                num_classes=demo_classes,
                images_per_pair=demo_images_per_pair,
                image_size=demo_image_size,
            )
        else:
            folder = Path(root).expanduser()
        categories, images = scan_cue_conflict(folder)
        dataset = CueConflictDataset(
            images,
            eval_transform(self.image_size, self.resize_size),
            min_decode_side=self.resize_size if self.decode_at_reduced_size else None,
        )
        return CueConflictSet(
            root=Path(folder), categories=categories, images=images, dataset=dataset
        )
