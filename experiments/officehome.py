"""Office-Home: `python -m experiments.officehome fit|validate|test|predict --config <yaml>`."""

from __future__ import annotations

from datamodules.officehome import OfficeHomeDataModule
from lightning_modules.cli import run_cli


def main(args=None):
    return run_cli(OfficeHomeDataModule, args=args)


if __name__ == "__main__":
    from experiments.errors import run_main

    run_main(main)
