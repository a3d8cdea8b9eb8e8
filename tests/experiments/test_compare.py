"""`experiments.compare` on runs logged straight to a SQLite store: grouping, seeds, filters."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments import compare
from lightning_modules.callbacks.artifacts import NUM_PARAMETERS_KEY

DOMAINS = ("Art", "Clipart", "Product", "Real_World")


def log_run(
    client: MlflowClient,
    experiment_id: str,
    module: str,
    seed: int,
    accuracies: tuple[float, ...],
    stage: str = "test",
    tags: dict[str, str] | None = None,
) -> str:
    """A run shaped like the CLI's: tags, `<stage>/acc/<domain>`, mean, worst, parameters."""
    run = client.create_run(
        experiment_id,
        tags={
            "protocol": "multi_domain",
            "backbone": "resnet20",
            "module": module,
            "seed": str(seed),
            "stage": "fit",
            **(tags or {}),
        },
    )
    run_id = run.info.run_id
    for domain, value in zip(DOMAINS, accuracies, strict=True):
        client.log_metric(run_id, f"{stage}/acc/{domain}", value)
    client.log_metric(run_id, f"{stage}/acc_mean", sum(accuracies) / len(accuracies))
    client.log_metric(run_id, f"{stage}/acc_worst", min(accuracies))
    client.log_param(run_id, NUM_PARAMETERS_KEY, 270112 if module == "none" else 271456)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """Two seeds of `none`, two of `srm` (one only validated), a validate run, a report run.

    One store for the module: creating an MLflow SQLite store runs its migrations (seconds).
    """
    folder = tmp_path_factory.mktemp("compare")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    # the report runs' artifacts go beside the store, not to ./mlruns of the current directory
    experiment_id = client.create_experiment("officehome", str(folder / "mlruns"))
    log_run(client, experiment_id, "none", 0, (0.50, 0.60, 0.70, 0.40))
    log_run(client, experiment_id, "none", 1, (0.70, 0.60, 0.90, 0.60))
    log_run(client, experiment_id, "srm", 0, (0.80, 0.80, 0.80, 0.80))
    log_run(client, experiment_id, "srm", 1, (0.60, 0.60, 0.60, 0.60), stage="val")
    # Neither of these may count: a checkpoint re-evaluation and an earlier report.
    log_run(client, experiment_id, "srm", 0, (0.0,) * 4, tags={"stage": "validate"})
    log_run(client, experiment_id, "srm", 0, (0.0,) * 4, tags={compare.REPORT_TAG: "true"})
    return client


def store_args(client: MlflowClient, output: Path) -> list[str]:
    return ["--tracking-uri", client.tracking_uri, "--output-dir", str(output)]


def test_groups_by_module_with_mean_and_std_over_seeds(experiment: MlflowClient) -> None:
    runs = compare.search_runs(experiment, "officehome")
    assert len(runs) == 4
    domains, groups = compare.group_runs(runs)
    assert domains == sorted(DOMAINS)
    none, srm = groups
    assert none.key == ("multi_domain", "resnet20", "none")
    assert none.mean("Art") == pytest.approx(0.60)
    assert none.std("Art") == pytest.approx(0.1414, abs=1e-4)  # sample std of 0.5 and 0.7
    assert none.mean("acc_worst") == pytest.approx(0.50)
    # the tested run counts with test accuracy, the other with validation accuracy
    assert srm.stages == {"test", "val"}
    assert srm.mean("Art") == pytest.approx(0.70)
    assert none.parameters == {270112}

    header, rows = compare.table_rows(domains, groups)
    assert header[:6] == ["protocol", "backbone", "module", "Art", "Clipart", "Product"]
    assert "style robustness" not in header  # no run logged it
    assert rows[0][3] == "60.0 ± 14.1" and rows[0][header.index("parameters")] == "0.27M"


def test_cli_writes_table_files_and_logs_a_report_run_later_ignored(
    experiment: MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "reports"
    paths = compare.main(
        [*store_args(experiment, output), "--experiment", "officehome", "--log-report"]
    )
    printed = capsys.readouterr().out
    assert "resnet20  srm" in printed and "60.0 ± 14.1" in printed
    main_table, paired = paths["md"].read_text().split("## Paired against `none`")
    assert main_table.count("| multi_domain |") == 2
    # srm - none on acc_mean, by seed: 0.80 - 0.55 and 0.60 - 0.70 (the sweep's statistics).
    assert "| multi_domain | resnet20 | srm | +7.5 |" in paired and "| 1/2 |" in paired
    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["module"] for row in rows] == ["none", "srm"]
    assert float(rows[0]["Art_mean"]) == pytest.approx(0.60) and rows[0]["runs"] == "2"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")

    reports = experiment.search_runs(
        [experiment.get_experiment_by_name("officehome").experiment_id],
        f"tags.{compare.REPORT_TAG} = 'true'",
    )
    assert len(reports) == 2  # the fixture's and this one
    logged = {a.path for a in experiment.list_artifacts(reports[0].info.run_id)}
    assert logged == {f"officehome_comparison.{kind}" for kind in ("md", "csv", "png")}
    assert len(compare.search_runs(experiment, "officehome")) == 4


