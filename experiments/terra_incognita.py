"""TerraIncognita:
`python -m experiments.terra_incognita fit|validate|test|predict --config <yaml>`.

python -m experiments.terra_incognita fit --config configs/terra_incognita/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.terra_incognita fit --config configs/terra_incognita/demo.yaml
"""

from __future__ import annotations

from datamodules.terra_incognita import TerraIncognitaDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(TerraIncognitaDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
