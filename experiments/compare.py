"""Compare MLflow runs: per-domain accuracy by backbone x module x method, mean +- std over seeds.

    python -m experiments.compare --experiment officehome [--tag data=demo]
        [--filter "params.`data.images_per_class` = '40'"] [--tracking-uri URI] [--log-report]

Prints a table and writes `<output-dir>/<experiment>_comparison.{md,csv,png}`. Each run counts
with its test accuracy (`test/acc/<domain>`) when it has one, else its validation accuracy;
runs are grouped by their `protocol`, `backbone`, `module`, `module_options`, `method` and
`method_options` tags, so the seeds of one setting give the mean and std, and each variant (an
ablation, a training method) is a row of its own, labelled as run names label it:
`<module>[<options>]` (e.g. `srm[pooling=avg]`), plus `+<method>[<options>]` for a method
other than ERM (`srm+coral[mmd_gamma=0.5]`; runs from before the method tag ran ERM). Only
finished `fit` runs count by default (a `validate`/`test` run re-evaluates a checkpoint that a
fit run already reports). `--log-report` logs the files as a run tagged `report=true` in the
same experiment; comparisons skip such runs.

Each row is also compared with the baseline (`--baseline`, default `none`, with
`--baseline-method`, default `erm`, both at their default options) of the same protocol and
backbone, paired by the runs' `seed` tag: the mean difference of `acc_mean`, its 95% interval
(Student t, or `--interval bootstrap`) and the seeds where it wins; the same statistics as a
sweep's report (`experiments/sweeps/statistics.py`). Where the runs of a protocol and backbone
have several methods, module x method tables follow: `acc_mean` per cell (mean ± std over
seeds), and each cell minus `none + erm`, paired by seed (`experiments/sweeps/matrix.py`).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments.compare_groups import (
    GROUP_TAGS,
    METHOD_OPTIONS_TAG,
    METHOD_TAG,
    OPTIONS_TAG,
    PLAIN_METHOD,
    SUMMARY_COLUMNS,
    Group,
    group_runs,
    module_method_tables,
    paired_against_baseline,
)
from experiments.sweeps.report import comparison_cells
from experiments.sweeps.statistics import PairedComparison
from lightning_modules.callbacks.charts import accuracy_bar_chart
from lightning_modules.names import ACC_MEAN
from lightning_modules.tables import markdown_table
from lightning_modules.tracking import tracking_client

REPORT_TAG = "report"


def search_runs(
    client: MlflowClient, experiment: str, filter_string: str = "", stage: str = "fit"
) -> list[Run]:
    """Every active run of the experiment matching the filter, report runs left out."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise SystemExit(
            f"no experiment {experiment!r} at {client.tracking_uri}; it has {names}. "
            "Pass --experiment, or --tracking-uri / MLFLOW_TRACKING_URI for another store."
        )
    # Runs still training (or killed mid-way) would enter the mean with partial numbers.
    clauses = [c for c in (filter_string, "attributes.status = 'FINISHED'") if c]
    if stage != "any":
        clauses.append(f"tags.stage = '{stage}'")
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id], " and ".join(clauses), max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    # Filtered here rather than in the query: MLflow's filter drops runs without the tag.
    return [run for run in runs if run.data.tags.get(REPORT_TAG) != "true"]


