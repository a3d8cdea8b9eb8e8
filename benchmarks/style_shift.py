"""What the style-shifted evaluation adds to a validation pass, per shift method.

Runs `experiments.officehome validate` on the demo configuration with `data.style_shift`
off, `histogram` and `fda` (the methods that need no pretrained network), the three
interleaved over several rounds in one process so that a busy spell hits all of them alike.
Each call builds the model and the DataModule, runs the plain validation set and, with a
method, the style-shifted copy (every image re-rendered before the evaluation crop), and logs
to a temporary MLflow store: `added_s` (the median minus the plain median) is the cost of the
style metrics, the rest is the same for all three.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks import DEMO_CONFIG, demo_environment, machine_description, write_result

NAME = "style_shift"
METHODS = ("none", "histogram", "fda")


def style_shift_argument(method: str) -> list[str]:
    """The command-line override that turns the style shift off or selects `method`."""
    value = "{method: null}" if method == "none" else f"{{method: {method}}}"
    return ["--data.init_args.style_shift", value]


def run(
    config: Path = DEMO_CONFIG,
    repeats: int = 3,
    methods=METHODS,
    extra_args: list[str] | None = None,
) -> dict:
    """Time `validate` with each method, interleaved; return the result dictionary."""
    from experiments.officehome import main

    times: dict[str, list[float]] = {method: [] for method in methods}
    with demo_environment(config) as demo_args:
        base_args = [*demo_args, *(extra_args or [])]
        # The first call generates the demo data and warms the process up; it is not timed.
        cli = main(["validate", *base_args, *style_shift_argument("none")])
        validation_images = sum(
            len(loader.dataset) for loader in _as_list(cli.datamodule.val_dataloader())
        )
        for _ in range(repeats):
            for method in methods:
                start = time.perf_counter()
                main(["validate", *base_args, *style_shift_argument(method)])
                times[method].append(time.perf_counter() - start)
    plain = statistics.median(times["none"]) if "none" in times else None
    rows = []
    for method in methods:
        median = statistics.median(times[method])
        row = {"method": method, "seconds_median": median, "repeats": len(times[method])}
        if plain is not None:
            row["added_s"] = median - plain
            row["ratio"] = median / plain
        rows.append(row)
    return {
        "name": NAME,
        "machine": machine_description("cpu"),
        "settings": {
            "config": config.name,
            "validation_images": validation_images,
            "methods": list(methods),
            "extra_args": extra_args or [],
        },
        "rows": rows,
    }


def _as_list(loaders) -> list:
    return loaders if isinstance(loaders, list) else [loaders]


COLUMNS = ("method", "seconds_median", "added_s", "ratio", "repeats")

NOTES = """
Wall-clock seconds of one `validate` call in this process (`experiments.officehome.main`):
building the model and DataModule, the plain validation pass, with a method the style-shifted
pass as well, and MLflow logging. `added_s` = median minus the plain (`none`) median, the cost of
the style metrics on `validation_images` images; during `fit` it is paid only on the epochs that
`data.style_shift.every_n_epochs` selects (and the last).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options (shared with `benchmarks.run`)."""
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--name", default=NAME, help="result file stem")


def run_from_args(args: argparse.Namespace, results_dir=None, extra_args=None) -> dict:
    """Run with parsed options and write the result files."""
    result = run(args.config, args.repeats, args.methods, extra_args)
    write_result(args.name, result, COLUMNS, NOTES, results_dir)
    return result


def main(argv=None) -> dict:
    """Command line: `python -m benchmarks.style_shift [--repeats N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
