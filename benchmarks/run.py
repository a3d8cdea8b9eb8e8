"""Run the benchmarks (`make bench`): all of them, or those named, each writing its results.

    python -m benchmarks.run        # all below; `gpu` only where CUDA is present
    python -m benchmarks.run --only step_time --repeats 3
    python -m benchmarks.run --quick --results-dir /tmp/bench   # seconds-long smoke run

Benchmarks: step_time, input_pipeline, demo_epoch, style_shift, data_scale, framework_cost
(`fit` against a bare loop), imports (what a `fit` process imports), gpu (CUDA steps, input
and DDP; named with `--only gpu` without CUDA it is a CPU dry run).

Options after the known ones are not accepted; run a single benchmark's module
(`python -m benchmarks.step_time --help`) for all of its settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks import (
    RESULTS_DIR,
    data_scale,
    demo_epoch,
    framework_cost,
    gpu,
    imports,
    input_pipeline,
    method_step_time,
    step_time,
    style_shift,
)

BENCHMARKS = {
    "step_time": step_time,
    "input_pipeline": input_pipeline,
    "demo_epoch": demo_epoch,
    "style_shift": style_shift,
    "data_scale": data_scale,
    "method_step_time": method_step_time,
    "framework_cost": framework_cost,
    "imports": imports,
    "gpu": gpu,
}
# What runs without --only: the GPU benchmark only where there is a GPU.
DEFAULT_BENCHMARKS = [name for name in BENCHMARKS if name != "gpu" or torch.cuda.is_available()]

# Tiny settings that exercise every code path of each benchmark in seconds (tests, CI).
QUICK_OVERRIDES = {
    "step_time": {
        "batch_size": 2,
        "image_size": 64,
        "repeats": 1,
        "warmup": 0,
        "backbones": ["resnet18"],
        "modules": ["none", "srm"],
        "no_timm": True,
    },
    "input_pipeline": {"num_images": 4, "repeats": 1, "batch_size": 2, "num_workers": 0},
    "demo_epoch": {},
    "style_shift": {"repeats": 1, "methods": ["none", "histogram"]},
    "data_scale": {"classes": 4, "train_per_class": 20, "val_per_class": 4, "samples": 600},
    "method_step_time": {"methods": ["erm", "coral"], "image_size": 32, "repeats": 1, "steps": 2},
    "framework_cost": {"repeats": 1, "epochs": 2, "limit_batches": 3},
    "imports": {},
    "gpu": {"modules": ["none", "srm"], "steps": 1, "budget_s": 60.0, "input_images": 16},
}
# Command-line arguments of the benchmarks that run `experiments.officehome` on the demo: a
# quick run trains and validates a couple of batches of a smaller generated set.
QUICK_DEMO_ARGS = {
    "demo_epoch": ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"],
    "style_shift": ["--data.init_args.images_per_class", "5", "--trainer.limit_val_batches", "2"],
    "framework_cost": [
        "--data.init_args.images_per_class",
        "5",
        "--trainer.limit_val_batches",
        "2",
    ],
    "imports": ["--data.init_args.images_per_class", "5", "--trainer.limit_val_batches", "2"],
}


def benchmark_arguments(name: str, quick: bool, repeats: int | None) -> argparse.Namespace:
    """The benchmark's default options, with the quick overrides and `--repeats` applied."""
    parser = argparse.ArgumentParser()
    BENCHMARKS[name].add_arguments(parser)
    args = parser.parse_args([])
    if quick:
        for key, value in QUICK_OVERRIDES[name].items():
            setattr(args, key, value)
    if repeats is not None and hasattr(args, "repeats"):
        args.repeats = repeats
    return args


def main(argv=None) -> None:
    """Parse the command line and run the chosen benchmarks in order."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=DEFAULT_BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="override timed repeats")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    for name in args.only:
        start = time.perf_counter()
        options = benchmark_arguments(name, args.quick, args.repeats)
        if name in QUICK_DEMO_ARGS:
            BENCHMARKS[name].run_from_args(
                options, args.results_dir, QUICK_DEMO_ARGS[name] if args.quick else None
            )
        else:
            BENCHMARKS[name].run_from_args(options, args.results_dir)
        elapsed = time.perf_counter() - start
        print(f"{name}: {elapsed:.0f} s -> {args.results_dir / name}.md", flush=True)


if __name__ == "__main__":
    main()
