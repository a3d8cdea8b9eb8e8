"""A tracking-server outage does not end training: the `mlflow server` is stopped mid-fit and
started again on the same store; the fit finishes and the run holds every metric point."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers.mlflow_server import free_port, stop, wait_until_healthy
from tests.helpers.subprocess_fits import environment, fit_command, logged_steps

OUTAGE_S = 10
#: Long enough to outlast the outage and a retry interval on a loaded machine.
EPOCHS = 10


def read(tmp_path: Path) -> str:
    return (tmp_path / "fit.log").read_text()


def start_server(root: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("a")
    server = subprocess.Popen(
        command, cwd=root, env=environment, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    wait_until_healthy(server, f"http://127.0.0.1:{port}", root / "server.log")
    return server


@pytest.mark.slow
def test_server_stopped_mid_fit_and_restarted_loses_no_metric_point(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    env = {**environment(tmp_path), "MLFLOW_TRACKING_URI": url}
    command = [
        *(a for a in fit_command() if not a.startswith("--checkpoint.every")),
        f"--trainer.max_epochs={EPOCHS}",
    ]
    log = (tmp_path / "fit.log").open("w")
    fit = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        client = MlflowClient(url)
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")):
            assert fit.poll() is None and time.monotonic() < deadline, "no first epoch"
            time.sleep(0.2)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        stop(server)  # mid-fit: epoch 0 is done
        outage_end = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_end or "unreachable" not in read(tmp_path):
            assert fit.poll() is None, "training ended during the outage"
            time.sleep(0.5)
        server = start_server(tmp_path, port)
        assert fit.wait(timeout=600) == 0, (tmp_path / "fit.log").read_text()[-3000:]
    finally:
        if fit.poll() is None:
            fit.kill()
        log.close()
        stop(server)
    server = start_server(tmp_path, port)
    try:
        text = read(tmp_path)
        assert "MLflow tracking store unreachable" in text
        assert "MLflow tracking store reachable again; kept calls sent" in text
        client = MlflowClient(url)
        finished = client.get_run(run.info.run_id)
        assert finished.info.status == "FINISHED"
        steps = logged_steps(client, run.info.run_id)
        train = steps["train/loss_step"]
        assert train == list(range(train[-1] + 1))  # no point lost across the outage
        assert len(steps["val/acc_mean"]) == EPOCHS
        assert not list(tmp_path.glob("mlflow_unsent_*.json"))
    finally:
        stop(server)
