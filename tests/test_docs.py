"""The documentation: the site builds strictly without importing the project, and the facts the
pages and the README point at (guard tests, linked files, the opening commands) exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The build runs in a child process in which importing the project or its heavy dependencies
# fails: mkdocstrings must read the docstrings statically (fast, and no torch at docs time).
BUILD_WITHOUT_PROJECT_IMPORTS = textwrap.dedent(
    """
    import importlib.abc
    import sys

    FORBIDDEN = {
        "lightning_modules", "datamodules", "experiments", "benchmarks",
        "torch", "torchvision", "pytorch_lightning", "lightning", "mlflow", "ray", "litdata",
    }

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"the docs build imported {name}")
            return None

    sys.meta_path.insert(0, Forbid())
    from mkdocs.__main__ import cli

    sys.argv = ["mkdocs", "build", "--strict", "--site-dir", sys.argv[1]]
    cli()
    """
)


def build_site(site_dir: Path, config_dir: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BUILD_WITHOUT_PROJECT_IMPORTS, str(site_dir)],
        cwd=config_dir,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_site_builds_strictly_without_importing_the_project(tmp_path: Path) -> None:
    result = build_site(tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    # The API pages were generated from the docstrings, not left empty.
    recalibration = (tmp_path / "site/reference/recalibration/index.html").read_text()
    assert "RECALIBRATION_MODULES" in recalibration
    assert "forward_after_batch_norm" in recalibration
    datamodule = (tmp_path / "site/reference/datamodule/index.html").read_text()
    assert "held_out_domains" in datamodule and "domain_sources" in datamodule


def test_the_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    # The check above is only worth something if a broken page does fail the build.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/index.md").write_text("# Home\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: broken\nstrict: true\n")
    result = build_site(tmp_path / "site", config_dir=tmp_path)
    assert result.returncode != 0
    assert "missing.md" in result.stdout + result.stderr


def test_the_private_api_guard_tests_listed_in_contributing_exist() -> None:
    page = (ROOT / "docs/contributing.md").read_text()
    guards = re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", page)
    assert len(guards) >= 5, guards
    for path, name in guards:
        source = ROOT / path
        assert source.is_file(), f"docs/contributing.md names {path}, which does not exist"
        assert re.search(rf"^def {name}\(", source.read_text(), re.M), (
            f"docs/contributing.md names {path}::{name}, which is not defined there"
        )


def test_the_readme_opens_with_the_two_commands_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000, "README.md is over 15 KB: move reference text to docs/"
    first_block = readme.split("```")[1].splitlines()[1:]
    assert [line.split()[:2] for line in first_block[:2]] == [["make", "demo"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "docs"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert links, "README.md links into docs/"
    for link in links:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


def test_no_page_escapes_a_pipe_inside_code() -> None:
    # GitHub hides the backslash of `a\|b` in a table cell; Python-Markdown (MkDocs) prints it.
    for page in (ROOT / "docs").rglob("*.md"):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert "\\|" not in line, f"{page.relative_to(ROOT)}:{number} shows a literal \\|"


@pytest.mark.parametrize("image", sorted(p.name for p in (ROOT / "docs").glob("*.png")))
def test_every_image_in_docs_is_shown_on_a_page(image: str) -> None:
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    assert f"({image})" in pages or f"(../{image})" in pages, f"docs/{image} is on no page"
