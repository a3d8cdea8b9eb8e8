"""PACS on generated copies in the published layout (`kfold/` + split lists) and in DomainBed's
(`PACS/`): domains, classes, counts, the holdout and official splits, the lists' line parsing
with errors naming file and line, DomainBed's environment names and per-domain batches."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from datamodules.data.checks import check_datamodule
from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import generate_pacs_demo
from datamodules.demo.__main__ import main as demo_main
from datamodules.pacs import PACSDataModule

DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
PER_CLASS = 5


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> Path:
    return generate_pacs_demo(
        tmp_path_factory.mktemp("pacs"), images_per_class=PER_CLASS, image_size=32
    )


@pytest.fixture(scope="module")
def domainbed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pacs_domainbed")
    return generate_pacs_demo(root, images_per_class=PER_CLASS, image_size=32, layout="domainbed")


def build(root: Path, **kwargs) -> PACSDataModule:
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("num_workers", 0)
    return PACSDataModule(root=str(root), **kwargs)


def relative_files(data: PACSDataModule) -> set[str]:
    return {
        str(Path(path).relative_to(data.image_root))
        for domain in data.domains
        for paths in domain.files_by_class.values()
        for path in paths
    }


@pytest.mark.parametrize("layout", ["distributed", "domainbed"])
def test_both_layouts_give_the_real_domains_classes_and_counts(
    layout: str, distributed: Path, domainbed: Path
) -> None:
    root = distributed if layout == "distributed" else domainbed
    for given in (root, data_folder := root / ("kfold" if layout == "distributed" else "PACS")):
        data = build(given)
        assert data.image_root == data_folder
        assert data.domain_names == DOMAINS
        assert data.class_names == CLASSES and data.num_classes == 7
        # .DS_Store, Thumbs.db and __MACOSX/ are neither images nor domains
        assert {d.name: d.num_images for d in data.domains} == dict.fromkeys(DOMAINS, 35)
    sketches = data.domains[3].files_by_class["dog"]
    assert all(p.endswith(".png") for p in sketches)
    assert all(p.endswith(".jpg") for p in data.domains[0].files_by_class["dog"])


def test_the_two_layouts_hold_the_same_files(distributed: Path, domainbed: Path) -> None:
    assert relative_files(build(distributed)) == relative_files(build(domainbed))


def test_domainbed_environment_names_and_any_case_are_accepted(distributed: Path) -> None:
    data = build(distributed, held_out_domains=["S"], domains=["a", "C", "Photo", "sketch"])
    assert data.held_out_domains == ["sketch"] and data.trained_domains == DOMAINS[:3]
    assert data.protocol == "leave_out_sketch"
    with pytest.raises(ValueError, match=r"unknown PACS domain 'clipart'.*art_painting \(A\)"):
        build(distributed, held_out_domains=["clipart"])


def test_holdout_split_is_a_seeded_20_percent_per_class_and_disjoint(distributed: Path) -> None:
    data = build(distributed, held_out_domains=["sketch"])
    counts = data.split_counts()
    # 5 images per class: round(5 * 0.2) = 1 validation image per class and trained domain
    assert counts["train"] == {"art_painting": 28, "cartoon": 28, "photo": 28, "sketch": 0}
    assert counts["val"] == {"art_painting": 7, "cartoon": 7, "photo": 7, "sketch": 35}
    paths = {split: {s.path for s in samples} for split, samples in data.split_samples.items()}
    assert not paths["train"] & paths["val"]
    val_labels = Counter(
        s.label for s in data.split_samples["val"] if data.domain_names[s.domain_index] == "photo"
    )
    assert val_labels == dict.fromkeys(range(7), 1)
    assert build(distributed, held_out_domains=["S"]).split_samples == data.split_samples
    other = build(distributed, held_out_domains=["S"], split_seed=1).split_samples["val"]
    assert other != data.split_samples["val"]


def read_list(root: Path, domain: str, split: str) -> list[tuple[str, int]]:
    lines = (root / f"{domain}_{split}_kfold.txt").read_text().splitlines()
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in lines]


def test_official_splits_follow_the_lists(distributed: Path) -> None:
    data = build(distributed, split="official", held_out_domains=["sketch"])
    assert data.protocol == "leave_out_sketch_official"
    by_split: dict[str, dict[str, set[tuple[str, int]]]] = {}
    for split, samples in data.split_samples.items():
        by_split[split] = {d: set() for d in DOMAINS}
        for s in samples:
            relative = str(Path(s.path).relative_to(data.image_root))
            by_split[split][data.domain_names[s.domain_index]].add((relative, s.label + 1))
    for domain in DOMAINS[:3]:
        assert by_split["train"][domain] == set(read_list(distributed, domain, "train"))
        assert by_split["val"][domain] == set(read_list(distributed, domain, "crossval"))
        assert by_split["test"][domain] == by_split["val"][domain]  # the test list is all
    sketch = set(read_list(distributed, "sketch", "test"))
    assert len(sketch) == 35 and by_split["val"]["sketch"] == by_split["test"]["sketch"] == sketch
    assert by_split["train"]["sketch"] == set()
    assert len(data.list_files()) == 12
    assert check_datamodule(data, workers=1).ok


def with_edited_list(source: Path, target: Path, name: str, edit) -> Path:
    """The demo's lists copied to `target`, `name` changed by `edit(lines) -> lines`."""
    target.mkdir(exist_ok=True)
    for path in source.glob("*_kfold.txt"):
        shutil.copy(path, target / path.name)
    lines = (target / name).read_text().splitlines()
    (target / name).write_text("\n".join(edit(lines)) + "\n")
    return target


