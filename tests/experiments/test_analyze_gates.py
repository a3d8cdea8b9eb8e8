"""`python -m experiments.analyze_gates` on a tiny demo checkpoint, read back through MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments.analyze_gates import main
from experiments.officehome import main as officehome_main
from lightning_modules.analysis.separation import rows_from_csv
from tests.helpers.cli import DEMO_CONFIG, TINY_CONFIG, tiny_demo_args


def _data_args(tmp_path: Path) -> list[str]:
    return [
        "--config",
        DEMO_CONFIG,
        "--config",
        TINY_CONFIG,
        "--data.init_args.cache_dir",
        str(tmp_path.parent / "demo-cache"),  # where tiny_demo_args generates it
    ]


# Slow tier: every test here needs the module's trained checkpoint (a CLI fit, about 13 s)
# and an analysis run; tests/lightning_modules/analysis/ tests the analysis itself.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """(tmp dir, tracking URI, last.ckpt, its run id) of a one-epoch tiny SRM demo fit."""
    tmp_path = tmp_path_factory.mktemp("gates")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    try:
        cli = officehome_main(["fit", *tiny_demo_args(tmp_path, epochs=1)])
        cli.trainer.logger.finalize("success")
    finally:
        monkeypatch.undo()
    ckpt = next((tmp_path / "outputs").rglob("last.ckpt"))
    return tmp_path, uri, ckpt, cli.trainer.logger.run_id


def _analyze(tmp_path: Path, uri: str, ckpt: Path, *extra: str) -> int:
    return main(
        [
            *_data_args(tmp_path),
            "--ckpt_path",
            str(ckpt),
            "--tracking-uri",
            uri,
            "--no-progress",
            *extra,
        ]
    )


def _analysis_runs(client: MlflowClient, source_run_id: str) -> list:
    experiment = client.get_run(source_run_id).info.experiment_id
    return client.search_runs([experiment], "tags.analysis = 'gates'", order_by=["start_time"])


def test_analysis_run_holds_heat_maps_separation_and_numbers(checkpoint) -> None:
    tmp_path, uri, ckpt, source_run_id = checkpoint
    assert _analyze(tmp_path, uri, ckpt) == 0
    client = MlflowClient(uri)
    (run,) = _analysis_runs(client, source_run_id)
    assert run.data.tags["source_run_id"] == source_run_id
    assert run.info.status == "FINISHED"
    files = {item.path for item in client.list_artifacts(run.info.run_id, "gates")}
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]  # ResNet-20: 9 blocks
    expected = {f"gates/{b}_{kind}.png" for b in blocks for kind in ("domains", "classes")}
    expected |= {"gates/separation.png", "gates/separation.csv", "gates/statistics.json"}
    assert expected <= files
    folder = tmp_path / "download"
    rows = rows_from_csv(
        Path(
            client.download_artifacts(run.info.run_id, "gates/separation.csv", str(folder))
        ).read_text()
    )
    assert [row["block"] for row in rows] == [f"{b}.recalibration" for b in blocks]
    assert all(0 <= row["domain_probe_accuracy"] <= 1 for row in rows)
    assert all(row["domain_cosine_distance"] >= 0 for row in rows)
    statistics = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "gates/statistics.json", str(folder))
        ).read_text()
    )
    first = statistics["blocks"]["layer1.0.recalibration"]
    assert len(first["mean_by_domain"]) == 4 and len(first["mean_by_domain"][0]) == 16
    assert len(first["mean_by_class"]) == 4  # the tiny demo's 4 classes
    assert sum(first["count_by_domain"]) == sum(
        row["probe_train_images"] + row["probe_test_images"] for row in rows[:1]
    )
    history = client.get_metric_history(run.info.run_id, "gates/domain_probe_accuracy")
    assert sorted(point.step for point in history) == list(range(9))


# Two more analyses of the checkpoint (about 20 s).
def test_runs_are_overlaid_and_into_source_run_logs_there(checkpoint) -> None:
    tmp_path, uri, ckpt, source_run_id = checkpoint
    client = MlflowClient(uri)
    earlier = [run.info.run_id for run in _analysis_runs(client, source_run_id)]
    if not earlier:
        assert _analyze(tmp_path, uri, ckpt) == 0
        earlier = [run.info.run_id for run in _analysis_runs(client, source_run_id)]
    assert _analyze(tmp_path, uri, ckpt, "--into-source-run", "--runs", earlier[0]) == 0
    files = {item.path for item in client.list_artifacts(source_run_id, "gates")}
    assert {"gates/separation.png", "gates/separation.csv"} <= files
    assert len(_analysis_runs(client, source_run_id)) == len(earlier)  # no new run


def test_errors_name_the_setting(checkpoint, tmp_path: Path, capsys) -> None:
    data_dir, uri, ckpt, _ = checkpoint
    assert _analyze(data_dir, uri, tmp_path / "missing.ckpt") == 2
    assert "--ckpt_path" in capsys.readouterr().err
    assert _analyze(data_dir, uri, ckpt, "--runs", "0" * 32) == 2
    assert "--runs 000000" in capsys.readouterr().err
