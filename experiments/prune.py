"""Channel pruning by gate importance: accuracy vs pruning ratio, gate ranking vs random.

    python -m experiments.prune --config configs/officehome/demo.yaml \\
        --ckpt_path outputs/1/<run id>/checkpoints/best-epoch007.ckpt --ratios 0 0.1 0.2 0.5
    python -m experiments.prune --runs <pruning run id> <pruning run id>   # overlay only

Ranks each block's channels by the recalibration module's mean gate over the training split
(training images with the evaluation preprocessing, model in eval mode), masks the lowest
`floor(ratio * C)` per block (zeroing them in the module's output, before the shortcut
addition), and evaluates every domain of the evaluation split, once per ratio; a seeded random
ranking (`--seed`) prunes the same counts as the baseline. The rule is the project's reading of
the SRM paper's pruning study (Lee et al., ICCV 2019, arXiv:1903.10829), whose exact rule is
not available: see `lightning_modules/analysis/pruning.py`.

A new MLflow run in the checkpoint's experiment (tags `analysis=pruning`, `source_run_id`)
gets `prune/{gate,random}/acc_mean`, `.../acc_worst`, `.../acc/<domain>` with step
round(100 * ratio) (MLflow steps are integers), `pruning/accuracy_vs_ratio.png` and
`pruning/accuracy.csv`. `--runs` overlays earlier pruning runs (read back from MLflow) and
this one in `pruning/overlay.png` (+ `pruning/overlay.csv`); with `--runs` alone (no
`--config`) only the overlay is made, in a new run of the first run's experiment. The config
(several `--config` files stack, with overrides) is parsed as training parses it; only the
DataModule is built from it, the model comes from the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from pytorch_lightning.cli import LightningArgumentParser
from torch.utils.data import DataLoader

from lightning_modules.analysis.gates import record_gates
from lightning_modules.analysis.pruning import (
    PruningPoint,
    as_logged,
    mlflow_metrics,
    points_from_csv,
    points_to_csv,
    pruning_curve,
)
from lightning_modules.analysis.pruning_figures import accuracy_vs_ratio_figure, overlay_figure
from lightning_modules.classifier import MultiDomainClassifier
from lightning_modules.cli import ParsedConfig
from lightning_modules.names import ACC, ACC_MEAN, metric_key
from lightning_modules.tracking import read_checkpoint_run_id, tracking_client

PROG = "python -m experiments.prune"
DEFAULT_RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CURVE_CSV = "pruning/accuracy.csv"
CURVE_FIGURE = "pruning/accuracy_vs_ratio.png"
OVERLAY_FIGURE = "pruning/overlay.png"
OVERLAY_CSV = "pruning/overlay.csv"


def add_prune_arguments(parser: LightningArgumentParser | argparse.ArgumentParser) -> None:
    """The pruning tool's own options (beside the training config's)."""
    parser.add_argument(
        "--ckpt_path",
        type=str,
        default=None,
        help="Lightning checkpoint of a MultiDomainClassifier to prune (its MLflow run is read "
        "from the checkpoint); required unless only --runs are overlaid",
    )
    parser.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=DEFAULT_RATIOS,
        help="pruning ratios in [0, 1): per block, floor(ratio * C) channels are masked "
        "(default 0 0.1 ... 0.9)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random-ranking baseline (default 0)"
    )
    parser.add_argument(
        "--split",
        type=str,
        default="val",
        choices=["val", "test"],
        help="evaluation split (default val, the split the checkpoint's run logs and selects on)",
    )
    parser.add_argument(
        "--runs",
        type=str,
        nargs="+",
        default=[],
        help="ids of earlier pruning runs to overlay with this one in pruning/overlay.png",
    )
    parser.add_argument(
        "--device",
        type=str,
        default="auto",
        help="device to run on: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...",
    )
    parser.add_argument(
        "--tracking_uri",
        type=str,
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--output_dir",
        type=str,
        default=None,
        help="also write the figures and CSVs into this folder",
    )
    parser.add_argument(
        "--no_progress", action="store_true", help="hide the progress bars over batches"
    )


def _wants_config(argv: Sequence[str]) -> bool:
    return any(a in ("--config", "-c", "-h", "--help") or a.startswith("--config=") for a in argv)


def parse(
    argv: Sequence[str] | None,
) -> tuple[argparse.Namespace | object, ParsedConfig | None]:
    """(options, parsed training config or None for an overlay-only call); None reads
    `sys.argv`."""
    if _wants_config(sys.argv[1:] if argv is None else argv):
        parsed = ParsedConfig(
            args=argv,
            add_arguments=add_prune_arguments,
            prog=PROG,
            description=__doc__.splitlines()[0],
        )
        return parsed.config, parsed
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_prune_arguments(parser)
    options = parser.parse_args(None if argv is None else list(argv))
    if options.ckpt_path is not None:
        raise ValueError("--ckpt_path needs the training --config that built the checkpoint's data")
    if not options.runs:
        raise ValueError("nothing to do: give --config and --ckpt_path, or --runs to overlay")
    return options, None


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_model_matches_data(model: MultiDomainClassifier, datamodule, ckpt_path: str) -> None:
    """Fail when the config's data is not the data the checkpoint was trained on."""
    for what, own, data in (
        ("domain_names", model.domain_names, datamodule.domain_names),
        ("class_names", model.class_names, datamodule.class_names),
    ):
        if list(own) != list(data):
            raise ValueError(
                f"the checkpoint {ckpt_path} has {what} {list(own)} but the config's data has "
                f"{list(data)}; pass the --config (and overrides) the checkpoint was trained with"
            )


