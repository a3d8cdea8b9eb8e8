"""The image pipelines: batch normalisation of uint8 images (the values the model sees),
DomainBed's augmentation, the evaluation transforms."""

from __future__ import annotations

import dataclasses

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from datamodules.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    domainbed_augmentation,
    normalize_batch,
    split_transform,
    train_transform,
)


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


# ----- DomainBed's augmentation and evaluation transform ----------------------------------------
def image_with_content(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (no two channels alike), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        127 + 100 * np.sin(x / (3 + c) + rng.uniform(0, 6)) * np.cos(y / (4 + c)) for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def test_domainbed_augmentation_is_its_torchvision_pipeline_step_by_step() -> None:
    steps = train_transform(64, domainbed_augmentation()).pipeline.transforms
    expected = [A.RandomResizedCrop, A.HorizontalFlip, A.ColorJitter, A.ToGray]
    assert [type(s) for s in steps] == expected
    crop, flip, jitter, gray = steps
    # torchvision's RandomResizedCrop(224, scale=(0.7, 1.0)) with its default aspect range
    assert crop.size == (64, 64) and crop.scale == (0.7, 1.0)
    assert crop.ratio == pytest.approx((3 / 4, 4 / 3)) and crop.p == 1
    assert flip.p == 0.5
    # ColorJitter(0.3, 0.3, 0.3, 0.3): factors in [0.7, 1.3], hue shift in [-0.3, 0.3], always
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.7, 1.3),) * 3
    assert jitter.hue == pytest.approx((-0.3, 0.3)) and jitter.p == 1
    # RandomGrayscale's default p=0.1, three output channels
    assert (gray.p, gray.num_output_channels, gray.method) == (0.1, 3, "weighted_average")


def test_the_default_colour_jitter_is_unchanged() -> None:
    (_, _, jitter) = train_transform(32, AugmentationConfig(color_jitter=0.4)).pipeline.transforms
    assert jitter.hue == pytest.approx((-0.1, 0.1)) and jitter.p == 0.8
    assert jitter.brightness == pytest.approx((0.6, 1.4))
    default_steps = train_transform(32, AugmentationConfig()).pipeline.transforms
    assert not any(isinstance(s, A.ToGray) for s in default_steps)


def test_grayscale_turns_about_its_share_of_images_grey_by_luma() -> None:
    image = image_with_content(16, 16)
    config = AugmentationConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), horizontal_flip=0.0)
    transform = train_transform(16, dataclasses.replace(config, grayscale=0.1))
    transform.reseed(0)
    outputs = [transform(image) for _ in range(1000)]
    grey = [o for o in outputs if torch.equal(o[0], o[1]) and torch.equal(o[1], o[2])]
    # Binomial(1000, 0.1): mean 100, sd 9.5; the bounds are more than 4 sd away.
    assert 60 < len(grey) < 140
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey[0][0].numpy(), luma, atol=1)
    untouched = [o for o in outputs if not any(o is g for g in grey)]
    assert all(torch.equal(o, torch.from_numpy(image).permute(2, 0, 1)) for o in untouched)


def test_colour_jitter_with_probability_one_changes_every_image() -> None:
    image = image_with_content(16, 16, seed=1)
    config = AugmentationConfig(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), horizontal_flip=0.0, color_jitter=0.3, hue=0.3
    )
    original = torch.from_numpy(image).permute(2, 0, 1)
    for probability, expected in ((1.0, 200), (0.0, 0)):
        transform = train_transform(16, dataclasses.replace(config, color_jitter_p=probability))
        transform.reseed(0)
        changed = sum(not torch.equal(transform(image), original) for _ in range(200))
        assert changed == expected


def test_resize_evaluation_squashes_the_whole_image_without_cropping() -> None:
    image = image_with_content(40, 80)
    transform, min_side = split_transform(False, 32, 36, AugmentationConfig(evaluation="resize"))
    expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR)
    assert min_side == 32
    torch.testing.assert_close(transform(image), torch.from_numpy(expected).permute(2, 0, 1))


def test_center_crop_evaluation_resizes_the_shorter_side_then_crops_the_centre() -> None:
    image = image_with_content(40, 80)
    transform, min_side = split_transform(False, 32, 36, AugmentationConfig())
    resized = cv2.resize(image, (72, 36), interpolation=cv2.INTER_LINEAR)
    expected = resized[2:34, 20:52]
    assert min_side == 36
    torch.testing.assert_close(transform(image), torch.from_numpy(expected).permute(2, 0, 1))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"evaluation": "crop"}, r"augmentation\.evaluation='crop'; valid choices"),
        ({"grayscale": 1.5}, r"augmentation\.grayscale=1\.5 is a probability"),
        ({"color_jitter_p": -0.1}, r"augmentation\.color_jitter_p=-0\.1 is a probability"),
        ({"hue": 0.6}, r"augmentation\.hue=0\.6 must be in \[0, 0\.5\]"),
    ],
)
def test_bad_augmentation_settings_name_the_setting(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**setting)
