"""DTD: `python -m experiments.dtd fit|validate|test|predict --config configs/dtd/<x>.yaml`."""

from __future__ import annotations

from datamodules.dtd import DTDDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(DTDDataModule)

if __name__ == "__main__":
    run_main(main)
