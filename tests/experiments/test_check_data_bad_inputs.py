"""Every bad input `python -m experiments.check_data` must report as one row (never crash): the
exact line, the exit status and the `--json` shape, on small generated Office-Home trees."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from datamodules.officehome import OfficeHomeDataModule
from experiments.check_data import main
from tests.helpers.bad_inputs import (
    make_class_mismatch,
    make_empty_domain,
    make_symlink_loop,
    make_undecodable_name,
    truncate,
    write_bomb,
)
from tests.helpers.trees import small_officehome_tree

CLASSES = ("A", "B")


class OverlappingOfficeHome(OfficeHomeDataModule):
    """Official splits that put one training file in val and test too (as a wrong DTD label
    file would)."""

    def official_splits(self, domain):
        files = [(p, i) for i, c in enumerate(self.class_names) for p in domain.files_by_class[c]]
        return {"train": files, "val": files[:1], "test": files[:1]}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return small_officehome_tree(tmp_path / "officehome", classes=CLASSES)


def run_check(tmp_path: Path, root: Path, capsys, *extra: str, **init_args) -> tuple[int, str]:
    data = {"root": str(root), "image_size": 16, "num_workers": 0, **init_args}
    class_path = init_args.pop("class_path", "datamodules.officehome.OfficeHomeDataModule")
    data.pop("class_path", None)
    config = {
        "trainer": {"max_epochs": 1},
        "model": {"class_path": "lightning_modules.classifier.MultiDomainClassifier"},
        "data": {"class_path": class_path, "init_args": data},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    status = main(["--config", str(path), "--workers", "1", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out


def sketch_list(tmp_path: Path, root: Path, text: str) -> dict:
    """An extra domain `Sketch` read from a list file holding `text` (paths under `root`)."""
    list_file = tmp_path / "sketch.txt"
    list_file.write_text(text)
    return {
        "extra_domains": [{"name": "Sketch", "image_list": str(list_file), "image_root": str(root)}]
    }


LIST_LINE = "(set `extra domain 'Sketch' allow_outside_root: true` to allow paths outside it)"

# (case, how to break the tree, extra DataModule settings, exit status, the expected line as a
# regular expression with {root} and {list} filled in, matched against a whole output line).
CASES: list[tuple[str, Callable[[Path], None], Callable | None, int, str]] = [
    (
        "zero-byte",
        lambda r: (r / "Product" / "B" / "00002.jpg").write_bytes(b""),
        None,
        1,
        r"ERROR \[zero-byte\] {root}/Product/B/00002\.jpg: file is empty \(0 bytes\)",
    ),
    (
        "truncated",
        lambda r: truncate(r / "Art" / "A" / "00001.jpg"),
        None,
        1,
        r"ERROR \[truncated\] {root}/Art/A/00001\.jpg: cannot be decoded: image file is "
        r"truncated \(\d+ bytes not processed\)",
    ),
    (
        "non-image content",
        lambda r: (r / "Art" / "A" / "00002.jpg").write_text("<html>404</html>"),
        None,
        1,
        r"ERROR \[unreadable\] {root}/Art/A/00002\.jpg: cannot be decoded: cannot identify "
        r"image file '{root}/Art/A/00002\.jpg'",
    ),
    (
        "non-image extension",
        lambda r: (r / "Art" / "A" / "notes.txt").write_text("by hand"),
        None,
        0,
        r"WARNING \[non-image\] {root}/Art/A/notes\.txt: not an image extension; ignored by "
        r"training",
    ),
    (
        "decompression bomb",
        lambda r: write_bomb(r / "Art" / "B" / "00001.jpg"),
        None,
        1,
        r"ERROR \[decompression-bomb\] {root}/Art/B/00001\.jpg: refused as a decompression "
        r"bomb: Image size \(900000000 pixels\) exceeds limit of \d+ pixels.* Shrink the image\.",
    ),
    (
        "undecodable file name",
        make_undecodable_name,
        None,
        1,
        r"ERROR \[undecodable-name\] {root}/Clipart/A/\\xff\\xfe\.jpg: the file name is not "
        r"valid UTF-8; rename the file",
    ),
    (
        "file symlink loop",
        make_symlink_loop,
        None,
        1,
        r"ERROR \[symlink-loop\] {root}/Clipart/B/loop\.jpg: is a symlink loop \(ELOOP\); fix "
        r"or remove the link",
    ),
    (
        "class folder symlink loop",
        lambda r: os.symlink("loop", r / "Art" / "loop"),
        None,
        1,
        r"ERROR \[symlink-loop\] {root}/Art/loop: is a symlink loop; training ignores it \(and "
        r"any images in it\)",
    ),
    (
        "class mismatch",
        make_class_mismatch,
        None,
        1,
        r"ERROR \[class-mismatch\] {root}/Clipart: domain 'Clipart' differs from 'Art' "
        r"\({root}/Art\): missing \[\], extra \['C'\]",
    ),
    (
        "empty domain",
        make_empty_domain,
        None,
        1,
        r"ERROR \[empty-domain\] {root}/Product: domain 'Product' has no images",
    ),
    (
        "list line leaving the root",
        lambda r: None,
        lambda t, r: sketch_list(t, r, "Art/A/00001.jpg 0\n../../etc/passwd 0\n"),
        1,
        r"ERROR \[escaping-path\] {list}:2: '\.\./\.\./etc/passwd' leaves the image root "
        r"{root} " + re.escape(LIST_LINE),
    ),
    (
        "absolute list line",
        lambda r: None,
        lambda t, r: sketch_list(t, r, "Art/A/00001.jpg 0\n/etc/passwd 1\n"),
        1,
        r"ERROR \[absolute-path\] {list}:2: '/etc/passwd' is absolute; list paths must be "
        r"relative to {root} " + re.escape(LIST_LINE),
    ),
    (
        "unknown class",
        lambda r: None,
        lambda t, r: sketch_list(t, r, "Art/A/00001.jpg 0\nArt/B/00001.jpg Zebra\n"),
        1,
        r"ERROR \[unknown-class\] {list}:2: label 'Zebra' is not a class of this dataset; "
        r"valid choices: \['A', 'B'\] \(or rename it with `class_mapping`\)",
    ),
    (
        "duplicate list line",
        lambda r: None,
        lambda t, r: sketch_list(t, r, "Art/A/00001.jpg 0\nArt/B/00001.jpg 1\nArt/A/00001.jpg 0\n"),
        1,
        r"ERROR \[duplicate\] {list}:3: 'Art/A/00001\.jpg' is listed again \(first at line 1\)",
    ),
    (
        "overlapping splits",
        lambda r: None,
        lambda t, r: {"class_path": f"{__name__}.OverlappingOfficeHome"},
        1,
        r"ERROR \[split-overlap\] {root}/Art/A/00001\.jpg: in training split 'train' and in 'test'",
    ),
    (
        "identical files across splits",
        lambda r: [
            (r / "Art" / "A" / f"0000{i}.jpg").write_bytes((r / "Art/A/00001.jpg").read_bytes())
            for i in range(2, 6)
        ],
        None,
        1,
        r"ERROR \[leakage\] identical content in splits \[.*'train'.*\]: .*{root}/Art/A/.*",
    ),
]


@pytest.mark.parametrize(
    ("case", "breaks", "settings", "status", "line"), CASES, ids=[c[0] for c in CASES]
)
def test_each_bad_input_is_one_row(
    tmp_path: Path, tree: Path, capsys, case, breaks, settings, status, line
) -> None:
    breaks(tree)
    init_args = settings(tmp_path, tree) if settings else {}
    got_status, out = run_check(tmp_path, tree, capsys, **init_args)
    expected = line.format(root=re.escape(str(tree)), list=re.escape(str(tmp_path / "sketch.txt")))
    lines = out.splitlines()
    assert any(re.fullmatch(expected, row) for row in lines), f"{case}: {expected}\n{out}"
    assert got_status == status, out
    # The summary counts what was found.
    assert re.fullmatch(r"checked \d+ images \(.*\): \d+ errors, \d+ warnings.*", lines[-1])


def test_every_problem_of_one_tree_is_reported_together(tmp_path: Path, tree: Path, capsys) -> None:
    # A symlink loop, a class mismatch and bad images at once: none hides the others.
    make_symlink_loop(tree)
    make_class_mismatch(tree)
    (tree / "Product" / "B" / "00002.jpg").write_bytes(b"")
    write_bomb(tree / "Art" / "B" / "00001.jpg")
    status, out = run_check(tmp_path, tree, capsys)
    kinds = re.findall(r"^ERROR \[([a-z-]+)\]", out, flags=re.M)
    assert sorted(kinds) == ["class-mismatch", "decompression-bomb", "symlink-loop", "zero-byte"]
    assert status == 1
    assert "4 errors" in out.splitlines()[-1]


def test_identical_junk_files_are_bad_images_not_leakage(
    tmp_path: Path, tree: Path, capsys
) -> None:
    for image in (tree / "Art" / "A").glob("*.jpg"):
        image.write_bytes(b"")  # five identical (empty) files, in train and in val
    status, out = run_check(tmp_path, tree, capsys)
    assert status == 1
    assert out.count("ERROR [zero-byte]") == 5
    assert "[leakage]" not in out


def test_json_output_has_every_finding_and_the_counts(tmp_path: Path, tree: Path, capsys) -> None:
    (tree / "Product" / "B" / "00002.jpg").write_bytes(b"")
    make_undecodable_name(tree)
    init_args = sketch_list(tmp_path, tree, "Art/A/00001.jpg 0\n../x.jpg 0\n")
    status, out = run_check(tmp_path, tree, capsys, "--json", **init_args)
    report = json.loads(out)
    assert status == 1 and report["ok"] is False
    assert set(report) == {"ok", "images_checked", "split_counts", "summary", "findings"}
    assert report["summary"] == {
        "errors": 3,
        "warnings": 0,
        "by_kind": {"escaping-path": 1, "undecodable-name": 1, "zero-byte": 1},
    }
    by_kind = {f["kind"]: f for f in report["findings"]}
    assert by_kind["escaping-path"]["path"] == str(tmp_path / "sketch.txt")
    assert by_kind["escaping-path"]["line"] == 2
    assert by_kind["zero-byte"] == {
        "severity": "error",
        "kind": "zero-byte",
        "path": str(tree / "Product" / "B" / "00002.jpg"),
        "line": None,
        "message": "file is empty (0 bytes)",
    }
    assert by_kind["undecodable-name"]["path"].endswith("/Clipart/A/\\xff\\xfe.jpg")


def test_json_output_of_a_config_error(tmp_path: Path, tree: Path, capsys) -> None:
    status, out = run_check(tmp_path, tree, capsys, "--json", domains=["Sketch"])
    assert status == 2
    report = json.loads(out)
    assert report["ok"] is False and "valid choices" in report["error"]
