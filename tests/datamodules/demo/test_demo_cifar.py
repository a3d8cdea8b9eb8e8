"""The generated CIFAR archives: the official files and keys, determinism, the cache, the CLI."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from datamodules.demo import (
    COMPLETE_MARKER,
    ensure_cifar10_demo,
    generate_cifar10_demo,
    generate_cifar100_demo,
)
from datamodules.demo.__main__ import main as demo_main
from datamodules.demo.cifar import cifar_rows


def load(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_cifar10_files_and_keys_are_the_official_ones(tmp_path: Path) -> None:
    folder = generate_cifar10_demo(tmp_path, images_per_class=3, test_images_per_class=2)
    folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*names, "test_batch", "batches.meta"]
    )
    batches = [load(folder / name) for name in names]
    for batch in batches:
        assert sorted(batch) == ["batch_label", "data", "filenames", "labels"]
        assert batch["data"].dtype == np.uint8 and batch["data"].shape[1] == 3072
        assert len(batch["labels"]) == len(batch["filenames"]) == len(batch["data"])
    labels = [label for batch in batches for label in batch["labels"]]
    assert sorted(labels) == sorted(list(range(10)) * 3)  # 3 per class over the five batches
    test = load(folder / "test_batch")
    assert sorted(test["labels"]) == sorted(list(range(10)) * 2)
    meta = load(folder / "batches.meta")
    assert len(meta["label_names"]) == 10 and meta["num_vis"] == 3072


def test_cifar100_files_keys_and_coarse_labels(tmp_path: Path) -> None:
    folder = generate_cifar100_demo(tmp_path, images_per_class=1, test_images_per_class=1)
    folder = folder / "cifar-100-python"
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    train = load(folder / "train")
    keys = ["batch_label", "coarse_labels", "data", "filenames", "fine_labels"]
    assert sorted(train) == keys and train["data"].shape == (100, 3072)
    assert train["coarse_labels"] == [f // 5 for f in train["fine_labels"]]
    meta = load(folder / "meta")
    assert (len(meta["fine_label_names"]), len(meta["coarse_label_names"])) == (100, 20)
    assert len(set(meta["fine_label_names"])) == 100


def test_rows_are_red_then_green_then_blue_planes() -> None:
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1] = (10, 20, 30)  # row 0, column 1
    row = cifar_rows(image)[0]
    assert (row[1], row[1024 + 1], row[2048 + 1]) == (10, 20, 30)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = file_bytes(generate_cifar10_demo(tmp_path / "a", images_per_class=2, seed=3))
    again = file_bytes(generate_cifar10_demo(tmp_path / "b", images_per_class=2, seed=3))
    other = load(
        generate_cifar10_demo(tmp_path / "c", images_per_class=2, seed=4)
        / "cifar-10-batches-py"
        / "test_batch"
    )
    assert first == again
    mine = load(tmp_path / "a" / "cifar-10-batches-py" / "test_batch")
    assert not np.array_equal(mine["data"], other["data"])


def test_cache_generates_once_and_cli_writes_an_archive(tmp_path: Path, capsys) -> None:
    settings = {"images_per_class": 2, "test_images_per_class": 1}
    cached = ensure_cifar10_demo(tmp_path / "cache", **settings)
    assert (cached / COMPLETE_MARKER).is_file() and (cached / "cifar-10-batches-py").is_dir()
    marker = (cached / COMPLETE_MARKER).stat().st_mtime_ns
    assert ensure_cifar10_demo(tmp_path / "cache", **settings) == cached
    assert (cached / COMPLETE_MARKER).stat().st_mtime_ns == marker
    assert ensure_cifar10_demo(tmp_path / "cache", images_per_class=3) != cached
    demo_main(["cifar100", "--root", str(tmp_path / "cli"), "--images", "1", "--test-images", "1"])
    assert "cifar100 demo archive" in capsys.readouterr().out
    assert load(tmp_path / "cli" / "cifar-100-python" / "test")["data"].shape == (100, 3072)
