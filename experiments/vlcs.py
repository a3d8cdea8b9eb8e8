"""VLCS: `python -m experiments.vlcs fit|validate|test|predict --config <yaml>`.

python -m experiments.vlcs fit --config configs/vlcs/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.vlcs fit --config configs/vlcs/demo.yaml
"""

from __future__ import annotations

from datamodules.vlcs import VLCSDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(VLCSDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
