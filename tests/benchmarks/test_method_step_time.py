"""Smoke test of the method step-time benchmark on tiny sizes: `make bench`'s quick settings run
and write a row per method with its ratio to ERM (timings themselves are not asserted)."""

from __future__ import annotations

import json

import torch

from benchmarks import method_step_time
from benchmarks import run as bench_run


def test_quick_method_step_time_writes_a_ratio_per_method(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        bench_run.main(["--quick", "--only", "method_step_time", "--results-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "method_step_time.json").read_text())
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["erm", "coral"]
    assert rows["erm"]["time_ratio"] == 1.0
    coral = rows["coral"]
    # Two steps per fit, the first untimed: one timed step per round.
    assert coral["timed_steps"] == result["settings"]["rounds"] == 1
    assert coral["time_ratio"] == coral["step_ms_median"] / rows["erm"]["step_ms_median"]
    markdown = (tmp_path / "method_step_time.md").read_text()
    assert markdown.startswith("# Benchmark: method_step_time") and "| coral |" in markdown


def test_the_batch_holds_each_domain_in_turn_and_targets_go_beside_it() -> None:
    images, labels, domains = method_step_time.make_batch(3, 4, 16)
    assert images.shape == (12, 3, 16, 16) and labels.max() < method_step_time.NUM_CLASSES
    assert domains.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    model = method_step_time.build_model("dann", "resnet20", 3, 16, target=True)
    assert model.domain_names[-1] == "target" and "target" not in model.trained_domains
