"""CIFAR-10/100: `python -m experiments.cifar fit|validate|test|predict --config <yaml>`.

python -m experiments.cifar fit --config configs/cifar10/resnet.yaml --data.init_args.root /data
python -m experiments.cifar fit --config configs/cifar10/demo.yaml
"""

from __future__ import annotations

from datamodules.cifar import CIFARDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(CIFARDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
