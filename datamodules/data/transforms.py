"""Albumentations pipelines for training and evaluation.

Augmentation runs on uint8 HxWxC arrays and returns uint8 CxHxW tensors; conversion to float and
normalisation happen once per batch on the model's device (`normalize_batch`, called by the
DataModule's `on_after_batch_transfer` as torchgeo does), which keeps the worker processes'
per-image work and the host-to-device copy four times smaller.

Seeding: albumentations 2.0's `Compose` draws from its own generators (`random_generator`,
`py_random`), not from the global NumPy/Python/torch state that `seed_everything` seeds, so the
project seeds them itself (`AlbumentationsTransform.reseed`, through `Compose.set_random_state`):
- in the main process, from the run seed (`torch.initial_seed()`, which `seed_everything` sets),
  the rank and the stream (which split), when the dataset is made (`num_workers: 0`);
- in each DataLoader worker, from the seed torch gives that worker (drawn from the run's seeded
  generator each time the workers start, i.e. every epoch unless they are persistent, plus the
  worker id), the rank and the stream (`AugmentationSeeder`, the loader's `worker_init_fn`).
Two runs with one seed so draw the same augmentations; workers, ranks and epochs differ.
"""

from __future__ import annotations

import os
import random
import zlib
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import get_worker_info

# ImageNet statistics: the torchvision weights expect them, and from-scratch runs use them too so
# that one normalisation serves every configuration.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The evaluation transforms by name (`AugmentationConfig.evaluation`).
EVALUATION_TRANSFORMS = ("center_crop", "resize")


@dataclass
class AugmentationConfig:
    """Training augmentation settings.

    Args:
        crop: "random_resized" (object-centred, ImageNet style), "random" (multi-scale crops
            without aspect change, suited to textures) or "pad_random" (zero-pad `padding`
            pixels on every side, then a random `image_size` crop: the CIFAR recipe of He et al.,
            CVPR 2016, arXiv:1512.03385).
        scale: range of the crop's area fraction of the image.
        ratio: range of the crop's aspect ratio (random_resized only).
        horizontal_flip: flip probability.
        vertical_flip: flip probability (textures have no up and down).
        rotate_degrees: maximum absolute rotation; 0 disables rotation.
        rotate_border: how rotation fills the corners: "constant" (black) or "reflect"
            (mirrored image content, which continues a texture without adding edges).
        color_jitter: strength of brightness/contrast/saturation jitter (factors drawn from
            [1 - s, 1 + s], in random order); 0 disables it.
        padding: pad_random only: zero pixels added on each side before the crop.
        hue: hue jitter, a fraction of the hue circle (at most 0.5); default (null) a quarter of
            `color_jitter`.
        color_jitter_p: probability that an image is colour-jittered at all.
        grayscale: probability of turning an image grey (three equal channels, ITU-R 601
            luma), after the jitter; 0 disables it.
        evaluation: the evaluation transform: "center_crop" (resize the shorter side to
            `resize_size`, then a centre crop of `image_size`: ImageNet style) or "resize"
            (squash to `image_size` x `image_size`, no crop: DomainBed's).

    `domainbed_augmentation()` gives DomainBed's settings.
    """

    crop: str = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: float = 0.5
    vertical_flip: float = 0.0
    rotate_degrees: float = 0.0
    rotate_border: str = "constant"
    color_jitter: float = 0.0
    padding: int = 4
    hue: float | None = None
    color_jitter_p: float = 0.8
    grayscale: float = 0.0
    evaluation: str = "center_crop"

    def __post_init__(self) -> None:
        if self.evaluation not in EVALUATION_TRANSFORMS:
            raise ValueError(
                f"augmentation.evaluation={self.evaluation!r}; valid choices: "
                f"{list(EVALUATION_TRANSFORMS)}"
            )
        probabilities = {"color_jitter_p": self.color_jitter_p, "grayscale": self.grayscale}
        for name, value in probabilities.items():
            if not 0 <= value <= 1:
                raise ValueError(f"augmentation.{name}={value} is a probability: use 0 to 1")
        if self.hue is not None and not 0 <= self.hue <= 0.5:
            raise ValueError(f"augmentation.hue={self.hue} must be in [0, 0.5] (null: default)")


