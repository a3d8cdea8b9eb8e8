"""The file index: scanned once, reused while the tree is unchanged, rebuilt when it changes;
array-backed samples that behave as the lists they replace.

Scans are counted from the index module's log (one INFO record per scan) and, across
processes, from the index files themselves (each records the scans it was written from).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from datamodules.data.index import index_file, indexed_domain, recorded_scans
from datamodules.data.layout import DomainSource, Sample, scan_class_folders
from datamodules.data.samples import SampleArray, labelled_rows
from datamodules.data.splitting import stratified_split
from datamodules.data.tables import IndexedFiles
from datamodules.officehome import OfficeHomeDataModule
from datamodules.stylized_imagenet import StylizedImageNetDataModule
from tests.helpers.trees import make_officehome_tree, write_jpeg

CLASSES = ("Bike", "Mug", "Pen")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "officehome"
    make_officehome_tree(root, {"Art": 5}, classes=CLASSES)
    return root / "Art"


@pytest.fixture
def scans(caplog):
    """The number of scans made so far in this test (this process, all folders)."""
    caplog.set_level(logging.INFO, logger="datamodules.data.index")

    def count() -> int:
        return sum(
            record.name == "datamodules.data.index" and record.msg.startswith("scanned ")
            for record in caplog.records
        )

    return count


def list_split(files_by_class, class_names, val_fraction, test_fraction, seed):
    """The seeded class-stratified split on lists of (path, label), as it was written before
    the row arrays: per class, one permutation; val first, then test, the rest train."""
    rng = np.random.default_rng(seed)
    splits: tuple[list, list, list] = ([], [], [])
    for label, class_name in enumerate(class_names):
        files = list(files_by_class[class_name])
        order = rng.permutation(len(files))
        num_val = round(len(files) * val_fraction)
        num_test = round(len(files) * test_fraction)
        for rank, position in enumerate(order):
            split = 1 if rank < num_val else 2 if rank < num_val + num_test else 0
            splits[split].append((files[position], label))
    return splits


def test_index_is_reused_while_unchanged_and_matches_a_plain_scan(folder, tmp_path, scans) -> None:
    source = DomainSource("Art", str(folder))
    before = scans()
    first = indexed_domain(source, tmp_path / "index")
    assert scans() == before + 1
    again = indexed_domain(source, tmp_path / "index")
    assert scans() == before + 1  # read, not scanned
    plain = scan_class_folders(source)
    for domain in (first, again):
        assert isinstance(domain.files_by_class, IndexedFiles)
        assert list(domain.files_by_class) == list(plain.files_by_class)
        for name, files in plain.files_by_class.items():
            assert list(domain.files_by_class[name]) == files
            assert domain.files_by_class[name] == files
    # No temporary file is left beside the index.
    assert [p.name for p in (tmp_path / "index").iterdir() if not p.name.endswith(".lock")] == [
        index_file(folder, tmp_path / "index").name
    ]


@pytest.mark.parametrize("change", ["add", "remove", "rename", "new_class", "remove_class"])
@pytest.mark.parametrize("old_tree", [False, True], ids=["recent", "old"])
def test_index_is_rebuilt_when_a_class_folder_changes(
    folder, tmp_path, change, old_tree, scans
) -> None:
    if old_tree:
        # Timestamps well before the scan: the change is seen from the mtimes alone. A recent
        # tree takes the "racy" path: folders modified near the scan are compared file by file.
        past = time.time() - 3600
        for path in [folder, *folder.iterdir()]:
            os.utime(path, (past, past))
    source = DomainSource("Art", str(folder))
    indexed_domain(source, tmp_path / "index")
    before = scans()
    bike = folder / "Bike"
    if change == "add":
        write_jpeg(bike / "extra.jpg", seed=99)
    elif change == "remove":
        sorted(bike.iterdir())[0].unlink()
    elif change == "rename":
        first = sorted(bike.iterdir())[0]
        first.rename(bike / ("z" + first.name))
    elif change == "new_class":
        (folder / "Zebra").mkdir()
        write_jpeg(folder / "Zebra" / "0.jpg", seed=1)
    else:
        for path in (folder / "Pen").iterdir():
            path.unlink()
        (folder / "Pen").rmdir()
    rebuilt = indexed_domain(source, tmp_path / "index")
    assert scans() == before + 1
    assert recorded_scans(index_file(folder, tmp_path / "index")) == 2
    plain = scan_class_folders(source).files_by_class
    assert {k: list(v) for k, v in rebuilt.files_by_class.items()} == plain
    indexed_domain(source, tmp_path / "index")
    assert scans() == before + 1


def test_rescan_forces_a_scan_and_a_corrupt_index_is_replaced(folder, tmp_path, scans) -> None:
    source = DomainSource("Art", str(folder))
    indexed_domain(source, tmp_path / "index")
    before = scans()
    indexed_domain(source, tmp_path / "index", rescan=True)
    assert scans() == before + 1
    path = index_file(folder, tmp_path / "index")
    path.write_bytes(path.read_bytes()[:40])  # as if cut short (not written by write_index)
    domain = indexed_domain(source, tmp_path / "index")
    assert scans() == before + 2
    assert sum(len(v) for v in domain.files_by_class.values()) == 15


def test_rescan_flag_of_the_datamodule(tmp_path, scans) -> None:
    root = tmp_path / "officehome"
    make_officehome_tree(root, {"Art": 4, "Clipart": 4}, classes=CLASSES)
    settings = {"root": str(root), "domains": ["Art", "Clipart"], "index_dir": str(tmp_path)}
    _ = OfficeHomeDataModule(**settings).split_samples
    before = scans()
    _ = OfficeHomeDataModule(**settings).split_samples
    assert scans() == before
    forced = OfficeHomeDataModule(**settings)
    forced.rescan_index = True
    _ = forced.split_samples
    assert scans() == before + 2


def test_array_split_equals_the_list_split(folder, tmp_path) -> None:
    files = indexed_domain(DomainSource("Art", str(folder)), tmp_path / "index").files_by_class
    plain = scan_class_folders(DomainSource("Art", str(folder))).files_by_class
    for fractions in ((0.2, 0.0), (0.4, 0.2)):
        lists = list_split(plain, list(CLASSES), *fractions, seed=7)
        # The index's table, and the plain scan's lists (put in a table by the split).
        for files_by_class in (files, plain):
            arrays = stratified_split(files_by_class, list(CLASSES), *fractions, seed=7)
            assert [list(a) for a in arrays] == list(lists)


def test_datamodule_splits_are_sample_arrays_with_the_same_samples(tmp_path) -> None:
    root = tmp_path / "officehome"
    make_officehome_tree(root, {"Art": 5, "Clipart": 5}, classes=CLASSES)
    settings = {"root": str(root), "domains": ["Art", "Clipart"], "index_dir": str(tmp_path)}
    arrays = OfficeHomeDataModule(**settings, held_out_domains=["Clipart"]).split_samples
    # The same splits from plain scans (lists), as they were made before the index existed.
    plain = {d: scan_class_folders(DomainSource(d, str(root / d))) for d in ("Art", "Clipart")}
    train, val, _ = list_split(
        plain["Art"].files_by_class, list(CLASSES), 0.2, 0.0, zlib.crc32(b"Art")
    )
    held_out = [
        (p, label) for label, c in enumerate(CLASSES) for p in plain["Clipart"].files_by_class[c]
    ]
    lists = {
        split: [Sample(p, label, 0) for p, label in art]
        + [Sample(p, label, 1) for p, label in clip]
        for split, art, clip in (
            ("train", train, []),
            ("val", val, held_out),
            ("test", val, held_out),
        )
    }
    for split, samples in arrays.items():
        assert isinstance(samples, SampleArray)
        assert list(samples) == list(lists[split]) and samples == lists[split]
        assert all(isinstance(s, Sample) for s in samples)


def test_stylized_imagenet_official_splits_come_from_the_index(tmp_path, scans) -> None:
    sin_root = tmp_path / "sin"
    for split, count in (("train", 4), ("val", 2)):
        for label, wnid in enumerate(("n01", "n02")):
            for i in range(count):
                write_jpeg(sin_root / split / wnid / f"{wnid}_{i}.JPEG", seed=label * 10 + i)
    settings = {"root": str(sin_root), "index_dir": str(tmp_path / "index")}
    data = StylizedImageNetDataModule(**settings)
    train = data.split_samples["train"]
    assert isinstance(train, SampleArray) and len(train) > 0
    assert all("/train/" in s.path for s in train)
    assert all("/val/" in s.path for s in data.split_samples["val"])
    before = scans()
    again = StylizedImageNetDataModule(**settings).split_samples
    assert scans() == before and again["train"] == train


def test_sample_arrays_pickle_their_tables_by_file_name(folder, tmp_path) -> None:
    files = indexed_domain(DomainSource("Art", str(folder)), tmp_path / "index").files_by_class
    rows = labelled_rows(files, list(CLASSES))
    samples = SampleArray.build([(rows, 3)])
    table = samples.tables[0]
    assert isinstance(table.buffer, np.memmap)
    state = pickle.dumps(samples)
    assert len(state) < table.buffer.nbytes + 2000  # the paths are not in it...
    assert table.source_file.encode() in state  # ...the index file's name is
    assert pickle.loads(state) == samples
    assert samples[-1].domain_index == 3 and samples[1:3] == list(samples)[1:3]


def test_check_data_rescan_replaces_a_fresh_index(tmp_path, monkeypatch, scans) -> None:
    from experiments.check_data import main

    monkeypatch.setenv("STYLEBENCH_DATA_DIR", str(tmp_path / "data"))
    repo = Path(__file__).resolve().parents[3]
    args = [
        "--config", str(repo / "configs/officehome/demo.yaml"),
        "--config", str(repo / "tests/configs/officehome_tiny.yaml"),
        "--data.init_args.demo_classes", "2",
        "--data.init_args.images_per_class", "4",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--no-decode",
    ]  # fmt: skip
    assert main(args) == 0
    before = scans()
    assert main(args) == 0
    assert scans() == before  # the index was read
    assert main([*args, "--rescan"]) == 0
    assert scans() == before + 4  # each of the four domain folders scanned again


def test_indexes_of_removed_folders_are_pruned(tmp_path) -> None:
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    for root in (kept, gone):
        make_officehome_tree(root, {"Art": 1}, classes=CLASSES)
    indexed_domain(DomainSource("Art", str(gone / "Art")), tmp_path / "index")
    shutil.rmtree(gone)
    indexed_domain(DomainSource("Art", str(kept / "Art")), tmp_path / "index")
    names = {p.name for p in (tmp_path / "index").glob("*.index")}
    assert names == {index_file(kept / "Art", tmp_path / "index").name}
