"""TerraIncognita:
`python -m experiments.terra_incognita fit|validate|test|predict --config <yaml>`.

python -m experiments.terra_incognita fit --config configs/terra_incognita/leave_one_out.yaml \\
    --data.init_args.root <data>
python -m experiments.terra_incognita fit --config configs/terra_incognita/demo.yaml
"""

from __future__ import annotations

from datamodules.terra_incognita import TerraIncognitaDataModule
from experiments.errors import dataset_entry_point, run_main

main = dataset_entry_point(TerraIncognitaDataModule)

if __name__ == "__main__":
    run_main(main)
