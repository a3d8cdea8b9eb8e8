"""Samples from the file tree: domains scanned from folders or read from image lists, split by
the dataset's official splits or by a seeded class-stratified split.

Every domain's files are held as a path table (`IndexedFiles`): a scanned folder's come from
its file index, an extra domain's (image list, or folder read by a layout reader) are put in a
table here, so that all domains are split by one function into one sample representation.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

from torch.utils.data import Dataset

from datamodules.data.checks import require_clean_data
from datamodules.data.dataset import ImageSampleDataset
from datamodules.data.extra_domains import scan_domains
from datamodules.data.layout import DomainData, check_domain_roles, shared_class_names
from datamodules.data.problems import raise_if_errors
from datamodules.data.samples import (
    LabelledRows,
    SampleArray,
    as_labelled_rows,
    labelled_rows,
    relabelled,
)
from datamodules.data.sources.base import SampleSource
from datamodules.data.splitting import SPLITS, TARGET_TRAIN_SPLIT, UNLABELLED, stratified_split
from datamodules.data.style_shift import StyleShiftedDataset
from datamodules.data.tables import IndexedFiles, PathTable


def _no_rows() -> LabelledRows:
    return LabelledRows(PathTable.from_paths([]), [], [])


class FileTreeSource(SampleSource):
    """The dataset's domains (`domain_sources()`, scanned through `scan_domain`) and its
    `extra_domains`, split per domain: by `official_splits(domain)` where the dataset has them,
    else by `val_fraction` and `test_fraction` with a seed per domain."""

    def domains(self) -> list[DomainData]:
        """Every domain's class folders and files: the dataset's own, then the extra ones.

        Every problem the scan finds is collected and raised at once (`DataProblemsError`, a
        `DatasetLayoutError`, listing them all); extra domains are read against the dataset's
        own classes (integer labels of image lists index them; class_mapping renames onto them).
        """
        data = self.datamodule
        sources = data.domain_sources()
        domains, findings = scan_domains(sources, data.extra_domains, scan=data.scan_domain)
        raise_if_errors(findings, domains, source=data)
        check_domain_roles([d.name for d in domains], data.held_out_domains, data.target_domains)
        # Extra domains (and any scan that is not from the index) come as lists: put in tables.
        return [DomainData(d.name, d.root, IndexedFiles.of(d.files_by_class)) for d in domains]

    def domain_names(self) -> list[str]:
        return [domain.name for domain in self.datamodule.domains]

    def class_names(self) -> list[str]:
        return shared_class_names(self.datamodule.domains)

    def split_samples(self) -> dict[str, SampleArray]:
        """Each domain's train/val/test rows, gathered per split (and the target domains'
        training rows, unlabelled, as `train_target`)."""
        data = self.datamodule
        class_names = data.class_names
        # Official splits are the dataset's own domains' (extra domains are split by fractions).
        dataset_domains = len(data.domains) - len(data.extra_domains)
        splits: dict[str, list] = {split: [] for split in SPLITS}
        if data.target_domains:
            splits[TARGET_TRAIN_SPLIT] = []
        for domain_index, domain in enumerate(data.domains):
            held_out = domain.name in data.held_out_domains
            official = data.official_splits(domain) if domain_index < dataset_domains else None
            if official is not None:
                train, val, test = (as_labelled_rows(official[split]) for split in SPLITS)
                if held_out:
                    train = _no_rows()
            elif held_out:
                everything = labelled_rows(domain.files_by_class, class_names)
                train, val, test = _no_rows(), everything, everything
            else:
                # A per-domain seed keeps a domain's split unchanged when other domains are added.
                seed = data.split_seed + zlib.crc32(domain.name.encode())
                train, val, test = stratified_split(
                    domain.files_by_class, class_names, data.val_fraction, data.test_fraction, seed
                )
            if domain.name in data.target_domains:
                # Unlabelled by construction: the label never leaves the DataModule, so no
                # model code can train on it by mistake.
                splits[TARGET_TRAIN_SPLIT].append((relabelled(train, UNLABELLED), domain_index))
                train = _no_rows()
            for split, rows in (("train", train), ("val", val), ("test", test or val)):
                splits[split].append((rows, domain_index))
        return {split: SampleArray.build(parts) for split, parts in splits.items()}

    def prepare_data(self) -> None:
        # Once per node, before setup: the place to build the file index (the other ranks then
        # read it) and for a check that reads every file once.
        data = self.datamodule
        _ = data.split_samples
        if data.check_data:
            require_clean_data(data)

    def dataset(
        self, split: str, transform: Callable, min_decode_side: int | None
    ) -> ImageSampleDataset:
        data = self.datamodule
        return ImageSampleDataset(
            data.split_samples[split],
            transform,
            min_decode_side=min_decode_side,
            on_bad_image=data.on_bad_image,
            # One folder per split, so that each stage's skipped images can be counted.
            bad_image_dir=None if data.bad_image_dir is None else f"{data.bad_image_dir}/{split}",
        )

    def style_shifted(
        self, plain: Dataset, references: Sequence[str], shift: Callable
    ) -> StyleShiftedDataset:
        return StyleShiftedDataset(plain, references, shift)
