"""The sweep report's files besides Markdown: LaTeX tables (`report.tex`), `results.csv` (one row
per table cell and comparison, fractions) and `trials.csv` (one row per trial)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from experiments.sweeps.selection import TrialRecord
from lightning_modules.names import TEST, stage_prefix


def latex(header: list[str], rows: list[list[str]], caption: str, left: int = 2) -> str:
    """A LaTeX table: the first `left` columns (labels) left-aligned, the numbers right."""

    def escape(text: str) -> str:
        for char, replacement in (
            ("\\", r"\textbackslash{}"),
            ("&", r"\&"),
            ("%", r"\%"),
            ("_", r"\_"),
            ("#", r"\#"),
            ("±", r"$\pm$"),
        ):
            text = text.replace(char, replacement)
        return text

    body = [" & ".join(escape(c) for c in row) + r" \\" for row in rows]
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{escape(caption)}}}",
            r"\begin{tabular}{" + "l" * left + "r" * (len(header) - left) + "}",
            r"\hline",
            " & ".join(escape(h) for h in header) + r" \\",
            r"\hline",
            *body,
            r"\hline",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    """One row per trial; `module` is the report's row (`srm+coral`), `recalibration` and
    `method` its parts ('' where the sweep sets no method), then a column per case axis."""
    axes = [axis for axis, _ in records[0].cases] if records else []
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        keys = sorted({k for r in records for k in r.metrics if k.startswith(stage_prefix(TEST))})
        columns = ["trial_hash", "run_id", "state", "module", "recalibration", "method", *axes]
        writer.writerow([*columns, "held_out", "seed", "draw", "validations", *keys])
        for r in records:
            writer.writerow(
                [
                    r.hash,
                    r.run_id,
                    r.state,
                    r.module,
                    r.recalibration,
                    r.training_method,
                    *(label for _, label in r.cases),
                    r.held_out_label,
                    r.seed,
                    r.draw,
                    len(r.steps()),
                    *(f"{r.metrics[k]:.6f}" if k in r.metrics else "" for k in keys),
                ]
            )


def write_results_csv(path: Path, rows: list[list[str]], axes: Sequence[str]) -> None:
    """`results.csv`: one row per table cell and comparison (fractions)."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                *("kind", "table", "module", *axes, "column", "mean", "se", "n"),
                *("ci_low", "ci_high", "wins", "interval"),
            ]
        )
        writer.writerows(rows)
