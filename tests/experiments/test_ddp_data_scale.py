"""Two-process DDP (CPU, gloo) with the file index and with LitData shards: one scan per
machine, and every validation image evaluated once when streaming shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from datamodules.data.index import recorded_scans
from datamodules.data.shard_writer import write_shards
from datamodules.officehome import OfficeHomeDemoDataModule

REPO = Path(__file__).resolve().parents[2]
DEMO = {"demo_classes": 3, "images_per_class": 15, "demo_image_size": 40}


def ddp_fit(tmp_path: Path, name: str, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    uri = f"sqlite:///{tmp_path / f'{name}.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": str(REPO),
        "STYLEBENCH_DATA_DIR": str(tmp_path / "data"),
        # The run's own index folder: its index files record the scans of the run's processes.
        "STYLEBENCH_INDEX_DIR": str(tmp_path / f"{name}-index"),
    }
    command = [
        sys.executable, "-m", "experiments.officehome", "fit",
        "--config", str(REPO / "configs/officehome/demo.yaml"),
        "--config", str(REPO / "configs/trainer/ddp_cpu.yaml"),
        *[item for k, v in DEMO.items() for item in (f"--data.init_args.{k}", str(v))],
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.image_size", "32",
        "--data.init_args.resize_size", "36",
        "--data.init_args.batch_size", "8",
        "--data.init_args.eval_batch_size", "5",
        "--data.init_args.num_workers", "0",
        "--data.init_args.style_shift", "null",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / name),
        "--trainer.max_epochs", "1",
        *extra,
    ]  # fmt: skip
    finished = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    return finished, uri


def scans_by_folder(index_dir: Path) -> dict[str, int]:
    """Scanned folder -> the scans its index file was written from."""
    return {path.name.rsplit("-", 1)[0]: recorded_scans(path) for path in index_dir.glob("*.index")}


def val_num_samples(uri: str) -> set[float]:
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("officehome").experiment_id])
    return {m.value for m in client.get_metric_history(run.info.run_id, "val/num_samples")}


@pytest.mark.slow
def test_two_ddp_processes_scan_each_folder_once(tmp_path: Path) -> None:
    ddp_fit(tmp_path, "tree")
    scanned = scans_by_folder(tmp_path / "tree-index")
    # The four domain folders, each scanned by one of the two processes, once.
    assert sorted(scanned) == ["Art", "Clipart", "Product", "Real World"]
    assert set(scanned.values()) == {1}
    assert val_num_samples(f"sqlite:///{tmp_path / 'tree.db'}") == {4 * 3 * 3}


@pytest.mark.slow
def test_two_ddp_processes_on_shards_see_each_validation_image_once(tmp_path: Path) -> None:
    source = OfficeHomeDemoDataModule(
        **DEMO, cache_dir=str(tmp_path / "cache"), val_fraction=0.2, test_fraction=0.2
    )
    write_shards(source, tmp_path / "shards", short_side=40, workers=1)
    _, uri = ddp_fit(tmp_path, "shards", "--data.init_args.shards", str(tmp_path / "shards"))
    # 4 domains x 3 classes x 3 validation images, none dropped or counted twice.
    assert len(source.split_samples["val"]) == 36
    assert val_num_samples(uri) == {36}
    # Nothing was scanned: the shards are the data.
    assert scans_by_folder(tmp_path / "shards-index") == {}
