"""The image Dataset every split uses, and the bad-image bookkeeping of `on_bad_image: skip`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

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
        """Args:
        samples: the split's samples.
        transform: uint8 HxWx3 array -> uint8 CxHxW tensor.
        min_decode_side: decode JPEGs at reduced size down to this side.
        on_bad_image: `error` (raise, naming the file) or `skip`.
        bad_image_dir: where `skip` records the files it skipped.
        """
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r}; valid choices: ['error', 'skip']")
        self.samples = list(samples)
        self.transform = transform
        self.min_decode_side = min_decode_side
        self.on_bad_image = on_bad_image
        self.bad_image_dir = bad_image_dir

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int] | None:
        sample = self.samples[index]
        try:
            image = load_rgb(sample.path, min_side=self.min_decode_side)
        except OSError:
            if self.on_bad_image == "error":
                raise
            if self.bad_image_dir is not None:
                # One file per process; appends of short lines are atomic enough here.
                log = Path(self.bad_image_dir) / f"bad-{os.getpid()}.txt"
                with open(log, "a") as handle:
                    handle.write(sample.path + "\n")
            return None
        return self.transform(image), sample.label, sample.domain_index


def collate_skipping_none(batch: list):
    """default_collate without the samples a dataset skipped (None); None if all were skipped."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


def read_bad_images(bad_image_dir: str | None) -> list[str]:
    """The distinct paths skipped so far, gathered from every worker's file."""
    if bad_image_dir is None or not Path(bad_image_dir).is_dir():
        return []
    paths: set[str] = set()
    for log in Path(bad_image_dir).glob("bad-*.txt"):
        paths.update(line for line in log.read_text().splitlines() if line)
    return sorted(paths)
