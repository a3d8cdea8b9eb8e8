"""DTD DataModule on a generated tree: torchvision parity, label-file validation, folds, demo."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from torchvision.datasets import DTD

from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import DTD_DEMO_CLASSES, generate_dtd_demo
from datamodules.dtd import DTDDataModule, DTDDemoDataModule

NUM_CLASSES, IMAGES_PER_CLASS = 4, 9


@pytest.fixture(scope="module")
def download_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision's download folder: the archive is extracted to `<root>/dtd/dtd`."""
    root = tmp_path_factory.mktemp("torchvision")
    generate_dtd_demo(
        root / "dtd" / "dtd",
        num_classes=NUM_CLASSES,
        images_per_class=IMAGES_PER_CLASS,
        image_size=16,
    )
    return root


@pytest.fixture
def dtd_copy(download_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tree, for tests that damage it."""
    copy = tmp_path / "dtd"
    shutil.copytree(download_root / "dtd" / "dtd", copy)
    return copy


def make(root, **settings) -> DTDDataModule:
    return DTDDataModule(root=str(root), num_workers=0, image_size=16, **settings)


def paths(samples) -> list[str]:
    return [str(Path(s.path).resolve()) for s in samples]


@pytest.mark.parametrize("partition", [1, 7])
def test_splits_equal_torchvision_dtd(download_root: Path, partition: int) -> None:
    data = make(download_root / "dtd" / "dtd", partition=partition, train_on="train")
    assert data.domain_names == ["dtd"] and data.protocol == f"partition{partition}"
    for split in ("train", "val", "test"):
        reference = DTD(str(download_root), split=split, partition=partition, download=False)
        ours = data.split_samples[split]
        assert paths(ours) == [str(Path(p).resolve()) for p in reference._image_files]
        assert [data.class_names[s.label] for s in ours] == [
            reference.classes[label] for label in reference._labels
        ]
    assert data.class_names == sorted(DTD_DEMO_CLASSES[:NUM_CLASSES])


def test_train_plus_val_trains_on_both(download_root: Path) -> None:
    data = make(download_root, partition=2, train_on="train+val")  # found under root/dtd/dtd
    train = DTD(str(download_root), split="train", partition=2)._image_files
    val = DTD(str(download_root), split="val", partition=2)._image_files
    assert paths(data.split_samples["train"]) == [str(p.resolve()) for p in train + val]
    assert data.protocol == "partition2_trainval"
    # each split of a partition holds a third of every class, as in DTD
    assert Counter(s.label for s in data.split_samples["test"]) == dict.fromkeys(
        range(NUM_CLASSES), IMAGES_PER_CLASS // 3
    )


@pytest.mark.parametrize("num_folds", [3, 5])
def test_folds_are_disjoint_cover_everything_and_are_stratified(
    download_root: Path, num_folds: int
) -> None:
    everything = sorted(str(p.resolve()) for p in download_root.glob("dtd/dtd/images/*/*.jpg"))
    held_out = []
    for fold in range(1, num_folds + 1):
        data = make(download_root, num_folds=num_folds, fold=fold, split_seed=3)
        val, test, train = (paths(data.split_samples[s]) for s in ("val", "test", "train"))
        assert val == test and not set(val) & set(train)
        assert sorted(val + train) == everything
        per_class = Counter(s.label for s in data.split_samples["val"])
        expected = IMAGES_PER_CLASS / num_folds
        assert all(abs(per_class[c] - expected) < 1 for c in range(NUM_CLASSES)), per_class
        assert data.protocol == f"fold{fold}of{num_folds}"
        held_out += val
    assert sorted(held_out) == everything  # every image is held out exactly once
    reseeded = make(download_root, num_folds=num_folds, fold=1, split_seed=4)
    assert paths(reseeded.split_samples["val"]) != paths(
        make(download_root, num_folds=num_folds, fold=1, split_seed=3).split_samples["val"]
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/etc/passwd", "relative to images/"),
        ("dots/../../secret.jpg", "relative to images/"),
        ("velvety/velvety_0001.jpg", "unknown class 'velvety'"),
        ("dots/dots_0999.jpg", "does not exist"),
        ("dots", "expected <class>/<file>"),
    ],
)
def test_bad_label_line_names_file_and_line(dtd_copy: Path, line: str, message: str) -> None:
    label_file = dtd_copy / "labels" / "val3.txt"
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    with pytest.raises(DatasetLayoutError, match=message) as error:
        make(dtd_copy, partition=3).setup("fit")
    assert f"{label_file}, line 2" in str(error.value)


def test_duplicates_are_rejected(dtd_copy: Path) -> None:
    label_file = dtd_copy / "labels" / "train1.txt"
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DatasetLayoutError, match=f"line {len(lines) + 1}.*duplicate of line 2"):
        make(dtd_copy).setup("fit")
    label_file.write_text("\n".join(lines) + "\n")
    test_file = dtd_copy / "labels" / "test1.txt"
    test_file.write_text(test_file.read_text() + lines[0] + "\n")
    with pytest.raises(DatasetLayoutError, match="must be disjoint"):
        make(dtd_copy).setup("fit")


def test_missing_dataset_explains_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as error:
        make(tmp_path / "nowhere").setup("fit")
    text = str(error.value)
    assert str(tmp_path / "nowhere" / "images") in text
    assert "robots.ox.ac.uk/~vgg/data/dtd" in text and "dtd-r1.0.1.tar.gz" in text
    assert "labels/{train,val,test}{1..10}.txt" in text and "configs/dtd/demo.yaml" in text


def test_invalid_settings_are_rejected(download_root: Path) -> None:
    for settings, message in [
        ({"partition": 11}, "partition=11"),
        ({"train_on": "all"}, "train_on='all'"),
        ({"num_folds": 5, "fold": 6}, "fold=6"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(download_root, **settings)
    # DTD fixes the fractions in its call of the base constructor: LightningCLI does not offer
    # them and Python rejects them given twice.
    with pytest.raises(TypeError, match="val_fraction"):
        make(download_root, val_fraction=0.3)


def test_demo_is_generated_once_and_loads(tmp_path: Path) -> None:
    settings = {"demo_classes": 3, "images_per_class": 6, "demo_image_size": 16}
    first = DTDDemoDataModule(cache_dir=str(tmp_path), num_workers=0, image_size=16, **settings)
    again = DTDDemoDataModule(cache_dir=str(tmp_path), num_workers=0, image_size=16, **settings)
    assert first.dtd_root == again.dtd_root and len(list(tmp_path.iterdir())) == 1
    assert sorted(p.name for p in (first.dtd_root / "labels").iterdir()) == sorted(
        f"{split}{p}.txt" for split in ("train", "val", "test") for p in range(1, 11)
    )
    first.setup("fit")
    images, _labels, domains = next(iter(first.train_dataloader()))
    assert images.shape[1:] == (3, 16, 16) and set(domains.tolist()) == {0}
    assert first.num_classes == 3 and first.dataset_name == "dtd"


def test_data_check_reads_the_partitions_label_files(dtd_copy: Path) -> None:
    from datamodules.data.checks import check_datamodule

    data = make(dtd_copy, partition=2)
    assert [Path(f.path).name for f in data.list_files()] == ["train2.txt", "val2.txt", "test2.txt"]
    assert not [f for f in check_datamodule(data, decode=False).findings if f.severity == "error"]
    # a label file damaged after the DataModule was built is caught by the check
    with open(dtd_copy / "labels" / "val2.txt", "a") as handle:
        handle.write("../outside.jpg\n")
    findings = check_datamodule(data, decode=False).findings
    assert any(f.kind == "escaping-path" and "val2.txt" in str(f.path) for f in findings), findings
