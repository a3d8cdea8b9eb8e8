"""Batch normalisation of uint8 images: the values the model sees."""

from __future__ import annotations

import pytest
import torch

from datamodules.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch


def test_normalize_batch_scales_to_unit_range_then_standardises_per_channel() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    out = normalize_batch(images)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    assert out.dtype == torch.float32
    # The input batch is left as it was (the result is a new tensor).
    assert images.dtype == torch.uint8


def test_normalize_batch_rejects_float_images() -> None:
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(torch.zeros(1, 3, 2, 2))
