"""One demo training epoch end to end: `experiments.officehome fit` with the demo config.

Runs `configs/officehome/demo.yaml` for one epoch (progress bar off, MLflow logging to a
temporary SQLite store, outputs in a temporary folder) in this process. The demo data is
generated into a temporary `$STYLEBENCH_DATA_DIR` first and timed separately, so the epoch's time
is training + validation + logging only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks import DEMO_CONFIG, demo_environment, machine_description, write_result
from lightning_modules.names import MONITOR

NAME = "demo_epoch"


def run(config: Path = DEMO_CONFIG, extra_args: list[str] | None = None) -> dict:
    """Generate the demo data, then time one `fit` epoch; return the result dictionary."""
    from experiments.officehome import main

    rows = []
    with demo_environment(config) as demo_args:
        base_args = [*demo_args, "--trainer.max_epochs", "1", *(extra_args or [])]
        # `validate` on a fresh model builds the DataModule and so generates the data: this
        # first call's time is data generation (+ one validation pass and process warm-up).
        start = time.perf_counter()
        main(["validate", *base_args])
        rows.append({"stage": "data generation + validate", "seconds": time.perf_counter() - start})
        start = time.perf_counter()
        cli = main(["fit", *base_args])
        seconds = time.perf_counter() - start
        trainer = cli.trainer
        rows.append(
            {
                "stage": "fit, 1 epoch (train + val + MLflow)",
                "seconds": seconds,
                "train_batches": int(trainer.num_training_batches),
                "global_steps": int(trainer.global_step),
                "val_acc_mean": _metric(trainer, MONITOR),
            }
        )
    return {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": {"config": str(config.name), "max_epochs": 1, "extra_args": extra_args or []},
        "rows": rows,
    }


def _metric(trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(torch.as_tensor(value))


COLUMNS = ("stage", "seconds", "train_batches", "global_steps", "val_acc_mean")

NOTES = """
Wall-clock seconds in one process, `experiments.officehome.main` called directly. The first
row includes generating the demo images; the second is the end-to-end epoch: building the
model and loaders, one training epoch, validation, checkpointing and MLflow logging.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None, extra_args=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(args.config, extra_args)
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.demo_epoch [--config ...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
