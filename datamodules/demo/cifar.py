"""Generated CIFAR-10/100 archives in the exact format of the official python versions
(Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html), small and seeded, for tests and the demos.

The official files are Python pickles of dicts: `data`, a uint8 array (N, 3072) whose rows hold
1024 red, 1024 green, then 1024 blue values of a 32x32 image in row-major order; `labels`
(CIFAR-10) or `fine_labels` and `coarse_labels` (CIFAR-100), lists of ints; `filenames`;
`batch_label`. The meta files hold `label_names` (10) or `fine_label_names` (100) and
`coarse_label_names` (20). These are written the same way (Python-3 pickles with str keys,
protocol 4), so `torchvision.datasets.CIFAR10/100` read them too:

- `cifar-10-batches-py/data_batch_1..5`, `test_batch`, `batches.meta`: class k is the demo
  shape `DEMO_CLASSES[k]` with its texture, drawn in a random one of the four demo styles;
- `cifar-100-python/train`, `test`, `meta`: fine class k is shape `k % 10` with texture
  `k // 10`, and its coarse class is `k // 5` (five fine classes per coarse one, as in CIFAR-100).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from datamodules.data.cifar_archive import CIFAR_IMAGE_SIZE
from datamodules.demo.cache import ensure_generated
from datamodules.demo.objects import DEMO_TEXTURES, check_positive, render_object
from datamodules.demo.shapes import DEMO_CLASSES
from datamodules.demo.styles import DEMO_DOMAINS

#: Bump when the generated images change, so cached archives are regenerated.
CIFAR_DEMO_VERSION = 1
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN_BATCHES = 5
CIFAR100_FINE_PER_COARSE = 5

# First element of every per-image seed, apart from the other generators' streams.
_CIFAR10_STREAM, _CIFAR100_STREAM = 11, 12


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images -> the official (N, 3072) rows (all red, green, blue)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _write_pickle(path: Path, record: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(record, handle, protocol=4)


def _render(stream: int, seed: int, split: int, label: int, number: int, shape: int, texture: int):
    rng = np.random.default_rng([stream, seed, split, label, number])
    style = DEMO_DOMAINS[int(rng.integers(len(DEMO_DOMAINS)))]
    return render_object(shape, texture, style, rng, CIFAR_IMAGE_SIZE)


def _draw_split(
    stream: int, seed: int, split: int, per_class: int, classes: list[tuple[int, int]]
) -> tuple[np.ndarray, list[int]]:
    """`per_class` images of every (shape, texture) class, in a seeded shuffled order (the
    official batches are not sorted by class)."""
    labels = [label for label in range(len(classes)) for _ in range(per_class)]
    numbers = [number for _ in classes for number in range(per_class)]
    order = np.random.default_rng([stream, seed, split]).permutation(len(labels))
    images = np.stack(
        [_render(stream, seed, split, labels[i], numbers[i], *classes[labels[i]]) for i in order]
    )
    return images, [labels[i] for i in order]


def _filenames(names: list[str], labels: list[int], start: int) -> list[str]:
    return [f"{names[label]}_s_{start + i:06d}.png" for i, label in enumerate(labels)]


def generate_cifar10_demo(
    root: str | Path,
    *,
    images_per_class: int = 100,
    test_images_per_class: int = 20,
    seed: int = 0,
) -> Path:
    """Write `<root>/cifar-10-batches-py/` in the official format and return `root`.

    Args:
        root: output folder (created if needed).
        images_per_class: training images per class, spread over the five data batches.
        test_images_per_class: test images per class (`test_batch`).
        seed: base seed; each image has its own stream.
    """
    check_positive(images_per_class=images_per_class, test_images_per_class=test_images_per_class)
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [name.lower() for name in DEMO_CLASSES]
    classes = [(k, k) for k in range(len(DEMO_CLASSES))]
    train, train_labels = _draw_split(_CIFAR10_STREAM, seed, 0, images_per_class, classes)
    chunks = np.array_split(np.arange(len(train)), CIFAR10_TRAIN_BATCHES)
    for number, rows in enumerate(chunks, start=1):
        labels = [train_labels[i] for i in rows]
        _write_pickle(
            folder / f"data_batch_{number}",
            {
                "batch_label": f"training batch {number} of {CIFAR10_TRAIN_BATCHES}",
                "labels": labels,
                "data": cifar_rows(train[rows]),
                "filenames": _filenames(names, labels, int(rows[0]) if len(rows) else 0),
            },
        )
    test, test_labels = _draw_split(_CIFAR10_STREAM, seed, 1, test_images_per_class, classes)
    _write_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": test_labels,
            "data": cifar_rows(test),
            "filenames": _filenames(names, test_labels, 0),
        },
    )
    meta = {"num_cases_per_batch": len(chunks[0]), "label_names": names, "num_vis": 3072}
    _write_pickle(folder / "batches.meta", meta)
    return Path(root)


def generate_cifar100_demo(
    root: str | Path,
    *,
    images_per_class: int = 5,
    test_images_per_class: int = 2,
    seed: int = 0,
) -> Path:
    """Write `<root>/cifar-100-python/` (train, test, meta) in the official format; return root.

    Args:
        root: output folder (created if needed).
        images_per_class: training images per fine class (100 classes).
        test_images_per_class: test images per fine class.
        seed: base seed; each image has its own stream.
    """
    check_positive(images_per_class=images_per_class, test_images_per_class=test_images_per_class)
    folder = Path(root) / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    count = len(DEMO_CLASSES)
    classes = [(k % count, k // count) for k in range(count * len(DEMO_TEXTURES))]
    fine_names = [f"{DEMO_CLASSES[s].lower()}_{DEMO_TEXTURES[t].lower()}" for s, t in classes]
    coarse_names = [
        f"group_{index:02d}" for index in range(len(classes) // CIFAR100_FINE_PER_COARSE)
    ]
    for split, name, per_class in (
        (0, "train", images_per_class),
        (1, "test", test_images_per_class),
    ):
        images, fine = _draw_split(_CIFAR100_STREAM, seed, split, per_class, classes)
        _write_pickle(
            folder / name,
            {
                "filenames": _filenames(fine_names, fine, 0),
                "batch_label": f"{'training' if split == 0 else 'testing'} batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [label // CIFAR100_FINE_PER_COARSE for label in fine],
                "data": cifar_rows(images),
            },
        )
    _write_pickle(
        folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names}
    )
    return Path(root)


def ensure_cifar10_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The CIFAR-10 demo archive folder's parent for these settings, generated into the cache
    on first use (`<cache_dir>/cifar10_demo-<hash>`, holding `cifar-10-batches-py/`).

    Args:
        cache_dir: cache folder; default `$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`.
        **settings: keyword arguments of `generate_cifar10_demo` (not `root`).
    """
    return ensure_generated(
        "cifar10", CIFAR_DEMO_VERSION, generate_cifar10_demo, cache_dir, settings
    )


def ensure_cifar100_demo(cache_dir: str | Path | None = None, **settings) -> Path:
    """The CIFAR-100 demo for these settings (`<cache_dir>/cifar100_demo-<hash>`, holding
    `cifar-100-python/`), generated into the cache on first use.

    Args:
        cache_dir: cache folder; default `$STYLEBENCH_DATA_DIR` or `~/.cache/stylebench`.
        **settings: keyword arguments of `generate_cifar100_demo` (not `root`).
    """
    return ensure_generated(
        "cifar100", CIFAR_DEMO_VERSION, generate_cifar100_demo, cache_dir, settings
    )
