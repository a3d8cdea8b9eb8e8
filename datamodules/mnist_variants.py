"""RotatedMNIST and ColoredMNIST, built from the MNIST files on disk exactly as DomainBed builds
them (`domainbed/datasets.py`, `MultipleEnvironmentMNIST`), seeded:

1. the 60,000 training digits then the 10,000 test digits are concatenated (70,000) and
   permuted by `torch.randperm` drawn from torch's generator seeded with `environment_seed`
   (DomainBed's `--seed`, which seeds torch's global generator before the datasets are built);
2. environment `i` of `k` takes every `k`-th digit of that order, starting at `i`;
3. each environment is transformed:
   - RotatedMNIST (k = 6: `0`, `15`, `30`, `45`, `60`, `75`, the angles in degrees; 11,667
     digits in environments 0-3, 11,666 in 4-5): each digit rotated counter-clockwise by the
     angle with torchvision's `rotate` on the PIL image, fill 0, bilinear interpolation (as
     DomainBed's code since 2021-04-21; `interpolation: bicubic` is the code its published
     results were computed with). Labels 0-9. DomainBed's images are (1, 28, 28);
   - ColoredMNIST (k = 3: `+90%`, `+80%`, `-90%`; 23,334 / 23,333 / 23,333 digits): the label
     is 1 if the digit is below 5, else 0, then flipped with probability 0.25; the colour is
     the label flipped with probability 0.1, 0.2 and 0.9 in the three environments; the digit
     is stacked into two channels and the channel other than the colour zeroed. No 14x14
     downsampling. DomainBed's images are (2, 28, 28). Each probability is a draw
     `torch.rand(n) < p` from the same generator, right after the permutation: the label
     flips, then the colour flips, environment by environment.

The images are DomainBed's values, x / 255 in [0, 1] without normalisation (the normalisation
statistics are 0 and 1). The project's backbones take three channels, so RotatedMNIST's gray
digit is repeated in all three (a first convolution then sees the sum of its three filters:
the same family of functions as DomainBed's one channel) and ColoredMNIST's two channels are
channels 0 and 1 with a zero channel 2 (the "blue" one). DomainBed trains its own small CNN
(`MNIST_CNN`) on these; here any backbone of the project does, at 28x28 (e.g. `resnet20`).

Splits: DomainBed's 20% holdout per environment (`val_fraction: 0.2`; the project's seeded
split, stratified by label); a held-out environment (DomainBed's test environment, e.g.
`-90%`) is evaluated whole. No augmentation, as in DomainBed. The images are held in memory
(about 55 MB for RotatedMNIST, 165 MB for ColoredMNIST).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import rotate

from datamodules.base import MultiDomainDataModule
from datamodules.data.dataset import InMemoryImageDataset
from datamodules.data.layout import DomainData, DomainSource
from datamodules.data.mnist_idx import find_mnist_raw, load_mnist
from datamodules.data.transforms import ToUint8Tensor
from datamodules.demo.mnist import ensure_mnist_demo
from datamodules.generated import GeneratedData

ROTATED_MNIST_ANGLES = (0, 15, 30, 45, 60, 75)
COLORED_MNIST_ENVIRONMENTS = ("+90%", "+80%", "-90%")
#: Probability that the colour is not the label, per ColoredMNIST environment.
COLORED_MNIST_COLOR_FLIP = (0.1, 0.2, 0.9)
#: Probability that a ColoredMNIST label is flipped (label noise).
COLORED_MNIST_LABEL_FLIP = 0.25
INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def environment_order(num_digits: int, num_environments: int, generator: torch.Generator):
    """DomainBed's assignment: a `randperm` of the digits, every k-th one per environment."""
    order = torch.randperm(num_digits, generator=generator)
    return [order[i::num_environments] for i in range(num_environments)]


def rotate_digits(images: np.ndarray, angle: float, interpolation: str = "bilinear") -> np.ndarray:
    """Each (H, W) uint8 digit rotated counter-clockwise by `angle` degrees, as DomainBed does
    (torchvision's `rotate` on the PIL image, fill 0)."""
    mode = INTERPOLATIONS[interpolation]
    rotated = [
        np.asarray(rotate(Image.fromarray(image), angle, interpolation=mode, fill=(0,)))
        for image in images
    ]
    return np.stack(rotated) if rotated else images.copy()


