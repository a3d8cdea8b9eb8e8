"""The data-scale benchmark end to end on a tiny tree (it starts several Python processes)."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import main


@pytest.mark.slow
def test_quick_data_scale_writes_every_key(tmp_path) -> None:
    main(["--quick", "--only", "data_scale", "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "data_scale.json").read_text())
    for key in (
        "setup_seconds_warm",
        "setup_seconds_cold",
        "sample_storage_mb",
        "worker_uss_growth_mb",
        "scans_per_machine",
    ):
        assert isinstance(result[key], float), key
    assert result["files"] == 4 * (20 + 4)
    assert result["split_counts"] == {"train": 80, "val": 16, "test": 16}
    assert result["scans_per_machine"] == 1.0
    assert (tmp_path / "data_scale.md").read_text().startswith("# Benchmark: data_scale")
