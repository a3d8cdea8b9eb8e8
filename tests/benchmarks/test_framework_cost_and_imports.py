"""The framework-cost and import benchmarks: their bookkeeping on known input, then quick runs.

The quick runs (a `fit` through the CLI and a bare loop; two fresh Python processes) take tens
of seconds and are marked slow; timings are not asserted.
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch

from benchmarks import framework_cost, imports
from benchmarks import run as bench_run

# `python -X importtime` output (children before their importer): a project module imports
# mlflow, which imports sqlalchemy; later a function imports a part of mlflow at run time.
IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:        10 |         10 |       mlflow.utils
import time:        40 |         40 |       sqlalchemy
import time:       100 |        150 |     mlflow
import time:         5 |        155 |   lightning_modules.tracking
import time:         1 |        156 | lightning_modules
import time:        70 |         70 | mlflow.store
"""


def test_import_tree_attributes_time_to_packages_and_import_sites() -> None:
    nodes = imports.parse_importtime(IMPORTTIME)
    by_name = {node.name: node for node in nodes}
    assert by_name["sqlalchemy"].parent is by_name["mlflow"]
    assert by_name["mlflow"].parent is by_name["lightning_modules.tracking"]
    assert by_name["mlflow.store"].parent is None
    assert imports.total_seconds(nodes) == pytest.approx((156 + 70) / 1e6)
    packages = imports.package_imports(nodes)
    # Entered from outside twice: at import (150 us) and at run time (70 us).
    assert packages["mlflow"]["import_ms"] == pytest.approx(0.22)
    assert packages["mlflow"]["imported_by"] == "lightning_modules.tracking"
    assert packages["sqlalchemy"] == {
        "import_ms": 0.04,
        "imported_by": "mlflow",
        "project_site": "lightning_modules.tracking",
    }
    # The import hook's source line, where it recorded one, names the site.
    sites = imports.import_sites(
        'noise\nIMPORT_SITES {"mlflow": "lightning_modules/tracking.py:100"}\nMAX_RSS_KB 1\n'
    )
    packages = imports.package_imports(nodes, sites)
    assert packages["mlflow"]["project_site"] == "lightning_modules/tracking.py:100"
    heavy = imports.heavy(packages)
    assert [row["package"] for row in heavy] == ["mlflow", "sqlalchemy"]  # watched, by time


def test_warm_throughputs_leave_out_the_first_epoch() -> None:
    assert framework_cost.warm_throughputs([(10, 5.0), (32, 2.0), (30, 3.0)]) == [16.0, 10.0]


def test_clock_reaches_the_callback_module_when_run_as_main() -> None:
    # `python -m benchmarks.framework_cost` runs a second copy of the module as `__main__`; the
    # CLI builds the timing callback from `benchmarks.framework_cost`. Both must read the clock
    # `run` chooses (they once read CPU time and wall time: a ratio of 0.32 instead of ~0.9).
    spec = importlib.util.spec_from_file_location("framework_cost_main", framework_cost.__file__)
    as_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(as_main)
    try:
        as_main.set_clock(lambda: 42.0)
        assert framework_cost.now() == as_main.now() == 42.0
    finally:
        as_main.set_clock(time.perf_counter)
    assert framework_cost.CLOCK["clock"] is time.perf_counter


@pytest.mark.slow
def test_quick_framework_cost_compares_the_same_steps(tmp_path) -> None:
    threads = torch.get_num_threads()
    bench_run.main(["--quick", "--only", "framework_cost", "--results-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads
    result = json.loads((tmp_path / "framework_cost.json").read_text())
    fit, bare = result["rows"]
    assert result["bare_loop_ratio"] == pytest.approx(fit["images_per_s"] / bare["images_per_s"])
    # The bare loop took the steps fit took: the same images in every epoch.
    assert result["images_per_epoch"]["fit"] == result["images_per_epoch"]["bare"]
    assert all(count > 0 for count in result["images_per_epoch"]["fit"])
    assert fit["epochs"] == bare["epochs"] == 1  # quick: 2 epochs, the first left out
    assert "bare_loop_ratio_ge_0.95" in result["targets"]


@pytest.mark.slow
def test_quick_imports_names_the_heavy_packages_of_a_fit(tmp_path) -> None:
    bench_run.main(["--quick", "--only", "imports", "--results-dir", str(tmp_path)])
    result = json.loads((tmp_path / "imports.json").read_text())
    import_row, fit_row = result["rows"]
    assert fit_row["modules"] > import_row["modules"] > 100
    assert fit_row["max_rss_mb"] >= import_row["max_rss_mb"] > 0
    heavy = {row["package"]: row for row in result["heavy_imports_of_fit"]}
    # The fit logs to MLflow and trains with Lightning: both are loaded, each from a project
    # source line.
    for package in ("mlflow", "pytorch_lightning"):
        site = heavy[package]["project_site"]
        assert site.split("/")[0] in imports.PROJECT_PACKAGES, site