def test_tag_and_filter_options_narrow_the_runs(experiment: MlflowClient, tmp_path: Path) -> None:
    paths = compare.main(
        [*store_args(experiment, tmp_path), "--tag", "module=srm", "--filter", "tags.seed = '0'"]
    )
    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["module"], row["runs"]) for row in rows] == [("srm", "1")]
    assert compare.tag_filter(["data=demo", "module = srm"]) == (
        "tags.`data` = 'demo' and tags.`module` = 'srm'"
    )
    with pytest.raises(SystemExit, match="key=value"):
        compare.tag_filter(["module"])


def test_unknown_experiment_names_the_store_and_the_fix(experiment: MlflowClient) -> None:
    with pytest.raises(SystemExit, match=r"no experiment 'cifar'.*--tracking-uri"):
        compare.search_runs(experiment, "cifar")


def test_runs_differing_only_in_module_options_are_separate_rows(
    experiment: MlflowClient, tmp_path: Path
) -> None:
    """An ablation's variants (tag `module_options`) get a row each, labelled `srm[...]`; runs
    with the defaults (an empty tag, or none from before the tag existed) share one row."""
    experiment_id = experiment.create_experiment("ablation")
    log_run(experiment, experiment_id, "srm", 0, (0.8,) * 4, tags={"module_options": ""})
    log_run(experiment, experiment_id, "srm", 1, (0.6,) * 4)  # no tag: an older run
    for seed in (0, 1):
        log_run(
            experiment,
            experiment_id,
            "srm",
            seed,
            (0.5,) * 4,
            tags={"module_options": "pooling=avg"},
        )
    _, groups = compare.group_runs(compare.search_runs(experiment, "ablation"))
    assert [(g.options, len(g.run_ids), g.mean("Art")) for g in groups] == [
        ("", 2, pytest.approx(0.7)),
        ("pooling=avg", 2, pytest.approx(0.5)),
    ]
    assert [g.label for g in groups] == ["resnet20 srm", "resnet20 srm[pooling=avg]"]
    paths = compare.main([*store_args(experiment, tmp_path), "--experiment", "ablation"])
    table = paths["md"].read_text()
    assert "| multi_domain | resnet20 | srm | 70.0 ± 14.1 |" in table
    assert "| multi_domain | resnet20 | srm[pooling=avg] | 50.0 ± 0.0 |" in table
    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["module"], row["module_options"]) for row in rows] == [
        ("srm", ""),
        ("srm", "pooling=avg"),
    ]


def test_methods_are_rows_of_their_own_and_module_x_method_tables_pair_by_seed(
    experiment: MlflowClient, tmp_path: Path
) -> None:
    """Runs tagged `method` (and `method_options`) are rows `srm+coral[...]`; a run without the
    tag ran ERM; module x method tables pair each cell with `none` + `erm` by seed."""
    experiment_id = experiment.create_experiment("methods")
    accuracy = {
        ("none", "erm"): (0.50, 0.60),
        ("srm", "erm"): (0.55, 0.70),
        ("none", "coral"): (0.58, 0.61),
        ("srm", "coral"): (0.60, 0.50),
    }
    for (module, method), values in accuracy.items():
        for seed, value in enumerate(values):
            # `none` + `erm` of seed 0 is an older run without the method tags.
            tags = {} if (module, method, seed) == ("none", "erm", 0) else {"method": method}
            log_run(experiment, experiment_id, module, seed, (value,) * 4, tags=tags)
    log_run(
        experiment,
        experiment_id,
        "srm",
        0,
        (0.9,) * 4,
        tags={"method": "coral", "method_options": "mmd_gamma=0.5"},
    )
    _, groups = compare.group_runs(compare.search_runs(experiment, "methods"))
    assert [g.module_label for g in groups] == [
        "none", "none+coral", "srm", "srm+coral", "srm+coral[mmd_gamma=0.5]",
    ]  # fmt: skip
    paths = compare.main([*store_args(experiment, tmp_path), "--experiment", "methods"])
    text = paths["md"].read_text()
    matrix = text.split("## Module x method, multi_domain, resnet20")[1]
    assert "| module | erm | coral | coral[mmd_gamma=0.5] |" in matrix
    accuracy_part, paired_part = matrix.split("Each cell minus `none + erm`")
    assert "| srm | 62.5 ± 10.6 | 55.0 ± 7.1 | 90.0 |" in accuracy_part
    # srm+coral - none+erm by seed: 0.60 - 0.50, 0.50 - 0.60: mean 0, one win of two.
    pairs = zip(accuracy[("srm", "coral")], accuracy[("none", "erm")], strict=True)
    diffs = [a - b for a, b in pairs]
    half = 12.706205 * abs(diffs[0] - diffs[1]) / 2**0.5 / 2**0.5  # t_{0.975,1} sd / sqrt(2)
    assert f"+0.0 [{-100 * half:+.1f}, {100 * half:+.1f}] 1/2" in paired_part
    assert "| none | (baseline) | +4.5" in paired_part
    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["module"], r["method"], r["method_options"]) for r in rows][-1] == (
        "srm",
        "coral",
        "mmd_gamma=0.5",
    )
