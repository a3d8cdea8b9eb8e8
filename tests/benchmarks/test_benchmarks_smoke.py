"""Smoke test of the benchmark code on tiny sizes: it runs and writes well-formed results.

Timings are not asserted (they belong in `benchmarks/results/`, not in tests); the demo epoch is
left out because the experiments tests already train the demo configuration end to end; the
style-shift benchmark runs on a smaller generated demo set.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run as bench_run


def check_result_files(results_dir, name: str, row_keys: set[str]) -> dict:
    result = json.loads((results_dir / f"{name}.json").read_text())
    assert result["name"] == name
    assert {"cpu_model", "cpu_cores", "torch_version", "device"} <= set(result["machine"])
    assert result["rows"]
    for row in result["rows"]:
        assert row_keys <= set(row), row
    markdown = (results_dir / f"{name}.md").read_text()
    assert markdown.startswith(f"# Benchmark: {name}")
    assert "torch_version" in markdown and "| --- " not in markdown
    return result


def test_quick_step_time_and_input_pipeline(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        bench_run.main(
            ["--quick", "--only", "step_time", "input_pipeline", "--results-dir", str(tmp_path)]
        )
    finally:
        torch.set_num_threads(threads)
    step = check_result_files(
        tmp_path,
        "step_time",
        {"model", "step_ms_median", "repeats", "time_ratio", "activation_mb", "peak_ratio"},
    )
    models = {row["model"] for row in step["rows"]}
    assert models == {"resnet18-none", "resnet18-srm", "resnet18-srm_reference"}
    by_model = {row["model"]: row for row in step["rows"]}
    assert by_model["resnet18-none"]["time_ratio"] == 1.0
    # The fused SRM keeps less for the backward than the reference formula (it does not keep
    # the batch norm's output), and a step's peak stays within 2% of the plain backbone's.
    assert (
        by_model["resnet18-srm"]["activation_mb"]
        < by_model["resnet18-srm_reference"]["activation_mb"]
    )
    assert by_model["resnet18-srm"]["peak_ratio"] <= 1.02
    pipeline = check_result_files(
        tmp_path, "input_pipeline", {"pipeline", "mode", "images_per_s", "ratio_to_baseline"}
    )
    assert {row["pipeline"] for row in pipeline["rows"]} == {
        "ours",
        "torchvision_baseline",
        "shards",
    }
    assert "ours_per_core_ge_2x_baseline" in pipeline["targets"]
    assert pipeline["shards_ratio"] > 0


# Slow tier: repeated timed validations of the demo per method (about 17 s).
@pytest.mark.slow
def test_quick_style_shift_times_each_method(tmp_path) -> None:
    # No chdir: the session's clean-repository check sees it if the benchmark's MLflow
    # artifacts land in ./mlruns.
    bench_run.main(["--quick", "--only", "style_shift", "--results-dir", str(tmp_path)])
    result = check_result_files(
        tmp_path, "style_shift", {"method", "seconds_median", "added_s", "ratio", "repeats"}
    )
    by_method = {row["method"]: row for row in result["rows"]}
    assert set(by_method) == {"none", "histogram"}
    assert by_method["none"]["added_s"] == 0.0
    assert all(row["seconds_median"] > 0 for row in result["rows"])
    assert result["settings"]["validation_images"] > 0
