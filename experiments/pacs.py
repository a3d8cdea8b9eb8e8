"""PACS: `python -m experiments.pacs fit|validate|test|predict --config <yaml>`.

python -m experiments.pacs fit --config configs/pacs/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.pacs fit --config configs/pacs/demo.yaml
"""

from __future__ import annotations

from datamodules.pacs import PACSDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(PACSDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
