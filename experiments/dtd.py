"""DTD: `python -m experiments.dtd fit|validate|test|predict --config configs/dtd/<x>.yaml`."""

from __future__ import annotations

from datamodules.dtd import DTDDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(DTDDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
