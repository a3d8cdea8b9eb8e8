"""Two-process DDP fits (gloo, CPU) of the methods that keep per-domain statistics: CORAL,
MixStyle and GroupDRO, whose domain weights q must stay one global state (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
BALANCED = '{"Art": 1, "Clipart": 1, "Product": 1, "Real World": 1}'
TRAINED = 4

pytestmark = pytest.mark.slow


def ddp_fit(tmp_path: Path, method: str, *extra: str) -> MlflowClient:
    """A two-process fit of three steps on tiny demo data; returns the store's client."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        # The probes' module (ddp_probes.py) beside the project.
        "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
    }
    command = [
        sys.executable, "-m", "experiments.officehome", "fit",
        "--config", str(REPO / "configs/officehome/demo.yaml"),
        "--config", str(REPO / "tests/configs/officehome_tiny.yaml"),
        "--data.init_args.demo_classes", "3",
        "--data.init_args.images_per_class", "15",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.batch_size", "8",
        "--data.init_args.style_shift", "null",
        "--data.init_args.domain_proportions", BALANCED,
        "--trainer.default_root_dir", str(tmp_path / "outputs"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1",
        "--trainer.accelerator", "cpu",
        "--trainer.strategy", "ddp",
        "--trainer.devices", "2",
        "--model.init_args.method", method,
        *extra,
    ]  # fmt: skip
    finished = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("officehome").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["method"] == method
    assert run.data.params["trainer.strategy"] == "ddp"
    assert math.isfinite(run.data.metrics["train/loss_epoch"])
    return client


@pytest.mark.parametrize("method", ["coral", "mixstyle"])
def test_methods_with_per_rank_statistics_fit_under_two_process_ddp(tmp_path, method):
    ddp_fit(tmp_path, method)


def test_groupdro_q_is_one_global_state_under_ddp(tmp_path):
    """After every step, q is the same on both ranks, and it is the q of the update with each
    domain's loss over both ranks' samples (the all-reduced, count-weighted losses)."""
    ddp_fit(
        tmp_path,
        "groupdro",
        "--model.init_args.method_kwargs", '{"groupdro_eta": 1.0}',
        "--trainer.callbacks+=ddp_probes.GroupDROProbe",
    )  # fmt: skip
    ranks = [
        json.loads((tmp_path / "outputs" / f"GroupDROProbe-rank{r}.json").read_text())
        for r in (0, 1)
    ]
    eta = ranks[0]["eta"]
    steps = list(zip(ranks[0]["steps"], ranks[1]["steps"], strict=True))
    assert len(steps) == 3
    q = [1.0] * TRAINED
    for zero, one in steps:
        assert zero["q"] == pytest.approx(one["q"], abs=1e-7)  # one state on both ranks
        # Each rank saw different images: the local losses differ, so the q a rank would get
        # from its own losses differs from the global one.
        assert zero["sums"] != one["sums"]
        for d in range(TRAINED):
            count = zero["counts"][d] + one["counts"][d]
            if count:
                q[d] *= math.exp(eta * (zero["sums"][d] + one["sums"][d]) / count)
        total = sum(q)
        q = [value / total for value in q]
        assert zero["q"] == pytest.approx(q, rel=1e-4)
    assert max(q) > min(q) * 1.001  # the weights moved: the check above could fail
