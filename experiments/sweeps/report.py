"""The sweep report: accuracy tables with mean +- SE over trial seeds, paired comparisons against
the baseline module, the model-selection table, a per-domain bar chart and learning curves.

Written as Markdown (`report.md`, also what `collect` prints), CSV (`results.csv`: one row per
table cell and comparison, fractions; `trials.csv`: one row per trial), LaTeX (`report.tex`;
these two in `report_files.py`) and PNG (`accuracy.png`, `learning_curves.png`: `figures.py`).
`experiments.compare` prints its paired table with `comparison_cells`.

The accuracy table holds each trial's *test* metrics (`test/acc/<domain>`, `test/acc_mean`,
`test/acc_held_out_mean`: the tested checkpoint is the validation with the best
`val/acc_mean`), for the hyperparameter draw that training-domain validation picks per module,
held-out set and seed. Held out includes an adaptation's target domains (`selection.py`).

In a sweep with `cases` (a source -> target pair), a row is a module (or `<module>+<method>`) on
one set of case labels, shown in a column per case axis; each row is paired with the baseline on
the same labels (`srm+cdan` on Ar2Cl with `none` on Ar2Cl, seed by seed), never across them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.sweeps.figures import accuracy_chart, learning_curves
from experiments.sweeps.matrix import case_matrix_tables
from experiments.sweeps.report_files import latex, write_results_csv, write_trials_csv
from experiments.sweeps.selection import (
    ORACLE_METHODS,
    SELECTION_METHODS,
    Cases,
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
)
from lightning_modules.tables import markdown_table

SUMMARY_MULTI = "mean"
SUMMARY_HELD_OUT = "average"


#: A table's row: the module (or `<module>+<method>`) and its case labels (() without cases).
Row = tuple[str, Cases]


@dataclass
class AccuracyTable:
    """Rows = modules (on their case labels), columns = domains (or held-out sets) + a summary;
    cells are values per pairing key (held-out set, seed), so any two rows of the same case
    labels can be compared pair by pair."""

    title: str
    columns: list[str]
    summary: str
    cells: dict[Row, dict[str, dict[tuple, float]]] = field(default_factory=dict)

    def rows(self, order: Sequence[str] = ()) -> list[Row]:
        """Case labels in the order the trials come (the sweep file's), modules in `order`."""
        rank = {m: i for i, m in enumerate(order)}
        contexts = self.contexts()
        return sorted(
            self.cells,
            key=lambda row: (contexts.index(row[1]), rank.get(row[0], len(rank)), row[0]),
        )

    def modules(self, order: Sequence[str] = ()) -> list[str]:
        return list(dict.fromkeys(module for module, _ in self.rows(order)))

    def contexts(self) -> list[Cases]:
        return list(dict.fromkeys(cases for _, cases in self.cells))

    def case_axes(self) -> list[str]:
        return [axis for axis, _ in next(iter(self.cells), ("", ()))[1]]

    def stat(self, module: str, column: str, cases: Cases = ()) -> MeanSE:
        return mean_se(list(self.cells.get((module, cases), {}).get(column, {}).values()))


def tested_records(
    records: list[TrialRecord], selections: dict[str, list[Selection]]
) -> list[TrialRecord]:
    """One record per module x case labels x held-out set x seed: the draw training-domain
    validation picks (every finished record where no selection was made, e.g. plain runs)."""
    picks = selections.get("training_domain_validation")
    if not picks:
        return [r for r in records if r.state == "done"]
    chosen = {pick.trial_hash for pick in picks}
    return [r for r in records if r.hash in chosen]


def accuracy_tables(records: list[TrialRecord]) -> list[AccuracyTable]:
    """The multi-domain table (test accuracy per domain) and/or the held-out table (test
    accuracy of each held-out set), from one record per module x case labels x held-out set x
    seed."""
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
            row = table.cells.setdefault((r.module, r.cases), defaultdict(dict))
            key = ("", r.seed)
            for domain in domains:
                row[domain][key] = r.metrics.get(prefix + domain, math.nan)
            row[SUMMARY_MULTI][key] = r.metrics.get(metric_key(TEST, ACC_MEAN), math.nan)
            row["worst"][key] = r.metrics.get(metric_key(TEST, ACC_WORST), math.nan)
        tables.append(table)
    held = [r for r in records if r.held_out]
    if held:
        labels = sorted({r.held_out_label for r in held})
        # The sets each case's rows are averaged over (all of them without cases).
        sets: dict[Cases, set[str]] = defaultdict(set)
        for r in held:
            sets[r.cases].add(r.held_out_label)
        table = AccuracyTable(
            "Test accuracy of the held-out (or target) domains (%)",
            [*labels, SUMMARY_HELD_OUT],
            SUMMARY_HELD_OUT,
        )
        per_seed: dict[tuple[Row, int], dict[str, float]] = defaultdict(dict)
        for r in held:
            row = table.cells.setdefault((r.module, r.cases), defaultdict(dict))
            value = r.metrics.get(metric_key(TEST, ACC_HELD_OUT_MEAN), math.nan)
            row[r.held_out_label][(r.held_out_label, r.seed)] = value
            per_seed[((r.module, r.cases), r.seed)][r.held_out_label] = value
        # The average over held-out sets, per seed, only where the seed has every set.
        for (key, seed), values in per_seed.items():
            if set(values) == sets[key[1]]:
                average = sum(values.values()) / len(values)
                table.cells[key][SUMMARY_HELD_OUT][("", seed)] = average
        tables.append(table)
    return tables


def paired_rows(
    table: AccuracyTable, baseline: str, method: str = "t", order: Sequence[str] = ()
) -> list[tuple[Row, PairedComparison]]:
    """Every row against the baseline's row of the same case labels on the table's summary
    column, paired by key (seed, held-out set); rows whose case labels have no baseline row
    are left out."""
    compared = []
    for module, cases in table.rows(order):
        if module == baseline or (baseline, cases) not in table.cells:
            continue
        reference = table.cells[(baseline, cases)].get(table.summary, {})
        values = table.cells[(module, cases)].get(table.summary, {})
        compared.append(
            ((module, cases), paired_comparison(module, values, baseline, reference, method))
        )
    return compared


def comparison_rows(
    table: AccuracyTable, baseline: str, method: str = "t", order: Sequence[str] = ()
) -> list[PairedComparison]:
    """The comparisons of `paired_rows`, without their rows."""
    return [comparison for _, comparison in paired_rows(table, baseline, method, order)]


def selection_table(
    selections: dict[str, list[Selection]], order: Sequence[str] = ()
) -> tuple[list[str], list[list[str]]]:
    """Method x module (x case labels) rows, held-out sets as columns, mean +- SE over seeds of
    the selected accuracy (the oracle flagged)."""
    picks_all = [p for picks in selections.values() for p in picks]
    labels = sorted({p.held_out for p in picks_all})
    axes = [axis for axis, _ in picks_all[0].cases] if picks_all else []
    contexts = list(dict.fromkeys(p.cases for p in picks_all))
    header = ["selection", "module", *axes, *(label or "all domains" for label in labels), "seeds"]
    rows = []
    rank = {m: i for i, m in enumerate(order)}
    for method in SELECTION_METHODS:
        picks = selections.get(method, [])
        cells = sorted(
            {(p.module, p.cases) for p in picks},
            key=lambda c: (contexts.index(c[1]), rank.get(c[0], len(rank)), c[0]),
        )
        for module, cases in cells:
            mine = [p for p in picks if (p.module, p.cases) == (module, cases)]
            values = [
                mean_se([p.accuracy for p in mine if p.held_out == label]).format()
                for label in labels
            ]
            name = method + (" (oracle)" if method in ORACLE_METHODS else "")
            seeds = str(len({p.seed for p in mine}))
            rows.append([name, module, *(label for _, label in cases), *values, seeds])
    return header, rows


def table_cells(table: AccuracyTable, order: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["module", *table.case_axes(), *(c.replace("_", " ") for c in table.columns), "seeds"]
    rows = []
    for module, cases in table.rows(order):
        cells = [table.stat(module, column, cases).format() for column in table.columns]
        seeds = {key[1] for values in table.cells[(module, cases)].values() for key in values}
        rows.append([module, *(label for _, label in cases), *cells, str(len(seeds))])
    return header, rows


def comparison_cells(
    comparisons: list[PairedComparison], summary: str, cases: Sequence[Cases] = ()
):
    """The paired table; `cases`, where given, the case labels of each comparison (a column
    per case axis after the module)."""
    axes = [axis for axis, _ in cases[0]] if cases else []
    header = [
        "module",
        *axes,
        f"Δ {summary} vs {comparisons[0].baseline if comparisons else ''}",
        "95% CI",
        "wins",
        "pairs",
        "interval",
    ]
    rows = [
        [
            c.module,
            *(label for _, label in (cases[index] if cases else ())),
            "-" if math.isnan(c.mean_diff) else f"{100 * c.mean_diff:+.1f}",
            c.format_interval(),
            f"{c.wins}/{c.n}",
            str(c.n),
            c.method,
        ]
        for index, c in enumerate(comparisons)
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
    cell of the same case labels) and the baseline as `module + method`, or None when the
    records have no method axis."""
    axes = {r.module: (r.recalibration, r.training_method) for r in records if r.training_method}
    if baseline not in axes:
        return None
    values = {
        (cases, axes[module]): table.cells[(module, cases)].get(table.summary, {})
        for module, cases in table.rows(order)
        if module in axes
    }
    ranked = [axes[row] for row in [*order, *table.modules(order)] if row in axes]
    tables = case_matrix_tables(values, ranked, axes[baseline], table.case_axes(), interval)
    return tables, " + ".join(axes[baseline])


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
    axes = [axis for axis, _ in records[0].cases] if records else []
    left = 1 + len(axes)
    sections = [f"# {title}", note] if note else [f"# {title}"]
    tex = []
    csv_rows: list[list[str]] = []
    for table in tables:
        header, rows = table_cells(table, order)
        sections += [f"## {table.title}, mean ± SE over trial seeds", markdown_table(header, rows)]
        tex.append(latex(header, rows, f"{table.title}, mean ± SE over trial seeds", left))
        for module, cases in table.rows(order):
            labels = [label for _, label in cases]
            for column in table.columns:
                s = table.stat(module, column, cases)
                csv_rows.append(
                    [
                        *("accuracy", table.title, module, *labels, column),
                        *(f"{s.mean:.6f}", f"{s.se:.6f}", str(s.n), "", "", "", ""),
                    ]
                )
        compared = paired_rows(table, baseline, interval, order)
        if compared:
            comparisons = [c for _, c in compared]
            header, rows = comparison_cells(comparisons, table.summary, [r[1] for r, _ in compared])
            kind = "Student t" if interval == "t" else "paired bootstrap"
            same = (
                "same seeds, case labels and held-out sets"
                if axes
                else "same seeds and held-out sets"
            )
            sections += [
                f"### Paired against `{baseline}` ({table.summary}; {same}; 95% interval: {kind})",
                markdown_table(header, rows),
            ]
            tex.append(latex(header, rows, f"Paired differences against {baseline}", left))
            for (_, cases), c in compared:
                csv_rows.append(
                    [
                        *("paired", table.title, c.module, *(label for _, label in cases)),
                        *(table.summary, f"{c.mean_diff:.6f}", "", str(c.n), f"{c.low:.6f}"),
                        *(f"{c.high:.6f}", str(c.wins), c.method),
                    ]
                )
        matrix = module_method_tables(table, tested, baseline, order, interval)
        if matrix is not None:
            ((header, rows), (paired_header, paired_rows_)), label = matrix
            pairing = (
                "trial seed, case labels and held-out set"
                if axes
                else "trial seed and held-out set"
            )
            sections += [
                f"### Module x method: {table.summary}, mean ± SE over trial seeds",
                markdown_table(header, rows),
                f"### Module x method: each cell minus `{label}` (points; 95% interval; "
                f"wins/pairs, paired by {pairing})",
                markdown_table(paired_header, paired_rows_),
            ]
            tex.append(latex(header, rows, f"Module x method, {table.summary}", left))
            tex.append(latex(paired_header, paired_rows_, f"Module x method minus {label}", left))
    if selections:
        header, rows = selection_table(selections, order)
        sections += [
            "## Model selection (DomainBed), accuracy of the selected model, mean ± SE over "
            "trial seeds\nValidation-split accuracy at the selected draw and validation; "
            "`(oracle)` looks at the held-out domains and is an upper bound, not a result.",
            markdown_table(header, rows),
        ]
        tex.append(latex(header, rows, "Model selection (DomainBed)", left + 1))
    report = "\n\n".join(sections) + "\n"
    paths = {
        "md": output_dir / "report.md",
        "csv": output_dir / "results.csv",
        "trials_csv": output_dir / "trials.csv",
        "tex": output_dir / "report.tex",
    }
    paths["md"].write_text(report)
    paths["tex"].write_text("\n\n".join(tex) + "\n")
    write_results_csv(paths["csv"], csv_rows, axes)
    write_trials_csv(paths["trials_csv"], records)
    if tables:
        paths["png"] = output_dir / "accuracy.png"
        chart_title = f"{title}: {tables[0].title}, ± SE"
        accuracy_chart(tables[0], order, chart_title).savefig(paths["png"])
    if any(r.history for r in records):
        paths["curves_png"] = output_dir / "learning_curves.png"
        learning_curves(records, order).savefig(paths["curves_png"])
    return report, paths