def domainbed_augmentation() -> AugmentationConfig:
    """DomainBed's augmentation (Gulrajani & Lopez-Paz, ICLR 2021, arXiv:2007.01434; its
    `datasets.py`, torchvision there): RandomResizedCrop (scale 0.7-1, aspect 3/4-4/3),
    horizontal flip (p 0.5), ColorJitter(0.3, 0.3, 0.3, 0.3) on every image, RandomGrayscale
    (p 0.1); evaluation squashes the image to the square size without cropping."""
    return AugmentationConfig(
        crop="random_resized",
        scale=(0.7, 1.0),
        ratio=(3 / 4, 4 / 3),
        horizontal_flip=0.5,
        color_jitter=0.3,
        hue=0.3,
        color_jitter_p=1.0,
        grayscale=0.1,
        evaluation="resize",
    )


# OpenCV border modes by name (cv2.BORDER_CONSTANT, cv2.BORDER_REFLECT_101).
_BORDER_MODES = {"constant": 0, "reflect": 4}


class ToUint8Tensor:
    """HxWxC uint8 array -> CxHxW uint8 tensor (no scaling: normalisation is per batch)."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class AlbumentationsTransform:
    """Applies an albumentations pipeline and converts the result to a uint8 tensor."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline
        self.to_tensor = ToUint8Tensor()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.to_tensor(self.pipeline(image=image)["image"])

    def reseed(self, seed: int) -> None:
        """Restart the pipeline's random draws from `seed`.

        One NumPy and one Python generator shared by every step (what `Compose` itself sets up
        in `set_random_state`); `Compose.set_random_seed` would instead give each step its own
        generator from the same seed, so that e.g. the crop's and the flip's draws repeat
        each other.
        """
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def train_transform(
    image_size: int, config: AugmentationConfig | None = None
) -> AlbumentationsTransform:
    """Training pipeline: crop, flips, optional rotation and colour jitter."""
    config = config or AugmentationConfig()
    size = (image_size, image_size)
    steps: list[A.BasicTransform] = []
    if config.rotate_degrees > 0:
        if config.rotate_border not in _BORDER_MODES:
            raise ValueError(
                f"augmentation.rotate_border={config.rotate_border!r}; "
                f"valid choices: {list(_BORDER_MODES)}"
            )
        border_mode = _BORDER_MODES[config.rotate_border]
        steps.append(A.Rotate(limit=config.rotate_degrees, border_mode=border_mode, p=1.0))
    if config.crop == "random_resized":
        steps.append(A.RandomResizedCrop(size=size, scale=config.scale, ratio=config.ratio))
    elif config.crop == "random":
        # Square crops of a random fraction of the shorter side, then resized: several scales of
        # the same texture without distorting its aspect.
        steps.append(A.RandomResizedCrop(size=size, scale=config.scale, ratio=(1.0, 1.0)))
    elif config.crop == "pad_random":
        if config.padding < 0:
            raise ValueError(f"augmentation.padding={config.padding} must be >= 0")
        # Translations by up to `padding` pixels at full resolution (no rescaling): small
        # images such as CIFAR's 32x32 have no detail to spare for resized crops.
        steps.append(A.Pad(padding=config.padding, fill=0, border_mode=_BORDER_MODES["constant"]))
        steps.append(A.RandomCrop(height=image_size, width=image_size))
    else:
        raise ValueError(
            f"augmentation.crop={config.crop!r} is not a known crop; "
            "use 'random_resized', 'random' or 'pad_random'"
        )
    if config.horizontal_flip > 0:
        steps.append(A.HorizontalFlip(p=config.horizontal_flip))
    if config.vertical_flip > 0:
        steps.append(A.VerticalFlip(p=config.vertical_flip))
    if config.color_jitter > 0:
        strength = config.color_jitter
        hue = strength / 4 if config.hue is None else config.hue
        steps.append(
            A.ColorJitter(
                brightness=strength,
                contrast=strength,
                saturation=strength,
                hue=hue,
                p=config.color_jitter_p,
            )
        )
    if config.grayscale > 0:
        steps.append(A.ToGray(num_output_channels=3, method="weighted_average", p=config.grayscale))
    return AlbumentationsTransform(A.Compose(steps))


