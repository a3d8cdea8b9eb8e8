"""Shared fixtures: tiny image trees in the real datasets' layouts, an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.session import session_threads


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One torch thread for the whole session, and OMP_NUM_THREADS=1 for the processes tests
    start (unless a test's own environment sets it). The models here are tiny: on a shared
    2-core machine, extra OpenMP threads only wait on each other (10-20x slower steps).
    `STYLEBENCH_TEST_THREADS=<n>` or `=default` overrides."""
    threads = session_threads()
    if threads is None:
        yield
        return
    previous_torch = torch.get_num_threads()
    previous_omp = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    yield
    torch.set_num_threads(previous_torch)
    if previous_omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous_omp


@pytest.fixture(autouse=True, scope="session")
def _isolated_index_dir(tmp_path_factory: pytest.TempPathFactory):
    """File indexes of the test session's trees go to a temporary folder (also for the
    processes tests start), not to the user's cache, where every run would add files."""
    previous = os.environ.get("STYLEBENCH_INDEX_DIR")
    os.environ["STYLEBENCH_INDEX_DIR"] = str(tmp_path_factory.mktemp("index"))
    yield
    if previous is None:
        os.environ.pop("STYLEBENCH_INDEX_DIR", None)
    else:
        os.environ["STYLEBENCH_INDEX_DIR"] = previous


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


@pytest.fixture
def officehome_root(tmp_path: Path) -> Path:
    root = tmp_path / "OfficeHomeDataset_10072016"
    make_officehome_tree(root)
    return root


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow store for the test, also seen by code reading the environment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
