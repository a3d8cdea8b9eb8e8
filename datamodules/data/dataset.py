"""The image Datasets the splits use (files, or rows of an in-memory tensor), and the bad-image
bookkeeping of `on_bad_image: skip`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.data.image_io import load_rgb
from datamodules.data.layout import Sample

BAD_IMAGE_POLICIES = ("error", "skip")


class ImageSampleDataset(Dataset):
    """(path, label, domain index) samples -> (uint8 image tensor, label, domain index).

    With `on_bad_image="skip"`, an image that cannot be decoded gives None (dropped by
    `collate_skipping_none`) and its path is appended to a file in `bad_image_dir`: files, not
    memory, because DataLoader workers are separate processes.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        min_decode_side: int | None = None,
        on_bad_image: str = "error",
        bad_image_dir: str | None = None,
    ):
        """Settings (each one also a command-line option).

        Args:
            samples: the split's samples.
            transform: uint8 HxWx3 array -> uint8 CxHxW tensor.
            min_decode_side: decode JPEGs at reduced size down to this side.
            on_bad_image: `error` (raise, naming the file) or `skip`.
            bad_image_dir: where `skip` records the files it skipped.
        """
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r}; valid choices: ['error', 'skip']")
        # Kept as given: a split's `SampleArray` has arrays that forked workers share, where a
        # list of Sample objects would be copied into each worker page by page as it is read.
        self.samples = samples
        self.transform = transform
        self.min_decode_side = min_decode_side
        self.on_bad_image = on_bad_image
        self.bad_image_dir = bad_image_dir

    def __len__(self) -> int:
        return len(self.samples)

    def decoded_image(self, index: int) -> np.ndarray:
        """Sample `index` as a uint8 HxWx3 array, before the transform."""
        return load_rgb(self.samples[index].path, min_side=self.min_decode_side)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        sample = self.samples[index]
        try:
            image = self.decoded_image(index)
        except OSError:
            # load_rgb raises BadImageError (an OSError naming the file and why) for every way
            # a file fails to be an image; other OSErrors (a missing listed file) name it too.
            if self.on_bad_image == "error":
                raise
            if self.bad_image_dir is not None:
                # One file per process; appends of short lines are atomic enough here. Names
                # that are not UTF-8 are written back as their original bytes (surrogateescape).
                Path(self.bad_image_dir).mkdir(parents=True, exist_ok=True)
                log = Path(self.bad_image_dir) / f"bad-{os.getpid()}.txt"
                with open(log, "a", encoding="utf-8", errors="surrogateescape") as handle:
                    handle.write(sample.path + "\n")
            return None
        return self.transform(image), sample.label, sample.domain_index


class InMemoryImageDataset(Dataset):
    """Samples whose images are rows of one uint8 tensor in memory (CIFAR's arrays): no file
    reads and no decoding per sample, the same items as `ImageSampleDataset`.

    `samples` keep a path (where the image came from, e.g. `data_batch_1#17`) for the split
    counts and the style-shift bookkeeping; nothing is read from it.
    """

    #: Images are validated when the arrays are read, so none is ever bad or downsized.
    on_bad_image = "error"
    min_decode_side = None

    def __init__(
        self,
        images: torch.Tensor,
        rows: Sequence[int],
        samples: Sequence[Sample],
        transform: Callable,
    ):
        """Settings (each one also a command-line option).

        Args:
            images: uint8 (N, H, W, 3) tensor holding every image of the dataset.
            rows: the row of `images` of each sample.
            samples: the split's samples, in the order of `rows`.
            transform: uint8 HxWx3 array -> uint8 CxHxW tensor.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be a uint8 (N, H, W, 3) tensor, got {images.shape}")
        if len(rows) != len(samples):
            raise ValueError(f"{len(rows)} rows for {len(samples)} samples")
        self.images = images
        self.rows = torch.as_tensor(list(rows), dtype=torch.long)
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def decoded_image(self, index: int) -> np.ndarray:
        """Sample `index` as a uint8 HxWx3 array (a view of the tensor), before the transform."""
        return self.images[self.rows[index]].numpy()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.samples[index]
        return self.transform(self.decoded_image(index)), sample.label, sample.domain_index


def collate_skipping_none(batch: list):
    """default_collate without the samples a dataset skipped (None); None if all were skipped."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


def read_bad_images(bad_image_dir: str | None) -> list[str]:
    """The distinct paths skipped so far, gathered from every worker's file (also in the
    per-split folders below `bad_image_dir`)."""
    if bad_image_dir is None or not Path(bad_image_dir).is_dir():
        return []
    paths: set[str] = set()
    for log in Path(bad_image_dir).rglob("bad-*.txt"):
        text = log.read_text(encoding="utf-8", errors="surrogateescape")
        paths.update(line for line in text.splitlines() if line)
    return sorted(paths)
