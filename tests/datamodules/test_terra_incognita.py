"""TerraIncognita: DomainBed's layout read by the DataModule, and DomainBed's build from the
camera-trap archive (location and category filter, one folder per annotation), on generated
copies of both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.data.layout import DatasetLayoutError
from datamodules.demo import generate_terra_incognita_demo
from datamodules.demo.domainbed import CCT_ANNOTATION_FILES, CCT_OTHER_CATEGORY
from datamodules.terra_incognita import TerraIncognitaDataModule, build_terra_incognita
from experiments.build_terra_incognita import main as build_main

DOMAINS = ["location_100", "location_38", "location_43", "location_46"]
CLASSES = [
    "bird",
    "bobcat",
    "cat",
    "coyote",
    "dog",
    "empty",
    "opossum",
    "rabbit",
    "raccoon",
    "squirrel",
]


def images_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*.jpg")
        if not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def domainbed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("terra")
    return generate_terra_incognita_demo(root, images_per_class=3, image_size=32)


@pytest.fixture(scope="module")
def cct(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cct")
    return generate_terra_incognita_demo(root, images_per_class=3, image_size=32, layout="cct")


def build(root: Path, **kwargs) -> TerraIncognitaDataModule:
    return TerraIncognitaDataModule(root=str(root), image_size=32, num_workers=0, **kwargs)


def test_domainbed_layout_domains_classes_and_counts(domainbed: Path) -> None:
    data = build(domainbed, held_out_domains=["L46"])
    assert data.image_root == domainbed / "terra_incognita"
    # sorted as strings, as DomainBed sorts them: environment 0 is location 100
    assert data.domain_names == DOMAINS and data.class_names == CLASSES
    assert {d.name: d.num_images for d in data.domains} == dict.fromkeys(DOMAINS, 30)
    counts = data.split_counts()
    assert counts["train"]["location_100"] == 20 and counts["val"]["location_100"] == 10
    assert counts["val"]["location_46"] == 30 and counts["train"]["location_46"] == 0


def test_build_from_the_archive_gives_domainbeds_layout(
    cct: Path, domainbed: Path, tmp_path: Path
) -> None:
    counts = build_terra_incognita(cct, tmp_path / "terra_incognita")
    assert counts == {d: dict.fromkeys(CLASSES, 3) for d in DOMAINS}
    built = images_under(tmp_path / "terra_incognita")
    assert built == images_under(domainbed / "terra_incognita")  # same names, same bytes
    # the archive's images at location 61 and of category `skunk` are not in the subset
    assert len(list((cct / "eccv_18_all_images_sm").glob("*.jpg"))) == len(built) + 3
    assert not list((tmp_path / "terra_incognita").glob(f"*/{CCT_OTHER_CATEGORY}"))
    assert not (tmp_path / "terra_incognita" / "location_61").exists()
    data = build(tmp_path)
    assert data.domain_names == DOMAINS and data.num_classes == 10


def write_annotations(folder: Path, images: list, annotations: list, categories: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(CCT_ANNOTATION_FILES):
        part = {"images": images[index::5], "annotations": [], "categories": categories}
        if index == 0:
            part["annotations"] = annotations  # annotations may sit in another file
        (folder / name).write_text(json.dumps(part))


def test_an_image_with_two_kept_categories_lands_in_both_folders(tmp_path: Path) -> None:
    """DomainBed copies an image once per kept annotation; locations compare as strings."""
    source = tmp_path / "cct"
    (source / "eccv_18_all_images_sm").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (source / "eccv_18_all_images_sm" / name).write_bytes(name.encode())
    images = [
        {"id": "a", "file_name": "a.jpg", "location": 38},
        {"id": "b", "file_name": "b.jpg", "location": "100"},
        {"id": "c", "file_name": "c.jpg", "location": 380},
    ]
    categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "car"}]
    annotations = [
        {"image_id": "a", "category_id": 1},
        {"image_id": "a", "category_id": 2},
        {"image_id": "b", "category_id": 3},
        {"image_id": "b", "category_id": 1},
        {"image_id": "c", "category_id": 1},
    ]
    write_annotations(source / "eccv_18_annotation_files", images, annotations, categories)
    counts = build_terra_incognita(source, tmp_path / "out", copy=True)
    assert counts == {"location_100": {"dog": 1}, "location_38": {"dog": 1, "cat": 1}}
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg"))
    assert found == ["location_100/dog/b.jpg", "location_38/cat/a.jpg", "location_38/dog/a.jpg"]
    assert (tmp_path / "out" / "location_38" / "cat" / "a.jpg").read_bytes() == b"a.jpg"


def test_build_errors_name_the_file(tmp_path: Path) -> None:
    source = tmp_path / "cct"
    (source / "eccv_18_all_images_sm").mkdir(parents=True)
    folder = source / "eccv_18_annotation_files"
    write_annotations(folder, [], [], [])
    (folder / "train_annotations.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match=r"train_annotations.json is not readable JSON"):
        build_terra_incognita(source, tmp_path / "out")
    (folder / "train_annotations.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetLayoutError, match=r"train_annotations.json: missing keys"):
        build_terra_incognita(source, tmp_path / "out")
    (folder / "train_annotations.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"train_annotations.json does not exist"):
        build_terra_incognita(source, tmp_path / "out")
    write_annotations(
        folder,
        [{"id": "x", "file_name": "x.jpg", "location": 43}],
        [{"image_id": "x", "category_id": 1}],
        [{"id": 1, "name": "bird"}],
    )
    with pytest.raises(DatasetLayoutError, match=r"x.jpg \(annotated at location_43\) does not"):
        build_terra_incognita(source, tmp_path / "out")


def test_the_archive_layout_is_refused_with_the_build_command(cct: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"camera-trap archive.*build_terra_incognita"):
        _ = build(cct).domains
    with pytest.raises(DatasetLayoutError, match=r"does not exist.*eccv_18_all_images_sm\.tar"):
        _ = build(tmp_path / "nowhere").domains


def test_build_command(cct: Path, tmp_path: Path, capsys) -> None:
    assert build_main(["--source", str(cct), "--dest", str(tmp_path / "t"), "--copy"]) == 0
    assert "total: 120 images" in capsys.readouterr().out
