"""The GPU benchmark's CPU dry run and its planning, and step_time's bf16 rows.

Timings are not asserted; what is checked is that every configuration gets a row (measured,
skipped with a reason, or failed with its error), that ratios are taken within a mode and
precision, and that compiled configurations stop when the time budget would be overrun.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from benchmarks import gpu, step_time
from benchmarks import run as bench_run


def test_quick_gpu_dry_run_writes_every_configuration(tmp_path) -> None:
    threads = torch.get_num_threads()
    bench_run.main(["--quick", "--only", "gpu", "--results-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads
    result = json.loads((tmp_path / "gpu.json").read_text())
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real benchmark; this checks the dry run")
    assert result["dry_run"] and result["device_name"] == "cpu (dry run)"
    rows = {(r["module"], r["mode"], r["precision"]): r for r in result["rows"]}
    # none and srm (the quick modules) x eager/compiled x bf16-mixed/fp32.
    assert set(rows) == {
        (module, mode, precision)
        for module in ("none", "srm")
        for mode in ("eager", "compiled")
        for precision in ("bf16-mixed", "fp32")
    }
    for precision in ("bf16-mixed", "fp32"):
        plain, srm = rows[("none", "eager", precision)], rows[("srm", "eager", precision)]
        assert "error" not in srm, srm
        assert plain["ratio"] == 1.0
        assert srm["ratio"] == pytest.approx(srm["step_ms"] / plain["step_ms"])
        assert srm["images_per_s"] == pytest.approx(2 / (srm["step_ms"] / 1000))
        assert "compile" in rows[("srm", "compiled", precision)]["skipped"]
    assert result["input"]["images_per_s"] > 0 and result["input"]["workers"] == 0
    assert "NCCL" in result["ddp"]["skipped"]
    markdown = (tmp_path / "gpu.md").read_text()
    assert markdown.startswith("# Benchmark: gpu") and "ddp:" in markdown


def test_compiled_configurations_stop_at_the_budget(monkeypatch) -> None:
    # No compiled configuration starts when the estimated compile would pass the deadline; the
    # estimate is the longest compile so far. A fake `measure` records what would run.
    measured = []

    def fake_measure(module, mode, precision, config, device):
        measured.append((module, mode, precision))
        row = {"module": module, "mode": mode, "precision": precision, "step_ms": 10.0}
        row["warmup_s"] = 30.0 if mode == "compiled" else 0.1
        return row

    monkeypatch.setattr(gpu, "measure", fake_measure)
    clock = iter(range(0, 1000, 50))  # each compile check comes 50 s after the previous one
    rows = gpu.run_steps(
        {}, "cpu", ["none", "srm", "se"], True, deadline=200.0, clock=lambda: next(clock)
    )
    # 0 + 60 (first estimate), then 50, 100, 150 + 30 (the longest compile so far) fit before
    # 200; at 200 and 250 they would not.
    assert [m for m in measured if m[1] == "compiled"] == [
        ("none", "compiled", "bf16-mixed"),
        ("srm", "compiled", "bf16-mixed"),
        ("se", "compiled", "bf16-mixed"),
        ("none", "compiled", "fp32"),
    ]
    skipped = [(r["module"], r["precision"]) for r in rows if "time budget" in r.get("skipped", "")]
    assert skipped == [("srm", "fp32"), ("se", "fp32")]
    assert len(rows) == 12 and sum(m[1] == "eager" for m in measured) == 6


def test_failed_configuration_is_recorded_and_the_run_goes_on(monkeypatch) -> None:
    def broken_step(module, precision, compiled, config, device):
        if module == "srm":
            raise RuntimeError("expected scalar type Float but found BFloat16")
        return lambda: None

    monkeypatch.setattr(gpu, "Step", broken_step)
    config = {"warmup_steps": 1, "timed_steps": 1, "batch_size": 2}
    rows = gpu.run_steps(config, "cpu", ["none", "srm"], False, deadline=0.0)
    by_key = {(r["module"], r["mode"], r["precision"]): r for r in rows}
    assert "BFloat16" in by_key[("srm", "eager", "fp32")]["error"]
    assert by_key[("none", "eager", "fp32")]["ratio"] == 1.0
    assert "ratio" not in by_key[("srm", "eager", "fp32")]


def test_step_time_bf16_rows_are_compared_with_the_bf16_plain_backbone(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    step_time.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--batch-size", "2", "--image-size", "64", "--repeats", "1", "--warmup", "0"),
            *("--backbones", "resnet18", "--modules", "none", "srm", "--no-timm"),
            *("--precisions", "fp32", "bf16"),
        ]
    )
    threads = torch.get_num_threads()
    try:
        result = step_time.run_from_args(args, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "step_time.json").exists()
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {
        f"resnet18-{m}{s}" for m in ("none", "srm", "srm_reference") for s in ("", "@bf16")
    }
    plain, srm = rows["resnet18-none@bf16"], rows["resnet18-srm@bf16"]
    assert plain["precision"] == "bf16" and plain["time_ratio"] == 1.0
    assert srm["time_ratio"] == pytest.approx(srm["step_ms_median"] / plain["step_ms_median"])
    # Under autocast the fused SRM path still keeps less for the backward than the formula.
    assert srm["activation_mb"] < rows["resnet18-srm_reference@bf16"]["activation_mb"]
    assert result["settings"]["precisions"] == "fp32 bf16"
