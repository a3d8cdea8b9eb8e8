"""ColoredMNIST: `python -m experiments.colored_mnist fit|validate|test|predict --config <yaml>`.

python -m experiments.colored_mnist fit --config configs/colored_mnist/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.colored_mnist fit --config configs/colored_mnist/demo.yaml
"""

from __future__ import annotations

from datamodules.mnist_variants import ColoredMNISTDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(ColoredMNISTDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
