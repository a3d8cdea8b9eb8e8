"""MNIST's IDX files (LeCun et al.; the format of http://yann.lecun.com/exdb/mnist/), read and
written, and where torchvision and DomainBed keep them.

IDX: big-endian. Bytes 0-1 are zero, byte 2 the element type (0x08: unsigned byte, the only
type MNIST uses), byte 3 the number of dimensions; then one 32-bit size per dimension; then
the elements. MNIST's images are magic 0x00000803 (2051), count, 28 rows, 28 columns, pixels
from offset 16; its labels magic 0x00000801 (2049), count, labels from offset 8. A file's sizes
must account for its payload exactly. The four files are `train-images-idx3-ubyte`,
`train-labels-idx1-ubyte` (60,000), `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`
(10,000), distributed gzipped (`.gz`); torchvision keeps them unzipped in `<root>/MNIST/raw/`,
DomainBed's download script in `<data_dir>/MNIST/MNIST/raw/`. Both forms are read here.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from datamodules.data.domainbed_facts import MNIST_FILES, MNIST_HOW_TO_GET
from datamodules.data.layout import DatasetLayoutError

#: The IDX type byte of unsigned bytes.
IDX_UBYTE = 0x08


class IDXFormatError(DatasetLayoutError):
    """An IDX file is missing or not what MNIST's files hold."""


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped if `path` ends in `.gz`); return `path`."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
    return path


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """A uint8 IDX file (plain or `.gz`) with `ndim` dimensions as an array; `IDXFormatError`
    naming the file and what is wrong otherwise."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise IDXFormatError(f"{path} cannot be read: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{path} is not an IDX file (its first two bytes must be zero)")
    if data[2] != IDX_UBYTE or data[3] != ndim:
        raise IDXFormatError(
            f"{path}: IDX type 0x{data[2]:02x} with {data[3]} dimensions; MNIST's are type 0x08 "
            f"(unsigned bytes) with {ndim}"
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IDXFormatError(f"{path} ends inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset != expected:
        raise IDXFormatError(
            f"{path}: its header says {shape} ({expected} bytes) but {len(data) - offset} "
            "bytes follow (truncated or not MNIST)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_raw(root: str | Path) -> Path:
    """The folder holding the four MNIST files: `<root>/MNIST/raw` (torchvision),
    `<root>/MNIST/MNIST/raw` (DomainBed's download), `<root>/raw` or `root` itself."""
    root = Path(root).expanduser()
    candidates = [root / "MNIST" / "raw", root / "MNIST" / "MNIST" / "raw", root / "raw", root]
    for folder in candidates:
        if all(_file(folder, name) for name in MNIST_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetLayoutError(
        f"MNIST files {list(MNIST_FILES.values())} (or .gz) not found in {looked}. "
        + MNIST_HOW_TO_GET
    )


def load_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Train then test digits of a raw folder: uint8 images (N, H, W), labels (N,) in 0..9,
    and the image file each row came from (`[train] * n_train + [test] * n_test`)."""
    images, labels, sources = [], [], []
    for split in ("train", "test"):
        image_file = _file(folder, MNIST_FILES[f"{split}_images"])
        label_file = _file(folder, MNIST_FILES[f"{split}_labels"])
        if image_file is None or label_file is None:
            raise IDXFormatError(f"MNIST {split} files missing in {folder}. {MNIST_HOW_TO_GET}")
        split_images, split_labels = read_idx(image_file, 3), read_idx(label_file, 1)
        if len(split_images) != len(split_labels):
            raise IDXFormatError(
                f"{image_file} holds {len(split_images)} images but {label_file} "
                f"{len(split_labels)} labels"
            )
        if images and split_images.shape[1:] != images[0].shape[1:]:
            raise IDXFormatError(
                f"{image_file}: images of {split_images.shape[1:]}, the training images are "
                f"{images[0].shape[1:]}"
            )
        if len(split_labels) and split_labels.max() > 9:
            raise IDXFormatError(f"{label_file}: label {split_labels.max()} outside 0..9")
        images.append(split_images)
        labels.append(split_labels)
        sources += [image_file] * len(split_labels)
    return np.concatenate(images), np.concatenate(labels), sources
