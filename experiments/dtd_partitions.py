"""Run (or gather) every DTD partition or fold and report mean +- std test accuracy in MLflow.

    python -m experiments.dtd_partitions --config configs/dtd/demo.yaml --partitions 1 2 3
    python -m experiments.dtd_partitions --config configs/dtd/resnet50.yaml --folds 5 \\
        --data.init_args.root /data/dtd
    python -m experiments.dtd_partitions --config configs/dtd/resnet50.yaml \\
        --config configs/modules/se.yaml --data.init_args.root /data/dtd
    python -m experiments.dtd_partitions --config configs/dtd/demo.yaml --gather

One MLflow parent run holds the summary (`test/acc_mean` = mean over children,
`test/acc_mean_std` = their sample standard deviation, `num_children`); each partition or fold
is an ordinary `fit` + `test` run of `experiments.dtd`, nested under the parent through MLflow's
`mlflow.parentRunId` tag and named by its `sweep_unit` tag (`partition3`, `fold2of5`). Arguments
the runner does not know are passed to every child (`--trainer.max_epochs 2`). With
`--parent-run-id`, units already finished under that parent are skipped (resume after a crash);
`--gather` only reads finished children and writes the summary. `--config` may be repeated (a
base config and overlays, as for training); the sweep is identified by the whole list.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus

from datamodules.dtd import DTDDataModule
from experiments.dtd import main as dtd_main
from lightning_modules.cli import ParsedConfig
from lightning_modules.names import ACC_MEAN, TEST, metric_key
from lightning_modules.tracking import code_version, default_tracking_uri, tracking_client

PARENT_TAG = "mlflow.parentRunId"
UNIT_TAG = "sweep_unit"
SWEEP_CONFIG_TAG = "sweep_config"
METRIC = metric_key(TEST, ACC_MEAN)


def sweep_units(partitions: Sequence[int] | None, folds: int | None) -> list[tuple[str, list]]:
    """(unit name, CLI arguments selecting it) for every partition or fold."""
    if folds is not None:
        return [
            (
                f"fold{fold}of{folds}",
                ["--data.init_args.num_folds", str(folds), "--data.init_args.fold", str(fold)],
            )
            for fold in range(1, folds + 1)
        ]
    return [
        (f"partition{partition}", ["--data.init_args.partition", str(partition)])
        for partition in partitions or range(1, 11)
    ]


def config_args(configs: Sequence[str]) -> list[str]:
    """`--config` arguments for the config files, in order (later ones override earlier)."""
    return [item for config in configs for item in ("--config", config)]


def sweep_name(configs: Sequence[str]) -> str:
    """What identifies a sweep's config in MLflow: the config files as given, in order."""
    return " ".join(configs)


def logger_settings(args: Sequence[str]) -> tuple[str, str, dict]:
    """The tracking URI, experiment name and tags the MLflow logger of a training run would get.

    `args` are the training arguments (`--config` files and overrides), parsed as
    `python -m experiments.dtd fit` parses them, so `--trainer.logger.init_args.*` overrides
    count.
    """
    logger = ParsedConfig(DTDDataModule, args).config.trainer.logger
    init_args = logger.get("init_args") if logger else None
    settings = init_args.as_dict() if init_args else {}
    uri = settings.get("tracking_uri") or default_tracking_uri()
    return uri, settings.get("experiment_name") or "dtd", dict(settings.get("tags") or {})


def finished_children(client: MlflowClient, parent: Run) -> dict[str, Run]:
    """The newest finished child with a test accuracy for each unit."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    children = {}
    for run in runs:
        unit = run.data.tags.get(UNIT_TAG)
        if unit and run.info.status == "FINISHED" and METRIC in run.data.metrics:
            children[unit] = run  # later runs replace earlier ones
    return children


def summarize(client: MlflowClient, parent: Run) -> dict[str, float]:
    """Log mean and std of the children's test accuracy on the parent run; return them."""
    children = finished_children(client, parent)
    if not children:
        raise RuntimeError(f"parent run {parent.info.run_id} has no finished child runs")
    accuracies = {unit: run.data.metrics[METRIC] for unit, run in sorted(children.items())}
    values = list(accuracies.values())
    # Sample standard deviation, as usually reported over DTD's ten partitions.
    summary = {
        METRIC: statistics.fmean(values),
        f"{METRIC}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "num_children": float(len(values)),
    }
    for name, value in summary.items():
        client.log_metric(parent.info.run_id, name, value)
    client.set_tag(
        parent.info.run_id,
        "summary",
        f"{100 * summary[METRIC]:.2f} +- {100 * summary[f'{METRIC}_std']:.2f} % "
        f"over {len(values)} ({', '.join(accuracies)})",
    )
    for unit, value in accuracies.items():
        print(f"{unit:>16}  {METRIC} {value:.4f}")
    print(f"{'mean +- std':>16}  {summary[METRIC]:.4f} +- {summary[f'{METRIC}_std']:.4f}")
    return summary


