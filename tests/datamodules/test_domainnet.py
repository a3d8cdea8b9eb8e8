"""DomainNet on generated copies as unzipped (domain folders, official lists, listed duplicates)
and as DomainBed leaves it (`domain_net/`, duplicates deleted): domains, classes in DomainBed's
order, counts, DomainBed's duplicates dropped, the official lists and their line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamodules.data.checks import check_datamodule
from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import generate_domainnet_demo
from datamodules.demo.domainbed import DOMAINNET_DUPLICATES_FILE
from datamodules.domainnet import DomainNetDataModule, DomainNetDemoDataModule

DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
# ASCII order, as DomainBed's sorted(): the three `The_*` classes first
CLASSES = [
    "The_Eiffel_Tower",
    "The_Great_Wall_of_China",
    "The_Mona_Lisa",
    "aircraft_carrier",
    "animal_migration",
    "t-shirt",
    "teddy-bear",
    "wine_glass",
    "zebra",
    "zigzag",
]
PER_CLASS = 3


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("domainnet")
    return generate_domainnet_demo(root, images_per_class=PER_CLASS, image_size=32)


@pytest.fixture(scope="module")
def domainbed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("domain_net_domainbed")
    return generate_domainnet_demo(
        root, images_per_class=PER_CLASS, image_size=32, layout="domainbed"
    )


def build(root: Path, **kwargs) -> DomainNetDataModule:
    return DomainNetDataModule(root=str(root), image_size=32, num_workers=0, **kwargs)


def relative_files(data: DomainNetDataModule) -> set[str]:
    return {
        str(Path(p).relative_to(data.image_root))
        for d in data.domains
        for paths in d.files_by_class.values()
        for p in paths
    }


def test_layouts_domains_classes_and_duplicates(unzipped: Path, domainbed: Path) -> None:
    duplicates = unzipped / DOMAINNET_DUPLICATES_FILE
    listed = duplicates.read_text().splitlines()
    assert len(listed) == 5 and not any(p.startswith("quickdraw/") for p in listed)
    everything = build(unzipped)
    assert everything.domain_names == DOMAINS and everything.class_names == CLASSES
    counts = {d.name: d.num_images for d in everything.domains}
    assert counts == {d: 30 + (d != "quickdraw") for d in DOMAINS}
    deduplicated = build(unzipped, duplicates_file=str(duplicates))
    assert {d.name: d.num_images for d in deduplicated.domains} == dict.fromkeys(DOMAINS, 30)
    assert relative_files(everything) - relative_files(deduplicated) == set(listed)
    reference = build(domainbed)
    assert reference.image_root == domainbed / "domain_net"
    assert relative_files(reference) == relative_files(deduplicated)
    # listed files that are already deleted (DomainBed's layout) are ignored
    after_deletion = build(domainbed, duplicates_file=str(duplicates))
    assert relative_files(after_deletion) == relative_files(reference)


def read_list(path: Path) -> list[tuple[str, int]]:
    pairs = [line.rsplit(" ", 1) for line in path.read_text().splitlines()]
    return [(relative, int(label)) for relative, label in pairs]


def test_file_names_carry_the_list_label_plus_one(unzipped: Path) -> None:
    labels: dict[str, set[int]] = {}
    for domain in DOMAINS:
        for split in ("train", "test"):
            for path, label in read_list(unzipped / f"{domain}_{split}.txt"):
                domain_part, class_name, file = path.split("/")
                assert domain_part == domain and file.startswith(f"{domain}_{label + 1:03d}_")
                labels.setdefault(class_name, set()).add(label)
    assert all(len(found) == 1 for found in labels.values())
    # the lists number the classes in another order than the folders' sorted order
    order = sorted(labels, key=lambda c: next(iter(labels[c])))
    assert order != CLASSES and sorted(order) == CLASSES


def test_official_splits(unzipped: Path) -> None:
    data = build(unzipped, split="official", held_out_domains=["quick"], val_fraction=0.5)
    by_split: dict[str, dict[str, set[str]]] = {}
    for split, samples in data.split_samples.items():
        by_split[split] = {d: set() for d in DOMAINS}
        for s in samples:
            relative = str(Path(s.path).relative_to(data.image_root))
            assert relative.split("/")[1] == CLASSES[s.label]  # the label is the folder's index
            by_split[split][data.domain_names[s.domain_index]].add(relative)
    for domain in DOMAINS:
        train = {p for p, _ in read_list(unzipped / f"{domain}_train.txt")}
        test = {p for p, _ in read_list(unzipped / f"{domain}_test.txt")}
        assert by_split["test"][domain] == test
        if domain == "quickdraw":
            assert by_split["val"][domain] == test and not by_split["train"][domain]
        else:  # the train list, less a stratified val_fraction of it
            assert by_split["train"][domain] | by_split["val"][domain] == train
            assert not by_split["train"][domain] & by_split["val"][domain]
            assert len(by_split["val"][domain]) == 10  # 2 listed per class, half of each
    assert len(data.list_files()) == 12
    assert check_datamodule(data, workers=1).ok


def edited_lists(source: Path, target: Path, name: str, edit) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*_t*.txt"):
        shutil.copy(path, target / path.name)
    lines = (target / name).read_text().splitlines()
    (target / name).write_text("\n".join(edit(lines)) + "\n")
    return target


def set_label(index: int, label: int):
    def edit(lines: list[str]) -> list[str]:
        lines[index] = f"{lines[index].rsplit(' ', 1)[0]} {label}"
        return lines

    return edit


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (345, r"label 345 outside 0\.\.344"),
        (7, r"label 7 for class 'aircraft_carrier', which earlier lines label 0"),
    ],
)
def test_inconsistent_labels_are_errors_at_file_and_line(
    unzipped: Path, tmp_path: Path, label: int, message: str
) -> None:
    # line 1 of infograph_test.txt is aircraft_carrier's (label 0 in every other list)
    lists = edited_lists(unzipped, tmp_path, "infograph_test.txt", set_label(0, label))
    data = build(unzipped, split="official", split_dir=str(lists))
    with pytest.raises(DatasetLayoutError, match=message) as error:
        _ = data.split_samples
    assert f"{lists / 'infograph_test.txt'}:1:" in str(error.value)


def test_one_label_for_two_classes_is_an_error(unzipped: Path, tmp_path: Path) -> None:
    lines = (unzipped / "clipart_train.txt").read_text().splitlines()
    other = next(i for i, line in enumerate(lines) if "/zebra/" in line)
    lists = edited_lists(unzipped, tmp_path, "clipart_train.txt", set_label(other, 0))
    with pytest.raises(DatasetLayoutError, match=r"label 0 for class 'zebra'; earlier lines give"):
        _ = build(unzipped, split="official", split_dir=str(lists)).split_samples


def test_listed_duplicates_are_left_out_of_the_lists_too(unzipped: Path, tmp_path: Path) -> None:
    duplicate = (unzipped / DOMAINNET_DUPLICATES_FILE).read_text().splitlines()[0]
    label = int(duplicate.split("/")[2].split("_")[1]) - 1
    lists = edited_lists(
        unzipped, tmp_path, "clipart_test.txt", lambda lines: [*lines, f"{duplicate} {label}"]
    )
    kept = build(unzipped, split="official", split_dir=str(lists))
    dropped = build(
        unzipped,
        split="official",
        split_dir=str(lists),
        duplicates_file=str(unzipped / DOMAINNET_DUPLICATES_FILE),
    )
    assert kept.split_counts()["test"]["clipart"] == dropped.split_counts()["test"]["clipart"] + 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("clipart/zebra", r"expected <domain>/<class>/<file>"),
        ("drawings/zebra/x.jpg", r"unknown domain 'drawings'"),
        ("/clipart/zebra/x.jpg", r"expected <domain>/<class>/<file>"),
    ],
)
def test_duplicates_file_errors_name_file_and_line(
    unzipped: Path, tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "duplicates.txt"
    path.write_text(f"clipart/zebra/a.jpg\n\n{line}\n")
    with pytest.raises(DatasetLayoutError, match=message) as error:
        _ = build(unzipped, duplicates_file=str(path)).domains
    assert f"{path}:3:" in str(error.value)
    path.write_text("clipart/zebra/a.jpg\nclipart/zebra/a.jpg\n")
    with pytest.raises(DatasetLayoutError, match=rf"{path}:2: .*listed again \(first at line 1\)"):
        _ = build(unzipped, duplicates_file=str(path)).domains


def test_demo_module_drops_its_own_duplicates(tmp_path: Path) -> None:
    data = DomainNetDemoDataModule(
        cache_dir=str(tmp_path),
        demo_classes=2,
        images_per_class=2,
        demo_image_size=32,
        image_size=32,
        num_workers=0,
    )
    assert {d.name: d.num_images for d in data.domains} == dict.fromkeys(DOMAINS, 4)
    assert data.class_names == ["aircraft_carrier", "animal_migration"]