def evaluation_loader(datamodule, split: str) -> DataLoader:
    """The DataModule's own loader of the split (the plain one beside a style-shifted one)."""
    loaders = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    return loaders[0] if isinstance(loaders, list) else loaders


def logged_checkpoint_metrics(
    client: MlflowClient, run_id: str, global_step: int, split: str
) -> dict[str, float]:
    """The `<split>/...` metrics the run logged for the checkpoint's validation.

    Lightning logs a validation that ends at global step N (N optimizer steps done) at step
    N - 1 (the index of the last training batch), and the checkpoint written after it holds
    `global_step` N; so the entry is the latest one with step < N (a later validation is
    logged at step >= N).
    """
    run = client.get_run(run_id)
    found = {}
    for key in run.data.metrics:
        if not key.startswith(metric_key(split, ACC)):
            continue
        history = [m for m in client.get_metric_history(run_id, key) if m.step < global_step]
        if history:
            found[key] = max(history, key=lambda m: (m.step, m.timestamp)).value
    return found


def overlay_label(client: MlflowClient, run_id: str) -> str:
    """A pruning run's label in the overlay: its module (with options) and source run name."""
    tags = client.get_run(run_id).data.tags
    module = tags.get("module", "?")
    if tags.get("module_options"):
        module = f"{module}[{tags['module_options']}]"
    return f"{module} ({tags.get('source_run_name', run_id[:8])}, {run_id[:6]})"


def read_curve(client: MlflowClient, run_id: str) -> list[PruningPoint]:
    """An earlier pruning run's curve, from its `pruning/accuracy.csv` artifact."""
    try:
        path = client.download_artifacts(run_id, CURVE_CSV)
    except Exception as error:
        raise ValueError(
            f"--runs {run_id}: cannot read its {CURVE_CSV} ({error}); is it a run of "
            f"{PROG} in this tracking store?"
        ) from error
    return points_from_csv(Path(path).read_text())


def write_overlay(
    client: MlflowClient, run_id: str, curves: dict[str, list[PruningPoint]], output_dir
) -> None:
    """Log (and optionally write) the overlay chart and its CSV."""
    figure = overlay_figure(curves)
    client.log_figure(run_id, figure, OVERLAY_FIGURE)
    lines = []
    for label, points in curves.items():
        text = points_to_csv(points).splitlines()
        if not lines:
            lines.append("label," + text[0])
        lines += [f'"{label}",' + row for row in text[1:]]
    client.log_text(run_id, "\n".join(lines) + "\n", OVERLAY_CSV)
    if output_dir:
        figure.savefig(Path(output_dir) / Path(OVERLAY_FIGURE).name)
        (Path(output_dir) / Path(OVERLAY_CSV).name).write_text("\n".join(lines) + "\n")