def find_parent(client: MlflowClient, experiment_name: str, configs: Sequence[str]) -> Run:
    """The newest parent run of this config (the config files, in order)."""
    config = sweep_name(configs)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.{SWEEP_CONFIG_TAG} = '{config}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if experiment
        else []
    )
    if not runs:
        raise RuntimeError(
            f"no partition/fold sweep of {config} in MLflow experiment {experiment_name!r} "
            f"({client.tracking_uri}); run it first or pass --parent-run-id"
        )
    return runs[0]


def run_unit(configs: Sequence[str], unit_args: list, tags: dict, extra: list, checkpoint: str):
    """One child: the ordinary `fit`, then `test` of the chosen checkpoint, in one MLflow run."""
    cli = dtd_main(
        [
            "fit",
            *config_args(configs),
            *extra,
            *unit_args,
            "--trainer.logger.init_args.tags",
            json.dumps({k: str(v) for k, v in tags.items()}),
        ]
    )
    status = "FAILED"
    try:
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, verbose=False)
        status = "FINISHED"
    finally:
        cli.trainer.logger.finalize("success" if status == "FINISHED" else "failed")
    return cli


def main(args: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.dtd_partitions",
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are passed to every `python -m experiments.dtd fit` run.",
    )
    parser.add_argument(
        "--config",
        required=True,
        action="append",
        help="a configs/dtd/*.yaml file; repeat for overlays (configs/modules/*.yaml)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--partitions", type=int, nargs="+", help="official partitions (default: 1..10)"
    )
    which.add_argument("--folds", type=int, help="k of a stratified k-fold cross-validation")
    parser.add_argument(
        "--gather", action="store_true", help="only summarize finished child runs; train nothing"
    )
    parser.add_argument(
        "--parent-run-id", help="add to (or gather) this parent run; finished units are skipped"
    )
    parser.add_argument(
        "--checkpoint",
        choices=["last", "best"],
        default="last",
        help="checkpoint to test (default last: in fold mode and with train+val the validation "
        "split is the test fold or training data, so 'best' would select on it)",
    )
    options, extra = parser.parse_known_args(args)
    uri, experiment_name, config_tags = logger_settings([*config_args(options.config), *extra])
    client = tracking_client(uri)
    if options.gather:
        parent = (
            client.get_run(options.parent_run_id)
            if options.parent_run_id
            else find_parent(client, experiment_name, options.config)
        )
        return summarize(client, parent)

    units = sweep_units(options.partitions, options.folds)
    if options.parent_run_id:
        parent = client.get_run(options.parent_run_id)
    else:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        )
        sweep = "folds" if options.folds else "partitions"
        parent = client.create_run(
            experiment_id,
            run_name="+".join(Path(config).stem for config in options.config) + f"-{sweep}",
            tags={
                "dataset": "dtd",
                "sweep": sweep,
                SWEEP_CONFIG_TAG: sweep_name(options.config),
                "code_version": code_version() or "unknown",
                **{k: str(v) for k, v in config_tags.items()},
            },
        )
        client.log_param(parent.info.run_id, "units", " ".join(name for name, _ in units))
        client.log_param(parent.info.run_id, "checkpoint", options.checkpoint)
        client.log_param(parent.info.run_id, "overrides", " ".join(extra)[:500])
    parent_id = parent.info.run_id
    done = finished_children(client, parent)
    try:
        for unit, unit_args in units:
            if unit in done:
                print(f"{unit}: finished child run {done[unit].info.run_id} found, skipped")
                continue
            tags = {**config_tags, PARENT_TAG: parent_id, UNIT_TAG: unit}
            run_unit(options.config, unit_args, tags, extra, options.checkpoint)
        summary = summarize(client, client.get_run(parent_id))
    except BaseException:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(parent_id, "FINISHED")
    return summary


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