def bernoulli(probability: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """DomainBed's `torch_bernoulli_`: `(torch.rand(count) < probability).float()`."""
    return (torch.rand(count, generator=generator) < probability).float()


def color_digits(
    images: np.ndarray, digits: np.ndarray, color_flip: float, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DomainBed's `color_dataset` on (N, H, W) uint8 digits: (images (N, H, W, 3) uint8 with
    the digit in channel `colour` only, labels (N,) int64, colours (N,) int64)."""
    labels = torch.from_numpy(np.asarray(digits) < 5).float()
    labels = (labels - bernoulli(COLORED_MNIST_LABEL_FLIP, len(labels), generator)).abs()
    colors = (labels - bernoulli(color_flip, len(labels), generator)).abs()
    colors_np = colors.long().numpy()
    out = np.zeros((*images.shape, 3), np.uint8)
    out[np.arange(len(images)), :, :, colors_np] = images
    return out, labels.long().numpy(), colors_np


@dataclass
class Environments:
    """Every environment's images in one tensor.

    Attributes:
        images: uint8 (N, H, W, 3), the environments one after the other.
        labels: int64 (N,).
        sources: each row's digit, `<IDX file>#<index in the file>` (the samples' paths).
        digits: each row's original MNIST label.
        ranges: `{environment: (start, stop)}` rows.
    """

    images: torch.Tensor
    labels: np.ndarray
    sources: list[str]
    digits: np.ndarray
    ranges: dict[str, tuple[int, int]]


class MNISTEnvironmentsDataModule(MultiDomainDataModule):
    """The shared machinery of the MNIST variants: the digits read once, the environments built
    in memory (`build_environments`), each a domain of the multi-domain machinery."""

    images_in_memory = True
    normalization_mean = (0.0, 0.0, 0.0)
    normalization_std = (1.0, 1.0, 1.0)
    environment_names: tuple[str, ...] = ()
    variant_class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str,
        held_out_domains: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        environment_seed: int = 0,
        batch_size: int = 64,
        batch_size_per_domain: int | None = None,
        eval_batch_size: int | None = None,
        eval_order: str = "listed",
        num_workers: int = 2,
        persistent_workers: bool = True,
        pin_memory: bool = True,
    ) -> None:
        """MNIST-variant DataModule.

        Args:
            root: the folder holding `MNIST/raw/` (torchvision's layout; DomainBed's
                `MNIST/MNIST/raw/`, `raw/` or the files themselves are found too), the files
                plain or gzipped.
            held_out_domains: environments only evaluated (DomainBed's test environments).
            val_fraction: fraction of each trained environment held out for validation
                (DomainBed: 0.2).
            test_fraction: fraction for a test split; 0: `test` evaluates the validation split.
            split_seed: seed of the holdout split.
            environment_seed: seeds the digits' order and the colour and label draws
                (DomainBed's `--seed`).
            batch_size: training batch size (over all trained environments).
            batch_size_per_domain: DomainBed's batches: this many digits of every trained
                environment per batch (DomainBed: 64); replaces `batch_size` for training.
            eval_batch_size: validation/test batch size (default: `batch_size`).
            eval_order: `listed` or `shuffled` (each environment's digits in a seeded order,
                as DomainBed evaluates; ARM's predictions depend on it).
            num_workers: DataLoader worker processes (the images are in memory: few needed).
            persistent_workers: keep workers between epochs (only with `num_workers > 0`).
            pin_memory: page-locked host memory for faster copies to the GPU.
        """
        unknown = sorted(set(held_out_domains or []) - set(self.environment_names))
        if unknown:
            raise ValueError(
                f"held_out_domains {unknown}: not environments of {type(self).__name__}; "
                f"valid choices: {list(self.environment_names)}"
            )
        self.environment_seed = environment_seed
        # The images are 28x28 arrays already in memory, shown as DomainBed shows them: the
        # image settings and augmentation are fixed here, and LightningCLI does not offer them.
        super().__init__(
            root=root,
            held_out_domains=held_out_domains,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
            image_size=28,
            resize_size=28,
            batch_size=batch_size,
            batch_size_per_domain=batch_size_per_domain,
            eval_batch_size=eval_batch_size,
            eval_order=eval_order,
            num_workers=num_workers,
            persistent_workers=persistent_workers,
            pin_memory=pin_memory,
            decode_at_reduced_size=False,
        )

    @cached_property
    def raw_folder(self) -> Path:
        return find_mnist_raw(self.root)

    def build_environments(
        self,
        images: np.ndarray,
        digits: np.ndarray,
        order: list[torch.Tensor],
        generator: torch.Generator,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(images (n, H, W, 3) uint8 or (n, H, W) gray, labels (n,))] per environment: the
        digits `order[i]` of `images`/`digits` for environment i, drawing from `generator`."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_environments()")

    @cached_property
    def environments(self) -> Environments:
        images, digits, files = load_mnist(self.raw_folder)
        counts = {file: 0 for file in files}
        sources = []
        for file in files:  # `<file>#<index in that file>`
            sources.append(f"{file}#{counts[file]}")
            counts[file] += 1
        generator = torch.Generator().manual_seed(self.environment_seed)
        order = environment_order(len(images), len(self.environment_names), generator)
        built = self.build_environments(images, digits, order, generator)
        ranges, start = {}, 0
        for name, (_, labels) in zip(self.environment_names, built, strict=True):
            ranges[name] = (start, start + len(labels))
            start += len(labels)
        all_images = np.concatenate([env_images for env_images, _ in built])
        rows = torch.cat(order).numpy()
        tensor = torch.from_numpy(all_images)
        if tensor.ndim == 3:  # gray: the three channels are one view of the same bytes
            tensor = tensor.unsqueeze(-1).expand(-1, -1, -1, 3)
        return Environments(
            images=tensor,
            labels=np.concatenate([labels for _, labels in built]).astype(np.int64),
            sources=[sources[row] for row in rows],
            digits=digits[rows].astype(np.int64),
            ranges=ranges,
        )

    def domain_sources(self) -> list[DomainSource]:
        folder = str(self.raw_folder)
        return [DomainSource(name=name, root=folder) for name in self.environment_names]

    def scan_domain(self, source: DomainSource) -> DomainData:
        """An environment's rows (no folders to scan): `<IDX file>#<index>` by class."""
        environments = self.environments
        start, stop = environments.ranges[source.name]
        files_by_class: dict[str, list[str]] = {name: [] for name in self.variant_class_names}
        for row in range(start, stop):
            label = environments.labels[row]
            files_by_class[self.variant_class_names[label]].append(environments.sources[row])
        return DomainData(source.name, Path(source.root), files_by_class)

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {source: row for row, source in enumerate(self.environments.sources)}

    def make_dataset(self, split: str, augment: bool | None = None) -> InMemoryImageDataset:
        """The split's digits as uint8 (3, 28, 28) tensors: no augmentation (DomainBed has none
        for these), so training and evaluation see the same transform."""
        samples = self.split_samples[split]
        rows = [self._row_of[sample.path] for sample in samples]
        return InMemoryImageDataset(self.environments.images, rows, samples, ToUint8Tensor())


class RotatedMNISTDataModule(MNISTEnvironmentsDataModule):
    """RotatedMNIST: six environments of digits rotated by 0..75 degrees; ten classes."""

    dataset_name = "rotated_mnist"
    environment_names = tuple(str(angle) for angle in ROTATED_MNIST_ANGLES)
    variant_class_names = tuple(str(digit) for digit in range(10))

    def __init__(self, root: str, interpolation: str = "bilinear", **kwargs) -> None:
        """RotatedMNIST DataModule.

        Args:
            root: the folder holding `MNIST/raw/` (see `MNISTEnvironmentsDataModule`).
            interpolation: `bilinear` (DomainBed's code) or `bicubic` (the code of DomainBed's
                published results, before 2021-04-21).
            **kwargs: the settings of `MNISTEnvironmentsDataModule`.
        """
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={interpolation!r}; valid: {list(INTERPOLATIONS)}")
        self.interpolation = interpolation
        super().__init__(root=root, **kwargs)

    def build_environments(self, images, digits, order, generator):
        return [
            (rotate_digits(images[rows.numpy()], angle, self.interpolation), digits[rows.numpy()])
            for angle, rows in zip(ROTATED_MNIST_ANGLES, order, strict=True)
        ]


class ColoredMNISTDataModule(MNISTEnvironmentsDataModule):
    """ColoredMNIST: three environments where the colour predicts the noisy binary label 90%,
    80% and 10% of the time; classes `0` (digit 5-9) and `1` (digit 0-4), before the 25% label
    noise."""

    dataset_name = "colored_mnist"
    environment_names = COLORED_MNIST_ENVIRONMENTS
    variant_class_names = ("0", "1")

    def build_environments(self, images, digits, order, generator):
        built = []
        for flip, rows in zip(COLORED_MNIST_COLOR_FLIP, order, strict=True):
            chosen = rows.numpy()
            colored, labels, _ = color_digits(images[chosen], digits[chosen], flip, generator)
            built.append((colored, labels))
        return built


class RotatedMNISTDemoDataModule(GeneratedData, RotatedMNISTDataModule):
    """RotatedMNIST on generated MNIST files, created on first use; the same code path."""

    demo_generator = staticmethod(ensure_mnist_demo)

    def __init__(
        self,
        root: str | None = None,
        train_images: int = 1200,
        test_images: int = 300,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """RotatedMNIST demo DataModule.

        Args:
            root: where the files are (default: generated into the cache folder).
            train_images: digits in the generated training file.
            test_images: digits in the generated test file.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `RotatedMNISTDataModule`.
        """
        self.use_generated_data(
            cache_dir, train_images=train_images, test_images=test_images, seed=demo_seed
        )
        super().__init__(root=root, **kwargs)


class ColoredMNISTDemoDataModule(GeneratedData, ColoredMNISTDataModule):
    """ColoredMNIST on generated MNIST files, created on first use; the same code path."""

    demo_generator = staticmethod(ensure_mnist_demo)

    def __init__(
        self,
        root: str | None = None,
        train_images: int = 1200,
        test_images: int = 300,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """ColoredMNIST demo DataModule.

        Args:
            root: where the files are (default: generated into the cache folder).
            train_images: digits in the generated training file.
            test_images: digits in the generated test file.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `ColoredMNISTDataModule`.
        """
        self.use_generated_data(
            cache_dir, train_images=train_images, test_images=test_images, seed=demo_seed
        )
        super().__init__(root=root, **kwargs)
