"""PACS: `python -m experiments.pacs fit|validate|test|predict --config <yaml>`.

python -m experiments.pacs fit --config configs/pacs/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.pacs fit --config configs/pacs/demo.yaml
"""

from __future__ import annotations

from datamodules.pacs import PACSDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(PACSDataModule)

if __name__ == "__main__":
    run_main(main)