def augmentation_seed(*parts: int) -> int:
    """One 32-bit seed from several non-negative integers (run seed, rank, worker, stream), by
    NumPy's `SeedSequence`, so that nearby inputs give unrelated streams."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1)[0])


def stream_id(name: str) -> int:
    """A stable integer for a loader's stream (its split), mixed into its seeds."""
    return zlib.crc32(name.encode())


def seed_dataset_transform(dataset, seed: int) -> bool:
    """Reseed `dataset.transform` if it is a seedable augmentation; whether it was."""
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, AlbumentationsTransform):
        transform.reseed(seed)
        return True
    return False


class AugmentationSeeder:
    """A DataLoader `worker_init_fn` seeding the albumentations pipeline of each worker.

    The worker's seed is torch's (`get_worker_info().seed`: a fresh draw from the run's seeded
    generator each time the loader starts its workers, plus the worker id), mixed with the
    worker id, the rank and the stream, so every worker, rank, stream and (non-persistent)
    epoch augments differently and a second run with the same seed repeats it all. Lightning's
    own worker seeding (`seed_everything(workers=True)`, which it adds only to loaders without
    a `worker_init_fn`) is applied too.

    Args:
        rank: the process's global rank (every rank gets the same run seed).
        stream: the loader's stream (`stream_id(split)`).
    """

    def __init__(self, rank: int = 0, stream: int = 0) -> None:
        self.rank = rank
        self.stream = stream

    def __call__(self, worker_id: int) -> None:
        if os.environ.get("PL_SEED_WORKERS") == "1":
            pl_worker_init_function(worker_id, self.rank)
        info = get_worker_info()
        if info is not None:
            seed = augmentation_seed(info.seed, worker_id, self.rank, self.stream)
            seed_dataset_transform(info.dataset, seed)


def eval_transform(
    image_size: int, resize_size: int | None = None, mode: str = "center_crop"
) -> AlbumentationsTransform:
    """Evaluation pipeline: `center_crop` resizes the shorter side to `resize_size`, then crops
    the centre (256 -> 224 by default); `resize` squashes the image to `image_size` square."""
    if mode == "resize":
        steps = [A.Resize(height=image_size, width=image_size)]
    elif mode == "center_crop":
        resize_size = resize_size or round(image_size * 256 / 224)
        steps = [
            A.SmallestMaxSize(max_size=resize_size),
            A.CenterCrop(height=image_size, width=image_size),
        ]
    else:
        raise ValueError(
            f"augmentation.evaluation={mode!r}; valid choices: {list(EVALUATION_TRANSFORMS)}"
        )
    return AlbumentationsTransform(A.Compose(steps))


def split_transform(
    augment: bool, image_size: int, resize_size: int, augmentation: AugmentationConfig
) -> tuple[AlbumentationsTransform, int]:
    """(transform, the smallest image side it needs): the training transform (crops of
    `image_size`) if `augment`, else the evaluation one (`augmentation.evaluation`)."""
    if augment:
        return train_transform(image_size, augmentation), image_size
    if augmentation.evaluation == "resize":
        return eval_transform(image_size, mode="resize"), image_size
    return eval_transform(image_size, resize_size), resize_size


def normalize_batch(
    images: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised, on whatever device the batch is on."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_batch expects uint8 images, got {images.dtype}")
    mean_tensor = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    inverse_std = 1.0 / (torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255)
    # One new tensor, normalised in place: this runs on every batch.
    return images.float().sub_(mean_tensor).mul_(inverse_std)


def normalize_batches(
    batch,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
):
    """`normalize_batch` on a batch's uint8 images (its element 0), also inside a dict of
    batches (`{"source": ..., "target": ...}`); float images, the rest of a batch and None (a
    batch whose samples were all skipped) pass through."""
    if batch is None:
        return None
    if isinstance(batch, dict):
        return {key: normalize_batches(part, mean, std) for key, part in batch.items()}
    images, *rest = batch
    if images.dtype == torch.uint8:
        images = normalize_batch(images, mean, std)
    return (images, *rest)
