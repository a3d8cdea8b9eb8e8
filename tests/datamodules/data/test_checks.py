"""The data check and the `on_bad_image` policy, on small generated Office-Home trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.data.checks import (
    check_datamodule,
    check_image_file,
    check_list_file,
    find_leakage,
)
from datamodules.data.dataset import ImageSampleDataset, collate_skipping_none, read_bad_images
from datamodules.data.image_lists import ImageListFile
from datamodules.data.layout import DatasetLayoutError, DomainData, Sample, class_folder_findings
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import (
    build_officehome,
    small_officehome_tree,
    write_jpeg,
)

CLASSES = ("Bike", "Mug")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    return small_officehome_tree(tmp_path / "officehome", classes=CLASSES)


def kinds(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report.findings:
        found.setdefault(finding.kind, []).append(finding.path or "")
    return found


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_clean_tree_passes(small_root: Path) -> None:
    report = check_datamodule(build_officehome(small_root))
    assert report.ok, report.format()
    assert report.images_checked == 40
    assert report.warnings == []


def test_broken_files_are_each_reported_with_their_path(small_root: Path) -> None:
    art = small_root / "Art"
    (art / "Bike" / "00001.jpg").write_bytes(b"")  # zero bytes
    truncate(art / "Bike" / "00002.jpg")  # a download cut short
    (art / "Mug" / "00001.jpg").write_text("<html>404 Not Found</html>")  # not an image
    (art / "Mug" / "notes.txt").write_text("labelled by hand")  # ignored, but said
    report = check_datamodule(build_officehome(small_root))
    found = kinds(report)
    assert found["zero-byte"] == [str(art / "Bike" / "00001.jpg")]
    assert found["truncated"] == [str(art / "Bike" / "00002.jpg")]
    assert found["unreadable"] == [str(art / "Mug" / "00001.jpg")]
    assert found["non-image"] == [str(art / "Mug" / "notes.txt")]
    assert len(report.errors) == 3 and not report.ok
    assert sorted(report.bad_image_paths()) == sorted(
        str(art / c / n)
        for c, n in [("Bike", "00001.jpg"), ("Bike", "00002.jpg"), ("Mug", "00001.jpg")]
    )
    text = report.format()
    assert "ERROR [truncated]" in text and "3 errors, 1 warnings" in text


def test_check_image_file_names_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    assert check_image_file(good) is None
    truncated_png = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        truncated_png
    )
    truncate(truncated_png)
    assert check_image_file(truncated_png).kind == "truncated"


def test_identical_files_across_splits_are_leakage(small_root: Path) -> None:
    # Every Art image of "Bike" has the same bytes, so some copies land in train and in val.
    source = small_root / "Art" / "Bike" / "00001.jpg"
    for index in range(2, 6):
        shutil.copy(source, small_root / "Art" / "Bike" / f"{index:05d}.jpg")
    report = check_datamodule(build_officehome(small_root))
    leaks = [f for f in report.errors if f.kind == "leakage"]
    assert len(leaks) == 1
    assert "train" in leaks[0].message and "val" in leaks[0].message


def test_same_path_in_val_and_test_of_a_held_out_domain_is_not_leakage(small_root: Path) -> None:
    # Held-out domains are val and test at once by design; only distinct files count.
    report = check_datamodule(build_officehome(small_root, held_out_domains=["Art"]))
    assert report.ok, report.format()


def test_find_leakage_warns_of_duplicates_within_one_split(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", seed=1)
    shutil.copy(tmp_path / "a.jpg", tmp_path / "b.jpg")
    within = find_leakage({"train": [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]})
    assert [(f.severity, f.kind) for f in within] == [("warning", "duplicate-content")]
    leaks = find_leakage({"train": [str(tmp_path / "a.jpg")], "test": [str(tmp_path / "b.jpg")]})
    assert [f.kind for f in leaks] == ["leakage"]


def test_class_mismatch_and_empty_classes_and_domains_are_reported() -> None:
    domains = [
        DomainData("Art", Path("/d/Art"), {"Bike": ["a.jpg"], "Mug": ["b.jpg"]}),
        DomainData("Clipart", Path("/d/Clipart"), {"Bike": ["c.jpg"], "Pen": ["d.jpg"]}),
        DomainData("Product", Path("/d/Product"), {"Bike": ["e.jpg"], "Mug": []}),
        DomainData("Real World", Path("/d/Real World"), {}),
    ]
    found = {f.kind: f.message for f in class_folder_findings(domains)}
    assert "missing ['Mug'], extra ['Pen']" in found["class-mismatch"]
    assert "'Mug' of domain 'Product'" in found["empty-class"]
    assert "'Real World' has no images" in found["empty-domain"]


def test_list_files_reject_absolute_and_escaping_paths(small_root: Path, tmp_path: Path) -> None:
    list_file = tmp_path / "train.txt"
    list_file.write_text(
        "# path label\n"
        "Art/Bike/00001.jpg 0\n"
        "Real World/Mug/00002.jpg 1\n"  # spaces in paths are fine
        f"{small_root}/Art/Bike/00002.jpg 0\n"
        "../outside.jpg 1\n"
        "Art/../../officehome/Art/Bike/00003.jpg\n"  # leaves the root, even if it comes back
        "Art/Bike/missing.jpg\n"
        "\n"
    )
    found = kinds_of_list(check_list_file(list_file, small_root))
    assert found == {
        "absolute-path": [f"{list_file}:4"],
        "escaping-path": [f"{list_file}:5"],
        "missing-file": [f"{list_file}:7"],
    }


def kinds_of_list(findings) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in findings:
        found.setdefault(finding.kind, []).append(finding.where)
    return found


def test_datamodule_list_files_are_checked(small_root: Path, tmp_path: Path) -> None:
    list_file = tmp_path / "labels.txt"
    list_file.write_text("/etc/passwd\n")

    class WithList(OfficeHomeDataModule):
        def list_files(self):
            return [ImageListFile(str(list_file), self.root)]

    report = check_datamodule(WithList(root=str(small_root), image_size=16))
    assert [f.kind for f in report.errors] == ["absolute-path"]


def test_check_data_before_training_stops_on_errors(small_root: Path) -> None:
    (small_root / "Clipart" / "Mug" / "00003.jpg").write_bytes(b"")
    datamodule = build_officehome(small_root, check_data=True)
    with pytest.raises(DatasetLayoutError, match=r"zero-byte.*00003\.jpg"):
        datamodule.prepare_data()
    # Under `skip`, bad images are tolerated (they are skipped and counted in training).
    build_officehome(small_root, check_data=True, on_bad_image="skip").prepare_data()


def test_on_bad_image_must_be_error_or_skip(small_root: Path) -> None:
    with pytest.raises(ValueError, match=r"valid choices: \['error', 'skip'\]"):
        build_officehome(small_root, on_bad_image="ignore")


def test_skip_drops_bad_images_and_records_them(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    write_jpeg(good, seed=0)
    bad.write_bytes(b"not a jpeg")
    samples = [Sample(str(good), 0, 0), Sample(str(bad), 1, 0), Sample(str(good), 2, 0)]

    def to_tensor(image):
        return torch.from_numpy(image.copy()).permute(2, 0, 1)

    strict = ImageSampleDataset(samples, to_tensor)
    with pytest.raises(OSError, match=r"bad\.jpg"):
        strict[1]
    log_dir = tmp_path / "bad-images"
    log_dir.mkdir()
    lenient = ImageSampleDataset(
        samples, to_tensor, on_bad_image="skip", bad_image_dir=str(log_dir)
    )
    batch = collate_skipping_none([lenient[i] for i in range(3)])
    images, labels, _ = batch
    assert images.shape[0] == 2 and labels.tolist() == [0, 2]
    assert collate_skipping_none([lenient[1]]) is None
    assert read_bad_images(str(log_dir)) == [str(bad)]


def test_skip_counts_bad_images_from_worker_processes(small_root: Path) -> None:
    bad = small_root / "Art" / "Bike" / "00004.jpg"
    bad.write_bytes(b"")
    datamodule = build_officehome(
        small_root, on_bad_image="skip", held_out_domains=["Art"], batch_size=8
    )
    datamodule.num_workers = 1  # one real worker process: the count must come back from it
    datamodule.setup("fit")
    seen = sum(len(batch[1]) for batch in datamodule.val_dataloader())
    # Art's 10 images (held out: all validated) + 1 per class in the 3 others, 1 skipped
    assert seen == 10 + 6 - 1
    assert datamodule.bad_images() == [str(bad)]