def prune_checkpoint(options, parsed: ParsedConfig, client: MlflowClient) -> str:
    """Rank, prune, evaluate and log one checkpoint; return the new run's id."""
    ckpt_path = options.ckpt_path
    datamodule = parsed.instantiate_data()
    model = MultiDomainClassifier.load_trained(ckpt_path)
    check_model_matches_data(model, datamodule, ckpt_path)
    datamodule.setup("fit")
    device = resolve_device(options.device)
    progress = not options.no_progress
    normalize = datamodule.on_after_batch_transfer
    statistics = record_gates(
        model,
        datamodule.evaluation_dataloader("train"),
        normalize,
        len(model.domain_names),
        model.hparams.num_classes,
        device=device,
        progress=progress,
    )
    points = pruning_curve(
        model,
        evaluation_loader(datamodule, options.split),
        normalize,
        {name: stats.mean for name, stats in statistics.items()},
        options.ratios,
        seed=options.seed,
        device=device,
        progress=progress,
    )

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    source_run_id = read_checkpoint_run_id(ckpt_path)
    tags = {
        "analysis": "pruning",
        "source_run_id": source_run_id or "",
        "source_checkpoint": str(Path(ckpt_path).resolve()),
        "dataset": datamodule.dataset_name,
        "backbone": model.hparams.backbone,
        "module": model.hparams.recalibration,
        "module_options": model.module_options,
    }
    if source_run_id is not None:
        source = client.get_run(source_run_id)
        experiment_id = source.info.experiment_id
        tags["source_run_name"] = source.info.run_name
        logged = logged_checkpoint_metrics(
            client, source_run_id, checkpoint["global_step"], options.split
        )
    else:
        print(
            f"WARNING: {ckpt_path} names no MLflow run; logging under experiment "
            f"{datamodule.dataset_name!r} without a logged accuracy to compare",
            file=sys.stderr,
        )
        experiment = client.get_experiment_by_name(datamodule.dataset_name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(datamodule.dataset_name)
        )
        logged = {}
    run_name = f"{tags.get('source_run_name', Path(ckpt_path).stem)}-pruning"
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    for key, value in {
        "ratios": " ".join(f"{r:g}" for r in options.ratios),
        "seed": options.seed,
        "split": options.split,
        "checkpoint_epoch": checkpoint.get("epoch"),
        "checkpoint_global_step": checkpoint.get("global_step"),
    }.items():
        client.log_param(run_id, key, value)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(key, value, now, point.step)
            for point in points
            for key, value in mlflow_metrics(point).items()
        ],
    )
    unpruned = next((p for p in points if p.pruned_channels == 0), None)
    report_key = metric_key(options.split, ACC_MEAN)
    if unpruned is not None and report_key in logged:
        same = as_logged(unpruned.metrics[ACC_MEAN]) == logged[report_key]
        client.set_tag(run_id, f"checkpoint_logged_{ACC_MEAN}", repr(logged[report_key]))
        client.set_tag(run_id, "ratio0_reproduces_logged", str(same).lower())
        print(
            f"ratio 0: {ACC_MEAN} {as_logged(unpruned.metrics[ACC_MEAN])!r}; the checkpoint's "
            f"run logged {report_key} {logged[report_key]!r} "
            f"({'identical' if same else 'DIFFERENT'})"
        )
    csv_text = points_to_csv(points)
    figure = accuracy_vs_ratio_figure(points, title=f"{run_name} ({options.split})")
    client.log_text(run_id, csv_text, CURVE_CSV)
    client.log_figure(run_id, figure, CURVE_FIGURE)
    if options.output_dir:
        Path(options.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(options.output_dir) / Path(CURVE_CSV).name).write_text(csv_text)
        figure.savefig(Path(options.output_dir) / Path(CURVE_FIGURE).name)
    print(format_table(points))
    print(f"MLflow run {run_id} ({run_name}) in experiment {experiment_id}")
    return run_id


def format_table(points: Sequence[PruningPoint]) -> str:
    """Mean accuracy (%) per ratio, gate vs random, as printed at the end."""
    by_ratio: dict[float, dict[str, float]] = {}
    for p in points:
        by_ratio.setdefault(p.ratio, {})[p.rule] = 100 * p.metrics.get(ACC_MEAN, float("nan"))
    lines = [f"ratio  gate {ACC_MEAN}  random {ACC_MEAN}"]
    for ratio, values in by_ratio.items():
        lines.append(
            f"{ratio:5.2f}  {values.get('gate', float('nan')):13.2f}  "
            f"{values.get('random', float('nan')):15.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; return the exit status (2 when the inputs cannot be used)."""
    try:
        options, parsed = parse(argv)
        client = tracking_client(options.tracking_uri)
        for run_id in options.runs:  # fail before any work on a wrong id
            read_curve(client, run_id)
        run_id = None
        if parsed is not None:
            if options.ckpt_path is None:
                raise ValueError("--ckpt_path is required with --config")
            run_id = prune_checkpoint(options, parsed, client)
    except (ValueError, FileNotFoundError, KeyError, argparse.ArgumentError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    if options.runs:
        curves = {overlay_label(client, r): read_curve(client, r) for r in options.runs}
        if run_id is None:
            first = client.get_run(options.runs[0])
            run_id = client.create_run(
                first.info.experiment_id,
                run_name="pruning-overlay",
                tags={"analysis": "pruning_overlay", "overlaid_runs": " ".join(options.runs)},
            ).info.run_id
        else:
            curves = {overlay_label(client, run_id): read_curve(client, run_id), **curves}
        if options.output_dir:
            Path(options.output_dir).mkdir(parents=True, exist_ok=True)
        write_overlay(client, run_id, curves, options.output_dir)
        print(f"overlay of {len(curves)} runs: {OVERLAY_FIGURE} in MLflow run {run_id}")
    client.set_terminated(run_id)
    return 0


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
