"""The shipped module x method demo sweep (`configs/sweeps/demo_methods.yaml`), shrunk to tiny
data and one epoch, under local Ray: every trial finishes, runs are tagged with their method,
and the report pairs every module x method cell with `none` + `erm` by seed (slow: 12 fits in
subprocesses)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from experiments.sweeps.spec import load_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def shrunk_sweep(tmp_path: Path) -> Path:
    """The shipped file with the tiny data overlay, one epoch and no style shift."""
    spec = yaml.safe_load((REPO / "configs/sweeps/demo_methods.yaml").read_text())
    spec["configs"] = [*spec["configs"], "tests/configs/officehome_tiny.yaml"]
    spec["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec["output_dir"] = str(tmp_path / "sweep")
    spec["fixed"].update(
        {
            "trainer.max_epochs": 1,
            "data.init_args.cache_dir": str(tmp_path.parent / "sweep-demo-cache"),
            "data.init_args.style_shift": None,
            "evaluation_artifacts.confusion_matrices": False,
            "trainer.logger.init_args.log_model": False,
        }
    )
    path = tmp_path / "demo_methods.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_demo_methods_sweep_reports_every_cell_paired_with_none_erm(tmp_path):
    path = shrunk_sweep(tmp_path)
    spec = load_spec(path)
    assert len(spec.trials()) == 2 * 3 * 2
    result = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", "run", str(path), "--num-cpus", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("sweep.role") == "trial"
    ]
    assert len(trials) == 12
    for run in trials:
        tags = run.data.tags
        # The CLI's tags (method, method_options) and the sweep's agree with the trial.
        assert tags["method"] == tags["sweep.method"] == tags["setting.model.init_args.method"]
        assert tags["method_options"] == ""
        label = tags["module"] + ("" if tags["method"] == "erm" else f"+{tags['method']}")
        assert run.info.run_name == f"{label}-s{tags['sweep.seed']}"

    report_dir = spec.output_dir / "report"
    report = (report_dir / "report.md").read_text()
    assert "### Module x method: mean, mean ± SE over trial seeds" in report
    assert "| module | erm | coral | mixstyle |" in report
    assert "| none | (baseline) |" in report
    # Each cell minus none + erm, recomputed here from the trials' test accuracy, seed by seed.
    by_cell: dict[str, dict[str, float]] = {}
    with (report_dir / "trials.csv").open() as stream:
        for row in csv.DictReader(stream):
            by_cell.setdefault(row["module"], {})[row["seed"]] = float(row["test/acc_mean"])
    assert sorted(by_cell) == sorted(spec.variants())
    with (report_dir / "results.csv").open() as stream:
        paired = {r["module"]: r for r in csv.DictReader(stream) if r["kind"] == "paired"}
    assert sorted(paired) == sorted(v for v in spec.variants() if v != "none")
    baseline = by_cell["none"]
    matrix = markdown_rows(report.split("each cell minus `none + erm`")[1])
    assert matrix["none"]["erm"] == "(baseline)"
    for variant, row in paired.items():
        diffs = [by_cell[variant][seed] - baseline[seed] for seed in ("0", "1")]
        assert int(row["n"]) == 2
        assert float(row["mean"]) == pytest.approx(sum(diffs) / 2, abs=2e-6)
        assert int(row["wins"]) == sum(d > 0 for d in diffs)
        module, _, method = variant.partition("+")
        cell = matrix[module][method or "erm"]
        assert cell.startswith(f"{100 * sum(diffs) / 2:+.1f} ") and cell.endswith(
            f" {sum(d > 0 for d in diffs)}/2"
        ), (variant, cell)


def markdown_rows(text: str) -> dict[str, dict[str, str]]:
    """The first Markdown table in `text` as {first cell: {column: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows
