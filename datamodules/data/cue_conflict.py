"""Cue-conflict stimuli (Geirhos et al., ICLR 2019, arXiv:1811.12231): reading the folder.

Each stimulus has the shape of one category and the texture of another, named
`<root>/<shape>/<shape><i>-<texture><j>.png` as in github.com/rgeirhos/texture-vs-shape
(`stimuli/style-transfer-preprocessed-512`). The generated demo set (`datamodules.demo`) writes
the same names. Scoring (shape bias) is the model side's business; this module only says which
images there are and what their shape and texture are, and gives the DataModule
`cue_conflict_set` (`CueConflictStimuli`), through which the shape-bias callback reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datamodules.data.image_io import is_image_file, load_rgb
from datamodules.data.transforms import AugmentationConfig, split_transform

CUE_CONFLICT_NAME = re.compile(r"^(?P<shape>.+?)(?P<i>\d+)-(?P<texture>.+?)(?P<j>\d+)\.png$")
CUE_CONFLICT_HELP = (
    "Get the cue-conflict stimuli from github.com/rgeirhos/texture-vs-shape "
    "(stimuli/style-transfer-preprocessed-512) and pass that folder, or use the generated demo "
    "set (root: null)."
)


def cue_conflict_name(shape: str, i: int, texture: str, j: int) -> str:
    """The file name `<shape><i>-<texture><j>.png`, checked to read back as (shape, i, texture,
    j) (a category name ending in a digit would not)."""
    name = f"{shape}{i}-{texture}{j}.png"
    if parse_cue_conflict_name(name) != (shape, i, texture, j):
        raise ValueError(f"{name!r} does not read back as shape {shape!r}, texture {texture!r}")
    return name


def parse_cue_conflict_name(file_name: str) -> tuple[str, int, str, int]:
    """Split `<shape><i>-<texture><j>.png` into (shape, i, texture, j)."""
    match = CUE_CONFLICT_NAME.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"{file_name!r} is not a cue-conflict name <shape><i>-<texture><j>.png")
    return match["shape"], int(match["i"]), match["texture"], int(match["j"])


@dataclass(frozen=True)
class CueConflictImage:
    """One stimulus: its file, the category of its shape and that of its texture."""

    path: str
    shape: str
    texture: str


def scan_cue_conflict(root: str | Path) -> tuple[list[str], list[CueConflictImage]]:
    """(categories, images) of a cue-conflict folder; categories are the shape folders."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cue-conflict folder {root} does not exist. {CUE_CONFLICT_HELP}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(
            f"no cue-conflict class folders in {root} (expected "
            f"<root>/<shape>/<shape><i>-<texture><j>.png). {CUE_CONFLICT_HELP}"
        )
    categories = [p.name for p in folders]
    images = []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
            shape, _, texture, _ = parse_cue_conflict_name(path.name)
            if shape != folder.name or texture not in categories:
                raise ValueError(f"{path}: shape/texture {shape!r}/{texture!r} are not categories")
            images.append(CueConflictImage(str(path), shape, texture))
    return categories, images


class CueConflictDataset(Dataset):
    """Stimuli -> (uint8 CHW image through `transform`, index of the stimulus)."""

    def __init__(
        self,
        images: list[CueConflictImage],
        transform: Callable,
        min_decode_side: int | None = None,
    ) -> None:
        """Settings (each one also a command-line option).

        Args:
            images: the stimuli, in the order their indices refer to.
            transform: uint8 HxWx3 array -> uint8 CxHxW tensor (the evaluation transform).
            min_decode_side: decode JPEGs at reduced size down to this side (PNG stimuli ignore it).
        """
        self.images = images
        self.transform = transform
        self.min_decode_side = min_decode_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.images[index].path, min_side=self.min_decode_side)
        return self.transform(image), index


@dataclass
class CueConflictSet:
    """A cue-conflict folder ready to evaluate: what `CueConflictStimuli.cue_conflict_set`
    gives a shape-bias evaluation."""

    root: Path
    categories: list[str]
    images: list[CueConflictImage]
    dataset: CueConflictDataset


class CueConflictStimuli:
    """Mixin of the DataModule: cue-conflict stimuli through its evaluation transform.

    Reads the DataModule's `image_size`, `resize_size`, `augmentation` (its `evaluation`
    transform) and `decode_at_reduced_size`; without a folder, the demo set is generated by its
    `cue_conflict_demo` (this package does not import the generators of `datamodules.demo`, so
    the DataModule names it).
    """

    image_size: int
    resize_size: int
    augmentation: AugmentationConfig
    decode_at_reduced_size: bool
    #: `(cache_dir, num_classes=, images_per_pair=, image_size=)` -> the demo set's folder.
    cue_conflict_demo: Callable[..., Path]

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
            folder = Path(
                self.cue_conflict_demo(
                    cache_dir,
                    num_classes=demo_classes,
                    images_per_pair=demo_images_per_pair,
                    image_size=demo_image_size,
                )
            )
        else:
            folder = Path(root).expanduser()
        categories, images = scan_cue_conflict(folder)
        transform, min_side = split_transform(
            False, self.image_size, self.resize_size, self.augmentation
        )
        dataset = CueConflictDataset(
            images, transform, min_decode_side=min_side if self.decode_at_reduced_size else None
        )
        return CueConflictSet(root=folder, categories=categories, images=images, dataset=dataset)
