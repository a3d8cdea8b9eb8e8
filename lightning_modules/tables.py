"""Markdown tables, the one format of the reports' tables (sweeps, `compare`, benchmarks).

Here, in the model side's package, because every layer that writes a report may import it:
`experiments/` and `benchmarks/` import `lightning_modules/`, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table: the header, the separator line, one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
