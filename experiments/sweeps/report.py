"""The sweep report: accuracy tables with mean +- SE over trial seeds, paired comparisons against
the baseline module, the model-selection table, a per-domain bar chart and learning curves.

Written as Markdown (`report.md`, also what `collect` prints), CSV (`results.csv`: one row per
table cell and comparison, fractions; `trials.csv`: one row per trial), LaTeX (`report.tex`)
and PNG (`accuracy.png`, `learning_curves.png`). `experiments.compare` builds the same tables
for plain runs (one per seed) through `accuracy_tables` and `comparison_rows`.

The accuracy table holds each trial's *test* metrics (`test/acc/<domain>`, `test/acc_mean`,
`test/acc_held_out_mean`: the tested checkpoint is the epoch with the best `val/acc_mean`), for
the hyperparameter draw that training-domain validation picks per module, held-out set and seed.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.sweeps.figures import accuracy_chart, learning_curves
from experiments.sweeps.matrix import matrix_tables
from experiments.sweeps.selection import (
    ORACLE_METHODS,
    SELECTION_METHODS,
    Selection,
    TrialRecord,
)
from experiments.sweeps.statistics import MeanSE, PairedComparison, mean_se, paired_comparison
from lightning_modules.names import (
    ACC_HELD_OUT_MEAN,
    ACC_MEAN,
    ACC_WORST,
    TEST,
    domain_metric_prefix,
    metric_key,
    stage_prefix,
)
from lightning_modules.tables import markdown_table

SUMMARY_MULTI = "mean"
SUMMARY_HELD_OUT = "average"


@dataclass
class AccuracyTable:
    """Rows = modules, columns = domains (or held-out sets) + a summary; cells are values per
    pairing key (held-out set, seed), so any two rows can be compared pair by pair."""

    title: str
    columns: list[str]
    summary: str
    cells: dict[str, dict[str, dict[tuple, float]]] = field(default_factory=dict)

    def modules(self, order: Sequence[str] = ()) -> list[str]:
        rank = {m: i for i, m in enumerate(order)}
        return sorted(self.cells, key=lambda m: (rank.get(m, len(rank)), m))

    def stat(self, module: str, column: str) -> MeanSE:
        return mean_se(list(self.cells.get(module, {}).get(column, {}).values()))


def tested_records(
    records: list[TrialRecord], selections: dict[str, list[Selection]]
) -> list[TrialRecord]:
    """One record per module x held-out set x seed: the draw training-domain validation picks
    (every finished record where no selection was made, e.g. plain runs)."""
    picks = selections.get("training_domain_validation")
    if not picks:
        return [r for r in records if r.state == "done"]
    chosen = {pick.trial_hash for pick in picks}
    return [r for r in records if r.hash in chosen]


def accuracy_tables(records: list[TrialRecord]) -> list[AccuracyTable]:
    """The multi-domain table (test accuracy per domain) and/or the held-out table (test
    accuracy of each held-out set), from one record per module x held-out set x seed."""
    tables = []
    multi = [r for r in records if not r.held_out]
    if multi:
        prefix = domain_metric_prefix(TEST)
        domains = sorted(
            {k.removeprefix(prefix) for r in multi for k in r.metrics if k.startswith(prefix)}
        )
        table = AccuracyTable(
            "Test accuracy per domain (%)", [*domains, SUMMARY_MULTI, "worst"], SUMMARY_MULTI
        )
        for r in multi:
            row = table.cells.setdefault(r.module, defaultdict(dict))
            key = ("", r.seed)
            for domain in domains:
                row[domain][key] = r.metrics.get(prefix + domain, math.nan)
            row[SUMMARY_MULTI][key] = r.metrics.get(metric_key(TEST, ACC_MEAN), math.nan)
            row["worst"][key] = r.metrics.get(metric_key(TEST, ACC_WORST), math.nan)
        tables.append(table)
    held = [r for r in records if r.held_out]
    if held:
        labels = sorted({r.held_out_label for r in held})
        table = AccuracyTable(
            "Test accuracy of the held-out domains (%)",
            [*labels, SUMMARY_HELD_OUT],
            SUMMARY_HELD_OUT,
        )
        per_seed: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
        for r in held:
            row = table.cells.setdefault(r.module, defaultdict(dict))
            value = r.metrics.get(metric_key(TEST, ACC_HELD_OUT_MEAN), math.nan)
            row[r.held_out_label][(r.held_out_label, r.seed)] = value
            per_seed[(r.module, r.seed)][r.held_out_label] = value
        # The average over held-out sets, per seed, only where the seed has every set.
        for (module, seed), values in per_seed.items():
            if len(values) == len(labels):
                average = sum(values.values()) / len(values)
                table.cells[module][SUMMARY_HELD_OUT][("", seed)] = average
        tables.append(table)
    return tables


def comparison_rows(
    table: AccuracyTable, baseline: str, method: str = "t", order: Sequence[str] = ()
) -> list[PairedComparison]:
    """Every module against the baseline on the table's summary column, paired by key."""
    if baseline not in table.cells:
        return []
    reference = table.cells[baseline].get(table.summary, {})
    return [
        paired_comparison(
            module, table.cells[module].get(table.summary, {}), baseline, reference, method
        )
        for module in table.modules(order)
        if module != baseline
    ]


