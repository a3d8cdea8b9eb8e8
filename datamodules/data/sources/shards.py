"""Samples from LitData shards (`data.shards`): the classes, domains and splits the shards were
written with, training streamed by LitData (shuffled, sharded across ranks and workers, its
position kept in checkpoints) and evaluation read by index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.data.layout import DomainData
from datamodules.data.samples import SampleArray
from datamodules.data.shards import (
    ShardImageDataset,
    ShardsError,
    ShardStyleShiftedDataset,
    StreamingImageDataset,
    check_matches,
    read_meta,
    split_samples,
)
from datamodules.data.sources.base import SampleSource
from datamodules.data.transforms import train_transform

#: Checkpoint key of the streams' positions; the second is what checkpoints written before the
#: rename to "shards" hold.
STATE_KEY, OLD_STATE_KEY = "shard_streams", "prepared_streams"


class ShardsSource(SampleSource):
    """A shards folder written from the same configuration.

    Args:
        datamodule: the `MultiDomainDataModule` it serves.
        uri: the folder, or an object-store URI (`s3://...`).
    """

    def __init__(self, datamodule, uri: str) -> None:
        super().__init__(datamodule)
        for setting in ("domain_proportions", "batch_size_per_domain"):
            if getattr(datamodule, setting):
                raise ValueError(
                    f"data.{setting} does not apply to data.shards (the shards are streamed "
                    "in LitData's shuffled order); set one of them to null"
                )
        if datamodule.eval_order != "listed":
            raise ValueError(
                "data.eval_order: shuffled does not apply to data.shards (the shards are "
                "streamed in LitData's order); set data.eval_order to listed"
            )
        self.uri = uri
        # LitData's stream positions, restored from a checkpoint before the loaders are built.
        self._stream_state: dict = {}
        self._stream_loaders: dict = {}

    @cached_property
    def meta(self) -> dict:
        """What the folder holds (classes, domains, splits), checked against the configuration."""
        meta = read_meta(self.uri)
        check_matches(meta, self.datamodule, self.uri)
        return meta

    def domains(self) -> list[DomainData]:
        raise ShardsError(
            f"data.shards={self.uri!r}: the images are in the shards, so there are no folders "
            "to scan; check the source with data.shards unset"
        )

    def domain_names(self) -> list[str]:
        return list(self.meta["domain_names"])

    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def split_samples(self) -> dict[str, SampleArray]:
        return {split: split_samples(self.uri, split) for split in self.meta["splits"]}

    def prepare_data(self) -> None:
        _ = self.meta

    def dataset(
        self, split: str, transform: Callable, min_decode_side: int | None
    ) -> ShardImageDataset:
        return ShardImageDataset(
            self.uri,
            split,
            transform,
            min_decode_side=min_decode_side,
            samples=self.datamodule.split_samples[split],
        )

    def style_shifted(
        self, plain: Dataset, references: Sequence[str], shift: Callable
    ) -> ShardStyleShiftedDataset:
        return ShardStyleShiftedDataset(plain, references, shift)

    def training_loader(self, split: str) -> DataLoader:
        """The split streamed: LitData shuffles, shards across DDP ranks, nodes and workers,
        and keeps the stream position for resuming."""
        from litdata import StreamingDataLoader

        data = self.datamodule
        dataset = StreamingImageDataset(
            f"{self.uri.rstrip('/')}/{split}",
            train_transform(data.image_size, data.augmentation),
            min_decode_side=data.image_size if data.decode_at_reduced_size else None,
            shuffle=True,
            drop_last=True,
            seed=data.split_seed,
        )
        loader = StreamingDataLoader(
            dataset,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            persistent_workers=data.persistent_workers,
            pin_memory=data.pin_memory and torch.cuda.is_available(),
            drop_last=True,
        )
        if split in self._stream_state:
            loader.load_state_dict(self._stream_state[split])
        self._stream_loaders[split] = loader
        return loader

    def state_dict(self) -> dict:
        """The training streams' positions (saved in checkpoints, so a resumed run continues
        the epoch where it stopped instead of starting it again)."""
        if not self._stream_loaders:
            return {}  # nothing to save: Lightning then stores no DataModule state
        return {
            STATE_KEY: {
                split: loader.state_dict() for split, loader in self._stream_loaders.items()
            }
        }

    def load_state_dict(self, state: dict) -> None:
        self._stream_state = dict(state.get(STATE_KEY, state.get(OLD_STATE_KEY, {})))
