"""Stylized-ImageNet (Geirhos et al., ICLR 2019): train on SIN, IN or SIN+IN, evaluate on both,
and measure shape bias on the cue-conflict stimuli at test time.

    python -m experiments.stylized_imagenet fit|validate|test --config <yaml>
"""

from __future__ import annotations

from datamodules.stylized_imagenet import StylizedImageNetDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(StylizedImageNetDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
