"""VLCS: `python -m experiments.vlcs fit|validate|test|predict --config <yaml>`.

python -m experiments.vlcs fit --config configs/vlcs/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.vlcs fit --config configs/vlcs/demo.yaml
"""

from __future__ import annotations

from datamodules.vlcs import VLCSDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(VLCSDataModule)

if __name__ == "__main__":
    run_main(main)
