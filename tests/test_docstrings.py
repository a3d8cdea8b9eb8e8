"""Docstrings open with a one-line summary, never directly with `Args:`.

LightningCLI's --help shows an `__init__` docstring's first line as the class's description; a
docstring that starts with `Args:` shows "Args:" there, and Google-style parsers (mkdocstrings)
read no summary from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datamodules", "lightning_modules", "experiments", "benchmarks")
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def docstrings_opening_with_args(source: str, filename: str) -> list[str]:
    """`filename:line name` of every function or class whose docstring starts with `Args:`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, DEFINITIONS):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None and docstring.lstrip().startswith("Args:"):
                found.append((node.lineno, node.name))
    return [f"{filename}:{line} {name}" for line, name in sorted(found)]


def test_the_check_finds_a_docstring_that_opens_with_args() -> None:
    source = (
        "class A:\n"
        "    def __init__(self, x):\n"
        '        """Args:\n'
        '        x: a number."""\n'
        "\n"
        "def f(x):\n"
        '    """Summary.\n'
        "\n"
        "    Args:\n"
        '        x: a number."""\n'
        "\n"
        "async def g():\n"
        '    """\n'
        '    Args: none."""\n'
    )
    assert docstrings_opening_with_args(source, "m.py") == ["m.py:2 __init__", "m.py:12 g"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_docstring_opens_with_args(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ holds no .py files"
    found = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        found += docstrings_opening_with_args(path.read_text(encoding="utf-8"), relative)
    assert not found, (
        "docstrings that open with `Args:` (give each a one-line summary first, then a blank "
        "line, then `Args:`): " + ", ".join(found)
    )
