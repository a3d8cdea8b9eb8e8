"""Benchmarks that `make bench` runs (`python -m benchmarks.run`); results go to `results/`.

Each benchmark returns a result dictionary (machine description, settings, rows) that
`write_result` stores as `results/<name>.json` plus a Markdown table `results/<name>.md`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from lightning_modules.tables import markdown_table

RESULTS_DIR = Path(__file__).parent / "results"
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "officehome" / "demo.yaml"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str = "cpu") -> dict:
    """Cores, CPU model, torch version and the device, stored with every result."""
    description = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        # The one-minute load average says how busy the machine was (timings are ratios measured
        # interleaved in one process precisely because the load was not always zero).
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return description


def result_cell(value: object) -> str:
    """A result's value as a table cell: floats to 3 significant digits, None empty."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_result(
    name: str, result: dict, columns: Sequence[str], notes: str, results_dir: Path | None = None
) -> tuple[Path, Path]:
    """Store `result` as `<name>.json` and a Markdown page `<name>.md` (machine, settings, table).

    Args:
        name: Benchmark name, the files' stem.
        result: Must hold `machine`, `settings` and `rows` (a list of dicts).
        columns: The row keys shown in the Markdown table, in order.
        notes: Markdown paragraph under the table: how it was measured and what it means.
        results_dir: Where to write; `benchmarks/results` by default.

    Returns:
        The paths of the JSON and Markdown files.
    """
    results_dir = Path(results_dir or RESULTS_DIR)
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{name}.json"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    machine = result["machine"]
    machine_line = ", ".join(f"{key}: {value}" for key, value in machine.items())
    settings_line = ", ".join(f"{key}: {value}" for key, value in result["settings"].items())
    cells = [[result_cell(row.get(column)) for column in columns] for row in result["rows"]]
    markdown = (
        f"# Benchmark: {name}\n\n"
        f"Machine: {machine_line}\n\n"
        f"Settings: {settings_line}\n\n"
        f"{markdown_table(columns, cells)}\n\n{notes.strip()}\n"
    )
    markdown_path = results_dir / f"{name}.md"
    markdown_path.write_text(markdown)
    return json_path, markdown_path


@contextlib.contextmanager
def demo_environment(config: Path = DEMO_CONFIG) -> Iterator[list[str]]:
    """A throw-away place to run `experiments.officehome` on the demo for timing.

    Inside, `$STYLEBENCH_DATA_DIR` points into a temporary folder (the demo data is generated
    there by the first DataModule built), and the yielded command-line arguments load `config`
    with the progress bar and model summary off, outputs in the folder and MLflow logging to a
    SQLite store in it. Everything is removed afterwards and the variable restored.
    """
    previous = os.environ.get("STYLEBENCH_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="stylebench-bench-") as folder:
        folder = Path(folder)
        os.environ["STYLEBENCH_DATA_DIR"] = str(folder / "data")
        try:
            yield [
                "--config",
                str(config),
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.default_root_dir",
                str(folder / "outputs"),
                "--trainer.logger.init_args.tracking_uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                # Without it MLflow puts a SQLite store's artifacts in ./mlruns of the
                # current directory, outside the throw-away folder.
                "--trainer.logger.init_args.artifact_location",
                str(folder / "mlruns"),
            ]
        finally:
            if previous is None:
                os.environ.pop("STYLEBENCH_DATA_DIR", None)
            else:
                os.environ["STYLEBENCH_DATA_DIR"] = previous
