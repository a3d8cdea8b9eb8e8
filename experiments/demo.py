"""`make demo`: the demo sweep, none / SE / SRM / GE ResNet-20 x 2 trial seeds on generated data.

Runs `configs/sweeps/demo.yaml` with `experiments.sweep` (local Ray, as many trials at once as
the machine has cores, each trial a fit + test logged to MLflow under the sweep's parent run),
then prints the report: test accuracy per domain with mean +- SE over the seeds, each module
paired against the plain network (mean difference, 95% interval, wins), the model-selection
table, and where the figures (per-domain bars, learning curves) were written. Running it again
skips the finished trials and resumes interrupted ones.

    python -m experiments.demo [--sweep configs/sweeps/demo.yaml] [--address ADDRESS]
"""

from __future__ import annotations

import argparse
import time

from experiments.sweep import main as sweep_main
from experiments.sweeps.spec import REPO_ROOT

DEMO_SWEEP = REPO_ROOT / "configs" / "sweeps" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(DEMO_SWEEP), help="sweep file to run")
    parser.add_argument("--address", default=None, help="Ray cluster (default: local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray: CPUs to use")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    forwarded = ["run", args.sweep]
    if args.address:
        forwarded += ["--address", args.address]
    if args.num_cpus:
        forwarded += ["--num-cpus", str(args.num_cpus)]
    status = sweep_main(forwarded)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDemo sweep finished in {minutes:.1f} min (wall time, this command).")
    print("Browse it: `make ui`, experiment 'sweep-demo' (see README, 'Sweeps').")
    print(f"Again, without training: python -m experiments.sweep collect {args.sweep}")
    return status


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
