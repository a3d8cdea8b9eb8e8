"""`python -m experiments.prune` on a tiny trained demo model, read back through MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from experiments.officehome import main as officehome_main
from experiments.prune import CURVE_CSV, CURVE_FIGURE, OVERLAY_CSV, OVERLAY_FIGURE
from experiments.prune import main as prune_main
from lightning_modules.analysis.pruning import points_from_csv
from tests.helpers.cli import DEMO_CONFIG, TINY_CONFIG, tiny_demo_args

DOMAINS = ("Art", "Clipart", "Product", "Real_World")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory):
    """Train the tiny SRM demo for 2 epochs, then prune its best checkpoint at 0 and 0.5."""
    tmp_path = tmp_path_factory.mktemp("prune")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = [
        "--config",
        DEMO_CONFIG,
        "--config",
        TINY_CONFIG,
        "--data.init_args.cache_dir",
        str(tmp_path.parent / "demo-cache"),
    ]
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's ./mlruns (artifacts) goes there
    try:
        cli = officehome_main(["fit", *tiny_demo_args(tmp_path, epochs=2)])
        cli.trainer.logger.finalize("success")
        ckpt = cli.trainer.checkpoint_callback.best_model_path
        args = [*config, "--ckpt_path", ckpt, "--ratios", "0", "0.5", "--no_progress"]
        assert prune_main([*args, "--output_dir", str(tmp_path / "out")]) == 0
    finally:
        monkeypatch.undo()
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [cli.trainer.logger.experiment_id], filter_string="tags.analysis = 'pruning'"
    )
    return client, cli.trainer.logger.run_id, ckpt, run, args, uri, tmp_path


def test_ratio_zero_reproduces_the_checkpoints_logged_accuracy_exactly(pruned) -> None:
    client, source_id, ckpt, run, *_ = pruned
    global_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    for metric in ("acc_mean", *(f"acc/{d}" for d in DOMAINS)):
        history = client.get_metric_history(source_id, f"val/{metric}")
        # The checkpoint's validation: logged at the step of its last training batch.
        (logged,) = [m.value for m in history if m.step == global_step - 1]
        for rule in ("gate", "random"):
            (at_zero,) = [
                m.value
                for m in client.get_metric_history(run.info.run_id, f"prune/{rule}/{metric}")
                if m.step == 0
            ]
            assert at_zero == logged, (rule, metric)
    assert run.data.tags["ratio0_reproduces_logged"] == "true"


def test_the_run_holds_metrics_tags_figures_and_the_csv(pruned) -> None:
    client, source_id, _, run, _, _, tmp_path = pruned
    assert run.data.tags["source_run_id"] == source_id
    assert run.data.tags["module"] == "srm"
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "prune/gate/acc_mean")]
    assert sorted(steps) == [0, 50]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "pruning")}
    assert {CURVE_CSV, CURVE_FIGURE} <= artifacts
    points = points_from_csv(
        Path(client.download_artifacts(run.info.run_id, CURVE_CSV)).read_text()
    )
    assert [(p.rule, p.ratio) for p in points] == [
        ("gate", 0.0),
        ("gate", 0.5),
        ("random", 0.0),
        ("random", 0.5),
    ]
    half = [p for p in points if p.ratio == 0.5]
    assert half[0].pruned_channels == half[1].pruned_channels > 0
    for domain in DOMAINS:
        assert f"acc/{domain}" in points[0].metrics
    png = Path(client.download_artifacts(run.info.run_id, CURVE_FIGURE)).read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "out" / "accuracy.csv").read_text() == Path(
        client.download_artifacts(run.info.run_id, CURVE_CSV)
    ).read_text()


def test_random_baseline_is_repeatable_and_runs_overlay(pruned, monkeypatch) -> None:
    client, _, _, run, args, uri, _ = pruned
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first_id = run.info.run_id
    assert prune_main([*args, "--runs", first_id]) == 0
    runs = client.search_runs([run.info.experiment_id], filter_string="tags.analysis = 'pruning'")
    second = next(r for r in runs if r.info.run_id != first_id)
    for key in ("prune/random/acc_mean", "prune/gate/acc_mean", "prune/random/acc/Art"):
        first_values = [(m.step, m.value) for m in client.get_metric_history(first_id, key)]
        second_values = [
            (m.step, m.value) for m in client.get_metric_history(second.info.run_id, key)
        ]
        assert sorted(first_values) == sorted(second_values)
    artifacts = {a.path for a in client.list_artifacts(second.info.run_id, "pruning")}
    assert {OVERLAY_FIGURE, OVERLAY_CSV} <= artifacts
    overlay = Path(client.download_artifacts(second.info.run_id, OVERLAY_CSV)).read_text()
    assert len(overlay.splitlines()) == 1 + 2 * 4  # header + two runs x (2 rules x 2 ratios)
    # Overlay only (no config): a new run holding just the chart.
    assert prune_main(["--runs", first_id, second.info.run_id]) == 0
    (only,) = client.search_runs(
        [run.info.experiment_id], filter_string="tags.analysis = 'pruning_overlay'"
    )
    assert OVERLAY_FIGURE in {a.path for a in client.list_artifacts(only.info.run_id, "pruning")}


def test_bad_inputs_fail_with_a_message(pruned, monkeypatch, capsys) -> None:
    _, _, _, _, args, uri, _ = pruned
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert prune_main(["--runs", "0123456789abcdef"]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err
    assert prune_main([]) == 2
    assert "--runs" in capsys.readouterr().err
    assert prune_main([*args[:6], "--ckpt_path", "/nonexistent.ckpt"]) == 2
    assert "/nonexistent.ckpt" in capsys.readouterr().err


def test_help_documents_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        prune_main(["--help"])
    text = capsys.readouterr().out
    for option in (
        "--ckpt_path",
        "--ratios",
        "--seed",
        "--split",
        "--runs",
        "--device",
        "--tracking_uri",
        "--output_dir",
        "--no_progress",
        "--config",
    ):
        assert option in text
