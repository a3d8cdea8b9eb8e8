"""Module x method tables: recalibration modules as rows, training methods as columns.

Two tables from the same values: the accuracy of each cell (mean with its spread over the
seeds), and each cell minus the baseline cell (`none` + `erm`), paired by key (trial seed, and
held-out set in a sweep): the mean difference, its 95% interval and the pairs it wins. A sweep's
report (`report.py`) and `experiments.compare` both build them here. In a sweep with `cases`
(`case_matrix_tables`), a row is a module on one set of case labels (a column per case axis),
and each cell is paired with the baseline cell of the same labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from experiments.sweeps.statistics import PairedComparison, mean_se, paired_comparison

Cell = tuple[str, str]
Table = tuple[list[str], list[list[str]]]
#: (axis, label) of each case axis (`selection.Cases`).
Cases = tuple[tuple[str, str], ...]


def format_mean_se(values: Sequence[float]) -> str:
    """`mean ± SE` in % (a sweep's cells: values over trial seeds)."""
    return mean_se(list(values)).format()


def format_difference(comparison: PairedComparison) -> str:
    """`+1.2 [-0.4, +2.8] 2/3`: mean difference, 95% interval, wins / pairs (in points)."""
    if comparison.n == 0:
        return "-"
    text = f"{100 * comparison.mean_diff:+.1f}"
    if not math.isnan(comparison.low):
        text += f" {comparison.format_interval()}"
    return f"{text} {comparison.wins}/{comparison.n}"


def paired_cells(
    values: Mapping[Cell, Mapping[object, float]],
    baseline: Cell,
    interval: str = "t",
) -> dict[Cell, PairedComparison]:
    """Every cell but the baseline against the baseline, over the keys both have."""
    reference = values.get(baseline, {})
    return {
        cell: paired_comparison(
            "+".join(cell), cell_values, "+".join(baseline), reference, interval
        )
        for cell, cell_values in values.items()
        if cell != baseline
    }


def matrix_tables(
    values: Mapping[Cell, Mapping[object, float]],
    modules: Sequence[str],
    methods: Sequence[str],
    baseline: Cell,
    interval: str = "t",
    spread: Callable[[Sequence[float]], str] = format_mean_se,
) -> tuple[Table, Table]:
    """The accuracy table and the paired-difference table, each `module` + one column per
    method; `values` maps (module, method) to {pairing key: accuracy as a fraction}.

    Args:
        values: The accuracies per cell and pairing key (NaN: missing).
        modules: Row order; cells of modules not listed are added after them.
        methods: Column order, likewise.
        baseline: The (module, method) cell the others are paired with.
        interval: `t` or `bootstrap` (see `statistics.paired_comparison`).
        spread: Formats a cell's values (default mean ± SE in %).
    """
    modules = _ordered(modules, (module for module, _ in values))
    methods = _ordered(methods, (method for _, method in values))
    comparisons = paired_cells(values, baseline, interval)
    header = ["module", *methods]
    accuracy, paired = [], []
    for module in modules:
        accuracy.append(
            [module]
            + [
                spread(list(values[(module, method)].values()))
                if (module, method) in values
                else "-"
                for method in methods
            ]
        )
        row = [module]
        for method in methods:
            cell = (module, method)
            if cell == baseline:
                row.append("(baseline)")
            elif cell in comparisons:
                row.append(format_difference(comparisons[cell]))
            else:
                row.append("-")
        paired.append(row)
    return (header, accuracy), (header, paired)


def case_matrix_tables(
    values: Mapping[tuple[Cases, Cell], Mapping[object, float]],
    cells: Sequence[Cell],
    baseline: Cell,
    case_axes: Sequence[str],
    interval: str = "t",
) -> tuple[Table, Table]:
    """`matrix_tables` for each set of case labels (in the order of `values`), stacked: rows
    `module`, a column per case axis, then the methods; every cell is paired with `baseline`
    on the same labels.

    Args:
        values: (case labels, (module, method)) -> {pairing key: accuracy as a fraction}.
        cells: The (module, method) cells in the report's row order.
        baseline: The (module, method) cell the others are paired with.
        case_axes: The case axes' names (the columns after `module`).
        interval: `t` or `bootstrap`.
    """
    modules = list(dict.fromkeys(module for module, _ in cells))
    methods = _ordered(
        list(dict.fromkeys(method for _, method in cells)), (m for _, (_, m) in values)
    )
    header = ["module", *case_axes, *methods]
    accuracy, paired = [], []
    for cases in dict.fromkeys(cases for cases, _ in values):
        mine = {cell: v for (labels, cell), v in values.items() if labels == cases}
        tables = matrix_tables(mine, modules, methods, baseline, interval)
        for (part_header, part_rows), out in zip(tables, (accuracy, paired), strict=True):
            for row in part_rows:
                # A method absent from these labels is absent from the part's header too.
                by_method = dict(zip(part_header[1:], row[1:], strict=True))
                labels = [label for _, label in cases]
                out.append([row[0], *labels, *(by_method.get(m, "-") for m in methods)])
    return (header, accuracy), (header, paired)


def _ordered(order: Sequence[str], present) -> list[str]:
    present = set(present)
    listed = [name for name in order if name in present]
    return listed + sorted(present - set(listed))
