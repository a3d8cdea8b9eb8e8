"""`fit` on bad data, through the entry point's clean-error wrapper (`run_main`, in process):
exit status 1, the project's one-line message naming the file, no traceback."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from datamodules.demo import ensure_officehome_demo
from experiments.errors import run_main
from experiments.officehome import main
from tests.helpers.bad_inputs import undecodable_path, write_bomb
from tests.helpers.cli import tiny_demo_args


def printable(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def break_one(kind: str) -> Callable[[Path], Path]:
    """Break the first image of the demo's first class folder in way `kind`; return its path."""

    def breaks(root: Path) -> Path:
        first = sorted(root.glob("*/*/*.*"))[0]
        if kind == "zero-byte":
            first.write_bytes(b"")
            return first
        if kind == "decompression-bomb":
            write_bomb(first)
            return first
        if kind == "symlink-loop":
            loop = first.parent / "loop.jpg"
            os.symlink("loop.jpg", loop)
            return loop
        renamed = undecodable_path(first.parent)
        first.rename(renamed)
        return renamed

    return breaks


DETAILS = {
    "zero-byte": r"file is empty \(0 bytes\)",
    "decompression-bomb": r"refused as a decompression bomb: Image size \(900000000 pixels\) .*",
    "undecodable-name": r"the file name is not valid UTF-8; rename the file",
    "symlink-loop": r"is a symlink loop \(ELOOP\); fix or remove the link",
}


def fit(tmp_path: Path, cache: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = [
        "fit",
        *tiny_demo_args(tmp_path, epochs=1),
        "--data.init_args.images_per_class=10",
        f"--data.init_args.cache_dir={cache}",
        *extra,
    ]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_main(lambda: main(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return stopped.value.code, err


@pytest.fixture
def demo_root(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "cache"
    root = ensure_officehome_demo(
        str(cache), num_classes=4, images_per_class=10, image_size=48, seed=0
    )
    return Path(root), cache


@pytest.mark.slow  # each trains until it reaches the file (about 10 s each here)
@pytest.mark.parametrize("kind", list(DETAILS))
def test_fit_stops_on_a_bad_image_naming_it(
    tmp_path: Path, demo_root, capsys, mlflow_uri: str, kind: str
) -> None:
    root, cache = demo_root
    bad = break_one(kind)(root)
    status, err = fit(tmp_path, cache, capsys)
    expected = rf"error: bad image {re.escape(printable(bad))} \[{kind}\]: {DETAILS[kind]}"
    assert any(re.fullmatch(expected, line) for line in err.splitlines()), err
    assert status == 1


def test_fit_lists_every_scan_problem_at_once(
    tmp_path: Path, demo_root, capsys, mlflow_uri: str
) -> None:
    root, cache = demo_root
    domains = sorted(p for p in root.iterdir() if p.is_dir())
    for image in domains[1].glob("*/*.*"):
        image.unlink()  # an empty domain
    extra_class = domains[2] / "Extra"
    extra_class.mkdir()
    (extra_class / "00001.png").write_bytes((next(domains[0].glob("*/*.*"))).read_bytes())
    status, err = fit(tmp_path, cache, capsys)
    assert status == 1
    assert "error: the data has problems (2 errors;" in err
    assert f"  ERROR [empty-domain] {domains[1]}: domain '{domains[1].name}' has no images" in err
    assert f"  ERROR [class-mismatch] {domains[2]}: domain '{domains[2].name}' differs" in err


def test_fit_refuses_list_lines_leaving_the_root(
    tmp_path: Path, demo_root, capsys, mlflow_uri: str
) -> None:
    root, cache = demo_root
    list_file = tmp_path / "sketch.txt"
    first = sorted(root.glob("*/*/*.*"))[0]
    list_file.write_text(f"{first.relative_to(root)} 0\n../../etc/passwd 0\n")
    domain = f"[{{name: Sketch, image_list: {list_file}, image_root: {root}, role: held_out}}]"
    status, err = fit(tmp_path, cache, capsys, f"--data.init_args.extra_domains={domain}")
    assert status == 1
    assert (
        f"  ERROR [escaping-path] {list_file}:2: '../../etc/passwd' leaves the image root {root} "
        "(set `extra domain 'Sketch' allow_outside_root: true` to allow paths outside it)"
    ) in err