def path_of(line: str) -> str:
    return line.rsplit(" ", 1)[0]


# Line 3 of photo_train_kfold.txt (a dog, label 1) rewritten, and the error expected.
LIST_ERRORS = {
    "no label": (path_of, r"expected `path label`"),
    "label": (lambda line: f"{path_of(line)} 3", r"label 3 does not match class 'dog'.*is 1"),
    "not integer": (lambda line: f"{path_of(line)} one", r"label 'one' is not an integer"),
    "class": (lambda line: line.replace("/dog/", "/cat/"), r"unknown class 'cat'"),
    "domain": (lambda line: "sketch/dog/1001.png 1", r"names domain 'sketch'; this list is"),
    "missing": (lambda line: "photo/dog/pic_999.jpg 1", r"pic_999.jpg does not exist"),
    "escape": (lambda line: f"photo/../{line}", r"without '\.\.'"),
    "parts": (lambda line: "photo/pic_001.jpg 1", r"expected <domain>/<class>/<file>"),
}


@pytest.mark.parametrize("case", LIST_ERRORS)
def test_list_line_errors_name_file_and_line(distributed: Path, tmp_path: Path, case: str) -> None:
    edit, message = LIST_ERRORS[case]
    lists = with_edited_list(
        distributed,
        tmp_path,
        "photo_train_kfold.txt",
        lambda lines: [edit(line) if i == 2 else line for i, line in enumerate(lines)],
    )
    data = build(distributed, split="official", split_dir=str(lists))
    with pytest.raises(DatasetLayoutError, match=message) as error:
        _ = data.split_samples
    assert f"{lists / 'photo_train_kfold.txt'}:3:" in str(error.value)


def test_a_repeated_line_and_overlapping_lists_are_errors(
    distributed: Path, tmp_path: Path
) -> None:
    repeated = with_edited_list(
        distributed, tmp_path / "a", "cartoon_train_kfold.txt", lambda lines: [*lines, lines[0]]
    )
    with pytest.raises(DatasetLayoutError, match=r"listed again \(first at line 1\)") as error:
        _ = build(distributed, split="official", split_dir=str(repeated)).split_samples
    count = len(read_list(distributed, "cartoon", "train"))
    assert f"cartoon_train_kfold.txt:{count + 1}:" in str(error.value)
    crossval = (distributed / "cartoon_crossval_kfold.txt").read_text().splitlines()
    overlapping = with_edited_list(
        distributed, tmp_path / "b", "cartoon_train_kfold.txt", lambda lines: [*lines, crossval[0]]
    )
    with pytest.raises(DatasetLayoutError, match=r"cartoon_train_kfold.txt and .*crossval"):
        _ = build(distributed, split="official", split_dir=str(overlapping)).split_samples


def test_missing_data_and_lists_say_where_and_how_to_get_them(
    domainbed: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetLayoutError, match=r"does not exist.*eecs\.qmul\.ac\.uk"):
        _ = build(tmp_path / "nowhere").domains
    (tmp_path / "PACS" / "photo").mkdir(parents=True)
    with pytest.raises(
        DatasetLayoutError, match=r"\['art_painting', 'cartoon', 'sketch'\] not found in .*PACS \("
    ):
        _ = build(tmp_path).domains
    # DomainBed's layout has no lists: split official says where it looked
    with pytest.raises(DatasetLayoutError, match=r"art_painting_train_kfold.txt not found"):
        _ = build(domainbed, split="official").split_samples


def test_per_domain_batches_hold_that_many_images_of_each_trained_domain(
    distributed: Path,
) -> None:
    data = build(distributed, held_out_domains=["P"], batch_size_per_domain=3)
    data.setup("fit")
    assert data.batch_size == 9
    for _, _, domains in data.train_dataloader():
        assert Counter(domains.tolist()) == {0: 3, 1: 3, 3: 3}
    with pytest.raises(ValueError, match="batch_size_per_domain=0"):
        build(distributed, batch_size_per_domain=0)


def test_demo_command_writes_the_copy(tmp_path: Path, capsys) -> None:
    demo_main(["pacs", "--root", str(tmp_path), "--images", "2", "--image-size", "32"])
    assert "wrote 56 images" in capsys.readouterr().out
    assert build(tmp_path, split="official").split_counts()["train"]["photo"] == 7
