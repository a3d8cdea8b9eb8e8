"""Two-process DDP training on CPU (gloo), checked against a single-process evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.officehome import main

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = str(REPO / "configs/officehome/demo.yaml")
BALANCED = '{"Art": 1, "Clipart": 1, "Product": 1, "Real World": 1}'


def tiny_args(cache: Path, root_dir: Path) -> list[str]:
    return [
        "--config", DEMO_CONFIG,
        "--data.init_args.demo_classes", "3",
        "--data.init_args.images_per_class", "15",
        "--data.init_args.demo_image_size", "40",
        "--data.init_args.cache_dir", str(cache),
        "--data.init_args.image_size", "32",
        "--data.init_args.resize_size", "36",
        "--data.init_args.batch_size", "8",
        "--data.init_args.eval_batch_size", "5",
        "--data.init_args.num_workers", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root_dir),
    ]  # fmt: skip


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ddp_uri = f"sqlite:///{tmp_path / 'ddp.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": ddp_uri,
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable, "-m", "experiments.officehome", "fit",
        *tiny_args(tmp_path / "cache", tmp_path / "outputs"),
        "--trainer.max_epochs", "2",
        "--trainer.accelerator", "cpu",
        "--trainer.strategy", "ddp",
        "--trainer.devices", "2",
        "--data.init_args.domain_proportions", BALANCED,
    ]  # fmt: skip
    finished = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stderr[-4000:]

    client = MlflowClient(ddp_uri)
    experiment = client.get_experiment_by_name("officehome")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "MLflow must hold one run per training, not one per process"
    ddp_run = runs[0]
    assert ddp_run.info.status == "FINISHED"
    assert ddp_run.data.params["trainer.strategy"] == "ddp"

    # every validation sample counted exactly once: 4 domains x 3 classes x 3 val images
    expected_val_samples = 4 * 3 * round(15 * 0.2)
    history = client.get_metric_history(ddp_run.info.run_id, "val/num_samples")
    assert {m.value for m in history} == {expected_val_samples}

    checkpoints = list((tmp_path / "outputs").rglob("last.ckpt"))
    assert len(checkpoints) == 1
    single_uri = f"sqlite:///{tmp_path / 'single.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", single_uri)
    # MLflow puts a SQLite store's artifacts in ./mlruns of the current directory.
    monkeypatch.chdir(tmp_path)
    validated = main(
        [
            "validate",
            *tiny_args(tmp_path / "cache", tmp_path / "single-outputs"),
            "--ckpt_path",
            str(checkpoints[0]),
        ]
    )
    single = MlflowClient(single_uri).get_run(validated.trainer.logger.run_id).data.metrics
    assert single["val/num_samples"] == expected_val_samples
    for domain in ("Art", "Clipart", "Product", "Real_World"):
        key = f"val/acc/{domain}"
        last_ddp_value = client.get_metric_history(ddp_run.info.run_id, key)[-1].value
        assert single[key] == pytest.approx(last_ddp_value, abs=1e-6), key


def test_sync_batchnorm_conversion_reaches_the_recalibration_modules() -> None:
    """`trainer.sync_batchnorm: true` converts every BatchNorm, SRM's own BatchNorm1d included
    (PyTorch runs SyncBatchNorm on GPUs only, so this is checked on the conversion)."""
    import torch

    from lightning_modules.models.backbones import create_backbone

    backbone = create_backbone("resnet20", recalibration="srm", image_size=32)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and not isinstance(m, torch.nn.SyncBatchNorm)
        for m in converted.modules()
    )
    assert isinstance(converted.layer1[0].recalibration.bn, torch.nn.SyncBatchNorm)
    assert set(converted.state_dict()) == set(
        create_backbone("resnet20", recalibration="srm", image_size=32).state_dict()
    )