def selection_table(
    selections: dict[str, list[Selection]], order: Sequence[str] = ()
) -> tuple[list[str], list[list[str]]]:
    """Method x module rows, held-out sets as columns, mean +- SE over seeds of the selected
    accuracy (the oracle flagged)."""
    labels = sorted({p.held_out for picks in selections.values() for p in picks})
    header = ["selection", "module", *(label or "all domains" for label in labels), "seeds"]
    rows = []
    rank = {m: i for i, m in enumerate(order)}
    for method in SELECTION_METHODS:
        picks = selections.get(method, [])
        modules = sorted({p.module for p in picks}, key=lambda m: (rank.get(m, len(rank)), m))
        for module in modules:
            mine = [p for p in picks if p.module == module]
            cells = [
                mean_se([p.accuracy for p in mine if p.held_out == label]).format()
                for label in labels
            ]
            name = method + (" (oracle)" if method in ORACLE_METHODS else "")
            rows.append([name, module, *cells, str(len({p.seed for p in mine}))])
    return header, rows


def latex(header: list[str], rows: list[list[str]], caption: str) -> str:
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
            r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}",
            r"\hline",
            " & ".join(escape(h) for h in header) + r" \\",
            r"\hline",
            *body,
            r"\hline",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def table_cells(table: AccuracyTable, order: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["module", *(c.replace("_", " ") for c in table.columns), "seeds"]
    rows = []
    for module in table.modules(order):
        cells = [table.stat(module, column).format() for column in table.columns]
        seeds = {key[1] for values in table.cells[module].values() for key in values}
        rows.append([module, *cells, str(len(seeds))])
    return header, rows


def comparison_cells(comparisons: list[PairedComparison], summary: str):
    header = [
        "module",
        f"Δ {summary} vs {comparisons[0].baseline if comparisons else ''}",
        "95% CI",
        "wins",
        "pairs",
        "interval",
    ]
    rows = [
        [
            c.module,
            "-" if math.isnan(c.mean_diff) else f"{100 * c.mean_diff:+.1f}",
            c.format_interval(),
            f"{c.wins}/{c.n}",
            str(c.n),
            c.method,
        ]
        for c in comparisons
    ]
    return header, rows


def module_method_tables(
    table: AccuracyTable,
    records: list[TrialRecord],
    baseline: str,
    order: Sequence[str] = (),
    interval: str = "t",
):
    """The table's summary as module x method tables (accuracy; paired against the baseline
    cell) and the baseline as `module + method`, or None when the records have no method axis."""
    axes = {r.module: (r.recalibration, r.training_method) for r in records if r.training_method}
    if baseline not in axes:
        return None
    values = {axes[row]: table.cells[row].get(table.summary, {}) for row in table.cells}
    ranked = [axes[row] for row in [*order, *table.modules(order)] if row in axes]
    modules = list(dict.fromkeys(module for module, _ in ranked))
    methods = list(dict.fromkeys(method for _, method in ranked))
    tables = matrix_tables(values, modules, methods, axes[baseline], interval)
    return tables, " + ".join(axes[baseline])


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    """One row per trial; `module` is the report's row (`srm+coral`), `recalibration` and
    `method` its parts ('' where the sweep sets no method)."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        keys = sorted({k for r in records for k in r.metrics if k.startswith(stage_prefix(TEST))})
        columns = ["trial_hash", "run_id", "state", "module", "recalibration", "method"]
        writer.writerow([*columns, "held_out", "seed", "draw", "epochs", *keys])
        for r in records:
            writer.writerow(
                [
                    r.hash,
                    r.run_id,
                    r.state,
                    r.module,
                    r.recalibration,
                    r.training_method,
                    r.held_out_label,
                    r.seed,
                    r.draw,
                    len(r.epochs()),
                    *(f"{r.metrics[k]:.6f}" if k in r.metrics else "" for k in keys),
                ]
            )


def write_report(
    records: list[TrialRecord],
    selections: dict[str, list[Selection]],
    output_dir: Path,
    baseline: str,
    order: Sequence[str] = (),
    title: str = "Sweep",
    note: str = "",
    interval: str = "t",
) -> tuple[str, dict[str, Path]]:
    """Writes every file; returns the Markdown report and the paths by kind."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tested = tested_records(records, selections)
    tables = accuracy_tables(tested)
    sections = [f"# {title}", note] if note else [f"# {title}"]
    tex = []
    csv_rows: list[list[str]] = []
    for table in tables:
        header, rows = table_cells(table, order)
        sections += [f"## {table.title}, mean ± SE over trial seeds", markdown_table(header, rows)]
        tex.append(latex(header, rows, f"{table.title}, mean $\\pm$ SE over trial seeds"))
        for module in table.modules(order):
            for column in table.columns:
                s = table.stat(module, column)
                csv_rows.append(
                    [
                        "accuracy",
                        table.title,
                        module,
                        column,
                        f"{s.mean:.6f}",
                        f"{s.se:.6f}",
                        str(s.n),
                        "",
                        "",
                        "",
                        "",
                    ]
                )
        comparisons = comparison_rows(table, baseline, interval, order)
        if comparisons:
            header, rows = comparison_cells(comparisons, table.summary)
            kind = "Student t" if interval == "t" else "paired bootstrap"
            sections += [
                f"### Paired against `{baseline}` ({table.summary}; same seeds and held-out "
                f"sets; 95% interval: {kind})",
                markdown_table(header, rows),
            ]
            tex.append(latex(header, rows, f"Paired differences against {baseline}"))
            for c in comparisons:
                csv_rows.append(
                    [
                        "paired",
                        table.title,
                        c.module,
                        table.summary,
                        f"{c.mean_diff:.6f}",
                        "",
                        str(c.n),
                        f"{c.low:.6f}",
                        f"{c.high:.6f}",
                        str(c.wins),
                        c.method,
                    ]
                )
        matrix = module_method_tables(table, tested, baseline, order, interval)
        if matrix is not None:
            ((header, rows), (paired_header, paired_rows)), label = matrix
            sections += [
                f"### Module x method: {table.summary}, mean ± SE over trial seeds",
                markdown_table(header, rows),
                f"### Module x method: each cell minus `{label}` (points; 95% interval; "
                "wins/pairs, paired by trial seed and held-out set)",
                markdown_table(paired_header, paired_rows),
            ]
            tex.append(latex(header, rows, f"Module x method, {table.summary}"))
            tex.append(latex(paired_header, paired_rows, f"Module x method minus {label}"))
    if selections:
        header, rows = selection_table(selections, order)
        sections += [
            "## Model selection (DomainBed), accuracy of the selected model, mean ± SE over "
            "trial seeds\nValidation-split accuracy at the selected draw and epoch; "
            "`(oracle)` looks at the held-out domains and is an upper bound, not a result.",
            markdown_table(header, rows),
        ]
        tex.append(latex(header, rows, "Model selection (DomainBed)"))
    report = "\n\n".join(sections) + "\n"
    paths = {
        "md": output_dir / "report.md",
        "csv": output_dir / "results.csv",
        "trials_csv": output_dir / "trials.csv",
        "tex": output_dir / "report.tex",
    }
    paths["md"].write_text(report)
    paths["tex"].write_text("\n\n".join(tex) + "\n")
    with paths["csv"].open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                "kind",
                "table",
                "module",
                "column",
                "mean",
                "se",
                "n",
                "ci_low",
                "ci_high",
                "wins",
                "interval",
            ]
        )
        writer.writerows(csv_rows)
    write_trials_csv(paths["trials_csv"], records)
    if tables:
        paths["png"] = output_dir / "accuracy.png"
        accuracy_chart(tables[0], order, f"{title}: {tables[0].title}, ± SE").savefig(paths["png"])
    if any(r.history for r in records):
        paths["curves_png"] = output_dir / "learning_curves.png"
        learning_curves(records, order).savefig(paths["curves_png"])
    return report, paths
