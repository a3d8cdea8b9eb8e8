"""Office-Home: `python -m experiments.officehome fit|validate|test|predict --config <yaml>`."""

from __future__ import annotations

from datamodules.officehome import OfficeHomeDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(OfficeHomeDataModule)

if __name__ == "__main__":
    run_main(main)
