"""The CIFAR-10/100 DataModules on generated archives: torchvision reads the same images and
labels, unsafe or malformed pickles are refused naming the file, splits, augmentation, style
shift and the data check."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from datamodules.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10DataModule,
    CIFAR100DataModule,
    CIFARFormatError,
)
from datamodules.data.checks import check_datamodule
from datamodules.data.layout import DatasetLayoutError
from datamodules.data.style_shift import StyleShiftConfig
from datamodules.demo import generate_cifar10_demo, generate_cifar100_demo


def without_checksums(dataset_class: type) -> type:
    """torchvision's CIFAR class with its md5 checks off (generated files differ from the
    official ones by construction), through its public class attributes."""
    return type(
        f"Generated{dataset_class.__name__}",
        (dataset_class,),
        {
            "train_list": [[name, None] for name, _ in dataset_class.train_list],
            "test_list": [[name, None] for name, _ in dataset_class.test_list],
            "meta": {**dataset_class.meta, "md5": None},
        },
    )


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory) -> Path:
    return generate_cifar10_demo(tmp_path_factory.mktemp("c10"), images_per_class=12)


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory) -> Path:
    return generate_cifar100_demo(tmp_path_factory.mktemp("c100"), images_per_class=3)


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_reader_equals_torchvision(cifar10_root: Path, train: bool) -> None:
    reference = without_checksums(torchvision.datasets.CIFAR10)(
        str(cifar10_root), train=train, download=False
    )
    archive = CIFAR10DataModule(str(cifar10_root)).archive
    rows = slice(0, archive.num_train) if train else slice(archive.num_train, None)
    assert np.array_equal(archive.images[rows].numpy(), reference.data)  # every image
    assert archive.labels[rows].tolist() == list(reference.targets)  # every label
    assert archive.class_names == reference.classes
    assert (archive.num_train, len(archive.labels)) == (120, 120 + 200)


@pytest.mark.parametrize("train", [True, False])
def test_cifar100_reader_equals_torchvision(cifar100_root: Path, train: bool) -> None:
    reference = without_checksums(torchvision.datasets.CIFAR100)(
        str(cifar100_root), train=train, download=False
    )
    datamodule = CIFAR100DataModule(str(cifar100_root / "cifar-100-python"))
    archive = datamodule.archive
    rows = slice(0, archive.num_train) if train else slice(archive.num_train, None)
    assert np.array_equal(archive.images[rows].numpy(), reference.data)
    assert archive.labels[rows].tolist() == list(reference.targets)
    assert archive.class_names == reference.classes and datamodule.num_classes == 100
    # coarse labels: the file's own `coarse_labels` (five fine classes per coarse one here)
    coarse = CIFAR100DataModule(str(cifar100_root), labels="coarse").archive
    assert coarse.labels[rows].tolist() == [label // 5 for label in reference.targets]
    assert len(coarse.class_names) == 20


def test_missing_folder_names_it_and_the_archive_to_get(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as error:
        _ = CIFAR10DataModule(str(tmp_path)).class_names
    message = str(error.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    with pytest.raises(DatasetLayoutError, match=r"cifar-100-python\.tar\.gz"):
        _ = CIFAR100DataModule(str(tmp_path)).class_names


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def copy_archive(source: Path, target: Path) -> Path:
    folder = target / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for file in (source / "cifar-10-batches-py").iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"data": Evil(), "labels": []}, "refusing to unpickle posix.system"),
        (["not", "a", "dict"], "expected a dict, found list"),
        ({"data": np.zeros((2, 3072), np.uint8)}, r"missing keys \['labels'\]"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "must be a uint8"),
        ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "rows have 100 values"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "must be 2 integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"outside 0\.\.9"),
    ],
)
def test_bad_batch_files_are_refused_naming_the_file(
    cifar10_root: Path, tmp_path: Path, content, expected: str
) -> None:
    folder = copy_archive(cifar10_root, tmp_path)
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump(content, handle, protocol=2)
    with pytest.raises(CIFARFormatError, match=expected) as error:
        _ = CIFAR10DataModule(str(tmp_path)).archive
    assert str(folder / "data_batch_3") in str(error.value)


def test_python2_style_pickles_with_bytes_keys_are_read(cifar10_root: Path, tmp_path) -> None:
    """Protocol 2 (the official files' protocol) with bytes keys, as Python 2 str keys read
    with encoding="bytes" would be."""
    folder = copy_archive(cifar10_root, tmp_path)
    path = folder / "data_batch_1"
    with open(path, "rb") as handle:
        original = pickle.load(handle)
    with open(path, "wb") as handle:
        pickle.dump({k.encode(): v for k, v in original.items()}, handle, protocol=2)
    archive = CIFAR10DataModule(str(tmp_path)).archive
    expected = CIFAR10DataModule(str(cifar10_root)).archive
    assert torch.equal(archive.images, expected.images)


def test_stratified_seeded_hold_out_and_official_test(cifar10_root: Path) -> None:
    datamodule = CIFAR10DataModule(str(cifar10_root), val_images=30, split_seed=1)
    splits = datamodule.split_samples
    assert {k: len(v) for k, v in splits.items()} == {"train": 90, "val": 30, "test": 200}
    assert [sum(s.label == c for s in splits["val"]) for c in range(10)] == [3] * 10
    assert not {s.path for s in splits["val"]} & {s.path for s in splits["train"]}
    assert all("test_batch#" in s.path for s in splits["test"])
    again = CIFAR10DataModule(str(cifar10_root), val_images=30, split_seed=1).split_samples
    other = CIFAR10DataModule(str(cifar10_root), val_images=30, split_seed=2).split_samples
    assert again["val"] == splits["val"] and other["val"] != splits["val"]
    # no hold-out: all training images, validation on the test set
    full = CIFAR10DataModule(str(cifar10_root), val_images=0)
    assert len(full.split_samples["train"]) == 120
    assert full.split_samples["val"] == full.split_samples["test"]
    assert (datamodule.protocol, full.protocol) == ("val30", "trainval")


def test_items_are_the_archive_images_and_batches_use_cifar_statistics(cifar10_root) -> None:
    datamodule = CIFAR10DataModule(str(cifar10_root), val_images=30, num_workers=0)
    datamodule.setup("fit")
    test = datamodule.datasets["test"]
    image, label, domain = test[5]
    row = datamodule.archive.num_train + 5
    assert torch.equal(image, datamodule.archive.images[row].permute(2, 0, 1))
    assert (label, domain) == (int(datamodule.archive.labels[row]), 0)
    batch = datamodule.on_after_batch_transfer((image[None], torch.tensor([label])))
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1) * 255
    assert torch.allclose(batch[0][0], (image.float() - mean) / std, atol=1e-5)


def test_training_items_are_padded_random_crops(cifar10_root: Path) -> None:
    datamodule = CIFAR10DataModule(str(cifar10_root), val_images=30, num_workers=0)
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    original = torch.from_numpy(train.decoded_image(0)).permute(2, 0, 1)
    torch.manual_seed(0)
    np.random.seed(0)
    crops = [train[0][0] for _ in range(40)]
    assert all(crop.shape == (3, 32, 32) and crop.dtype == torch.uint8 for crop in crops)
    # every crop is the image (or its mirror) shifted by at most 4 pixels, zeros outside
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    windows = [
        view[:, y : y + 32, x : x + 32]
        for view in (padded, padded.flip(-1))
        for y in range(9)
        for x in range(9)
    ]
    assert all(any(torch.equal(crop, w) for w in windows) for crop in crops)
    assert len({crop.numpy().tobytes() for crop in crops}) > 10


def test_style_shift_takes_references_from_a_style_folder(cifar10_root, tmp_path) -> None:
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"style{index}.png")
    config = StyleShiftConfig(method="histogram", style_folder=str(tmp_path))
    datamodule = CIFAR10DataModule(str(cifar10_root), val_images=30, style_shift=config)
    datamodule.setup("validate")
    plain, shifted = datamodule.datasets["val"], datamodule.datasets["val_style"]
    assert len(shifted) == len(plain) == 30
    image, label, domain = shifted[0]
    assert image.shape == (3, 32, 32) and (label, domain) == plain[0][1:]
    assert not torch.equal(image, plain[0][0])
    # one domain and no style folder: the existing rule's clear error
    fda = StyleShiftConfig(method="fda")
    alone = CIFAR10DataModule(str(cifar10_root), val_images=30, style_shift=fda)
    with pytest.raises(ValueError, match="style_folder"):
        alone.setup("validate")


def test_data_check_reports_in_memory_images_without_errors(cifar10_root: Path) -> None:
    report = check_datamodule(CIFAR10DataModule(str(cifar10_root), val_images=30))
    assert report.ok, report.format()
    assert [f.kind for f in report.findings] == ["in-memory"]
    assert report.split_counts == {"train": 90, "val": 30, "test": 200}
