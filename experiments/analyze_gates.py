"""Record a trained model's gates per domain and class and log the figures to MLflow.

    python -m experiments.analyze_gates --config configs/officehome/demo.yaml \\
        --ckpt_path outputs/<exp>/<run>/checkpoints/last.ckpt [--split val|test|train] \\
        [--into-source-run] [--runs RUN_ID ...] [--batch-size N] [--probe-images N]

The config (several `--config` files stack, with the training CLI's overrides) builds the
DataModule only; the model is the checkpoint's. Every recalibration module's gate is recorded
over the split by forward hooks (`lightning_modules/analysis/gates.py`), and logged to a new
MLflow run in the checkpoint's experiment, tagged `source_run_id` and `analysis=gates` (or into
the checkpoint's own run with `--into-source-run`): `gates/<block>_domains.png` and
`gates/<block>_classes.png` (heat maps), `gates/separation.png` (domain separation across
depth, overlaid with the analysis runs of `--runs`), `gates/statistics.json` and
`gates/separation.csv` (the numbers behind them).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from pytorch_lightning.cli import LightningArgumentParser

from lightning_modules.analysis.gate_figures import (
    gate_heatmap,
    separation_figure,
    short_block_name,
)
from lightning_modules.analysis.gates import record_gates_and_samples
from lightning_modules.analysis.separation import rows_from_csv, rows_to_csv, separation_rows
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.cli import ParsedConfig
from lightning_modules.tracking import read_checkpoint_run_id, tracking_client

FALLBACK_EXPERIMENT = "gate_analysis"
KIND_NAMES = {"domains": "domain", "classes": "class"}


def add_analysis_arguments(parser: LightningArgumentParser) -> None:
    """The analysis' own options, beside the training CLI's."""
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint to analyse")
    parser.add_argument(
        "--split",
        type=str,
        default="val",
        choices=["val", "test", "train"],
        help="split whose images are recorded (train: with the evaluation transform)",
    )
    parser.add_argument(
        "--into-source-run",
        action="store_true",
        help="log into the checkpoint's own run instead of a new run",
    )
    parser.add_argument(
        "--runs",
        type=str,
        nargs="+",
        default=[],
        help="earlier analysis run ids whose gates/separation.csv is overlaid in the plot",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per batch (default: the config's)"
    )
    parser.add_argument(
        "--probe-images",
        type=int,
        default=200,
        help="per-image gate vectors kept per domain for the linear probe (half train, half test)",
    )
    parser.add_argument("--device", type=str, default=None, help="cuda or cpu (default: auto)")
    parser.add_argument(
        "--tracking-uri",
        type=str,
        default=None,
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def open_run(client, ckpt_path: str, into_source_run: bool, split: str) -> tuple[str, str]:
    """(run id to log into, label of the run's line); creates the analysis run if needed."""
    source_run_id = read_checkpoint_run_id(ckpt_path)
    if source_run_id is None:
        if into_source_run:
            raise ValueError(f"--into-source-run: {ckpt_path} holds no MLflow run id")
        experiment = client.get_experiment_by_name(FALLBACK_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(FALLBACK_EXPERIMENT)
        )
        label, tags = Path(ckpt_path).stem, {}
    else:
        source = client.get_run(source_run_id)
        experiment_id = source.info.experiment_id
        label = source.data.tags.get("mlflow.runName", source_run_id[:8])
        tags = {
            key: value for key, value in source.data.tags.items() if not key.startswith("mlflow.")
        }
    if into_source_run:
        return source_run_id, label
    tags.update(
        analysis="gates",
        source_run_id=source_run_id or "",
        split=split,
        checkpoint=str(ckpt_path),
        label=label,
    )
    run = client.create_run(experiment_id, run_name=f"{label}-gates", tags=tags)
    return run.info.run_id, label


def overlaid_rows(client, run_ids: Sequence[str]) -> dict[str, list[dict]]:
    """label -> separation rows of each earlier analysis run, read back from its artifacts."""
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for run_id in run_ids:
            try:
                path = client.download_artifacts(run_id, "gates/separation.csv", folder)
            except Exception as error:
                raise ValueError(
                    f"--runs {run_id}: cannot read gates/separation.csv ({error}); give the ids "
                    "of runs this tool logged (tag analysis=gates, or --into-source-run runs)"
                ) from error
            run = client.get_run(run_id)
            label = run.data.tags.get("label") or run.data.tags.get("mlflow.runName", run_id)
            runs[f"{label} ({run_id[:6]})"] = rows_from_csv(Path(path).read_text())
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Record, draw and log the gates of a checkpoint; return the exit status."""

    try:
        parsed = ParsedConfig(
            args=argv,
            add_arguments=add_analysis_arguments,
            prog="python -m experiments.analyze_gates",
            description=__doc__.splitlines()[0],
        )
        options = parsed.config
        datamodule = parsed.instantiate_data()
        loader = datamodule.evaluation_dataloader(options.split, options.batch_size)
        if not Path(options.ckpt_path).is_file():
            raise FileNotFoundError(f"--ckpt_path {options.ckpt_path} does not exist")
        model = MultiDomainClassifier.load_trained(options.ckpt_path)
        client = tracking_client(options.tracking_uri)
        overlays = overlaid_rows(client, options.runs)  # read first: a bad id fails early
    except Exception as error:
        print(f"ERROR: cannot set up the gate analysis: {error}", file=sys.stderr)
        return 2
    if model.domain_names != datamodule.domain_names:
        print(
            f"WARNING: the checkpoint's domains {model.domain_names} differ from the "
            f"config's {datamodule.domain_names}; domain indices follow the config",
            file=sys.stderr,
        )
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    statistics, per_image = record_gates_and_samples(
        model,
        loader,
        datamodule.on_after_batch_transfer,
        len(datamodule.domain_names),
        datamodule.num_classes,
        device,
        not options.no_progress,
        options.probe_images,
    )
    rows = separation_rows(statistics, per_image)
    run_id, label = open_run(client, options.ckpt_path, options.into_source_run, options.split)
    log_results(client, run_id, label, statistics, rows, overlays, datamodule, options)
    if not options.into_source_run:
        client.set_terminated(run_id)
    print(f"gates of {len(statistics)} blocks logged to run {run_id}")
    for row in rows:
        print(
            f"  {short_block_name(row['block']):>12}  domain cosine distance "
            f"{row['domain_cosine_distance']:.4f}  probe {row['domain_probe_accuracy']:.3f} "
            f"(chance {row['probe_chance']:.3f})"
        )
    return 0


def log_results(client, run_id, label, statistics, rows, overlays, datamodule, options) -> None:
    """Heat maps, the separation plot (with `--runs` overlaid), JSON, CSV and metrics."""
    domains, classes = datamodule.domain_names, datamodule.class_names
    for block, stats in statistics.items():
        name = short_block_name(block)
        for kind, means, labels in (
            ("domains", stats.mean_by_domain, domains),
            ("classes", stats.mean_by_class, classes),
        ):
            figure = gate_heatmap(
                means, stats.mean, labels, f"{label}: {name}, mean gate by {KIND_NAMES[kind]}"
            )
            client.log_figure(run_id, figure, f"gates/{name}_{kind}.png")
    document = {
        "checkpoint": str(options.ckpt_path),
        "split": options.split,
        "domain_names": domains,
        "class_names": classes,
        "blocks": {b: s.to_dict() for b, s in statistics.items()},
    }
    client.log_text(run_id, json.dumps(document, indent=1), "gates/statistics.json")
    client.log_text(run_id, rows_to_csv(rows), "gates/separation.csv")
    runs = {f"{label} ({run_id[:6]})": rows, **overlays}
    client.log_figure(
        run_id, separation_figure(runs, "domain separation by the gates"), "gates/separation.png"
    )
    for row in rows:
        for key in ("domain_cosine_distance", "domain_probe_accuracy"):
            if row[key] == row[key]:
                client.log_metric(run_id, f"gates/{key}", row[key], step=row["depth"])


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