def table_rows(domains: list[str], groups: list[Group]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells (accuracy in %, `mean ± std` when there are several seeds)."""
    summary = [
        (label, metric)
        for label, metric in SUMMARY_COLUMNS
        if any(metric in group.values for group in groups)
    ]
    header = ["protocol", "backbone", "module", *domains, *(label for label, _ in summary)]
    header += ["parameters", "runs", "evaluated on"]
    rows = []
    for group in groups:
        cells = [group.key[0], group.key[1], group.module_label]
        for column in [*domains, *(metric for _, metric in summary)]:
            mean, std = group.mean(column), group.std(column)
            if math.isnan(mean):
                cells.append("-")
            else:
                cells.append(
                    f"{100 * mean:.1f}" + ("" if math.isnan(std) else f" ± {100 * std:.1f}")
                )
        parameters = "/".join(f"{count / 1e6:.2f}M" for count in sorted(group.parameters))
        cells += [parameters or "-", str(len(group.run_ids)), "+".join(sorted(group.stages))]
        rows.append(cells)
    return header, rows


def terminal_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def write_csv(path: Path, domains: list[str], groups: list[Group]) -> None:
    """Numbers for further analysis: fractions (not %), mean and std per column, the run ids."""
    columns = [*domains, *(metric for _, metric in SUMMARY_COLUMNS)]
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                *GROUP_TAGS,
                OPTIONS_TAG,
                METHOD_TAG,
                METHOD_OPTIONS_TAG,
                *(f"{c}_{s}" for c in columns for s in ("mean", "std")),
                *("num_parameters", "runs", "evaluated_on", "run_ids"),
            ]
        )
        for group in groups:
            numbers = [
                "" if math.isnan(v) else f"{v:.6f}"
                for c in columns
                for v in (group.mean(c), group.std(c))
            ]
            parameters = "/".join(str(p) for p in sorted(group.parameters))
            writer.writerow(
                [
                    *group.key,
                    group.options,
                    group.method,
                    group.method_options,
                    *numbers,
                    *(parameters, len(group.run_ids), "+".join(sorted(group.stages))),
                    " ".join(group.run_ids),
                ]
            )


def comparison_chart(domains: list[str], groups: list[Group], title: str):
    """Grouped bars per domain plus the mean; error bars are the std over seeds."""
    columns = [*domains, ACC_MEAN]
    multiple_protocols = len({group.key[0] for group in groups}) > 1
    labels = {
        id(group): (f"{group.key[0]}: " if multiple_protocols else "")
        + f"{group.label} (n={len(group.run_ids)})"
        for group in groups
    }
    figure = accuracy_bar_chart(
        [*domains, "mean"],
        {labels[id(g)]: [g.mean(c) for c in columns] for g in groups},
        errors={labels[id(g)]: [g.std(c) for c in columns] for g in groups},
        title=title,
    )
    # The mean is a summary, not one more domain: set it apart.
    figure.axes[0].axvline(len(domains) - 0.5, color="grey", linestyle=":", linewidth=1)
    return figure


def paired_table(pairs: list[tuple[Group, PairedComparison]]) -> tuple[list[str], list[list[str]]]:
    header, rows = comparison_cells([c for _, c in pairs], "mean")
    header = ["protocol", "backbone", *header]
    return header, [[g.key[0], g.key[1], *row] for (g, _), row in zip(pairs, rows, strict=True)]


def write_report(
    client: MlflowClient,
    experiment: str,
    runs: list[Run],
    output_dir: Path,
    baseline: str = "none",
    interval: str = "t",
    baseline_method: str = PLAIN_METHOD,
) -> dict[str, Path]:
    """Writes the Markdown, CSV and PNG files; returns them by kind. Prints the table."""
    domains, groups = group_runs(runs)
    if not groups:
        raise SystemExit(f"no run of experiment {experiment!r} has logged accuracy per domain")
    header, rows = table_rows(domains, groups)
    print(terminal_table(header, rows))
    pairs = paired_against_baseline(groups, baseline, interval, baseline_method)
    label = baseline if baseline_method == PLAIN_METHOD else f"{baseline}+{baseline_method}"
    paired = ""
    if pairs:
        paired_header, paired_rows = paired_table(pairs)
        print(f"\nPaired against {label} ({ACC_MEAN}, runs matched by seed, 95% interval):")
        print(terminal_table(paired_header, paired_rows))
        paired = (
            f"\n## Paired against `{label}` (mean accuracy, runs matched by their seed, "
            f"95% interval)\n\n{markdown_table(paired_header, paired_rows)}\n"
        )
    for (protocol, backbone), accuracy, differences in module_method_tables(
        groups, baseline, baseline_method, interval
    ):
        where = f"{protocol}, {backbone}"
        cell = f"{baseline} + {baseline_method}"
        print(f"\nModule x method, {where}: {ACC_MEAN} (mean ± std over seeds):")
        print(terminal_table(*accuracy))
        print(f"Each cell minus {cell} (points, 95% interval, wins/pairs by seed):")
        print(terminal_table(*differences))
        paired += (
            f"\n## Module x method, {where}: mean accuracy (± std over seeds)\n\n"
            f"{markdown_table(*accuracy)}\n\n### Each cell minus `{cell}` (points; 95% "
            f"interval; wins/pairs, runs matched by seed)\n\n{markdown_table(*differences)}\n"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / f"{experiment}_comparison.{kind}" for kind in ("md", "csv", "png")}
    title = f"{experiment}: accuracy per domain (mean ± std over seeds)"
    note = (
        f"{len(runs)} runs from {client.tracking_uri}. Accuracy in %; test split where a run "
        "was tested, else validation; `± std` over the runs (seeds) of a row."
    )
    paths["md"].write_text(f"# {title}\n\n{note}\n\n{markdown_table(header, rows)}\n{paired}")
    write_csv(paths["csv"], domains, groups)
    comparison_chart(domains, groups, title).savefig(paths["png"])
    return paths


def log_report(client: MlflowClient, experiment: str, paths: dict[str, Path]) -> str:
    """Logs the report files as a new run tagged `report=true`; returns its id."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    # The Markdown table doubles as the run's description in the MLflow UI.
    run = client.create_run(
        experiment_id,
        run_name="comparison-report",
        tags={REPORT_TAG: "true", "mlflow.note.content": paths["md"].read_text()},
    )
    for path in paths.values():
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def tag_filter(pairs: list[str]) -> str:
    """["module=srm", "data=demo"] -> "tags.module = 'srm' and tags.data = 'demo'"."""
    clauses = []
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--tag {pair!r}: expected key=value, e.g. --tag module=srm")
        clauses.append(f"tags.`{key.strip()}` = '{value.strip()}'")
    return " and ".join(clauses)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="officehome", help="MLflow experiment name")
    parser.add_argument(
        "--filter", default="", help="MLflow search filter, e.g. \"tags.module = 'srm'\""
    )
    parser.add_argument(
        "--tag", action="append", default=[], help="key=value tag filter (repeatable)"
    )
    parser.add_argument(
        "--stage", default="fit", help="runs of this CLI subcommand only (`any` for all)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("reports"))
    parser.add_argument("--log-report", action="store_true", help="log the files as a report run")
    parser.add_argument("--baseline", default="none", help="module the others are paired with")
    parser.add_argument(
        "--baseline-method", default=PLAIN_METHOD, help="the baseline's training method"
    )
    parser.add_argument(
        "--interval", choices=["t", "bootstrap"], default="t", help="paired 95%% interval"
    )
    args = parser.parse_args(argv)

    client = tracking_client(args.tracking_uri)
    filter_string = " and ".join(f for f in (args.filter, tag_filter(args.tag)) if f)
    runs = search_runs(client, args.experiment, filter_string, args.stage)
    paths = write_report(
        client,
        args.experiment,
        runs,
        args.output_dir,
        args.baseline,
        args.interval,
        args.baseline_method,
    )
    print("\nWrote " + ", ".join(str(p) for p in paths.values()))
    if args.log_report:
        run_id = log_report(client, args.experiment, paths)
        print(f"Logged the report as run {run_id} (tag {REPORT_TAG}=true)")
    return paths


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
