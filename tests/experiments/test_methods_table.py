"""The table of training methods in docs/training-methods.md: generated from the registry, with
a row for every registered method."""

from __future__ import annotations

import re

import pytest

from experiments import methods_table
from lightning_modules.methods import TRAINING_METHODS


def documented_rows() -> dict[str, str]:
    """Method name -> its row, from the table between the markers of the page."""
    text = methods_table.DOC.read_text()
    assert methods_table.BEGIN in text and methods_table.END in text
    block = text.split(methods_table.BEGIN, 1)[1].split(methods_table.END, 1)[0]
    rows = {}
    for line in block.splitlines():
        match = re.match(r"\| `([a-z0-9_]+)`", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_registered_method_has_a_row_and_no_row_lacks_a_method():
    rows = documented_rows()
    missing = sorted(set(TRAINING_METHODS) - set(rows))
    assert not missing, (
        f"docs/training-methods.md lacks {missing}: run `python -m experiments.methods_table "
        "--write`"
    )
    assert set(rows) <= set(TRAINING_METHODS), sorted(set(rows) - set(TRAINING_METHODS))


@pytest.mark.parametrize("name", sorted(TRAINING_METHODS))
def test_a_generated_row_names_the_file_options_and_search_space(name):
    row = methods_table.row(name)
    cls = TRAINING_METHODS[name]
    assert row[0].startswith(f"`{name}`")
    assert row[-1] == f"`lightning_modules/methods/{cls.__module__.rsplit('.', 1)[-1]}.py`"
    for option in cls.search_space:
        assert f"`{option}`:" in row[4] and f"`{option}=" in row[3]
    assert "|" not in "".join(row)  # a pipe would split the Markdown cell


def test_paper_and_summary_are_read_from_the_docstrings():
    doc = (
        "GroupDRO: robust (Sagawa et al., ICLR 2020, arXiv:1911.08731 (v2)), as DomainBed.\n\nMore."
    )
    assert methods_table.paper(doc) == "Sagawa et al., ICLR 2020, arXiv:1911.08731 (v2)"
    assert methods_table.paper("No citation here.") == "-"
    assert methods_table.summary("Weights q per domain.\n    Second.\n\nMore.") == (
        "Weights q per domain."
    )
    assert methods_table.distribution({"log_uniform": [1e-3, 0.1]}) == "log-uniform [0.001, 0.1]"
    assert methods_table.distribution({"choice": [0.5, 1.0]}) == "one of {0.5, 1}"
    text = f"a\n{methods_table.BEGIN}\nold\n{methods_table.END}\nb"
    assert methods_table.replace_table(text, "new") == (
        f"a\n{methods_table.BEGIN}\n\nnew\n\n{methods_table.END}\nb"
    )
