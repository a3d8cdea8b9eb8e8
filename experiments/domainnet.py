"""DomainNet: `python -m experiments.domainnet fit|validate|test|predict --config <yaml>`.

python -m experiments.domainnet fit --config configs/domainnet/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.domainnet fit --config configs/domainnet/demo.yaml
"""

from __future__ import annotations

from datamodules.domainnet import DomainNetDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(DomainNetDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
