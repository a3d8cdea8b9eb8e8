"""The demo against a real `mlflow server` on 127.0.0.1: runs, artifacts and the comparison report
go through the server's REST API and its artifact proxy (`mlflow-artifacts:` URIs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments import compare
from experiments.officehome import main
from lightning_modules.callbacks.artifacts import NUM_PARAMETERS_KEY
from tests.helpers.cli import tiny_demo_args
from tests.helpers.mlflow_server import free_port, stop, wait_until_healthy

# Slow tier: a real server process (its start alone takes seconds to a minute under load) and
# demo fits against it.
pytestmark = pytest.mark.slow

DOMAINS = ("Art", "Clipart", "Product", "Real_World")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a SQLite store and a served artifact root in a temporary folder."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    log = root / "server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        # Clients write and read artifacts through the server (mlflow-artifacts:/...).
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    # The server's GenAI job runner (eight more processes) has nothing to do here.
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as output:
        server = subprocess.Popen(
            command,
            cwd=root,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so `stop` reaches its children
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(server, url, log)
        yield url
    finally:
        stop(server)


@pytest.fixture(scope="module")
def demo_runs(tracking_server: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The demo's plain and SRM models, one epoch each, logged through the server."""
    tmp_path = tmp_path_factory.mktemp("demo")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    run_ids = []
    try:
        for module in ("none", "srm"):
            args = tiny_demo_args(tmp_path, "--model.init_args.recalibration", module, epochs=1)
            cli = main(["fit", *args])
            cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)
            cli.trainer.logger.finalize("success")
            run_ids.append(cli.trainer.logger.run_id)
    finally:
        monkeypatch.undo()
    return run_ids


def test_runs_and_artifacts_read_back_through_the_server(
    tracking_server: str, demo_runs: list[str], tmp_path: Path
) -> None:
    client = MlflowClient(tracking_server)
    for run_id in demo_runs:
        run = client.get_run(run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        assert {"dataset", "protocol", "backbone", "module", "seed", "code_version"} <= set(
            run.data.tags
        )
        assert int(run.data.params[NUM_PARAMETERS_KEY]) > 0
        for domain in DOMAINS:
            assert f"test/acc/{domain}" in run.data.metrics

        evaluation = {a.path for a in client.list_artifacts(run_id, "evaluation/test")}
        assert {
            "evaluation/test/domain_accuracy.png",
            "evaluation/test/per_class_accuracy.csv",
            "evaluation/test/summary.json",
        } <= evaluation
        confusion = {a.path for a in client.list_artifacts(run_id, "evaluation/val/confusion")}
        assert confusion == {f"evaluation/val/confusion/{d}.png" for d in DOMAINS}
        top_level = {a.path for a in client.list_artifacts(run_id)}
        assert "config.yaml" in top_level
        assert any(path.startswith("best-epoch") for path in top_level)  # the best checkpoint

        # Downloads go through the server's artifact proxy, not the server's folder.
        folder = Path(client.download_artifacts(run_id, "evaluation/test", str(tmp_path)))
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["accuracy"]["Real_World"] == pytest.approx(
            run.data.metrics["test/acc/Real_World"]
        )
        assert (folder / "domain_accuracy.png").read_bytes().startswith(b"\x89PNG")
        # 4 domains x 4 classes, plus the header
        assert len((folder / "per_class_accuracy.csv").read_text().splitlines()) == 17


def test_comparison_report_from_the_server(
    tracking_server: str, demo_runs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--experiment", "officehome", "--tracking-uri", tracking_server]
    paths = compare.main([*args, "--output-dir", str(tmp_path), "--log-report"])
    assert "resnet20  srm" in capsys.readouterr().out
    main_table = paths["md"].read_text().split("## Paired against `none`")[0]
    assert main_table.count("| resnet20 |") == 2

    client = MlflowClient(tracking_server)
    experiment_id = client.get_experiment_by_name("officehome").experiment_id
    (report,) = client.search_runs([experiment_id], f"tags.{compare.REPORT_TAG} = 'true'")
    chart = client.download_artifacts(
        report.info.run_id, "officehome_comparison.png", str(tmp_path / "download")
    )
    assert Path(chart).read_bytes() == paths["png"].read_bytes()
    # the report run is not a model: a second comparison sees the same two runs
    assert len(compare.search_runs(client, "officehome")) == len(demo_runs)
