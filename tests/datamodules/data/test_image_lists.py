"""The one image-list reader: its line rules, and that training and the check read alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.data.checks import check_datamodule, check_list_file
from datamodules.data.extra_domains import ExtraDomain
from datamodules.data.image_lists import entry_problem, parse_line, read_image_list
from datamodules.data.layout import DatasetLayoutError
from datamodules.officehome import OfficeHomeDataModule
from tests.helpers.trees import make_officehome_tree, write_jpeg


@pytest.mark.parametrize(
    ("line", "labels", "parsed"),
    [
        ("", "optional", None),
        ("   # a comment", "optional", None),
        ("Art/Mug/00001.jpg 3", "optional", ("Art/Mug/00001.jpg", "3")),
        ("Art/Mug/00001.jpg\t3", "optional", ("Art/Mug/00001.jpg", "3")),
        (
            "Real World/Mug/00001.jpg 3  # trailing comment",
            "optional",
            ("Real World/Mug/00001.jpg", "3"),
        ),
        ("Real World/Mug/00001.jpg", "optional", ("Real World/Mug/00001.jpg", None)),
        ("Art/Mug/00001.jpg Mug", "optional", ("Art/Mug/00001.jpg Mug", None)),
        ("Art/Mug/00001.jpg Mug", "required", ("Art/Mug/00001.jpg", "Mug")),
        ("Real World/Mug/00001.jpg -1", "required", ("Real World/Mug/00001.jpg", "-1")),
        ("dots/dots_0001.jpg 3", "none", ("dots/dots_0001.jpg 3", None)),
    ],
)
def test_line_rules(line: str, labels: str, parsed) -> None:
    assert parse_line(line, labels) == parsed


def test_required_label_missing_names_file_and_line(tmp_path: Path) -> None:
    list_file = tmp_path / "list.txt"
    list_file.write_text("# header\na.jpg 0\n\nb.jpg\n")
    with pytest.raises(DatasetLayoutError, match=r"list\.txt:4: expected `path label`"):
        read_image_list(list_file, labels="required")
    entries = read_image_list(list_file, labels="optional")
    assert [(e.line_number, e.path, e.label) for e in entries] == [
        (2, "a.jpg", "0"),
        (4, "b.jpg", None),
    ]
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        read_image_list(tmp_path / "missing.txt")


def test_entry_problem_rejects_absolute_and_escaping_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert entry_problem("a/b.jpg", root) is None
    assert entry_problem("a/../b.jpg", root) is None  # stays inside
    assert entry_problem("/etc/passwd", root)[0] == "absolute-path"
    assert entry_problem("~/x.jpg", root)[0] == "absolute-path"
    assert entry_problem("a/../../x.jpg", root)[0] == "escaping-path"


@pytest.fixture
def tree_with_list(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "officehome"
    make_officehome_tree(
        root, {d: 2 for d in ("Art", "Clipart", "Product", "Real World")}, classes=("Bike", "Mug")
    )
    sketch = tmp_path / "sketch"
    for class_name in ("bike", "mug"):
        for index in range(2):
            write_jpeg(sketch / class_name / f"{index}.png", seed=50 + index)
    list_file = sketch / "list.txt"
    # Class-name labels, a tab, a trailing comment: what the extra-domain reader accepts.
    list_file.write_text(
        "# sketch domain\nbike/0.png Bike\nbike/1.png\tBike\nmug/0.png Mug  # ok\nmug/1.png 1\n"
    )
    return root, list_file


def test_extra_domain_lists_are_checked_as_training_reads_them(tree_with_list) -> None:
    root, list_file = tree_with_list
    data = OfficeHomeDataModule(
        root=str(root),
        image_size=16,
        num_workers=0,
        extra_domains=[ExtraDomain("Sketch", image_list=str(list_file))],
    )
    sketch = data.domain_names.index("Sketch")
    assert (
        sum(
            s.domain_index == sketch
            for s in data.split_samples["train"] + data.split_samples["val"]
        )
        == 4
    )
    assert [f.path for f in data.list_files()] == [str(list_file)]
    assert check_datamodule(data, decode=False).ok
    # A line training cannot read is an error of the check too (it was invisible to it before).
    with open(list_file, "a") as handle:
        handle.write("mug/missing.png Mug\n../outside.png Mug\n")
    found = {f.kind: f.where for f in check_datamodule(data, decode=False).errors}
    assert found == {"missing-file": f"{list_file}:6", "escaping-path": f"{list_file}:7"}


def test_check_and_training_agree_on_a_label_less_line(tree_with_list) -> None:
    _, list_file = tree_with_list
    list_file.write_text("bike/0.png\n")
    found = [f.kind for f in check_list_file(list_file, list_file.parent, labels="required")]
    assert found == ["malformed-list"]
    with pytest.raises(DatasetLayoutError, match="expected `path label`"):
        read_image_list(list_file, labels="required")
