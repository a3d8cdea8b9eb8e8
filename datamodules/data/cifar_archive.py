"""Reading the CIFAR-10/100 python archives (Krizhevsky, "Learning Multiple Layers of Features
from Tiny Images", tech. report, 2009; https://www.cs.toronto.edu/~kriz/cifar.html).

Each file is a pickle (written by Python 2) of a dict: `data`, a uint8 array (N, 3072) whose rows
hold 1024 red, 1024 green and 1024 blue values of a 32x32 image in row-major order; `labels`
(CIFAR-10) or `fine_labels`/`coarse_labels` (CIFAR-100); `filenames`; `batch_label`. The meta
files hold `label_names` (10) or `fine_label_names` (100) and `coarse_label_names` (20). Pickles
can run code when loaded, so these are read with an unpickler that builds numpy arrays and plain
values only (as `pickle.load(f, encoding="latin1")`, the way torchvision reads them, would
without the restriction), then checked; every error names the file and what is wrong.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.data.layout import DatasetLayoutError

CIFAR_IMAGE_SIZE = 32
_PIXELS = 3 * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE


class CIFARFormatError(DatasetLayoutError):
    """A CIFAR file is missing or is not what the official archive holds."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """What numpy's pickles of an array reference, taken from numpy itself so that the names
    match this numpy version (`numpy._core` since 2.0), plus the pre-2.0 `numpy.core` name that
    the official (Python 2) files use."""
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct, protocols 0-4
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer, protocol 5
    found = {(f.__module__, f.__name__): f for f in (reconstruct, frombuffer, np.ndarray, np.dtype)}
    found[("numpy.core.multiarray", "_reconstruct")] = reconstruct
    found[("numpy.core.numeric", "_frombuffer")] = frombuffer
    # Python 3 writes bytes at protocol 2 as `_codecs.encode(text, "latin1")`.
    found[("_codecs", "encode")] = _latin1_encode
    return found


def _latin1_encode(text: str, encoding: str) -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_NUMPY_GLOBALS = _numpy_globals()


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain Python values only: any other global in the pickle (which
    could run arbitrary code) is refused, naming the file."""

    def __init__(self, handle, path: Path) -> None:
        # latin1 turns Python 2 byte strings into str (as torchvision reads these files).
        super().__init__(handle, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise CIFARFormatError(
                f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR file holds only "
                "numpy arrays, lists, strings and numbers (is this the official python version?)"
            )
        return found


def read_cifar_file(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys (bytes keys are decoded)."""
    if not path.is_file():
        raise CIFARFormatError(f"CIFAR file {path} does not exist")
    try:
        with open(path, "rb") as handle:
            record = _ArrayUnpickler(handle, path).load()
    except CIFARFormatError:
        raise
    except Exception as error:  # a truncated or foreign file fails in many ways
        raise CIFARFormatError(f"{path} is not a readable CIFAR pickle: {error}") from error
    if not isinstance(record, dict):
        raise CIFARFormatError(f"{path}: expected a dict, found {type(record).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in record.items()}


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch file's images (uint8 (N, 32, 32, 3)) and labels (int64 (N,)), checked."""
    record = read_cifar_file(path)
    missing = sorted({"data", label_key} - set(record))
    if missing:
        raise CIFARFormatError(f"{path}: missing keys {missing}; found {sorted(record)}")
    data, labels = record["data"], np.asarray(record[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        found = getattr(data, "dtype", type(data).__name__), getattr(data, "shape", "")
        raise CIFARFormatError(f"{path}: `data` must be a uint8 (N, {_PIXELS}) array, got {found}")
    if data.shape[1] != _PIXELS:
        raise CIFARFormatError(f"{path}: `data` rows have {data.shape[1]} values, not {_PIXELS}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise CIFARFormatError(
            f"{path}: `{label_key}` must be {len(data)} integers, got {labels.shape} {labels.dtype}"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise CIFARFormatError(
            f"{path}: `{label_key}` outside 0..{num_classes - 1} (min {labels.min()}, "
            f"max {labels.max()})"
        )
    images = data.reshape(-1, 3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def read_label_names(path: Path, key: str, count: int) -> list[str]:
    names = read_cifar_file(path).get(key)
    if not isinstance(names, list) or len(names) != count or len(set(names)) != count:
        raise CIFARFormatError(f"{path}: `{key}` must list {count} distinct class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


@dataclass
class CIFARArchive:
    """A whole archive in memory: train then test images in one tensor.

    Attributes:
        class_names: the meta file's names, in label order.
        images: uint8 (N_train + N_test, 32, 32, 3).
        labels: int64 (N_train + N_test,).
        sources: where each row came from (`<file>#<row>`), the samples' paths.
        num_train: the first `num_train` rows are the official training set.
    """

    class_names: list[str]
    images: torch.Tensor
    labels: np.ndarray
    sources: list[str]
    num_train: int


def load_archive(
    folder: Path,
    train: list[str],
    test: list[str],
    meta: str,
    names_key: str,
    label_key: str,
    num_classes: int,
) -> CIFARArchive:
    """Read the batch files (train, then test) and the class names of one archive folder."""
    class_names = read_label_names(folder / meta, names_key, num_classes)
    images, labels, sources, num_train = [], [], [], 0
    for name in [*train, *test]:
        batch_images, batch_labels = read_batch(folder / name, label_key, num_classes)
        images.append(batch_images)
        labels.append(batch_labels)
        sources += [f"{folder / name}#{row}" for row in range(len(batch_labels))]
        num_train += len(batch_labels) if name in train else 0
    return CIFARArchive(
        class_names=class_names,
        images=torch.from_numpy(np.concatenate(images)),
        labels=np.concatenate(labels),
        sources=sources,
        num_train=num_train,
    )
