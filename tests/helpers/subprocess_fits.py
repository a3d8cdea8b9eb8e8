"""Office-Home demo fits in a subprocess (`python -m experiments.officehome fit`), for tests
that kill, resume or race real processes; the environment keeps their files under tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow import MlflowClient

from lightning_modules.tracking import metric_history
from tests.helpers.paths import REPO

MAX_EPOCHS = 4


def fit_command(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.officehome",
        "fit",
        "--config",
        str(REPO / "configs/officehome/demo.yaml"),
        "--data.init_args.demo_classes=3",
        "--data.init_args.images_per_class=12",
        "--data.init_args.demo_image_size=32",
        "--data.init_args.image_size=32",
        "--data.init_args.resize_size=36",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        f"--trainer.max_epochs={MAX_EPOCHS}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        # A checkpoint every 3 optimizer steps, so the kill lands after a mid-epoch checkpoint.
        "--checkpoint.every_n_train_steps=3",
        *extra,
    ]


def environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        STYLEBENCH_DATA_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(REPO),
    )
    return env


def logged_steps(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {key: [m.step for m in metric_history(client, run_id, key)] for key in keys}
