"""Tiny image trees in the real datasets' layouts (Office-Home as distributed, image lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.officehome import OfficeHomeDataModule

OFFICEHOME_CLASSES = [
    "Alarm_Clock",
    "Backpack",
    "Batteries",
    "Bed",
    "Bike",
    "Bottle",
    "Bucket",
    "Calculator",
    "Calendar",
    "Candles",
    "Chair",
    "Clipboards",
    "Computer",
    "Couch",
    "Curtains",
    "Desk_Lamp",
    "Drill",
    "Eraser",
    "Exit_Sign",
    "Fan",
    "File_Cabinet",
    "Flipflops",
    "Flowers",
    "Folder",
    "Fork",
    "Glasses",
    "Hammer",
    "Helmet",
    "Kettle",
    "Keyboard",
    "Knives",
    "Lamp_Shade",
    "Laptop",
    "Marker",
    "Monitor",
    "Mop",
    "Mouse",
    "Mug",
    "Notebook",
    "Oven",
    "Pan",
    "Paper_Clip",
    "Pen",
    "Pencil",
    "Postit_Notes",
    "Printer",
    "Push_Pin",
    "Radio",
    "Refrigerator",
    "Ruler",
    "Scissors",
    "Screwdriver",
    "Shelf",
    "Sink",
    "Sneakers",
    "Soda",
    "Speaker",
    "Spoon",
    "TV",
    "Table",
    "Telephone",
    "ToothBrush",
    "Toys",
    "Trash_Can",
    "Webcam",
]


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=85)


def make_officehome_tree(
    root: Path,
    images_per_class: dict[str, int] | None = None,
    classes: tuple[str, ...] = OFFICEHOME_CLASSES,
    real_world_folder: str = "Real World",
) -> dict[str, int]:
    """An Office-Home tree as distributed, stray files included; returns images per domain."""
    images_per_class = images_per_class or {
        "Art": 2,
        "Clipart": 3,
        "Product": 2,
        real_world_folder: 1,
    }
    counts = {}
    seed = 0
    for domain, per_class in images_per_class.items():
        for class_name in classes:
            for index in range(1, per_class + 1):
                seed += 1
                write_jpeg(root / domain / class_name / f"{index:05d}.jpg", seed)
        (root / domain / ".DS_Store").write_bytes(b"\x00\x01")
        (root / domain / classes[0] / "Thumbs.db").write_bytes(b"\x00")
        counts[domain] = per_class * len(classes)
    (root / "ImageInfo.csv").write_text("image,url\n")
    (root / "imagelist.txt").write_text("Art/Alarm_Clock/00001.jpg\n")
    return counts


TINY_DEMO = {"num_classes": 3, "images_per_class": 12, "image_size": 32, "seed": 0}


def write_image_list(folder: Path, list_file: Path, label_as_index: bool) -> list[str]:
    """`relative/path label` lines for every image of `folder` (ImageFolder layout)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    lines = []
    for index, name in enumerate(classes):
        for image in sorted((folder / name).iterdir()):
            label = str(index) if label_as_index else name
            lines.append(f"{image.relative_to(folder)} {label}")
    list_file.write_text("# path label\n" + "\n".join(lines) + "\n")
    return classes


#: The small tree's classes: two, so a scan, a check or a fit on it takes moments.
SMALL_CLASSES = ("A", "B")


def small_officehome_tree(
    root: Path, per_class: int = 5, classes: tuple[str, ...] = SMALL_CLASSES
) -> Path:
    """An Office-Home tree of the four domains with `per_class` images of each of `classes`."""
    domains = ("Art", "Clipart", "Product", "Real World")
    make_officehome_tree(root, dict.fromkeys(domains, per_class), classes)
    return root


def build_officehome(root: Path, **kwargs) -> OfficeHomeDataModule:
    """The Office-Home DataModule on a test tree: 16 px and no worker processes unless told."""
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("num_workers", 0)
    return OfficeHomeDataModule(root=str(root), **kwargs)
